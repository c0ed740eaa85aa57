"""MCP credentials never come back to a client, nor into storage, when an MCP server echoes them.

A real Underlay server (the echo inference provider, the MCP client, the Responses API on SQLite)
drives a real MCP server (``tests/fixtures/mcp/echo_headers_server.py``) that fails and quotes every
request header it got: a tool whose error text lists them, and a path that answers HTTP 500 with them.
The credentials are the operator's (a configured tool group's ``authorization`` and headers) and a
caller's (per-request ``authorization``/``headers`` on invoke, and on a Responses ``mcp`` tool). Each
is written ``name -> value`` by the server, a shape no generic secret pattern knows, and the
``X-Workspace`` values look like ordinary words: only the MCP client's masking of its own
connection's credentials hides them. Every answer (invoke, list, Responses create in both modes,
retrieve, input items), every byte of the state directory (stored rows) and the server log are
searched for each of them.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.harness import FIXTURES, RunningServer, free_port, start_server

CFG_TOKEN = "cfgTok-7Qm2Lx9Vw4Rt"
CFG_WORKSPACE = "cfgws-plainword-31"
REQ_TOKEN = "reqTok-Hh5Jd8Kp2Zc"
REQ_WORKSPACE = "reqws-plainword-64"
SECRETS = (CFG_TOKEN, CFG_WORKSPACE, REQ_TOKEN, REQ_WORKSPACE)
PER_REQUEST = {"authorization": REQ_TOKEN, "headers": {"X-Workspace": REQ_WORKSPACE}}


class EchoHeadersServer:
    """The fixture MCP server process on a free loopback port."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        log = (workdir / "echo-headers-mcp.log").open("ab")
        script = FIXTURES / "mcp" / "echo_headers_server.py"
        self.process = subprocess.Popen(
            [sys.executable, str(script), "--port", str(self.port)], stdout=log, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert self.process.poll() is None, "the echo-headers MCP fixture exited"
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError("the echo-headers MCP fixture did not listen")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/mcp"

    @property
    def broken_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/broken/mcp"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


@pytest.fixture(scope="module")
def mcp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EchoHeadersServer]:
    fixture = EchoHeadersServer(tmp_path_factory.mktemp("echo-headers"))
    yield fixture
    fixture.stop()


@pytest.fixture(scope="module")
def server(
    mcp: EchoHeadersServer, tmp_path_factory: pytest.TempPathFactory, external_provider_path: Path
) -> Iterator[RunningServer]:
    configured = {"authorization": "${env.CFG_TOKEN}", "headers": {"X-Workspace": "${env.CFG_WORKSPACE}"}}
    config = {
        "apis": ["inference", "models", "tool_runtime", "conversations", "responses"],
        "providers": {
            "inference": [{"provider_id": "echo", "provider_type": "remote::echo-test", "config": {}}],
            "tool_runtime": [
                {
                    "provider_id": "mcp",
                    "provider_type": "remote::model-context-protocol",
                    "config": {"connect_timeout": 5, "timeout": 10},
                }
            ],
            "responses": [{"provider_id": "builtin", "provider_type": "inline::builtin"}],
        },
        "tool_groups": [
            {"toolgroup_id": "leaky", "provider_id": "mcp", "mcp_endpoint": mcp.url, **configured},
            {"toolgroup_id": "broken", "provider_id": "mcp", "mcp_endpoint": mcp.broken_url, **configured},
        ],
    }
    running = start_server(
        config,
        tmp_path_factory.mktemp("mcp-secret-leak"),
        env={"CFG_TOKEN": CFG_TOKEN, "CFG_WORKSPACE": CFG_WORKSPACE},
        extra_pythonpath=[external_provider_path],
    )
    yield running
    running.stop()


def assert_no_secret(text: str, where: str) -> None:
    for secret in SECRETS:
        assert secret[:10] not in text, f"{where} shows {secret[:10]}...: {text[:2000]}"


def _invoke(server: RunningServer, **body: Any) -> dict[str, Any]:
    answer = httpx.post(f"{server.v1}/tool-runtime/invoke", json=body, timeout=60)
    assert answer.status_code == 200, answer.text
    assert_no_secret(answer.text, "invoke")
    result: dict[str, Any] = answer.json()
    assert result["error_message"], result
    return result


