"""User-registered scoring functions in the SQL store, owned by the principal who registered them.

Why ids are scoped to their owner (like agent names): a caller scores with ``my-judge``, and two tenants
must be able to pick the same id without learning of each other. A row's key is ``id:owner``, so an id
is unique per owner and two concurrent registrations of one id by one owner collide with a 409. A lookup
by id takes the caller's own function first, otherwise one the access policy lets it read (a team-read
rule); the policy (resource type ``scoring_function``, matched on the function's id) is compiled into
every query.
"""

from __future__ import annotations

import time

from underlay.api.errors import ConflictError, NotFoundError
from underlay.api.scoring import ScoringFunction
from underlay.core.access import explain_miss, require_create, rows_where
from underlay.core.identity import current_principal
from underlay.core.storage.sqlstore import OWNER_COLUMNS, ColumnDefinition, ColumnType, SqlStore, Where

TABLE = "scoring_functions"
RESOURCE = "scoring_function"
_BY = "fn_id"
"""The column access rules' ``ids`` globs match: the function's id (``team-a-*``)."""
MAX_LISTED = 1_000
"""Functions one list returns; registering is a deliberate act, so this is far above real use."""


def _key(fn_id: str, owner: str | None) -> str:
    return f"{fn_id}:{owner or ''}"


def missing(fn_id: str, param: str = "scoring_fn_id") -> NotFoundError:
    return NotFoundError("Scoring function", fn_id, param=param, hint="List them with GET /v1/scoring-functions.")


class ScoringFunctionStore:
    def __init__(self, sql: SqlStore) -> None:
        self.sql = sql

    async def initialize(self) -> None:
        await self.sql.create_table(
            TABLE,
            {
                "key": ColumnDefinition(type=ColumnType.STRING, primary_key=True, nullable=False),
                "fn_id": ColumnDefinition(type=ColumnType.STRING, index=True),
                "created_ns": ColumnDefinition(type=ColumnType.INTEGER, index=True),
                "function": ColumnType.JSON,
                **OWNER_COLUMNS,
            },
        )

    async def get(self, fn_id: str, *, param: str = "scoring_fn_id") -> ScoringFunction:
        """The caller's own function called ``fn_id``, else one it may read; 404 if none."""
        own = current_principal().id
        rows = await self.sql.fetch_all(
            TABLE, rows_where(RESOURCE, "read", Where.eq("fn_id", fn_id), id_column=_BY), limit=64
        )
        if not rows:
            raise missing(fn_id, param)
        rows.sort(key=lambda r: (r.get("owner_principal") != own, int(r["created_ns"])))
        return ScoringFunction.model_validate(rows[0]["function"])

    async def list(self) -> list[ScoringFunction]:
        rows = await self.sql.fetch_all(
            TABLE, rows_where(RESOURCE, "read", id_column=_BY), order_by=[("created_ns", "asc")], limit=MAX_LISTED
        )
        return [ScoringFunction.model_validate(r["function"]) for r in rows]

    async def create(self, function: ScoringFunction) -> ScoringFunction:
        principal = current_principal()
        require_create(RESOURCE, function.identifier)
        at_ns = time.time_ns()
        stored = function.model_copy(update={"created_at": at_ns // 1_000_000_000, "source": "api"})
        try:
            await self.sql.insert(
                TABLE,
                {
                    "key": _key(function.identifier, principal.id),
                    "fn_id": function.identifier,
                    "created_ns": at_ns,
                    "function": stored.model_dump(mode="json"),
                    "owner_principal": principal.id,
                    "owner_attributes": principal.attributes,
                },
            )
        except ConflictError:
            raise ConflictError(
                f"You already registered scoring function '{function.identifier}'; delete it first or pick another id.",
                param="scoring_fn_id",
                code="scoring_function_exists",
            ) from None
        return stored

    async def delete(self, fn_id: str) -> None:
        """Delete the caller's own function ``fn_id`` (or, failing that, one the policy lets it delete)."""
        own = _key(fn_id, current_principal().id)
        if await self.sql.delete(TABLE, rows_where(RESOURCE, "delete", Where.eq("key", own), id_column=_BY)):
            return
        match = [Where.eq("fn_id", fn_id)]
        visible = await self.sql.fetch_all(TABLE, rows_where(RESOURCE, "read", *match, id_column=_BY), limit=2)
        if len(visible) == 1:
            key = Where.eq("key", visible[0]["key"])
            if await self.sql.delete(TABLE, rows_where(RESOURCE, "delete", key, id_column=_BY)):
                return
        raise await explain_miss(self.sql, TABLE, RESOURCE, "delete", match, missing(fn_id), fn_id, _BY)
