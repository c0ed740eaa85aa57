"""The tool-runtime router: tool groups, tool lookup and tool calls, for HTTP and for other APIs.

Internal API (what the Responses API, the ``/mcp`` server and any other in-process caller use; the
``handle_*`` methods are the HTTP routes and wrap these)::

    router = stack.routers["tool_runtime"]

    # Tool groups
    await router.list_tool_groups() -> list[ToolGroup]
    await router.get_tool_group(toolgroup_id) -> ToolGroup                      # 404 NotFoundError
    await router.register_tool_group(toolgroup_id, mcp_endpoint="http://...", provider_id=None,
                                     transport=None, args=None) -> ToolGroup
    await router.unregister_tool_group(toolgroup_id) -> ToolGroup

    # Tools
    await router.list_tools(toolgroup_id=None, *, mcp_endpoint=None, transport=None,
                            headers=None, authorization=None) -> list[ToolDef]
    await router.get_tool(tool_name, *, toolgroup_id=None) -> ToolDef            # 404 NotFoundError

    # Calls
    await router.invoke_tool(tool_name, kwargs, *, toolgroup_id=None, mcp_endpoint=None, transport=None,
                             headers=None, authorization=None, timeout=None) -> ToolInvocationResult

    # Upstream resources and prompts (what /mcp hands on; MCP JSON, tagged _meta["underlay/toolgroup_id"])
    await router.list_upstream_resources() -> {"resources": [...], "resource_templates": [...]}
    await router.read_upstream_resource(uri) -> list[contents]                  # 404 NotFoundError
    await router.list_upstream_prompts() -> list[prompt]
    await router.get_upstream_prompt(name, arguments) -> GetPromptResult JSON    # 404 NotFoundError

Semantics callers rely on:

- ``list_tools(toolgroup_id=...)`` raises the provider's error when the group's server cannot be
  listed (503 unreachable, 502 broken or refusing, 504 slow; the message names the provider and
  the server). ``list_tools()`` with neither argument lists every group and skips (and logs) those
  that fail, so one dead server does not hide the others.
- ``mcp_endpoint`` talks to any MCP server by URL without registering it (what an OpenAI ``mcp``
  tool in a Responses request does); ``transport`` defaults to ``sse`` for URLs ending in ``/sse``.
- ``invoke_tool`` never raises because of the tool or its server: those failures come back as a
  result with ``error_message`` and ``error_code`` (see :class:`ToolInvocationResult`). It raises
  ``NotFoundError`` for an unknown tool or group and ``InvalidRequestError`` for a bad request (no MCP
  provider configured, a builtin group given an endpoint...). Without ``toolgroup_id`` the tool is
  found by name in the groups' last listings, in ``list_tool_groups`` order, listing again on a miss.
- ``headers`` override the group's configured headers (names compare case-insensitively);
  ``authorization`` is sent as ``Authorization: Bearer <token>`` and overrides both. The caller's
  ``X-Underlay-Provider-Data`` ``mcp_headers`` (keyed by toolgroup id or server URL) apply below
  explicit arguments.
- Deleting a group closes its pooled MCP sessions at once (the server sees the session end).
- Loops: every outgoing MCP request carries this process's random hop id in its
  ``X-Underlay-Provider-Data``; a listing or call arriving with our own id came from a tool group
  that points back at this server's ``/mcp`` and is refused (no recursion). Registering such a group
  is refused with 400 (a short probe lists the new group's tools first).
- ``progress`` receives the tool's progress notifications (MCP servers), as ``/mcp`` relays them.
- OAuth and elicitation: the caller's principal and ``elicitation_responses`` travel in the
  :class:`ToolCallContext`; ``GET /v1/tool-runtime/oauth/callback`` finishes a code flow.
- Upstream resources and prompts resolve like tools: a URI (listed, or matching a listed template) or
  a prompt name goes to the first group, in ``list_tool_groups`` order, whose last listing offers it,
  listing again on a miss. ``underlay:`` URIs are Underlay's own and never go upstream (an upstream
  server's resources under that scheme are left out). Listing skips (and logs) groups that fail.
- Results carry ``metadata["toolgroup_id"]`` (or ``metadata["server"]`` for endpoints), and
  builtins put structured output in ``metadata["results"]`` (file_search: ``file_id``, ``filename``,
  ``score``, ``text``, ``attributes``, ``vector_store_id``; web_search: ``title``, ``url``, ``snippet``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

from underlay.api.context import get_provider_data
from underlay.api.errors import ForbiddenError, InvalidRequestError, NotFoundError, ProviderError
from underlay.api.tool_runtime import (
    URL,
    ElicitationResponse,
    InvokeToolRequest,
    ListRuntimeToolsQuery,
    ListToolsQuery,
    McpConnection,
    OAuthCallbackQuery,
    OAuthCallbackResult,
    ProgressFn,
    RegisterToolGroupRequest,
    ToolCallContext,
    ToolDef,
    ToolGroup,
    ToolGroupDeleted,
    ToolGroupList,
    ToolInvocationResult,
    ToolList,
    ToolRuntimeApi,
)
from underlay.core.identity import current_principal
from underlay.core.routing.tool_groups import (
    ToolGroupsRoutingTable,
    bearer,
    connection_for,
    default_transport,
    merge_headers,
)

log = logging.getLogger("underlay.tool_runtime")
PROVIDER_DATA_HEADERS_KEY = "mcp_headers"
PROVIDER_DATA_HEADER = "X-Underlay-Provider-Data"
HOP_KEY = "underlay_mcp_hop"
HOP_ID = secrets.token_hex(12)
"""This process's hop id: sent on every outgoing MCP request, refused when it comes back."""
MAX_HOPS = 8
"""Hop ids carried along (the ids of the Underlay servers a request already passed through)."""
LOOP_MARK = "mcp_loop_detected"
LOOP_MESSAGE = (
    f"[{LOOP_MARK}] This request came from this Underlay server's own MCP client: a tool group points back "
    "at this server's /mcp endpoint, which would make it list and call its own tools in a loop. Remove that "
    "tool group."
)
PROBE_SECONDS = 3.0
OWN_URI_SCHEME = "underlay:"
"""Underlay's own ``/mcp`` resources (files, vector-store search): never routed to an upstream server."""
GROUP_META = "underlay/toolgroup_id"
MAX_TEMPLATE_CHARS = 1024
"""Longer upstream URI templates are not matched (each read tries every listed template)."""


