"""The SQL store contract, run unchanged against SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.integration.storage.conftest import SqlFactory
from underlay.api.errors import ConflictError, InvalidRequestError
from underlay.core.storage.kvstore import StorageUnavailableError
from underlay.core.storage.sqlstore import (
    OWNER_COLUMNS,
    ColumnDefinition,
    ColumnType,
    SqlStore,
    Where,
    sqlstore_from_config,
)

REPO_ROOT = Path(__file__).resolve().parents[3]

ITEM_COLUMNS: dict[str, ColumnType | ColumnDefinition] = {
    "id": ColumnDefinition(type=ColumnType.STRING, primary_key=True, nullable=False),
    "created_at": ColumnDefinition(type=ColumnType.TIMESTAMP, index=True, nullable=False),
    "name": ColumnType.STRING,
    "body": ColumnType.TEXT,
    "size": ColumnType.INTEGER,
    "score": ColumnType.FLOAT,
    "done": ColumnType.BOOLEAN,
    "data": ColumnType.JSON,
    **OWNER_COLUMNS,
}


def item(n: int, **overrides: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "id": f"item-{n:03d}",
        "created_at": 1_700_000_000 + n,
        "name": f"name-{n}",
        "size": n,
        "done": False,
        "owner_principal": "alice",
    }
    row.update(overrides)
    return row


async def test_insert_fetch_update_delete(sql: SqlStore, table: str) -> None:
    await sql.create_table(table, ITEM_COLUMNS)
    for n in range(5):
        await sql.insert(table, item(n))
    assert await sql.fetch_one(table, {"id": "missing"}) is None
    row = await sql.fetch_one(table, {"id": "item-002"})
    assert row is not None
    assert row["name"] == "name-2" and row["size"] == 2 and row["done"] is False
    assert row["body"] is None and row["data"] is None  # omitted columns are NULL

    everything = await sql.fetch_all(table, order_by=[("size", "desc")])
    assert [r["size"] for r in everything] == [4, 3, 2, 1, 0]
    assert [r["size"] for r in await sql.fetch_all(table, order_by=[("size", "asc")], limit=2)] == [0, 1]
    assert await sql.count(table) == 5
    assert await sql.count(table, {"owner_principal": "bob"}) == 0

    assert await sql.update(table, {"done": True, "name": "renamed"}, {"id": "item-001"}) == 1
    assert await sql.update(table, {"done": True}, {"id": "missing"}) == 0
    updated = await sql.fetch_one(table, {"id": "item-001"})
    assert updated is not None and updated["done"] is True and updated["name"] == "renamed"
    assert await sql.update(table, {"score": 0.5}, {"owner_principal": "alice"}) == 5

    assert await sql.delete(table, {"id": "item-003"}) == 1
    assert await sql.delete(table, {"id": "item-003"}) == 0
    assert await sql.delete(table, [Where.gte("size", 3)]) == 1
    assert sorted(r["id"] for r in await sql.fetch_all(table)) == ["item-000", "item-001", "item-002"]


async def test_duplicate_insert_is_a_conflict(sql: SqlStore, table: str) -> None:
    await sql.create_table(table, ITEM_COLUMNS)
    await sql.insert(table, item(1))
    with pytest.raises(ConflictError):
        await sql.insert(table, item(1, name="again"))
    row = await sql.fetch_one(table, {"id": "item-001"})
    assert row is not None and row["name"] == "name-1"


async def test_insert_many_writes_every_row(sql: SqlStore, table: str) -> None:
    await sql.create_table(table, ITEM_COLUMNS)
    await sql.insert_many(table, [])
    assert await sql.count(table) == 0
    shared = {"teams": ["ml"]}  # one object on many rows, as a batch from one caller has
    rows = [
        item(n, data={"n": n, "tags": ["a", str(n)]} if n != 3 else None, done=n % 2 == 0, score=n / 4)
        | {"owner_attributes": shared}
        for n in range(250)
    ]
    await sql.insert_many(table, rows)
    assert await sql.count(table, [Where.is_null("data")]) == 1
    assert await sql.count(table, [Where.json_overlaps("owner_attributes", "teams", ["ml"])]) == 250
    assert await sql.count(table) == 250
    stored = await sql.fetch_all(table, order_by=[("size", "asc")])
    assert [r["id"] for r in stored] == [r["id"] for r in rows]
    assert stored[7]["data"] == {"n": 7, "tags": ["a", "7"]} and stored[7]["done"] is False
    assert stored[8]["done"] is True and stored[9]["score"] == 2.25 and stored[9]["body"] is None


async def test_insert_many_with_a_duplicate_key_inserts_nothing(sql: SqlStore, table: str) -> None:
    await sql.create_table(table, ITEM_COLUMNS)
    await sql.insert(table, item(5, name="original"))
    batch = [item(n, name="batch") for n in range(10)]  # item 5 is already there
    with pytest.raises(ConflictError):
        await sql.insert_many(table, batch)
    assert [r["name"] for r in await sql.fetch_all(table)] == ["original"]
    with pytest.raises(ConflictError):  # a duplicate inside the batch itself
        await sql.insert_many(table, [item(20), item(21), item(20)])
    assert await sql.count(table) == 1


async def test_insert_many_refuses_rows_with_different_columns(sql: SqlStore, table: str) -> None:
    await sql.create_table(table, ITEM_COLUMNS)
    with pytest.raises(ValueError, match="same columns"):
        await sql.insert_many(table, [item(1), {**item(2), "body": "extra"}])
    with pytest.raises(ValueError, match="Unknown column"):
        await sql.insert_many(table, [{**item(3), "nope": 1}])
    assert await sql.count(table) == 0


async def test_upsert(sql: SqlStore, table: str) -> None:
    columns = {
        "id": ColumnDefinition(type=ColumnType.STRING, primary_key=True),
        "slug": ColumnDefinition(type=ColumnType.STRING, unique=True),
        "version": ColumnType.INTEGER,
        "data": ColumnType.JSON,
    }
    await sql.create_table(table, columns)
    await sql.upsert(table, {"id": "a", "slug": "s-a", "version": 1, "data": {"v": 1}}, ["id"])
    await sql.upsert(table, {"id": "a", "slug": "s-a", "version": 2, "data": {"v": 2}}, ["id"])
    assert await sql.fetch_all(table) == [{"id": "a", "slug": "s-a", "version": 2, "data": {"v": 2}}]
    # Conflict on a unique, non-key column.
    await sql.upsert(table, {"id": "b", "slug": "s-b", "version": 1}, ["slug"])
    await sql.upsert(table, {"id": "b", "slug": "s-b", "version": 7}, ["slug"])
    assert (await sql.fetch_one(table, {"slug": "s-b"}) or {})["version"] == 7
    # Only conflict columns: insert if missing, otherwise leave alone.
    await sql.upsert(table, {"id": "a"}, ["id"])
    await sql.upsert(table, {"id": "c"}, ["id"])
    assert await sql.count(table) == 3
    assert (await sql.fetch_one(table, {"id": "a"}) or {})["version"] == 2
    with pytest.raises(ConflictError):
        await sql.insert(table, {"id": "d", "slug": "s-b"})


async def test_value_round_trips(sql: SqlStore, table: str) -> None:
    await sql.create_table(table, ITEM_COLUMNS)
    data = {
        "text": "ünïcode ✓ 🚀 'quotes' \"double\" \\ back",
        "list": [1, 2.5, None, True, {"deep": ["x"]}],
        "empty": {},
    }
    body = "x" * 100_000
    await sql.insert(
        table,
        item(1, data=data, body=body, size=2**40, score=0.1, done=True, owner_attributes={"teams": ["a", "b"]}),
    )
    await sql.insert(table, item(2, data=[1, "two", {"three": 3}]))
    await sql.insert(table, item(3, data=None))
    one = await sql.fetch_one(table, {"id": "item-001"})
    assert one is not None
    assert one["data"] == data
    assert one["body"] == body
    assert one["size"] == 2**40
    assert one["score"] == pytest.approx(0.1)
    assert one["done"] is True
    assert one["owner_attributes"] == {"teams": ["a", "b"]}
    two = await sql.fetch_one(table, {"id": "item-002"})
    assert two is not None and two["data"] == [1, "two", {"three": 3}]
    # A Python None in a JSON column is SQL NULL, so it can be filtered on.
    assert [r["id"] for r in await sql.fetch_all(table, {"data": None})] == ["item-003"]
    assert await sql.count(table, [Where.is_not_null("data")]) == 2


async def test_where_conditions(sql: SqlStore, table: str) -> None:
    await sql.create_table(table, ITEM_COLUMNS)
    for n in range(6):
        await sql.insert(table, item(n, owner_principal="alice" if n % 2 else "bob", name=None if n == 5 else "x"))

    async def ids(where: Any) -> list[int]:
        return [r["size"] for r in await sql.fetch_all(table, where, order_by=[("size", "asc")])]

    assert await ids([Where.gt("size", 3)]) == [4, 5]
    assert await ids([Where.gte("size", 3), Where.lt("size", 5)]) == [3, 4]
    assert await ids([Where.lte("size", 1)]) == [0, 1]
    assert await ids([Where.eq("owner_principal", "alice")]) == [1, 3, 5]
    assert await ids([Where.ne("owner_principal", "alice")]) == [0, 2, 4]
    assert await ids([Where.ne("name", "x")]) == [5]  # NULL counts as "not equal"
    assert await ids([Where.in_("size", [0, 2, 9])]) == [0, 2]
    assert await ids([Where.in_("size", [])]) == []
    assert await ids([Where.not_in("size", [0, 1, 2, 3])]) == [4, 5]
    assert await ids([Where.is_null("name")]) == [5]
    assert await ids({"name": None}) == [5]
    either = Where.any_of(Where.eq("size", 0), Where.all_of(Where.gt("size", 3), Where.eq("name", "x")))
    assert await ids([either]) == [0, 4]
    with pytest.raises(ValueError, match="Unknown column"):
        await sql.fetch_all(table, {"nope": 1})
    with pytest.raises(ValueError, match="Unknown column"):
        await sql.fetch_all(table, order_by=[("size; DROP TABLE x", "asc")])
    with pytest.raises(ValueError, match="every row"):
        await sql.delete(table, {})
    with pytest.raises(ValueError, match="every row"):
        await sql.update(table, {"size": 1}, None)


async def _all_pages(sql: SqlStore, table: str, order: str, limit: int, where: Any = None) -> list[str]:
    seen: list[str] = []
    after: str | None = None
    while True:
        rows, has_more = await sql.fetch_page(table, where, order=order, limit=limit, after_id=after)  # type: ignore[arg-type]
        seen.extend(r["id"] for r in rows)
        assert len(rows) <= limit
        if not has_more:
            return seen
        assert len(rows) == limit
        after = rows[-1]["id"]


async def test_cursor_pagination_with_ties(sql: SqlStore, table: str) -> None:
    await sql.create_table(table, ITEM_COLUMNS)
    created = [5, 1, 3, 3, 3, 1, 7, 3, 5, 2]  # ties on purpose
    for n, ts in enumerate(created):
        await sql.insert(table, item(n, created_at=ts, owner_principal="alice" if n != 4 else "bob"))
    rows = [(ts, f"item-{n:03d}") for n, ts in enumerate(created)]
    expected_desc = [i for _, i in sorted(rows, reverse=True)]
    expected_asc = [i for _, i in sorted(rows)]

    first, has_more = await sql.fetch_page(table, limit=3)
    assert [r["id"] for r in first] == expected_desc[:3] and has_more
    for limit in (1, 2, 3, 4, 10, 20):
        assert await _all_pages(sql, table, "desc", limit) == expected_desc
        assert await _all_pages(sql, table, "asc", limit) == expected_asc
    # The last page says there is no more; exactly-full final pages included.
    rows_page, has_more = await sql.fetch_page(table, limit=10)
    assert len(rows_page) == 10 and not has_more
    rows_page, has_more = await sql.fetch_page(table, limit=5, after_id=expected_desc[4])
    assert [r["id"] for r in rows_page] == expected_desc[5:] and not has_more
    # Filtering applies to the page and to the cursor.
    alice_desc = [i for i in expected_desc if i != "item-004"]
    assert await _all_pages(sql, table, "desc", 3, {"owner_principal": "alice"}) == alice_desc
    with pytest.raises(InvalidRequestError) as err:
        await sql.fetch_page(table, {"owner_principal": "alice"}, after_id="item-004")
    assert err.value.param == "after"


async def test_unknown_cursor_is_an_invalid_request(sql: SqlStore, table: str) -> None:
    await sql.create_table(table, ITEM_COLUMNS)
    await sql.insert(table, item(1))
    with pytest.raises(InvalidRequestError) as err:
        await sql.fetch_page(table, after_id="no-such-id")
    assert err.value.param == "after"
    assert err.value.status_code == 400
    rows, has_more = await sql.fetch_page(table, after_id="item-001")
    assert rows == [] and not has_more


async def test_create_table_is_idempotent_and_adds_columns(sql_factory: SqlFactory, table: str) -> None:
    sql = await sql_factory()
    v1: dict[str, ColumnType | ColumnDefinition] = {
        "id": ColumnDefinition(type=ColumnType.STRING, primary_key=True),
        "created_at": ColumnType.TIMESTAMP,
    }
    await sql.create_table(table, v1)
    await sql.create_table(table, v1)
    await sql.insert(table, {"id": "old", "created_at": 1})
    stale = await sql_factory()
    assert await stale.count(table) == 1  # this worker now knows the v1 columns only
    v2 = {
        **v1,
        "status": ColumnDefinition(type=ColumnType.STRING, index=True, nullable=False),
        "meta": ColumnType.JSON,
        "flag": ColumnDefinition(type=ColumnType.BOOLEAN, unique=False),
        "ref": ColumnDefinition(type=ColumnType.STRING, unique=True),
    }
    await sql.create_table(table, v2)
    await sql.create_table(table, v2)
    assert await sql.fetch_one(table, {"id": "old"}) == {
        "id": "old",
        "created_at": 1,
        "status": None,
        "meta": None,
        "flag": None,
        "ref": None,
    }
    await sql.insert(table, {"id": "new", "created_at": 2, "status": "ok", "meta": {"a": [1]}, "flag": True})
    await sql.upsert(table, {"id": "x", "ref": "r1", "created_at": 3}, ["ref"])
    with pytest.raises(ConflictError):
        await sql.insert(table, {"id": "y", "ref": "r1", "created_at": 3})

    # A worker that cached the table before the migration picks up the new columns when it uses them.
    await stale.insert(table, {"id": "stale", "created_at": 4, "status": "from-stale", "meta": [1]})
    assert [r["meta"] for r in await stale.fetch_all(table, [Where.eq("status", "from-stale")])] == [[1]]
    # Another worker that never called create_table still reads every column, JSON decoded.
    other = await sql_factory()
    row = await other.fetch_one(table, {"status": "ok"})
    assert row is not None and row["meta"] == {"a": [1]} and row["flag"] is True
    # An older worker declaring only v1 still sees the newer columns (nothing is dropped).
    older = await sql_factory()
    await older.create_table(table, v1)
    assert (await older.fetch_one(table, {"id": "new"}) or {}).get("meta") == {"a": [1]}
    with pytest.raises(ValueError, match="does not exist"):
        await other.fetch_all(table + "_missing")
    with pytest.raises(ValueError, match="primary key"):
        await sql.create_table(table, {**v2, "extra_key": ColumnDefinition(type=ColumnType.STRING, primary_key=True)})
    with pytest.raises(ValueError):
        await sql.create_table("bad name; drop", v1)


async def test_concurrent_create_table_from_several_instances(sql_factory: SqlFactory, table: str) -> None:
    stores = [await sql_factory() for _ in range(3)]
    await asyncio.gather(*[store.create_table(table, ITEM_COLUMNS) for store in stores for _ in range(2)])
    await stores[0].insert(table, item(1))
    assert await stores[2].count(table) == 1


JOB_COLUMNS: dict[str, ColumnType | ColumnDefinition] = {
    "id": ColumnDefinition(type=ColumnType.STRING, primary_key=True),
    "created_at": ColumnType.TIMESTAMP,
    "status": ColumnDefinition(type=ColumnType.STRING, index=True),
    "worker": ColumnType.STRING,
}


async def test_claim_order_and_exhaustion(sql: SqlStore, table: str) -> None:
    await sql.create_table(table, JOB_COLUMNS)
    for n, ts in enumerate([30, 10, 20]):
        await sql.insert(table, {"id": f"job-{n}", "created_at": ts, "status": "queued"})
    await sql.insert(table, {"id": "job-done", "created_at": 0, "status": "succeeded"})
    queued = {"status": "queued"}
    order = [("created_at", "asc")]
    claimed = [await sql.claim(table, queued, {"status": "running", "worker": "w"}, order) for _ in range(4)]
    assert [c["id"] if c else None for c in claimed] == ["job-1", "job-2", "job-0", None]
    assert claimed[0] == {"id": "job-1", "created_at": 10, "status": "running", "worker": "w"}
    assert await sql.count(table, {"status": "running"}) == 3


async def test_concurrent_claimers_never_share_a_row(sql_factory: SqlFactory, table: str) -> None:
    first = await sql_factory()
    second = await sql_factory()
    await first.create_table(table, JOB_COLUMNS)
    jobs = [f"job-{n:02d}" for n in range(30)]
    for n, job in enumerate(jobs):
        await first.insert(table, {"id": job, "created_at": n % 4, "status": "queued"})

    async def worker(store: SqlStore, name: str) -> list[str]:
        mine: list[str] = []
        while True:
            row = await store.claim(
                table, [Where.eq("status", "queued")], {"status": "running", "worker": name}, [("created_at", "asc")]
            )
            if row is None:
                return mine
            assert row["worker"] == name and row["status"] == "running"
            mine.append(row["id"])

    pairs = [(store_n, n) for n in range(6) for store_n in range(2)]
    results = await asyncio.gather(*[worker((first, second)[store_n], f"{store_n}-{n}") for store_n, n in pairs])
    claimed = [job for result in results for job in result]
    assert sorted(claimed) == jobs  # every job exactly once
    rows = await first.fetch_all(table)
    owners = {r["id"]: r["worker"] for r in rows}
    for worker_n, result in enumerate(results):
        name = f"{worker_n % 2}-{worker_n // 2}"
        assert all(owners[job] == name for job in result)


async def test_instances_on_one_database_write_concurrently(sql_factory: SqlFactory, table: str) -> None:
    """Several workers (store instances, each with its own pool) on one database; for SQLite, one file."""
    stores = [await sql_factory() for _ in range(3)]
    await stores[0].create_table(table, ITEM_COLUMNS)

    async def writer(store: SqlStore, offset: int) -> None:
        for n in range(offset, offset + 25):
            await store.insert(table, item(n))
            await store.update(table, {"done": True}, {"id": f"item-{n:03d}"})
            await store.upsert(table, item(n, name="upserted", done=True), ["id"])
            await store.fetch_page(table, limit=5)

    await asyncio.gather(*[writer(store, i * 100) for i, store in enumerate(stores)])
    assert await stores[1].count(table, {"done": True, "name": "upserted"}) == 75


async def test_claims_across_processes(sql_factory: SqlFactory, table: str) -> None:
    """Real worker processes claiming jobs from one database: each job runs exactly once."""
    sql = await sql_factory()
    await sql.create_table(table, JOB_COLUMNS)
    jobs = [f"job-{n:03d}" for n in range(40)]
    for n, job in enumerate(jobs):
        await sql.insert(table, {"id": job, "created_at": n, "status": "queued"})
    config = sql_factory.config  # type: ignore[attr-defined]
    script = (
        "import asyncio, json, sys\n"
        "from underlay.core.storage.sqlstore import sqlstore_from_config\n"
        "async def main():\n"
        "    store = await sqlstore_from_config(json.loads(sys.argv[1]))\n"
        "    table, name = sys.argv[2], sys.argv[3]\n"
        "    async def loop(n):\n"
        "        got = []\n"
        "        while (row := await store.claim(table, {'status': 'queued'},\n"
        "                {'status': 'running', 'worker': f'{name}-{n}'}, [('created_at', 'asc')])):\n"
        "            got.append(row['id'])\n"
        "            await store.update(table, {'status': 'succeeded'}, {'id': row['id']})\n"
        "        return got\n"
        "    results = await asyncio.gather(*[loop(n) for n in range(3)])\n"
        "    await store.close()\n"
        "    print(json.dumps([job for got in results for job in got]))\n"
        "asyncio.run(main())\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            script,
            json.dumps(config),
            table,
            f"p{n}",
            cwd=REPO_ROOT,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        for n in range(2)
    ]
    outputs = await asyncio.gather(*[proc.communicate() for proc in procs])
    for proc, (_, stderr) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, stderr.decode()
    claimed = [job for stdout, _ in outputs for job in json.loads(stdout)]
    assert sorted(claimed) == jobs
    assert await sql.count(table, {"status": "succeeded"}) == 40


async def test_unreachable_or_missing_database_fails_clearly(tmp_path: Path) -> None:
    with pytest.raises(StorageUnavailableError, match="127.0.0.1:1"):
        await sqlstore_from_config({"type": "postgres", "port": 1})
    with pytest.raises(StorageUnavailableError, match="createdb"):
        await sqlstore_from_config({"type": "postgres", "db": "underlay_no_such_database_for_tests"})
    with pytest.raises(StorageUnavailableError, match="SQLite"):
        await sqlstore_from_config({"type": "sqlite", "path": str(tmp_path)})
