"""The Tool Runtime API: tool groups, the tools they offer, and invoking a tool.

A **tool group** is a named source of tools served by one tool-runtime provider: an MCP server
(``remote::model-context-protocol``, reached over streamable HTTP, SSE or stdio) or a builtin group
(``builtin::file_search``, ``builtin::websearch``). Groups come from the run config (``tool_groups:``),
from builtin providers (one group each), or from ``POST /v1/toolgroups``; the last are persisted in
the KV store and record their owner.

A **tool** is what a model can call: a name, a description and a JSON-schema for its input. Tool
names are looked up across every group, first group first; pass ``toolgroup_id`` to pick one when
two groups offer the same name.

**Invoking** a tool never fails because the tool did: a tool that raised, or a server that is down,
slow or broken, comes back as a result with ``error_message`` (naming the server) and ``error_code``.
Only a mistake by the caller (an unknown tool or group, bad arguments to the API itself) is an HTTP
error. Listing a group's tools, on the other hand, reports an unreachable server as 503, a broken one
as 502 and a slow one as 504, naming the provider, since there is no result to carry the error.

Per-request authorization: an MCP group's headers from the run config are sent on every request; a
caller overrides or adds to them per request with ``headers``/``authorization`` on invoke, or for any
call with the ``X-Underlay-Provider-Data`` header ``{"mcp_headers": {"<toolgroup id or server URL>":
{"Authorization": "Bearer ..."}}}``. With the MCP provider's ``oauth`` settings, a server answering 401
is authorized per the MCP specification: per principal (an ``mcp_authorization_required`` result names
the URL to open; ``GET /v1/tool-runtime/oauth/callback`` finishes it) or with operator client
credentials. A server's question during a call (elicitation) comes back as ``elicitation_required``
and is answered with ``elicitation_responses`` on the next call.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any, Literal, Protocol

from pydantic import ConfigDict, Field, model_validator

from underlay.api.base import ApiModel
from underlay.api.routes import Handler, Route

__all__ = [
    "ContentPart",
    "ElicitationResponse",
    "InvokeToolRequest",
    "ListRuntimeToolsQuery",
    "ListToolsQuery",
    "McpConnection",
    "McpStdioCommand",
    "McpTransport",
    "MediaContentPart",
    "OAuthCallbackQuery",
    "OAuthCallbackResult",
    "ROUTES",
    "RegisterToolGroupRequest",
    "ResourceContentPart",
    "TextContentPart",
    "ToolCallContext",
    "ToolDef",
    "ToolGroup",
    "ToolGroupDeleted",
    "ToolGroupList",
    "ToolGroupSource",
    "ToolInvocationResult",
    "ToolList",
    "ToolRuntimeApi",
    "ToolRuntimeProvider",
    "URL",
]

McpTransport = Literal["streamable_http", "sse", "stdio"]
ToolGroupSource = Literal["config", "builtin", "api"]


class URL(ApiModel):
    """A server address, as ``{"uri": "http://host:port/mcp"}``."""

    uri: str = Field(min_length=1)


# ---------------------------------------------------------------------------------------------------
# Tool groups
# ---------------------------------------------------------------------------------------------------


class ToolGroup(ApiModel):
    """A registered tool group. Secrets (headers, stdio environment) are never part of it."""

    identifier: str
    provider_id: str
    provider_resource_id: str | None = None
    type: Literal["tool_group"] = "tool_group"
    mcp_endpoint: URL | None = None
    transport: McpTransport | None = Field(
        default=None, description="How the MCP server is reached; null for builtin groups."
    )
    args: dict[str, Any] | None = None
    source: ToolGroupSource = "api"
    owner: str | None = Field(default=None, description="Principal that registered it; null for shared groups.")
    created_at: int = 0


class ToolGroupList(ApiModel):
    object: Literal["list"] = "list"
    data: list[ToolGroup]


class RegisterToolGroupRequest(ApiModel):
    model_config = ConfigDict(extra="forbid")

    toolgroup_id: str = Field(min_length=1, max_length=256, description="The id clients will use.")
    provider_id: str | None = Field(
        default=None, description="Which tool-runtime provider serves it (default: the only MCP provider)."
    )
    mcp_endpoint: URL | None = Field(default=None, description="The MCP server's URL.")
    transport: Literal["streamable_http", "sse"] | None = Field(
        default=None, description="streamable_http (default) or sse; a URL ending in /sse defaults to sse."
    )
    args: dict[str, Any] | None = None


class ToolGroupDeleted(ApiModel):
    id: str
    object: Literal["toolgroup.deleted"] = "toolgroup.deleted"
    deleted: bool = True


# ---------------------------------------------------------------------------------------------------
# Tools
# ---------------------------------------------------------------------------------------------------


class ToolDef(ApiModel):
    """One tool: what a model sees (name, description, input schema) and where it comes from."""

    name: str
    description: str | None = None
    input_schema: dict[str, Any] = Field(default_factory=lambda: {"type": "object", "properties": {}})
    output_schema: dict[str, Any] | None = None
    toolgroup_id: str | None = None
    provider_id: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)


class ToolList(ApiModel):
    object: Literal["list"] = "list"
    data: list[ToolDef]


class ListToolsQuery(ApiModel):
    toolgroup_id: str | None = Field(default=None, description="Only this group's tools.")


class ListRuntimeToolsQuery(ApiModel):
    """``toolgroup_id`` (a registered group) or ``mcp_endpoint`` (any MCP server URL), not both."""

    toolgroup_id: str | None = None
    mcp_endpoint: str | None = Field(default=None, description="An MCP server URL to list directly.")
    transport: Literal["streamable_http", "sse"] | None = None

    @model_validator(mode="after")
    def _one_of(self) -> ListRuntimeToolsQuery:
        if (self.toolgroup_id is None) == (self.mcp_endpoint is None):
            raise ValueError("pass exactly one of toolgroup_id or mcp_endpoint")
        return self


# ---------------------------------------------------------------------------------------------------
# Invocation
# ---------------------------------------------------------------------------------------------------


class TextContentPart(ApiModel):
    type: Literal["text"] = "text"
    text: str


class MediaContentPart(ApiModel):
    """An image or audio clip, base64 in ``data``."""

    type: Literal["image", "audio"]
    data: str
    mime_type: str


class ResourceContentPart(ApiModel):
    """A resource the tool returned or linked: its text inline, or a blob (base64), or just its URI."""

    type: Literal["resource"] = "resource"
    uri: str
    mime_type: str | None = None
    text: str | None = None
    blob: str | None = None


ContentPart = Annotated[TextContentPart | MediaContentPart | ResourceContentPart, Field(discriminator="type")]


class ElicitationResponse(ApiModel):
    """The caller's answer to an MCP server's question (an ``elicitation_required`` result's
    ``metadata.elicitation``), given on the next call of the same tool."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1, max_length=128, description="The question's id from metadata.elicitation.id.")
    action: Literal["accept", "decline", "cancel"]
    content: dict[str, str | int | float | bool | list[str] | None] | None = Field(
        default=None, description="With accept: the values, matching the question's requested_schema."
    )