class ToolRuntimeRouter(ToolRuntimeApi):
    def __init__(self, table: ToolGroupsRoutingTable, providers: dict[str, Any]) -> None:
        self.table = table
        self.providers = providers
        self._tools: dict[str, list[ToolDef]] = {}
        """Each group's tools as last listed: where a tool name is looked up without a group."""
        self._resources: dict[str, tuple[set[str], list[re.Pattern[str]]]] = {}
        """Each group's resource URIs and template patterns as last listed: where a read is routed."""
        self._prompts: dict[str, set[str]] = {}
        """Each group's prompt names as last listed: where a prompt is fetched."""
        self._failing: dict[str, str] = {}
        """Groups whose last listing failed, and why: a server that stays down is logged once, not per call."""
        for provider in providers.values():
            use_kvstore = getattr(provider, "use_kvstore", None)
            if use_kvstore is not None:  # MCP OAuth keeps its encrypted tokens next to the tool groups
                use_kvstore(table.kvstore)

    async def shutdown(self) -> None:
        self._tools.clear()
        self._resources.clear()
        self._prompts.clear()

    # -- tool groups ------------------------------------------------------------------------------

    async def list_tool_groups(self) -> list[ToolGroup]:
        return await self.table.list()

    async def get_tool_group(self, toolgroup_id: str) -> ToolGroup:
        return await self.table.get(toolgroup_id)

    async def register_tool_group(
        self,
        toolgroup_id: str,
        *,
        mcp_endpoint: str | None = None,
        provider_id: str | None = None,
        transport: str | None = None,
        args: dict[str, Any] | None = None,
    ) -> ToolGroup:
        """Register an MCP server as a tool group owned by the caller. The server is not contacted now,
        so a server may be registered before it starts; its first listing reports any problem."""
        provider_id = provider_id or self._mcp_provider_id()
        provider = self.providers.get(provider_id)
        if provider is None:
            raise InvalidRequestError(
                f"No tool_runtime provider '{provider_id}' is configured; use one of: "
                f"{', '.join(sorted(self.providers)) or 'none'}.",
                param="provider_id",
            )
        if not getattr(provider, "serves_mcp", False):
            raise InvalidRequestError(
                f"Provider '{provider_id}' serves builtin tools only; register MCP servers with a "
                "remote::model-context-protocol provider.",
                param="provider_id",
            )
        if not mcp_endpoint:
            raise InvalidRequestError("An MCP tool group needs mcp_endpoint {uri: ...}.", param="mcp_endpoint")
        _check_url(mcp_endpoint, "mcp_endpoint.uri")
        group = ToolGroup(
            identifier=toolgroup_id,
            provider_id=provider_id,
            provider_resource_id=toolgroup_id,
            mcp_endpoint=URL(uri=mcp_endpoint),
            transport=transport or default_transport(mcp_endpoint),  # type: ignore[arg-type]
            args=args,
            source="api",
            owner=current_principal().id,
        )
        await self._refuse_self_reference(provider, group)
        group = await self.table.register(group)
        self._tools.pop(toolgroup_id, None)
        return group

    async def _refuse_self_reference(self, provider: Any, group: ToolGroup) -> None:
        """400 if the group's URL is this server's own ``/mcp`` (the probe comes back marked with our hop
        id). Any other outcome (a server not up yet, a refusal, a slow one) registers as before."""
        base = connection_for(group)
        if base is None:
            return
        context = ToolCallContext(
            toolgroup=group,
            connection=self._with_headers(base, group.identifier, None, None),
            principal=current_principal().id,
        )
        try:
            await asyncio.wait_for(provider.list_runtime_tools(context), PROBE_SECONDS)
        except Exception as exc:
            if LOOP_MARK in _message(exc):
                raise InvalidRequestError(
                    f"Tool group '{group.identifier}' ({base.uri}) is this Underlay server's own /mcp endpoint: "
                    "its tools would be listed and called through itself in a loop. Register a different MCP server.",
                    param="mcp_endpoint",
                    code="mcp_loop",
                ) from None

    async def unregister_tool_group(self, toolgroup_id: str) -> ToolGroup:
        group = await self.table.unregister(toolgroup_id)
        self._tools.pop(toolgroup_id, None)
        self._resources.pop(toolgroup_id, None)
        self._prompts.pop(toolgroup_id, None)
        self._failing.pop(toolgroup_id, None)
        close_server = getattr(self.providers.get(group.provider_id), "close_server", None)
        if close_server is not None:  # its sessions would otherwise stay open (and reconnect) until idle
            closed = await close_server(group.identifier)
            log.info("tool group %s deleted; closed %d MCP session(s)", toolgroup_id, closed)
        return group

    @staticmethod
    def _refuse_loop() -> None:
        """A listing or call that came from this very process's MCP client is a loop: stop it here."""
        hops = _incoming_hops()
        if HOP_ID in hops:
            raise InvalidRequestError(LOOP_MESSAGE, code="mcp_loop")
        if len(hops) >= MAX_HOPS:
            raise InvalidRequestError(
                f"[{LOOP_MARK}] This request already passed through {len(hops)} Underlay servers' MCP clients; "
                "tool groups chained this deep are refused.",
                code="mcp_loop",
            )

    # -- tools ------------------------------------------------------------------------------------

    async def list_tools(
        self,
        toolgroup_id: str | None = None,
        *,
        mcp_endpoint: str | None = None,
        transport: str | None = None,
        headers: dict[str, str] | None = None,
        authorization: str | None = None,
    ) -> list[ToolDef]:
        self._refuse_loop()
        if mcp_endpoint is not None:
            provider, connection = self._endpoint(mcp_endpoint, transport, headers, authorization)
            context = ToolCallContext(connection=connection, principal=current_principal().id)
            return list(await provider.list_runtime_tools(context))
        if toolgroup_id is not None:
            group = await self.table.get(toolgroup_id)
            return await self._list_group(group, headers, authorization)
        groups = await self.table.list()
        listed = await asyncio.gather(
            *(self._list_group(g, headers, authorization) for g in groups), return_exceptions=True
        )
        tools: list[ToolDef] = []
        for group, result in zip(groups, listed, strict=True):
            if isinstance(result, BaseException):
                if not isinstance(result, Exception):
                    raise result
                reason = _message(result)
                if self._failing.get(group.identifier) != reason:
                    log.warning("listing tool group %s failed: %s", group.identifier, reason)
                self._failing[group.identifier] = reason
                continue
            if self._failing.pop(group.identifier, None) is not None:
                log.info("tool group %s lists its tools again", group.identifier)
            tools.extend(result)
        return tools

    async def get_tool(self, tool_name: str, *, toolgroup_id: str | None = None) -> ToolDef:
        if toolgroup_id is not None:
            for tool in await self.list_tools(toolgroup_id):
                if tool.name == tool_name:
                    return tool
            raise NotFoundError("Tool", tool_name, hint=f"Tool group '{toolgroup_id}' has no such tool.")
        group = await self._resolve(tool_name)
        for tool in self._tools.get(group.identifier, []):
            if tool.name == tool_name:
                return tool
        raise NotFoundError("Tool", tool_name, hint="GET /v1/tools lists the tools available.")

    async def _list_group(
        self, group: ToolGroup, headers: dict[str, str] | None, authorization: str | None
    ) -> list[ToolDef]:
        provider = self.providers[group.provider_id]
        context = ToolCallContext(
            toolgroup=group,
            connection=self._connection(group, headers, authorization),
            principal=current_principal().id,
        )
        tools = [
            t.model_copy(update={"toolgroup_id": group.identifier}) for t in await provider.list_runtime_tools(context)
        ]
        self._tools[group.identifier] = tools
        return tools

    async def _resolve(self, tool_name: str) -> ToolGroup:
        """The first group (in listing order) whose last listing offers ``tool_name``; list again on a miss."""
        for attempt in range(2):
            groups = await self.table.list()
            for group in groups:
                if any(t.name == tool_name for t in self._tools.get(group.identifier, ())):
                    return group
            if attempt == 0:
                await self.list_tools()
        raise NotFoundError(
            "Tool",
            tool_name,
            hint="GET /v1/tools lists the tools available (tool groups whose servers are down are left out).",
            param="tool_name",
        )

    # -- calls ------------------------------------------------------------------------------------

    async def invoke_tool(
        self,
        tool_name: str,
        kwargs: dict[str, Any] | None = None,
        *,
        toolgroup_id: str | None = None,
        mcp_endpoint: str | None = None,
        transport: str | None = None,
        headers: dict[str, str] | None = None,
        authorization: str | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 - the tool call's own limit, enforced by the provider
        elicitation_responses: list[ElicitationResponse] | None = None,
        progress: ProgressFn | None = None,
    ) -> ToolInvocationResult:
        self._refuse_loop()
        principal = current_principal().id
        answers = list(elicitation_responses or [])
        connection: McpConnection | None
        if mcp_endpoint is not None:
            provider, connection = self._endpoint(mcp_endpoint, transport, headers, authorization)
            context = ToolCallContext(
                connection=connection,
                timeout=timeout,
                principal=principal,
                elicitation_responses=answers,
                progress=progress,
            )
            where = {"server": connection.name}
        else:
            group = await (self.table.get(toolgroup_id) if toolgroup_id else self._resolve(tool_name))
            provider = self.providers[group.provider_id]
            connection = self._connection(group, headers, authorization)
            context = ToolCallContext(
                toolgroup=group,
                connection=connection,
                timeout=timeout,
                principal=principal,
                elicitation_responses=answers,
                progress=progress,
            )
            where = {"toolgroup_id": group.identifier}
        started = time.monotonic()
        try:
            result: ToolInvocationResult = await provider.invoke_tool(tool_name, dict(kwargs or {}), context)
        except ProviderError as exc:
            result = ToolInvocationResult(error_message=exc.message, error_code=exc.code or "tool_error")
        except (InvalidRequestError, NotFoundError, ForbiddenError):
            raise
        except Exception as exc:  # a provider bug must not take the caller (a whole response) down
            log.exception("tool %s failed unexpectedly", tool_name)
            result = ToolInvocationResult(
                error_message=f"Tool '{tool_name}' failed unexpectedly: {_message(exc)}", error_code="internal_error"
            )
        result.metadata = {**where, **result.metadata}
        log.info(
            "tool call %s %s in %.0f ms%s",
            tool_name,
            where,
            (time.monotonic() - started) * 1000,
            f" error={result.error_code}" if result.is_error else "",
        )
        return result

    # -- upstream resources and prompts (for /mcp) -----------------------------------------------

    async def _each_group(self, method: str, what: str) -> list[tuple[ToolGroup, Any, Any]]:
        """``provider.<method>(context)`` for every visible group whose provider has it (MCP groups), in
        listing order; (group, provider, result) for those that answered, the others logged and left out."""
        self._refuse_loop()
        principal = current_principal().id
        groups = [g for g in await self.table.list() if hasattr(self.providers.get(g.provider_id), method)]
        contexts = [
            ToolCallContext(toolgroup=g, connection=self._connection(g, None, None), principal=principal)
            for g in groups
        ]
        providers = [self.providers[g.provider_id] for g in groups]
        answers = await asyncio.gather(
            *(getattr(p, method)(c) for p, c in zip(providers, contexts, strict=True)), return_exceptions=True
        )
        answered: list[tuple[ToolGroup, Any, Any]] = []
        for group, provider, answer in zip(groups, providers, answers, strict=True):
            if isinstance(answer, BaseException):
                if not isinstance(answer, Exception):
                    raise answer
                log.warning("listing the %s of tool group %s failed: %s", what, group.identifier, _message(answer))
                continue
            answered.append((group, provider, answer))
        return answered

    async def list_upstream_resources(self) -> dict[str, list[dict[str, Any]]]:
        """The resources and templates of every visible MCP tool group (MCP JSON, each tagged with its
        group in ``_meta``), first group first; ``underlay:`` ones are left out (that scheme is ours)."""
        resources: list[dict[str, Any]] = []
        templates: list[dict[str, Any]] = []
        for group, _, listing in await self._each_group("list_runtime_resources", "resources"):
            uris: set[str] = set()
            patterns: list[re.Pattern[str]] = []
            for item in listing.get("resources", []):
                uri = item.get("uri")
                if isinstance(uri, str) and not uri.startswith(OWN_URI_SCHEME):
                    uris.add(uri)
                    resources.append(_tagged(item, group.identifier))
            for item in listing.get("resource_templates", []):
                template = item.get("uriTemplate")
                if isinstance(template, str) and not template.startswith(OWN_URI_SCHEME):
                    pattern = template_pattern(template)
                    if pattern is not None:
                        patterns.append(pattern)
                    templates.append(_tagged(item, group.identifier))
            self._resources[group.identifier] = (uris, patterns)
        return {"resources": resources, "resource_templates": templates}

    async def read_upstream_resource(self, uri: str) -> list[dict[str, Any]]:
        """The contents of an upstream resource (MCP JSON), read from the group that offers it."""
        self._refuse_loop()
        if uri.startswith(OWN_URI_SCHEME):
            raise NotFoundError("Resource", uri[:200], hint="underlay: URIs are this server's own resources.")

        def offers(group_id: str) -> bool:
            uris, patterns = self._resources.get(group_id, (set(), []))
            return uri in uris or any(p.fullmatch(uri) for p in patterns)

        group = await self._resolve_upstream(offers, self.list_upstream_resources, "Resource", uri)
        connection = self._connection(group, None, None)
        context = ToolCallContext(toolgroup=group, connection=connection, principal=current_principal().id)
        contents: list[dict[str, Any]] = await self.providers[group.provider_id].read_runtime_resource(uri, context)
        return contents

    async def list_upstream_prompts(self) -> list[dict[str, Any]]:
        """The prompts of every visible MCP tool group (MCP JSON, each tagged with its group in ``_meta``)."""
        prompts: list[dict[str, Any]] = []
        for group, _, listing in await self._each_group("list_runtime_prompts", "prompts"):
            names = {p["name"] for p in listing if isinstance(p.get("name"), str)}
            self._prompts[group.identifier] = names
            prompts.extend(_tagged(p, group.identifier) for p in listing if isinstance(p.get("name"), str))
        return prompts

    async def get_upstream_prompt(self, name: str, arguments: dict[str, str]) -> dict[str, Any]:
        """An upstream prompt filled in (MCP JSON ``GetPromptResult``), from the group that offers it."""
        self._refuse_loop()
        group = await self._resolve_upstream(
            lambda gid: name in self._prompts.get(gid, ()), self.list_upstream_prompts, "Prompt", name
        )
        connection = self._connection(group, None, None)
        context = ToolCallContext(toolgroup=group, connection=connection, principal=current_principal().id)
        result: dict[str, Any] = await self.providers[group.provider_id].get_runtime_prompt(name, arguments, context)
        return result

    async def _resolve_upstream(
        self, offers: Callable[[str], bool], relist: Callable[[], Awaitable[object]], kind: str, key: str
    ) -> ToolGroup:
        """The first visible group whose last listing offers ``key``; list again once on a miss."""
        for attempt in range(2):
            for group in await self.table.list():
                if offers(group.identifier):
                    return group
            if attempt == 0:
                await relist()
        raise NotFoundError(kind, key[:200], hint="No registered tool group offers it (or its server is down).")

    # -- connections ------------------------------------------------------------------------------

    def _mcp_provider_id(self) -> str:
        ids = [pid for pid, p in self.providers.items() if getattr(p, "serves_mcp", False)]
        if not ids:
            raise InvalidRequestError(
                "No MCP provider is configured; add a remote::model-context-protocol provider under "
                "providers.tool_runtime.",
                param="provider_id",
            )
        if len(ids) > 1:
            raise InvalidRequestError(
                f"Several MCP providers are configured ({', '.join(sorted(ids))}); pass provider_id.",
                param="provider_id",
            )
        return ids[0]

    def _endpoint(
        self, uri: str, transport: str | None, headers: dict[str, str] | None, authorization: str | None
    ) -> tuple[Any, McpConnection]:
        _check_url(uri, "mcp_endpoint")
        provider = self.providers[self._mcp_provider_id()]
        base = McpConnection(name=uri, transport=transport or default_transport(uri), uri=uri)  # type: ignore[arg-type]
        return provider, self._with_headers(base, None, headers, authorization)

    def _connection(
        self, group: ToolGroup, headers: dict[str, str] | None, authorization: str | None
    ) -> McpConnection | None:
        base = self.table.connection(group)
        return None if base is None else self._with_headers(base, group.identifier, headers, authorization)

    @staticmethod
    def _with_headers(
        base: McpConnection, toolgroup_id: str | None, headers: dict[str, str] | None, authorization: str | None
    ) -> McpConnection:
        """Config headers, then the caller's provider-data ``mcp_headers``, then explicit arguments."""
        merged = dict(base.headers)
        per_caller = get_provider_data().get(PROVIDER_DATA_HEADERS_KEY)
        if isinstance(per_caller, dict):
            for key in (base.uri, toolgroup_id):
                value = per_caller.get(key) if key else None
                if isinstance(value, dict):
                    merged = merge_headers(merged, {str(k): str(v) for k, v in value.items()})
        merged = merge_headers(merged, headers)
        if authorization:
            merged = merge_headers(merged, {"Authorization": bearer(authorization)})
        if base.transport != "stdio":
            merged = _with_hop(merged)
        if merged == base.headers:
            return base
        return base.model_copy(update={"headers": merged})

    # -- HTTP routes ------------------------------------------------------------------------------

    async def handle_list_tool_groups(self) -> ToolGroupList:
        return ToolGroupList(data=await self.list_tool_groups())

    async def handle_register_tool_group(self, params: RegisterToolGroupRequest) -> ToolGroup:
        return await self.register_tool_group(
            params.toolgroup_id,
            mcp_endpoint=params.mcp_endpoint.uri if params.mcp_endpoint else None,
            provider_id=params.provider_id,
            transport=params.transport,
            args=params.args,
        )

    async def handle_get_tool_group(self, toolgroup_id: str) -> ToolGroup:
        return await self.get_tool_group(toolgroup_id)

    async def handle_unregister_tool_group(self, toolgroup_id: str) -> ToolGroupDeleted:
        group = await self.unregister_tool_group(toolgroup_id)
        return ToolGroupDeleted(id=group.identifier)

    async def handle_list_tools(self, query: ListToolsQuery) -> ToolList:
        return ToolList(data=await self.list_tools(query.toolgroup_id))

    async def handle_get_tool(self, tool_name: str) -> ToolDef:
        return await self.get_tool(tool_name)

    async def handle_invoke_tool(self, params: InvokeToolRequest) -> ToolInvocationResult:
        return await self.invoke_tool(
            params.tool_name,
            params.kwargs,
            toolgroup_id=params.toolgroup_id,
            mcp_endpoint=params.mcp_endpoint.uri if params.mcp_endpoint else None,
            headers=params.headers,
            authorization=params.authorization,
            elicitation_responses=params.elicitation_responses,
        )

    async def handle_oauth_callback(self, query: OAuthCallbackQuery) -> OAuthCallbackResult:
        """Where an MCP server's authorization server sends the principal back after approval. The state
        (256 random bits, single use, bound to the principal who asked) is the credential, so this path
        is public."""
        if query.error:
            detail = f": {query.error_description}" if query.error_description else ""
            raise InvalidRequestError(
                f"The authorization server did not authorize Underlay ({query.error}{detail}); call the tool "
                "again for a new authorization link.",
                param="error",
            )
        if not query.code:
            raise InvalidRequestError("The callback carries no authorization code.", param="code")
        completers = [p for p in self.providers.values() if getattr(p, "complete_authorization", None)]
        if not completers:
            raise InvalidRequestError("No MCP provider is configured.", param="state")
        error: Exception | None = None
        for provider in completers:
            try:
                done = await provider.complete_authorization(query.state, query.code, query.iss)
            except InvalidRequestError as exc:  # another provider may have started it
                error = exc
                continue
            return OAuthCallbackResult(server=done["server"], principal=done["principal"])
        assert error is not None
        raise error

    async def handle_list_runtime_tools(self, query: ListRuntimeToolsQuery) -> ToolList:
        return ToolList(
            data=await self.list_tools(query.toolgroup_id, mcp_endpoint=query.mcp_endpoint, transport=query.transport)
        )


