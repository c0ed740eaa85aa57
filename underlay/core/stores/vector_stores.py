"""Rows behind the Vector Stores API: stores, their files, file batches and the chunks of each file.

Every table records its owner and every read, update and delete here filters by the access policy
inside the query (by default ``owner_principal = <caller>``), so one user can never see, page from or
touch another's rows unless the policy shares them. Files, batches and chunks carry their *store's*
owner (not whoever attached them), so one predicate governs a store and everything in it: reading
them needs ``read`` on the store, changing them ``update``. The only exception is
:meth:`VectorStoreRows.attachments_of_file`, used when a File itself is deleted: the file is then gone
for everyone, so every attachment of it goes too.

Why chunks are kept here as well as in the vector backend: the vector-io contract is an index (insert,
delete a document, query), not a store one can read back from. Keeping each file's chunk text and
embeddings in the SQL store is what lets ``/files/{id}/content`` list a file's chunks, and lets an
attribute update rewrite the chunks' filterable attributes in the backend without embedding the file
again. Chunks are stored in *parts* (one row per embedding batch, embeddings packed as base64 float32)
so a large file costs a few dozen writes, not thousands.

Reads return frozen rows (:class:`StoredVectorStore`, :class:`StoredVectorStoreFile`,
:class:`StoredFileBatch`): a column is read by name here once, and the routers and the ingestion
pipeline use typed attributes, so a renamed column fails the type check instead of a request.

``file_counts``, ``status`` and ``usage_bytes`` are never stored: :meth:`file_stats` derives them from
the file rows in one query whenever a store is shown, so they cannot drift from the truth.
"""

from __future__ import annotations

import base64
import sys
import time
from array import array
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from underlay.api.errors import InvalidRequestError, NotFoundError
from underlay.core.access import fetch_for, owner_of, require_create, rows_where
from underlay.core.identity import current_principal
from underlay.core.storage.sqlstore import OWNER_COLUMNS, ColumnDefinition, ColumnType, Page, SqlStore, Where

STORES = "vector_stores"
FILES = "vector_store_files"
BATCHES = "vector_store_file_batches"
CHUNKS = "vector_store_chunks"

FILE_STATUSES = ("in_progress", "completed", "failed", "cancelled")


def _key(*, primary: bool = False, index: bool = False) -> ColumnDefinition:
    return ColumnDefinition(type=ColumnType.STRING, primary_key=primary, nullable=not primary, index=index)


def pack_embedding(values: Sequence[float]) -> str:
    """float32 little-endian, base64: a quarter of the size of JSON numbers."""
    packed = array("f", values)
    if sys.byteorder != "little":
        packed.byteswap()
    return base64.b64encode(packed.tobytes()).decode("ascii")


def unpack_embedding(text: str) -> list[float]:
    packed = array("f")
    packed.frombytes(base64.b64decode(text))
    if sys.byteorder != "little":
        packed.byteswap()
    return packed.tolist()


@dataclass(frozen=True, slots=True)
class StoredVectorStore:
    """One ``vector_stores`` row; what is derived from its files (counts, status) is not here."""

    id: str
    created_at: int
    created_ns: int | None
    name: str
    description: str | None
    metadata: dict[str, Any]
    expires_after: dict[str, Any] | None
    expires_at: int | None
    last_active_at: int | None
    provider_id: str
    embedding_model: str
    embedding_dimension: int
    owner_principal: str | None = None
    owner_attributes: dict[str, Any] | None = None

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> StoredVectorStore:
        return cls(
            id=row["id"],
            created_at=row["created_at"],
            created_ns=row.get("created_ns"),
            name=row.get("name") or "",
            description=row.get("description"),
            metadata=row.get("metadata") or {},
            expires_after=row.get("expires_after"),
            expires_at=row.get("expires_at"),
            last_active_at=row.get("last_active_at"),
            provider_id=row["provider_id"],
            embedding_model=row["embedding_model"],
            embedding_dimension=row["embedding_dimension"],
            owner_principal=row.get("owner_principal"),
            owner_attributes=row.get("owner_attributes"),
        )


