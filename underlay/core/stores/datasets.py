"""Datasets and their rows in the SQL store, owned by the principal who registered them.

Two tables. ``datasets`` holds one row per dataset: the dataset object as the API returns it (JSON), its
provider and row count as columns, and its owner. ``dataset_rows`` holds the rows of datasets whose
provider keeps them here (``inline::localfs``), keyed by dataset and row index, so a page of
``iterrows`` is one indexed range query. Row records carry their dataset's owner, so one policy
predicate (resource type ``dataset``, compiled into every query) governs both tables: a dataset someone
else owns is a 404 whether a client asks for it or for its rows.
"""

from __future__ import annotations

import secrets
import time
from typing import Any, Literal

from underlay.api.datasets import Dataset
from underlay.api.errors import ConflictError, NotFoundError
from underlay.core.access import explain_miss, fetch_for, require_create, rows_where
from underlay.core.identity import current_principal
from underlay.core.storage.sqlstore import OWNER_COLUMNS, ColumnDefinition, ColumnType, SqlStore, Where

DATASETS = "datasets"
ROWS = "dataset_rows"
RESOURCE = "dataset"
INSERT_CHUNK = 500
"""Rows per insert statement: large appends go in pieces so no statement carries megabytes."""


def new_dataset_id() -> str:
    return f"ds_{secrets.token_hex(12)}"


def _missing(dataset_id: str) -> NotFoundError:
    return NotFoundError("Dataset", dataset_id, param="dataset_id")


class DatasetStore:
    """The ``datasets`` table: one owned row per registered dataset."""

    def __init__(self, sql: SqlStore) -> None:
        self.sql = sql

    async def initialize(self) -> None:
        await self.sql.create_table(
            DATASETS,
            {
                "id": ColumnDefinition(type=ColumnType.STRING, primary_key=True, nullable=False),
                "created_at": ColumnType.TIMESTAMP,
                "created_ns": ColumnDefinition(type=ColumnType.INTEGER, index=True),
                "provider_id": ColumnType.STRING,
                "row_count": ColumnType.INTEGER,
                "dataset": ColumnType.JSON,
                **OWNER_COLUMNS,
            },
        )

    async def check_create(self, dataset_id: str) -> None:
        """403 before any work if the policy forbids creating it."""
        require_create(RESOURCE, dataset_id)

    async def create(self, dataset: Dataset) -> None:
        """Insert a new dataset owned by the caller; a taken id is a 409."""
        principal = current_principal()
        require_create(RESOURCE, dataset.identifier)
        try:
            await self.sql.insert(
                DATASETS,
                {
                    "id": dataset.identifier,
                    "created_at": dataset.created_at,
                    "created_ns": time.time_ns(),
                    "provider_id": dataset.provider_id,
                    "row_count": dataset.row_count,
                    "dataset": dataset.model_dump(mode="json"),
                    "owner_principal": principal.id,
                    "owner_attributes": principal.attributes,
                },
            )
        except ConflictError:
            raise ConflictError(
                f"A dataset with id '{dataset.identifier}' already exists; pick another dataset_id or leave it "
                "out to get a generated one.",
                param="dataset_id",
                code="dataset_exists",
            ) from None

    async def exists_any_owner(self, dataset_id: str) -> bool:
        """Whether the id is taken by anyone (checked before a costly load, so a clash fails early)."""
        return await self.sql.fetch_one(DATASETS, [Where.eq("id", dataset_id)]) is not None

    async def get(self, dataset_id: str, action: str = "read") -> Dataset:
        """The dataset; 404 if the caller cannot see it, 403 if it may not ``action`` it."""
        row = await fetch_for(
            self.sql, DATASETS, RESOURCE, action, [Where.eq("id", dataset_id)], _missing(dataset_id), dataset_id
        )
        return _dataset(row)

    async def set_row_count(self, dataset: Dataset, row_count: int) -> Dataset:
        updated = dataset.model_copy(update={"row_count": row_count})
        changed = await self.sql.update(
            DATASETS,
            {"row_count": row_count, "dataset": updated.model_dump(mode="json")},
            rows_where(RESOURCE, "update", Where.eq("id", dataset.identifier)),
        )
        if not changed:
            raise await self._miss(dataset.identifier, "update")
        return updated

    async def page(self, *, after: str | None, limit: int, order: Literal["asc", "desc"]) -> tuple[list[Dataset], bool]:
        page = await self.sql.fetch_page(
            DATASETS, rows_where(RESOURCE, "read"), order_column="created_ns", order=order, limit=limit, after_id=after
        )
        return [_dataset(r) for r in page.rows], page.has_more

    async def delete(self, dataset_id: str) -> None:
        if not await self.sql.delete(DATASETS, rows_where(RESOURCE, "delete", Where.eq("id", dataset_id))):
            raise await self._miss(dataset_id, "delete")

    async def _miss(self, dataset_id: str, action: str) -> Exception:
        match = [Where.eq("id", dataset_id)]
        return await explain_miss(self.sql, DATASETS, RESOURCE, action, match, _missing(dataset_id), dataset_id)


def _dataset(row: dict[str, Any]) -> Dataset:
    dataset = Dataset.model_validate(row["dataset"])
    return dataset.model_copy(update={"row_count": int(row["row_count"] or 0)})


class DatasetRowStore:
    """The ``dataset_rows`` table (the contract's ``RowStore``): rows by dataset and index, owner on each."""

    def __init__(self, sql: SqlStore) -> None:
        self.sql = sql

    async def initialize(self) -> None:
        await self.sql.create_table(
            ROWS,
            {
                "key": ColumnDefinition(type=ColumnType.STRING, primary_key=True, nullable=False),
                "dataset_id": ColumnDefinition(type=ColumnType.STRING, index=True),
                "row_index": ColumnDefinition(type=ColumnType.INTEGER, index=True),
                "row": ColumnType.JSON,
                **OWNER_COLUMNS,
            },
        )

    async def insert(self, dataset_id: str, start_index: int, rows: list[dict[str, Any]]) -> None:
        principal = current_principal()
        owner = {"owner_principal": principal.id, "owner_attributes": principal.attributes}
        records = [
            {
                "key": f"{dataset_id}#{start_index + i}",
                "dataset_id": dataset_id,
                "row_index": start_index + i,
                "row": row,
                **owner,
            }
            for i, row in enumerate(rows)
        ]
        for at in range(0, len(records), INSERT_CHUNK):
            try:
                await self.sql.insert_many(ROWS, records[at : at + INSERT_CHUNK])
            except ConflictError:
                raise ConflictError(
                    f"Rows of dataset '{dataset_id}' were appended by another request at the same time; "
                    "read its row_count and try again.",
                    code="append_conflict",
                ) from None

    async def fetch(self, dataset_id: str, start_index: int, limit: int) -> list[dict[str, Any]]:
        match = rows_where(
            RESOURCE,
            "read",
            Where.eq("dataset_id", dataset_id),
            Where.gte("row_index", start_index),
            Where.lt("row_index", start_index + limit),
            id_column="dataset_id",
        )
        rows = await self.sql.fetch_all(ROWS, match, order_by=[("row_index", "asc")], limit=limit)
        return [r["row"] for r in rows]

    async def delete(self, dataset_id: str) -> None:
        await self.sql.delete(
            ROWS, rows_where(RESOURCE, "delete", Where.eq("dataset_id", dataset_id), id_column="dataset_id")
        )
