"""underlay.core.storage.sql_async: the SQL store's asyncio engine (without SQLAlchemy's ORM).

The store's contract tests (tests/integration/storage) run every operation through it on SQLite and
PostgreSQL; these pin what they do not reach: connections go back to the pool when their task is
cancelled, a close runs to its end whatever happens to the task waiting for it, and a synchronous
driver is refused in one line.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from sqlalchemy import URL, text

from underlay.core.storage.sql_async import _finish, create_async_engine


async def test_statements_run_in_transactions_that_commit_or_roll_back(tmp_path: Path) -> None:
    engine = create_async_engine(URL.create("sqlite+aiosqlite", database=str(tmp_path / "t.db")))
    try:
        async with engine.connect() as conn, conn.begin():
            await conn.execute(text("CREATE TABLE t (n INTEGER)"))
            await conn.execute(text("INSERT INTO t VALUES (:n)"), {"n": 1})
        with pytest.raises(RuntimeError):
            async with engine.connect() as conn, conn.begin():
                await conn.execute(text("INSERT INTO t VALUES (2)"))
                raise RuntimeError("roll back")
        async with engine.connect() as conn:
            assert await conn.scalar(text("SELECT group_concat(n) FROM t")) == "1"
            assert await conn.run_sync(lambda sync, table: sync.dialect.has_table(sync, table), "t")
    finally:
        await engine.dispose()


async def test_a_cancelled_task_gives_its_connection_back(tmp_path: Path) -> None:
    engine = create_async_engine(URL.create("sqlite+aiosqlite", database=str(tmp_path / "t.db")))
    inside = asyncio.Event()

    async def hold() -> None:
        async with engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
            inside.set()
            await asyncio.sleep(30)

    task = asyncio.create_task(hold())
    await inside.wait()
    assert engine.sync_engine.pool.checkedout() == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert engine.sync_engine.pool.checkedout() == 0
    await engine.dispose()


async def test_a_close_finishes_before_the_cancellation_is_raised() -> None:
    release, finished = asyncio.Event(), []

    async def close() -> None:
        await release.wait()
        finished.append(True)

    waiter = asyncio.create_task(_finish(close()))
    await asyncio.sleep(0)
    waiter.cancel()  # the task waiting for the close is cancelled while the close is still running
    await asyncio.sleep(0)
    assert not waiter.done() and finished == []
    release.set()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert finished == [True]


def test_a_synchronous_driver_is_refused() -> None:
    with pytest.raises(ValueError, match="not an asyncio driver"):
        create_async_engine(URL.create("sqlite", database=":memory:"))