@dataclass(frozen=True, slots=True)
class StoredVectorStoreFile:
    """One ``vector_store_files`` row: a file attached to a store, and its ingestion state."""

    vector_store_id: str
    file_id: str
    created_at: int
    created_ns: int | None
    status: str
    last_error: dict[str, Any] | None
    usage_bytes: int
    chunk_count: int
    attributes: dict[str, Any]
    chunking_strategy: dict[str, Any] | None
    filename: str | None
    batch_id: str | None
    job_id: str | None

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> StoredVectorStoreFile:
        return cls(
            vector_store_id=row["vector_store_id"],
            file_id=row["file_id"],
            created_at=row["created_at"],
            created_ns=row.get("created_ns"),
            status=row["status"],
            last_error=row.get("last_error"),
            usage_bytes=int(row.get("usage_bytes") or 0),
            chunk_count=int(row.get("chunk_count") or 0),
            attributes=row.get("attributes") or {},
            chunking_strategy=row.get("chunking_strategy"),
            filename=row.get("filename"),
            batch_id=row.get("batch_id"),
            job_id=row.get("job_id"),
        )


@dataclass(frozen=True, slots=True)
class StoredFileBatch:
    """One ``vector_store_file_batches`` row; its counts and status come from its files."""

    id: str
    vector_store_id: str
    created_at: int
    cancelled: bool
    file_count: int

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> StoredFileBatch:
        return cls(
            id=row["id"],
            vector_store_id=row["vector_store_id"],
            created_at=row["created_at"],
            cancelled=bool(row.get("cancelled")),
            file_count=int(row.get("file_count") or 0),
        )


@dataclass
class FileStats:
    """What the file rows of one store (or batch) add up to."""

    in_progress: int = 0
    completed: int = 0
    failed: int = 0
    cancelled: int = 0
    usage_bytes: int = 0
    not_ready: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return self.in_progress + self.completed + self.failed + self.cancelled

    def counts(self) -> dict[str, int]:
        return {
            "in_progress": self.in_progress,
            "completed": self.completed,
            "failed": self.failed,
            "cancelled": self.cancelled,
            "total": self.total,
        }


