"""Stored responses and the event logs of background responses, in the SQL store, owner-filtered.

Why the event log is kept in batches (one row per flush, holding many events) rather than a row per
event: a streamed answer is one event per token, and one SQL transaction per token would make the
database the bottleneck. The engine flushes every fraction of a second; readers that resume a stream
(``starting_after``) read the batches past their position and skip what they already saw.
"""

from __future__ import annotations

import time
from typing import Any

from underlay.api.errors import NotFoundError
from underlay.api.responses import StoredResponse
from underlay.core.access import explain_miss, fetch_for, intended_action, require_create, rows_where
from underlay.core.identity import current_principal
from underlay.core.storage.sqlstore import OWNER_COLUMNS, ColumnDefinition, ColumnType, SqlStore, Where

RESPONSES = "responses"
EVENTS = "response_events"


def _stored(row: dict[str, Any]) -> StoredResponse:
    """The one place a ``responses`` row is read by column name."""
    return StoredResponse(
        id=row["id"],
        status=row["status"],
        background=bool(row["background"]),
        response=row["response"],
        input_items=row["input_items"] or [],
        history=row["history"] or [],
        request=row["request"],
        job_id=row["job_id"],
        owner_principal=row["owner_principal"],
    )


class ResponseStore:
    """Implements :class:`underlay.api.responses.ResponseStateStore`."""

    def __init__(self, sql: SqlStore) -> None:
        self.sql = sql

    async def initialize(self) -> None:
        await self.sql.create_table(
            RESPONSES,
            {
                "id": ColumnDefinition(type=ColumnType.STRING, primary_key=True, nullable=False),
                "created_ns": ColumnDefinition(type=ColumnType.INTEGER, index=True),
                "model": ColumnDefinition(type=ColumnType.STRING, index=True),
                "status": ColumnDefinition(type=ColumnType.STRING, index=True),
                "background": ColumnType.BOOLEAN,
                "job_id": ColumnType.STRING,
                "response": ColumnType.JSON,
                "input_items": ColumnType.JSON,
                "history": ColumnType.JSON,
                "request": ColumnType.JSON,
                **OWNER_COLUMNS,
            },
        )
        await self.sql.create_table(
            EVENTS,
            {
                "row_id": ColumnDefinition(type=ColumnType.STRING, primary_key=True, nullable=False),
                "response_id": ColumnDefinition(type=ColumnType.STRING, index=True),
                "first_seq": ColumnType.INTEGER,
                "last_seq": ColumnType.INTEGER,
                "events": ColumnType.JSON,
                **OWNER_COLUMNS,
            },
        )

    @staticmethod
    def _allowed(action: str, id_column: str = "id", **where: Any) -> list[Any]:
        """``where`` plus the rows the access policy lets the caller ``action`` (events: by response id)."""
        return rows_where("response", action, *(Where.eq(k, v) for k, v in where.items()), id_column=id_column)

    async def put(self, response: dict[str, Any], **fields: Any) -> None:
        """Store a new response (or replace the caller's own); the policy must allow creating it."""
        require_create("response", response["id"])
        principal = current_principal()
        await self.sql.upsert(
            RESPONSES,
            {
                "id": response["id"],
                "created_ns": time.time_ns(),
                "model": response.get("model"),
                "status": response.get("status"),
                "background": bool(response.get("background")),
                "response": response,
                "input_items": fields.get("input_items") or [],
                "history": fields.get("history") or [],
                "request": fields.get("request"),
                "job_id": fields.get("job_id"),
                "owner_principal": principal.id,
                "owner_attributes": principal.attributes,
            },
            ["id"],
        )

    async def find(self, response_id: str) -> StoredResponse | None:
        """The response if the caller may read it (``previous_response_id`` chains through this)."""
        row = await self.sql.fetch_one(RESPONSES, self._allowed("read", id=response_id))
        return None if row is None else _stored(row)

    async def get(self, response_id: str, action: str | None = None) -> StoredResponse:
        """The response the caller may ``action``: 404 if it cannot read it, 403 if only that.

        ``action`` defaults to what the router declared with :func:`acting_for` (else ``read``).
        """
        action = action or intended_action()
        missing = NotFoundError("Response", response_id, param="response_id")
        match = [Where.eq("id", response_id)]
        return _stored(await fetch_for(self.sql, RESPONSES, "response", action, match, missing, response_id))

    async def update(self, response_id: str, response: dict[str, Any] | None = None, **fields: Any) -> None:
        values = dict(fields)
        if response is not None:
            values["response"] = response
            values["status"] = response.get("status")
        if values:
            await self.sql.update(RESPONSES, values, self._allowed("update", id=response_id))

    async def delete(self, response_id: str) -> None:
        deleted = await self.sql.delete(RESPONSES, self._allowed("delete", id=response_id))
        if not deleted:
            missing = NotFoundError("Response", response_id, param="response_id")
            match = [Where.eq("id", response_id)]
            raise await explain_miss(self.sql, RESPONSES, "response", "delete", match, missing, response_id)
        await self.sql.delete(EVENTS, self._allowed("delete", "response_id", response_id=response_id))

    async def page(
        self, *, after: str | None, limit: int, order: str, model: str | None
    ) -> tuple[list[StoredResponse], bool]:
        where = self._allowed("read", **({"model": model} if model else {}))
        rows, has_more = await self.sql.fetch_page(
            RESPONSES,
            where,
            order_column="created_ns",
            order="asc" if order == "asc" else "desc",
            limit=limit,
            after_id=after,
        )
        return [_stored(r) for r in rows], has_more

    # ---- event log --------------------------------------------------------------------------------

    async def append_events(self, response_id: str, events: list[dict[str, Any]]) -> None:
        if not events:
            return
        principal = current_principal()
        first, last = events[0]["sequence_number"], events[-1]["sequence_number"]
        await self.sql.upsert(
            EVENTS,
            {
                "row_id": f"{response_id}/{first:09d}",
                "response_id": response_id,
                "first_seq": first,
                "last_seq": last,
                "events": events,
                "owner_principal": principal.id,
                "owner_attributes": principal.attributes,
            },
            ["row_id"],
        )

    async def events_after(self, response_id: str, sequence_number: int) -> list[dict[str, Any]]:
        rows = await self.sql.fetch_all(
            EVENTS,
            self._allowed("read", "response_id", response_id=response_id) + [Where.gt("last_seq", sequence_number)],
            order_by=[("first_seq", "asc")],
        )
        return [e for row in rows for e in row["events"] if e["sequence_number"] > sequence_number]

    async def discard_events_after(self, response_id: str, sequence_number: int) -> int:
        """Empty the log's batches that start after ``sequence_number`` (an interrupted attempt's events).

        The batches stay, empty, with their numbers: the log's highest number never goes down, so later
        events are never numbered below a cursor a client already holds.
        """
        return await self.sql.update(
            EVENTS,
            {"events": []},
            self._allowed("update", "response_id", response_id=response_id) + [Where.gt("first_seq", sequence_number)],
        )

    async def last_sequence_number(self, response_id: str) -> int:
        rows = await self.sql.fetch_all(
            EVENTS,
            self._allowed("read", "response_id", response_id=response_id),
            order_by=[("last_seq", "desc")],
            limit=1,
        )
        return int(rows[0]["last_seq"]) if rows else -1
