"""``remote::openai``: OpenAI's own API, or a service that clones it exactly.

What differs from the shared base: the default base URL, the ``OPENAI_API_KEY`` variable, a key is
required (OpenAI answers every keyless call with 401), the model listing drops OpenAI's models
that cannot serve chat, completions or embeddings (images, speech, moderation, realtime), and OpenAI's
own Batches API: a batch whose lines all name this provider's models is handed to it whole (see
:mod:`underlay.providers.utils.openai_batches`; ``native_batches: false`` turns that off).
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from underlay.providers.utils.openai_batches import OpenAIBatchesProvider
from underlay.providers.utils.openai_compat import OpenAICompatConfig

DEFAULT_BASE_URL = "https://api.openai.com/v1"

# Model-name prefixes and fragments of OpenAI models that the inference API cannot use.
_NOT_INFERENCE_PREFIXES = (
    "dall-e",
    "tts-",
    "whisper",
    "gpt-image",
    "omni-moderation",
    "text-moderation",
    "sora",
)
_NOT_INFERENCE_FRAGMENTS = ("-realtime", "-transcribe", "-tts", "-search-api")


class Config(OpenAICompatConfig):
    """OpenAI: only ``api_key`` (or ``OPENAI_API_KEY``) is usually needed."""

    base_url: str = Field(default=DEFAULT_BASE_URL, description="Override for a proxy or a compatible clone.")
    native_batches: bool = Field(
        default=True,
        description=(
            "Pass a batch whose lines all name this provider's models to OpenAI's own Batches API (its batch "
            "pricing and limits apply) instead of running its lines one by one; false runs every batch here."
        ),
    )


class OpenAIInferenceProvider(OpenAIBatchesProvider):
    api_key_env = "OPENAI_API_KEY"
    provider_data_key = "openai_api_key"
    requires_api_key = True

    def _include_model(self, model_id: str) -> bool:
        name = model_id.lower()
        if name.startswith(_NOT_INFERENCE_PREFIXES):
            return False
        return not any(fragment in name for fragment in _NOT_INFERENCE_FRAGMENTS)


async def create_provider(provider_id: str, config: Config, deps: dict[str, Any]) -> OpenAIInferenceProvider:
    return OpenAIInferenceProvider(provider_id, config)
