"""Evals, their runs and the runs' output items in the SQL store, owned by the principal who created the eval.

Three tables. ``evals`` and ``eval_runs`` hold each object as the API returns it (JSON) plus the columns
queries need (a run's ``status``, so the job's writes can be conditional on it, and its ``job_id``).
``eval_output_items`` holds one row per *finished* data-source row, keyed by run and row number and
written the moment the row ends: it is what a resumed job reads to skip finished rows, and what
``output_items`` pages over. Runs and items carry their eval's owner, so one policy predicate (resource
type ``eval``, identified by the eval id) governs all three tables.
"""

from __future__ import annotations

import secrets
import time
from typing import Any, Literal

from underlay.api.errors import NotFoundError
from underlay.api.evals import Eval, EvalRun, OutputItem
from underlay.core.access import fetch_for, require_create, rows_where
from underlay.core.identity import current_principal
from underlay.core.storage.sqlstore import OWNER_COLUMNS, ColumnDefinition, ColumnType, SqlStore, Where

EVALS = "evals"
RUNS = "eval_runs"
ITEMS = "eval_output_items"
RESOURCE = "eval"


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(16)}"


def _owner() -> dict[str, Any]:
    principal = current_principal()
    return {"owner_principal": principal.id, "owner_attributes": principal.attributes}


