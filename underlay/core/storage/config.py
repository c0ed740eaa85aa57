"""The ``storage`` section of a run config: one KV store and one SQL store.

Kept apart from the store modules so that config loading can import every storage config class
without importing a backend, and so the run config has a single name to embed.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from underlay.core.storage.kvstore import (
    KVStoreConfig,
    PostgresKVStoreConfig,
    RedisKVStoreConfig,
    SqliteKVStoreConfig,
    parse_kvstore_config,
)
from underlay.core.storage.sqlstore import (
    PostgresSqlStoreConfig,
    SqliteSqlStoreConfig,
    SqlStoreConfig,
    parse_sqlstore_config,
)

__all__ = [
    "KVStoreConfig",
    "PostgresKVStoreConfig",
    "PostgresSqlStoreConfig",
    "RedisKVStoreConfig",
    "SqlStoreConfig",
    "SqliteKVStoreConfig",
    "SqliteSqlStoreConfig",
    "StorageConfig",
    "parse_kvstore_config",
    "parse_sqlstore_config",
]


class StorageConfig(BaseModel):
    """Where a server keeps its state: ``kvstore`` for the registry and counters, ``sqlstore`` for rows."""

    model_config = ConfigDict(extra="forbid")

    kvstore: KVStoreConfig = Field(description="Registry, routing tables, quota counters.")
    sqlstore: SqlStoreConfig = Field(description="Files metadata, responses, conversations, jobs, ...")

    @classmethod
    def local(cls, directory: str = "~/.underlay") -> StorageConfig:
        """The embedded default: two SQLite files under ``directory``."""
        base = directory.rstrip("/")
        return cls(
            kvstore=SqliteKVStoreConfig(path=f"{base}/kvstore.db"),
            sqlstore=SqliteSqlStoreConfig(path=f"{base}/sqlstore.db"),
        )
