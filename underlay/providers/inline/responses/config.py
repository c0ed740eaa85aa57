"""Configuration of ``inline::builtin`` for the Responses API."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class McpConnector(BaseModel):
    """An MCP server the operator configured, so clients name it instead of giving its URL and secrets."""

    model_config = ConfigDict(extra="forbid")

    server_url: str
    headers: dict[str, str] = Field(default_factory=dict, description="Sent on every request (e.g. credentials).")
    description: str | None = None


class BuiltinResponsesConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_infer_iters: int = Field(default=10, ge=1, le=100, description="Default cap on model calls per response.")
    tool_timeout_seconds: float = Field(default=60.0, gt=0, description="Per server-side tool call.")
    connectors: dict[str, McpConnector] = Field(
        default_factory=dict,
        description="MCP servers by name; an mcp tool whose connector_id or server_label matches uses it.",
    )
    file_search_max_results: int = Field(default=10, ge=1, le=50, description="Default max_num_results.")
    background_max_attempts: int = Field(
        default=2, ge=1, description="Runs of a background response (a restart resumes it) before it fails."
    )
    event_flush_seconds: float = Field(
        default=0.2, gt=0, description="How often a background response's events are written to the log."
    )
    temperature: float = Field(
        default=1.0, ge=0, le=2, description="Sampling temperature when a request sets none (sent and reported)."
    )
    top_p: float = Field(default=1.0, gt=0, le=1, description="Nucleus sampling when a request sets none.")
    input_file_max_bytes: int = Field(
        default=10 * 1024 * 1024, ge=1, description="Largest input_file (file_id or file_data) read into a prompt."
    )
    compact_max_tokens: int = Field(
        default=512, ge=16, le=8192, description="Budget of the summary /v1/responses/compact asks the model for."
    )
