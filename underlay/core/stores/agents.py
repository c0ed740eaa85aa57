"""Deployed agents and their versions in the SQL store, owned by the principal who deployed them.

Two tables, like prompts: ``agents`` holds one row per agent (name, latest and default version numbers,
owner) and ``agent_versions`` one immutable row per deployed definition. A rollback is one update of the
head row's default, so it is atomic without a transaction.

Why names are scoped to their owner: a caller says ``agent/<name>``, and two tenants must be able to
pick the same name without learning of each other. The head row's key is ``name:owner``, so a name is
unique per owner and two concurrent first deploys of one name collide with a 409 instead of making two
agents. A lookup by name takes the caller's own agent first and otherwise one the policy lets it read
(a team-read rule); the policy (resource type ``agent``, matched on the agent's name) is compiled into
every query, and version rows carry their agent's owner so the same predicate governs them.
"""

from __future__ import annotations

import secrets
import time
from typing import Any, Literal

from underlay.api.agents import AgentDefinition, AgentObject
from underlay.api.errors import ConflictError, InvalidRequestError, NotFoundError
from underlay.core.access import explain_miss, owner_of, require_create, rows_where
from underlay.core.identity import current_principal
from underlay.core.storage.sqlstore import OWNER_COLUMNS, ColumnDefinition, ColumnType, Page, SqlStore, Where

AGENTS = "agents"
VERSIONS = "agent_versions"
RESOURCE = "agent"
_BY = "name"
"""The column access rules' ``ids`` globs match: an agent's name (``support-*``)."""


def _head_key(name: str, owner: str | None) -> str:
    return f"{name}:{owner or ''}"


def _version_key(agent_id: str, version: int) -> str:
    return f"{agent_id}@{version}"


def _missing(name: str, param: str = "agent_name") -> NotFoundError:
    return NotFoundError("Agent", name, param=param, hint="List yours with GET /v1/agents.")


