"""``remote::model-context-protocol``: tools of MCP servers, through the official ``mcp`` SDK.

Servers are reached over streamable HTTP (the default), SSE (legacy HTTP+SSE servers) or stdio (a
subprocess declared in the run config). Sessions come from a :class:`SessionPool`, so consecutive
calls reuse one handshake.

Failures are classified once, here, so every caller sees the same thing: an unreachable server is
``mcp_unavailable`` (503), a slow one ``mcp_timeout`` (504), one that answers with an error or breaks
the protocol ``mcp_error`` (502). Listing raises those as provider errors; invoking returns them as an
error result. Both name the server. A pooled session that turns out to be dead (the server restarted,
the stream was cut) is dropped and the request retried once on a fresh session, so a restarted server
is used again without anyone noticing; a fresh session that fails is reported, never retried.

OAuth (``oauth.py``): a server that answers 401 is authorized per principal (code flow: the caller gets
``mcp_authorization_required`` with the URL to open) or, when the operator configured a client for
it, with client credentials. Elicitation: a server that asks for input during a tool call gets
``cancel`` for now and the caller gets ``elicitation_required`` with the question; the caller answers
with ``elicitation_responses`` on the next call, which is made again and answered from them.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import httpx2
from mcp import MCPError
from mcp.client.auth import OAuthFlowError, OAuthRegistrationError, OAuthTokenError
from mcp_types import (
    CONNECTION_CLOSED,
    INVALID_PARAMS,
    REQUEST_TIMEOUT,
    AudioContent,
    CallToolResult,
    ElicitRequestParams,
    ElicitResult,
    EmbeddedResource,
    ErrorData,
    ImageContent,
    Implementation,
    PaginatedRequestParams,
    ResourceLink,
    TextContent,
    TextResourceContents,
)

import underlay
from underlay.api.errors import (
    ForbiddenError,
    InvalidRequestError,
    ProviderError,
    ServiceUnavailableError,
    UpstreamError,
    UpstreamTimeoutError,
)
from underlay.api.tool_runtime import (
    ContentPart,
    ElicitationResponse,
    McpConnection,
    MediaContentPart,
    ResourceContentPart,
    TextContentPart,
    ToolCallContext,
    ToolDef,
    ToolGroup,
    ToolInvocationResult,
)
from underlay.providers.remote.tool_runtime.model_context_protocol.config import Config  # noqa: E402
from underlay.providers.remote.tool_runtime.model_context_protocol.oauth import (
    AuthorizationRequired,
    OAuthCallbackError,
    OAuthManager,
)
from underlay.providers.remote.tool_runtime.model_context_protocol.pool import (
    PooledSession,
    SessionOpenError,
    SessionPool,
    root_cause,
)

log = logging.getLogger("underlay.tool_runtime.mcp")
T = TypeVar("T")
_MAX_LIST_PAGES = 100
_MAX_ELICIT_MESSAGE = 4000
_MAX_ELICIT_SCHEMA = 16_384
_OAUTH_ERRORS = (OAuthFlowError, OAuthTokenError, OAuthRegistrationError)


class AuthorizationNeeded(ForbiddenError):
    """The caller has to authorize Underlay at the MCP server's authorization server first (403)."""

    def __init__(self, message: str, url: str) -> None:
        super().__init__(message, code="mcp_authorization_required")
        self.url = url


@dataclass
class _Call:
    """One tool call in flight on a session: the answers its caller gave, and the question it got."""

    tool_name: str
    kwargs: dict[str, Any]
    answers: dict[str, ElicitationResponse]
    asked: dict[str, Any] | None = None
    seen: set[str] = field(default_factory=set)


def _find(exc: BaseException, kinds: tuple[type[BaseException], ...]) -> BaseException | None:
    """The first exception of ``kinds`` anywhere in ``exc``'s groups and causes."""
    stack: list[BaseException] = [exc]
    seen: set[int] = set()
    while stack:
        current = stack.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, kinds):
            return current
        if isinstance(current, BaseExceptionGroup):
            stack.extend(current.exceptions)
        for linked in (current.__cause__, current.__context__):
            if linked is not None:
                stack.append(linked)
    return None


