"""``client.toolgroups``, ``client.tools`` and ``client.tool_runtime``: Underlay's Tool Runtime API.

A tool *group* is an MCP server or a builtin (``file_search``, ``websearch``); ``tools`` lists what the
groups offer; ``tool_runtime.invoke_tool`` calls one. A tool that fails comes back as a result with
``error_message``/``error_code`` (see :class:`underlay.api.tool_runtime.ToolInvocationResult`), never as
an exception; a caller's mistake (unknown tool or group) raises ``openai.NotFoundError`` and friends.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Literal

from openai import Omit, omit
from openai._base_client import AsyncPaginator
from openai._resource import AsyncAPIResource, SyncAPIResource
from typing_extensions import Unpack

from underlay.api.tool_runtime import (
    URL,
    ElicitationResponse,
    InvokeToolRequest,
    ListRuntimeToolsQuery,
    ListToolsQuery,
    RegisterToolGroupRequest,
    ToolDef,
    ToolGroup,
    ToolGroupDeleted,
    ToolInvocationResult,
    ToolRuntimeApi,
)
from underlay.client._wire import (
    AsyncPage,
    RequestOptions,
    SyncPage,
    body_of,
    options_of,
    parsed,
    query_of,
    route_path,
    sends,
)

__all__ = ["AsyncToolGroups", "AsyncToolRuntime", "AsyncTools", "ToolGroups", "ToolRuntime", "Tools"]

Transport = Literal["streamable_http", "sse"]
Endpoint = URL | dict[str, str]
Answers = Iterable[ElicitationResponse | dict[str, Any]]


def _invoke_body(**fields: Any) -> dict[str, Any]:
    if not isinstance(fields["elicitation_responses"], Omit):
        fields["elicitation_responses"] = [*fields["elicitation_responses"]]
    return body_of(**fields)


class ToolGroups(SyncAPIResource):
    """Tool groups: list, retrieve, register (an MCP server), unregister."""

    def list(self, **options: Unpack[RequestOptions]) -> SyncPage[ToolGroup]:
        _, path = route_path(ToolRuntimeApi.handle_list_tool_groups)
        return self._get_api_list(path, page=SyncPage[ToolGroup], model=ToolGroup, options=options_of(options))

    def retrieve(self, toolgroup_id: str, **options: Unpack[RequestOptions]) -> ToolGroup:
        _, path = route_path(ToolRuntimeApi.handle_get_tool_group, toolgroup_id=toolgroup_id)
        return self._get(path, options=options_of(options), cast_to=parsed(ToolGroup))

    @sends(RegisterToolGroupRequest)
    def register(
        self,
        *,
        toolgroup_id: str,
        provider_id: str | None | Omit = omit,
        mcp_endpoint: Endpoint | None | Omit = omit,
        transport: Transport | None | Omit = omit,
        args: dict[str, Any] | None | Omit = omit,
        **options: Unpack[RequestOptions],
    ) -> ToolGroup:
        _, path = route_path(ToolRuntimeApi.handle_register_tool_group)
        body = body_of(
            toolgroup_id=toolgroup_id,
            provider_id=provider_id,
            mcp_endpoint=mcp_endpoint,
            transport=transport,
            args=args,
        )
        return self._post(path, body=body, options=options_of(options), cast_to=parsed(ToolGroup))

    def unregister(self, toolgroup_id: str, **options: Unpack[RequestOptions]) -> ToolGroupDeleted:
        _, path = route_path(ToolRuntimeApi.handle_unregister_tool_group, toolgroup_id=toolgroup_id)
        return self._delete(path, options=options_of(options), cast_to=parsed(ToolGroupDeleted))


class AsyncToolGroups(AsyncAPIResource):
    """The async twin of :class:`ToolGroups`."""

    def list(self, **options: Unpack[RequestOptions]) -> AsyncPaginator[ToolGroup, AsyncPage[ToolGroup]]:
        _, path = route_path(ToolRuntimeApi.handle_list_tool_groups)
        return self._get_api_list(path, page=AsyncPage[ToolGroup], model=ToolGroup, options=options_of(options))

    async def retrieve(self, toolgroup_id: str, **options: Unpack[RequestOptions]) -> ToolGroup:
        _, path = route_path(ToolRuntimeApi.handle_get_tool_group, toolgroup_id=toolgroup_id)
        return await self._get(path, options=options_of(options), cast_to=parsed(ToolGroup))

    @sends(RegisterToolGroupRequest)
    async def register(
        self,
        *,
        toolgroup_id: str,
        provider_id: str | None | Omit = omit,
        mcp_endpoint: Endpoint | None | Omit = omit,
        transport: Transport | None | Omit = omit,
        args: dict[str, Any] | None | Omit = omit,
        **options: Unpack[RequestOptions],
    ) -> ToolGroup:
        _, path = route_path(ToolRuntimeApi.handle_register_tool_group)
        body = body_of(
            toolgroup_id=toolgroup_id,
            provider_id=provider_id,
            mcp_endpoint=mcp_endpoint,
            transport=transport,
            args=args,
        )
        return await self._post(path, body=body, options=options_of(options), cast_to=parsed(ToolGroup))

    async def unregister(self, toolgroup_id: str, **options: Unpack[RequestOptions]) -> ToolGroupDeleted:
        _, path = route_path(ToolRuntimeApi.handle_unregister_tool_group, toolgroup_id=toolgroup_id)
        return await self._delete(path, options=options_of(options), cast_to=parsed(ToolGroupDeleted))


class Tools(SyncAPIResource):
    """The tools every group offers (first group first), or one group's."""

    @sends(ListToolsQuery)
    def list(self, *, toolgroup_id: str | None | Omit = omit, **options: Unpack[RequestOptions]) -> SyncPage[ToolDef]:
        _, path = route_path(ToolRuntimeApi.handle_list_tools)
        opts = options_of(options, query_of(toolgroup_id=toolgroup_id))
        return self._get_api_list(path, page=SyncPage[ToolDef], model=ToolDef, options=opts)

    def retrieve(self, tool_name: str, **options: Unpack[RequestOptions]) -> ToolDef:
        _, path = route_path(ToolRuntimeApi.handle_get_tool, tool_name=tool_name)
        return self._get(path, options=options_of(options), cast_to=parsed(ToolDef))


