"""What an API test pays for its server: ``underlay run`` as a subprocess vs the same app in process.

Why: ``tests/inprocess`` runs API-shape tests on the real app over ``httpx.ASGITransport`` (see
docs/testing.md); this prints what that saves per app and per request, and how long a server that
runs a job runner (responses, vector stores) takes to stop, which every such end-to-end test pays.

Figures (reported only; no target is promised):
- start to the first 200 on /v1/health, and stop, for a real echo server and for the in-process app;
- p50 of ``GET /v1/models`` over loopback HTTP vs through the ASGI transport;
- stop time of a real server whose stack holds a job runner.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]
from _common import percentile  # noqa: E402

from tests.inprocess.harness import echo_config, external_provider_on_path, serve_in_process  # noqa: E402
from tests.integration.harness import start_server  # noqa: E402

ROUNDS = 3
REQUESTS = 200
ECHO = {"provider_id": "echo", "provider_type": "remote::echo-test", "config": {}}


def real_server(config: dict[str, Any], workdir: Path, site: Path) -> tuple[float, float, list[float]]:
    """Seconds to healthy, per-request seconds of GET /v1/models, seconds to stop."""
    started = time.perf_counter()
    server = start_server(config, workdir, extra_pythonpath=[site])
    ready = time.perf_counter() - started
    timings = []
    with httpx.Client(base_url=server.v1) as client:
        for _ in range(REQUESTS):
            begin = time.perf_counter()
            client.get("/models").raise_for_status()
            timings.append(time.perf_counter() - begin)
    begin = time.perf_counter()
    server.stop()
    return ready, time.perf_counter() - begin, timings


async def in_process(config: dict[str, Any]) -> tuple[float, float, list[float]]:
    started = time.perf_counter()
    context = serve_in_process(config)
    app = await context.__aenter__()
    (await app.http.get("/v1/health")).raise_for_status()
    ready = time.perf_counter() - started
    timings = []
    for _ in range(REQUESTS):
        begin = time.perf_counter()
        (await app.http.get("/v1/models")).raise_for_status()
        timings.append(time.perf_counter() - begin)
    begin = time.perf_counter()
    await context.__aexit__(None, None, None)
    return ready, time.perf_counter() - begin, timings


def report(label: str, runs: list[tuple[float, float, list[float]]]) -> None:
    ready = statistics.median(r[0] for r in runs)
    stop = statistics.median(r[1] for r in runs)
    requests = sorted(t for r in runs for t in r[2])
    print(
        f"{label:<34} start {ready * 1000:8.1f} ms   stop {stop * 1000:7.1f} ms   "
        f"GET /v1/models p50 {percentile(requests, 50) * 1000:6.2f} ms  p99 {percentile(requests, 99) * 1000:6.2f} ms"
    )


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp, external_provider_on_path(Path(tmp) / "site") as site:
        base = Path(tmp)
        echo = echo_config(base / "unused")
        del echo["state_dir"]  # start_server gives each run its own
        served = [real_server(echo, base / f"real-{i}", site) for i in range(ROUNDS)]
        local = [asyncio.run(in_process(echo_config(base / f"inproc-{i}"))) for i in range(ROUNDS)]
        jobs_config = {
            "apis": ["inference", "models", "conversations", "responses"],
            "providers": {
                "inference": [ECHO],
                "responses": [{"provider_id": "builtin", "provider_type": "inline::builtin"}],
            },
        }
        with_jobs = [real_server(jobs_config, base / f"jobs-{i}", site) for i in range(ROUNDS)]
    print(f"median of {ROUNDS} rounds; {REQUESTS} sequential requests per round")
    report("underlay run (echo)", served)
    report("in process (echo)", local)
    report("underlay run (with a job runner)", with_jobs)
    real_cost = statistics.median(r[0] + r[1] for r in served)
    local_cost = statistics.median(r[0] + r[1] for r in local)
    print(f"start+stop saved per app: {(real_cost - local_cost) * 1000:.0f} ms")


if __name__ == "__main__":
    main()
