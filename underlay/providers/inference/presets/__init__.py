"""Presets for hosted and local services that speak OpenAI's API: one row each, no code of their own.

Why a table rather than a module per service: Together, Groq, Mistral and the rest differ from the
shared OpenAI-compatible adapter only in a default base URL and the environment variable holding the
key. Writing each as a row keeps them a few lines apart, lets ``underlay providers``, the ``starter``
distribution and ``docs/providers/openai-compatible-presets.md`` be checked against one list, and makes a
new host a one-line change.

This module imports nothing heavy: the ``underlay.providers`` entry points name the specs below, and
listing providers must not load the HTTP client. The config classes and factories the specs point to
are built from the same rows in :mod:`.adapter`. The presets live in the backend layout
(``providers/<api>/<backend>/``) because the table is shared by the specs and the adapter, and the
layer rules let only one provider package hold both.
"""

from __future__ import annotations

from dataclasses import dataclass

from underlay.api.providers import ProviderSpec

__all__ = ["PRESETS", "Preset"]

ADAPTER_MODULE = "underlay.providers.inference.presets.adapter"


@dataclass(frozen=True)
class Preset:
    """One OpenAI-compatible host.

    ``base_url`` is the default (``None``: a server whose address must be given); ``url_env``
    overrides it; ``key_env`` holds the API key, required by hosted services (they answer every keyless
    call with 401) and optional for local servers. The ``starter`` distribution switches a preset on by
    ``key_env`` for a hosted service and by ``url_env`` for a local one (:attr:`toggle_env`).
    """

    name: str
    label: str
    base_url: str | None
    key_env: str
    url_env: str
    hosted: bool
    docs_url: str

    @property
    def provider_type(self) -> str:
        return f"remote::{self.name}"

    @property
    def toggle_env(self) -> str:
        return self.key_env if self.hosted else self.url_env

    @property
    def provider_data_key(self) -> str:
        return f"{self.ident}_api_key"

    @property
    def ident(self) -> str:
        """The name as a Python identifier, for the adapter module's attributes."""
        return self.name.replace("-", "_")

    def spec(self) -> ProviderSpec:
        where = self.base_url or f"${self.url_env}"
        return ProviderSpec(
            api="inference",
            provider_type=self.provider_type,
            config_class=f"{ADAPTER_MODULE}:{self.ident}_config",
            factory=f"{ADAPTER_MODULE}:create_{self.ident}",
            description=f"{self.label} through its OpenAI-compatible API ({where}; key in ${self.key_env}).",
        )


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset(
            "together",
            "Together AI",
            "https://api.together.xyz/v1",
            "TOGETHER_API_KEY",
            "TOGETHER_BASE_URL",
            True,
            "https://docs.together.ai/docs/openai-api-compatibility",
        ),
        Preset(
            "fireworks",
            "Fireworks AI",
            "https://api.fireworks.ai/inference/v1",
            "FIREWORKS_API_KEY",
            "FIREWORKS_BASE_URL",
            True,
            "https://docs.fireworks.ai/tools-sdks/openai-compatibility",
        ),
        Preset(
            "groq",
            "Groq",
            "https://api.groq.com/openai/v1",
            "GROQ_API_KEY",
            "GROQ_BASE_URL",
            True,
            "https://console.groq.com/docs/openai",
        ),
        Preset(
            "deepseek",
            "DeepSeek",
            "https://api.deepseek.com/v1",
            "DEEPSEEK_API_KEY",
            "DEEPSEEK_BASE_URL",
            True,
            "https://api-docs.deepseek.com/",
        ),
        Preset(
            "mistral",
            "Mistral AI",
            "https://api.mistral.ai/v1",
            "MISTRAL_API_KEY",
            "MISTRAL_BASE_URL",
            True,
            "https://docs.mistral.ai/api/",
        ),
        Preset(
            "openrouter",
            "OpenRouter",
            "https://openrouter.ai/api/v1",
            "OPENROUTER_API_KEY",
            "OPENROUTER_BASE_URL",
            True,
            "https://openrouter.ai/docs/quickstart",
        ),
        Preset(
            "nvidia",
            "NVIDIA NIM",
            "https://integrate.api.nvidia.com/v1",
            "NVIDIA_API_KEY",
            "NVIDIA_BASE_URL",
            True,
            "https://docs.api.nvidia.com/nim/reference/llm-apis",
        ),
        Preset(
            "sambanova",
            "SambaNova Cloud",
            "https://api.sambanova.ai/v1",
            "SAMBANOVA_API_KEY",
            "SAMBANOVA_BASE_URL",
            True,
            "https://docs.sambanova.ai/cloud/docs/capabilities/openai-compatibility",
        ),
        Preset(
            "cerebras",
            "Cerebras",
            "https://api.cerebras.ai/v1",
            "CEREBRAS_API_KEY",
            "CEREBRAS_BASE_URL",
            True,
            "https://inference-docs.cerebras.ai/resources/openai",
        ),
        Preset(
            "lmstudio",
            "LM Studio",
            "http://127.0.0.1:1234/v1",
            "LMSTUDIO_API_KEY",
            "LMSTUDIO_URL",
            False,
            "https://lmstudio.ai/docs/app/api/endpoints/openai",
        ),
        Preset(
            "tgi",
            "Hugging Face Text Generation Inference",
            None,
            "TGI_API_KEY",
            "TGI_URL",
            False,
            "https://huggingface.co/docs/text-generation-inference/en/reference/api_reference",
        ),
    )
}

# One module attribute per preset: each ``underlay.providers`` entry point names one spec.
TOGETHER = PRESETS["together"].spec()
FIREWORKS = PRESETS["fireworks"].spec()
GROQ = PRESETS["groq"].spec()
DEEPSEEK = PRESETS["deepseek"].spec()
MISTRAL = PRESETS["mistral"].spec()
OPENROUTER = PRESETS["openrouter"].spec()
NVIDIA = PRESETS["nvidia"].spec()
SAMBANOVA = PRESETS["sambanova"].spec()
CEREBRAS = PRESETS["cerebras"].spec()
LMSTUDIO = PRESETS["lmstudio"].spec()
TGI = PRESETS["tgi"].spec()
