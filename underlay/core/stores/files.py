"""File metadata in the SQL store (table ``files``), owned by the principal who uploaded each file.

The bytes live in a files provider under ``storage_key``; a row is only written once its bytes are
stored, so a listed file is always a whole file. Expired rows stay until the sweep removes them, but
every read here treats them as gone. Reads, updates and deletes filter by the access policy (by
default: the owner) inside the query.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Literal

from underlay.api.errors import NotFoundError
from underlay.api.files import FileObject, FilePurpose
from underlay.core.access import fetch_for, require_create, rows_where
from underlay.core.identity import current_principal
from underlay.core.storage.sqlstore import OWNER_COLUMNS, ColumnDefinition, ColumnType, Filter, SqlStore, Where

TABLE = "files"


@dataclass(frozen=True, slots=True)
class StoredFile:
    """One ``files`` row, read once here so routers use attributes, not string keys.

    It carries what the API object does not: where the bytes live (``provider_id``, ``storage_key``).
    """

    id: str
    bytes: int
    created_at: int
    expires_at: int | None
    filename: str
    purpose: FilePurpose
    status: Literal["uploaded", "processed", "error"]
    status_details: str | None
    provider_id: str
    storage_key: str

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> StoredFile:
        return cls(
            id=row["id"],
            bytes=row["bytes"],
            created_at=row["created_at"],
            expires_at=row["expires_at"],
            filename=row["filename"],
            purpose=row["purpose"],
            status=row["status"] or "processed",
            status_details=row["status_details"],
            provider_id=row["provider_id"],
            storage_key=row["storage_key"],
        )

    def to_object(self) -> FileObject:
        """The API's view of the file (without the storage fields)."""
        return FileObject(
            id=self.id,
            bytes=self.bytes,
            created_at=self.created_at,
            expires_at=self.expires_at,
            filename=self.filename,
            purpose=self.purpose,
            status=self.status,
            status_details=self.status_details,
        )


def _file_not_found(file_id: str) -> NotFoundError:
    return NotFoundError("File", file_id, param="file_id")


class FileStore:
    def __init__(self, sqlstore: SqlStore) -> None:
        self.sql = sqlstore

    async def initialize(self) -> None:
        await self.sql.create_table(
            TABLE,
            {
                "id": ColumnDefinition(type=ColumnType.STRING, primary_key=True, nullable=False),
                "created_at": ColumnType.INTEGER,
                # Ordering key: files created in the same second still list in upload order.
                "created_ns": ColumnDefinition(type=ColumnType.INTEGER, index=True, nullable=False),
                "expires_at": ColumnDefinition(type=ColumnType.INTEGER, index=True),
                "bytes": ColumnType.INTEGER,
                "filename": ColumnType.TEXT,
                "purpose": ColumnDefinition(type=ColumnType.STRING, index=True),
                "status": ColumnType.STRING,
                "status_details": ColumnType.TEXT,
                "provider_id": ColumnType.STRING,
                "storage_key": ColumnType.STRING,
                **OWNER_COLUMNS,
            },
        )

    @staticmethod
    def _live(now: int | None = None) -> Filter:
        now = int(time.time()) if now is None else now
        return Where.any_of(Where.is_null("expires_at"), Where.gt("expires_at", now))

    def _allowed_live(self, *extra: Filter, action: str = "read") -> list[Filter]:
        return rows_where("file", action, self._live(), *extra)

    async def insert(self, file: FileObject, *, provider_id: str, storage_key: str, created_ns: int) -> None:
        require_create("file", file.id)
        principal = current_principal()
        await self.sql.insert(
            TABLE,
            {
                "id": file.id,
                "created_at": file.created_at,
                "created_ns": created_ns,
                "expires_at": file.expires_at,
                "bytes": file.bytes,
                "filename": file.filename,
                "purpose": file.purpose,
                "status": file.status,
                "status_details": file.status_details,
                "provider_id": provider_id,
                "storage_key": storage_key,
                "owner_principal": principal.id,
                "owner_attributes": principal.attributes,
            },
        )

    async def get_stored(self, file_id: str, action: str = "read") -> StoredFile:
        """The live file ``file_id`` (with storage fields) the caller may ``action``; 404 if hidden, else 403."""
        match = [self._live(), Where.eq("id", file_id)]
        row = await fetch_for(self.sql, TABLE, "file", action, match, _file_not_found(file_id), file_id)
        return StoredFile.from_row(row)

    async def get(self, file_id: str) -> FileObject:
        return (await self.get_stored(file_id)).to_object()

    async def list_files(
        self, *, after: str | None, limit: int, order: Literal["asc", "desc"], purpose: str | None
    ) -> dict[str, Any]:
        where = self._allowed_live(*([Where.eq("purpose", purpose)] if purpose else []))
        rows, has_more = await self.sql.fetch_page(
            TABLE, where, order_column="created_ns", order=order, limit=limit, after_id=after
        )
        data = [StoredFile.from_row(r).to_object() for r in rows]
        return {
            "object": "list",
            "data": data,
            "first_id": data[0].id if data else None,
            "last_id": data[-1].id if data else None,
            "has_more": has_more,
        }

    async def delete_owned(self, file_id: str) -> bool:
        """Delete the row if the caller may; whether it existed (a concurrent delete may have won)."""
        deleted = await self.sql.delete(TABLE, rows_where("file", "delete", Where.eq("id", file_id)))
        return bool(deleted)

    async def expired(self, now: int, limit: int = 500) -> list[StoredFile]:
        """Files past their expiry, of every owner (for the sweep, which runs as no principal)."""
        rows = await self.sql.fetch_all(
            TABLE,
            [Where.is_not_null("expires_at"), Where.lte("expires_at", now)],
            order_by=[("expires_at", "asc")],
            limit=limit,
        )
        return [StoredFile.from_row(r) for r in rows]

    async def delete_expired(self, file_id: str, now: int) -> bool:
        deleted = await self.sql.delete(
            TABLE, [Where.eq("id", file_id), Where.is_not_null("expires_at"), Where.lte("expires_at", now)]
        )
        return bool(deleted)
