"""The ``server.quotas`` section of the run config (see :mod:`underlay.core.quotas`)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

_LIMIT_DOC = "Omit (or null, or an empty string) for no limit; 0 refuses every request."


class QuotaLimits(BaseModel):
    """Request and token budgets for one principal (or anonymous client) per fixed window."""

    model_config = ConfigDict(extra="forbid")

    requests_per_minute: int | None = Field(default=None, ge=0, description=_LIMIT_DOC)
    requests_per_day: int | None = Field(default=None, ge=0, description=_LIMIT_DOC)
    tokens_per_minute: int | None = Field(default=None, ge=0, description=_LIMIT_DOC)
    tokens_per_day: int | None = Field(default=None, ge=0, description=_LIMIT_DOC)

    @field_validator("*", mode="before")
    @classmethod
    def _empty_is_unlimited(cls, value: Any) -> Any:
        """``${env.RPM:=}`` resolves to "" when the variable is unset: a distribution can leave limits to env."""
        return None if isinstance(value, str) and not value.strip() else value

    def merged(self, override: QuotaLimits) -> QuotaLimits:
        """These limits with every field that ``override`` sets explicitly replaced (null included)."""
        return self.model_copy(update={name: getattr(override, name) for name in override.model_fields_set})


class QuotaOverride(BaseModel):
    """Limits for the principals this entry matches; the first matching entry wins.

    ``principals`` lists principal ids; ``attributes`` maps an attribute name to accepted values (a
    principal matches when, for every listed attribute, one of its values is accepted), e.g.
    ``{roles: [premium]}``. Fields left out of ``limits`` keep the defaults.
    """

    model_config = ConfigDict(extra="forbid")

    principals: list[str] = Field(default_factory=list)
    attributes: dict[str, list[str]] = Field(default_factory=dict)
    limits: QuotaLimits

    @model_validator(mode="after")
    def _selects_someone(self) -> QuotaOverride:
        if not self.principals and not self.attributes:
            raise ValueError("an override needs 'principals' or 'attributes' to say whom it applies to")
        return self

    def matches(self, principal_id: str, attributes: dict[str, Any]) -> bool:
        if self.principals and principal_id not in self.principals:
            return False
        for name, accepted in self.attributes.items():
            held = attributes.get(name)
            values = held if isinstance(held, list | tuple | set) else ([] if held is None else [held])
            if not any(str(value) in accepted for value in values):
                return False
        return True


class QuotaConfig(BaseModel):
    """Per-principal rate limits, counted where every server process sees the same numbers."""

    model_config = ConfigDict(extra="forbid")

    backend: Literal["kvstore", "redis"] = Field(
        default="kvstore",
        description="kvstore: the run config's KV store (storage.kvstore); redis: a Redis server (url).",
    )
    url: str = Field(default="redis://127.0.0.1:6379/0", description="redis:// or rediss:// URL (backend: redis).")
    key_prefix: str = Field(
        default="underlay:quota", min_length=1, description="Prefix of every counter key, to share one database."
    )
    on_backend_error: Literal["reject", "allow"] = Field(
        default="reject",
        description="When the counters cannot be reached: reject answers 503, allow lets requests through unmetered.",
    )
    limits: QuotaLimits = Field(default_factory=QuotaLimits, description="Defaults for every principal and client.")
    overrides: list[QuotaOverride] = Field(default_factory=list, description="Per-principal or per-attribute tiers.")
    exempt_paths: list[str] = Field(
        default_factory=lambda: ["/v1/health", "/v1/version", "/openapi.json", "/docs", "/redoc"],
        description="Paths never counted nor limited.",
    )

    def limits_for(self, principal_id: str, attributes: dict[str, Any]) -> QuotaLimits:
        """The defaults merged with the first override matching the principal."""
        for override in self.overrides:
            if override.matches(principal_id, attributes):
                return self.limits.merged(override.limits)
        return self.limits