def test_a_tool_error_that_quotes_the_headers_is_masked(server: RunningServer, mcp: EchoHeadersServer) -> None:
    configured = _invoke(server, tool_name="headers_then_fail", toolgroup_id="leaky")
    # The server did echo them (the masks stand where the values were): the test is not vacuous.
    assert "x-workspace -> ***" in configured["error_message"] and configured["error_code"] == "tool_error"
    per_request = _invoke(server, tool_name="headers_then_fail", toolgroup_id="leaky", **PER_REQUEST)
    assert "x-workspace -> ***" in per_request["error_message"]
    direct = _invoke(server, tool_name="headers_then_fail", mcp_endpoint={"uri": mcp.url}, **PER_REQUEST)
    assert "x-workspace -> ***" in direct["error_message"]


def test_a_transport_failure_that_quotes_the_headers_is_masked(server: RunningServer) -> None:
    listed = httpx.get(f"{server.v1}/tool-runtime/list-tools", params={"toolgroup_id": "broken"}, timeout=60)
    assert listed.status_code == 502 and "HTTP 500" in listed.json()["error"]["message"], listed.text
    assert_no_secret(listed.text, "list-tools")
    configured = _invoke(server, tool_name="add", kwargs={"a": 1, "b": 2}, toolgroup_id="broken")
    assert "HTTP 500" in configured["error_message"] and "x-workspace -> ***" in configured["error_message"]
    per_request = _invoke(server, tool_name="add", kwargs={"a": 1, "b": 2}, toolgroup_id="broken", **PER_REQUEST)
    assert "x-workspace -> ***" in per_request["error_message"]


def _mcp_tool(url: str) -> dict[str, Any]:
    return {"type": "mcp", "server_label": "leaky", "server_url": url, "require_approval": "never", **PER_REQUEST}


def _check_response(server: RunningServer, response_id: str) -> dict[str, Any]:
    """Retrieve the response and its input items; neither shows a credential."""
    retrieved = httpx.get(f"{server.v1}/responses/{response_id}", timeout=60)
    assert retrieved.status_code == 200, retrieved.text
    assert_no_secret(retrieved.text, "GET /v1/responses/{id}")
    items = httpx.get(f"{server.v1}/responses/{response_id}/input_items", timeout=60)
    assert items.status_code == 200, items.text
    assert_no_secret(items.text, "input_items")
    body: dict[str, Any] = retrieved.json()
    return body


def test_responses_mcp_listing_failure_is_masked_in_the_answer_and_the_store(
    server: RunningServer, mcp: EchoHeadersServer
) -> None:
    client = server.openai(timeout=60)
    created = client.responses.with_raw_response.create(
        model="echo/echo", input="hello", tools=[_mcp_tool(mcp.broken_url)], max_output_tokens=8
    )
    assert_no_secret(created.text, "responses.create")
    response = created.parse()
    listing = response.output[0]
    assert listing.type == "mcp_list_tools" and "HTTP 500" in (listing.error or ""), listing
    assert "x-workspace -> ***" in (listing.error or "")
    stored = _check_response(server, response.id)
    assert stored["output"][0]["error"] == listing.error

    with httpx.stream(
        "POST",
        f"{server.v1}/responses",
        json={"model": "echo/echo", "input": "hello", "tools": [_mcp_tool(mcp.broken_url)], "stream": True},
        timeout=60,
    ) as streamed:
        text = "".join(streamed.iter_text())
    assert "response.mcp_list_tools.failed" in text
    assert_no_secret(text, "the responses event stream")


def test_responses_mcp_call_failure_is_masked_in_the_answer_and_the_store(
    server: RunningServer, mcp: EchoHeadersServer
) -> None:
    client = server.openai(timeout=60)
    request = {
        "type": "mcp_approval_request",
        "id": "mcpr_leak0001",
        "server_label": "leaky",
        "name": "headers_then_fail",
        "arguments": "{}",
    }
    created = client.responses.with_raw_response.create(
        model="echo/echo",
        input=[request, {"type": "mcp_approval_response", "approval_request_id": "mcpr_leak0001", "approve": True}],
        tools=[_mcp_tool(mcp.url)],
        max_output_tokens=8,
    )
    assert_no_secret(created.text, "responses.create")
    call = next(o for o in created.parse().output if o.type == "mcp_call")
    error = json.dumps(call.error.model_dump() if hasattr(call.error, "model_dump") else call.error)
    assert call.status == "failed" and "refused" in error and "x-workspace -> ***" in error, call
    _check_response(server, created.parse().id)


def test_nothing_stored_or_logged_holds_a_credential(server: RunningServer) -> None:
    """Runs last in this module: every row the tests above wrote, in any file of the state directory."""
    state = server.config_path.parent / "state"
    files = [p for p in state.rglob("*") if p.is_file()]
    assert files, "the server wrote no state"
    for path in files:
        data = path.read_bytes()
        for secret in SECRETS:
            assert secret[:10].encode() not in data, f"{path} holds {secret[:10]}..."
    assert_no_secret(server.log(), "the server log")