def _incoming_hops() -> list[str]:
    """The hop ids the current request arrived with: the Underlay servers it already passed through, so
    a cycle through other Underlay servers (A to B to A) is caught too, not only a direct self-reference."""
    hops = get_provider_data().get(HOP_KEY)
    if isinstance(hops, str):
        hops = [hops]
    if not isinstance(hops, list):
        return []
    # Caller-sent values are forwarded, so only short strings pass (ours are 24 hex digits).
    return [h for h in hops[:MAX_HOPS] if isinstance(h, str) and len(h) <= 64]


def _with_hop(headers: dict[str, str]) -> dict[str, str]:
    """Add the hop ids (the incoming ones, then this process's) to the provider-data header (kept JSON;
    a caller's values stay)."""
    data: dict[str, Any] = {}
    name = PROVIDER_DATA_HEADER
    for key, value in headers.items():
        if key.lower() == PROVIDER_DATA_HEADER.lower():
            name = key
            try:
                parsed = json.loads(value)
            except ValueError:
                return headers  # not ours to rewrite
            if not isinstance(parsed, dict):
                return headers
            data = parsed
    hops = [*_incoming_hops(), HOP_ID][-MAX_HOPS:]
    return {**headers, name: json.dumps({**data, HOP_KEY: hops}, separators=(",", ":"))}


