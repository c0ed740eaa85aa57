"""Prompts and their versions in the SQL store, owned by the principal who created them.

Two tables: ``prompts`` holds one row per prompt (its latest and default version numbers, metadata,
owner) and ``prompt_versions`` one row per version (template and variables), which is never rewritten.
Setting the default is one update of the prompt row, so it is atomic without a transaction; a new
version is an insert whose key (prompt id and number) makes two concurrent editors collide with a 409
instead of one silently overwriting the other. Version rows carry their prompt's owner, so one policy
predicate (resource type ``prompt``, compiled into every query) governs a prompt and all its versions.
"""

from __future__ import annotations

import secrets
import time
from typing import Any, Literal

from underlay.api.errors import ConflictError, InvalidRequestError, NotFoundError
from underlay.api.prompts import Prompt
from underlay.core.access import explain_miss, fetch_for, owner_of, require_create, rows_where
from underlay.core.identity import current_principal
from underlay.core.storage.sqlstore import OWNER_COLUMNS, ColumnDefinition, ColumnType, Page, SqlStore, Where

PROMPTS = "prompts"
VERSIONS = "prompt_versions"
RESOURCE = "prompt"


def new_prompt_id() -> str:
    return f"pmpt_{secrets.token_hex(24)}"


def _version_key(prompt_id: str, version: int) -> str:
    return f"{prompt_id}@{version}"


def _missing(prompt_id: str, param: str = "prompt_id") -> NotFoundError:
    return NotFoundError("Prompt", prompt_id, param=param)


