"""Registered benchmarks, eval jobs and their per-row results in the SQL store, each owned by its creator.

``eval_benchmarks`` holds users' benchmarks (the shipped ones live in the package, not here).
``eval_jobs`` holds each job as the API returns it plus its ``status`` column, so the job's own writes can
be conditional on it (a cancelled job is never written back as running). ``eval_job_rows`` holds one
record per *finished* row, keyed by job and row number and written the moment the row ends: a resumed
job reads it to skip finished rows, and the job's result is assembled from it. Rows carry their job's
owner, so one policy predicate (resource type ``eval_job``, identified by the job id) covers both tables.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Literal

from underlay.api.errors import NotFoundError
from underlay.api.eval import Benchmark, EvalJob
from underlay.core.access import fetch_for, require_create, rows_where
from underlay.core.identity import current_principal
from underlay.core.storage.sqlstore import OWNER_COLUMNS, ColumnDefinition, ColumnType, SqlStore, Where

BENCHMARKS = "eval_benchmarks"
JOBS = "eval_jobs"
ROWS = "eval_job_rows"
BENCHMARK = "benchmark"
JOB = "eval_job"


@dataclass(frozen=True)
class JobRow:
    """One finished row of a job: its number, ``pass``/``fail``/``error``, and its stored record (JSON:
    ``input``, ``generated_answer``, ``usage``, ``scores`` by function, ``error``)."""

    row_index: int
    status: str
    record: dict[str, Any]


def _owner() -> dict[str, Any]:
    principal = current_principal()
    return {"owner_principal": principal.id, "owner_attributes": principal.attributes}


class EvalJobStore:
    def __init__(self, sql: SqlStore) -> None:
        self.sql = sql

    async def initialize(self) -> None:
        await self.sql.create_table(
            BENCHMARKS,
            {
                "id": ColumnDefinition(type=ColumnType.STRING, primary_key=True, nullable=False),
                "created_ns": ColumnDefinition(type=ColumnType.INTEGER, index=True),
                "benchmark": ColumnType.JSON,
                **OWNER_COLUMNS,
            },
        )
        await self.sql.create_table(
            JOBS,
            {
                "id": ColumnDefinition(type=ColumnType.STRING, primary_key=True, nullable=False),
                "benchmark_id": ColumnDefinition(type=ColumnType.STRING, index=True),
                "created_ns": ColumnDefinition(type=ColumnType.INTEGER, index=True),
                "status": ColumnType.STRING,
                "job": ColumnType.JSON,
                "config": ColumnType.JSON,
                **OWNER_COLUMNS,
            },
        )
        await self.sql.create_table(
            ROWS,
            {
                "key": ColumnDefinition(type=ColumnType.STRING, primary_key=True, nullable=False),
                "job_id": ColumnDefinition(type=ColumnType.STRING, index=True),
                "row_index": ColumnType.INTEGER,
                "status": ColumnType.STRING,
                "record": ColumnType.JSON,
                **OWNER_COLUMNS,
            },
        )

    # ---- benchmarks ---------------------------------------------------------------------------------

    async def create_benchmark(self, benchmark: Benchmark) -> None:
        require_create(BENCHMARK, benchmark.identifier)
        row = {
            "id": benchmark.identifier,
            "created_ns": time.time_ns(),
            "benchmark": benchmark.model_dump(mode="json"),
            **_owner(),
        }
        await self.sql.insert(BENCHMARKS, row)

    async def find_benchmark(self, benchmark_id: str) -> bool:
        """Whether any benchmark (anyone's) has this id: ids are global, like dataset ids."""
        return await self.sql.fetch_one(BENCHMARKS, {"id": benchmark_id}) is not None

    async def get_benchmark(self, benchmark_id: str, action: str = "read") -> Benchmark:
        missing = NotFoundError("Benchmark", benchmark_id, param="benchmark_id")
        row = await fetch_for(
            self.sql, BENCHMARKS, BENCHMARK, action, [Where.eq("id", benchmark_id)], missing, benchmark_id
        )
        return Benchmark.model_validate(row["benchmark"])

    async def list_benchmarks(self) -> list[Benchmark]:
        rows = await self.sql.fetch_all(BENCHMARKS, rows_where(BENCHMARK, "read"), order_by=[("created_ns", "asc")])
        return [Benchmark.model_validate(r["benchmark"]) for r in rows]

    async def delete_benchmark(self, benchmark_id: str) -> None:
        await self.sql.delete(BENCHMARKS, rows_where(BENCHMARK, "delete", Where.eq("id", benchmark_id)))

    # ---- jobs ---------------------------------------------------------------------------------------

    async def create_job(self, job: EvalJob, config: dict[str, Any]) -> None:
        require_create(JOB, job.job_id)
        row = {
            "id": job.job_id,
            "benchmark_id": job.benchmark_id,
            "created_ns": time.time_ns(),
            "status": job.status,
            "job": job.model_dump(mode="json"),
            "config": config,
            **_owner(),
        }
        await self.sql.insert(JOBS, row)

    async def get_job(self, benchmark_id: str, job_id: str, action: str = "read") -> tuple[EvalJob, dict[str, Any]]:
        missing = NotFoundError("Eval job", job_id, param="job_id")
        row = await fetch_for(
            self.sql,
            JOBS,
            JOB,
            action,
            [Where.eq("id", job_id), Where.eq("benchmark_id", benchmark_id)],
            missing,
            job_id,
        )
        return EvalJob.model_validate(row["job"]), dict(row["config"] or {})

    async def save_job(self, job: EvalJob, *, only_if: tuple[str, ...] = ()) -> bool:
        """Write the job back; with ``only_if``, only while its stored status is one of those."""
        where: list[Any] = [Where.eq("id", job.job_id)]
        if only_if:
            where.append(Where.in_("status", list(only_if)))
        values = {"status": job.status, "job": job.model_dump(mode="json")}
        return bool(await self.sql.update(JOBS, values, rows_where(JOB, "update", *where)))

    async def page_jobs(
        self, benchmark_id: str, *, after: str | None, limit: int, order: Literal["asc", "desc"]
    ) -> tuple[list[EvalJob], bool]:
        page = await self.sql.fetch_page(
            JOBS,
            rows_where(JOB, "read", Where.eq("benchmark_id", benchmark_id)),
            order_column="created_ns",
            order=order,
            limit=limit,
            after_id=after,
        )
        return [EvalJob.model_validate(r["job"]) for r in page.rows], page.has_more

    async def jobs_of(self, benchmark_id: str) -> list[EvalJob]:
        rows = await self.sql.fetch_all(JOBS, rows_where(JOB, "read", Where.eq("benchmark_id", benchmark_id)))
        return [EvalJob.model_validate(r["job"]) for r in rows]

    async def delete_job(self, job_id: str) -> None:
        await self.sql.delete(ROWS, rows_where(JOB, "delete", Where.eq("job_id", job_id), id_column="job_id"))
        await self.sql.delete(JOBS, rows_where(JOB, "delete", Where.eq("id", job_id)))

    # ---- per-row results ----------------------------------------------------------------------------

    async def record_row(self, job_id: str, row_index: int, status: str, record: dict[str, Any]) -> None:
        """Commit one finished row; recording the same row again keeps the first record."""
        key = f"{job_id}#{row_index}"
        if await self.sql.fetch_one(ROWS, {"key": key}) is not None:
            return
        values = {"key": key, "job_id": job_id, "row_index": row_index, "status": status, "record": record, **_owner()}
        await self.sql.upsert(ROWS, values, ["key"])

    async def rows_of(self, job_id: str) -> list[JobRow]:
        """The job's finished rows in row order."""
        rows = await self.sql.fetch_all(
            ROWS,
            rows_where(JOB, "read", Where.eq("job_id", job_id), id_column="job_id"),
            order_by=[("row_index", "asc")],
        )
        return [JobRow(int(r["row_index"]), str(r["status"]), dict(r["record"] or {})) for r in rows]