class _OneLine(logging.Filter):
    """The SDK logs a dead server's stream errors with full tracebacks; we report them ourselves, once."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.exc_info[1] is not None:
            if _find(record.exc_info[1], (AuthorizationRequired,)) is not None:
                return False  # asking the caller to authorize is the flow working, not an error
            cause = root_cause(record.exc_info[1])
            record.msg = f"{record.getMessage()}: {type(cause).__name__}: {cause}"
            record.args = ()
            record.exc_info = None
            record.exc_text = None
        return True


def _quiet_sdk_logs() -> None:
    """One line per event: no per-request HTTP lines from the SDK's client, no tracebacks for outages."""
    http = logging.getLogger("httpx2")
    if http.level == logging.NOTSET:
        http.setLevel(logging.WARNING)
    for name in (
        "mcp.client.streamable_http",
        "mcp.client.sse",
        "mcp.client.stdio",
        "mcp.shared.jsonrpc_dispatcher",
        "mcp.client.auth.oauth2",
    ):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _OneLine) for f in logger.filters):
            logger.addFilter(_OneLine())


class McpToolRuntime:
    serves_mcp = True

    def __init__(self, provider_id: str, config: Config) -> None:
        _quiet_sdk_logs()
        self.provider_id = provider_id
        self.config = config
        self.pool = SessionPool(
            connect_timeout=config.connect_timeout,
            sse_read_timeout=config.sse_read_timeout,
            idle_timeout=config.idle_timeout,
            max_sessions=config.max_sessions,
            client_info=Implementation(name="underlay", version=underlay.__version__),
            max_backoff=config.max_backoff,
        )
        self.oauth = (
            OAuthManager(config.oauth, config.connect_timeout, provider_id) if config.oauth is not None else None
        )

    def use_kvstore(self, kvstore: Any) -> None:
        """Where OAuth tokens and pending authorizations are kept (the router hands the server's store)."""
        if self.oauth is not None:
            self.oauth.attach(kvstore)

    async def close_server(self, name: str) -> int:
        """Close the sessions of the server called ``name`` (its tool group was deleted)."""
        return await self.pool.close_server(name)

    async def complete_authorization(self, state: str, code: str, iss: str | None) -> dict[str, Any]:
        """The OAuth callback: exchange the code for the principal that started the flow."""
        if self.oauth is None:
            raise InvalidRequestError(
                f"Provider '{self.provider_id}' has no oauth settings, so it started no authorization.", param="state"
            )
        try:
            return await self.oauth.complete(state, code, iss)
        except OAuthCallbackError as exc:
            raise InvalidRequestError(f"MCP authorization could not be completed: {exc}", param="state") from None
        except httpx2.HTTPError as exc:
            raise ServiceUnavailableError(
                self.provider_id, f"the authorization server could not be reached: {_text(exc)}", code="mcp_unavailable"
            ) from None

    async def initialize(self) -> None:
        """Nothing to do: sessions open on first use, so a down server never blocks start-up."""

    async def shutdown(self) -> None:
        await self.pool.close()

    async def health(self) -> dict[str, Any]:
        return {"status": "OK", "open_sessions": len(self.pool)}

    def builtin_tool_groups(self) -> list[ToolGroup]:
        return []

    # -- the API ----------------------------------------------------------------------------------

    async def list_runtime_tools(self, context: ToolCallContext) -> list[ToolDef]:
        connection = self._connection(context)
        group = context.toolgroup
        tools = await self._run(connection, _list_all_tools, self.config.list_timeout, "listing tools", context)
        return [
            ToolDef(
                name=tool.name,
                description=tool.description,
                input_schema=dict(tool.input_schema or {"type": "object", "properties": {}}),
                output_schema=dict(tool.output_schema) if tool.output_schema else None,
                toolgroup_id=group.identifier if group else None,
                provider_id=self.provider_id,
                metadata=_tool_metadata(tool, connection),
            )
            for tool in tools
        ]

    async def invoke_tool(
        self, tool_name: str, kwargs: dict[str, Any], context: ToolCallContext
    ) -> ToolInvocationResult:
        connection = self._connection(context)
        timeout = context.timeout or connection.timeout or self.config.timeout
        meta: dict[str, Any] = {"server": connection.name}
        if context.toolgroup is not None:
            meta["toolgroup_id"] = context.toolgroup.identifier

        answers = {a.id: a for a in context.elicitation_responses}
        slot = _Call(tool_name=tool_name, kwargs=kwargs, answers=answers)

        async def call(session: Any, entry: PooledSession) -> CallToolResult:
            entry.calls.append(slot)
            try:
                return await session.call_tool(tool_name, kwargs, progress_callback=_relay(context))
            finally:
                entry.calls.remove(slot)

        try:
            result = await self._run(connection, call, timeout, f"calling tool '{tool_name}'", context, with_entry=True)
        except AuthorizationNeeded as exc:
            meta["authorization_url"] = exc.url
            return ToolInvocationResult(error_message=exc.message, error_code=exc.code, metadata=meta)
        except ProviderError as exc:
            return ToolInvocationResult(error_message=exc.message, error_code=exc.code, metadata=meta)
        if slot.asked is not None:
            question = slot.asked
            meta["elicitation"] = question
            return ToolInvocationResult(
                error_message=(
                    f"{self._where(connection)} asks for input while calling tool '{tool_name}': "
                    f"{question['message']} Answer on the next call with elicitation_responses: "
                    f'[{{"id": "{question["id"]}", "action": "accept", "content": {{...}}}}] '
                    "(or action decline or cancel); the call is then made again."
                ),
                error_code="elicitation_required",
                metadata=meta,
            )
        parts = [_content_part(block) for block in result.content]
        if result.structured_content is not None:
            meta["structured_content"] = result.structured_content
        if result.is_error:
            text = "\n".join(p.text for p in parts if isinstance(p, TextContentPart)) or "the tool reported an error"
            return ToolInvocationResult(
                content=parts,
                error_message=f"Tool '{tool_name}' on MCP server '{connection.name}' failed: {text}",
                error_code="tool_error",
                metadata=meta,
            )
        return ToolInvocationResult(content=parts, metadata=meta)

    # -- resources and prompts (what ``/mcp`` hands on besides tools) -----------------------------

    async def list_runtime_resources(self, context: ToolCallContext) -> dict[str, list[dict[str, Any]]]:
        """The server's resources and resource templates as it sent them (MCP JSON, camelCase), all pages
        up to a bound; ``{"resources": [], "resource_templates": []}`` if it offers none."""
        connection = self._connection(context)

        async def listing(session: Any) -> dict[str, list[dict[str, Any]]]:
            if not _offers(session, "resources"):
                return {"resources": [], "resource_templates": []}
            return {
                "resources": await _list_all(session.list_resources, "resources"),
                "resource_templates": await _list_all(session.list_resource_templates, "resource_templates"),
            }

        return await self._run(connection, listing, self.config.list_timeout, "listing resources", context)

    async def read_runtime_resource(self, uri: str, context: ToolCallContext) -> list[dict[str, Any]]:
        """One resource's contents (MCP JSON), as the server sent them."""
        connection = self._connection(context)
        timeout = context.timeout or connection.timeout or self.config.timeout

        async def read(session: Any) -> list[dict[str, Any]]:
            result = await session.read_resource(uri)
            return [_dump(c) for c in getattr(result, "contents", [])]

        return await self._run(connection, read, timeout, f"reading resource '{uri[:200]}'", context)

    async def list_runtime_prompts(self, context: ToolCallContext) -> list[dict[str, Any]]:
        """The server's prompts (MCP JSON), all pages up to a bound; none if it offers none."""
        connection = self._connection(context)

        async def listing(session: Any) -> list[dict[str, Any]]:
            return await _list_all(session.list_prompts, "prompts") if _offers(session, "prompts") else []

        return await self._run(connection, listing, self.config.list_timeout, "listing prompts", context)

    async def get_runtime_prompt(
        self, name: str, arguments: dict[str, str], context: ToolCallContext
    ) -> dict[str, Any]:
        """One prompt filled in with ``arguments`` (MCP JSON ``GetPromptResult``), as the server sent it."""
        connection = self._connection(context)
        timeout = context.timeout or connection.timeout or self.config.timeout

        async def get(session: Any) -> dict[str, Any]:
            return _dump(await session.get_prompt(name, arguments))

        return await self._run(connection, get, timeout, f"getting prompt '{name[:100]}'", context)

    # -- sessions and failures --------------------------------------------------------------------

    def _connection(self, context: ToolCallContext) -> McpConnection:
        if context.connection is None:
            raise InvalidRequestError(
                f"Provider '{self.provider_id}' serves MCP servers; the tool group has no mcp_endpoint "
                "or stdio command.",
                param="mcp_endpoint",
            )
        return context.connection

    async def _run(
        self,
        connection: McpConnection,
        op: Callable[..., Awaitable[T]],
        seconds: float,
        doing: str,
        context: ToolCallContext | None = None,
        *,
        with_entry: bool = False,
    ) -> T:
        """Run ``op(session)`` (``op(session, entry)`` with ``with_entry``) on a pooled session; retry once
        on a fresh one if the pooled one was dead."""
        auth, auth_key = (None, None)
        if self.oauth is not None:
            auth, auth_key = self.oauth.auth_for(connection, context.principal if context else None)
            if auth is not None:
                auth.last_error = None  # type: ignore[attr-defined]
        for attempt in range(2):
            try:
                async with self.pool.lease(connection, auth=auth, auth_key=auth_key, elicit=self._elicit) as (
                    entry,
                    fresh,
                ):
                    try:
                        pending = op(entry.session, entry) if with_entry else op(entry.session)
                        return await asyncio.wait_for(pending, seconds)
                    except asyncio.CancelledError:
                        raise
                    except Exception as exc:
                        refused = self._auth_failure(getattr(auth, "last_error", None), connection)
                        if refused is not None:  # the OAuth flow stopped on an open session (a 401 mid-way)
                            await self.pool.discard(entry)
                            raise refused from None
                        error, retryable = self._classify(exc, connection, entry, doing, seconds)
            except SessionOpenError as exc:
                raise self._classify_open(exc, connection) from None
            if retryable:
                await self.pool.discard(entry)
                if not fresh and attempt == 0:
                    log.info("MCP session to %s was stale (%s); reconnecting", connection.name, error.message)
                    continue
            raise error
        raise AssertionError("unreachable")

    async def _elicit(self, entry: PooledSession, ctx: Any, params: ElicitRequestParams) -> ElicitResult | ErrorData:
        """A server asks for input during a tool call: answer from the caller's responses, or record the
        question (answering ``cancel``) so the caller is asked."""
        if len(entry.calls) != 1:
            reason = "no tool call is in flight" if not entry.calls else "several tool calls share this session"
            log.info("MCP server %s asked for input, declined: %s", entry.connection.name, reason)
            return ErrorData(code=INVALID_PARAMS, message=f"Underlay cannot route this elicitation: {reason}")
        slot: _Call = entry.calls[0]
        message = str(getattr(params, "message", ""))[:_MAX_ELICIT_MESSAGE]
        schema = getattr(params, "requested_schema", None)
        if hasattr(schema, "model_dump"):
            schema = schema.model_dump(mode="json", by_alias=True, exclude_none=True)
        url = getattr(params, "url", None)
        schema_json = json.dumps(schema, sort_keys=True, default=str) if schema is not None else ""
        if len(schema_json) > _MAX_ELICIT_SCHEMA:
            return ErrorData(code=INVALID_PARAMS, message="Underlay declines elicitation schemas over 16 KiB")
        basis = json.dumps([slot.tool_name, slot.kwargs, message, schema_json, url], sort_keys=True, default=str)
        question_id = "elicit_" + hashlib.sha256(basis.encode()).hexdigest()[:24]
        answer = slot.answers.get(question_id)
        if answer is not None and question_id not in slot.seen:
            slot.seen.add(question_id)  # one answer per question per call: a server asking again is asked anew
            content = answer.content if answer.action == "accept" else None
            return ElicitResult(action=answer.action, content=content)
        if slot.asked is None:
            slot.asked = {"id": question_id, "message": message, "server": entry.connection.name}
            if schema is not None:
                slot.asked["requested_schema"] = schema
            if url is not None:
                slot.asked["url"] = str(url)
                slot.asked["mode"] = "url"
        return ElicitResult(action="cancel")

    def _where(self, connection: McpConnection) -> str:
        if connection.transport == "stdio" and connection.stdio is not None:
            return f"MCP server '{connection.name}' (stdio: {connection.stdio.command})"
        if connection.uri and connection.uri != connection.name:
            return f"MCP server '{connection.name}' ({connection.uri})"
        return f"MCP server '{connection.name}'"

    def _http_failure(self, status: int, body: str, where: str) -> tuple[ProviderError, bool]:
        detail = f": {body.strip()}" if body.strip() else ""
        if status in (401, 403):
            message = f"{where} refused the credentials (HTTP {status}){detail}"
            return UpstreamError(self.provider_id, message, code="mcp_error"), False
        if status in (502, 503, 504):
            message = f"{where} is unavailable (HTTP {status}){detail}"
            return ServiceUnavailableError(self.provider_id, message, code="mcp_unavailable"), True
        return UpstreamError(self.provider_id, f"{where} answered HTTP {status}{detail}", code="mcp_error"), False

    def _classify_open(self, exc: SessionOpenError, connection: McpConnection) -> ProviderError | AuthorizationNeeded:
        """Why a session could not be opened, as the error to report (with the attempt count when the
        server keeps failing and calls are being held back)."""
        error = self._open_failure(exc, connection)
        if exc.attempts > 1 and isinstance(error, ProviderError):
            retry = f"; next attempt in {exc.retry_in:.1f}s" if exc.retry_in else ""
            error.message = f"{error.message} ({exc.attempts} failed connection attempts in a row{retry})"
            error.args = (error.message,)
        return error

    def _open_failure(self, exc: SessionOpenError, connection: McpConnection) -> ProviderError | AuthorizationNeeded:
        refused = self._auth_failure(exc.cause, connection)
        if refused is not None:
            return refused
        return self._plain_open_failure(exc, connection)

    def _auth_failure(
        self, exc: BaseException | None, connection: McpConnection
    ) -> ProviderError | AuthorizationNeeded | None:
        """The error to report when ``exc`` (or something inside it) is the OAuth flow stopping."""
        if exc is None:
            return None
        where = self._where(connection)
        needed = _find(exc, (AuthorizationRequired,))
        if isinstance(needed, AuthorizationRequired):
            self.pool.forget_failures(connection.name)  # asking a person is no connection failure
            minutes = max(1, round(needed.expires_in / 60))
            return AuthorizationNeeded(
                f"{where} requires OAuth authorization for your account: open {needed.url} in a browser, approve, "
                f"then call again (the link is valid for {minutes} minutes).",
                needed.url,
            )
        oauth = _find(exc, _OAUTH_ERRORS)
        if oauth is not None:
            message = f"{where}: OAuth authorization failed: {_text(oauth)}"
            return UpstreamError(self.provider_id, message, code="mcp_auth_error")
        return None

    def _plain_open_failure(self, exc: SessionOpenError, connection: McpConnection) -> ProviderError:
        where = self._where(connection)
        if exc.http_error is not None:
            return self._http_failure(*exc.http_error, where)[0]
        leaf = root_cause(exc.cause)
        if isinstance(leaf, TimeoutError | httpx2.TimeoutException):
            message = f"{where} did not complete the MCP handshake within {self.config.connect_timeout:g}s"
            return UpstreamTimeoutError(self.provider_id, message, code="mcp_timeout")
        if isinstance(leaf, httpx2.HTTPStatusError):
            return self._http_failure(leaf.response.status_code, "", where)[0]
        if isinstance(leaf, MCPError) and leaf.code != CONNECTION_CLOSED:
            return self._mcp_failure(leaf, where, None)[0]
        return ServiceUnavailableError(
            self.provider_id, f"{where} is unreachable: {_text(leaf)}", code="mcp_unavailable"
        )

    def _mcp_failure(self, exc: MCPError, where: str, entry: PooledSession | None) -> tuple[ProviderError, bool]:
        if entry is not None and entry.last_http_error is not None:
            status, body = entry.last_http_error
            entry.last_http_error = None
            if status == 404:  # the server forgot our session (it restarted): a new one will do
                return ServiceUnavailableError(
                    self.provider_id, f"{where} ended the MCP session", code="mcp_unavailable"
                ), True
            return self._http_failure(status, body, where)
        if exc.code == CONNECTION_CLOSED:
            return ServiceUnavailableError(
                self.provider_id, f"{where} closed the connection", code="mcp_unavailable"
            ), True
        if exc.code == INVALID_PARAMS:
            message = f"{where} rejected the arguments: {exc.message}"
            return UpstreamError(self.provider_id, message, code="invalid_arguments"), False
        message = f"{where} answered with an error: {exc.message}"
        stale = "session" in exc.message.lower() and "terminated" in exc.message.lower()
        return UpstreamError(self.provider_id, message, code="mcp_error"), stale

    def _classify(
        self, exc: Exception, connection: McpConnection, entry: PooledSession, doing: str, timeout: float
    ) -> tuple[ProviderError, bool]:
        """A failure on an open session: the error to report and whether a fresh session may fix it."""
        where = self._where(connection)
        leaf = root_cause(exc)
        if isinstance(leaf, TimeoutError) or (isinstance(leaf, MCPError) and leaf.code == REQUEST_TIMEOUT):
            message = f"{where} did not finish {doing} within {timeout:g}s"
            return UpstreamTimeoutError(self.provider_id, message, code="mcp_timeout"), False
        if isinstance(leaf, MCPError):
            return self._mcp_failure(leaf, where, entry)
        if isinstance(leaf, httpx2.TransportError | OSError | ConnectionError | RuntimeError):
            message = f"{where} is unreachable ({doing}): {_text(leaf)}"
            return ServiceUnavailableError(self.provider_id, message, code="mcp_unavailable"), True
        log.warning("unexpected failure from %s while %s", where, doing, exc_info=leaf)
        return UpstreamError(self.provider_id, f"{where} failed while {doing}: {_text(leaf)}", code="mcp_error"), True


