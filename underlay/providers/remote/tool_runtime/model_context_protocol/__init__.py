"""``remote::model-context-protocol``: an MCP client over streamable HTTP, SSE and stdio."""

from __future__ import annotations

from typing import Any

from underlay.providers.remote.tool_runtime.model_context_protocol.provider import Config, McpToolRuntime

__all__ = ["Config", "McpToolRuntime", "create_provider"]


async def create_provider(provider_id: str, config: Config, deps: dict[str, Any]) -> McpToolRuntime:
    return McpToolRuntime(provider_id, config)
