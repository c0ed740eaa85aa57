"""Batches and their finished lines in the SQL store, owned by the principal who created them.

Two tables. ``batches`` holds one row per batch: the batch object as the API returns it (JSON), its
status as a column (so the runner's updates can be conditional on it) and the job that runs it.
``batch_lines`` holds one row per *finished* request line, keyed by batch and line number, written the
moment that line ends: this is the progress a resumed job reads, so a restarted server runs only the
lines that have no row yet and never runs a finished one twice. Line rows carry their batch's owner, so
one policy predicate (resource type ``batch``, compiled into every query) governs all three tables.

``batch_upstreams`` holds, for a batch passed through to a provider's own Batches API, which provider
runs it and the upstream's ids (input file, batch) as soon as each exists. Its row is written before
the first upstream call, so a resumed job knows the batch is native, and which upstream batch to
follow, and never submits it a second time. It holds ids only, never a credential.
"""

from __future__ import annotations

import secrets
import time
from typing import Any, Literal

from pydantic import BaseModel, Field

from underlay.api.batches import Batch
from underlay.api.errors import NotFoundError
from underlay.core.access import fetch_for, require_create, rows_where
from underlay.core.identity import current_principal
from underlay.core.storage.sqlstore import OWNER_COLUMNS, ColumnDefinition, ColumnType, SqlStore, Where

BATCHES = "batches"
LINES = "batch_lines"
UPSTREAMS = "batch_upstreams"
RESOURCE = "batch"


class UpstreamBatch(BaseModel):
    """Where a native (passed-through) batch stands upstream: the provider and the upstream's ids.

    ``create_attempted`` is set before the create call, so a job resumed after a crash in it looks the
    upstream batch up by its input file before it creates one. ``cancel_sent`` records that the upstream
    was asked to cancel; ``charged`` that the batch's tokens went to the owner's quota (at most once).
    ``failing_since`` is when polling the upstream started failing (``None`` while it answers).
    """

    provider_id: str
    models: dict[str, str] = Field(default_factory=dict)
    """Each model name the lines use → the provider's own name for it (what the upstream is sent)."""
    input_file_id: str | None = None
    batch_id: str | None = None
    create_attempted: bool = False
    cancel_sent: bool = False
    charged: bool = False
    failing_since: int | None = None


def new_batch_id() -> str:
    return f"batch_{secrets.token_hex(16)}"


def _missing(batch_id: str) -> NotFoundError:
    return NotFoundError("Batch", batch_id, param="batch_id")


class BatchStore:
    def __init__(self, sql: SqlStore) -> None:
        self.sql = sql

    async def initialize(self) -> None:
        await self.sql.create_table(
            BATCHES,
            {
                "id": ColumnDefinition(type=ColumnType.STRING, primary_key=True, nullable=False),
                "created_at": ColumnType.TIMESTAMP,
                "created_ns": ColumnDefinition(type=ColumnType.INTEGER, index=True),
                "status": ColumnType.STRING,
                "job_id": ColumnType.STRING,
                "batch": ColumnType.JSON,
                **OWNER_COLUMNS,
            },
        )
        await self.sql.create_table(
            LINES,
            {
                "key": ColumnDefinition(type=ColumnType.STRING, primary_key=True, nullable=False),
                "batch_id": ColumnDefinition(type=ColumnType.STRING, index=True),
                "line": ColumnType.INTEGER,
                "ok": ColumnType.BOOLEAN,
                "record": ColumnType.JSON,
                **OWNER_COLUMNS,
            },
        )
        await self.sql.create_table(
            UPSTREAMS,
            {
                "batch_id": ColumnDefinition(type=ColumnType.STRING, primary_key=True, nullable=False),
                "state": ColumnType.JSON,
                **OWNER_COLUMNS,
            },
        )

    # ---- batches -----------------------------------------------------------------------------------

    async def create(self, batch: Batch, job_id: str) -> None:
        """Insert a new batch, run by job ``job_id``, owned by the caller (403 first if the policy forbids it)."""
        principal = current_principal()
        require_create(RESOURCE, batch.id)
        await self.sql.insert(
            BATCHES,
            {
                "id": batch.id,
                "created_at": batch.created_at,
                "created_ns": time.time_ns(),
                "status": batch.status,
                "job_id": job_id,
                "batch": batch.model_dump(mode="json"),
                "owner_principal": principal.id,
                "owner_attributes": principal.attributes,
            },
        )

    async def get(self, batch_id: str, action: str = "read") -> tuple[Batch, str | None]:
        """The batch and its job id; 404 if the caller cannot see it, 403 if it may not ``action`` it."""
        row = await fetch_for(
            self.sql, BATCHES, RESOURCE, action, [Where.eq("id", batch_id)], _missing(batch_id), batch_id
        )
        return Batch.model_validate(row["batch"]), row["job_id"]

    async def save(self, batch: Batch, *, unless: tuple[str, ...] = ()) -> bool:
        """Write the batch back (the job runs as the owner); ``False`` when its status is in ``unless``."""
        values: dict[str, Any] = {"status": batch.status, "batch": batch.model_dump(mode="json")}
        match: list[Any] = [Where.eq("id", batch.id)]
        if unless:
            match.append(Where.not_in("status", list(unless)))
        return bool(await self.sql.update(BATCHES, values, rows_where(RESOURCE, "update", *match)))

    async def page(self, *, after: str | None, limit: int, order: Literal["asc", "desc"]) -> tuple[list[Batch], bool]:
        page = await self.sql.fetch_page(
            BATCHES, rows_where(RESOURCE, "read"), order_column="created_ns", order=order, limit=limit, after_id=after
        )
        return [Batch.model_validate(r["batch"]) for r in page.rows], page.has_more

    # ---- lines --------------------------------------------------------------------------------------

    async def record_line(self, batch_id: str, line: int, ok: bool, record: dict[str, Any]) -> None:
        """Keep one finished line's output record; a line recorded twice keeps its first record."""
        principal = current_principal()
        row = {
            "key": f"{batch_id}#{line}",
            "batch_id": batch_id,
            "line": line,
            "ok": ok,
            "record": record,
            "owner_principal": principal.id,
            "owner_attributes": principal.attributes,
        }
        await self.sql.upsert(LINES, row, ["key"])

    async def finished_lines(self, batch_id: str) -> dict[int, tuple[bool, dict[str, Any]]]:
        """Every finished line of the batch: line number → (succeeded, output record)."""
        rows = await self.sql.fetch_all(
            LINES, rows_where(RESOURCE, "read", Where.eq("batch_id", batch_id), id_column="batch_id")
        )
        return {int(r["line"]): (bool(r["ok"]), r["record"]) for r in rows}

    # ---- native batches ---------------------------------------------------------------------------------

    async def upstream(self, batch_id: str) -> UpstreamBatch | None:
        """The batch's upstream state, or ``None`` for a batch that runs here (or has not been planned)."""
        row = await self.sql.fetch_one(
            UPSTREAMS, rows_where(RESOURCE, "read", Where.eq("batch_id", batch_id), id_column="batch_id")
        )
        return None if row is None else UpstreamBatch.model_validate(row["state"])

    async def save_upstream(self, batch_id: str, state: UpstreamBatch) -> None:
        """Write the batch's upstream state (as the job's principal: the batch's owner)."""
        principal = current_principal()
        row = {
            "batch_id": batch_id,
            "state": state.model_dump(mode="json"),
            "owner_principal": principal.id,
            "owner_attributes": principal.attributes,
        }
        await self.sql.upsert(UPSTREAMS, row, ["batch_id"])
