"""The KV store contract, run unchanged against SQLite, PostgreSQL and Redis.

Every behaviour a caller relies on is asserted here once, so a backend that drifts fails the same
test the others pass.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.integration.storage.conftest import REDIS_URL, KVFactory, delete_redis_prefix, unique
from underlay.core.storage.kvstore import KVStore, StorageUnavailableError, kvstore_from_config

REPO_ROOT = Path(__file__).resolve().parents[3]


async def test_round_trip_overwrite_delete(kv: KVStore) -> None:
    assert await kv.get("missing") is None
    await kv.set("a", "1")
    assert await kv.get("a") == "1"
    await kv.set("a", "2")
    assert await kv.get("a") == "2"
    await kv.delete("a")
    assert await kv.get("a") is None
    await kv.delete("a")  # deleting a missing key is fine
    await kv.delete("never-existed")


async def test_values_are_opaque_strings(kv: KVStore) -> None:
    value = json.dumps({"name": "ünïcode ✓ 🚀", "nested": [1, 2, {"x": None}]})
    await kv.set("models:json", value)
    assert await kv.get("models:json") == value
    await kv.set("empty", "")
    assert await kv.get("empty") == ""
    odd_key = "spaces and/slashes:ü:🚀"
    await kv.set(odd_key, "ok")
    assert await kv.get(odd_key) == "ok"


async def test_prefix_ranges_are_sorted_and_bounded(kv: KVStore) -> None:
    for key in ["models:b", "models:a", "models:c/1", "model", "modelsX", "other:a", "models;"]:
        await kv.set(key, f"v-{key}")
    assert await kv.keys_in_range("models:", "models:\xff") == ["models:a", "models:b", "models:c/1"]
    assert await kv.values_in_range("models:", "models:\xff") == ["v-models:a", "v-models:b", "v-models:c/1"]
    assert await kv.keys_in_range("nothing:", "nothing:\xff") == []
    assert await kv.values_in_range("z", "a") == []


async def test_range_bounds_are_inclusive(kv: KVStore) -> None:
    for key in ["a", "b", "c", "c0", "d"]:
        await kv.set(key, key.upper())
    assert await kv.keys_in_range("b", "c") == ["b", "c"]
    assert await kv.values_in_range("a", "c0") == ["A", "B", "C", "C0"]
    assert await kv.keys_in_range("a", "a") == ["a"]


async def test_ranges_follow_code_point_order(kv: KVStore) -> None:
    """Not the database locale's order: 'B' < 'a' < 'é' < '🚀' (PostgreSQL needs the C collation)."""
    for key in ["k:🚀", "k:é", "k:a", "k:B", "k:_"]:
        await kv.set(key, "x")
    assert await kv.keys_in_range("k:", "k:\U0010ffff") == ["k:B", "k:_", "k:a", "k:é", "k:🚀"]
    assert await kv.keys_in_range("k:", "k:\xff") == ["k:B", "k:_", "k:a", "k:é"]


async def test_namespaces_are_isolated(kv_factory: KVFactory) -> None:
    first = await kv_factory("one")
    second = await kv_factory("two")
    await first.set("models:x", "from-one")
    await second.set("models:x", "from-two")
    await second.set("models:y", "only-two")
    assert await first.get("models:x") == "from-one"
    assert await second.get("models:x") == "from-two"
    assert await first.get("models:y") is None
    assert await first.keys_in_range("models:", "models:\xff") == ["models:x"]
    assert await second.keys_in_range("models:", "models:\xff") == ["models:x", "models:y"]
    assert await first.increment("count") == 1
    assert await second.increment("count") == 1
    await first.delete("models:x")
    assert await second.get("models:x") == "from-two"
    # A second instance on the same namespace sees the same data (another worker, another replica).
    first_again = await kv_factory("one")
    assert await first_again.get("count") == "1"
    assert await first_again.get("models:x") is None


async def test_expiry(kv: KVStore) -> None:
    await kv.set("exp:gone", "v", expires_in=1)
    await kv.set("exp:kept", "v")
    await kv.set("exp:long", "v", expires_in=60)
    await kv.set("exp:cleared", "v", expires_in=1)
    await kv.set("exp:cleared", "v2")  # set replaces the expiry too
    assert await kv.increment("exp:counter", expires_in=1) == 1
    assert await kv.get("exp:gone") == "v"
    assert await kv.keys_in_range("exp:", "exp:\xff") == [
        "exp:cleared",
        "exp:counter",
        "exp:gone",
        "exp:kept",
        "exp:long",
    ]
    await asyncio.sleep(0.6)
    # Later increments do not push the expiry back: it is set only when the key is created.
    assert await kv.increment("exp:counter", expires_in=60) == 2
    await asyncio.sleep(0.7)
    assert await kv.get("exp:gone") is None
    assert await kv.get("exp:counter") is None
    assert await kv.get("exp:cleared") == "v2"
    assert await kv.keys_in_range("exp:", "exp:\xff") == ["exp:cleared", "exp:kept", "exp:long"]
    assert await kv.values_in_range("exp:", "exp:\xff") == ["v2", "v", "v"]
    # An expired counter starts again from zero, with the new expiry.
    assert await kv.increment("exp:counter", expires_in=60) == 1
    # An expired key can be set again and is listed again.
    await kv.set("exp:gone", "back")
    assert await kv.keys_in_range("exp:gone", "exp:gone") == ["exp:gone"]


