"""The tool-groups routing table: tool group id → provider (and, for MCP groups, how to reach the server).

Three kinds of group, looked up in this order:

- **builtin**: each builtin provider's own groups (``builtin::file_search``...), from the provider;
- **config**: the run config's ``tool_groups:``. They are rebuilt from the config at every start and
  never written to the KV store, so their secrets (headers, tokens, stdio environment) stay in the
  config and in memory;
- **api**: registered with ``POST /v1/toolgroups``; persisted in the KV store (so every worker and
  replica sees them, and they survive restarts) with the principal that registered them as owner.
  A principal sees its own groups and the shared (builtin and config) ones.
"""

from __future__ import annotations

import logging
from typing import Any, Literal
from urllib.parse import urlsplit

from underlay.api.errors import ConflictError, ForbiddenError, NotFoundError
from underlay.api.ids import now
from underlay.api.tool_runtime import McpConnection, McpStdioCommand, ToolGroup
from underlay.core.access import Resource, can, require, require_create
from underlay.core.config import ConfigError

log = logging.getLogger("underlay.tool_groups")
_PREFIX = "toolgroups:"
_HINT = "GET /v1/toolgroups lists the tool groups available."


def default_transport(uri: str) -> Literal["streamable_http", "sse"]:
    """A URL whose path ends in ``/sse`` is a legacy HTTP+SSE server; anything else streamable HTTP."""
    return "sse" if urlsplit(uri).path.rstrip("/").endswith("/sse") else "streamable_http"


def connection_for(group: ToolGroup) -> McpConnection | None:
    """How to reach an API-registered group's server (it carries no secrets: callers add headers)."""
    if group.mcp_endpoint is None:
        return None
    uri = group.mcp_endpoint.uri
    transport = group.transport or default_transport(uri)
    return McpConnection(name=group.identifier, transport=transport, uri=uri)


