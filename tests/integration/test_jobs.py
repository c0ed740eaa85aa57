"""Durable jobs on a real SQL store file shared by two runners, as two server processes would share it."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.integration.storage.conftest import PG_HOST, PG_PASSWORD, PG_PORT, PG_USER, unique
from underlay.core.identity import Principal, current_principal
from underlay.core.jobs import Job, JobContext, JobDeferred, JobError, JobRunner, RetryableJobError
from underlay.core.storage.sqlstore import SqlStore, sqlstore_from_config


@dataclass
class Shared:
    """Two SQL store connections (engines) to one database, as two server processes hold them, and the
    job table name both runners use."""

    first: SqlStore
    second: SqlStore
    table: str

    def __getitem__(self, index: int) -> SqlStore:
        return (self.first, self.second)[index]

    def runner(self, which: int, **kwargs: Any) -> JobRunner:
        return JobRunner(self[which], table=self.table, **kwargs)


@pytest.fixture(params=["sqlite", "postgres"])
async def stores(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Shared]:
    """SQLite in a temporary file, or a fresh PostgreSQL database (dropped afterwards)."""
    admin = None
    if request.param == "sqlite":
        config: dict[str, Any] = {"type": "sqlite", "path": str(tmp_path / "jobs.db")}
    else:
        import asyncpg

        name = unique("underlay_jobs")
        try:
            admin = await asyncpg.connect(
                host=PG_HOST, port=PG_PORT, user=PG_USER, password=PG_PASSWORD, database="postgres", timeout=5
            )
        except Exception as exc:  # unreachable: fail like the storage suite, never skip
            pytest.fail(f"PostgreSQL is not reachable at {PG_HOST}:{PG_PORT} ({exc}).", pytrace=False)
        await admin.execute(f'CREATE DATABASE "{name}"')
        config = {
            "type": "postgres",
            "host": PG_HOST,
            "port": PG_PORT,
            "user": PG_USER,
            "password": PG_PASSWORD,
            "db": name,
        }
    first = await sqlstore_from_config(config)
    second = await sqlstore_from_config(config)
    try:
        yield Shared(first, second, "jobs")
    finally:
        await first.close()
        await second.close()
        if admin is not None:
            await admin.execute(f'DROP DATABASE IF EXISTS "{config["db"]}" WITH (FORCE)')
            await admin.close()


async def test_each_job_runs_exactly_once_across_two_runners(stores: Shared) -> None:
    runs: list[tuple[str, str]] = []

    def handler_for(name: str) -> Any:
        async def handler(ctx: JobContext) -> dict[str, Any]:
            runs.append((name, ctx.job.id))
            await asyncio.sleep(0.02)
            return {"by": name}

        return handler

    a = stores.runner(0, workers=3, lease_seconds=5, poll_seconds=0.05, runner_id="A")
    b = stores.runner(1, workers=3, lease_seconds=5, poll_seconds=0.05, runner_id="B")
    a.register("count", handler_for("A"))
    b.register("count", handler_for("B"))
    await a.initialize()
    jobs = [await a.submit("count", {"n": i}) for i in range(40)]
    await a.start()
    await b.start()
    try:
        for job in jobs:
            done = await a.wait(job.id, within=30)
            assert done.status == "succeeded", done
            assert done.result == {"by": done.result["by"]} and done.attempts == 1 and done.progress == 1.0
    finally:
        await a.stop()
        await b.stop()
    per_job = Counter(job_id for _, job_id in runs)
    assert set(per_job) == {j.id for j in jobs} and set(per_job.values()) == {1}
    assert {name for name, _ in runs} == {"A", "B"}  # both runners took work


async def test_expired_lease_is_resumed_by_another_runner(stores: Shared) -> None:
    attempts_seen: list[int] = []

    async def handler(ctx: JobContext) -> str:
        attempts_seen.append(ctx.job.attempts)
        return "done"

    dead = stores.runner(0, lease_seconds=1, runner_id="dead")
    dead.register("work", handler)
    await dead.initialize()
    job = await dead.submit("work", {})
    claimed = await dead.claim_one()  # claimed, then the process "dies": no heartbeat, no finish
    assert claimed is not None and claimed.id == job.id and claimed.status == "running"

    alive = stores.runner(1, lease_seconds=1, poll_seconds=0.05, runner_id="alive")
    alive.register("work", handler)
    await alive.start()
    try:
        done = await alive.wait(job.id, within=20)
    finally:
        await alive.stop()
    assert done.status == "succeeded" and done.result == "done"
    assert done.attempts == 2 and attempts_seen == [2]


async def test_max_attempts_then_failed_cleanly_with_hook(stores: Shared) -> None:
    ended: list[Job] = []

    async def handler(ctx: JobContext) -> None:
        raise AssertionError("never runs: the job is given up before")

    async def on_failure(job: Job) -> None:
        ended.append(job)

    dead = stores.runner(0, lease_seconds=1, runner_id="dead")
    dead.register("fragile", handler, max_attempts=1)
    await dead.initialize()
    job = await dead.submit("fragile", {"x": 1})
    assert job.max_attempts == 1
    assert (await dead.claim_one()) is not None

    sweeper = stores.runner(1, workers=1, lease_seconds=1, poll_seconds=0.05, runner_id="sweeper")
    sweeper.register("fragile", handler, on_failure=on_failure, max_attempts=1)
    await sweeper.start()
    try:
        done = await sweeper.wait(job.id, within=20)
    finally:
        await sweeper.stop()
    assert done.status == "failed"
    assert done.error is not None and done.error["code"] == "job_interrupted"
    assert "interrupted 1 time" in done.error["message"]
    assert [j.id for j in ended] == [job.id] and ended[0].status == "failed"
    assert done.lease_owner is None and done.finished_at is not None


async def test_cancel_queued_and_running_jobs(stores: Shared) -> None:
    ended: list[tuple[str, str]] = []
    started = asyncio.Event()
    five_steps = asyncio.Event()
    steps: list[int] = []

    async def slow(ctx: JobContext) -> None:
        started.set()
        for step in range(1000):
            await ctx.checkpoint(step / 1000)
            steps.append(step)
            if len(steps) == 5:
                five_steps.set()
            await asyncio.sleep(0.02)

    async def on_failure(job: Job) -> None:
        ended.append((job.id, job.status))

    runner = stores.runner(0, workers=1, lease_seconds=3, poll_seconds=0.05, runner_id="one")
    runner.register("slow", slow, on_failure=on_failure)
    await runner.initialize()
    first = await runner.submit("slow", {})
    second = await runner.submit("slow", {})  # stays queued: one worker
    await runner.start()
    try:
        await asyncio.wait_for(started.wait(), 10)
        cancelled_queued = await runner.cancel(second.id)
        assert cancelled_queued.status == "cancelled"
        await asyncio.wait_for(five_steps.wait(), 10)
        await runner.cancel(first.id)
        done = await runner.wait(first.id, within=10)
    finally:
        await runner.stop()
    assert done.status == "cancelled" and len(steps) < 1000
    assert 0 < done.progress < 1
    assert sorted(ended) == sorted([(first.id, "cancelled"), (second.id, "cancelled")])


async def test_cancel_from_another_process_reaches_the_running_job(stores: Shared) -> None:
    started = asyncio.Event()

    async def slow(ctx: JobContext) -> None:
        started.set()
        while True:
            await ctx.checkpoint()
            await asyncio.sleep(0.02)

    worker = stores.runner(0, workers=1, lease_seconds=1.5, poll_seconds=0.05, runner_id="worker")
    worker.register("slow", slow)
    other = stores.runner(1, workers=0, runner_id="api")  # submits and cancels only
    await other.initialize()
    job = await other.submit("slow", {})
    await worker.start()
    try:
        await asyncio.wait_for(started.wait(), 10)
        await other.cancel(job.id)
        done = await other.wait(job.id, within=10)
    finally:
        await worker.stop()
    assert done.status == "cancelled"


async def test_handler_errors_retries_and_owner(stores: Shared) -> None:
    owners: list[str] = []
    tries: Counter[str] = Counter()

    async def handler(ctx: JobContext) -> str:
        owners.append(current_principal().id)
        mode = ctx.job.payload["mode"]
        tries[mode] += 1
        if mode == "invalid":
            raise JobError("invalid_file", "bad input")
        if mode == "flaky" and tries[mode] < 2:
            raise RetryableJobError("server_error", "upstream down", delay=0.1)
        if mode == "always-down":
            raise RetryableJobError("server_error", "upstream down", delay=0.05)
        if mode == "crash":
            raise RuntimeError("boom")
        return mode

    runner = stores.runner(0, workers=2, lease_seconds=5, poll_seconds=0.05)
    runner.register("modes", handler, max_attempts=3)
    await runner.initialize()
    ids = {
        mode: (await runner.submit("modes", {"mode": mode}, owner=Principal("alice", {"team": "x"}))).id
        for mode in ("invalid", "flaky", "always-down", "crash", "ok")
    }
    await runner.start()
    try:
        results = {mode: await runner.wait(job_id, within=20) for mode, job_id in ids.items()}
    finally:
        await runner.stop()
    assert results["invalid"].status == "failed" and results["invalid"].error == {
        "code": "invalid_file",
        "message": "bad input",
    }
    assert results["flaky"].status == "succeeded" and results["flaky"].attempts == 2
    assert results["always-down"].status == "failed" and results["always-down"].attempts == 3
    assert results["crash"].status == "failed" and results["crash"].error is not None
    assert results["crash"].error["code"] == "server_error" and "boom" in results["crash"].error["message"]
    assert results["ok"].status == "succeeded" and results["ok"].owner_principal == "alice"
    assert set(owners) == {"alice"}


async def test_a_deferred_job_waits_without_a_worker_and_without_spending_attempts(stores: Shared) -> None:
    """``JobDeferred`` (a native batch between polls) re-queues the job for later; attempts stay as they were,
    so a job that waits on an upstream for hours is never given up for having waited."""
    runs: list[float] = []

    async def handler(ctx: JobContext) -> int:
        runs.append(time.monotonic())
        if len(runs) < 5:
            raise JobDeferred(0.1)
        return len(runs)

    runner = stores.runner(0, workers=1, lease_seconds=5, poll_seconds=0.02)
    runner.register("waits", handler, max_attempts=2)
    await runner.initialize()
    job = await runner.submit("waits", {}, owner=Principal("alice", {}))
    await runner.start()
    try:
        done = await runner.wait(job.id, within=20)
    finally:
        await runner.stop()
    assert done.status == "succeeded" and done.result == 5
    assert done.attempts == 1, "a deferral spent an attempt"
    gaps = [later - earlier for earlier, later in zip(runs, runs[1:], strict=False)]
    assert min(gaps) >= 0.09, gaps


async def test_a_runner_that_loses_its_lease_stops_the_handler(stores: Shared) -> None:
    started = asyncio.Event()
    stopped = asyncio.Event()

    async def endless(ctx: JobContext) -> None:
        started.set()
        try:
            await asyncio.Event().wait()  # never reaches a checkpoint
        finally:
            stopped.set()

    runner = stores.runner(0, workers=1, lease_seconds=1.2, poll_seconds=0.05, runner_id="stalled")
    runner.register("endless", endless)
    await runner.initialize()
    job = await runner.submit("endless", {})
    await runner.start()
    try:
        await asyncio.wait_for(started.wait(), 10)
        # Another runner's sweep decided this one was dead and re-queued the job (then held it).
        await stores[1].update(
            stores.table, {"status": "queued", "lease_owner": None, "available_at": time.time() + 3600}, {"id": job.id}
        )
        await asyncio.wait_for(stopped.wait(), 10)
    finally:
        await runner.stop()
    row = await runner.get(job.id)
    assert row.status == "queued"  # untouched by the runner that lost it


async def test_a_tenants_bulk_backlog_does_not_delay_another_tenants_jobs(stores: Shared) -> None:
    """Tenant A queues 50 ingestion jobs; tenant B's background response and small ingestion job, queued
    after, are claimed long before A's backlog drains. Order is read from ``claimed_ns`` in the table.
    Before lanes and fair ranks the queue was FIFO and B's jobs came 51st and 52nd."""

    async def work(ctx: JobContext) -> None:
        await asyncio.sleep(0.02)

    def runner_for(which: int, **kwargs: Any) -> JobRunner:
        runner = stores.runner(which, lease_seconds=10, poll_seconds=0.05, **kwargs)
        runner.register("vector_store.file_ingest", work, lane="bulk")
        runner.register("responses.background", work, lane="interactive")
        return runner

    api = runner_for(1, workers=0)  # the process that takes the requests: submits only
    worker = runner_for(0, workers=2, reserved={"interactive": 1}, runner_id="worker")
    await api.initialize()
    a, b = Principal("tenant-a"), Principal("tenant-b")
    backlog = [await api.submit("vector_store.file_ingest", {"n": i}, owner=a) for i in range(50)]
    b_response = await api.submit("responses.background", {}, owner=b)
    b_ingest = await api.submit("vector_store.file_ingest", {"n": 0}, owner=b)
    await worker.start()
    try:
        done = [await worker.wait(job.id, within=60) for job in [*backlog, b_response, b_ingest]]
    finally:
        await worker.stop()
    assert {job.status for job in done} == {"succeeded"}
    rows = await stores[0].fetch_all(stores.table, order_by=[("claimed_ns", "asc")])
    order = [row["id"] for row in rows]
    assert len(order) == 52 and all(row["claimed_ns"] for row in rows)
    backlog_ids = {job.id for job in backlog}
    a_before_response = sum(1 for job_id in order[: order.index(b_response.id)] if job_id in backlog_ids)
    a_before_ingest = sum(1 for job_id in order[: order.index(b_ingest.id)] if job_id in backlog_ids)
    assert a_before_response <= 1, order  # interactive first: at most the job a second worker took meanwhile
    assert a_before_ingest <= 2, order  # B's first bulk job takes its turn right after A's first


