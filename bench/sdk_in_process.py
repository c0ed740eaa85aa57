"""What ``Underlay.in_process`` costs: start and stop of a stack on a loopback thread, and per call.

Why: docs/sdk.md explains why the SDK's in-process mode serves the stack with uvicorn on a loopback
port rather than an in-memory transport (the sync client needs a sync transport, streaming must not be
buffered). This prints what that choice costs against the in-memory alternative the tests use
(``httpx.ASGITransport``), on the same echo config.

Figures (reported only; no target is promised):
- seconds from ``Underlay.in_process(config)`` to its return (the stack answering), and for ``close()``;
- p50/p99 of ``client.shields.list()`` (an SDK resource, parsed into the contract's models) through the
  sync client over loopback, the async client over loopback, and the async client over ASGITransport.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]
from _common import percentile  # noqa: E402

from tests.inprocess.harness import echo_config, external_provider_on_path, serve_in_process  # noqa: E402
from underlay import AsyncUnderlay, Underlay  # noqa: E402

REQUESTS = 300
ECHO = {"provider_id": "echo", "provider_type": "remote::echo-test", "config": {}}


def config(state: Path) -> dict[str, Any]:
    return echo_config(
        state,
        apis=["inference", "models", "safety"],
        providers={"inference": [ECHO], "safety": [{"provider_id": "pii", "provider_type": "inline::pii"}]},
        shields=[{"shield_id": "pii", "provider_id": "pii"}],
    )


def ms(samples: list[float]) -> str:
    return f"p50 {percentile(samples, 50) * 1000:.2f} ms, p99 {percentile(samples, 99) * 1000:.2f} ms"


async def async_calls(client: AsyncUnderlay) -> list[float]:
    timings = []
    for _ in range(REQUESTS):
        begin = time.perf_counter()
        await client.shields.list()
        timings.append(time.perf_counter() - begin)
    return timings


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp, external_provider_on_path(Path(tmp) / "site"):
        begin = time.perf_counter()
        client = Underlay.in_process(config(Path(tmp) / "loopback"), max_retries=0)
        started = time.perf_counter() - begin
        client.shields.list()  # warm
        sync_timings = []
        for _ in range(REQUESTS):
            begin = time.perf_counter()
            client.shields.list()
            sync_timings.append(time.perf_counter() - begin)
        assert client._underlay_server is not None
        aclient = AsyncUnderlay(base_url=client._underlay_server.v1, max_retries=0)
        loop_timings = asyncio.run(async_calls(aclient))
        begin = time.perf_counter()
        client.close()
        stopped = time.perf_counter() - begin

        async def over_asgi() -> list[float]:
            async with serve_in_process(config(Path(tmp) / "asgi")) as app:
                sdk = AsyncUnderlay(base_url=app.v1, max_retries=0, http_client=app.http)
                await sdk.shields.list()  # warm
                return await async_calls(sdk)

        asgi_timings = asyncio.run(over_asgi())

    print(f"Underlay.in_process(echo + pii): started in {started:.2f} s, closed in {stopped:.2f} s")
    print(f"shields.list(), {REQUESTS} calls each:")
    print(f"  Underlay (sync) over loopback        {ms(sync_timings)}")
    print(f"  AsyncUnderlay over loopback          {ms(loop_timings)}")
    print(f"  AsyncUnderlay over ASGITransport     {ms(asgi_timings)}")


if __name__ == "__main__":
    main()
