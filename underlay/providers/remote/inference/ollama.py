"""``remote::ollama``: Ollama, through its OpenAI-compatible endpoint plus its own model listing.

What differs from the shared base: ``url`` is Ollama's root (default ``$OLLAMA_URL`` or
``http://127.0.0.1:11434``) and inference goes to ``{url}/v1``. Models are discovered through Ollama's
``GET /api/tags``, which lists every pulled model with its family and size and lets embedding models
(BERT families) be told apart; when that endpoint is missing (a proxy that only speaks OpenAI's API)
discovery falls back to ``/v1/models``.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from pydantic import Field, SecretStr, field_validator

from underlay.api.errors import InvalidRequestError, NotFoundError, UpstreamError
from underlay.api.inference import DiscoveredModel
from underlay.providers.utils.openai_compat import (
    OpenAICompatInferenceProvider,
    OpenAICompatSettings,
    check_http_url,
    guess_model_type,
)

DEFAULT_URL = "http://127.0.0.1:11434"

log = logging.getLogger(__name__)


class Config(OpenAICompatSettings):
    """Where Ollama listens; a key only matters when a proxy in front of it asks for one."""

    url: str = Field(
        default_factory=lambda: os.environ.get("OLLAMA_URL") or DEFAULT_URL,
        validate_default=True,
        description="Ollama's root URL, without /v1 (default: $OLLAMA_URL or http://127.0.0.1:11434).",
    )
    api_key: SecretStr | None = Field(default=None, description="Only for a proxy in front of Ollama.")

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        return check_http_url(value or DEFAULT_URL)

    def root(self) -> str:
        url = self.url.rstrip("/")
        return url[: -len("/v1")] if url.endswith("/v1") else url

    def endpoint(self) -> str:
        return f"{self.root()}/v1"

    def configured_api_key(self) -> str | None:
        return self.api_key.get_secret_value() if self.api_key else None


class OllamaInferenceProvider(OpenAICompatInferenceProvider):
    api_key_env = "OLLAMA_API_KEY"
    provider_data_key = "ollama_api_key"
    config: Config

    async def list_provider_models(self) -> list[DiscoveredModel]:
        tags_url = f"{self.config.root()}/api/tags"
        try:
            body = await self._request_json("GET", tags_url)
            return self._models_from_tags(body, tags_url)
        except (NotFoundError, InvalidRequestError, UpstreamError) as exc:
            # Not Ollama's native API (or a broken one): the OpenAI listing is the next best source.
            # Unreachable or timing out is not retried here: /v1/models would fail the same way.
            log.info(
                "provider %s: %s unusable (%s); listing models through /v1/models",
                self.provider_id,
                tags_url,
                exc.message,
            )
            return await super().list_provider_models()

    def _models_from_tags(self, body: Any, url: str) -> list[DiscoveredModel]:
        models = body.get("models") if isinstance(body, dict) else None
        if not isinstance(models, list):
            raise UpstreamError(self.provider_id, f"malformed model list from {url}: expected {{'models': [...]}}")
        found: list[DiscoveredModel] = []
        for item in models:
            if not isinstance(item, dict):
                continue
            name = item.get("model") or item.get("name")
            if not isinstance(name, str) or not name or not self.is_model_allowed(name):
                continue
            details = item.get("details") if isinstance(item.get("details"), dict) else {}
            families = [str(f).lower() for f in details.get("families") or [details.get("family") or ""]]
            is_embedding = guess_model_type(name) == "embedding" or any("bert" in f for f in families)
            metadata: dict[str, Any] = {
                key: details[key]
                for key in ("family", "parameter_size", "quantization_level", "format")
                if details.get(key)
            }
            if isinstance(item.get("size"), int):
                metadata["size_bytes"] = item["size"]
            found.append(
                DiscoveredModel(
                    provider_resource_id=name,
                    model_type="embedding" if is_embedding else "llm",
                    metadata=metadata,
                )
            )
        return found


async def create_provider(provider_id: str, config: Config, deps: dict[str, Any]) -> OllamaInferenceProvider:
    return OllamaInferenceProvider(provider_id, config)