async def test_bulk_work_never_takes_the_reserved_interactive_worker(stores: Shared) -> None:
    """One shared worker busy on an endless ingestion job: a background response still runs at once."""
    release = asyncio.Event()
    bulk_started = asyncio.Event()

    async def stuck(ctx: JobContext) -> None:
        bulk_started.set()
        await release.wait()

    async def quick(ctx: JobContext) -> str:
        return "answered"

    runner = stores.runner(0, workers=1, reserved={"interactive": 1}, lease_seconds=10, poll_seconds=0.05)
    runner.register("vector_store.file_ingest", stuck, lane="bulk")
    runner.register("responses.background", quick, lane="interactive")
    await runner.initialize()
    bulk = [await runner.submit("vector_store.file_ingest", {"n": i}, owner=Principal("tenant-a")) for i in range(5)]
    await runner.start()
    try:
        await asyncio.wait_for(bulk_started.wait(), 10)
        response = await runner.submit("responses.background", {}, owner=Principal("tenant-b"))
        finished = await runner.wait(response.id, within=10)
        assert finished.status == "succeeded" and finished.result == "answered"
        states = [(await runner.get(job.id)).status for job in bulk]
        assert states.count("running") == 1 and states.count("queued") == 4  # bulk never got a second worker
    finally:
        release.set()
        await runner.stop()


