"""``remote::llama-cpp-server``: llama.cpp's ``llama-server`` or llama-cpp-python's server.

What differs from the shared base:

- the server is named by ``url`` (default ``LLAMA_CPP_URL``; a bare ``http://host:8080`` gets ``/v1``);
- llama-cpp-python's server answers 500 to an assistant message that has ``tool_calls`` and a null or
  missing ``content``, so such messages are sent with ``content: ""`` (same meaning, accepted by both);
- ``llama-server`` closes the connection after a streamed response while a pooled client would reuse
  it, so streaming requests say ``Connection: close``;
- llama-cpp-python returns one vector per token for models without a pooling layer (e.g. chat models
  served with ``embedding: true``); those are mean-pooled into the single vector OpenAI's API promises.
"""

from __future__ import annotations

import os
from typing import Any

from pydantic import Field, SecretStr, field_validator

from underlay.api.inference import ChatCompletionRequest
from underlay.providers.utils.openai_compat import (
    OpenAICompatInferenceProvider,
    OpenAICompatSettings,
    check_http_url,
    with_v1,
)


class Config(OpenAICompatSettings):
    """Where the llama.cpp server listens and, if it was started with an API key, that key."""

    url: str = Field(
        default_factory=lambda: os.environ.get("LLAMA_CPP_URL", ""),
        validate_default=True,
        description="The server's base URL, e.g. http://127.0.0.1:8080/v1 (default: $LLAMA_CPP_URL).",
    )
    api_key: SecretStr | None = Field(default=None, description="The server's --api-key (a secret).")

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        if not value:
            raise ValueError(
                "llama-cpp-server needs a url: set url in the config or the LLAMA_CPP_URL environment variable"
            )
        return check_http_url(value)

    def endpoint(self) -> str:
        return with_v1(self.url)

    def configured_api_key(self) -> str | None:
        return self.api_key.get_secret_value() if self.api_key else None


class LlamaCppServerInferenceProvider(OpenAICompatInferenceProvider):
    api_key_env = "LLAMA_CPP_API_KEY"
    provider_data_key = "llama_cpp_server_api_key"
    close_after_stream = True

    def _chat_payload(self, params: ChatCompletionRequest) -> dict[str, Any]:
        payload = super()._chat_payload(params)
        for message in payload.get("messages", []):
            if message.get("role") == "assistant" and message.get("content") is None:
                message["content"] = ""
        return payload

    def _embeddings_body(self, body: Any) -> Any:
        if not isinstance(body, dict) or not isinstance(body.get("data"), list):
            return body
        for item in body["data"]:
            vectors = item.get("embedding") if isinstance(item, dict) else None
            if (
                isinstance(vectors, list)
                and vectors
                and all(isinstance(v, list) and len(v) == len(vectors[0]) > 0 for v in vectors)
            ):
                item["embedding"] = mean_pool(vectors)
        return body


def mean_pool(vectors: list[list[float]]) -> list[float]:
    """The element-wise mean of per-token vectors (llama.cpp's own default pooling for embeddings)."""
    count = len(vectors)
    return [sum(column) / count for column in zip(*vectors, strict=True)]


async def create_provider(provider_id: str, config: Config, deps: dict[str, Any]) -> LlamaCppServerInferenceProvider:
    return LlamaCppServerInferenceProvider(provider_id, config)
