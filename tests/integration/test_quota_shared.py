"""Two ``underlay run`` processes on one counter store share every budget: the quota is global.

Once over Redis (``backend: redis``, a fresh key prefix deleted afterwards) and once over the run
config's KV store on PostgreSQL (a fresh database for the session).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import redis

from tests.integration.harness import RunningServer, start_server
from tests.integration.storage.conftest import (
    PG_HOST,
    PG_PASSWORD,
    PG_PORT,
    PG_USER,
    REDIS_URL,
    pg_database,  # noqa: F401  (fixture)
    unique,
)

ECHO = {"inference": [{"provider_id": "echo", "provider_type": "remote::echo-test", "config": {}}]}


@pytest.fixture
def redis_prefix() -> Iterator[str]:
    prefix = unique("quotashared")
    yield prefix
    client = redis.Redis.from_url(REDIS_URL)
    keys = list(client.scan_iter(match=f"{prefix}*", count=500))
    if keys:
        client.delete(*keys)
    client.close()


def _pair(config: dict[str, Any], tmp_path: Path, pythonpath: Path) -> list[RunningServer]:
    servers: list[RunningServer] = []
    try:
        for name in ("a", "b"):
            servers.append(start_server(config, tmp_path / name, extra_pythonpath=[pythonpath]))
    except BaseException:
        for server in servers:
            server.stop()
        raise
    return servers


def _exercise(servers: list[RunningServer]) -> None:
    first, second = (server.openai() for server in servers)
    seen = []
    for client in (first, second, first, second):
        raw = client.chat.completions.with_raw_response.create(
            model="echo/echo", messages=[{"role": "user", "content": "hi"}]
        )
        seen.append(raw.headers["x-ratelimit-remaining-requests"])
    assert seen == ["3", "2", "1", "0"]  # each process saw the other's requests
    for client in (first, second):
        with pytest.raises(openai.RateLimitError) as info:
            client.models.list()
        assert info.value.response.headers["x-ratelimit-limit-requests"] == "4"
    assert all(httpx.get(f"{s.v1}/health").status_code == 200 for s in servers)


def test_two_processes_share_a_redis_quota(tmp_path: Path, external_provider_path: Path, redis_prefix: str) -> None:
    quotas = {"backend": "redis", "url": REDIS_URL, "key_prefix": redis_prefix, "limits": {"requests_per_day": 4}}
    config = {"apis": ["inference", "models"], "providers": ECHO, "server": {"quotas": quotas}}
    servers = _pair(config, tmp_path, external_provider_path)
    try:
        _exercise(servers)
    finally:
        for server in servers:
            server.stop()
    client = redis.Redis.from_url(REDIS_URL)
    try:
        assert list(client.scan_iter(match=f"{redis_prefix}:ip:127.0.0.1:requests:day:*"))
    finally:
        client.close()


def test_two_processes_share_a_postgres_kvstore_quota(
    tmp_path: Path, external_provider_path: Path, request: pytest.FixtureRequest
) -> None:
    database = request.getfixturevalue("pg_database")
    kvstore = {
        "type": "postgres",
        "host": PG_HOST,
        "port": PG_PORT,
        "user": PG_USER,
        "password": PG_PASSWORD,
        "db": database,
        "namespace": unique("quota"),
    }
    config = {
        "apis": ["inference", "models"],
        "providers": ECHO,
        "storage": {"kvstore": kvstore},
        "server": {"quotas": {"limits": {"requests_per_day": 4}}},
    }
    servers = _pair(config, tmp_path, external_provider_path)
    try:
        _exercise(servers)
    finally:
        for server in servers:
            server.stop()
