"""The PostgreSQL (jsonb) filter translation agrees with the reference semantics, on a real server.

The pgvector backend pushes filters down with ``to_postgres_where``; this checks the SQL itself on
generated data and filters (the same generator as the SQLite unit test), including keys that would
break a JSON path and numbers PostgreSQL could mis-cast. PostgreSQL is found as the storage tests
find it (``UNDERLAY_TEST_POSTGRES_*``); an unreachable server fails the test with where it looked.
"""

from __future__ import annotations

import json
import random
import uuid
from typing import Any

import pytest

from tests.integration.storage.conftest import PG_HOST, PG_PASSWORD, PG_PORT, PG_USER
from tests.unit.test_vector_filters import CASES, DOC, random_attributes, random_filter
from underlay.api.vector_io import Filter
from underlay.providers.utils.vector.filters import matches, to_postgres_where


@pytest.fixture
async def pg() -> Any:
    import asyncpg

    try:
        conn = await asyncpg.connect(
            host=PG_HOST, port=PG_PORT, user=PG_USER, password=PG_PASSWORD, database="postgres", timeout=5
        )
    except Exception as exc:  # any failure here means the service is not usable for the test
        pytest.fail(
            f"PostgreSQL is not reachable at {PG_USER}@{PG_HOST}:{PG_PORT} ({type(exc).__name__}: {exc}). "
            "Start it or set UNDERLAY_TEST_POSTGRES_HOST/_PORT/_USER/_PASSWORD.",
            pytrace=False,
        )
    table = f"filters_{uuid.uuid4().hex[:12]}"
    await conn.execute(f"CREATE TEMP TABLE {table} (id INTEGER PRIMARY KEY, attrs JSONB NOT NULL)")
    try:
        yield conn, table
    finally:
        await conn.close()


async def pg_ids(conn: Any, table: str, flt: Filter, first_param: int = 1) -> set[int]:
    where, params = to_postgres_where(flt, column="attrs", first_param=first_param)
    # A leading parameter when first_param > 1, as a caller with its own parameters would have.
    lead = [0] * (first_param - 1)
    guard = "".join(f" AND ${i}::int = 0" for i in range(1, first_param))
    rows = await conn.fetch(f"SELECT id FROM {table} WHERE {where}{guard}", *lead, *params)
    return {row["id"] for row in rows}


async def test_postgres_agrees_on_cases(pg: Any) -> None:
    conn, table = pg
    await conn.execute(f"INSERT INTO {table} VALUES (1, $1::jsonb)", json.dumps(DOC))
    for flt, expected in CASES:
        assert (await pg_ids(conn, table, flt) == {1}) is expected, flt.model_dump()


async def test_postgres_agrees_on_generated_filters(pg: Any) -> None:
    conn, table = pg
    rng = random.Random(1)
    rows = [random_attributes(rng) for _ in range(300)]
    await conn.executemany(
        f"INSERT INTO {table} VALUES ($1, $2::jsonb)", [(i, json.dumps(a)) for i, a in enumerate(rows)]
    )
    rng = random.Random(2)
    for n in range(400):
        flt = random_filter(rng)
        want = {i for i, attrs in enumerate(rows) if matches(flt, attrs)}
        assert await pg_ids(conn, table, flt, first_param=1 + n % 3) == want, flt.model_dump()