async def _list_all_tools(session: Any) -> list[Any]:
    tools: list[Any] = []
    cursor: str | None = None
    for _ in range(_MAX_LIST_PAGES):
        params = PaginatedRequestParams(cursor=cursor) if cursor else None
        page = await session.list_tools(params=params)
        tools.extend(page.tools)
        cursor = page.next_cursor
        if not cursor:
            break
    return tools


def _relay(context: ToolCallContext) -> Any:
    """The caller's progress callback, fed bounded values (a server's message is cut to 1000 characters);
    None when nobody listens, so the server is not asked for progress."""
    progress = context.progress
    if progress is None:
        return None

    async def relay(value: float, total: float | None, message: str | None) -> None:
        await progress(value, total, message[:1000] if isinstance(message, str) else None)

    return relay


def _offers(session: Any, capability: str) -> bool:
    """Whether the server declared ``capability`` when the session opened (asking one that did not is
    a protocol error, not an empty list)."""
    result = getattr(session, "initialize_result", None)
    capabilities = getattr(result, "capabilities", None)
    return capabilities is None or getattr(capabilities, capability, None) is not None


async def _list_all(list_page: Callable[..., Awaitable[Any]], field_name: str) -> list[dict[str, Any]]:
    """Every page of a paginated MCP listing, up to ``_MAX_LIST_PAGES``, as MCP JSON."""
    items: list[dict[str, Any]] = []
    cursor: str | None = None
    for _ in range(_MAX_LIST_PAGES):
        page = await list_page(params=PaginatedRequestParams(cursor=cursor) if cursor else None)
        items.extend(_dump(item) for item in getattr(page, field_name))
        cursor = page.next_cursor
        if not cursor:
            break
    return items