async def test_owners_take_turns_within_a_lane(stores: Shared) -> None:
    """Ranks are start-time fair: a newcomer starts level with the head of the queue, not behind it,
    and not ahead of owners who were already waiting."""
    runner = stores.runner(0, workers=0)
    runner.register("bulk.kind", _never_runs, lane="bulk")
    await runner.initialize()
    a = [await runner.submit("bulk.kind", {}, owner=Principal("a")) for _ in range(4)]
    assert [job.fair_rank for job in a] == [0, 1, 2, 3]
    first = await runner.claim_one()
    assert first is not None and first.id == a[0].id
    b = [await runner.submit("bulk.kind", {}, owner=Principal("b")) for _ in range(2)]
    assert [job.fair_rank for job in b] == [1, 2]  # level with a's next job, then alternating
    claimed = [await runner.claim_one() for _ in range(5)]
    assert [job.id for job in claimed if job is not None] == [a[1].id, b[0].id, a[2].id, b[1].id, a[3].id]
    with pytest.raises(ValueError, match="Unknown job lane"):
        runner.register("odd.kind", _never_runs, lane="urgent")  # type: ignore[arg-type]


async def _never_runs(ctx: JobContext) -> None:
    raise AssertionError("claimed by hand in this test; never run")


async def test_rows_queued_before_ranks_existed_keep_their_turn(stores: Shared) -> None:
    """A row written by an older version has no rank; PostgreSQL would sort it after every ranked row
    (NULLs last), SQLite before. Starting a runner ranks it 0, so both claim oldest first."""
    runner = stores.runner(0, workers=0)
    runner.register("bulk.kind", _never_runs, lane="bulk")
    await runner.initialize()
    legacy = await runner.submit("bulk.kind", {}, owner=Principal("old"))
    await stores[0].update(stores.table, {"fair_rank": None}, {"id": legacy.id})
    newer = await runner.submit("bulk.kind", {}, owner=Principal("new"))
    await runner.start()
    try:
        assert (await runner.get(legacy.id)).fair_rank == 0
        claimed = [await runner.claim_one(), await runner.claim_one()]
    finally:
        await runner.stop()
    assert [job.id for job in claimed if job is not None] == [legacy.id, newer.id]


