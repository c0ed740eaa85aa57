"""Two Underlay servers on one PostgreSQL database behave as one service.

The servers run the shipped ``postgres`` distribution with its inference swapped for the external echo
provider (no model weights, instant answers; ``echo-slow`` streams a word every ``delay_seconds``, which
keeps a job running long enough to stop its server in the middle of it). Server A runs two worker
processes, server B one, on a database the servers create themselves (a fresh, uniquely named one per
run, dropped at the end). Files and the sqlite-vec index live in a directory both servers share, as
replicas share a volume.

What is proven from outside, through the public API and the database's own rows:

- anything created through one server (a file, a registered model, a vector store, a stored response)
  is usable through the other;
- each queued job (file ingestion, background responses) is claimed exactly once while every process
  competes for them: a trigger installed on the job table records every claim with its runner;
- quotas are global: a daily request budget counted in Redis is spent by requests to either server
  (and either of A's workers), and the request past it is refused on whichever server it reaches;
- stopping a server with SIGTERM, or killing it with SIGKILL while its jobs run, loses nothing: the
  other server resumes them once their lease runs out, and every response completes with its answer.
"""

from __future__ import annotations

import asyncio
import signal
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import yaml

from tests.integration.harness import RunningServer, start_server
from tests.integration.storage.conftest import PG_HOST, PG_PASSWORD, PG_PORT, PG_USER, REDIS_URL
from underlay.core.config import DISTRIBUTIONS_DIR

LEASE_SECONDS = 3
SLOW_WORDS = 16  # echo-slow answers in SLOW_WORDS * delay_seconds
DELAY_SECONDS = 0.25

_AUDIT_SQL = """
CREATE TABLE IF NOT EXISTS claim_audit (job_id text, kind text, lease_owner text, at timestamptz DEFAULT now());
CREATE OR REPLACE FUNCTION claim_audit_row() RETURNS trigger AS $$
BEGIN
    IF NEW.status = 'running' AND OLD.status IS DISTINCT FROM 'running' THEN
        INSERT INTO claim_audit (job_id, kind, lease_owner) VALUES (NEW.id, NEW.kind, NEW.lease_owner);
    END IF;
    RETURN NEW;
END $$ LANGUAGE plpgsql;
DROP TRIGGER IF EXISTS claim_audit_trigger ON jobs;
CREATE TRIGGER claim_audit_trigger AFTER UPDATE ON jobs FOR EACH ROW EXECUTE FUNCTION claim_audit_row();
"""


def _sql(database: str, query: str, *args: Any) -> list[dict[str, Any]]:
    """Run one statement on ``database`` (asyncpg, one short-lived connection) and return its rows."""
    import asyncpg

    async def run() -> list[dict[str, Any]]:
        conn = await asyncpg.connect(
            host=PG_HOST, port=PG_PORT, user=PG_USER, password=PG_PASSWORD, database=database, timeout=10
        )
        try:
            if args:
                return [dict(r) for r in await conn.fetch(query, *args)]
            if query.lstrip().upper().startswith("SELECT"):
                return [dict(r) for r in await conn.fetch(query)]
            await conn.execute(query)
            return []
        finally:
            await conn.close()

    return asyncio.run(run())


