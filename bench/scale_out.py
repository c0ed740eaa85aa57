"""Scale-out on PostgreSQL: throughput of one server process vs two under the same load.

Every server runs the shipped ``postgres`` distribution on one fresh database (created by the servers,
dropped at the end) with its inference swapped for the external echo provider, so the work per request
is Underlay's own: routing, validation, storage. ``--clients`` concurrent clients send, for ``--seconds``
per setup, a DB-touching mix: 40% ``GET /v1/files`` (a page of 20), 20% ``POST /v1/files`` (a small
upload: a row and a file), 40% ``POST /v1/chat/completions`` with ``store: true`` (a stored completion).

Setups, each under the same load:

- ``1 process``: one server, one worker;
- ``2 servers``: two servers (one worker each) on two ports, clients alternating between them, as two
  replicas behind a load balancer;
- ``1 server, 2 workers``: ``server.workers: 2`` behind one port.

It prints req/s, p50/p99 latency and errors per setup, and the ratios to one process. The load
generator, PostgreSQL and the servers all share this machine's cores (2 on the development box, shared
with other work), so a second process can only help as far as a core is free: read the ratio, not the
absolute figures.

    python bench/scale_out.py [--clients 32] [--seconds 8] [--rounds 2]   (about 1.5 minutes)
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _common import percentile  # noqa: E402

from tests.integration.harness import RunningServer, install_external_provider, start_server  # noqa: E402
from underlay.core.config import DISTRIBUTIONS_DIR  # noqa: E402

PG = {"host": "127.0.0.1", "port": 5432, "user": "postgres"}


def _config() -> dict[str, Any]:
    config = yaml.safe_load((DISTRIBUTIONS_DIR / "postgres.yaml").read_text())
    config["providers"]["inference"] = [{"provider_id": "echo", "provider_type": "remote::echo-test", "config": {}}]
    config["server"]["log_level"] = "warning"
    return config


async def _request(client: httpx.AsyncClient, base: str, rng: random.Random) -> None:
    pick = rng.random()
    if pick < 0.4:
        response = await client.get(f"{base}/files", params={"limit": 20})
    elif pick < 0.6:
        files = {"file": (f"b{rng.randrange(1 << 30)}.txt", b"scale-out benchmark payload\n", "text/plain")}
        response = await client.post(f"{base}/files", data={"purpose": "assistants"}, files=files)
    else:
        body = {"model": "echo/echo", "messages": [{"role": "user", "content": "hello there"}], "store": True}
        response = await client.post(f"{base}/chat/completions", json=body)
    response.raise_for_status()


async def _load(bases: list[str], clients: int, seconds: float) -> dict[str, float]:
    latencies: list[float] = []
    errors = 0
    deadline = time.perf_counter() + seconds

    async def client_loop(index: int) -> None:
        nonlocal errors
        rng = random.Random(index)
        base = bases[index % len(bases)]
        async with httpx.AsyncClient(timeout=30) as client:
            while time.perf_counter() < deadline:
                start = time.perf_counter()
                try:
                    await _request(client, base, rng)
                except httpx.HTTPError:
                    errors += 1
                    continue
                latencies.append(time.perf_counter() - start)

    started = time.perf_counter()
    await asyncio.gather(*(client_loop(i) for i in range(clients)))
    elapsed = time.perf_counter() - started
    return {
        "rps": len(latencies) / elapsed,
        "p50": percentile(latencies, 50) * 1000,
        "p99": percentile(latencies, 99) * 1000,
        "errors": errors,
        "count": len(latencies),
    }


def _drop(database: str) -> None:
    import asyncpg

    async def run() -> None:
        conn = await asyncpg.connect(database="postgres", **PG)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        finally:
            await conn.close()

    asyncio.run(run())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--rounds", type=int, default=2, help="rounds over the setups, order alternating")
    args = parser.parse_args()

    database = f"underlay_bench_scale_{uuid.uuid4().hex[:10]}"
    root = Path(tempfile.mkdtemp(prefix="underlay-scale-out-"))
    site = install_external_provider(root / "site")
    config = _config()

    def env(name: str, workers: int) -> dict[str, str]:
        return {
            "POSTGRES_DB": database,
            "UNDERLAY_STATE_DIR": str(root / name / "state"),
            "UNDERLAY_FILES_DIR": str(root / "shared-files"),
            "UNDERLAY_VECTOR_DB": str(root / "vector_io.db"),
            "UNDERLAY_WORKERS": str(workers),
        }

    def start(name: str, workers: int) -> RunningServer:
        return start_server(config, root / name, env=env(name, workers), extra_pythonpath=[site])

    setups: list[tuple[str, list[tuple[str, int]]]] = [
        ("1 process", [("one", 1)]),
        ("2 servers", [("a", 1), ("b", 1)]),
        ("1 server, 2 workers", [("w", 2)]),
    ]
    cores = os.cpu_count()
    print(f"scale-out on PostgreSQL: {args.clients} clients, {args.seconds:.0f} s per setup, database {database}")
    print(
        f"machine: {cores} CPU cores, shared by the load generator, PostgreSQL and the servers"
        + (" (and other work on this box)" if (cores or 0) <= 2 else "")
        + "; compare ratios, not absolute figures"
    )
    runs: dict[str, list[dict[str, float]]] = {label: [] for label, _ in setups}
    # Rounds alternate the order (forward, then backward) so that neither a growing table nor a burst of
    # other work on the machine favours one setup.
    order = [setup for n in range(args.rounds) for setup in (setups if n % 2 == 0 else setups[::-1])]
    try:
        for label, servers in order:
            running = [start(name, workers) for name, workers in servers]
            try:
                bases = [server.v1 for server in running]
                asyncio.run(_load(bases, args.clients, min(2.0, args.seconds)))  # warm-up: pools, caches
                r = asyncio.run(_load(bases, args.clients, args.seconds))
            finally:
                for server in running:
                    server.stop()
            runs[label].append(r)
            print(
                f"  {label:<22} {r['rps']:8.1f} req/s   p50 {r['p50']:7.1f} ms   p99 {r['p99']:7.1f} ms"
                f"   {int(r['count'])} ok, {int(r['errors'])} errors"
            )
    finally:
        _drop(database)
    mean = {label: sum(r["rps"] for r in rs) / len(rs) for label, rs in runs.items()}
    errors = sum(int(r["errors"]) for rs in runs.values() for r in rs)
    print(f"mean over {args.rounds} round(s): " + ", ".join(f"{label} {rps:.1f} req/s" for label, rps in mean.items()))
    for label in ("2 servers", "1 server, 2 workers"):
        print(f"  ratio {label} / 1 process: {mean[label] / mean['1 process']:.2f}x")
    print(f"errors in all setups: {errors}")
    print("target: no errors in any setup; a ratio above 1.0 where a core is free (not promised on 2 shared cores)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