class InvokeToolRequest(ApiModel):
    model_config = ConfigDict(extra="forbid")

    tool_name: str = Field(min_length=1)
    kwargs: dict[str, Any] = Field(default_factory=dict, description="The tool's arguments.")
    toolgroup_id: str | None = Field(default=None, description="Underlay: the group to call it in.")
    mcp_endpoint: URL | None = Field(default=None, description="Underlay: call it on this MCP server directly.")
    headers: dict[str, str] | None = Field(
        default=None, description="Underlay: extra HTTP headers for the MCP server (override the config's)."
    )
    authorization: str | None = Field(
        default=None, description="Underlay: a token sent as 'Authorization: Bearer <token>'."
    )
    elicitation_responses: list[ElicitationResponse] = Field(
        default_factory=list,
        max_length=16,
        description="Underlay: answers to the questions an earlier call of this tool came back with "
        "(error_code elicitation_required).",
    )

    @model_validator(mode="after")
    def _not_both(self) -> InvokeToolRequest:
        if self.toolgroup_id is not None and self.mcp_endpoint is not None:
            raise ValueError("pass at most one of toolgroup_id or mcp_endpoint")
        return self


class ToolInvocationResult(ApiModel):
    """What a tool call produced.

    ``content`` is a string (builtin tools) or a list of parts (MCP tools: text, image, audio,
    resource); :meth:`text` flattens either to plain text for a model. On failure ``error_message``
    says what went wrong and which server, and ``error_code`` is one of ``tool_error`` (the tool
    itself failed), ``mcp_unavailable`` (server unreachable), ``mcp_timeout``, ``mcp_error`` (the
    server broke the protocol or refused), ``mcp_auth_error`` (OAuth with the server failed),
    ``mcp_authorization_required`` (open ``metadata.authorization_url``, then call again),
    ``elicitation_required`` (the server asked a question, in ``metadata.elicitation``; answer it with
    ``elicitation_responses`` on the next call), ``invalid_arguments``, ``unavailable`` (a builtin's backend
    is missing), ``search_error`` (a search backend failed) or ``internal_error``. ``metadata``
    carries structured output (MCP ``structured_content``; file_search and websearch ``results``)
    and where the call went (``toolgroup_id`` or ``server``).
    """

    content: str | list[ContentPart] | None = None
    error_message: str | None = None
    error_code: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)

    @property
    def is_error(self) -> bool:
        return self.error_message is not None

    def text(self) -> str:
        """The content as plain text (non-text parts become short placeholders); the error if failed."""
        if self.content is None:
            return self.error_message or ""
        if isinstance(self.content, str):
            return self.content
        pieces: list[str] = []
        for part in self.content:
            if isinstance(part, TextContentPart):
                pieces.append(part.text)
            elif isinstance(part, ResourceContentPart):
                pieces.append(part.text if part.text is not None else f"[resource {part.uri}]")
            else:
                pieces.append(f"[{part.type} {part.mime_type}]")
        return "\n".join(pieces)


