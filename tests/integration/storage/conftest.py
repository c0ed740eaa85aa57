"""Fixtures that open every storage backend for real: SQLite in tmp_path, PostgreSQL, Redis.

PostgreSQL: one freshly created database per test session (dropped at the end); every test gets its
own KV namespace and its own SQL table names. Redis: every test gets a fresh namespace whose keys are
deleted afterwards. An unreachable service fails the tests that need it with a message saying where
it looked and how to point the tests elsewhere; it never skips, because a skipped backend is an
untested backend.

Override the locations with UNDERLAY_TEST_POSTGRES_HOST / _PORT / _USER / _PASSWORD and
UNDERLAY_TEST_REDIS_URL.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from underlay.core.storage.kvstore import KVStore, kvstore_from_config
from underlay.core.storage.sqlstore import SqlStore, sqlstore_from_config

PG_HOST = os.environ.get("UNDERLAY_TEST_POSTGRES_HOST", "127.0.0.1")
PG_PORT = int(os.environ.get("UNDERLAY_TEST_POSTGRES_PORT", "5432"))
PG_USER = os.environ.get("UNDERLAY_TEST_POSTGRES_USER", "postgres")
PG_PASSWORD = os.environ.get("UNDERLAY_TEST_POSTGRES_PASSWORD") or None
REDIS_URL = os.environ.get("UNDERLAY_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")

KV_BACKENDS = ["sqlite", "postgres", "redis"]
SQL_BACKENDS = ["sqlite", "postgres"]

KVFactory = Callable[..., Awaitable[KVStore]]
SqlFactory = Callable[[], Awaitable[SqlStore]]


def unique(prefix: str) -> str:
    """A name no other test run uses, valid as a SQL identifier and a Redis key prefix."""
    return f"{prefix}_{uuid.uuid4().hex[:16]}"


@pytest.fixture(scope="session")
async def pg_database() -> AsyncIterator[str]:
    """A new, empty PostgreSQL database for this session, dropped (connections and all) at the end."""
    import asyncpg

    name = unique("underlay_test")
    try:
        admin = await asyncpg.connect(
            host=PG_HOST, port=PG_PORT, user=PG_USER, password=PG_PASSWORD, database="postgres", timeout=5
        )
    except Exception as exc:  # any failure here means the service is not usable for the tests
        pytest.fail(
            f"PostgreSQL is not reachable at {PG_USER}@{PG_HOST}:{PG_PORT} ({type(exc).__name__}: {exc}). "
            "Start it or set UNDERLAY_TEST_POSTGRES_HOST/_PORT/_USER/_PASSWORD.",
            pytrace=False,
        )
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        yield name
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


@pytest.fixture(scope="session")
async def redis_client() -> AsyncIterator[Any]:
    """An admin client used to check Redis is up and to delete each test's keys."""
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(REDIS_URL, socket_connect_timeout=5)
    try:
        await client.ping()
    except Exception as exc:  # any failure here means the service is not usable for the tests
        await client.aclose()
        pytest.fail(
            f"Redis is not reachable at {REDIS_URL} ({type(exc).__name__}: {exc}). "
            "Start it or set UNDERLAY_TEST_REDIS_URL.",
            pytrace=False,
        )
    yield client
    await client.aclose()


async def delete_redis_prefix(client: Any, prefix: str) -> None:
    """Remove every key under ``prefix`` (values and index keys alike)."""
    keys = [key async for key in client.scan_iter(match=f"{prefix}*", count=500)]
    if keys:
        await client.delete(*keys)


def kv_config(backend: str, namespace: str, tmp_path: Path, pg_db: str | None) -> dict[str, Any]:
    if backend == "sqlite":
        return {"type": "sqlite", "path": str(tmp_path / "kv" / "kvstore.db"), "namespace": namespace}
    if backend == "postgres":
        return {
            "type": "postgres",
            "host": PG_HOST,
            "port": PG_PORT,
            "user": PG_USER,
            "password": PG_PASSWORD,
            "db": pg_db,
            "namespace": namespace,
        }
    return {"type": "redis", "url": REDIS_URL, "namespace": namespace}


def sql_config(backend: str, tmp_path: Path, pg_db: str | None) -> dict[str, Any]:
    if backend == "sqlite":
        return {"type": "sqlite", "path": str(tmp_path / "sql" / "sqlstore.db")}
    return {
        "type": "postgres",
        "host": PG_HOST,
        "port": PG_PORT,
        "user": PG_USER,
        "password": PG_PASSWORD,
        "db": pg_db,
    }


@dataclass
class Backend:
    """The backend a parametrized test runs against, with the services it needs already checked."""

    name: str
    pg_db: str | None = None
    redis: Any = None


def _backend(request: pytest.FixtureRequest) -> Backend:
    # Only the backend under test pulls in its service, so a down Redis does not fail SQLite tests.
    # (Synchronous on purpose: async fixtures cannot request other async fixtures dynamically.)
    name: str = request.param
    return Backend(
        name=name,
        pg_db=request.getfixturevalue("pg_database") if name == "postgres" else None,
        redis=request.getfixturevalue("redis_client") if name == "redis" else None,
    )


@pytest.fixture(params=KV_BACKENDS)
def kv_backend(request: pytest.FixtureRequest) -> Backend:
    return _backend(request)


@pytest.fixture(params=SQL_BACKENDS)
def sql_backend(request: pytest.FixtureRequest) -> Backend:
    return _backend(request)


@pytest.fixture
async def kv_factory(kv_backend: Backend, tmp_path: Path) -> AsyncIterator[KVFactory]:
    """Opens KV stores of one backend sharing one database; ``await make("b")`` picks a namespace.

    All namespaces of one test hang under one unique prefix, so cleanup is one prefix delete.
    """
    backend, pg_db, redis = kv_backend.name, kv_backend.pg_db, kv_backend.redis
    prefix = unique("kvtest")
    opened: list[KVStore] = []

    async def make(namespace: str = "main") -> KVStore:
        store = await kvstore_from_config(kv_config(backend, f"{prefix}-{namespace}", tmp_path, pg_db))
        opened.append(store)
        return store

    make.backend = backend  # type: ignore[attr-defined]
    try:
        yield make
    finally:
        for store in opened:
            await store.close()
        if redis is not None:
            await delete_redis_prefix(redis, prefix)


@pytest.fixture
async def kv(kv_factory: KVFactory) -> KVStore:
    return await kv_factory()


@pytest.fixture
async def sql_factory(sql_backend: Backend, tmp_path: Path) -> AsyncIterator[SqlFactory]:
    """Opens SQL stores of one backend on one shared database (several instances = several workers)."""
    backend, pg_db = sql_backend.name, sql_backend.pg_db
    opened: list[SqlStore] = []

    async def make() -> SqlStore:
        store = await sqlstore_from_config(sql_config(backend, tmp_path, pg_db))
        opened.append(store)
        return store

    make.backend = backend  # type: ignore[attr-defined]
    make.config = sql_config(backend, tmp_path, pg_db)  # type: ignore[attr-defined]
    try:
        yield make
    finally:
        for store in opened:
            await store.close()


@pytest.fixture
async def sql(sql_factory: SqlFactory) -> SqlStore:
    return await sql_factory()


@pytest.fixture
def table() -> str:
    """A table name of this test's own: PostgreSQL tests share one database per session."""
    return unique("t")
