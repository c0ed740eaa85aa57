"""Router overhead: a stub upstream that answers at once, called directly and through Underlay.

Underlay runs the ``remote::passthrough`` provider pointed at ``bench/upstream_stub.py``. For
non-streaming and streaming (50 chunks) requests at concurrency 1, 16 and 64 it prints req/s and
p50/p99 latency, direct vs through Underlay, then the targets: at most 1 ms added at p50 (c=1);
at least half the direct throughput at c=64; zero errors. Everything shares this machine's cores,
so compare the ratios within one run.

    python bench/overhead.py [--seconds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import free_port, percentile, start_underlay, wait_http  # noqa: E402

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


async def load(url: str, concurrency: int, seconds: float, stream: bool) -> dict[str, float]:
    latencies: list[float] = []
    errors = 0
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=30) as client:
        for _ in range(min(concurrency, 8)):  # warm the connections
            await _one(client, url, stream)
        deadline = time.perf_counter() + seconds

        async def worker() -> None:
            nonlocal errors
            while time.perf_counter() < deadline:
                try:
                    latencies.append(await _one(client, url, stream))
                except httpx.HTTPError:
                    errors += 1

        begin = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - begin
    return {
        "rps": len(latencies) / elapsed,
        "p50": percentile(latencies, 50) * 1000,
        "p99": percentile(latencies, 99) * 1000,
        "errors": errors,
        "n": len(latencies),
    }


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
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
        print(f"{'mode':<10}{'conc':>5}  {'path':<9}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}")
        for stream in (False, True):
            for concurrency in (1, 16, 64):
                for name, url in (("direct", direct), ("underlay", through)):
                    r = asyncio.run(load(url, concurrency, args.seconds, stream))
                    results[(stream, concurrency, name)] = r
                    mode = "stream" if stream else "json"
                    print(
                        f"{mode:<10}{concurrency:>5}  {name:<9}{r['rps']:>9.0f}{r['p50']:>9.2f}{r['p99']:>9.2f}"
                        f"{r['errors']:>8}",
                        flush=True,
                    )
        print()
        ok = True
        for stream in (False, True):
            mode = "stream" if stream else "json"
            added = results[(stream, 1, "underlay")]["p50"] - results[(stream, 1, "direct")]["p50"]
            ratio = results[(stream, 64, "underlay")]["rps"] / results[(stream, 64, "direct")]["rps"]
            errors = sum(r["errors"] for (s, _, _), r in results.items() if s == stream)
            verdict_added = "PASS" if added <= 1.0 else "MISS"
            verdict_ratio = "PASS" if ratio >= 0.5 else "MISS"
            ok = ok and verdict_added == verdict_ratio == "PASS" and errors == 0
            print(
                f"{mode}: added p50 at c=1 {added:.2f} ms (target <= 1 ms: {verdict_added}); "
                f"throughput at c=64 {ratio:.2f}x direct (target >= 0.5: {verdict_ratio}); errors {errors}"
            )
        print("overall:", "PASS" if ok else "MISS")
    finally:
        server.terminate()
        stub.terminate()
        server.wait(30)
        stub.wait(30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
