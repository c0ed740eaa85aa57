"""Tool-group lifecycle against real servers: deleting a group ends its MCP sessions, a group pointing
back at Underlay's own ``/mcp`` is refused or stopped instead of looping, and a server that keeps
failing is dialled with backoff (the error says how many attempts failed).

The fixture MCP server (``tests/fixtures/mcp/server.py``) writes every HTTP request it receives to a
log (``METHOD SESSION-ID``), so the tests see the session end on the server side.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.harness import RunningServer, free_port, start_server
from tests.integration.mcp_fixtures import McpFixtureServer

SELF_PORT = free_port()


def _config() -> dict[str, Any]:
    return {
        "apis": ["tool_runtime"],
        "providers": {
            "tool_runtime": [
                {
                    "provider_id": "mcp",
                    "provider_type": "remote::model-context-protocol",
                    "config": {"connect_timeout": 5, "timeout": 20},
                }
            ]
        },
        "tool_groups": [
            # Declared in the config, so it cannot be refused at registration: it must stop at run time.
            {"toolgroup_id": "myself", "provider_id": "mcp", "mcp_endpoint": f"http://127.0.0.1:{SELF_PORT}/mcp"},
            {"toolgroup_id": "gone", "provider_id": "mcp", "mcp_endpoint": f"http://127.0.0.1:{free_port()}/mcp"},
        ],
    }


@pytest.fixture(scope="module")
def fixture_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[McpFixtureServer]:
    base = tmp_path_factory.mktemp("mcp-lifecycle")
    server = McpFixtureServer(base, name="lifecycle-fixture", request_log=base / "requests.log").start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    running = start_server(_config(), tmp_path_factory.mktemp("tool-runtime-lifecycle"), port=SELF_PORT)
    yield running
    running.stop()


def _invoke(server: RunningServer, tool: str, kwargs: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    response = httpx.post(
        f"{server.v1}/tool-runtime/invoke", json={"tool_name": tool, "kwargs": kwargs or {}, **extra}, timeout=60
    )
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def _requests(log: Path) -> list[str]:
    return log.read_text().splitlines() if log.exists() else []


def test_deleting_a_tool_group_closes_its_mcp_sessions(server: RunningServer, fixture_server: McpFixtureServer) -> None:
    log = fixture_server.request_log
    assert log is not None
    created = httpx.post(
        f"{server.v1}/toolgroups",
        json={"toolgroup_id": "short-lived", "mcp_endpoint": {"uri": fixture_server.url}},
        timeout=30,
    )
    assert created.status_code == 200, created.text
    result = _invoke(server, "session_id", toolgroup_id="short-lived")
    session = result["content"][0]["text"]
    assert session not in ("", "none"), result

    deleted = httpx.delete(f"{server.v1}/toolgroups/short-lived", timeout=30)
    assert deleted.status_code == 200, deleted.text
    deadline = time.monotonic() + 15
    while f"DELETE {session}" not in _requests(log):
        assert time.monotonic() < deadline, f"the session was not ended on the server: {_requests(log)[-5:]}"
        time.sleep(0.1)
    # Nothing reconnects afterwards: no request of that session (or any other) reaches the server.
    seen = len(_requests(log))
    time.sleep(2.5)
    assert _requests(log)[seen:] == []
    # And the deleted group is gone for callers.
    missing = httpx.post(
        f"{server.v1}/tool-runtime/invoke",
        json={"tool_name": "session_id", "toolgroup_id": "short-lived"},
        timeout=30,
    )
    assert missing.status_code == 404 and missing.json()["error"]["param"] == "toolgroup_id"


def test_registering_underlays_own_mcp_is_refused(server: RunningServer) -> None:
    for uri in (f"{server.base_url}/mcp", f"http://localhost:{SELF_PORT}/mcp"):
        refused = httpx.post(
            f"{server.v1}/toolgroups", json={"toolgroup_id": "loop", "mcp_endpoint": {"uri": uri}}, timeout=60
        )
        assert refused.status_code == 400, refused.text
        error = refused.json()["error"]
        assert error["param"] == "mcp_endpoint" and error["code"] == "mcp_loop"
        assert "own /mcp endpoint" in error["message"] and "'loop'" in error["message"]
    groups = httpx.get(f"{server.v1}/toolgroups", timeout=30).json()["data"]
    assert "loop" not in {g["identifier"] for g in groups}


def test_a_configured_self_reference_stops_instead_of_looping(server: RunningServer) -> None:
    listing = httpx.get(f"{server.v1}/tool-runtime/list-tools", params={"toolgroup_id": "myself"}, timeout=60)
    assert listing.status_code == 502, listing.text
    message = listing.json()["error"]["message"]
    assert "MCP server 'myself'" in message and "loop" in message
    # Listing everything still answers: the looping group is left out, like a dead one.
    everything = httpx.get(f"{server.v1}/tools", timeout=60)
    assert everything.status_code == 200
    assert all(t["toolgroup_id"] != "myself" for t in everything.json()["data"])
    called = _invoke(server, "add", {"a": 1, "b": 2}, toolgroup_id="myself")
    assert called["error_code"] == "tool_error" and "MCP server 'myself'" in called["error_message"]
    assert "/mcp endpoint" in called["error_message"] and "in a loop" in called["error_message"]
    assert httpx.get(f"{server.v1}/health", timeout=10).status_code == 200
    assert "Traceback" not in server.log_path.read_text()


def test_a_cycle_through_another_underlay_server_stops(tmp_path: Path) -> None:
    """A's group points at B's /mcp and B's at A's: a listing goes A, B, then back to A, which refuses
    (its hop id came back), and B leaves that group out; nothing recurses."""
    port_a, port_b = free_port(), free_port()

    def config(peer: int) -> dict[str, Any]:
        base = _config()
        base["providers"]["tool_runtime"][0]["config"] = {"connect_timeout": 5, "timeout": 10, "list_timeout": 10}
        base["tool_groups"] = [
            {"toolgroup_id": "peer", "provider_id": "mcp", "mcp_endpoint": f"http://127.0.0.1:{peer}/mcp"}
        ]
        return base

    a = start_server(config(port_b), tmp_path / "a", port=port_a)
    try:
        b = start_server(config(port_a), tmp_path / "b", port=port_b)
        try:
            listing = httpx.get(f"{a.v1}/tool-runtime/list-tools", params={"toolgroup_id": "peer"}, timeout=60)
            assert listing.status_code == 200, listing.text
            assert listing.json()["data"] == []  # B offers no tools of its own, and A's were refused
            assert "own MCP client" in b.log_path.read_text()  # B logged A's refusal of the cycle
            for server in (a, b):
                assert httpx.get(f"{server.v1}/health", timeout=10).status_code == 200
                assert "Traceback" not in server.log_path.read_text()
        finally:
            b.stop()
    finally:
        a.stop()


def test_a_failing_server_is_retried_with_backoff(server: RunningServer) -> None:
    errors = [_invoke(server, "add", {"a": 1, "b": 2}, toolgroup_id="gone") for _ in range(4)]
    assert all(e["error_code"] == "mcp_unavailable" for e in errors), errors
    assert all("MCP server 'gone'" in e["error_message"] for e in errors)
    held_back = [e for e in errors[1:] if "failed connection attempts in a row; next attempt in" in e["error_message"]]
    assert held_back, errors  # calls inside the backoff window are answered without dialling
    listing = httpx.get(f"{server.v1}/tool-runtime/list-tools", params={"toolgroup_id": "gone"}, timeout=60)
    assert listing.status_code == 503 and "'gone'" in listing.json()["error"]["message"]