async def test_increment_basics(kv: KVStore) -> None:
    assert await kv.increment("n") == 1
    assert await kv.increment("n", 5) == 6
    assert await kv.increment("n", -10) == -4
    assert await kv.get("n") == "-4"
    await kv.set("m", "41")
    assert await kv.increment("m") == 42
    assert await kv.increment("big", 2**40) == 2**40
    await kv.set("text", "not a number")
    with pytest.raises(ValueError):
        await kv.increment("text")
    assert await kv.get("text") == "not a number"
    assert await kv.keys_in_range("", "\xff") == ["big", "m", "n", "text"]


async def test_increment_is_atomic_under_concurrency(kv: KVStore) -> None:
    results = await asyncio.gather(*[kv.increment("hits") for _ in range(50)])
    assert sorted(results) == list(range(1, 51))
    assert await kv.get("hits") == "50"


async def test_increment_is_atomic_across_store_instances(kv_factory: KVFactory) -> None:
    first = await kv_factory("shared")
    second = await kv_factory("shared")
    results = await asyncio.gather(
        *[store.increment("hits", expires_in=60) for _ in range(25) for store in (first, second)]
    )
    assert sorted(results) == list(range(1, 51))
    assert await first.get("hits") == "50"
    assert await second.get("hits") == "50"


async def test_sqlite_increment_is_atomic_across_processes(tmp_path: Path) -> None:
    """Two worker processes hammering one SQLite file: no lost updates, no 'database is locked'."""
    path = tmp_path / "nested" / "dir" / "kv.db"  # parents are created
    config = {"type": "sqlite", "path": str(path), "namespace": "procs"}
    script = (
        "import asyncio, json, sys\n"
        "from underlay.core.storage.kvstore import kvstore_from_config\n"
        "async def main():\n"
        "    store = await kvstore_from_config(json.loads(sys.argv[1]))\n"
        "    results = await asyncio.gather(*[store.increment('hits') for _ in range(40)])\n"
        "    for i in range(20):\n"
        "        await store.set(f'w:{sys.argv[2]}:{i:02d}', 'x')\n"
        "    await store.close()\n"
        "    print(json.dumps(results))\n"
        "asyncio.run(main())\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            script,
            json.dumps(config),
            str(n),
            cwd=REPO_ROOT,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        for n in range(3)
    ]
    outputs = await asyncio.gather(*[proc.communicate() for proc in procs])
    for proc, (_, stderr) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, stderr.decode()
    results = sorted(n for stdout, _ in outputs for n in json.loads(stdout))
    assert results == list(range(1, 121))
    store = await kvstore_from_config(config)
    try:
        assert await store.get("hits") == "120"
        assert len(await store.keys_in_range("w:", "w:\xff")) == 60
    finally:
        await store.close()


async def test_unreachable_backends_fail_clearly(tmp_path: Path) -> None:
    with pytest.raises(StorageUnavailableError, match="127.0.0.1:1"):
        await kvstore_from_config({"type": "postgres", "port": 1, "db": "x"})
    with pytest.raises(StorageUnavailableError, match="redis://127.0.0.1:1"):
        await kvstore_from_config({"type": "redis", "url": "redis://127.0.0.1:1/0"})
    with pytest.raises(StorageUnavailableError, match="SQLite"):
        await kvstore_from_config({"type": "sqlite", "path": str(tmp_path)})  # a directory, not a file


async def test_redis_indexes_forget_expired_keys(redis_client: Any) -> None:
    """Redis expires values itself; the range index must not keep growing with their names."""
    namespace = unique("kvtest")
    store = await kvstore_from_config({"type": "redis", "url": REDIS_URL, "namespace": namespace})
    try:
        for n in range(20):
            await store.increment(f"quota:{n}", expires_in=0.2)
        await store.set("keep", "v")
        assert await redis_client.zcard(f"{namespace}:\x00keys") == 21
        await asyncio.sleep(0.3)
        await store.set("trigger", "v")  # every write drops a batch of expired index entries
        assert await redis_client.zcard(f"{namespace}:\x00keys") == 2
        assert await redis_client.zcard(f"{namespace}:\x00expiry") == 0
        assert await store.keys_in_range("", "\xff") == ["keep", "trigger"]
    finally:
        await store.close()
        await delete_redis_prefix(redis_client, namespace)