async def test_an_idle_runner_stops_without_cancelling_anything(stores: Shared) -> None:
    """With no job running, ``stop`` ends every worker and the lease sweeper on their own. The sweeper
    used to sleep out its interval (half a lease), so every stop waited the whole grace period and then
    cancelled it: each server with a job runner took five seconds longer to shut down."""
    runner = stores.runner(0, workers=2)
    await runner.start()
    tasks = list(runner._tasks)
    assert any(task.get_name() == "job-sweeper" for task in tasks)
    await asyncio.sleep(0.2)  # let every task reach its wait, as in a running server
    assert not any(task.done() for task in tasks)
    await runner.stop(grace_seconds=2.0)  # far below the sweeper's 15 s interval
    cancelled = [task.get_name() for task in tasks if task.cancelled()]
    assert cancelled == [] and all(task.done() for task in tasks)


async def test_an_idle_runner_claims_nothing_yet_finds_work_queued_elsewhere(
    stores: Shared, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Idle workers wait instead of claiming every poll (issue 16: a dozen write transactions a second
    on an idle server); one poller per runner reads, backing off to ``poll_max_seconds``. A job queued by
    another runner is still claimed once the poller sees it, and a job queued elsewhere for later is
    claimed when it is due, not before."""
    claims: list[str] = []
    claim = stores[0].claim

    async def counting_claim(*args: Any, **kwargs: Any) -> Any:
        claims.append(args[0])
        return await claim(*args, **kwargs)

    monkeypatch.setattr(stores[0], "claim", counting_claim)
    ran: list[tuple[str, float]] = []

    async def handler(ctx: JobContext) -> str:
        ran.append((ctx.job.id, time.time()))
        return "picked up"

    worker = stores.runner(0, workers=1, lease_seconds=10, poll_seconds=0.05, poll_max_seconds=0.4, runner_id="w")
    worker.register("remote.kind", handler)
    submitter = stores.runner(1, workers=0, runner_id="api")  # another process: its submits wake nobody here
    await submitter.initialize()
    await worker.start()
    try:
        deadline = time.monotonic() + 20
        while worker._poll_interval < worker.poll_max_seconds:  # several empty looks, backed off to the cap
            assert time.monotonic() < deadline, "the poller never backed off"
            await asyncio.sleep(0.05)
        assert claims == ["jobs"], claims  # the one claim at start; idle since then, no claim per poll

        now = await submitter.submit("remote.kind", {}, owner=Principal("tenant-a"))
        done = await submitter.wait(now.id, within=20)  # generous: found within poll_max_seconds when idle
        assert done.status == "succeeded" and done.result == "picked up" and done.attempts == 1

        # Queued for later by another process (as its retry would): parked under a kind nobody runs
        # first, so the worker cannot claim it between the insert and the update.
        later = await submitter.submit("remote.parked", {}, owner=Principal("tenant-a"))
        due = time.time() + 1.0
        await stores[1].update(stores.table, {"kind": "remote.kind", "available_at": due}, {"id": later.id})
        done_later = await submitter.wait(later.id, within=20)
        assert done_later.status == "succeeded" and done_later.attempts == 1
    finally:
        await worker.stop()
    assert [job_id for job_id, _ in ran] == [now.id, later.id]
    assert ran[1][1] >= due, "a job was claimed before its available_at"