class ToolGroupsRoutingTable:
    def __init__(self, kvstore: Any, providers: dict[str, Any]) -> None:
        self.kvstore = kvstore
        self.providers = providers
        self._fixed: dict[str, ToolGroup] = {}
        self._connections: dict[str, McpConnection] = {}

    async def initialize(self, configured: list[Any], source: str = "<memory>") -> None:
        """Collect the builtin groups, then the run config's (``ToolGroupRegistration`` entries)."""
        for provider_id, provider in self.providers.items():
            for group in provider.builtin_tool_groups():
                if group.identifier in self._fixed:
                    raise ConfigError(
                        f"{source}: providers.tool_runtime: providers '{self._fixed[group.identifier].provider_id}' "
                        f"and '{provider_id}' both serve tool group '{group.identifier}'; give one another "
                        "toolgroup_id in its config"
                    )
                self._fixed[group.identifier] = group.model_copy(update={"source": "builtin", "owner": None})
        for index, entry in enumerate(configured):
            key = f"{source}: tool_groups[{index}]"
            provider = self.providers.get(entry.provider_id)
            if entry.toolgroup_id in self._fixed:
                raise ConfigError(
                    f"{key}.toolgroup_id: '{entry.toolgroup_id}' is already a builtin tool group; choose another id"
                )
            if not getattr(provider, "serves_mcp", False):
                raise ConfigError(
                    f"{key}.provider_id: provider '{entry.provider_id}' serves builtin tools only; use a "
                    "remote::model-context-protocol provider for MCP servers"
                )
            if entry.mcp_endpoint is None and entry.stdio is None:
                raise ConfigError(f"{key}: an MCP tool group needs mcp_endpoint (a URL) or stdio (a command); add one")
            headers = dict(entry.headers)
            if entry.authorization:
                headers = merge_headers(headers, {"Authorization": bearer(entry.authorization)})
            if entry.stdio is not None:
                connection = McpConnection(
                    name=entry.toolgroup_id,
                    transport="stdio",
                    stdio=McpStdioCommand(**entry.stdio.model_dump()),
                    timeout=entry.timeout,
                )
            else:
                transport = entry.transport or default_transport(entry.mcp_endpoint)
                connection = McpConnection(
                    name=entry.toolgroup_id,
                    transport=transport,
                    uri=entry.mcp_endpoint,
                    headers=headers,
                    timeout=entry.timeout,
                )
            self._connections[entry.toolgroup_id] = connection
            self._fixed[entry.toolgroup_id] = ToolGroup(
                identifier=entry.toolgroup_id,
                provider_id=entry.provider_id,
                provider_resource_id=entry.toolgroup_id,
                mcp_endpoint={"uri": entry.mcp_endpoint} if entry.mcp_endpoint else None,  # type: ignore[arg-type]
                transport=connection.transport,
                args=entry.args or None,
                source="config",
                created_at=now(),
            )

    # -- queries ----------------------------------------------------------------------------------

    @staticmethod
    def _resource(group: ToolGroup) -> Resource:
        """Builtin and config groups have no owner; API-registered ones are owned by who registered them."""
        return Resource("tool_group", group.identifier, owner=group.owner)

    def _visible(self, group: ToolGroup) -> bool:
        return can("read", self._resource(group))

    async def _stored(self) -> list[ToolGroup]:
        values = await self.kvstore.values_in_range(_PREFIX, _PREFIX + "\xff")
        groups = [ToolGroup.model_validate_json(v) for v in values]
        return sorted(groups, key=lambda g: (g.created_at, g.identifier))

    async def list(self) -> list[ToolGroup]:
        """Every group the caller may use: builtin, then config, then registered (oldest first)."""
        fixed = [g for g in self._fixed.values() if g.provider_id in self.providers]
        stored = [g for g in await self._stored() if g.provider_id in self.providers and self._visible(g)]
        return [*fixed, *stored]

    async def find(self, identifier: str) -> ToolGroup | None:
        group = self._fixed.get(identifier)
        if group is None:
            value = await self.kvstore.get(_PREFIX + identifier)
            group = ToolGroup.model_validate_json(value) if value is not None else None
        if group is None or group.provider_id not in self.providers or not self._visible(group):
            return None
        return group

    async def get(self, identifier: str, *, param: str | None = "toolgroup_id", action: str = "read") -> ToolGroup:
        """The group if the caller may ``action`` it: 404 if hidden by the policy, 403 if only readable."""
        missing = NotFoundError("Tool group", identifier, hint=_HINT, param=param)
        group = await self.find(identifier)
        if group is None:
            raise missing
        require(action, self._resource(group), missing)
        return group

    def connection(self, group: ToolGroup) -> McpConnection | None:
        """The group's server connection (config groups carry their secrets; registered ones none)."""
        return self._connections.get(group.identifier) or connection_for(group)

    # -- mutations --------------------------------------------------------------------------------

    async def register(self, group: ToolGroup) -> ToolGroup:
        """Store an API-registered group; the same owner may re-register (update) it."""
        require_create("tool_group", group.identifier, owner=group.owner)
        if group.identifier in self._fixed:
            raise ConflictError(
                f"Tool group '{group.identifier}' is declared by the server ({self._fixed[group.identifier].source}); "
                "choose another toolgroup_id.",
                param="toolgroup_id",
            )
        existing = await self.kvstore.get(_PREFIX + group.identifier)
        if existing is not None:
            previous = ToolGroup.model_validate_json(existing)
            if previous.owner != group.owner:
                raise ConflictError(
                    f"Tool group '{group.identifier}' is already registered; choose another toolgroup_id.",
                    param="toolgroup_id",
                )
            group.created_at = previous.created_at
        if not group.created_at:
            group.created_at = now()
        await self.kvstore.set(_PREFIX + group.identifier, group.model_dump_json())
        return group

    async def unregister(self, identifier: str) -> ToolGroup:
        fixed = self._fixed.get(identifier)
        if fixed is not None:
            where = "the run config's tool_groups" if fixed.source == "config" else f"provider '{fixed.provider_id}'"
            raise ForbiddenError(
                f"Tool group '{identifier}' comes from {where} and cannot be deleted through the API.",
                param="toolgroup_id",
            )
        group = await self.get(identifier, param=None, action="delete")
        await self.kvstore.delete(_PREFIX + identifier)
        return group


def bearer(token: str) -> str:
    """``Bearer <token>``, unless the value already names its scheme (``Basic ...``, ``Bearer ...``)."""
    token = token.strip()
    return token if " " in token else f"Bearer {token}"


def merge_headers(base: dict[str, str], override: dict[str, str] | None) -> dict[str, str]:
    """``base`` with ``override`` on top; header names compare case-insensitively."""
    if not override:
        return dict(base)
    names = {k.lower() for k in override}
    merged = {k: v for k, v in base.items() if k.lower() not in names}
    merged.update(override)
    return merged
