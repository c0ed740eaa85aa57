"""Config of ``remote::model-context-protocol``, importable without the MCP SDK (fast start-up)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class Config(BaseModel):
    """Timeouts and pool limits; the servers themselves are tool groups (run config or API)."""

    model_config = ConfigDict(extra="forbid")

    connect_timeout: float = Field(default=10.0, gt=0, description="Seconds to connect and finish the handshake.")
    timeout: float = Field(default=60.0, gt=0, description="Seconds a tool call may take (a group may override).")
    list_timeout: float = Field(default=30.0, gt=0, description="Seconds to list a server's tools.")
    sse_read_timeout: float = Field(default=300.0, gt=0, description="Longest silence on an open event stream.")
    idle_timeout: float = Field(default=300.0, gt=0, description="Close a pooled session unused this long.")
    max_sessions: int = Field(default=64, ge=1, description="Most sessions held open at once.")
