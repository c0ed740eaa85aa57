"""``remote::vllm``: a vLLM server's OpenAI-compatible endpoint.

What differs from the shared base: the server is named by ``url`` (default ``VLLM_URL``; a bare
``http://host:8000`` gets ``/v1`` appended) and its optional ``--api-key`` is ``api_token`` (default
``VLLM_API_TOKEN``; per request ``vllm_api_token``). vLLM reports ``max_model_len`` in its model
listing, which the base already turns into ``context_length``.
"""

from __future__ import annotations

import os
from typing import Any

from pydantic import Field, SecretStr, field_validator

from underlay.providers.utils.openai_compat import (
    OpenAICompatInferenceProvider,
    OpenAICompatSettings,
    check_http_url,
    with_v1,
)


class Config(OpenAICompatSettings):
    """Where the vLLM server listens and, if it was started with ``--api-key``, that key."""

    url: str = Field(
        default_factory=lambda: os.environ.get("VLLM_URL", ""),
        validate_default=True,
        description="vLLM's base URL, e.g. http://127.0.0.1:8000/v1 (default: $VLLM_URL).",
    )
    api_token: SecretStr | None = Field(default=None, description="vLLM's --api-key (a secret).")

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        if not value:
            raise ValueError("vLLM needs a url: set url in the config or the VLLM_URL environment variable")
        return check_http_url(value)

    def endpoint(self) -> str:
        return with_v1(self.url)

    def configured_api_key(self) -> str | None:
        return self.api_token.get_secret_value() if self.api_token else None


class VLLMInferenceProvider(OpenAICompatInferenceProvider):
    api_key_env = "VLLM_API_TOKEN"
    provider_data_key = "vllm_api_token"


async def create_provider(provider_id: str, config: Config, deps: dict[str, Any]) -> VLLMInferenceProvider:
    return VLLMInferenceProvider(provider_id, config)
