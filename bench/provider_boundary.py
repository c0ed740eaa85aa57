"""Per-call cost of the provider boundary, against the instance patching it replaced.

A provider whose methods return at once is called N times in a loop, five ways, in one process:
the bare method; patched in place by ``instrument`` (how providers were traced before the boundary);
through a :class:`ProviderHandle` with telemetry on (spans, metrics, error mapping); and with telemetry
off, bare vs handle (error mapping only). A streaming method (20 chunks) is timed the same way. It
prints CPU microseconds per call (CPU time, not wall time: it barely moves when other work shares
the cores) and the ratios; compare ratios within one run.

    python bench/provider_boundary.py [--calls 20000]
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from pydantic import BaseModel

from underlay.core.boundary import wrap_provider
from underlay.core.telemetry.config import TelemetryConfig
from underlay.core.telemetry.instrument import instrument
from underlay.core.telemetry.runtime import Telemetry


class Params(BaseModel):
    model: str


class Usage(BaseModel):
    prompt_tokens: int = 3
    completion_tokens: int = 5


class Answer(BaseModel):
    model: str
    usage: Usage


class Chunk(BaseModel):
    text: str
    usage: Usage | None = None


ANSWER = Answer(model="m", usage=Usage())
CHUNKS = [Chunk(text="x") for _ in range(19)] + [Chunk(text="", usage=Usage())]


class Provider:
    provider_id = "bench"

    async def chat(self, params: Params) -> Answer:
        return ANSWER

    async def stream(self, params: Params) -> AsyncIterator[Chunk]:
        for chunk in CHUNKS:
            yield chunk


async def _time(call: Callable[[], Awaitable[Any]], calls: int) -> float:
    for _ in range(200):  # warm up
        await call()
    best = float("inf")
    for _ in range(3):  # best of three: the least disturbed by the other work on the machine
        started = time.process_time()
        for _ in range(calls):
            await call()
        best = min(best, (time.process_time() - started) / calls)
    return best * 1e6


async def _drain(stream: AsyncIterator[Chunk]) -> None:
    async for _ in stream:
        pass


async def main(calls: int) -> None:
    telemetry = Telemetry(TelemetryConfig(store_spans=False), None)
    params = Params(model="m")
    variants = {
        "bare": Provider(),
        "patched (before)": instrument(Provider(), telemetry, layer="provider", api="inference", provider_id="b"),
        "handle, telemetry on": wrap_provider(Provider(), api="inference", provider_id="b", telemetry=telemetry),
        "handle, telemetry off": wrap_provider(Provider(), api="inference", provider_id="b"),
    }
    results: dict[str, tuple[float, float]] = {}
    for name, provider in variants.items():
        plain = await _time(lambda p=provider: p.chat(params), calls)
        streamed = await _time(lambda p=provider: _drain(p.stream(params)), max(calls // 10, 100))
        results[name] = (plain, streamed)
    print(f"{'variant':<24}{'chat cpu µs':>14}{'stream cpu µs':>16}")
    for name, (plain, streamed) in results.items():
        print(f"{name:<24}{plain:>14.2f}{streamed:>16.2f}")
    before, after = results["patched (before)"], results["handle, telemetry on"]
    bare, off = results["bare"], results["handle, telemetry off"]
    print(f"handle / patched, telemetry on:  chat {after[0] / before[0]:.2f}x, stream {after[1] / before[1]:.2f}x")
    print(f"handle / bare, telemetry off:    chat {off[0] / bare[0]:.2f}x, stream {off[1] / bare[1]:.2f}x")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20000)
    asyncio.run(main(parser.parse_args().calls))