class AgentStore:
    def __init__(self, sql: SqlStore) -> None:
        self.sql = sql

    async def initialize(self) -> None:
        await self.sql.create_table(
            AGENTS,
            {
                "key": ColumnDefinition(type=ColumnType.STRING, primary_key=True, nullable=False),
                "id": ColumnDefinition(type=ColumnType.STRING, index=True),
                "name": ColumnDefinition(type=ColumnType.STRING, index=True),
                "created_at": ColumnType.TIMESTAMP,
                "created_ns": ColumnDefinition(type=ColumnType.INTEGER, index=True),
                "latest_version": ColumnType.INTEGER,
                "default_version": ColumnType.INTEGER,
                **OWNER_COLUMNS,
            },
        )
        await self.sql.create_table(
            VERSIONS,
            {
                "key": ColumnDefinition(type=ColumnType.STRING, primary_key=True, nullable=False),
                "agent_id": ColumnDefinition(type=ColumnType.STRING, index=True),
                "name": ColumnType.STRING,
                "version": ColumnType.INTEGER,
                "definition": ColumnType.JSON,
                "created_at": ColumnType.TIMESTAMP,
                **OWNER_COLUMNS,
            },
        )

    # ---- reading ----------------------------------------------------------------------------------

    async def _head(self, name: str, action: str = "read", param: str = "agent_name") -> dict[str, Any]:
        """The caller's own agent called ``name``, else one it may read; 404 if none, 403 if it may not
        ``action`` the one it sees."""
        own = current_principal().id
        rows = await self.sql.fetch_all(
            AGENTS, rows_where(RESOURCE, "read", Where.eq("name", name), id_column=_BY), limit=64
        )
        if not rows:
            raise _missing(name, param)
        rows.sort(key=lambda r: (r.get("owner_principal") != own, int(r["created_ns"])))
        head = dict(rows[0])
        if action != "read":
            allowed = await self.sql.fetch_one(
                AGENTS, rows_where(RESOURCE, action, Where.eq("key", head["key"]), id_column=_BY)
            )
            if allowed is None:
                raise await explain_miss(
                    self.sql, AGENTS, RESOURCE, action, [Where.eq("key", head["key"])], _missing(name, param), name, _BY
                )
        return head

    async def _version_row(self, head: dict[str, Any], version: int) -> dict[str, Any] | None:
        match = rows_where(RESOURCE, "read", Where.eq("key", _version_key(head["id"], version)), id_column=_BY)
        return await self.sql.fetch_one(VERSIONS, match)

    @staticmethod
    def _agent(head: dict[str, Any], row: dict[str, Any]) -> AgentObject:
        return AgentObject(
            id=head["id"],
            name=head["name"],
            version=int(row["version"]),
            is_default=int(row["version"]) == int(head["default_version"]),
            default_version=int(head["default_version"]),
            latest_version=int(head["latest_version"]),
            created_at=int(row["created_at"]),
            definition=AgentDefinition.model_validate(row["definition"]),
        )

    async def _at(self, head: dict[str, Any], version: int | None, version_param: str) -> AgentObject:
        wanted = int(head["default_version"]) if version is None else version
        row = await self._version_row(head, wanted)
        if row is None:
            raise NotFoundError(
                "Agent version",
                f"{head['name']}@{wanted}",
                param=version_param,
                hint=f"Its versions are 1 to {head['latest_version']}.",
            )
        return self._agent(head, row)

    async def get(
        self, name: str, version: int | None = None, *, param: str = "agent_name", version_param: str = "version"
    ) -> AgentObject:
        """One version (the default when ``version`` is ``None``)."""
        return await self._at(await self._head(name, param=param), version, version_param)

    async def page(
        self, *, after: str | None, limit: int, order: Literal["asc", "desc"]
    ) -> tuple[list[AgentObject], bool]:
        """A page of agents, each at its default version. ``after`` is an agent id."""
        heads: Page = await self.sql.fetch_page(
            AGENTS,
            rows_where(RESOURCE, "read", id_column=_BY),
            order_column="created_ns",
            order=order,
            limit=limit,
            after_id=after,
        )
        if not heads.rows:
            return [], heads.has_more
        keys = [_version_key(h["id"], int(h["default_version"])) for h in heads.rows]
        rows = await self.sql.fetch_all(VERSIONS, rows_where(RESOURCE, "read", Where.in_("key", keys), id_column=_BY))
        by_key = {r["key"]: r for r in rows}
        found = [(h, by_key.get(k)) for h, k in zip(heads.rows, keys, strict=True)]
        return [self._agent(h, r) for h, r in found if r is not None], heads.has_more

    async def versions(
        self, name: str, *, after: int | None, limit: int, order: Literal["asc", "desc"]
    ) -> tuple[list[AgentObject], bool]:
        head = await self._head(name)
        match = [Where.eq("agent_id", head["id"])]
        if after is not None:
            match.append(Where.lt("version", after) if order == "desc" else Where.gt("version", after))
        rows = await self.sql.fetch_all(
            VERSIONS,
            rows_where(RESOURCE, "read", *match, id_column=_BY),
            order_by=[("version", order)],
            limit=limit + 1,
        )
        return [self._agent(head, r) for r in rows[:limit]], len(rows) > limit

    # ---- writing ----------------------------------------------------------------------------------

    async def _insert_version(self, head: dict[str, Any], version: int, definition: AgentDefinition, at: int) -> None:
        try:
            await self.sql.insert(
                VERSIONS,
                {
                    "key": _version_key(head["id"], version),
                    "agent_id": head["id"],
                    "name": head["name"],
                    "version": version,
                    "definition": definition.model_dump(mode="json", exclude_none=True),
                    "created_at": at,
                    **owner_of(head),
                },
            )
        except ConflictError:
            raise _raced(head["name"]) from None

    async def deploy(self, definition: AgentDefinition, set_as_default: bool) -> AgentObject:
        """Version 1 of the caller's agent ``definition.name``, or its next version."""
        principal = current_principal()
        key = _head_key(definition.name, principal.id)
        at_ns = time.time_ns()
        at = at_ns // 1_000_000_000
        head = await self.sql.fetch_one(AGENTS, [Where.eq("key", key)])
        if head is None:
            require_create(RESOURCE, definition.name)
            head = {
                "key": key,
                "id": f"agent_{secrets.token_hex(16)}",
                "name": definition.name,
                "created_at": at,
                "created_ns": at_ns,
                "latest_version": 1,
                "default_version": 1,
                "owner_principal": principal.id,
                "owner_attributes": principal.attributes,
            }
            try:
                await self.sql.insert(AGENTS, head)
            except ConflictError:
                raise _raced(definition.name) from None
            await self._insert_version(head, 1, definition, at)
            return await self._at(head, 1, "version")
        head = await self._head_by_key(key, definition.name, "update")
        version = int(head["latest_version"]) + 1
        await self._insert_version(head, version, definition, at)
        values: dict[str, Any] = {"latest_version": version}
        if set_as_default:
            values["default_version"] = version
        match = rows_where(RESOURCE, "update", Where.eq("key", key), Where.lt("latest_version", version), id_column=_BY)
        await self.sql.update(AGENTS, values, match)
        head.update(values)
        return await self._at(head, version, "version")

    async def _head_by_key(self, key: str, name: str, action: str) -> dict[str, Any]:
        row = await self.sql.fetch_one(AGENTS, rows_where(RESOURCE, action, Where.eq("key", key), id_column=_BY))
        if row is None:
            raise await explain_miss(
                self.sql, AGENTS, RESOURCE, action, [Where.eq("key", key)], _missing(name), name, _BY
            )
        return dict(row)

    async def set_default(self, name: str, version: int) -> AgentObject:
        head = await self._head(name, "update")
        if await self._version_row(head, version) is None:
            raise InvalidRequestError(
                f"Agent '{name}' has no version {version}; its versions are 1 to {head['latest_version']}.",
                param="version",
                code="agent_version_not_found",
            )
        changed = await self.sql.update(
            AGENTS,
            {"default_version": version},
            rows_where(RESOURCE, "update", Where.eq("key", head["key"]), id_column=_BY),
        )
        if not changed:  # deleted in between
            raise _missing(name)
        head["default_version"] = version
        return await self._at(head, version, "version")

    async def delete(self, name: str) -> str:
        """Delete the agent and its versions; its id."""
        head = await self._head(name, "delete")
        await self.sql.delete(AGENTS, rows_where(RESOURCE, "delete", Where.eq("key", head["key"]), id_column=_BY))
        await self.sql.delete(VERSIONS, rows_where(RESOURCE, "delete", Where.eq("agent_id", head["id"]), id_column=_BY))
        return str(head["id"])


def _raced(name: str) -> ConflictError:
    return ConflictError(
        f"Agent '{name}' was deployed by another request at the same time; list its versions and deploy again.",
        code="version_conflict",
    )
