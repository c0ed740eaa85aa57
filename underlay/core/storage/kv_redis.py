"""Redis backend of the KV store.

Values are plain Redis strings with native TTLs, so expiry costs nothing and ``increment`` is Redis'
own ``INCRBY``. Redis has no ordered key scan, so range reads are served from a per-namespace sorted set
holding every key name with score 0, which ``ZRANGEBYLEX`` walks in byte order (the same order as code
points for UTF-8 keys).

Why Lua scripts: the key and its index entry must change together. If "write the value" and "add to
the index" were two commands, a reader could clean an index entry for a key that was just re-created
between them and lose it from listings forever. Each script runs atomically in Redis.

Expired keys vanish from Redis on their own but their index entries do not; a second sorted set
scored by expiry time lets every write drop a bounded batch of entries whose keys have expired, and
range reads drop any entry whose key is gone.

Layout for namespace ``ns``: values at ``ns:<key>``, the key index at ``ns:\\x00keys`` and the expiry
index at ``ns:\\x00expiry`` (without a namespace: ``<key>``, ``\\x00keys``, ``\\x00expiry``). The NUL byte
keeps the index names out of reach of portable keys (PostgreSQL cannot store NUL in text).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit, urlunsplit

from underlay.core.storage.kvstore import RedisKVStoreConfig, StorageUnavailableError, missing_driver

# Shared by the writing scripts: KEYS[2] = key index, KEYS[3] = expiry index, ARGV[1] = key prefix.
# Drops up to 100 index entries whose keys have expired. Time comes from the Redis server.
_LUA_PRELUDE = """
local function now_ms()
    local t = redis.call('TIME')
    return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function purge(now)
    local due = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now, 'LIMIT', 0, 100)
    for _, member in ipairs(due) do
        redis.call('ZREM', KEYS[3], member)
        if redis.call('EXISTS', ARGV[1] .. member) == 0 then
            redis.call('ZREM', KEYS[2], member)
        end
    end
end
"""

# KEYS: value, key index, expiry index. ARGV: prefix, member, value, ttl in ms (0 = none).
_LUA_SET = (
    _LUA_PRELUDE
    + """
local now = now_ms()
local ttl = tonumber(ARGV[4])
if ttl > 0 then
    redis.call('SET', KEYS[1], ARGV[3], 'PX', ttl)
    redis.call('ZADD', KEYS[3], now + ttl, ARGV[2])
else
    redis.call('SET', KEYS[1], ARGV[3])
    redis.call('ZREM', KEYS[3], ARGV[2])
end
redis.call('ZADD', KEYS[2], 0, ARGV[2])
purge(now)
return 1
"""
)

# KEYS: value, key index, expiry index. ARGV: prefix, member, amount, ttl in ms (0 = none).
_LUA_INCREMENT = (
    _LUA_PRELUDE
    + """
local now = now_ms()
local created = redis.call('EXISTS', KEYS[1]) == 0
local value = redis.call('INCRBY', KEYS[1], ARGV[3])
if created then
    local ttl = tonumber(ARGV[4])
    if ttl > 0 then
        redis.call('PEXPIRE', KEYS[1], ttl)
        redis.call('ZADD', KEYS[3], now + ttl, ARGV[2])
    else
        redis.call('ZREM', KEYS[3], ARGV[2])
    end
    redis.call('ZADD', KEYS[2], 0, ARGV[2])
end
purge(now)
return value
"""
)

# KEYS: value, key index, expiry index. ARGV: member.
_LUA_DELETE = """
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
return 1
"""

# KEYS: key index. ARGV: prefix, start, end. Returns key1, value1, key2, value2, ...
_LUA_RANGE = """
local members = redis.call('ZRANGEBYLEX', KEYS[1], '[' .. ARGV[2], '[' .. ARGV[3])
local out = {}
for _, member in ipairs(members) do
    local value = redis.call('GET', ARGV[1] .. member)
    if value then
        out[#out + 1] = member
        out[#out + 1] = value
    else
        redis.call('ZREM', KEYS[1], member)
    end
end
return out
"""


def redacted_url(url: str) -> str:
    """``url`` with any password replaced, fit for error messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


def _ttl_ms(expires_in: float | None) -> int:
    """Redis wants whole milliseconds and rejects 0; a tiny positive expiry still expires promptly."""
    if expires_in is None:
        return 0
    return max(1, int(expires_in * 1000))


class RedisKVStore:
    """KV store in Redis, isolated by key prefix."""

    def __init__(self, client: Any, namespace: str) -> None:
        self._client = client
        self._prefix = f"{namespace}:" if namespace else ""
        self._key_index = f"{self._prefix}\x00keys"
        self._expiry_index = f"{self._prefix}\x00expiry"
        self._set_script = client.register_script(_LUA_SET)
        self._increment_script = client.register_script(_LUA_INCREMENT)
        self._delete_script = client.register_script(_LUA_DELETE)
        self._range_script = client.register_script(_LUA_RANGE)

    @classmethod
    async def open(cls, config: RedisKVStoreConfig) -> RedisKVStore:
        """Connect and ping, so an unreachable server fails the start rather than the first request."""
        try:
            import redis.asyncio as aioredis
            from redis.exceptions import RedisError
        except ImportError as exc:
            raise missing_driver("redis", "redis") from exc
        client = aioredis.Redis.from_url(config.url, decode_responses=True, socket_connect_timeout=10)
        try:
            await client.ping()
        except (RedisError, OSError) as exc:
            await client.aclose()
            raise StorageUnavailableError(
                f"Cannot connect to Redis at {redacted_url(config.url)} for the KV store: {exc}"
            ) from exc
        return cls(client, config.namespace or "")

    def _keys(self, key: str) -> list[str]:
        return [self._prefix + key, self._key_index, self._expiry_index]

    async def set(self, key: str, value: str, expires_in: float | None = None) -> None:
        await self._set_script(keys=self._keys(key), args=[self._prefix, key, value, _ttl_ms(expires_in)])

    async def get(self, key: str) -> str | None:
        value: str | None = await self._client.get(self._prefix + key)
        return value

    async def delete(self, key: str) -> None:
        await self._delete_script(keys=self._keys(key), args=[key])

    async def _range(self, start_key: str, end_key: str) -> list[tuple[str, str]]:
        flat: list[str] = await self._range_script(keys=[self._key_index], args=[self._prefix, start_key, end_key])
        return list(zip(flat[::2], flat[1::2], strict=True))

    async def values_in_range(self, start_key: str, end_key: str) -> list[str]:
        return [value for _, value in await self._range(start_key, end_key)]

    async def keys_in_range(self, start_key: str, end_key: str) -> list[str]:
        return [key for key, _ in await self._range(start_key, end_key)]

    async def increment(self, key: str, amount: int = 1, expires_in: float | None = None) -> int:
        from redis.exceptions import ResponseError

        try:
            value = await self._increment_script(
                keys=self._keys(key), args=[self._prefix, key, amount, _ttl_ms(expires_in)]
            )
        except ResponseError as exc:
            if "not an integer" in str(exc):
                raise ValueError(f"Cannot increment key {key!r}: its value is not a 64-bit integer.") from exc
            raise
        return int(value)

    async def close(self) -> None:
        await self._client.aclose()
