"""A chat model asked for a guard verdict: ``inline::guard-prompt`` (any model, our prompt) and
``inline::llama-guard`` (a real Llama Guard model only), one backend since the second is the first
with a model check and Llama Guard's own template.

``prompt`` holds the prompt, the verdict parser and the provider; ``llama_guard`` the stricter type.
The specs are declared here, in a module that imports nothing heavy, because the ``underlay.providers``
entry points of ``pyproject.toml`` name them.
"""

from __future__ import annotations

from underlay.api.providers import ProviderSpec

GUARD_PROMPT = ProviderSpec(
    api="safety",
    provider_type="inline::guard-prompt",
    config_class="underlay.providers.safety.guard.prompt:Config",
    factory="underlay.providers.safety.guard.prompt:create_provider",
    api_dependencies=("inference",),
    description="Any chat model asked a guard prompt with the MLCommons hazards (S1-S14); weak on small models.",
)

LLAMA_GUARD = ProviderSpec(
    api="safety",
    provider_type="inline::llama-guard",
    config_class="underlay.providers.safety.guard.llama_guard:Config",
    factory="underlay.providers.safety.guard.llama_guard:create_provider",
    api_dependencies=("inference",),
    description="A real Llama Guard model served by an inference provider (vLLM, Ollama...); refuses other models.",
)