class VectorStoreRows:
    def __init__(self, sqlstore: SqlStore) -> None:
        self.sql = sqlstore
        self._ready = False
        self._store_owners: dict[str, dict[str, Any]] = {}  # an owner never changes; rows copy it

    async def initialize(self) -> None:
        if self._ready:
            return
        await self.sql.create_table(
            STORES,
            {
                "id": _key(primary=True),
                "created_at": ColumnType.TIMESTAMP,
                "created_ns": ColumnDefinition(type=ColumnType.INTEGER, index=True),
                "name": ColumnType.STRING,
                "description": ColumnType.TEXT,
                "metadata": ColumnType.JSON,
                "expires_after": ColumnType.JSON,
                "expires_at": ColumnType.TIMESTAMP,
                "last_active_at": ColumnType.TIMESTAMP,
                "provider_id": ColumnType.STRING,
                "embedding_model": ColumnType.STRING,
                "embedding_dimension": ColumnType.INTEGER,
                **OWNER_COLUMNS,
            },
        )
        await self.sql.create_table(
            FILES,
            {
                "vector_store_id": _key(primary=True),
                "file_id": _key(primary=True),
                "created_at": ColumnType.TIMESTAMP,
                "created_ns": ColumnDefinition(type=ColumnType.INTEGER, index=True),
                "status": ColumnDefinition(type=ColumnType.STRING, index=True),
                "last_error": ColumnType.JSON,
                "usage_bytes": ColumnType.INTEGER,
                "chunk_count": ColumnType.INTEGER,
                "attributes": ColumnType.JSON,
                "chunking_strategy": ColumnType.JSON,
                "filename": ColumnType.STRING,
                "batch_id": ColumnDefinition(type=ColumnType.STRING, index=True),
                "job_id": ColumnType.STRING,
                "updated_at": ColumnType.TIMESTAMP,
                **OWNER_COLUMNS,
            },
        )
        await self.sql.create_table(
            BATCHES,
            {
                "id": _key(primary=True),
                "vector_store_id": _key(index=True),
                "created_at": ColumnType.TIMESTAMP,
                "created_ns": ColumnType.INTEGER,
                "cancelled": ColumnType.BOOLEAN,
                "file_count": ColumnType.INTEGER,
                **OWNER_COLUMNS,
            },
        )
        await self.sql.create_table(
            CHUNKS,
            {
                "vector_store_id": _key(primary=True),
                "file_id": _key(primary=True),
                "part": ColumnDefinition(type=ColumnType.INTEGER, primary_key=True, nullable=False),
                "job_id": ColumnType.STRING,
                "chunks": ColumnType.JSON,
                **OWNER_COLUMNS,
            },
        )
        self._ready = True

    @staticmethod
    def _allowed(table: str, action: str = "read", **where: Any) -> list[Any]:
        """``where`` plus the rows the policy lets the caller ``action`` (sub-rows: by their store's id)."""
        id_column = "id" if table == STORES else "vector_store_id"
        match = [Where.eq(k, v) for k, v in where.items()]
        return rows_where("vector_store", action, *match, id_column=id_column)

    async def _owner(self, vector_store_id: str) -> dict[str, Any]:
        """The store's owner columns, which its files, batches and chunks share."""
        owner = self._store_owners.get(vector_store_id)
        if owner is None:
            row = await self.sql.fetch_one(STORES, {"id": vector_store_id})
            if row is None:
                raise NotFoundError("Vector store", vector_store_id, param="vector_store_id")
            owner = self._store_owners[vector_store_id] = owner_of(row)
        return owner

    # ---- vector stores ------------------------------------------------------------------------------

    async def insert_store(self, row: dict[str, Any]) -> None:
        require_create("vector_store", row["id"])
        principal = current_principal()
        await self.sql.insert(
            STORES, {**row, "owner_principal": principal.id, "owner_attributes": principal.attributes}
        )

    async def find_store(self, vector_store_id: str, action: str = "read") -> StoredVectorStore | None:
        row = await self.sql.fetch_one(STORES, self._allowed(STORES, action, id=vector_store_id))
        return None if row is None else StoredVectorStore.from_row(row)

    async def find_store_any_owner(self, vector_store_id: str) -> StoredVectorStore | None:
        """The store whoever owns it (for when a File itself is deleted, see the module docstring)."""
        row = await self.sql.fetch_one(STORES, {"id": vector_store_id})
        return None if row is None else StoredVectorStore.from_row(row)

    async def get_store(self, vector_store_id: str, action: str = "read") -> StoredVectorStore:
        """The store the caller may ``action``: 404 if it cannot read it, 403 if it can only read it."""
        missing = NotFoundError(
            "Vector store", vector_store_id, hint="GET /v1/vector_stores lists yours.", param="vector_store_id"
        )
        match = [Where.eq("id", vector_store_id)]
        row = await fetch_for(self.sql, STORES, "vector_store", action, match, missing, vector_store_id)
        return StoredVectorStore.from_row(row)

    async def page_stores(
        self, *, limit: int, order: Literal["asc", "desc"], after: str | None, before: str | None
    ) -> tuple[list[StoredVectorStore], bool]:
        rows, has_more = await self._page(
            STORES, self._allowed(STORES), limit=limit, order=order, after=after, before=before
        )
        return [StoredVectorStore.from_row(r) for r in rows], has_more

    async def update_store(self, vector_store_id: str, values: dict[str, Any], action: str = "update") -> int:
        """``action="read"`` is for bookkeeping any reader causes (last activity), not for edits."""
        return int(await self.sql.update(STORES, values, self._allowed(STORES, action, id=vector_store_id)))

    async def delete_store(self, vector_store_id: str) -> None:
        """The store and everything under it (the caller clears the backend index)."""
        for table in (CHUNKS, FILES, BATCHES):
            await self.sql.delete(table, self._allowed(table, "delete", vector_store_id=vector_store_id))
        await self.sql.delete(STORES, self._allowed(STORES, "delete", id=vector_store_id))
        self._store_owners.pop(vector_store_id, None)

    # ---- files --------------------------------------------------------------------------------------

    async def upsert_file(self, row: dict[str, Any]) -> None:
        owner = await self._owner(row["vector_store_id"])
        await self.sql.upsert(FILES, {**row, **owner}, ["vector_store_id", "file_id"])

    async def find_file(self, vector_store_id: str, file_id: str) -> StoredVectorStoreFile | None:
        row = await self.sql.fetch_one(FILES, self._allowed(FILES, vector_store_id=vector_store_id, file_id=file_id))
        return None if row is None else StoredVectorStoreFile.from_row(row)

    async def get_file(self, vector_store_id: str, file_id: str) -> StoredVectorStoreFile:
        row = await self.find_file(vector_store_id, file_id)
        if row is None:
            raise NotFoundError(
                "Vector store file",
                file_id,
                hint=f"GET /v1/vector_stores/{vector_store_id}/files lists the files of this store.",
                param="file_id",
            )
        return row

    async def files_of(
        self, vector_store_id: str, *, statuses: Sequence[str] | None = None, batch_id: str | None = None
    ) -> list[StoredVectorStoreFile]:
        where: list[Any] = self._allowed(FILES, vector_store_id=vector_store_id)
        if statuses:
            where.append(Where.in_("status", list(statuses)))
        if batch_id is not None:
            where.append(Where.eq("batch_id", batch_id))
        return [StoredVectorStoreFile.from_row(r) for r in await self.sql.fetch_all(FILES, where)]

    async def page_files(
        self,
        vector_store_id: str,
        *,
        limit: int,
        order: Literal["asc", "desc"],
        after: str | None,
        before: str | None,
        status: str | None = None,
        batch_id: str | None = None,
    ) -> tuple[list[StoredVectorStoreFile], bool]:
        match: dict[str, Any] = {"vector_store_id": vector_store_id}
        if status is not None:
            match["status"] = status
        if batch_id is not None:
            match["batch_id"] = batch_id
        where = self._allowed(FILES, **match)
        rows, has_more = await self._page(
            FILES, where, limit=limit, order=order, after=after, before=before, id_column="file_id"
        )
        return [StoredVectorStoreFile.from_row(r) for r in rows], has_more

    async def update_file(self, vector_store_id: str, file_id: str, values: dict[str, Any], **expect: Any) -> int:
        """Update one attachment; ``expect`` adds equality conditions (e.g. ``job_id``, ``status``)."""
        values = {**values, "updated_at": int(time.time())}
        where = self._allowed(FILES, "update", vector_store_id=vector_store_id, file_id=file_id, **expect)
        return int(await self.sql.update(FILES, values, where))

    async def delete_file(self, vector_store_id: str, file_id: str) -> int:
        """Detach a file: an ``update`` of its store."""
        match = {"vector_store_id": vector_store_id, "file_id": file_id}
        await self.sql.delete(CHUNKS, self._allowed(CHUNKS, "update", **match))
        return int(await self.sql.delete(FILES, self._allowed(FILES, "update", **match)))

    async def files_named(self, vector_store_id: str, file_ids: Sequence[str]) -> dict[str, StoredVectorStoreFile]:
        """The attachments among ``file_ids`` (search results need their filenames), by file id."""
        if not file_ids:
            return {}
        rows = await self.sql.fetch_all(
            FILES,
            [
                *self._allowed(FILES, vector_store_id=vector_store_id),
                Where.in_("file_id", list(dict.fromkeys(file_ids))),
            ],
        )
        return {row["file_id"]: StoredVectorStoreFile.from_row(row) for row in rows}

    async def not_ready(self, vector_store_id: str) -> list[str]:
        """Files whose chunks search must not return: in progress, failed or cancelled."""
        rows = await self.files_of(vector_store_id, statuses=["in_progress", "failed", "cancelled"])
        return [row.file_id for row in rows]

    async def fail_stuck(self, row: StoredVectorStoreFile, message: str) -> None:
        """Mark an attachment found ``in_progress`` with no live job as failed (any owner)."""
        await self.sql.update(
            FILES,
            {
                "status": "failed",
                "last_error": {"code": "server_error", "message": message},
                "updated_at": int(time.time()),
            },
            {
                "vector_store_id": row.vector_store_id,
                "file_id": row.file_id,
                "status": "in_progress",
                "job_id": row.job_id,
            },
        )

    async def attachments_of_file(self, file_id: str) -> list[StoredVectorStoreFile]:
        """Every attachment of a File, whoever owns it (for when the File itself is deleted)."""
        return [StoredVectorStoreFile.from_row(r) for r in await self.sql.fetch_all(FILES, {"file_id": file_id})]

    async def delete_attachment_any_owner(self, vector_store_id: str, file_id: str) -> None:
        await self.sql.delete(CHUNKS, {"vector_store_id": vector_store_id, "file_id": file_id})
        await self.sql.delete(FILES, {"vector_store_id": vector_store_id, "file_id": file_id})

    async def stuck_files(self) -> list[StoredVectorStoreFile]:
        """In-progress attachments of every owner, for the start-up consistency check."""
        return [StoredVectorStoreFile.from_row(r) for r in await self.sql.fetch_all(FILES, {"status": "in_progress"})]

    async def file_stats(self, vector_store_ids: Sequence[str], *, batch_id: str | None = None) -> dict[str, FileStats]:
        """Counts and usage per store, from the file rows themselves, in one query."""
        stats = {vs: FileStats() for vs in vector_store_ids}
        if not vector_store_ids:
            return stats
        where: list[Any] = rows_where(
            "vector_store", "read", Where.in_("vector_store_id", list(vector_store_ids)), id_column="vector_store_id"
        )
        if batch_id is not None:
            where.append(Where.eq("batch_id", batch_id))
        for row in await self.sql.fetch_all(FILES, where):
            entry = stats[row["vector_store_id"]]
            status = row["status"] if row["status"] in FILE_STATUSES else "failed"
            setattr(entry, status, getattr(entry, status) + 1)
            if status == "completed":
                entry.usage_bytes += int(row.get("usage_bytes") or 0)
            else:
                entry.not_ready.append(row["file_id"])
        return stats

    # ---- batches ------------------------------------------------------------------------------------

    async def insert_batch(self, row: dict[str, Any]) -> None:
        await self.sql.insert(BATCHES, {**row, **await self._owner(row["vector_store_id"])})

    async def get_batch(self, vector_store_id: str, batch_id: str, action: str = "read") -> StoredFileBatch:
        """The batch if the caller may ``action`` its store: 404 if it cannot read it, else 403."""
        missing = NotFoundError("Vector store file batch", batch_id, param="batch_id")
        match = [Where.eq("id", batch_id), Where.eq("vector_store_id", vector_store_id)]
        row = await fetch_for(self.sql, BATCHES, "vector_store", action, match, missing, batch_id, "vector_store_id")
        return StoredFileBatch.from_row(row)

    async def update_batch(self, batch_id: str, values: dict[str, Any]) -> None:
        await self.sql.update(
            BATCHES,
            values,
            [Where.eq("id", batch_id), *rows_where("vector_store", "update", id_column="vector_store_id")],
        )

    # ---- chunks -------------------------------------------------------------------------------------

    async def put_chunk_part(
        self, vector_store_id: str, file_id: str, part: int, job_id: str, chunks: list[dict[str, Any]]
    ) -> None:
        await self.sql.upsert(
            CHUNKS,
            {
                "vector_store_id": vector_store_id,
                "file_id": file_id,
                "part": part,
                "job_id": job_id,
                "chunks": chunks,
                **await self._owner(vector_store_id),
            },
            ["vector_store_id", "file_id", "part"],
        )

    async def chunk_parts(self, vector_store_id: str, file_id: str) -> list[list[dict[str, Any]]]:
        rows = await self.sql.fetch_all(
            CHUNKS, self._allowed(CHUNKS, vector_store_id=vector_store_id, file_id=file_id), order_by=[("part", "asc")]
        )
        return [row["chunks"] or [] for row in rows]

    async def delete_chunks(self, vector_store_id: str, file_id: str) -> None:
        await self.sql.delete(CHUNKS, self._allowed(CHUNKS, "update", vector_store_id=vector_store_id, file_id=file_id))

    # ---- paging -------------------------------------------------------------------------------------

    async def _page(
        self,
        table: str,
        where: list[Any],
        *,
        limit: int,
        order: Literal["asc", "desc"],
        after: str | None,
        before: str | None,
        id_column: str = "id",
    ) -> Page:
        """OpenAI's ``after`` and ``before`` cursors over ``created_ns`` (then the id)."""
        if before is not None and after is None:
            reverse: Literal["asc", "desc"] = "asc" if order == "desc" else "desc"
            try:
                rows, has_more = await self.sql.fetch_page(
                    table,
                    where,
                    order_column="created_ns",
                    order=reverse,
                    limit=limit,
                    after_id=before,
                    id_column=id_column,
                )
            except InvalidRequestError:  # the page query names its cursor 'after'; the client sent 'before'
                raise InvalidRequestError(
                    f"No object with id '{before[:100]}' to list before; pass an id from a previous page.",
                    param="before",
                ) from None
            return Page(list(reversed(rows)), has_more)
        return await self.sql.fetch_page(
            table, where, order_column="created_ns", order=order, limit=limit, after_id=after, id_column=id_column
        )