def _tagged(item: dict[str, Any], toolgroup_id: str) -> dict[str, Any]:
    """An upstream item with its tool group added to its ``_meta`` (what ``/mcp`` shows the client)."""
    meta = item.get("_meta")
    return {**item, "_meta": {**(meta if isinstance(meta, dict) else {}), GROUP_META: toolgroup_id}}


_EXPRESSION = re.compile(r"\{([+#./;?&]?)([A-Za-z0-9_.,%*:]+)\}")


def template_pattern(template: str) -> re.Pattern[str] | None:
    """A regular expression matching the URIs an RFC 6570 template expands to (enough to route a read:
    simple and reserved expansion, path segments, and query/fragment forms); None if the template is too
    long to try on every read."""
    if len(template) > MAX_TEMPLATE_CHARS:
        return None
    parts: list[str] = []
    position = 0
    for match in _EXPRESSION.finditer(template):
        parts.append(re.escape(template[position : match.start()]))
        operator = match.group(1)
        if operator == "":
            parts.append(r"[^/?#&]+")
        elif operator == "+":
            parts.append(r"[^?#]+")
        elif operator in ("?", "&"):
            parts.append(r"(?:[?&][^#]*)?")
        elif operator == "#":
            parts.append(r"(?:#.*)?")
        else:  # "/", ".", ";": one or more prefixed segments
            parts.append(rf"(?:{re.escape(operator)}[^/?#.;]*)*")
        position = match.end()
    parts.append(re.escape(template[position:]))
    return re.compile("".join(parts))


def _check_url(uri: str, param: str) -> None:
    parts = urlsplit(uri)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise InvalidRequestError(f"'{uri}' is not an http(s) URL of an MCP server.", param=param)


def _message(exc: BaseException) -> str:
    return exc.message if isinstance(exc, ProviderError) else (str(exc) or type(exc).__name__)
