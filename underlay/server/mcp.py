"""Underlay as an MCP server: ``/mcp`` over streamable HTTP, mounted in the same ASGI app.

Any MCP client (an IDE, an agent framework, another Underlay) can use what this server knows:

- ``list_vector_stores`` and ``search_vector_store`` over the Vector Stores API (when it is on);
- every tool of every registered tool group (MCP servers and builtins), proxied through the tool
  runtime, so an MCP client sees one server that aggregates them all;
- the caller's files as resources, vector-store search as a resource template, and prompts built on
  both, with completion of their ids, plus the resources, templates and prompts of every registered
  MCP tool group (see :mod:`underlay.server.mcp_resources`).

Why the low-level ``Server`` and not ``MCPServer``: the tool list is not fixed. Tool groups come and
go through the API and their servers' tools change, so tools are listed from the live stack on every
``tools/list`` and dispatched by name on ``tools/call``.

Why stateless HTTP: stateless requests work unchanged behind several workers or replicas (a session
held in one worker's memory would be unknown to the next). Clients still run the usual handshake.
Responses are plain JSON, except for a ``tools/call`` that asks for progress (``_meta.progressToken``)
from a client that accepts SSE: that one is answered as an event stream, so the proxied tool's progress
notifications reach the caller before its result (a JSON response has nowhere to put them). Two
stateless transports serve ``/mcp`` for that; :class:`_Dispatch` picks one per request by reading the
(size-capped) body once and handing it on unchanged.

Tool failures are MCP tool errors (``isError`` results with the message), never protocol errors,
so a model can read and react to them. Per-request credentials for proxied MCP servers travel as
for the HTTP API: the ``X-Underlay-Provider-Data`` header with ``mcp_headers``.

The handlers run in a copy of the HTTP request's context (the session manager starts each stateless
request's server task from the request task), so the request id, provider data and the principal set
by the server's middleware apply here exactly as on the REST routes: vector stores are filtered by
owner, registered tool groups by visibility.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from typing import Any

import mcp_types as types
from mcp.server import Server
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from starlette.routing import BaseRoute, Route
from starlette.types import Message, Receive, Scope, Send

import underlay
from underlay.api.context import PROVIDER_DATA_HEADER, provider_data_var
from underlay.api.errors import UnderlayError
from underlay.api.tool_runtime import MediaContentPart, ResourceContentPart, TextContentPart, ToolInvocationResult
from underlay.api.vector_stores import SearchRequest, VectorStoreListQuery
from underlay.core.routers.files import guess_media_type
from underlay.server import mcp_agents as agents
from underlay.server import mcp_resources as resources

log = logging.getLogger("underlay.mcp")
MCP_PATH = "/mcp"
INSTRUCTIONS = (
    "Underlay's tools: search the caller's vector stores (list_vector_stores, search_vector_store) and call "
    "the tools of every tool group registered on this server. Resources: the caller's files "
    "(underlay://files/{file_id}) and vector-store search results. Prompts: summarize_file, "
    "answer_from_vector_store."
)

SEARCH_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "vector_store_id": {"type": "string", "description": "The vector store to search (see list_vector_stores)."},
        "query": {"type": "string", "description": "What to look for."},
        "max_num_results": {"type": "integer", "minimum": 1, "maximum": 50, "default": 10},
        "search_mode": {"type": "string", "enum": ["vector", "keyword", "hybrid"], "default": "vector"},
        "filters": {"type": "object", "description": "An OpenAI attribute filter ({type, key, value} or and/or)."},
    },
    "required": ["vector_store_id", "query"],
}
LIST_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"limit": {"type": "integer", "minimum": 1, "maximum": 100, "default": 20}},
}
OWN_TOOLS = ("list_vector_stores", "search_vector_store")
MAX_BODY_BYTES = 4 * 1024 * 1024
"""The largest ``/mcp`` request body (the SDK's limit too): what the dispatcher reads at most."""


class UnderlayMcpServer:
    """The ``/mcp`` endpoint: routes to add to the app, and a lifespan to run around it."""

    def __init__(self, get_stack: Callable[[], Any], *, host: str) -> None:
        self._get_stack = get_stack
        transport_log = logging.getLogger("mcp.server.streamable_http")
        if transport_log.level == logging.NOTSET:  # it logs every stateless request's end at INFO
            transport_log.setLevel(logging.WARNING)
        self.server: Server[Any] = Server(
            "underlay",
            version=underlay.__version__,
            title="Underlay",
            instructions=INSTRUCTIONS,
            on_list_tools=self._list_tools,
            on_call_tool=self._call_tool,
            on_list_resources=self._list_resources,
            on_list_resource_templates=self._list_resource_templates,
            on_read_resource=self._read_resource,
            on_list_prompts=self._list_prompts,
            on_get_prompt=self._get_prompt,
            on_completion=self._complete,
        )
        app = self.server.streamable_http_app(
            streamable_http_path=MCP_PATH,
            stateless_http=True,
            json_response=True,
            host=host,
            max_request_body_size=MAX_BODY_BYTES,
        )
        self._json = self.server.session_manager
        self._streaming = StreamableHTTPSessionManager(
            app=self.server,
            json_response=False,
            stateless=True,
            security_settings=self._json.security_settings,
            max_request_body_size=MAX_BODY_BYTES,
        )
        dispatch = _Dispatch(self._json, self._streaming)
        self.routes: list[BaseRoute] = [
            Route(MCP_PATH, endpoint=dispatch) if getattr(r, "path", None) == MCP_PATH else r for r in app.routes
        ]

    def lifespan(self) -> AbstractAsyncContextManager[None]:
        """Run both transports while the app runs (they own the tasks serving MCP requests)."""
        return self._run()

    @asynccontextmanager
    async def _run(self) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            await stack.enter_async_context(self._json.run())
            await stack.enter_async_context(self._streaming.run())
            yield

    # -- handlers ---------------------------------------------------------------------------------

    def _routers(self) -> dict[str, Any]:
        return self._get_stack().routers

    async def _list_tools(self, ctx: Any, params: types.PaginatedRequestParams | None) -> types.ListToolsResult:
        _adopt_provider_data(ctx)
        routers = self._routers()
        tools: list[types.Tool] = []
        if "vector_stores" in routers:
            tools.append(
                types.Tool(
                    name="list_vector_stores",
                    description="List the vector stores you can search, newest first (id, name, file counts).",
                    input_schema=LIST_SCHEMA,
                )
            )
            tools.append(
                types.Tool(
                    name="search_vector_store",
                    description="Search one vector store and return the most relevant passages with their files.",
                    input_schema=SEARCH_SCHEMA,
                )
            )
        tools.extend(await agents.agent_tools(routers))
        runtime = routers.get("tool_runtime")
        if runtime is not None:
            taken = {t.name for t in tools}
            for tool in await runtime.list_tools():
                if tool.name in taken:
                    continue
                taken.add(tool.name)
                tools.append(
                    types.Tool(
                        name=tool.name,
                        description=tool.description,
                        input_schema=tool.input_schema,
                        meta={"underlay/toolgroup_id": tool.toolgroup_id},
                    )
                )
        return types.ListToolsResult(tools=tools)

    async def _call_tool(self, ctx: Any, params: types.CallToolRequestParams) -> types.CallToolResult:
        _adopt_provider_data(ctx)
        arguments = dict(params.arguments or {})
        try:
            if params.name in OWN_TOOLS and "vector_stores" in self._routers():
                if params.name == "list_vector_stores":
                    return await self._list_vector_stores(arguments)
                return await self._search_vector_store(arguments)
            if agents.is_agent_tool(self._routers(), params.name):
                return await agents.call_agent(self._routers(), params.name, arguments)
            runtime = self._routers().get("tool_runtime")
            if runtime is None:
                return _error(f"Unknown tool '{params.name}'.")
            progress = _progress_relay(ctx, params)
            return _to_mcp(await runtime.invoke_tool(params.name, arguments, progress=progress))
        except UnderlayError as exc:
            return _error(exc.message)
        except (ValueError, TypeError) as exc:
            return _error(f"Invalid arguments for '{params.name}': {exc}")

    async def _list_resources(self, ctx: Any, params: types.PaginatedRequestParams | None) -> types.ListResourcesResult:
        _adopt_provider_data(ctx)
        return await resources.list_resources(self._routers(), params.cursor if params is not None else None)

    async def _list_resource_templates(
        self, ctx: Any, params: types.PaginatedRequestParams | None
    ) -> types.ListResourceTemplatesResult:
        _adopt_provider_data(ctx)
        return await resources.list_resource_templates(self._routers())

    async def _read_resource(self, ctx: Any, params: types.ReadResourceRequestParams) -> types.ReadResourceResult:
        _adopt_provider_data(ctx)
        return await resources.read_resource(self._routers(), params.uri)

    async def _list_prompts(self, ctx: Any, params: types.PaginatedRequestParams | None) -> types.ListPromptsResult:
        _adopt_provider_data(ctx)
        return await resources.list_prompts(self._routers())

    async def _get_prompt(self, ctx: Any, params: types.GetPromptRequestParams) -> types.GetPromptResult:
        _adopt_provider_data(ctx)
        return await resources.get_prompt(self._routers(), params.name, dict(params.arguments or {}))

    async def _complete(self, ctx: Any, params: types.CompleteRequestParams) -> types.CompleteResult:
        _adopt_provider_data(ctx)
        return await resources.complete(self._routers(), params)

    async def _list_vector_stores(self, arguments: dict[str, Any]) -> types.CallToolResult:
        query = VectorStoreListQuery(limit=int(arguments.get("limit", 20)))
        page = await self._routers()["vector_stores"].list_vector_stores(query)
        stores = [
            {
                "id": s.id,
                "name": s.name,
                "status": s.status,
                "files": s.file_counts.completed,
                "created_at": s.created_at,
            }
            for s in page.data
        ]
        text = "\n".join(f"{s['id']}  {s['name']}  ({s['files']} files, {s['status']})" for s in stores)
        return types.CallToolResult(
            content=[types.TextContent(type="text", text=text or "No vector stores.")],
            structured_content={"vector_stores": stores},
        )

    async def _search_vector_store(self, arguments: dict[str, Any]) -> types.CallToolResult:
        store_id = arguments.pop("vector_store_id", None)
        if not isinstance(store_id, str) or not store_id:
            return _error("search_vector_store needs vector_store_id.")
        request = SearchRequest.model_validate(arguments)
        page = await self._routers()["vector_stores"].search_vector_store(store_id, request)
        results = [
            {
                "file_id": r.file_id,
                "filename": r.filename,
                "score": r.score,
                "attributes": r.attributes or {},
                "text": "\n".join(c.text for c in r.content),
            }
            for r in page.data
        ]
        if results:
            text = "\n\n".join(
                f"[{n}] {r['filename']} (score {r['score']:.3f})\n{r['text']}" for n, r in enumerate(results, start=1)
            )
        else:
            text = f"No passages matched '{'; '.join(page.search_query)}'."
        links: dict[str, types.ContentBlock] = {}
        for r in results:  # each file found, once, as a link a client can read (underlay://files/{id})
            if "files" in self._routers() and r["file_id"] not in links:
                links[r["file_id"]] = types.ResourceLink(
                    type="resource_link",
                    uri=resources.file_uri(r["file_id"]),
                    name=r["filename"] or r["file_id"],
                    mime_type=guess_media_type(r["filename"] or ""),
                )
        return types.CallToolResult(
            content=[types.TextContent(type="text", text=text), *links.values()],
            structured_content={"results": results, "search_query": page.search_query},
        )


def _progress_relay(ctx: Any, params: types.CallToolRequestParams) -> Any:
    """A callback that sends the tool's progress to the caller under its own token, or None when the
    caller asked for none (then the upstream server is not asked either)."""
    token = (params.meta or {}).get("progress_token")
    if token is None or ctx.request_id is None:
        return None
    session, request_id = ctx.session, str(ctx.request_id)

    async def relay(progress: float, total: float | None, message: str | None) -> None:
        await session.send_progress_notification(token, progress, total, message, related_request_id=request_id)

    return relay


class _Dispatch:
    """Sends each ``/mcp`` request to the JSON transport, or to the SSE one when it is a ``tools/call``
    with a progress token from a client that accepts SSE. The body is read once (up to the size
    limit; a larger one goes on to the JSON transport, which refuses it) and replayed unchanged."""

    def __init__(self, json_manager: StreamableHTTPSessionManager, sse_manager: StreamableHTTPSessionManager) -> None:
        self._json = json_manager
        self._sse = sse_manager

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope.get("method") != "POST" or not _accepts_sse(scope):
            await self._json.handle_request(scope, receive, send)
            return
        chunks: list[bytes] = []
        size, more = 0, True
        while more and size <= MAX_BODY_BYTES:
            message = await receive()
            if message["type"] != "http.request":  # the client went away: let the transport see it
                await self._json.handle_request(scope, _replay([], False, receive, message), send)
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            more = bool(message.get("more_body", False))
        manager = self._sse if not more and _wants_progress(b"".join(chunks)) else self._json
        await manager.handle_request(scope, _replay(chunks, more, receive, None), send)


def _accepts_sse(scope: Scope) -> bool:
    accept = b",".join(v for k, v in scope.get("headers", []) if k == b"accept")
    return b"text/event-stream" in accept


def _wants_progress(body: bytes) -> bool:
    """Whether the body is one ``tools/call`` request carrying ``_meta.progressToken``."""
    try:
        message = json.loads(body)
    except ValueError:
        return False
    if not isinstance(message, dict) or message.get("method") != "tools/call":
        return False
    params = message.get("params")
    meta = params.get("_meta") if isinstance(params, dict) else None
    return isinstance(meta, dict) and meta.get("progressToken") is not None


def _replay(chunks: list[bytes], more: bool, receive: Receive, pending: Message | None) -> Receive:
    """A ``receive`` that first gives back what was already read, then reads on."""
    queue: list[Message] = [{"type": "http.request", "body": b"".join(chunks), "more_body": more}]
    if pending is not None:
        queue = [pending]

    async def replayed() -> Message:
        return queue.pop(0) if queue else await receive()

    return replayed


def _adopt_provider_data(ctx: Any) -> None:
    """Per-request credentials from the HTTP request's provider-data header (the context usually has them
    already; reading the header too keeps them even if a transport ever runs handlers elsewhere)."""
    request = getattr(ctx, "request", None)
    raw = request.headers.get(PROVIDER_DATA_HEADER) if request is not None else None
    if not raw:
        return
    try:
        data = json.loads(raw)
    except ValueError:
        return
    if isinstance(data, dict):
        provider_data_var.set(data)


def _error(message: str) -> types.CallToolResult:
    return types.CallToolResult(content=[types.TextContent(type="text", text=message)], is_error=True)


def _to_mcp(result: ToolInvocationResult) -> types.CallToolResult:
    """A tool-runtime result as an MCP tool result (content parts kept, structured output carried)."""
    blocks: list[types.ContentBlock] = []
    if isinstance(result.content, str):
        blocks.append(types.TextContent(type="text", text=result.content))
    elif result.content:
        for part in result.content:
            if isinstance(part, TextContentPart):
                blocks.append(types.TextContent(type="text", text=part.text))
            elif isinstance(part, MediaContentPart) and part.type == "image":
                blocks.append(types.ImageContent(type="image", data=part.data, mime_type=part.mime_type))
            elif isinstance(part, MediaContentPart):
                blocks.append(types.AudioContent(type="audio", data=part.data, mime_type=part.mime_type))
            elif isinstance(part, ResourceContentPart):
                blocks.append(_resource_block(part))
    if result.is_error:  # the message already quotes the tool's own error text
        blocks = [types.TextContent(type="text", text=result.error_message or "The tool failed.")]
    structured = result.metadata.get("structured_content")
    if structured is None and "results" in result.metadata:
        structured = {"results": result.metadata["results"]}
    return types.CallToolResult(
        content=blocks,
        structured_content=structured if isinstance(structured, dict) else None,
        is_error=result.is_error,
    )


def _resource_block(part: ResourceContentPart) -> types.ContentBlock:
    """A tool's resource as the tool sent it: embedded (text or blob) stays embedded, a link stays a link."""
    if part.text is not None:
        text = types.TextResourceContents(uri=part.uri, mime_type=part.mime_type, text=part.text)
        return types.EmbeddedResource(type="resource", resource=text)
    if part.blob is not None:
        blob = types.BlobResourceContents(uri=part.uri, mime_type=part.mime_type, blob=part.blob)
        return types.EmbeddedResource(type="resource", resource=blob)
    return types.ResourceLink(type="resource_link", name=part.uri, uri=part.uri, mime_type=part.mime_type)
