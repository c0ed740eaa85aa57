"""What calling a deployed agent as a model adds: ``model="agent/<name>"`` vs the equivalent request.

Everything runs on loopback, as separate processes: Underlay (``python -m underlay run``: Responses on
``inline::builtin``, the Agents API, ``remote::passthrough`` inference) and ``agent_upstream.py``, the
scripted model of the agent-loop benchmark, which answers at once (a 40-token streamed answer here, no
tool calls), so what differs between the two requests is Underlay's own work.

An agent ``bench-desk`` is deployed with instructions, a client-side function tool and a temperature.
Then, interleaved request by request so machine load hits both alike (raw HTTP, JSON read in full):

- Responses: ``{"model": "agent/bench-desk", "input": Q}`` vs ``{"model": "agent", "input": Q,
  "instructions": ..., "tools": [...], "temperature": ...}`` (what the agent expands to);
- chat completions: ``model="agent/bench-desk"`` (translated to Responses and back) vs the same
  equivalent Responses request, the path a chat client's call takes instead.

The added time is the difference of the p50s (and of the p99s). Target: <= 2 ms p50 for Responses.
Store is off on both sides, as a plain chat completion stores nothing.

    python bench/agent_invoke.py [--requests 300] [--warmup 30]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]
from _common import free_port, percentile, wait_http  # noqa: E402

from tests.integration.harness import start_server  # noqa: E402

MODEL = "agent"
QUESTION = '{"calls": []}'  # the scripted model's plan: no tool calls, answer with text
INSTRUCTIONS = "You are the bench desk. Answer briefly and cite your sources."
FUNCTION = {
    "type": "function",
    "name": "lookup_order",
    "description": "Look up an order by id",
    "parameters": {"type": "object", "properties": {"order_id": {"type": "string"}}, "required": ["order_id"]},
}


def _config(stub_port: int) -> dict[str, Any]:
    return {
        "apis": ["inference", "models", "agents", "responses"],
        "providers": {
            "inference": [
                {
                    "provider_id": "passthrough",
                    "provider_type": "remote::passthrough",
                    "config": {"base_url": f"http://127.0.0.1:{stub_port}/v1"},
                }
            ],
            "responses": [{"provider_id": "builtin", "provider_type": "inline::builtin"}],
        },
        "server": {"log_level": "warning"},
    }


def _timed(http: httpx.Client, path: str, body: dict[str, Any]) -> float:
    start = time.perf_counter()
    response = http.post(path, json=body)
    _ = response.content
    elapsed = (time.perf_counter() - start) * 1000
    if response.status_code != 200:
        raise RuntimeError(f"{path} answered {response.status_code}: {response.text[:300]}")
    return elapsed


def _row(name: str, values: list[float]) -> str:
    return f"  {name:<44} p50 {percentile(values, 50):7.2f} ms   p99 {percentile(values, 99):7.2f} ms"


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=30)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="underlay-agent-invoke-"))
    stub_port = free_port()
    log = (workdir / "upstream.log").open("wb")
    stub = subprocess.Popen(
        [sys.executable, str(HERE / "agent_upstream.py"), str(stub_port)], stdout=log, stderr=subprocess.STDOUT
    )
    server = None
    try:
        wait_http(f"http://127.0.0.1:{stub_port}/v1/models", stub)
        server = start_server(_config(stub_port), workdir, timeout=300)
        http = httpx.Client(base_url=server.v1, timeout=60)
        deployed = http.post(
            "/agents",
            json={
                "name": "bench-desk",
                "model": MODEL,
                "instructions": INSTRUCTIONS,
                "tools": [FUNCTION],
                "temperature": 0.2,
            },
        )
        if deployed.status_code != 200:
            raise RuntimeError(f"deploy failed: {deployed.text[:300]}")
        via_agent = {"model": "agent/bench-desk", "input": QUESTION, "store": False}
        equivalent = {
            "model": MODEL,
            "input": QUESTION,
            "instructions": INSTRUCTIONS,
            "tools": [FUNCTION],
            "temperature": 0.2,
            "store": False,
        }
        chat = {"model": "agent/bench-desk", "messages": [{"role": "user", "content": QUESTION}]}
        print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} (shared with other work)")
        for _ in range(args.warmup):
            _timed(http, "/responses", via_agent)
            _timed(http, "/responses", equivalent)
            _timed(http, "/chat/completions", chat)
        agent_ms, plain_ms, chat_ms = [], [], []
        for _ in range(args.requests):
            agent_ms.append(_timed(http, "/responses", via_agent))
            plain_ms.append(_timed(http, "/responses", equivalent))
            chat_ms.append(_timed(http, "/chat/completions", chat))
        print(f"{args.requests} requests each, interleaved, after {args.warmup} warm-up rounds")
        print(_row("Responses, model=agent/bench-desk", agent_ms))
        print(_row("Responses, the equivalent request", plain_ms))
        print(_row("chat completions, model=agent/bench-desk", chat_ms))
        added = percentile(agent_ms, 50) - percentile(plain_ms, 50)
        added_chat = percentile(chat_ms, 50) - percentile(plain_ms, 50)
        print(f"added by the agent (Responses): p50 {added:+.2f} ms (target <= 2 ms)")
        print(f"added by the agent (chat completions, vs the equivalent Responses request): p50 {added_chat:+.2f} ms")
    finally:
        if server is not None:
            server.stop()
        stub.terminate()
        stub.wait(timeout=10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
