"""Two ``underlay run`` processes on one counter store share every budget: the quota is global.

Once over Redis (``backend: redis``, a fresh key prefix deleted afterwards) and once over the run
config's KV store on PostgreSQL (a fresh database for the session). Last, a Redis of the test's own
is stopped and restarted under a running server: 503 while it is gone, counting again once it is back.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import redis

from tests.integration.harness import RunningServer, free_port, start_server
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


class PrivateRedis:
    """A redis-server of this test's own on a free port, so the test may stop and restart it."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            cwd=self.workdir,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with redis.Redis(port=self.port, socket_connect_timeout=0.2) as probe:
                    probe.ping()
                return
            except redis.RedisError:
                time.sleep(0.05)
        raise RuntimeError(f"redis-server did not start on port {self.port}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)
        self.process = None


def test_quotas_come_back_when_redis_does(tmp_path: Path, external_provider_path: Path) -> None:
    if shutil.which("redis-server") is None:
        pytest.fail("redis-server is not on PATH; install it (apt-get install redis-server) to run this test")
    private = PrivateRedis(tmp_path / "redis")
    private.start()
    quotas = {"backend": "redis", "url": private.url, "limits": {"requests_per_day": 100}}
    config = {"apis": ["inference", "models"], "providers": ECHO, "server": {"quotas": quotas}}
    server = start_server(config, tmp_path / "server", extra_pythonpath=[external_provider_path])
    try:
        client = server.openai()
        assert client.models.with_raw_response.list().headers["x-ratelimit-remaining-requests"] == "99"
        private.stop()
        with pytest.raises(openai.InternalServerError) as info:  # 503: the counters are gone
            client.models.list()
        assert info.value.response.status_code == 503
        assert f"Redis at {private.url}" in info.value.response.json()["error"]["message"]
        private.start()  # a fresh, empty Redis on the same port: the pooled connection must recover
        assert client.models.with_raw_response.list().headers["x-ratelimit-remaining-requests"] == "99"
    finally:
        server.stop()
        private.stop()
