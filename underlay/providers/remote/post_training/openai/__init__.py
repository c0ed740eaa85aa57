"""``remote::openai`` fine-tuning: jobs trained by OpenAI, or by any service that clones its fine-tuning API.

The config and factory live here (the spec names this module); the HTTP work is in :mod:`.provider`.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from underlay.providers.utils.openai_compat import TimeoutSettings, check_http_url

__all__ = ["Config", "create_provider"]

DEFAULT_BASE_URL = "https://api.openai.com/v1"
DEFAULT_MODELS = [
    "gpt-4.1-2025-04-14",
    "gpt-4.1-mini-2025-04-14",
    "gpt-4.1-nano-2025-04-14",
    "gpt-4o-2024-08-06",
    "gpt-4o-mini-2024-07-18",
]
"""Snapshots OpenAI documents as fine-tunable; a clone names its own in ``models``."""


class Config(BaseModel):
    """Where the upstream is, its key, which base models a job may name, and where tuned models are served.

    ``api_key`` (else the variable ``api_key_env`` names, ``OPENAI_API_KEY`` by default) is the provider's
    own: a job outlives the request that created it, so a per-request key is never used or stored.
    ``inference_provider_id`` is the inference provider (a ``remote::openai`` one with the same upstream)
    that serves what a job produces; the tuned model is listed there as ``<that id>/<fine_tuned_model>``.
    """

    model_config = ConfigDict(extra="forbid")

    base_url: str = Field(default=DEFAULT_BASE_URL, description="The upstream's OpenAI base URL (…/v1).")
    api_key: SecretStr | None = Field(default=None, description="The upstream API key (a secret).")
    api_key_env: str = Field(default="OPENAI_API_KEY", description="Environment variable read when api_key is unset.")
    models: list[str] = Field(
        default_factory=lambda: list(DEFAULT_MODELS),
        min_length=1,
        description="Base models a job may name, as the upstream names them.",
    )
    methods: list[Literal["supervised", "dpo"]] = Field(
        default_factory=lambda: ["supervised", "dpo"], min_length=1, description="Methods jobs may use."
    )
    inference_provider_id: str | None = Field(
        default="openai",
        description="The inference provider that serves the tuned models (null: tuned models are not listed here).",
    )
    poll_seconds: float = Field(default=30.0, gt=0, description="Seconds between two looks at a running job.")
    timeout: TimeoutSettings = Field(default_factory=TimeoutSettings)
    max_retries: int = Field(default=2, ge=0, le=10, description="Retries of a failed call (never of a create).")
    backoff: float = Field(default=0.5, ge=0, description="Base delay in seconds, doubled on each retry.")
    extra_headers: dict[str, str] = Field(
        default_factory=dict, description="Sent with every request. Put secrets in api_key, not here."
    )

    @field_validator("base_url")
    @classmethod
    def _check_base_url(cls, value: str) -> str:
        return check_http_url(value)


async def create_provider(provider_id: str, config: Config, deps: dict[str, Any]) -> Any:
    from underlay.providers.remote.post_training.openai.provider import OpenAIFineTuningProvider

    return OpenAIFineTuningProvider(provider_id, config)