def _dump(model: Any) -> dict[str, Any]:
    """An SDK model as the MCP JSON it came as (camelCase names, unset fields left out)."""
    dumped: dict[str, Any] = model.model_dump(mode="json", by_alias=True, exclude_none=True)
    return dumped


def _tool_metadata(tool: Any, connection: McpConnection) -> dict[str, Any]:
    metadata: dict[str, Any] = {"server": connection.name, "transport": connection.transport}
    if connection.uri:
        metadata["endpoint"] = connection.uri
    if tool.title:
        metadata["title"] = tool.title
    if tool.annotations is not None:
        metadata["annotations"] = tool.annotations.model_dump(mode="json", exclude_none=True, by_alias=True)
    return metadata


def _content_part(block: Any) -> ContentPart:
    if isinstance(block, TextContent):
        return TextContentPart(text=block.text)
    if isinstance(block, ImageContent | AudioContent):
        return MediaContentPart(type=block.type, data=block.data, mime_type=block.mime_type)
    if isinstance(block, EmbeddedResource):
        resource = block.resource
        if isinstance(resource, TextResourceContents):
            return ResourceContentPart(uri=str(resource.uri), mime_type=resource.mime_type, text=resource.text)
        return ResourceContentPart(uri=str(resource.uri), mime_type=resource.mime_type, blob=resource.blob)
    if isinstance(block, ResourceLink):
        return ResourceContentPart(uri=str(block.uri), mime_type=block.mime_type)
    return TextContentPart(text=str(block))


def _text(exc: BaseException) -> str:
    message = str(exc).strip()
    return message or type(exc).__name__
