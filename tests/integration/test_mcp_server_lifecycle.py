"""``/mcp`` as part of a server's life: a clean stop after MCP clients came, and its own route name.

A real ``underlay run`` subprocess, driven by the ``mcp`` SDK's client over streamable HTTP, then
stopped with SIGTERM the way a process manager stops it. Before the fix, the MCP session manager's
task group was entered in the first MCP request's task and left from the lifespan's, so shutdown
logged "Application shutdown failed" and the stack never stopped (while the exit code said 0).
"""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path
from typing import Any

import httpx
import httpx2
import pytest
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client

from tests.integration.harness import RunningServer, start_server

STOPPED = "stack stopped"


def _config() -> dict[str, Any]:
    return {
        "apis": ["files", "telemetry"],
        "providers": {
            "files": [{"provider_id": "localfs", "provider_type": "inline::localfs", "config": {"root": "f"}}]
        },
    }


async def _use_mcp(server: RunningServer) -> None:
    async with (
        httpx2.AsyncClient(timeout=60) as http,
        streamable_http_client(f"{server.base_url}/mcp", http_client=http) as (read, write),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        await session.list_tools()


def _metric(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{key}="{value}"' in line for key, value in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


async def test_sigterm_after_an_mcp_client_stops_the_stack_cleanly(tmp_path: Path) -> None:
    server = start_server(_config(), tmp_path)
    try:
        await _use_mcp(server)
        await _use_mcp(server)  # a second client, after the session manager started on the first
    finally:
        code = server.stop(signal.SIGTERM)
    log = server.log()
    assert "shutdown failed" not in log.lower(), log[-3000:]
    assert "Traceback" not in log, log[-3000:]
    assert STOPPED in log, log[-3000:]
    assert code == 0


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Any:
    running = start_server(_config(), tmp_path_factory.mktemp("mcp-route"))
    yield running
    running.stop()


def test_mcp_requests_are_named_in_metrics_and_traces(server: RunningServer) -> None:
    asyncio.run(_use_mcp(server))
    init = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "raw", "version": "0"}},
    }
    headers = {"Accept": "application/json, text/event-stream"}
    reply = httpx.post(f"{server.base_url}/mcp", json=init, headers=headers, timeout=30)
    assert reply.status_code == 200, reply.text
    trace_id = reply.headers["x-trace-id"]

    metrics = httpx.get(f"{server.base_url}/metrics", timeout=10).text
    assert _metric(metrics, "underlay_requests_total", http_route="/mcp", http_request_method="POST") >= 3
    assert _metric(metrics, "underlay_requests_total", http_route="<unmatched>") == 0

    deadline = time.monotonic() + 30  # spans are written in batches
    while (summary := httpx.get(f"{server.v1}/telemetry/traces/{trace_id}", timeout=10)).status_code == 404:
        assert time.monotonic() < deadline, "the /mcp trace was never stored"
        time.sleep(0.2)
    assert summary.json()["route"] == "/mcp", summary.text