# ---------------------------------------------------------------------------------------------------
# Providers
# ---------------------------------------------------------------------------------------------------


class McpStdioCommand(ApiModel):
    """A local MCP server run as a subprocess that speaks MCP on its stdin/stdout."""

    command: str
    args: list[str] = Field(default_factory=list)
    env: dict[str, str] = Field(default_factory=dict)
    cwd: str | None = None


class McpConnection(ApiModel):
    """How to reach one MCP server, resolved by the router for each call (secrets included).

    ``name`` is what error messages call the server (the tool group's id, or the URL). ``headers``
    are already merged: the config's, then the caller's per-request ones on top. ``timeout`` is the
    group's per-call timeout (seconds), overriding the provider's default.
    """

    name: str
    transport: McpTransport = "streamable_http"
    uri: str | None = None
    stdio: McpStdioCommand | None = None
    headers: dict[str, str] = Field(default_factory=dict)
    timeout: float | None = None


ProgressFn = Callable[[float, float | None, str | None], Awaitable[None]]
"""Called with a tool call's progress (progress, total, message) each time its server reports some."""


class ToolCallContext(ApiModel):
    """What the router hands a provider with each call: the group (when there is one) and, for MCP
    providers, the resolved connection."""

    toolgroup: ToolGroup | None = None
    connection: McpConnection | None = None
    timeout: float | None = None
    principal: str | None = Field(default=None, description="Who is calling (whose OAuth token to use).")
    elicitation_responses: list[ElicitationResponse] = Field(default_factory=list)
    progress: ProgressFn | None = Field(
        default=None, exclude=True, description="Where the tool's progress notifications go (MCP), if anywhere."
    )


class OAuthCallbackQuery(ApiModel):
    """What an authorization server's redirect brings back (RFC 6749 section 4.1.2, RFC 9207 ``iss``)."""

    state: str = Field(min_length=1, max_length=512)
    code: str | None = Field(default=None, max_length=4096)
    iss: str | None = Field(default=None, max_length=2048)
    error: str | None = Field(default=None, max_length=256)
    error_description: str | None = Field(default=None, max_length=1024)


class OAuthCallbackResult(ApiModel):
    """A finished MCP authorization: the server the principal's token is now stored for."""

    object: Literal["mcp.authorization"] = "mcp.authorization"
    status: Literal["authorized"] = "authorized"
    server: str
    principal: str


