"""PostgreSQL backend of the KV store: shared state for several workers and replicas.

Each operation is one statement, so atomicity comes from PostgreSQL itself: ``increment`` is a single
``INSERT ... ON CONFLICT DO UPDATE`` which takes the row lock, decides between "start a new counter"
and "add to the live one" and returns the result, with no window for another replica to slip in.

Expiry uses the database clock (``now()``), not each replica's, so replicas with drifting clocks still
agree on when a quota window ends. Keys are stored with the "C" collation so that range reads follow
code-point order (what a prefix scan such as ``("models:", "models:\\xff")`` relies on) whatever the
database's locale is.
"""

from __future__ import annotations

import time
from typing import Any

from underlay.core.storage.kvstore import (
    PostgresKVStoreConfig,
    StorageUnavailableError,
    checked_identifier,
    missing_driver,
)
from underlay.core.storage.pg_database import ensure_database

_NOW = "extract(epoch from now())::double precision"
_LIVE = f"(expires_at IS NULL OR expires_at > {_NOW})"
_PURGE_INTERVAL_S = 60.0


def _seconds(expires_in: float | None) -> float | None:
    """asyncpg's float8 codec wants a float; callers naturally pass ints too."""
    return None if expires_in is None else float(expires_in)


class PostgresKVStore:
    """KV store in one PostgreSQL table keyed by ``(namespace, key)``."""

    def __init__(self, pool: Any, table_name: str, namespace: str) -> None:
        self._pool = pool
        self._namespace = namespace
        self._last_purge = 0.0
        table = f'"{checked_identifier(table_name)}"'
        self._schema = f"""
            CREATE TABLE IF NOT EXISTS {table} (
                namespace TEXT COLLATE "C" NOT NULL,
                key TEXT COLLATE "C" NOT NULL,
                value TEXT NOT NULL,
                expires_at DOUBLE PRECISION,
                PRIMARY KEY (namespace, key)
            )"""
        self._sql_set = f"""
            INSERT INTO {table} (namespace, key, value, expires_at)
            VALUES ($1, $2, $3, CASE WHEN $4::double precision IS NULL THEN NULL ELSE {_NOW} + $4 END)
            ON CONFLICT (namespace, key) DO UPDATE SET value = EXCLUDED.value, expires_at = EXCLUDED.expires_at
        """
        self._sql_get = f"SELECT value FROM {table} WHERE namespace = $1 AND key = $2 AND {_LIVE}"
        self._sql_delete = f"DELETE FROM {table} WHERE namespace = $1 AND key = $2"
        self._sql_range = (
            f"SELECT key, value FROM {table} WHERE namespace = $1 AND key >= $2 AND key <= $3 AND {_LIVE} ORDER BY key"
        )
        expired = f"kv.expires_at IS NOT NULL AND kv.expires_at <= {_NOW}"
        self._sql_increment = f"""
            INSERT INTO {table} AS kv (namespace, key, value, expires_at)
            VALUES ($1, $2, $3::bigint::text,
                    CASE WHEN $4::double precision IS NULL THEN NULL ELSE {_NOW} + $4 END)
            ON CONFLICT (namespace, key) DO UPDATE SET
                value = CASE WHEN {expired} THEN EXCLUDED.value
                             ELSE (kv.value::bigint + $3::bigint)::text END,
                expires_at = CASE WHEN {expired} THEN EXCLUDED.expires_at ELSE kv.expires_at END
            RETURNING value
        """
        self._sql_purge = f"DELETE FROM {table} WHERE expires_at IS NOT NULL AND expires_at <= {_NOW}"
        self._lock_name = f"underlay:kvstore:{table_name}"

    @classmethod
    async def open(cls, config: PostgresKVStoreConfig) -> PostgresKVStore:
        """Connect a pool and create the table (under an advisory lock: replicas may start together)."""
        try:
            import asyncpg
        except ImportError as exc:
            raise missing_driver("asyncpg", "postgres") from exc
        where = f"{config.user}@{config.host}:{config.port}/{config.db}"
        if config.create_database:
            await ensure_database(config.host, config.port, config.user, config.password, config.db)
        try:
            pool = await asyncpg.create_pool(
                host=config.host,
                port=config.port,
                user=config.user,
                password=config.password,
                database=config.db,
                min_size=1,
                max_size=10,
                timeout=10,
            )
        except asyncpg.InvalidCatalogNameError as exc:
            raise StorageUnavailableError(
                f"PostgreSQL database '{config.db}' does not exist on {config.host}:{config.port}; "
                f"create it (createdb -h {config.host} -p {config.port} -U {config.user} {config.db}) "
                "or set 'db' in the kvstore config."
            ) from exc
        except (TimeoutError, OSError, asyncpg.PostgresError) as exc:
            raise StorageUnavailableError(f"Cannot connect to PostgreSQL at {where} for the KV store: {exc}") from exc
        store = cls(pool, config.table_name, config.namespace or "")
        try:
            async with pool.acquire() as conn, conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", store._lock_name)
                await conn.execute(store._schema)
        except BaseException:
            await pool.close()
            raise
        return store

    async def set(self, key: str, value: str, expires_in: float | None = None) -> None:
        await self._pool.execute(self._sql_set, self._namespace, key, value, _seconds(expires_in))
        now = time.monotonic()
        if now - self._last_purge >= _PURGE_INTERVAL_S:
            # Expired rows are invisible already; this only keeps the table from growing without bound.
            self._last_purge = now
            await self._pool.execute(self._sql_purge)

    async def get(self, key: str) -> str | None:
        value: str | None = await self._pool.fetchval(self._sql_get, self._namespace, key)
        return value

    async def delete(self, key: str) -> None:
        await self._pool.execute(self._sql_delete, self._namespace, key)

    async def _range(self, start_key: str, end_key: str) -> list[tuple[str, str]]:
        rows = await self._pool.fetch(self._sql_range, self._namespace, start_key, end_key)
        return [(row["key"], row["value"]) for row in rows]

    async def values_in_range(self, start_key: str, end_key: str) -> list[str]:
        return [value for _, value in await self._range(start_key, end_key)]

    async def keys_in_range(self, start_key: str, end_key: str) -> list[str]:
        return [key for key, _ in await self._range(start_key, end_key)]

    async def increment(self, key: str, amount: int = 1, expires_in: float | None = None) -> int:
        import asyncpg

        try:
            value = await self._pool.fetchval(self._sql_increment, self._namespace, key, amount, _seconds(expires_in))
        except (asyncpg.InvalidTextRepresentationError, asyncpg.NumericValueOutOfRangeError) as exc:
            raise ValueError(f"Cannot increment key {key!r}: its value is not a 64-bit integer.") from exc
        return int(value)

    async def close(self) -> None:
        if not self._pool.is_closing():
            await self._pool.close()
