"""How long another tenant's work waits behind one tenant's ingestion backlog, FIFO versus lanes.

Tenant A queues 50 bulk jobs (stand-ins for file ingestion, 100 ms each); tenant B then queues one
interactive job (a background response) and one small bulk job. Run on a real SQLite job table with
two shared workers, once as the old FIFO queue (every kind in one lane, no reserved worker, ranks
flattened so only age orders the claims), once with the default lanes (interactive with one reserved
worker, bulk). Prints B's waits (start of the workers to claim) and how many of A's jobs were claimed
before B's; exits 0.

    python bench/job_fairness.py
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path

from underlay.core.identity import Principal
from underlay.core.jobs import JobContext, JobRunner
from underlay.core.storage.sqlstore import sqlstore_from_config

BACKLOG = 50
JOB_SECONDS = 0.1


async def _work(ctx: JobContext) -> None:
    await asyncio.sleep(JOB_SECONDS)


async def scenario(path: Path, lanes: bool) -> dict[str, float]:
    sql = await sqlstore_from_config({"type": "sqlite", "path": str(path)})
    runner = JobRunner(
        sql, workers=2, reserved={"interactive": 1} if lanes else {}, poll_seconds=0.05, runner_id="bench"
    )
    runner.register("ingest", _work, lane="bulk")
    runner.register("response", _work, lane="interactive" if lanes else "bulk")
    await runner.initialize()
    a, b = Principal("tenant-a"), Principal("tenant-b")
    backlog = [await runner.submit("ingest", {}, owner=a) for _ in range(BACKLOG)]
    response = await runner.submit("response", {}, owner=b)
    small = await runner.submit("ingest", {}, owner=b)
    if not lanes:  # the old queue: one lane, oldest first (equal ranks leave only the age to order by)
        await sql.update("jobs", {"fair_rank": 0}, {"status": "queued"})
    started = time.time_ns()
    await runner.start()
    try:
        for job in [response, small, *backlog]:
            await runner.wait(job.id, within=120)
    finally:
        await runner.stop()
    rows = {row["id"]: row for row in await sql.fetch_all("jobs")}
    await sql.close()
    order = sorted(rows, key=lambda job_id: rows[job_id]["claimed_ns"])
    a_ids = {job.id for job in backlog}

    def ahead(job_id: str) -> float:
        return sum(1 for other in order[: order.index(job_id)] if other in a_ids)

    return {
        "response wait s": (rows[response.id]["claimed_ns"] - started) / 1e9,
        "small ingest wait s": (rows[small.id]["claimed_ns"] - started) / 1e9,
        "A jobs before response": ahead(response.id),
        "A jobs before small ingest": ahead(small.id),
    }


async def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        fifo = await scenario(Path(tmp) / "fifo.db", lanes=False)
        fair = await scenario(Path(tmp) / "lanes.db", lanes=True)
    print(f"{BACKLOG} queued jobs of {JOB_SECONDS * 1000:.0f} ms from tenant A, 2 shared workers, SQLite")
    print(f"{'':28} {'FIFO':>8} {'lanes':>8}")
    for key in fifo:
        print(f"{key:28} {fifo[key]:8.2f} {fair[key]:8.2f}")


if __name__ == "__main__":
    asyncio.run(main())
