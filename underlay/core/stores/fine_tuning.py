"""Fine-tuning jobs, their events and checkpoints in the SQL store, owned by whoever created the job.

Four tables. ``fine_tuning_jobs`` holds one row per job: the job as the API returns it (JSON), its
status as a column (so updates can be conditional on it), the durable job running it, whether a pause
was asked for, and the GGUF file that serves the tuned model (so a restarted server can serve it again).
``fine_tuning_events`` and ``fine_tuning_checkpoints`` hold what a run reports, keyed by job; their rows
carry the job's owner, so one policy predicate (resource type ``fine_tuning_job``) governs them all.
``fine_tuning_upstreams`` holds, for a job an upstream service trains (``remote::openai``), the upstream's
ids (files, job) as soon as each exists, so a restarted server follows the same upstream job.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, Field

from underlay.api.errors import NotFoundError
from underlay.api.fine_tuning import FineTuningJob, FineTuningJobCheckpoint, FineTuningJobEvent
from underlay.core.access import fetch_for, require_create, rows_where
from underlay.core.identity import current_principal
from underlay.core.storage.sqlstore import OWNER_COLUMNS, ColumnDefinition, ColumnType, SqlStore, Where

JOBS = "fine_tuning_jobs"
EVENTS = "fine_tuning_events"
CHECKPOINTS = "fine_tuning_checkpoints"
UPSTREAMS = "fine_tuning_upstreams"
RESOURCE = "fine_tuning_job"


def new_job_id() -> str:
    return f"ftjob-{secrets.token_hex(12)}"


def _missing(job_id: str) -> NotFoundError:
    return NotFoundError("Fine-tuning job", job_id, param="fine_tuning_job_id")


@dataclass(frozen=True)
class JobRow:
    """A job with the columns only the server reads."""

    job: FineTuningJob
    run_id: str | None
    """The durable job (``job_…``) running it now."""
    pause_requested: bool
    served_path: str | None
    provider_id: str


class UpstreamRun(BaseModel):
    """Where a job an upstream service trains stands there: the provider and the upstream's ids.

    ``create_attempted`` is set before the create call, so a run resumed after a crash in it looks the
    upstream job up by its training file before it creates another. ``last_event_id`` is the newest
    upstream event already copied. ``result_files`` maps each upstream result file to its local copy.
    ``failing_since`` is when following the upstream started failing (``None`` while it answers).
    """

    provider_id: str
    training_file: str | None = None
    validation_file: str | None = None
    job_id: str | None = None
    create_attempted: bool = False
    cancel_sent: bool = False
    last_event_id: str | None = None
    result_files: dict[str, str] = Field(default_factory=dict)
    failing_since: int | None = None


@dataclass(frozen=True)
class CheckpointRow:
    checkpoint: FineTuningJobCheckpoint
    directory: str


def _job_row(row: dict[str, Any]) -> JobRow:
    return JobRow(
        job=FineTuningJob.model_validate(row["job"]),
        run_id=row.get("run_id"),
        pause_requested=bool(row.get("pause_requested")),
        served_path=row.get("served_path"),
        provider_id=str(row.get("provider_id") or ""),
    )


class FineTuningStore:
    def __init__(self, sql: SqlStore) -> None:
        self.sql = sql

    async def initialize(self) -> None:
        await self.sql.create_table(
            JOBS,
            {
                "id": ColumnDefinition(type=ColumnType.STRING, primary_key=True, nullable=False),
                "created_ns": ColumnDefinition(type=ColumnType.INTEGER, index=True),
                "status": ColumnDefinition(type=ColumnType.STRING, index=True),
                "run_id": ColumnType.STRING,
                "pause_requested": ColumnType.BOOLEAN,
                "served_path": ColumnType.STRING,
                "provider_id": ColumnType.STRING,
                "job": ColumnType.JSON,
                **OWNER_COLUMNS,
            },
        )
        for table in (EVENTS, CHECKPOINTS):
            await self.sql.create_table(
                table,
                {
                    "id": ColumnDefinition(type=ColumnType.STRING, primary_key=True, nullable=False),
                    "job_id": ColumnDefinition(type=ColumnType.STRING, index=True),
                    "created_ns": ColumnDefinition(type=ColumnType.INTEGER, index=True),
                    "item": ColumnType.JSON,
                    "directory": ColumnType.STRING,
                    **OWNER_COLUMNS,
                },
            )
        await self.sql.create_table(
            UPSTREAMS,
            {
                "job_id": ColumnDefinition(type=ColumnType.STRING, primary_key=True, nullable=False),
                "state": ColumnType.JSON,
                **OWNER_COLUMNS,
            },
        )

    # ---- jobs ----------------------------------------------------------------------------------------

    async def create(self, job: FineTuningJob, run_id: str, provider_id: str) -> None:
        principal = current_principal()
        require_create(RESOURCE, job.id)
        await self.sql.insert(
            JOBS,
            {
                "id": job.id,
                "created_ns": time.time_ns(),
                "status": job.status,
                "run_id": run_id,
                "pause_requested": False,
                "served_path": None,
                "provider_id": provider_id,
                "job": job.model_dump(mode="json"),
                "owner_principal": principal.id,
                "owner_attributes": principal.attributes,
            },
        )

    async def get(self, job_id: str, action: str = "read") -> JobRow:
        row = await fetch_for(self.sql, JOBS, RESOURCE, action, [Where.eq("id", job_id)], _missing(job_id), job_id)
        return _job_row(row)

    async def save(self, job: FineTuningJob, *, unless: tuple[str, ...] = (), **columns: Any) -> bool:
        """Write the job back (and ``columns``: run_id, pause_requested, served_path); ``False`` if skipped."""
        values: dict[str, Any] = {"status": job.status, "job": job.model_dump(mode="json"), **columns}
        match: list[Any] = [Where.eq("id", job.id)]
        if unless:
            match.append(Where.not_in("status", list(unless)))
        return bool(await self.sql.update(JOBS, values, rows_where(RESOURCE, "update", *match)))

    async def page(self, *, after: str | None, limit: int) -> tuple[list[FineTuningJob], bool]:
        page = await self.sql.fetch_page(
            JOBS, rows_where(RESOURCE, "read"), order_column="created_ns", order="desc", limit=limit, after_id=after
        )
        return [FineTuningJob.model_validate(r["job"]) for r in page.rows], page.has_more

    async def served(self) -> list[JobRow]:
        """Every succeeded job with a served model, whoever owns it: the server re-serves them at start."""
        rows = await self.sql.fetch_all(JOBS, [Where.eq("status", "succeeded")])
        return [_job_row(r) for r in rows if r.get("served_path")]

    # ---- upstream state ----------------------------------------------------------------------------------

    async def upstream(self, job_id: str) -> UpstreamRun | None:
        """The job's upstream state, or ``None`` for a job that trains here (or has not reached its upstream)."""
        row = await self.sql.fetch_one(
            UPSTREAMS, rows_where(RESOURCE, "read", Where.eq("job_id", job_id), id_column="job_id")
        )
        return None if row is None else UpstreamRun.model_validate(row["state"])

    async def save_upstream(self, job_id: str, state: UpstreamRun) -> None:
        """Write the job's upstream state (as the run's principal: the job's owner)."""
        principal = current_principal()
        row = {
            "job_id": job_id,
            "state": state.model_dump(mode="json"),
            "owner_principal": principal.id,
            "owner_attributes": principal.attributes,
        }
        await self.sql.upsert(UPSTREAMS, row, ["job_id"])

    # ---- events and checkpoints ------------------------------------------------------------------------

    async def add_event(self, job_id: str, event: FineTuningJobEvent) -> None:
        await self._add(EVENTS, job_id, event.id, event.model_dump(mode="json"), None)

    async def add_checkpoint(self, checkpoint: FineTuningJobCheckpoint, directory: str) -> None:
        await self._add(
            CHECKPOINTS, checkpoint.fine_tuning_job_id, checkpoint.id, checkpoint.model_dump(mode="json"), directory
        )

    async def copy_event(self, job_id: str, event: FineTuningJobEvent) -> None:
        """Add an event copied from an upstream, under an id derived from the upstream's: copying it again
        (a run that stopped before it saved how far it had copied) writes the same row again."""
        await self._add(EVENTS, job_id, event.id, event.model_dump(mode="json"), None, upsert=True)

    async def _add(
        self,
        table: str,
        job_id: str,
        item_id: str,
        item: dict[str, Any],
        directory: str | None,
        *,
        upsert: bool = False,
    ) -> None:
        principal = current_principal()
        row = {
            "id": item_id,
            "job_id": job_id,
            "created_ns": time.time_ns(),
            "item": item,
            "directory": directory,
            "owner_principal": principal.id,
            "owner_attributes": principal.attributes,
        }
        if upsert:
            await self.sql.upsert(table, row, ["id"])
        else:
            await self.sql.insert(table, row)

    async def events(self, job_id: str, *, after: str | None, limit: int) -> tuple[list[FineTuningJobEvent], bool]:
        page = await self.sql.fetch_page(
            EVENTS,
            rows_where(RESOURCE, "read", Where.eq("job_id", job_id), id_column="job_id"),
            order_column="created_ns",
            order="desc",
            limit=limit,
            after_id=after,
        )
        return [FineTuningJobEvent.model_validate(r["item"]) for r in page.rows], page.has_more

    async def checkpoints(
        self, job_id: str, *, after: str | None = None, limit: int = 1000
    ) -> tuple[list[CheckpointRow], bool]:
        page = await self.sql.fetch_page(
            CHECKPOINTS,
            rows_where(RESOURCE, "read", Where.eq("job_id", job_id), id_column="job_id"),
            order_column="created_ns",
            order="desc",
            limit=limit,
            after_id=after,
        )
        rows = [
            CheckpointRow(FineTuningJobCheckpoint.model_validate(r["item"]), str(r.get("directory") or ""))
            for r in page.rows
        ]
        return rows, page.has_more
