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

BEDROCK = ProviderSpec(
    api="inference",
    provider_type="remote::bedrock",
    config_class="underlay.providers.remote.inference.bedrock:Config",
    factory="underlay.providers.remote.inference.bedrock:create_provider",
    pip_packages=("aiobotocore==3.10.0",),
    extras=("s3",),
    description="Amazon Bedrock: Converse / ConverseStream chat, Titan and Cohere embeddings (InvokeModel).",
)

AZURE_OPENAI = ProviderSpec(
    api="inference",
    provider_type="remote::azure-openai",
    config_class="underlay.providers.remote.inference.azure_openai:Config",
    factory="underlay.providers.remote.inference.azure_openai:create_provider",
    description="Azure OpenAI deployments (api-key or Entra ID tokens).",
)

GEMINI = ProviderSpec(
    api="inference",
    provider_type="remote::gemini",
    config_class="underlay.providers.remote.inference.gemini:Config",
    factory="underlay.providers.remote.inference.gemini:create_provider",
    description="Google Gemini through its native Generative Language API (chat, tools, streaming, embeddings).",
)

ANTHROPIC = ProviderSpec(
    api="inference",
    provider_type="remote::anthropic",
    config_class="underlay.providers.remote.inference.anthropic:Config",
    factory="underlay.providers.remote.inference.anthropic:create_provider",
    description="Anthropic's Messages API: chat completions translated, /v1/messages passed through natively.",
)
