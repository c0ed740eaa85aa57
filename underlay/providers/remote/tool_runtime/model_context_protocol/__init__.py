"""``remote::model-context-protocol``: an MCP client over streamable HTTP, SSE and stdio.

The MCP SDK takes most of a second to import, so the provider the stack gets is a small stand-in that
imports and builds the real client on first use; a server that never talks to an MCP server never
pays for it.
"""

from __future__ import annotations

import asyncio
from typing import Any

from underlay.api.errors import UnderlayError
from underlay.api.tool_runtime import ToolCallContext, ToolDef, ToolGroup, ToolInvocationResult
from underlay.providers.remote.tool_runtime.model_context_protocol.config import Config
from underlay.providers.remote.tool_runtime.model_context_protocol.redaction import (
    connection_secrets,
    mask_error,
    mask_result,
)
from underlay.shared.redact import request_secrets

__all__ = ["Config", "LazyMcpToolRuntime", "create_provider"]


class LazyMcpToolRuntime:
    serves_mcp = True

    def __init__(self, provider_id: str, config: Config) -> None:
        self.provider_id = provider_id
        self.config = config
        self._real: Any = None
        self._lock = asyncio.Lock()
        self._kvstore: Any = None

    async def _runtime(self) -> Any:
        if self._real is None:
            async with self._lock:
                if self._real is None:
                    from underlay.providers.remote.tool_runtime.model_context_protocol.provider import McpToolRuntime

                    real = McpToolRuntime(self.provider_id, self.config)
                    real.use_kvstore(self._kvstore)
                    await real.initialize()
                    self._real = real
        return self._real

    async def initialize(self) -> None:
        """Nothing yet: the real client is built on first use."""

    def use_kvstore(self, kvstore: Any) -> None:
        """The store OAuth tokens live in (handed on to the real client when it is built)."""
        self._kvstore = kvstore
        if self._real is not None:
            self._real.use_kvstore(kvstore)

    async def close_server(self, name: str) -> int:
        """Close the sessions of a deleted tool group (none if the client was never built)."""
        return 0 if self._real is None else int(await self._real.close_server(name))

    async def complete_authorization(self, state: str, code: str, iss: str | None) -> dict[str, Any]:
        return dict(await (await self._runtime()).complete_authorization(state, code, iss))

    async def shutdown(self) -> None:
        if self._real is not None:
            await self._real.shutdown()

    async def health(self) -> dict[str, Any]:
        if self._real is None:
            return {"status": "OK", "open_sessions": 0}
        return dict(await self._real.health())

    def builtin_tool_groups(self) -> list[ToolGroup]:
        return []

    # Every tool path (list, invoke; the Responses mcp tools call these too) leaves through here, so
    # the server's text is masked here, once, before any caller shows or stores it (see redaction.py).

    async def list_runtime_tools(self, context: ToolCallContext) -> list[ToolDef]:
        connection = context.connection
        with request_secrets(connection_secrets(connection)):  # log lines written meanwhile, too
            try:
                return list(await (await self._runtime()).list_runtime_tools(context))
            except UnderlayError as exc:
                mask_error(exc, connection)
                raise

    async def invoke_tool(
        self, tool_name: str, kwargs: dict[str, Any], context: ToolCallContext
    ) -> ToolInvocationResult:
        connection = context.connection
        with request_secrets(connection_secrets(connection)):
            try:
                result: ToolInvocationResult = await (await self._runtime()).invoke_tool(tool_name, kwargs, context)
            except UnderlayError as exc:
                mask_error(exc, connection)
                raise
            return mask_result(result, connection)

    # Resources and prompts (what Underlay's own ``/mcp`` hands on): the same sessions, auth and masking
    # of errors as tools. What a server answers successfully is its content and is passed on as it is.

    async def _masked(self, method: str, context: ToolCallContext, *args: Any) -> Any:
        connection = context.connection
        with request_secrets(connection_secrets(connection)):
            try:
                return await getattr(await self._runtime(), method)(*args, context)
            except UnderlayError as exc:
                mask_error(exc, connection)
                raise

    async def list_runtime_resources(self, context: ToolCallContext) -> dict[str, list[dict[str, Any]]]:
        return dict(await self._masked("list_runtime_resources", context))

    async def read_runtime_resource(self, uri: str, context: ToolCallContext) -> list[dict[str, Any]]:
        return list(await self._masked("read_runtime_resource", context, uri))

    async def list_runtime_prompts(self, context: ToolCallContext) -> list[dict[str, Any]]:
        return list(await self._masked("list_runtime_prompts", context))

    async def get_runtime_prompt(
        self, name: str, arguments: dict[str, str], context: ToolCallContext
    ) -> dict[str, Any]:
        return dict(await self._masked("get_runtime_prompt", context, name, arguments))


async def create_provider(provider_id: str, config: Config, deps: dict[str, Any]) -> LazyMcpToolRuntime:
    return LazyMcpToolRuntime(provider_id, config)
