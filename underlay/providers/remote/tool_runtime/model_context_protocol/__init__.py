"""``remote::model-context-protocol``: an MCP client over streamable HTTP, SSE and stdio.

The MCP SDK takes most of a second to import, so the provider the stack gets is a small stand-in that
imports and builds the real client on first use; a server that never talks to an MCP server never
pays for it.
"""

from __future__ import annotations

import asyncio
from typing import Any

from underlay.api.tool_runtime import ToolCallContext, ToolDef, ToolGroup, ToolInvocationResult
from underlay.providers.remote.tool_runtime.model_context_protocol.config import Config

__all__ = ["Config", "LazyMcpToolRuntime", "create_provider"]


class LazyMcpToolRuntime:
    serves_mcp = True

    def __init__(self, provider_id: str, config: Config) -> None:
        self.provider_id = provider_id
        self.config = config
        self._real: Any = None
        self._lock = asyncio.Lock()

    async def _runtime(self) -> Any:
        if self._real is None:
            async with self._lock:
                if self._real is None:
                    from underlay.providers.remote.tool_runtime.model_context_protocol.provider import McpToolRuntime

                    real = McpToolRuntime(self.provider_id, self.config)
                    await real.initialize()
                    self._real = real
        return self._real

    async def initialize(self) -> None:
        """Nothing yet: the real client is built on first use."""

    async def shutdown(self) -> None:
        if self._real is not None:
            await self._real.shutdown()

    async def health(self) -> dict[str, Any]:
        if self._real is None:
            return {"status": "OK", "open_sessions": 0}
        return dict(await self._real.health())

    def builtin_tool_groups(self) -> list[ToolGroup]:
        return []

    async def list_runtime_tools(self, context: ToolCallContext) -> list[ToolDef]:
        return list(await (await self._runtime()).list_runtime_tools(context))

    async def invoke_tool(
        self, tool_name: str, kwargs: dict[str, Any], context: ToolCallContext
    ) -> ToolInvocationResult:
        result: ToolInvocationResult = await (await self._runtime()).invoke_tool(tool_name, kwargs, context)
        return result


async def create_provider(provider_id: str, config: Config, deps: dict[str, Any]) -> LazyMcpToolRuntime:
    return LazyMcpToolRuntime(provider_id, config)
