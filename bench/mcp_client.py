"""The MCP client's lifecycle figures: how fast a self-referencing tool group is refused or stopped, and how
soon a deleted group's session ends on its server.

Issue 9 saw registering Underlay's own ``/mcp`` as a tool group stall 32 s with ~300 reconnect lines,
and a deleted group's session reconnect for minutes. This starts one Underlay (tool runtime only, a
config group pointing at its own ``/mcp``) and the test suite's MCP fixture server (logging every
request it receives), then prints:

- registering ``http://127.0.0.1:PORT/mcp`` as a group: time to the 400 (median of 5);
- listing the configured self-referencing group: time to the 502 naming the loop (median of 5);
- deleting a group with a live session: time until the MCP server receives the session's DELETE, and
  whether any request reaches it in the 3 s after.

    python bench/mcp_client.py
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, free_port, start_underlay, wait_http  # noqa: E402

FIXTURE = ROOT / "tests" / "fixtures" / "mcp" / "server.py"


def _timed(call: object, runs: int = 5) -> tuple[float, int]:
    spent: list[float] = []
    status = 0
    for _ in range(runs):
        start = time.perf_counter()
        status = call()  # type: ignore[operator]
        spent.append((time.perf_counter() - start) * 1000)
    return statistics.median(spent), status


def main() -> int:
    work = Path(tempfile.mkdtemp(prefix="bench-mcp-client-"))
    port, fixture_port = free_port(), free_port()
    request_log = work / "requests.log"
    fixture = subprocess.Popen(
        [sys.executable, str(FIXTURE), "--transport", "streamable-http", "--port", str(fixture_port)]
        + ["--request-log", str(request_log)],
        stdout=(work / "fixture.log").open("wb"),
        stderr=subprocess.STDOUT,
    )
    config = {
        "state_dir": str(work / "state"),
        "apis": ["tool_runtime"],
        "providers": {"tool_runtime": [{"provider_id": "mcp", "provider_type": "remote::model-context-protocol"}]},
        "tool_groups": [
            {"toolgroup_id": "myself", "provider_id": "mcp", "mcp_endpoint": f"http://127.0.0.1:{port}/mcp"}
        ],
    }
    config_path = work / "run.yaml"
    config_path.write_text(yaml.safe_dump(config))
    server = start_underlay(config_path, port, work / "server.log")
    base = f"http://127.0.0.1:{port}/v1"
    try:
        wait_http(f"{base}/health", server)
        for _ in range(600):  # the fixture listens once its MCP app is up (any HTTP answer will do)
            try:
                httpx.get(f"http://127.0.0.1:{fixture_port}/mcp", timeout=0.5)
                break
            except httpx.HTTPError:
                time.sleep(0.05)

        def register_self() -> int:
            body = {"toolgroup_id": "loop", "mcp_endpoint": {"uri": f"http://127.0.0.1:{port}/mcp"}}
            return httpx.post(f"{base}/toolgroups", json=body, timeout=60).status_code

        def list_self() -> int:
            params = {"toolgroup_id": "myself"}
            return httpx.get(f"{base}/tool-runtime/list-tools", params=params, timeout=60).status_code

        ms, status = _timed(register_self)
        print(f"register own /mcp as a tool group: HTTP {status} in {ms:.0f} ms (median of 5)")
        ms, status = _timed(list_self)
        print(f"list a configured self-referencing group: HTTP {status} in {ms:.0f} ms (median of 5)")

        group = {"toolgroup_id": "short-lived", "mcp_endpoint": {"uri": f"http://127.0.0.1:{fixture_port}/mcp"}}
        httpx.post(f"{base}/toolgroups", json=group, timeout=60).raise_for_status()
        call = {"tool_name": "session_id", "toolgroup_id": "short-lived"}
        session = httpx.post(f"{base}/tool-runtime/invoke", json=call, timeout=60).json()["content"][0]["text"]
        start = time.perf_counter()
        httpx.delete(f"{base}/toolgroups/short-lived", timeout=60).raise_for_status()
        while f"DELETE {session}" not in request_log.read_text():
            if time.perf_counter() - start > 30:
                print("deleted group: the session was not ended within 30 s")
                return 0
            time.sleep(0.005)
        ended = (time.perf_counter() - start) * 1000
        seen = len(request_log.read_text().splitlines())
        time.sleep(3)
        later = len(request_log.read_text().splitlines()) - seen
        print(
            f"delete a group with a live session: server saw DELETE after {ended:.0f} ms; {later} requests in 3 s after"
        )
    finally:
        server.terminate()
        fixture.kill()
        server.wait(30)
        fixture.wait(10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
