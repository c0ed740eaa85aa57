"""CPU time per stored span: N spans from a real tracer, written through the span store's buffer.

Why: the writer runs in the server process, so every microsecond it spends per span is taken from
requests (the GIL). The figure is ``time.process_time`` (all threads, so aiosqlite's included) for
``SpanBuffer.flush`` divided by the spans written, on SQLite in a temporary file; with
``--postgres`` also on a fresh PostgreSQL database at 127.0.0.1:5432 (dropped afterwards).

    python bench/span_store.py --spans 5000 [--postgres] [--record | --check [--tolerance 1.5]]

``--record`` / ``--check`` (``bench/_results.py``) keep and compare the CPU per span of each store.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
import uuid
from contextlib import ExitStack
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import LOWER, Guard  # noqa: E402

from underlay.core.identity import Principal, principal_var  # noqa: E402
from underlay.core.storage.sqlstore import SqlStore, sqlstore_from_config  # noqa: E402
from underlay.core.telemetry.config import TelemetryConfig  # noqa: E402
from underlay.core.telemetry.runtime import Telemetry  # noqa: E402


def _requests(telemetry: Telemetry, count: int, children: int = 6) -> None:
    """``count`` request-shaped traces: a root span with attributes and nested child spans."""
    tracer = telemetry.tracer
    for n in range(count):
        with tracer.start_as_current_span("POST /v1/chat/completions", attributes={"underlay.layer": "route"}) as root:
            with ExitStack() as nested:
                for depth in range(children):
                    child = nested.enter_context(tracer.start_as_current_span(f"router step {depth}"))
                    child.set_attribute("underlay.layer", "router")
                    child.set_attribute("depth", depth)
                    child.set_attribute("gen_ai.request.model", "echo-model")
            root.set_attribute("http.route", "/v1/chat/completions")
            root.set_attribute("http.response.status_code", 200)
            root.set_attribute("underlay.request_id", f"req-{n}")


async def _measure(store: SqlStore, spans: int, rounds: int) -> float:
    """Microseconds of CPU per span written, the best of ``rounds`` flushes."""
    telemetry = Telemetry(TelemetryConfig(flush_seconds=3600), store)
    await telemetry.start()
    assert telemetry.buffer is not None
    best = float("inf")
    token = principal_var.set(Principal("bench-user", {"teams": ["a", "b"]}))
    try:
        for _ in range(rounds):
            _requests(telemetry, spans // 7)
            start = time.process_time()
            written = await telemetry.buffer.flush()
            elapsed = time.process_time() - start
            best = min(best, elapsed / max(written, 1) * 1e6)
    finally:
        principal_var.reset(token)
        await telemetry.stop()
    return best


async def _postgres(spans: int, rounds: int) -> float:
    import asyncpg

    name = f"underlay_bench_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(host="127.0.0.1", user="postgres", database="postgres")
    await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        store = await sqlstore_from_config({"type": "postgres", "db": name})
        try:
            return await _measure(store, spans, rounds)
        finally:
            await store.close()
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


async def main(args: Any, guard: Guard) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        store = await sqlstore_from_config({"type": "sqlite", "path": str(Path(tmp) / "spans.db")})
        try:
            sqlite_us = await _measure(store, args.spans, args.rounds)
        finally:
            await store.close()
    print(f"sqlite: {sqlite_us:.1f} us CPU per span ({args.spans} spans per flush, best of {args.rounds})")
    guard.figure("sqlite CPU per span", sqlite_us, "us", LOWER)
    if args.postgres:
        pg_us = await _postgres(args.spans, args.rounds)
        print(f"postgres: {pg_us:.1f} us CPU per span ({args.spans} spans per flush, best of {args.rounds})")
        guard.figure("postgres CPU per span", pg_us, "us", LOWER)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spans", type=int, default=3500)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--postgres", action="store_true")
    Guard.add_arguments(parser)
    arguments = parser.parse_args()
    guard = Guard("span_store", arguments)
    asyncio.run(main(arguments, guard))
    sys.exit(guard.finish())