class ToolRuntimeProvider(Protocol):
    """What a tool-runtime provider implements.

    - ``list_runtime_tools`` raises the API's provider errors (503/502/504) when the tools cannot be
      listed; ``invoke_tool`` returns a :class:`ToolInvocationResult` with ``error_message`` instead.
    - A provider that serves MCP servers sets ``serves_mcp = True``; one that serves fixed groups
      (the builtins) returns them from ``builtin_tool_groups``.
    """

    provider_id: str
    serves_mcp: bool

    async def initialize(self) -> None: ...

    async def shutdown(self) -> None: ...

    def builtin_tool_groups(self) -> list[ToolGroup]: ...

    async def list_runtime_tools(self, context: ToolCallContext) -> list[ToolDef]: ...

    async def invoke_tool(
        self, tool_name: str, kwargs: dict[str, Any], context: ToolCallContext
    ) -> ToolInvocationResult: ...


# ---------------------------------------------------------------------------------------------------
# Routes
# ---------------------------------------------------------------------------------------------------


class ToolRuntimeApi(Protocol):
    """What the tool runtime router serves: one method per route in ``ROUTES``.

    The route table names these methods, so a missing or misspelled handler fails the type check;
    :class:`underlay.core.routers.tool_runtime.ToolRuntimeRouter` implements it.
    """

    async def handle_list_tool_groups(self) -> ToolGroupList: ...

    async def handle_register_tool_group(self, params: RegisterToolGroupRequest) -> ToolGroup: ...

    async def handle_get_tool_group(self, toolgroup_id: str) -> ToolGroup: ...

    async def handle_unregister_tool_group(self, toolgroup_id: str) -> ToolGroupDeleted: ...

    async def handle_list_tools(self, query: ListToolsQuery) -> ToolList: ...

    async def handle_get_tool(self, tool_name: str) -> ToolDef: ...

    async def handle_invoke_tool(self, params: InvokeToolRequest) -> ToolInvocationResult: ...

    async def handle_oauth_callback(self, query: OAuthCallbackQuery) -> OAuthCallbackResult: ...

    async def handle_list_runtime_tools(self, query: ListRuntimeToolsQuery) -> ToolList: ...


def _route(method: str, path: str, handler: Handler, summary: str, **kwargs: Any) -> Route:
    return Route(method, path, handler, summary=summary, tags=("tool_runtime",), **kwargs)


ROUTES: list[Route] = [
    _route("GET", "/v1/toolgroups", ToolRuntimeApi.handle_list_tool_groups, "List tool groups", response=ToolGroupList),
    _route(
        "POST",
        "/v1/toolgroups",
        ToolRuntimeApi.handle_register_tool_group,
        "Register a tool group (an MCP server)",
        body=RegisterToolGroupRequest,
        response=ToolGroup,
    ),
    _route(
        "GET",
        "/v1/toolgroups/{toolgroup_id:path}",
        ToolRuntimeApi.handle_get_tool_group,
        "Retrieve a tool group",
        response=ToolGroup,
    ),
    _route(
        "DELETE",
        "/v1/toolgroups/{toolgroup_id:path}",
        ToolRuntimeApi.handle_unregister_tool_group,
        "Unregister a tool group",
        response=ToolGroupDeleted,
    ),
    _route("GET", "/v1/tools", ToolRuntimeApi.handle_list_tools, "List tools", query=ListToolsQuery, response=ToolList),
    _route("GET", "/v1/tools/{tool_name}", ToolRuntimeApi.handle_get_tool, "Retrieve a tool", response=ToolDef),
    _route(
        "POST",
        "/v1/tool-runtime/invoke",
        ToolRuntimeApi.handle_invoke_tool,
        "Invoke a tool",
        body=InvokeToolRequest,
        response=ToolInvocationResult,
    ),
    _route(
        "GET",
        "/v1/tool-runtime/oauth/callback",
        ToolRuntimeApi.handle_oauth_callback,
        "Finish an MCP server's OAuth authorization (the authorization server redirects here)",
        query=OAuthCallbackQuery,
        response=OAuthCallbackResult,
    ),
    _route(
        "GET",
        "/v1/tool-runtime/list-tools",
        ToolRuntimeApi.handle_list_runtime_tools,
        "List the tools of a group or an MCP server",
        query=ListRuntimeToolsQuery,
        response=ToolList,
    ),
]
