"""Router overhead: a stub upstream that answers at once, called directly and through Underlay.

Underlay runs the ``remote::passthrough`` provider pointed at ``bench/upstream_stub.py``. For
non-streaming and streaming (50 chunks) requests at concurrency 1, 16 and 64 it prints req/s and
p50/p99 latency, direct vs through Underlay, then the targets: at most 1 ms added at p50 (c=1);
at least half the direct throughput at c=64; zero errors. Everything shares this machine's cores,
so compare the ratios within one run. The ``cpu/req`` column is the CPU time the server (the stub
for direct rows, Underlay for the others) spent per request: unlike latency it barely moves when other
work shares the cores, so it is the figure to compare between runs on a busy machine.

The load generator is httpx by default (as in earlier figures). httpx's own pool bookkeeping grows with
the number of waiting requests, so at c=64 the *direct* rows are bounded by the client, not the stub;
``--client aiohttp`` drives the load with aiohttp, whose cost stays flat, for a stricter ratio.

    python bench/overhead.py [--seconds 5] [--client httpx|aiohttp]
    python bench/overhead.py --seconds 2 --record | --check [--tolerance 1.5]   (bench/_results.py)

The regression guard's figures, for JSON and streaming: Underlay's p50 and CPU per request at c=1, and
its throughput at c=64 as a share of direct.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import free_port, percentile, start_underlay, wait_http  # noqa: E402
from _results import HIGHER, LOWER, Guard  # noqa: E402

BODY = {"model": "stub", "messages": [{"role": "user", "content": "hi"}]}


async def _one(client: httpx.AsyncClient, url: str, stream: bool) -> float:
    start = time.perf_counter()
    payload = {**BODY, "stream": True} if stream else BODY
    if stream:
        async with client.stream("POST", url, json=payload) as response:
            response.raise_for_status()
            async for _ in response.aiter_raw():
                pass
    else:
        response = await client.post(url, json=payload)
        response.raise_for_status()
    return time.perf_counter() - start


async def _one_aiohttp(session: aiohttp.ClientSession, url: str, stream: bool) -> float:
    start = time.perf_counter()
    payload = {**BODY, "stream": True} if stream else BODY
    async with session.post(url, json=payload) as response:
        response.raise_for_status()
        async for _ in response.content.iter_any():
            pass
    return time.perf_counter() - start


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process so far (Linux ``/proc``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def load(
    url: str, concurrency: int, seconds: float, stream: bool, client_kind: str = "httpx", server_pid: int | None = None
) -> dict[str, float]:
    latencies: list[float] = []
    errors = 0
    if client_kind == "aiohttp":
        connector = aiohttp.TCPConnector(limit=concurrency)
        http: Any = aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=30))
        one: Any = _one_aiohttp
        failures: tuple[type[BaseException], ...] = (aiohttp.ClientError, TimeoutError)
    else:
        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        http = httpx.AsyncClient(limits=limits, timeout=30)
        one, failures = _one, (httpx.HTTPError,)
    async with http as client:
        for _ in range(min(concurrency, 8)):  # warm the connections
            await one(client, url, stream)
        deadline = time.perf_counter() + seconds

        async def worker() -> None:
            nonlocal errors
            while time.perf_counter() < deadline:
                try:
                    latencies.append(await one(client, url, stream))
                except failures:
                    errors += 1

        cpu_before = cpu_seconds(server_pid) if server_pid else 0.0
        begin = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - begin
        cpu = cpu_seconds(server_pid) - cpu_before if server_pid else float("nan")
    return {
        "cpu_ms": cpu * 1000 / max(1, len(latencies)),
        "rps": len(latencies) / elapsed,
        "p50": percentile(latencies, 50) * 1000,
        "p99": percentile(latencies, 99) * 1000,
        "errors": errors,
        "n": len(latencies),
    }


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--client", choices=("httpx", "aiohttp"), default="httpx", help="the load generator")
    Guard.add_arguments(parser)
    args = parser.parse_args()
    guard = Guard("overhead", args)
    workdir = Path(tempfile.mkdtemp(prefix="underlay-overhead-"))
    stub_port, underlay_port = free_port(), free_port()
    stub = subprocess.Popen(
        [sys.executable, str(Path(__file__).with_name("upstream_stub.py")), str(stub_port)], stdout=subprocess.DEVNULL
    )
    config = {
        "state_dir": str(workdir / "state"),
        "apis": ["inference", "models"],
        "providers": {
            "inference": [
                {
                    "provider_id": "passthrough",
                    "provider_type": "remote::passthrough",
                    "config": {"base_url": f"http://127.0.0.1:{stub_port}/v1"},
                }
            ]
        },
        "server": {"log_level": "warning"},
    }
    config_path = workdir / "run.yaml"
    config_path.write_text(yaml.safe_dump(config))
    server = start_underlay(config_path, underlay_port, workdir / "server.log")
    try:
        wait_http(f"http://127.0.0.1:{stub_port}/v1/models", stub)
        wait_http(f"http://127.0.0.1:{underlay_port}/v1/health", server)
        direct = f"http://127.0.0.1:{stub_port}/v1/chat/completions"
        through = f"http://127.0.0.1:{underlay_port}/v1/chat/completions"
        results: dict[tuple[bool, int, str], dict[str, float]] = {}
        failures = 0
        print(f"load generator: {args.client}; load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
        print(f"{'mode':<10}{'conc':>5}  {'path':<9}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}{'cpu/req':>9}")
        for stream in (False, True):
            for concurrency in (1, 16, 64):
                for name, url, pid in (("direct", direct, stub.pid), ("underlay", through, server.pid)):
                    r = asyncio.run(load(url, concurrency, args.seconds, stream, args.client, pid))
                    results[(stream, concurrency, name)] = r
                    mode = "stream" if stream else "json"
                    print(
                        f"{mode:<10}{concurrency:>5}  {name:<9}{r['rps']:>9.0f}{r['p50']:>9.2f}{r['p99']:>9.2f}"
                        f"{r['errors']:>8}{r['cpu_ms']:>9.3f}",
                        flush=True,
                    )
        print()
        ok = True
        for stream in (False, True):
            mode = "stream" if stream else "json"
            added = results[(stream, 1, "underlay")]["p50"] - results[(stream, 1, "direct")]["p50"]
            ratio = results[(stream, 64, "underlay")]["rps"] / results[(stream, 64, "direct")]["rps"]
            errors = sum(int(r["errors"]) for (s, _, _), r in results.items() if s == stream)
            cpu = results[(stream, 1, "underlay")]["cpu_ms"]
            verdict_added = "PASS" if added <= 1.0 else "MISS"
            verdict_ratio = "PASS" if ratio >= 0.5 else "MISS"
            ok = ok and verdict_added == verdict_ratio == "PASS" and errors == 0
            failures += errors
            guard.figure(
                f"{mode} c=1 p50 through Underlay", results[(stream, 1, "underlay")]["p50"], "ms", LOWER, wall=True
            )
            guard.figure(f"{mode} c=1 Underlay CPU per request", cpu, "ms", LOWER)
            guard.figure(f"{mode} c=64 throughput share of direct", ratio, "x", HIGHER, wall=True)
            print(
                f"{mode}: added p50 at c=1 {added:.2f} ms (target <= 1 ms: {verdict_added}); "
                f"throughput at c=64 {ratio:.2f}x direct (target >= 0.5: {verdict_ratio}); errors {errors}; "
                f"Underlay CPU {cpu:.2f} ms/request at c=1"
            )
        print("overall:", "PASS" if ok else "MISS")
    finally:
        server.terminate()
        stub.terminate()
        server.wait(30)
        stub.wait(30)
    if failures and guard.active:
        print(f"{failures} request(s) failed: the figures are neither recorded nor checked")
        return 1
    return guard.finish()


if __name__ == "__main__":
    sys.exit(main())
