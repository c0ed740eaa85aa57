"""Storage config parsing: the discriminated unions, strictness and path handling (no services needed)."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest
import yaml
from pydantic import TypeAdapter, ValidationError

from underlay.core.storage.config import StorageConfig
from underlay.core.storage.kvstore import (
    KVStoreConfig,
    PostgresKVStoreConfig,
    RedisKVStoreConfig,
    SqliteKVStoreConfig,
    StorageUnavailableError,
    checked_identifier,
    kvstore_from_config,
    parse_kvstore_config,
    sqlite_file_path,
)
from underlay.core.storage.sqlstore import (
    ColumnDefinition,
    ColumnType,
    PostgresSqlStoreConfig,
    SqliteSqlStoreConfig,
    SqlStoreConfig,
    Where,
    parse_sqlstore_config,
    sqlstore_from_config,
)


def test_kv_union_picks_backend_by_type() -> None:
    assert isinstance(parse_kvstore_config({"type": "sqlite", "path": "x.db"}), SqliteKVStoreConfig)
    pg = parse_kvstore_config({"type": "postgres", "port": "5433", "namespace": "tenant-a"})
    assert isinstance(pg, PostgresKVStoreConfig)
    assert (pg.host, pg.port, pg.db, pg.user) == ("127.0.0.1", 5433, "underlay", "postgres")
    assert pg.table_name == "underlay_kvstore"
    redis = TypeAdapter(KVStoreConfig).validate_python({"type": "redis"})
    assert isinstance(redis, RedisKVStoreConfig) and redis.url == "redis://127.0.0.1:6379/0"
    assert redis.namespace is None


def test_sql_union_picks_backend_by_type() -> None:
    assert isinstance(parse_sqlstore_config({"type": "sqlite", "path": "x.db"}), SqliteSqlStoreConfig)
    pg = TypeAdapter(SqlStoreConfig).validate_python({"type": "postgres", "db": "app"})
    assert isinstance(pg, PostgresSqlStoreConfig) and pg.db == "app"


@pytest.mark.parametrize(
    "data",
    [
        {"type": "mysql"},
        {"type": "sqlite"},  # path is required
        {"type": "sqlite", "path": "x.db", "pth": "typo"},  # unknown keys are errors, not ignored
        {"type": "postgres", "table_name": "kv; DROP TABLE x"},
    ],
)
def test_bad_kv_configs_are_rejected(data: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        parse_kvstore_config(data)


def test_empty_password_means_none() -> None:
    """``${env.POSTGRES_PASSWORD:=}`` substitutes an empty string."""
    assert PostgresKVStoreConfig(password="").password is None
    assert PostgresSqlStoreConfig(password="").password is None
    assert PostgresSqlStoreConfig(password="s3cret").password == "s3cret"


def test_sqlite_paths_expand_home_and_create_parents(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    resolved = sqlite_file_path("~/state/deep/kv.db")
    assert resolved == tmp_path / "state" / "deep" / "kv.db"
    assert resolved.parent.is_dir()


async def test_factory_accepts_mappings(tmp_path: Path) -> None:
    store = await kvstore_from_config({"type": "sqlite", "path": str(tmp_path / "a" / "kv.db")})
    try:
        await store.set("k", "v")
        assert await store.get("k") == "v"
    finally:
        await store.close()
    await store.close()  # closing twice is harmless


def test_storage_config_section() -> None:
    config = StorageConfig.model_validate(
        {"kvstore": {"type": "redis", "namespace": "n"}, "sqlstore": {"type": "sqlite", "path": "s.db"}}
    )
    assert isinstance(config.kvstore, RedisKVStoreConfig)
    assert isinstance(config.sqlstore, SqliteSqlStoreConfig)
    local = StorageConfig.local("/srv/underlay/")
    assert local.kvstore.path == "/srv/underlay/kvstore.db"  # type: ignore[union-attr]


def test_identifiers_and_column_specs() -> None:
    assert checked_identifier("chat_completions") == "chat_completions"
    for bad in ["1abc", "a-b", "a b", 'a"b', "", "x" * 64]:
        with pytest.raises(ValueError):
            checked_identifier(bad)
    spec = ColumnDefinition(type="json")  # type: ignore[arg-type]
    assert spec.type is ColumnType.JSON and spec.nullable and not spec.primary_key
    assert Where.in_("id", ["a", "b"]).value == ("a", "b")
    group = Where.any_of(Where.eq("a", 1), Where.is_null("b"))
    assert group.combinator == "or" and len(group.conditions) == 2


def test_yaml_examples_in_docs_are_valid() -> None:
    """docs/storage.md promises its YAML examples validate; hold it to that."""
    docs = Path(__file__).resolve().parents[2] / "docs" / "storage.md"
    blocks = re.findall(r"```yaml\n(.*?)```", docs.read_text(), flags=re.DOTALL)
    assert len(blocks) >= 3
    for block in blocks:
        StorageConfig.model_validate(yaml.safe_load(block)["storage"])


def test_redis_urls_are_redacted_in_errors() -> None:
    from underlay.core.storage.kv_redis import redacted_url

    assert redacted_url("redis://:s3cret@cache:6380/1") == "redis://:***@cache:6380/1"
    assert redacted_url("rediss://app:s3cret@cache/0") == "rediss://app:***@cache/0"
    assert redacted_url("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"


async def test_uncreatable_sqlite_paths_fail_clearly(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(StorageUnavailableError, match="Cannot create"):
        await kvstore_from_config({"type": "sqlite", "path": str(blocker / "kv.db")})
    with pytest.raises(StorageUnavailableError, match="Cannot create"):
        await sqlstore_from_config({"type": "sqlite", "path": str(blocker / "sql.db")})


async def test_in_memory_sqlite_stores_take_turns() -> None:
    """':memory:' is one shared connection; concurrent transactions on it must not nest."""
    kv = await kvstore_from_config({"type": "sqlite", "path": ":memory:"})
    sql = await sqlstore_from_config({"type": "sqlite", "path": ":memory:"})
    try:
        assert sorted(await asyncio.gather(*[kv.increment("n") for _ in range(20)])) == list(range(1, 21))
        job_id = ColumnDefinition(type=ColumnType.STRING, primary_key=True)
        await sql.create_table("jobs", {"id": job_id, "s": ColumnType.STRING})
        await asyncio.gather(*[sql.insert("jobs", {"id": f"j{n}", "s": "queued"}) for n in range(10)])
        claimed = await asyncio.gather(*[sql.claim("jobs", {"s": "queued"}, {"s": "running"}) for _ in range(12)])
        assert sorted(row["id"] for row in claimed if row) == sorted(f"j{n}" for n in range(10))
    finally:
        await kv.close()
        await sql.close()
