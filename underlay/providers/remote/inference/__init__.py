"""Inference adapters to OpenAI-compatible services; each states only what differs from the shared base.

The specs are declared here, in a module that imports nothing heavy, because the ``underlay.providers``
entry points of ``pyproject.toml`` name them.
"""

from __future__ import annotations

from underlay.api.providers import ProviderSpec

OPENAI = ProviderSpec(
    api="inference",
    provider_type="remote::openai",
    config_class="underlay.providers.remote.inference.openai:Config",
    factory="underlay.providers.remote.inference.openai:create_provider",
    description="OpenAI's API (or any service that clones it exactly).",
)

VLLM = ProviderSpec(
    api="inference",
    provider_type="remote::vllm",
    config_class="underlay.providers.remote.inference.vllm:Config",
    factory="underlay.providers.remote.inference.vllm:create_provider",
    description="A vLLM server's OpenAI-compatible endpoint.",
)

LLAMA_CPP_SERVER = ProviderSpec(
    api="inference",
    provider_type="remote::llama-cpp-server",
    config_class="underlay.providers.remote.inference.llama_cpp_server:Config",
    factory="underlay.providers.remote.inference.llama_cpp_server:create_provider",
    description="llama.cpp's llama-server or llama-cpp-python's server.",
)

OLLAMA = ProviderSpec(
    api="inference",
    provider_type="remote::ollama",
    config_class="underlay.providers.remote.inference.ollama:Config",
    factory="underlay.providers.remote.inference.ollama:create_provider",
    description="Ollama: its OpenAI endpoint plus its own model listing.",
)

PASSTHROUGH = ProviderSpec(
    api="inference",
    provider_type="remote::passthrough",
    config_class="underlay.providers.remote.inference.passthrough:Config",
    factory="underlay.providers.remote.inference.passthrough:create_provider",
    description="Any OpenAI-compatible base URL.",
)
