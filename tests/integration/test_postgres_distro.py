"""The ``postgres`` distribution on its own: how it starts, fails and stops, with several workers.

Real PostgreSQL (127.0.0.1:5432, or UNDERLAY_TEST_POSTGRES_*), fresh uniquely named databases and roles
per test, dropped afterwards. The echo provider stands in for the embedded models so that a server
starts in a second or two.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.integration.harness import free_port, start_server
from tests.integration.storage.conftest import PG_HOST, PG_PASSWORD, PG_PORT, PG_USER
from underlay.core.config import DISTRIBUTIONS_DIR, load_run_config
from underlay.core.storage.kvstore import StorageUnavailableError
from underlay.core.storage.pg_database import ensure_database


async def _admin(query: str, *args: Any) -> list[Any]:
    import asyncpg

    conn = await asyncpg.connect(
        host=PG_HOST, port=PG_PORT, user=PG_USER, password=PG_PASSWORD, database="postgres", timeout=10
    )
    try:
        return list(await conn.fetch(query, *args))
    finally:
        await conn.close()


@pytest.fixture
def database() -> Iterator[str]:
    """A database name nobody has created yet; dropped afterwards if a test created it."""
    name = f"underlay_distro_{uuid.uuid4().hex[:12]}"
    yield name
    asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def _echo_config() -> dict[str, Any]:
    config = yaml.safe_load((DISTRIBUTIONS_DIR / "postgres.yaml").read_text())
    config["providers"]["inference"] = [{"provider_id": "echo", "provider_type": "remote::echo-test", "config": {}}]
    return config


def _env(database: str, tmp_path: Path, **extra: str) -> dict[str, str]:
    return {
        "POSTGRES_DB": database,
        "POSTGRES_HOST": PG_HOST,
        "POSTGRES_PORT": str(PG_PORT),
        "POSTGRES_USER": PG_USER,
        "POSTGRES_PASSWORD": PG_PASSWORD or "",
        "UNDERLAY_STATE_DIR": str(tmp_path / "state"),
        "UNDERLAY_SHUTDOWN_GRACE_SECONDS": "5",
        **extra,
    }


def _run(
    config_path: Path, env: dict[str, str], extra_pythonpath: Path, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, **env, "PYTHONPATH": str(extra_pythonpath)}
    return subprocess.run(
        [sys.executable, "-m", "underlay", "run", str(config_path), "--port", str(free_port())],
        env=full,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_the_shipped_config_shares_state_in_postgres(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("UNDERLAY_WORKERS", raising=False)
    monkeypatch.setenv("POSTGRES_DB", "somewhere")
    config = load_run_config("postgres")
    for store in (config.storage.kvstore, config.storage.sqlstore):
        assert store["type"] == "postgres" and store["db"] == "somewhere" and store["create_database"] is True
    assert config.server.workers == 2 and config.server.host == "127.0.0.1"
    quotas = config.server.quotas
    assert quotas is not None and quotas.backend == "redis" and quotas.url == "redis://127.0.0.1:6379/0"
    vector_io = {p.provider_id: p for p in config.providers["vector_io"]}
    assert "pgvector" not in vector_io and vector_io["sqlite-vec"].config["memory_index"] is False
    monkeypatch.setenv("UNDERLAY_PGVECTOR", "1")
    assert [p.provider_id for p in load_run_config("postgres").providers["vector_io"]] == ["pgvector", "sqlite-vec"]


async def test_concurrent_creates_of_one_database_all_succeed(database: str) -> None:
    await asyncio.gather(*[ensure_database(PG_HOST, PG_PORT, PG_USER, PG_PASSWORD, database) for _ in range(6)])
    assert await _admin("SELECT 1 FROM pg_database WHERE datname = $1", database)
    await ensure_database(PG_HOST, PG_PORT, PG_USER, PG_PASSWORD, database)  # existing: nothing to do


async def test_a_user_who_may_not_create_databases_gets_one_clear_line(database: str) -> None:
    role = f"underlay_nocreate_{uuid.uuid4().hex[:8]}"
    await _admin(f"CREATE ROLE \"{role}\" LOGIN NOCREATEDB PASSWORD 'x'")
    try:
        with pytest.raises(StorageUnavailableError, match=f"may not create it.*createdb.*-O {role} {database}"):
            await ensure_database(PG_HOST, PG_PORT, role, "x", database)
    finally:
        await _admin(f'DROP ROLE IF EXISTS "{role}"')


def test_several_workers_serve_one_port_and_stop_together(
    database: str, tmp_path: Path, external_provider_path: Path
) -> None:
    server = start_server(
        _echo_config(),
        tmp_path,
        env=_env(database, tmp_path, UNDERLAY_WORKERS="3"),
        extra_pythonpath=[external_provider_path],
    )
    try:
        banners = [f"worker {n}/3 on http://127.0.0.1:{server.port}/v1" for n in (1, 2, 3)]
        deadline = time.monotonic() + 60  # health answers once the first worker is up
        while not all(b in server.log() for b in banners) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert all(b in server.log() for b in banners), server.log()
        # Each worker holds its own pool: connections to the database come from three client processes.
        with httpx.Client(base_url=server.v1, timeout=10) as client:
            for _ in range(30):
                assert client.get("/models").status_code == 200
        pids = {
            row["pid"]
            for row in asyncio.run(
                _admin(
                    "SELECT pid FROM pg_stat_activity WHERE datname = $1 AND backend_type = 'client backend'", database
                )
            )
        }
        assert len(pids) >= 3
        started = time.monotonic()
        assert server.stop(signal.SIGTERM, timeout=30) == 0
        assert time.monotonic() - started < 20
        assert "Application shutdown complete" in server.log()
    finally:
        server.stop(signal.SIGKILL)


def test_workers_stop_by_themselves_when_their_parent_is_killed(
    database: str, tmp_path: Path, external_provider_path: Path
) -> None:
    server = start_server(
        _echo_config(),
        tmp_path,
        env=_env(database, tmp_path, UNDERLAY_WORKERS="2"),
        extra_pythonpath=[external_provider_path],
    )
    server.stop(signal.SIGKILL)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            httpx.get(f"{server.v1}/health", timeout=1)
        except httpx.HTTPError:
            break  # nobody accepts on the port any more
        time.sleep(0.2)
    else:
        pytest.fail("worker processes kept serving after their parent was killed")


@pytest.mark.parametrize("workers", ["1", "2"])
def test_an_unreachable_database_stops_the_start_with_one_line(
    workers: str, database: str, tmp_path: Path, external_provider_path: Path
) -> None:
    config_path = tmp_path / "run.yaml"
    config_path.write_text(yaml.safe_dump(_echo_config()))
    env = _env(database, tmp_path, POSTGRES_PORT="1", UNDERLAY_WORKERS=workers)
    result = _run(config_path, env, external_provider_path)
    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors and "127.0.0.1:1" in errors[0], result.stderr
    assert "Traceback" not in result.stderr


def test_a_busy_port_stops_a_multi_worker_start_with_one_line(
    database: str, tmp_path: Path, external_provider_path: Path
) -> None:
    config_path = tmp_path / "run.yaml"
    config_path.write_text(yaml.safe_dump(_echo_config()))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        full = {
            **os.environ,
            **_env(database, tmp_path, UNDERLAY_WORKERS="2"),
            "PYTHONPATH": str(external_provider_path),
        }
        result = subprocess.run(
            [sys.executable, "-m", "underlay", "run", str(config_path), "--port", str(port)],
            env=full,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines() == [
        next(line for line in result.stderr.splitlines() if line.startswith("error:"))
    ]
    assert f"server.port: cannot listen on 127.0.0.1:{port}" in result.stderr