class EvalStore:
    def __init__(self, sql: SqlStore) -> None:
        self.sql = sql

    async def initialize(self) -> None:
        await self.sql.create_table(
            EVALS,
            {
                "id": ColumnDefinition(type=ColumnType.STRING, primary_key=True, nullable=False),
                "created_at": ColumnType.TIMESTAMP,
                "created_ns": ColumnDefinition(type=ColumnType.INTEGER, index=True),
                "updated_ns": ColumnDefinition(type=ColumnType.INTEGER, index=True),
                "eval": ColumnType.JSON,
                **OWNER_COLUMNS,
            },
        )
        await self.sql.create_table(
            RUNS,
            {
                "id": ColumnDefinition(type=ColumnType.STRING, primary_key=True, nullable=False),
                "eval_id": ColumnDefinition(type=ColumnType.STRING, index=True),
                "created_ns": ColumnDefinition(type=ColumnType.INTEGER, index=True),
                "status": ColumnType.STRING,
                "job_id": ColumnType.STRING,
                "run": ColumnType.JSON,
                **OWNER_COLUMNS,
            },
        )
        await self.sql.create_table(
            ITEMS,
            {
                "key": ColumnDefinition(type=ColumnType.STRING, primary_key=True, nullable=False),
                "id": ColumnDefinition(type=ColumnType.STRING, index=True),
                "eval_id": ColumnDefinition(type=ColumnType.STRING, index=True),
                "run_id": ColumnDefinition(type=ColumnType.STRING, index=True),
                "row_index": ColumnType.INTEGER,
                "status": ColumnType.STRING,
                "item": ColumnType.JSON,
                **OWNER_COLUMNS,
            },
        )

    # ---- evals --------------------------------------------------------------------------------------

    async def create_eval(self, evaluation: Eval) -> None:
        require_create(RESOURCE, evaluation.id)
        now = time.time_ns()
        await self.sql.insert(
            EVALS,
            {
                "id": evaluation.id,
                "created_at": evaluation.created_at,
                "created_ns": now,
                "updated_ns": now,
                "eval": evaluation.model_dump(mode="json", by_alias=True),
                **_owner(),
            },
        )

    async def get_eval(self, eval_id: str, action: str = "read") -> Eval:
        missing = NotFoundError("Eval", eval_id, param="eval_id")
        row = await fetch_for(self.sql, EVALS, RESOURCE, action, [Where.eq("id", eval_id)], missing, eval_id)
        return Eval.model_validate(row["eval"])

    async def save_eval(self, evaluation: Eval) -> None:
        values = {"eval": evaluation.model_dump(mode="json", by_alias=True), "updated_ns": time.time_ns()}
        await self.sql.update(EVALS, values, rows_where(RESOURCE, "update", Where.eq("id", evaluation.id)))

    async def page_evals(
        self, *, after: str | None, limit: int, order: Literal["asc", "desc"], order_by: str
    ) -> tuple[list[Eval], bool]:
        column = "updated_ns" if order_by == "updated_at" else "created_ns"
        page = await self.sql.fetch_page(
            EVALS, rows_where(RESOURCE, "read"), order_column=column, order=order, limit=limit, after_id=after
        )
        return [Eval.model_validate(r["eval"]) for r in page.rows], page.has_more

    async def delete_eval(self, eval_id: str) -> None:
        """The eval, its runs and their items (the caller has checked it may delete the eval)."""
        for table in (ITEMS, RUNS):
            await self.sql.delete(
                table, rows_where(RESOURCE, "delete", Where.eq("eval_id", eval_id), id_column="eval_id")
            )
        await self.sql.delete(EVALS, rows_where(RESOURCE, "delete", Where.eq("id", eval_id)))

    # ---- runs ---------------------------------------------------------------------------------------

    async def create_run(self, run: EvalRun, job_id: str) -> None:
        await self.sql.insert(
            RUNS,
            {
                "id": run.id,
                "eval_id": run.eval_id,
                "created_ns": time.time_ns(),
                "status": run.status,
                "job_id": job_id,
                "run": run.model_dump(mode="json", by_alias=True),
                **_owner(),
            },
        )

    def _run_where(self, action: str, eval_id: str, *extra: Any) -> list[Any]:
        return rows_where(RESOURCE, action, Where.eq("eval_id", eval_id), *extra, id_column="eval_id")

    async def get_run(self, eval_id: str, run_id: str, action: str = "read") -> tuple[EvalRun, str | None]:
        missing = NotFoundError("Eval run", run_id, param="run_id")
        row = await fetch_for(
            self.sql,
            RUNS,
            RESOURCE,
            action,
            [Where.eq("id", run_id), Where.eq("eval_id", eval_id)],
            missing,
            eval_id,
            id_column="eval_id",
        )
        return EvalRun.model_validate(row["run"]), row["job_id"]

    async def save_run(self, run: EvalRun, *, only_if: tuple[str, ...] = ()) -> bool:
        """Write the run back; with ``only_if``, only while its stored status is one of those."""
        values = {"status": run.status, "run": run.model_dump(mode="json", by_alias=True)}
        extra: list[Any] = [Where.eq("id", run.id)]
        if only_if:
            extra.append(Where.in_("status", list(only_if)))
        return bool(await self.sql.update(RUNS, values, self._run_where("update", run.eval_id, *extra)))

    async def page_runs(
        self, eval_id: str, *, after: str | None, limit: int, order: Literal["asc", "desc"], status: str | None
    ) -> tuple[list[EvalRun], bool]:
        extra = [Where.eq("status", status)] if status else []
        page = await self.sql.fetch_page(
            RUNS,
            self._run_where("read", eval_id, *extra),
            order_column="created_ns",
            order=order,
            limit=limit,
            after_id=after,
        )
        return [EvalRun.model_validate(r["run"]) for r in page.rows], page.has_more

    async def runs_of(self, eval_id: str) -> list[tuple[EvalRun, str | None]]:
        rows = await self.sql.fetch_all(RUNS, self._run_where("read", eval_id))
        return [(EvalRun.model_validate(r["run"]), r["job_id"]) for r in rows]

    async def delete_run(self, eval_id: str, run_id: str) -> None:
        await self.sql.delete(ITEMS, self._run_where("delete", eval_id, Where.eq("run_id", run_id)))
        await self.sql.delete(RUNS, self._run_where("delete", eval_id, Where.eq("id", run_id)))

    # ---- output items -------------------------------------------------------------------------------

    async def record_item(self, item: OutputItem) -> None:
        """Commit one finished row; recording the same row again keeps the first record."""
        key = f"{item.run_id}#{item.datasource_item_id}"
        if await self.sql.fetch_one(ITEMS, {"key": key}) is not None:
            return
        await self.sql.upsert(
            ITEMS,
            {
                "key": key,
                "id": item.id,
                "eval_id": item.eval_id,
                "run_id": item.run_id,
                "row_index": item.datasource_item_id,
                "status": item.status,
                "item": item.model_dump(mode="json"),
                **_owner(),
            },
            ["key"],
        )

    async def items_of(self, eval_id: str, run_id: str) -> list[OutputItem]:
        rows = await self.sql.fetch_all(
            ITEMS, self._run_where("read", eval_id, Where.eq("run_id", run_id)), order_by=[("row_index", "asc")]
        )
        return [OutputItem.model_validate(r["item"]) for r in rows]

    async def done_rows(self, eval_id: str, run_id: str) -> set[int]:
        rows = await self.sql.fetch_all(ITEMS, self._run_where("read", eval_id, Where.eq("run_id", run_id)))
        return {int(r["row_index"]) for r in rows}

    async def page_items(
        self,
        eval_id: str,
        run_id: str,
        *,
        after: str | None,
        limit: int,
        order: Literal["asc", "desc"],
        status: str | None,
    ) -> tuple[list[OutputItem], bool]:
        extra: list[Any] = [Where.eq("run_id", run_id)]
        if status:
            extra.append(Where.eq("status", status))
        page = await self.sql.fetch_page(
            ITEMS,
            self._run_where("read", eval_id, *extra),
            order_column="row_index",
            order=order,
            limit=limit,
            after_id=after,
        )
        return [OutputItem.model_validate(r["item"]) for r in page.rows], page.has_more

    async def get_item(self, eval_id: str, run_id: str, item_id: str) -> OutputItem:
        missing = NotFoundError("Output item", item_id, param="output_item_id")
        row = await fetch_for(
            self.sql,
            ITEMS,
            RESOURCE,
            "read",
            [Where.eq("id", item_id), Where.eq("run_id", run_id), Where.eq("eval_id", eval_id)],
            missing,
            eval_id,
            id_column="eval_id",
        )
        return OutputItem.model_validate(row["item"])
