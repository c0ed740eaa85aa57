"""Where quota counters live: the run's KV store, or a Redis server shared by every replica.

Both backends offer one operation, "add these amounts to these counters and tell me the totals", each
counter getting an expiry when it is created (its window's end plus a margin), so old windows clean up
after themselves. Each increment is atomic in the backend; the Redis backend also sends the whole batch
as one script, so a request costs one round trip.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from underlay.core.storage.kvstore import KVStore

log = logging.getLogger("underlay.quotas")


@dataclass(frozen=True)
class Increment:
    key: str
    amount: int
    expires_in: float


class QuotaBackendError(Exception):
    """The counters cannot be read or written; ``where`` names the backend for the client's message."""

    def __init__(self, where: str, detail: str) -> None:
        super().__init__(f"{where}: {detail}")
        self.where = where
        self.detail = detail


class Counters(Protocol):
    where: str
    """The backend in words, e.g. ``Redis at redis://127.0.0.1:6379/0 (server.quotas.url)``."""

    async def add(self, increments: Sequence[Increment]) -> list[int]:
        """Apply every increment atomically per counter; the new totals, in order."""
        ...

    async def close(self) -> None: ...


class KVCounters:
    """Counters in the run's KV store (SQLite, PostgreSQL or Redis), through its atomic ``increment``."""

    def __init__(self, kvstore: KVStore) -> None:
        self._kv = kvstore
        self.where = "the KV store (storage.kvstore)"

    async def add(self, increments: Sequence[Increment]) -> list[int]:
        try:
            values = await asyncio.gather(*(self._kv.increment(i.key, i.amount, i.expires_in) for i in increments))
        except Exception as exc:
            raise QuotaBackendError(self.where, f"{type(exc).__name__}: {exc}") from exc
        return list(values)

    async def close(self) -> None:
        """The stack owns the KV store and closes it."""


# KEYS: the counters. ARGV: amount1, ttl_ms1, amount2, ttl_ms2, ... A counter without an expiry was
# just created by INCRBY, so it gets its window's expiry; a live one keeps its own.
_LUA_ADD = """
local out = {}
for i, key in ipairs(KEYS) do
    local value = redis.call('INCRBY', key, ARGV[2 * i - 1])
    if redis.call('PTTL', key) == -1 then
        redis.call('PEXPIRE', key, ARGV[2 * i])
    end
    out[i] = value
end
return out
"""


class RedisCounters:
    """Counters in Redis, one Lua script per batch. The client connects on first use, in the serving loop."""

    def __init__(self, url: str) -> None:
        from underlay.core.storage.kv_redis import redacted_url

        self._url = url
        self.where = f"Redis at {redacted_url(url)} (server.quotas.url)"
        self._client: Any = None
        self._script: Any = None

    def _connect(self) -> None:
        try:
            import redis.asyncio as aioredis
            from redis.asyncio.retry import Retry
            from redis.backoff import NoBackoff
        except ImportError as exc:
            raise QuotaBackendError(
                self.where, "the 'redis' package is missing: pip install 'underlay[redis]'"
            ) from exc
        # Short timeouts and a single quick retry (a pooled connection may be stale after a Redis restart):
        # an unreachable Redis should cost a request milliseconds, not the client library's backoff.
        self._client = aioredis.Redis.from_url(
            self._url,
            decode_responses=True,
            socket_connect_timeout=2,
            socket_timeout=2,
            retry=Retry(NoBackoff(), 1),
        )
        self._script = self._client.register_script(_LUA_ADD)

    async def add(self, increments: Sequence[Increment]) -> list[int]:
        if self._client is None:
            self._connect()
        args: list[int] = []
        for item in increments:
            args += [item.amount, max(1, int(item.expires_in * 1000))]
        try:
            values = await self._script(keys=[i.key for i in increments], args=args)
        except Exception as exc:  # connection refused, timeouts, auth, OOM...: all mean "no counters"
            raise QuotaBackendError(self.where, f"{type(exc).__name__}: {exc}") from exc
        return [int(v) for v in values]

    async def ping(self) -> None:
        if self._client is None:
            self._connect()
        try:
            await self._client.ping()
        except Exception as exc:
            raise QuotaBackendError(self.where, f"{type(exc).__name__}: {exc}") from exc

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None