def _workers_of(pid: int) -> set[int]:
    """The worker processes of a multi-worker server: its children spawned by multiprocessing (not the
    resource tracker multiprocessing also starts)."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid and b"spawn_main" in cmdline:
            found.add(int(entry.name))
    return found


def _runner_pid(lease_owner: str) -> int:
    """Runner ids are ``host:pid:random``."""
    return int(lease_owner.split(":")[-2])


@dataclass
class Cluster:
    database: str
    config: dict[str, Any]
    root: Path
    external: Path
    servers: dict[str, RunningServer] = field(default_factory=dict)
    workers: dict[str, int] = field(default_factory=lambda: {"a": 2, "b": 1})
    quota_prefix: str = ""

    def env(self, name: str) -> dict[str, str]:
        return {
            "POSTGRES_DB": self.database,
            "POSTGRES_HOST": PG_HOST,
            "POSTGRES_PORT": str(PG_PORT),
            "POSTGRES_USER": PG_USER,
            "POSTGRES_PASSWORD": PG_PASSWORD or "",
            "UNDERLAY_STATE_DIR": str(self.root / name / "state"),
            "UNDERLAY_FILES_DIR": str(self.root / "shared" / "files"),
            "UNDERLAY_VECTOR_DB": str(self.root / "shared" / "vector_io.db"),
            "UNDERLAY_WORKERS": str(self.workers[name]),
            "UNDERLAY_JOB_LEASE_SECONDS": str(LEASE_SECONDS),
            "UNDERLAY_SHUTDOWN_GRACE_SECONDS": "5",
        }

    def start(self, name: str) -> RunningServer:
        server = start_server(
            self.config, self.root / name, env=self.env(name), extra_pythonpath=[self.external], timeout=120
        )
        self.servers[name] = server
        return server

    def pids(self, name: str) -> set[int]:
        """The processes that run jobs for server ``name``: its workers, or itself when it has one."""
        server = self.servers[name]
        return _workers_of(server.process.pid) if self.workers[name] > 1 else {server.process.pid}

    def sql(self, query: str, *args: Any) -> list[dict[str, Any]]:
        return _sql(self.database, query, *args)

    def claims(self, kind: str) -> list[dict[str, Any]]:
        return self.sql("SELECT job_id, lease_owner FROM claim_audit WHERE kind = $1 ORDER BY at", kind)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, external_provider_path: Path) -> Iterator[Cluster]:
    database = f"underlay_scaleout_{uuid.uuid4().hex[:12]}"
    config = yaml.safe_load((DISTRIBUTIONS_DIR / "postgres.yaml").read_text())
    config["providers"]["inference"] = [
        {"provider_id": "echo", "provider_type": "remote::echo-test", "config": {"delay_seconds": DELAY_SECONDS}}
    ]
    cluster = Cluster(database, config, tmp_path_factory.mktemp("scale-out"), external_provider_path)
    try:
        # Both at once on a database that does not exist yet: one creates it, both create the tables.
        with ThreadPoolExecutor(2) as pool:
            list(pool.map(cluster.start, ["a", "b"]))
        cluster.sql(_AUDIT_SQL)
        yield cluster
    finally:
        for server in cluster.servers.values():
            server.stop()
        _sql("postgres", f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


def _wait(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


# ---------------------------------------------------------------------------------------------------


def test_both_servers_created_the_database_and_its_tables(cluster: Cluster) -> None:
    assert _sql("postgres", "SELECT datname FROM pg_database WHERE datname = $1", cluster.database)
    tables = {r["tablename"] for r in cluster.sql("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
    assert {"jobs", "underlay_kvstore"} <= tables
    assert len(cluster.pids("a")) == 2  # two workers behind A's port


def test_a_file_uploaded_on_one_server_downloads_on_the_other(cluster: Cluster) -> None:
    a, b = cluster.servers["a"].openai(), cluster.servers["b"].openai()
    uploaded = a.files.create(file=("notes.txt", b"shared across replicas\n"), purpose="assistants")
    assert b.files.retrieve(uploaded.id).filename == "notes.txt"
    assert b.files.content(uploaded.id).read() == b"shared across replicas\n"
    assert uploaded.id in {f.id for f in b.files.list()}
    b.files.delete(uploaded.id)
    with pytest.raises(Exception, match="404|not found|No file"):
        a.files.retrieve(uploaded.id)


def test_a_model_registered_on_one_server_serves_on_the_other(cluster: Cluster) -> None:
    a, b = cluster.servers["a"], cluster.servers["b"]
    created = httpx.post(
        f"{a.v1}/models",
        json={"model_id": "shared-echo", "provider_id": "echo", "provider_model_id": "echo"},
        timeout=10,
    )
    assert created.status_code == 200, created.text
    assert "shared-echo" in {m.id for m in b.openai().models.list()}
    answer = b.openai().chat.completions.create(model="shared-echo", messages=[{"role": "user", "content": "hi"}])
    assert answer.choices[0].message.content == "echo: hi"


def test_a_vector_store_created_on_one_server_is_searchable_on_the_other(cluster: Cluster) -> None:
    a, b = cluster.servers["a"].openai(), cluster.servers["b"].openai()
    text = b"Underlay replicas share one PostgreSQL database.\n"
    file = a.files.create(file=("replicas.txt", text), purpose="assistants")
    store = a.vector_stores.create(name="shared", file_ids=[file.id])
    done = _wait(
        lambda: (s := b.vector_stores.retrieve(store.id)).status == "completed" and s, 60, "ingestion to finish"
    )
    assert done.file_counts.completed == 1
    results = b.vector_stores.search(store.id, query="Underlay replicas share one PostgreSQL database.")
    assert [r.file_id for r in results.data] == [file.id]
    assert "PostgreSQL" in results.data[0].content[0].text


def test_a_response_stored_on_one_server_is_retrieved_and_chained_on_the_other(cluster: Cluster) -> None:
    a, b = cluster.servers["a"].openai(), cluster.servers["b"].openai()
    first = a.responses.create(model="echo/echo", input="first turn")
    assert b.responses.retrieve(first.id).output_text == "echo: first turn"
    second = b.responses.create(model="echo/echo", input="second turn", previous_response_id=first.id)
    assert second.output_text == "echo: second turn"
    assert a.responses.retrieve(second.id).previous_response_id == first.id
    # Chaining needs the previous response's row: an id no server stored is refused.
    with pytest.raises(openai.NotFoundError):
        b.responses.create(model="echo/echo", input="x", previous_response_id="resp_" + uuid.uuid4().hex)


def test_each_ingestion_job_runs_once_with_both_servers_claiming(cluster: Cluster) -> None:
    a, b = cluster.servers["a"].openai(), cluster.servers["b"].openai()
    store = a.vector_stores.create(name="many")
    file_ids = []
    for n in range(24):
        client = a if n % 2 else b
        file = client.files.create(file=(f"doc{n}.txt", f"document number {n}\n".encode()), purpose="assistants")
        client.vector_stores.files.create(vector_store_id=store.id, file_id=file.id)
        file_ids.append(file.id)
    done = _wait(
        lambda: (s := a.vector_stores.retrieve(store.id)).file_counts.in_progress == 0 and s, 90, "24 ingestions"
    )
    assert done.file_counts.completed == 24 and done.file_counts.failed == 0
    references = {f"{store.id}/{fid}" for fid in file_ids}
    jobs = [r for r in cluster.sql("SELECT id, reference, status, attempts FROM jobs") if r["reference"] in references]
    assert len(jobs) == 24 and {(j["status"], j["attempts"]) for j in jobs} == {("succeeded", 1)}
    claims = [c for c in cluster.claims("vector_store.file_ingest") if c["job_id"] in {j["id"] for j in jobs}]
    assert Counter(c["job_id"] for c in claims) == Counter({j["id"]: 1 for j in jobs})  # each claimed exactly once
    claimers = {_runner_pid(c["lease_owner"]) for c in claims}
    assert claimers & cluster.pids("a") and claimers & cluster.pids("b"), claimers


def test_each_background_response_runs_once_with_both_servers_claiming(cluster: Cluster) -> None:
    a, b = cluster.servers["a"].openai(), cluster.servers["b"].openai()
    created = [
        (a if n % 2 else b).responses.create(model="echo/echo", input=f"job {n}", background=True) for n in range(12)
    ]
    finished = {
        r.id: _wait(lambda r=r: (x := b.responses.retrieve(r.id)).status == "completed" and x, 60, r.id)
        for r in created
    }
    assert [finished[r.id].output_text for r in created] == [f"echo: job {n}" for n in range(12)]
    claims = [c for c in cluster.claims("responses.background") if c["job_id"] in _job_ids(cluster, created)]
    assert sorted(Counter(c["job_id"] for c in claims).values()) == [1] * 12
    claimers = {_runner_pid(c["lease_owner"]) for c in claims}
    assert claimers & cluster.pids("a") and claimers & cluster.pids("b"), claimers


def _job_ids(cluster: Cluster, responses: list[Any]) -> set[str]:
    """The job rows of background responses (the job's reference is the response id)."""
    wanted = {r.id for r in responses}
    return {r["id"] for r in cluster.sql("SELECT id, reference FROM jobs") if r["reference"] in wanted}


def _stop_mid_job(cluster: Cluster, sig: signal.Signals) -> None:
    """Queue slow background responses on B, stop B with ``sig`` while it runs some, and check A finishes all."""
    b_server = cluster.servers["b"]
    b = b_server.openai()
    words = " ".join(f"w{n}" for n in range(SLOW_WORDS))
    created = [b.responses.create(model="echo/echo-slow", input=f"{n} {words}", background=True) for n in range(6)]
    job_ids = _wait(lambda: len(ids := _job_ids(cluster, created)) == 6 and ids, 10, "the jobs rows")
    b_pid = b_server.process.pid

    def b_is_running_one() -> bool:
        rows = cluster.sql("SELECT id, lease_owner FROM jobs WHERE status = 'running'")
        return any(r["id"] in job_ids and r["lease_owner"] and _runner_pid(r["lease_owner"]) == b_pid for r in rows)

    _wait(b_is_running_one, 10, "B to claim one of the slow jobs")
    held_by_b = {c["job_id"] for c in cluster.claims("responses.background") if _runner_pid(c["lease_owner"]) == b_pid}
    held_by_b &= job_ids
    started = time.monotonic()
    code = b_server.stop(sig, timeout=30)
    try:
        _check_nothing_lost(cluster, sig, created, job_ids, held_by_b, b_pid, words)
        if sig == signal.SIGTERM:
            assert code == 0 and time.monotonic() - started < 20, b_server.log()[-2000:]
    finally:
        cluster.start("b")  # back to two servers for whatever runs next


def _check_nothing_lost(
    cluster: Cluster,
    sig: signal.Signals,
    created: list[Any],
    job_ids: set[str],
    held_by_b: set[str],
    b_pid: int,
    words: str,
) -> None:
    a = cluster.servers["a"].openai()
    finished = {
        r.id: _wait(lambda r=r: (x := a.responses.retrieve(r.id)).status == "completed" and x, 90, r.id)
        for r in created
    }
    assert [finished[r.id].output_text for r in created] == [f"echo: {n} {words}" for n in range(6)]
    claims = [c for c in cluster.claims("responses.background") if c["job_id"] in job_ids]
    a_pids = cluster.pids("a")
    for job_id in job_ids:
        owners = [_runner_pid(c["lease_owner"]) for c in claims if c["job_id"] == job_id]
        if job_id in held_by_b and sig == signal.SIGKILL:
            assert owners[0] == b_pid and len(owners) == 2 and owners[1] in a_pids, owners  # resumed once, on A
        else:
            assert 1 <= len(owners) <= 2, owners
    rows = [r for r in cluster.sql("SELECT id, status FROM jobs") if r["id"] in job_ids]
    assert {r["status"] for r in rows} == {"succeeded"}


def test_sigterm_on_one_server_loses_no_job(cluster: Cluster) -> None:
    _stop_mid_job(cluster, signal.SIGTERM)


def test_sigkill_mid_job_on_one_server_loses_no_job(cluster: Cluster) -> None:
    _stop_mid_job(cluster, signal.SIGKILL)


def test_a_server_started_later_sees_what_was_created_while_it_was_down(cluster: Cluster) -> None:
    a_server = cluster.servers["a"]
    assert cluster.servers["b"].stop(signal.SIGTERM) == 0
    try:
        registered = httpx.post(
            f"{a_server.v1}/models",
            json={"model_id": "made-while-down", "provider_id": "echo", "provider_model_id": "echo"},
            timeout=10,
        )
        assert registered.status_code == 200, registered.text
        store = a_server.openai().vector_stores.create(name="made-while-down")
    finally:
        b = cluster.start("b").openai()
    assert "made-while-down" in {m.id for m in b.models.list()}
    assert b.vector_stores.retrieve(store.id).name == "made-while-down"


# ---- quotas ---------------------------------------------------------------------------------------

QUOTA = 12


@pytest.fixture(scope="module")
def quota_pair(tmp_path_factory: pytest.TempPathFactory, external_provider_path: Path) -> Iterator[Cluster]:
    """Two more servers on their own database with a small daily request budget counted in Redis under a
    fresh key prefix (a daily window, so the test cannot straddle a window edge but at midnight UTC)."""
    database = f"underlay_quota_{uuid.uuid4().hex[:12]}"
    prefix = f"underlay-test-quota-{uuid.uuid4().hex[:8]}"
    config = yaml.safe_load((DISTRIBUTIONS_DIR / "postgres.yaml").read_text())
    config["providers"]["inference"] = [{"provider_id": "echo", "provider_type": "remote::echo-test", "config": {}}]
    config["server"]["quotas"].update({"url": REDIS_URL, "key_prefix": prefix, "limits": {"requests_per_day": QUOTA}})
    pair = Cluster(database, config, tmp_path_factory.mktemp("quota"), external_provider_path, quota_prefix=prefix)
    try:
        with ThreadPoolExecutor(2) as pool:
            list(pool.map(pair.start, ["a", "b"]))
        yield pair
    finally:
        for server in pair.servers.values():
            server.stop()
        _sql("postgres", f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        import redis

        client = redis.Redis.from_url(REDIS_URL)
        for key in client.scan_iter(match=f"{prefix}:*"):
            client.delete(key)
        client.close()


def test_quotas_are_counted_once_for_all_servers_and_workers(quota_pair: Cluster) -> None:
    import redis

    a, b = quota_pair.servers["a"], quota_pair.servers["b"]
    statuses = []
    with httpx.Client(timeout=10) as client:
        for n in range(QUOTA):
            statuses.append(client.get(f"{(a if n % 2 else b).v1}/models").status_code)
        assert statuses == [200] * QUOTA
        for server in (a, b):  # the budget is spent everywhere, not per server
            refused = client.get(f"{server.v1}/models")
            assert refused.status_code == 429, refused.text
            error = refused.json()["error"]
            assert error["code"] == "rate_limit_exceeded" and f"of {QUOTA} allowed" in error["message"]
            assert int(refused.headers["retry-after"]) > 0
    counters = redis.Redis.from_url(REDIS_URL, decode_responses=True)
    try:
        keys = list(counters.scan_iter(match=f"{quota_pair.quota_prefix}:*:requests:day:*"))
        assert len(keys) == 1 and int(counters.get(keys[0]) or 0) == QUOTA  # refused requests are not counted
    finally:
        counters.close()