class PromptStore:
    def __init__(self, sql: SqlStore) -> None:
        self.sql = sql

    async def initialize(self) -> None:
        await self.sql.create_table(
            PROMPTS,
            {
                "id": ColumnDefinition(type=ColumnType.STRING, primary_key=True, nullable=False),
                "created_at": ColumnType.TIMESTAMP,
                # Lists page by this: prompts made in the same second still list in the order they were made.
                "created_ns": ColumnDefinition(type=ColumnType.INTEGER, index=True),
                "latest_version": ColumnType.INTEGER,
                "default_version": ColumnType.INTEGER,
                "metadata": ColumnType.JSON,
                **OWNER_COLUMNS,
            },
        )
        await self.sql.create_table(
            VERSIONS,
            {
                "key": ColumnDefinition(type=ColumnType.STRING, primary_key=True, nullable=False),
                "prompt_id": ColumnDefinition(type=ColumnType.STRING, index=True),
                "version": ColumnType.INTEGER,
                "template": ColumnType.TEXT,
                "variables": ColumnType.JSON,
                "created_at": ColumnType.TIMESTAMP,
                **OWNER_COLUMNS,
            },
        )

    # ---- reading ----------------------------------------------------------------------------------

    async def _head(self, prompt_id: str, action: str = "read", param: str = "prompt_id") -> dict[str, Any]:
        """The prompt row; 404 if the caller cannot see it, 403 if it may not ``action`` it."""
        match = [Where.eq("id", prompt_id)]
        return await fetch_for(self.sql, PROMPTS, RESOURCE, action, match, _missing(prompt_id, param), prompt_id)

    async def _version_row(self, prompt_id: str, version: int) -> dict[str, Any] | None:
        match = rows_where(RESOURCE, "read", Where.eq("key", _version_key(prompt_id, version)), id_column="prompt_id")
        return await self.sql.fetch_one(VERSIONS, match)

    @staticmethod
    def _prompt(head: dict[str, Any], row: dict[str, Any]) -> Prompt:
        return Prompt(
            id=head["id"],
            version=int(row["version"]),
            prompt=row["template"],
            variables=list(row["variables"] or []),
            is_default=int(row["version"]) == int(head["default_version"]),
            created_at=int(row["created_at"]),
            metadata=head["metadata"] or {},
        )

    async def get(
        self, prompt_id: str, version: int | None = None, *, param: str = "prompt_id", version_param: str = "version"
    ) -> Prompt:
        """One version (the default when ``version`` is ``None``)."""
        head = await self._head(prompt_id, param=param)
        wanted = int(head["default_version"]) if version is None else version
        row = await self._version_row(prompt_id, wanted)
        if row is None:
            raise NotFoundError(
                "Prompt version",
                f"{prompt_id}@{wanted}",
                param=version_param,
                hint=f"Its versions are 1 to {head['latest_version']}.",
            )
        return self._prompt(head, row)

    async def page(self, *, after: str | None, limit: int, order: Literal["asc", "desc"]) -> tuple[list[Prompt], bool]:
        """A page of prompts, each at its default version."""
        heads: Page = await self.sql.fetch_page(
            PROMPTS, rows_where(RESOURCE, "read"), order_column="created_ns", order=order, limit=limit, after_id=after
        )
        if not heads.rows:
            return [], heads.has_more
        keys = [_version_key(h["id"], int(h["default_version"])) for h in heads.rows]
        rows = await self.sql.fetch_all(
            VERSIONS, rows_where(RESOURCE, "read", Where.in_("key", keys), id_column="prompt_id")
        )
        by_key = {r["key"]: r for r in rows}
        found = [(h, by_key.get(k)) for h, k in zip(heads.rows, keys, strict=True)]
        return [self._prompt(h, r) for h, r in found if r is not None], heads.has_more

    async def versions(
        self, prompt_id: str, *, after: int | None, limit: int, order: Literal["asc", "desc"]
    ) -> tuple[list[Prompt], bool]:
        head = await self._head(prompt_id)
        match = [Where.eq("prompt_id", prompt_id)]
        if after is not None:
            match.append(Where.lt("version", after) if order == "desc" else Where.gt("version", after))
        rows = await self.sql.fetch_all(
            VERSIONS,
            rows_where(RESOURCE, "read", *match, id_column="prompt_id"),
            order_by=[("version", order)],
            limit=limit + 1,
        )
        return [self._prompt(head, r) for r in rows[:limit]], len(rows) > limit

    # ---- writing ----------------------------------------------------------------------------------

    async def _insert_version(
        self, prompt_id: str, version: int, template: str, variables: list[str], owner: dict[str, Any], at: int
    ) -> None:
        try:
            await self.sql.insert(
                VERSIONS,
                {
                    "key": _version_key(prompt_id, version),
                    "prompt_id": prompt_id,
                    "version": version,
                    "template": template,
                    "variables": variables,
                    "created_at": at,
                    **owner,
                },
            )
        except ConflictError:
            raise ConflictError(
                f"Version {version} of prompt '{prompt_id}' was created by another request at the same time; "
                "list its versions and try again.",
                code="version_conflict",
            ) from None

    async def create(self, template: str, variables: list[str], metadata: dict[str, str] | None) -> Prompt:
        principal = current_principal()
        prompt_id = new_prompt_id()
        require_create(RESOURCE, prompt_id)
        owner = {"owner_principal": principal.id, "owner_attributes": principal.attributes}
        at_ns = time.time_ns()
        at = at_ns // 1_000_000_000
        # The version first: a listed prompt always has the version it points at.
        await self._insert_version(prompt_id, 1, template, variables, owner, at)
        head = {
            "id": prompt_id,
            "created_at": at,
            "created_ns": at_ns,
            "latest_version": 1,
            "default_version": 1,
            "metadata": metadata or {},
            **owner,
        }
        await self.sql.insert(PROMPTS, head)
        return await self.get(prompt_id)

    async def add_version(
        self,
        prompt_id: str,
        template: str,
        variables: list[str],
        metadata: dict[str, str] | None,
        set_as_default: bool,
    ) -> Prompt:
        head = await self._head(prompt_id, "update")
        version = int(head["latest_version"]) + 1
        await self._insert_version(prompt_id, version, template, variables, owner_of(head), int(time.time()))
        values: dict[str, Any] = {"latest_version": version}
        if set_as_default:
            values["default_version"] = version
        if metadata is not None:
            values["metadata"] = metadata
        match = rows_where(RESOURCE, "update", Where.eq("id", prompt_id), Where.lt("latest_version", version))
        await self.sql.update(PROMPTS, values, match)
        return await self.get(prompt_id, version)

    async def set_default(self, prompt_id: str, version: int) -> Prompt:
        head = await self._head(prompt_id, "update")
        if await self._version_row(prompt_id, version) is None:
            raise InvalidRequestError(
                f"Prompt '{prompt_id}' has no version {version}; its versions are 1 to {head['latest_version']}.",
                param="version",
            )
        changed = await self.sql.update(
            PROMPTS, {"default_version": version}, rows_where(RESOURCE, "update", Where.eq("id", prompt_id))
        )
        if not changed:  # deleted in between
            raise _missing(prompt_id)
        return await self.get(prompt_id, version)

    async def delete(self, prompt_id: str) -> None:
        deleted = await self.sql.delete(PROMPTS, rows_where(RESOURCE, "delete", Where.eq("id", prompt_id)))
        if not deleted:
            match = [Where.eq("id", prompt_id)]
            raise await explain_miss(self.sql, PROMPTS, RESOURCE, "delete", match, _missing(prompt_id), prompt_id)
        await self.sql.delete(
            VERSIONS, rows_where(RESOURCE, "delete", Where.eq("prompt_id", prompt_id), id_column="prompt_id")
        )
