"""The key-value store: the registry's and small state's home, with SQLite, PostgreSQL and Redis backends.

Routing tables, registered resources and quota counters all need the same handful of operations, so the
contract is deliberately small: string keys, string values, optional expiry, inclusive lexicographic
range reads (how callers list everything under a prefix such as ``models:``) and an atomic counter.

Every backend takes a ``namespace``. Keys of one namespace never see keys of another, which is what lets
several tenants, distributions or test runs share one database without stepping on each other.

Backends are imported lazily by :func:`kvstore_from_config` so that a ``local`` install never needs the
PostgreSQL or Redis client libraries.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, field_validator


class StorageError(RuntimeError):
    """A storage backend failed in a way the caller cannot fix by changing the request."""


class StorageUnavailableError(StorageError):
    """A storage backend cannot be reached or opened.

    Raised at construction time (every factory connects once) so that a wrong host, a missing database
    or a missing driver fails the server start with one readable line instead of the first request.
    """


@runtime_checkable
class KVStore(Protocol):
    """What every key-value backend offers. All methods are safe to call concurrently."""

    async def set(self, key: str, value: str, expires_in: float | None = None) -> None:
        """Store ``value`` under ``key``, replacing the value and the expiry of an existing key.

        ``expires_in`` is in seconds; ``None`` means the key never expires.
        """
        ...

    async def get(self, key: str) -> str | None:
        """The value under ``key``, or ``None`` when it is missing or expired."""
        ...

    async def delete(self, key: str) -> None:
        """Remove ``key``; removing a missing key is not an error."""
        ...

    async def values_in_range(self, start_key: str, end_key: str) -> list[str]:
        """Values of live keys with ``start_key <= key <= end_key`` (code-point order), sorted by key."""
        ...

    async def keys_in_range(self, start_key: str, end_key: str) -> list[str]:
        """Live keys with ``start_key <= key <= end_key`` (code-point order), sorted."""
        ...

    async def increment(self, key: str, amount: int = 1, expires_in: float | None = None) -> int:
        """Atomically add ``amount`` to the integer under ``key`` and return the new value.

        A missing or expired key starts at 0, and only then is ``expires_in`` applied: the window of a
        quota counter starts with its first hit and is not pushed back by later ones. Atomic across
        processes and replicas sharing the backend. Raises ``ValueError`` if the stored value is not an
        integer.
        """
        ...

    async def close(self) -> None:
        """Release connections; the store is unusable afterwards."""
        ...


_NAMESPACE_DOC = (
    "Key prefix isolating this store's keys from other users of the same database "
    "(tenants, distributions, test runs). Empty or omitted means no prefix."
)


class SqliteKVStoreConfig(BaseModel):
    """A KV store in one SQLite file; several worker processes may share the file."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["sqlite"] = "sqlite"
    path: str = Field(description="Database file. '~' is expanded and parent directories are created.")
    namespace: str | None = Field(default=None, description=_NAMESPACE_DOC)


class PostgresKVStoreConfig(BaseModel):
    """A KV store in one PostgreSQL table; the choice for several workers and replicas."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["postgres"] = "postgres"
    host: str = "127.0.0.1"
    port: int = 5432
    db: str = "underlay"
    user: str = "postgres"
    password: str | None = None

    @field_validator("password")
    @classmethod
    def _empty_password_is_none(cls, value: str | None) -> str | None:
        """``${env.POSTGRES_PASSWORD:=}`` yields ""; treat it as "no password" (trust or .pgpass auth)."""
        return value or None

    create_database: bool = Field(
        default=False, description="Create 'db' at start when it does not exist (needs the CREATEDB privilege)."
    )
    table_name: str = Field(
        default="underlay_kvstore",
        pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,62}$",
        description="Created on first use. A plain SQL identifier.",
    )
    namespace: str | None = Field(default=None, description=_NAMESPACE_DOC)


class RedisKVStoreConfig(BaseModel):
    """A KV store in Redis; expiry uses Redis' own TTLs."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["redis"] = "redis"
    url: str = Field(default="redis://127.0.0.1:6379/0", description="redis:// or rediss:// URL.")
    namespace: str | None = Field(default=None, description=_NAMESPACE_DOC)


KVStoreConfig = Annotated[
    SqliteKVStoreConfig | PostgresKVStoreConfig | RedisKVStoreConfig,
    Field(discriminator="type"),
]
"""Any KV store config; the ``type`` key picks the backend."""

_KV_CONFIG_ADAPTER: TypeAdapter[SqliteKVStoreConfig | PostgresKVStoreConfig | RedisKVStoreConfig] = TypeAdapter(
    KVStoreConfig
)


def parse_kvstore_config(
    data: Mapping[str, Any],
) -> SqliteKVStoreConfig | PostgresKVStoreConfig | RedisKVStoreConfig:
    """Validate a plain mapping (e.g. from YAML) into the matching KV store config class."""
    return _KV_CONFIG_ADAPTER.validate_python(dict(data))


def sqlite_file_path(path: str) -> Path:
    """Expand ``~`` and create the parent directories, so a fresh machine needs no setup step."""
    resolved = Path(path).expanduser()
    resolved.parent.mkdir(parents=True, exist_ok=True)
    return resolved


_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


def checked_identifier(name: str, what: str = "table name") -> str:
    """Return ``name`` if it is a plain SQL identifier; anything else could smuggle SQL into DDL."""
    if not _IDENTIFIER.match(name):
        raise ValueError(f"Invalid {what} {name!r}: use letters, digits and '_' (not starting with a digit).")
    return name


def missing_driver(package: str, extra: str) -> StorageUnavailableError:
    """The error for a backend whose client library is not installed, naming the install command."""
    return StorageUnavailableError(
        f"The '{package}' package is required for this storage backend: pip install 'underlay[{extra}]'."
    )


async def kvstore_from_config(
    config: SqliteKVStoreConfig | PostgresKVStoreConfig | RedisKVStoreConfig | Mapping[str, Any],
) -> KVStore:
    """Open the KV store described by ``config`` (a config object or a plain mapping).

    The returned store has already connected and created its table, so configuration mistakes surface
    here as :class:`StorageUnavailableError` rather than on the first request.
    """
    if isinstance(config, Mapping):
        config = parse_kvstore_config(config)
    if isinstance(config, SqliteKVStoreConfig):
        from underlay.core.storage.kv_sqlite import SqliteKVStore

        return await SqliteKVStore.open(config)
    if isinstance(config, PostgresKVStoreConfig):
        from underlay.core.storage.kv_postgres import PostgresKVStore

        return await PostgresKVStore.open(config)
    if isinstance(config, RedisKVStoreConfig):
        from underlay.core.storage.kv_redis import RedisKVStore

        return await RedisKVStore.open(config)
    raise TypeError(f"Unsupported KV store config: {type(config).__name__}")
