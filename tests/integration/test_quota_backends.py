"""The quota limiter against every real counter backend: the KV store on SQLite, PostgreSQL and Redis,
and Redis directly. Several limiters on one backend stand for several server processes.

The clock is injected (a moment just after a UTC minute starts) so window arithmetic is exact; counters
still live in the real backends. Redis keys go under a fresh prefix per test and are deleted afterwards.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from tests.integration.harness import free_port
from tests.integration.storage.conftest import (
    REDIS_URL,
    delete_redis_prefix,
    kv_config,
    pg_database,  # noqa: F401  (fixture)
    redis_client,  # noqa: F401  (fixture)
    unique,
)
from underlay.core.quotas.config import QuotaConfig
from underlay.core.quotas.counters import Counters, KVCounters, QuotaBackendError, RedisCounters
from underlay.core.quotas.limiter import QuotaLimiter, Subject
from underlay.core.storage.kvstore import kvstore_from_config

BACKENDS = ["kv-sqlite", "kv-postgres", "kv-redis", "redis"]
START = 60 * 29_000_000 + 0.5  # half a second into a UTC minute (and 12 h 20 min into a UTC day)

ALICE = Subject.principal("alice", {"roles": ["basic"]})
BOB = Subject.principal("bob", {"roles": ["premium"]})


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> dict[str, Any]:
    name: str = request.param
    return {
        "name": name,
        "pg_db": request.getfixturevalue("pg_database") if name == "kv-postgres" else None,
        "redis": request.getfixturevalue("redis_client") if name in ("kv-redis", "redis") else None,
    }


LimiterFactory = Callable[..., Any]


@pytest.fixture
async def make_limiter(backend: dict[str, Any], tmp_path: Path) -> AsyncIterator[LimiterFactory]:
    """``await make(config_dict)``: a limiter with its own connection to this test's shared counters."""
    prefix = unique("quotatest")
    opened: list[Counters] = []
    stores: list[Any] = []
    clock = Clock()

    async def make(config: dict[str, Any]) -> QuotaLimiter:
        quota = QuotaConfig.model_validate({"key_prefix": prefix, **config})
        counters: Counters
        if backend["name"] == "redis":
            counters = RedisCounters(REDIS_URL)
        else:
            kind = backend["name"].removeprefix("kv-")
            store = await kvstore_from_config(kv_config(kind, prefix, tmp_path, backend["pg_db"]))
            stores.append(store)
            counters = KVCounters(store)
        opened.append(counters)
        return QuotaLimiter(quota, counters, clock=clock)

    make.clock = clock  # type: ignore[attr-defined]
    try:
        yield make
    finally:
        for counters in opened:
            await counters.close()
        for store in stores:
            await store.close()
        if backend["redis"] is not None:
            await delete_redis_prefix(backend["redis"], prefix)


def _used(decision: Any, metric: str, window: str) -> int:
    return next(u.used for u in decision.usage if u.metric == metric and u.window.name == window)


async def test_requests_over_the_limit_are_refused_and_cost_nothing(make_limiter: LimiterFactory) -> None:
    limiter = await make_limiter({"limits": {"requests_per_minute": 3, "requests_per_day": 100}})
    remaining = []
    for _ in range(3):
        decision = await limiter.admit(ALICE)
        assert not decision.refused
        remaining.append(dict(decision.headers())[b"x-ratelimit-remaining-requests"])
    assert remaining == [b"2", b"1", b"0"]
    refused = await limiter.admit(ALICE)
    assert [u.setting for u in refused.refused] == ["requests_per_minute"]
    assert refused.error().code == "rate_limit_exceeded"
    assert dict(refused.headers())[b"retry-after"] == b"60"  # 59.5 s left in the minute, rounded up
    assert _used(refused, "requests", "day") == 3  # the refused attempt was taken back out
    assert not (await limiter.admit(BOB)).refused  # budgets are per subject

    make_limiter.clock.now += 60  # type: ignore[attr-defined]
    decision = await limiter.admit(ALICE)
    assert not decision.refused
    assert (_used(decision, "requests", "minute"), _used(decision, "requests", "day")) == (1, 4)


async def test_concurrent_processes_never_admit_more_than_the_limit(make_limiter: LimiterFactory) -> None:
    config = {"limits": {"requests_per_minute": 5}}
    first, second = await make_limiter(config), await make_limiter(config)
    decisions = await asyncio.gather(*(limiter.admit(ALICE) for limiter in [first, second] * 10))
    assert sum(not d.refused for d in decisions) == 5
    again = await second.admit(ALICE)
    assert again.refused and _used(again, "requests", "minute") == 5


async def test_spent_token_budget_refuses_the_next_request(make_limiter: LimiterFactory) -> None:
    limiter = await make_limiter({"limits": {"tokens_per_minute": 100, "tokens_per_day": 1000}})
    assert not (await limiter.admit(ALICE)).refused
    await limiter.charge(ALICE, 60)
    decision = await limiter.admit(ALICE)
    assert not decision.refused
    assert dict(decision.headers())[b"x-ratelimit-remaining-tokens"] == b"40"
    await limiter.charge(ALICE, 60)
    refused = await limiter.admit(ALICE)
    assert [u.setting for u in refused.refused] == ["tokens_per_minute"]
    assert refused.error().code == "tokens_exceeded"
    assert "120 tokens used this minute of 100 allowed" in refused.error().message
    make_limiter.clock.now += 60  # type: ignore[attr-defined]
    decision = await limiter.admit(ALICE)
    assert not decision.refused and _used(decision, "tokens", "day") == 120


async def test_overrides_give_tiers_their_own_limits(make_limiter: LimiterFactory) -> None:
    limiter = await make_limiter(
        {
            "limits": {"requests_per_minute": 1},
            "overrides": [
                {"principals": ["carol"], "limits": {"requests_per_minute": 0}},
                {"attributes": {"roles": ["premium"]}, "limits": {"requests_per_minute": 3}},
            ],
        }
    )
    carol = Subject.principal("carol", {"roles": ["premium"]})  # the first matching override wins
    assert [not (await limiter.admit(BOB)).refused for _ in range(4)] == [True, True, True, False]
    assert [not (await limiter.admit(ALICE)).refused for _ in range(2)] == [True, False]
    assert (await limiter.admit(carol)).refused
    anonymous = Subject.client("10.0.0.7")
    assert [not (await limiter.admit(anonymous)).refused for _ in range(2)] == [True, False]
    assert "client 10.0.0.7" in (await limiter.admit(anonymous)).error().message


async def test_unreachable_redis_is_named() -> None:
    counters = RedisCounters(f"redis://:hunter2@127.0.0.1:{free_port()}/0")
    limiter = QuotaLimiter(QuotaConfig(backend="redis", limits={"requests_per_minute": 1}), counters)
    try:
        with pytest.raises(QuotaBackendError) as info:
            await limiter.admit(ALICE)
    finally:
        await counters.close()
    assert info.value.where.startswith("Redis at redis://:***@127.0.0.1:")
    assert "hunter2" not in str(info.value)
