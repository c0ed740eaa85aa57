"""SQLite backend of the KV store: the embedded default, safe for several worker processes on one file.

Why a private single-thread executor instead of aiosqlite: each operation here is a whole transaction
(``increment`` reads, checks and writes), and running the complete transaction as one function on the
connection's own thread means two coroutines can never interleave statements inside one transaction.
The event loop never blocks on SQLite, including while SQLite waits for another process's write lock.

Cross-process safety comes from WAL mode (readers never block the writer), a generous busy timeout (a
writer waits for the lock instead of failing with "database is locked") and ``BEGIN IMMEDIATE`` for
read-then-write transactions (taking the write lock up front avoids the deadlock SQLite would otherwise
resolve by failing one side without waiting).
"""

from __future__ import annotations

import asyncio
import re
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from underlay.core.storage.kvstore import SqliteKVStoreConfig, StorageUnavailableError, sqlite_file_path

T = TypeVar("T")

_TABLE = "underlay_kvstore"
_BUSY_TIMEOUT_S = 30.0
_PURGE_INTERVAL_S = 60.0
_INTEGER = re.compile(r"^[+-]?[0-9]+$")

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS {_TABLE} (
    namespace TEXT NOT NULL,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    expires_at REAL,
    PRIMARY KEY (namespace, key)
) WITHOUT ROWID
"""

_UPSERT = f"""
INSERT INTO {_TABLE} (namespace, key, value, expires_at) VALUES (?, ?, ?, ?)
ON CONFLICT (namespace, key) DO UPDATE SET value = excluded.value, expires_at = excluded.expires_at
"""

_LIVE = "(expires_at IS NULL OR expires_at > ?)"


def parse_counter(value: str, key: str) -> int:
    """The integer in a stored counter; a non-integer value is a caller bug worth a clear message."""
    if not _INTEGER.match(value):
        raise ValueError(f"Cannot increment key {key!r}: its value {value[:40]!r} is not an integer.")
    return int(value)


class SqliteKVStore:
    """KV store in one SQLite file. Keys live in ``(namespace, key)`` so namespaces cannot collide."""

    def __init__(self, path: Path, namespace: str) -> None:
        self._path = path
        self._namespace = namespace
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="underlay-kv-sqlite")
        self._conn: sqlite3.Connection | None = None
        self._last_purge = 0.0
        self._closed = False

    @classmethod
    async def open(cls, config: SqliteKVStoreConfig) -> SqliteKVStore:
        """Open (creating if needed) the database file and the table."""
        try:
            path = sqlite_file_path(config.path)
        except OSError as exc:
            raise StorageUnavailableError(f"Cannot create the SQLite KV store at {config.path}: {exc}") from exc
        store = cls(path, config.namespace or "")
        try:
            await store._run(store._connect)
        except sqlite3.Error as exc:
            await store.close()
            raise StorageUnavailableError(f"Cannot open SQLite KV store at {store._path}: {exc}") from exc
        return store

    async def _run(self, fn: Callable[..., T], *args: object) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, fn, *args)

    # Everything below named _do_* or _connect runs on the executor thread only.

    def _connect(self) -> None:
        # isolation_level=None: no implicit transactions; the methods below say BEGIN when they mean it.
        conn = sqlite3.connect(self._path, timeout=_BUSY_TIMEOUT_S, isolation_level=None)
        conn.execute(f"PRAGMA busy_timeout = {int(_BUSY_TIMEOUT_S * 1000)}")
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute(_SCHEMA)
        self._conn = conn

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise RuntimeError("The SQLite KV store is closed.")
        return self._conn

    def _maybe_purge(self, conn: sqlite3.Connection, now: float) -> None:
        """Drop expired rows now and then, so short-lived keys do not grow the file forever."""
        if now - self._last_purge >= _PURGE_INTERVAL_S:
            self._last_purge = now
            conn.execute(f"DELETE FROM {_TABLE} WHERE expires_at IS NOT NULL AND expires_at <= ?", (now,))

    def _do_set(self, key: str, value: str, expires_in: float | None) -> None:
        conn = self._db()
        now = time.time()
        expires_at = now + expires_in if expires_in is not None else None
        conn.execute(_UPSERT, (self._namespace, key, value, expires_at))
        self._maybe_purge(conn, now)

    def _do_get(self, key: str) -> str | None:
        row = (
            self._db()
            .execute(
                f"SELECT value FROM {_TABLE} WHERE namespace = ? AND key = ? AND {_LIVE}",
                (self._namespace, key, time.time()),
            )
            .fetchone()
        )
        return row[0] if row else None

    def _do_delete(self, key: str) -> None:
        self._db().execute(f"DELETE FROM {_TABLE} WHERE namespace = ? AND key = ?", (self._namespace, key))

    def _do_range(self, start_key: str, end_key: str) -> list[tuple[str, str]]:
        rows = (
            self._db()
            .execute(
                f"SELECT key, value FROM {_TABLE} WHERE namespace = ? AND key >= ? AND key <= ? AND {_LIVE} "
                "ORDER BY key",
                (self._namespace, start_key, end_key, time.time()),
            )
            .fetchall()
        )
        return [(row[0], row[1]) for row in rows]

    def _do_increment(self, key: str, amount: int, expires_in: float | None) -> int:
        conn = self._db()
        conn.execute("BEGIN IMMEDIATE")
        try:
            now = time.time()
            row = conn.execute(
                f"SELECT value, expires_at FROM {_TABLE} WHERE namespace = ? AND key = ?",
                (self._namespace, key),
            ).fetchone()
            if row is None or (row[1] is not None and row[1] <= now):
                new_value = amount
                expires_at = now + expires_in if expires_in is not None else None
            else:
                new_value = parse_counter(row[0], key) + amount
                expires_at = row[1]
            conn.execute(_UPSERT, (self._namespace, key, str(new_value), expires_at))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return new_value

    def _do_close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    # The KVStore protocol.

    async def set(self, key: str, value: str, expires_in: float | None = None) -> None:
        await self._run(self._do_set, key, value, expires_in)

    async def get(self, key: str) -> str | None:
        return await self._run(self._do_get, key)

    async def delete(self, key: str) -> None:
        await self._run(self._do_delete, key)

    async def values_in_range(self, start_key: str, end_key: str) -> list[str]:
        return [value for _, value in await self._run(self._do_range, start_key, end_key)]

    async def keys_in_range(self, start_key: str, end_key: str) -> list[str]:
        return [key for key, _ in await self._run(self._do_range, start_key, end_key)]

    async def increment(self, key: str, amount: int = 1, expires_in: float | None = None) -> int:
        return await self._run(self._do_increment, key, amount, expires_in)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            await self._run(self._do_close)
        finally:
            self._executor.shutdown(wait=False)