class AsyncTools(AsyncAPIResource):
    """The async twin of :class:`Tools`."""

    @sends(ListToolsQuery)
    def list(
        self, *, toolgroup_id: str | None | Omit = omit, **options: Unpack[RequestOptions]
    ) -> AsyncPaginator[ToolDef, AsyncPage[ToolDef]]:
        _, path = route_path(ToolRuntimeApi.handle_list_tools)
        opts = options_of(options, query_of(toolgroup_id=toolgroup_id))
        return self._get_api_list(path, page=AsyncPage[ToolDef], model=ToolDef, options=opts)

    async def retrieve(self, tool_name: str, **options: Unpack[RequestOptions]) -> ToolDef:
        _, path = route_path(ToolRuntimeApi.handle_get_tool, tool_name=tool_name)
        return await self._get(path, options=options_of(options), cast_to=parsed(ToolDef))


class ToolRuntime(SyncAPIResource):
    """Call a tool, or list the tools of a group or of any MCP server by URL."""

    @sends(InvokeToolRequest)
    def invoke_tool(
        self,
        *,
        tool_name: str,
        kwargs: dict[str, Any] | Omit = omit,
        toolgroup_id: str | None | Omit = omit,
        mcp_endpoint: Endpoint | None | Omit = omit,
        headers: dict[str, str] | None | Omit = omit,
        authorization: str | None | Omit = omit,
        elicitation_responses: Answers | Omit = omit,
        **options: Unpack[RequestOptions],
    ) -> ToolInvocationResult:
        """Call ``tool_name`` with ``kwargs``; a failed tool is a result with ``error_message``, not an error."""
        _, path = route_path(ToolRuntimeApi.handle_invoke_tool)
        body = _invoke_body(
            tool_name=tool_name,
            kwargs=kwargs,
            toolgroup_id=toolgroup_id,
            mcp_endpoint=mcp_endpoint,
            headers=headers,
            authorization=authorization,
            elicitation_responses=elicitation_responses,
        )
        return self._post(path, body=body, options=options_of(options), cast_to=parsed(ToolInvocationResult))

    @sends(ListRuntimeToolsQuery)
    def list_tools(
        self,
        *,
        toolgroup_id: str | None | Omit = omit,
        mcp_endpoint: str | None | Omit = omit,
        transport: Transport | None | Omit = omit,
        **options: Unpack[RequestOptions],
    ) -> SyncPage[ToolDef]:
        """The tools of one registered group (``toolgroup_id``) or one MCP server (``mcp_endpoint``)."""
        _, path = route_path(ToolRuntimeApi.handle_list_runtime_tools)
        query = query_of(toolgroup_id=toolgroup_id, mcp_endpoint=mcp_endpoint, transport=transport)
        return self._get_api_list(path, page=SyncPage[ToolDef], model=ToolDef, options=options_of(options, query))


class AsyncToolRuntime(AsyncAPIResource):
    """The async twin of :class:`ToolRuntime`."""

    @sends(InvokeToolRequest)
    async def invoke_tool(
        self,
        *,
        tool_name: str,
        kwargs: dict[str, Any] | Omit = omit,
        toolgroup_id: str | None | Omit = omit,
        mcp_endpoint: Endpoint | None | Omit = omit,
        headers: dict[str, str] | None | Omit = omit,
        authorization: str | None | Omit = omit,
        elicitation_responses: Answers | Omit = omit,
        **options: Unpack[RequestOptions],
    ) -> ToolInvocationResult:
        """Call ``tool_name`` with ``kwargs``; a failed tool is a result with ``error_message``, not an error."""
        _, path = route_path(ToolRuntimeApi.handle_invoke_tool)
        body = _invoke_body(
            tool_name=tool_name,
            kwargs=kwargs,
            toolgroup_id=toolgroup_id,
            mcp_endpoint=mcp_endpoint,
            headers=headers,
            authorization=authorization,
            elicitation_responses=elicitation_responses,
        )
        return await self._post(path, body=body, options=options_of(options), cast_to=parsed(ToolInvocationResult))

    @sends(ListRuntimeToolsQuery)
    def list_tools(
        self,
        *,
        toolgroup_id: str | None | Omit = omit,
        mcp_endpoint: str | None | Omit = omit,
        transport: Transport | None | Omit = omit,
        **options: Unpack[RequestOptions],
    ) -> AsyncPaginator[ToolDef, AsyncPage[ToolDef]]:
        """The tools of one registered group (``toolgroup_id``) or one MCP server (``mcp_endpoint``)."""
        _, path = route_path(ToolRuntimeApi.handle_list_runtime_tools)
        query = query_of(toolgroup_id=toolgroup_id, mcp_endpoint=mcp_endpoint, transport=transport)
        return self._get_api_list(path, page=AsyncPage[ToolDef], model=ToolDef, options=options_of(options, query))
