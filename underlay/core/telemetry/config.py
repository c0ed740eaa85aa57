"""The ``telemetry`` section of the run config (see :mod:`underlay.core.telemetry`).

Defaults keep everything embedded: spans go to the stack's SQL store (queryable at
``/v1/telemetry/traces``) and metrics are served at ``/metrics``. OTLP export is opt-in, because the
server must run offline and must never block on an absent collector.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class OtlpConfig(_Strict):
    """Export to an OpenTelemetry collector over OTLP/HTTP (protobuf)."""

    endpoint: str = Field(
        description="Collector base URL, e.g. http://127.0.0.1:4318; /v1/traces and /v1/metrics are appended."
    )
    headers: dict[str, str] = Field(default_factory=dict, description="Sent with every export (e.g. an API key).")
    timeout_seconds: float = Field(default=10.0, gt=0)
    traces: bool = Field(default=True, description="Export spans.")
    metrics: bool = Field(default=True, description="Export metrics.")
    metrics_interval_seconds: float = Field(default=60.0, gt=0, description="How often metrics are pushed.")

    @field_validator("endpoint")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL, e.g. http://127.0.0.1:4318")
        return value.rstrip("/")


class RetentionConfig(_Strict):
    """How long stored spans are kept; the oldest go first."""

    max_age_seconds: float | None = Field(default=7 * 24 * 3600, gt=0, description="null keeps spans forever.")
    max_spans: int | None = Field(default=1_000_000, ge=1, description="null: no row limit.")
    sweep_seconds: float = Field(default=300.0, gt=0, description="How often old spans are removed.")


class TelemetryConfig(_Strict):
    enabled: bool = Field(default=True, description="false: no spans, no metrics, no /metrics route.")
    service_name: str = Field(default="underlay", min_length=1)
    sample_rate: float = Field(
        default=1.0, ge=0.0, le=1.0, description="Share of new traces recorded (metrics always count every request)."
    )
    store_spans: bool = Field(default=True, description="Keep spans in the SQL store for /v1/telemetry.")
    flush_seconds: float = Field(default=1.0, gt=0, description="How often buffered spans are written.")
    max_buffered_spans: int = Field(
        default=20_000, ge=1, description="Spans waiting to be written past this are dropped (and counted)."
    )
    metrics_path: str | None = Field(default="/metrics", description="Prometheus text endpoint; null turns it off.")
    retention: RetentionConfig = Field(default_factory=RetentionConfig)
    otlp: OtlpConfig | None = None

    @field_validator("metrics_path")
    @classmethod
    def _absolute(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith("/"):
            raise ValueError("must start with '/', e.g. /metrics")
        return value
