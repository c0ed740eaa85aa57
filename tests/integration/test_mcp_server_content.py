"""Every kind of tool content survives Underlay's ``/mcp`` proxy unchanged.

A real MCP server (``tests/fixtures/mcp/content_server.py``) is registered as a tool group; an
``mcp`` SDK client calls its tools through Underlay's ``/mcp``. Before the fix, an embedded resource
came out as plain text (its URI and type lost) and an embedded blob as a bare link (its bytes lost).
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import mcp_types as types
import pytest
from mcp import Client

from tests.fixtures.mcp import content_server as fixture
from tests.integration.harness import FIXTURES, RunningServer, free_port, start_server

CONTENT_SERVER = FIXTURES / "mcp" / "content_server.py"


def start_content_server(workdir: Path) -> tuple[subprocess.Popen[bytes], str]:
    """The content fixture on a free loopback port; its process and its ``/mcp`` URL."""
    port = free_port()
    log = (workdir / f"content-server-{port}.log").open("wb")
    process = subprocess.Popen([sys.executable, str(CONTENT_SERVER), "--port", str(port)], stdout=log, stderr=log)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert process.poll() is None, f"the content fixture exited with {process.returncode}"
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return process, f"http://127.0.0.1:{port}/mcp"
        except OSError:
            time.sleep(0.05)
    process.kill()
    raise RuntimeError("the content fixture did not listen within 30s")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    workdir = tmp_path_factory.mktemp("mcp-content")
    upstream, url = start_content_server(workdir)
    config = {
        "apis": ["tool_runtime"],
        "providers": {"tool_runtime": [{"provider_id": "mcp", "provider_type": "remote::model-context-protocol"}]},
        "tool_groups": [{"toolgroup_id": "content", "provider_id": "mcp", "mcp_endpoint": url}],
    }
    running = start_server(config, workdir)
    try:
        yield running
    finally:
        running.stop()
        upstream.terminate()
        upstream.wait(10)


async def test_media_and_text_pass_through(server: RunningServer) -> None:
    async with Client(f"{server.base_url}/mcp") as client:
        text = await client.call_tool("test_simple_text", {})
        assert text.content == [types.TextContent(type="text", text=fixture.SIMPLE_TEXT)]
        image = await client.call_tool("test_image_content", {})
        assert image.content == [types.ImageContent(type="image", data=fixture.PNG, mime_type="image/png")]
        audio = await client.call_tool("test_audio_content", {})
        assert audio.content == [types.AudioContent(type="audio", data=fixture.WAV, mime_type="audio/wav")]


async def test_embedded_resources_stay_embedded(server: RunningServer) -> None:
    async with Client(f"{server.base_url}/mcp") as client:
        embedded = await client.call_tool("test_embedded_resource", {})
        assert not embedded.is_error
        [block] = embedded.content
        assert isinstance(block, types.EmbeddedResource)
        assert block.resource == types.TextResourceContents(
            uri="test://embedded-resource", mime_type="text/plain", text=fixture.EMBEDDED_TEXT
        )

        blob_and_link = await client.call_tool("binary_and_link", {})
        blob, link = blob_and_link.content
        assert isinstance(blob, types.EmbeddedResource)
        assert isinstance(blob.resource, types.BlobResourceContents) and blob.resource.blob == fixture.BLOB
        assert isinstance(link, types.ResourceLink) and link.uri == "test://linked"

        mixed = await client.call_tool("test_multiple_content_types", {})
        assert [b.type for b in mixed.content] == ["text", "image", "resource"]


async def test_tool_errors_and_schemas_pass_through(server: RunningServer) -> None:
    async with Client(f"{server.base_url}/mcp") as client:
        failed = await client.call_tool("test_error_handling", {})
        assert failed.is_error and "always fails" in failed.content[0].text  # type: ignore[union-attr]
        tools = {t.name: t for t in (await client.list_tools()).tools}
    assert tools["json_schema_2020_12_tool"].input_schema == fixture.SCHEMA_2020_12


async def test_a_proxied_tools_progress_reaches_the_caller(server: RunningServer) -> None:
    """A client that asks for progress gets the upstream tool's notifications, in order, before the result
    (the call is answered as an event stream); before, the JSON response dropped them."""
    seen: list[tuple[float, float | None, str | None]] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append((progress, total, message))

    async with Client(f"{server.base_url}/mcp") as client:
        result = await client.call_tool(fixture.PROGRESS_TOOL, {}, progress_callback=on_progress)
        quiet = await client.call_tool(fixture.PROGRESS_TOOL, {})  # no token: a plain JSON answer, no progress
    assert not result.is_error and result.content[0].text == "Done in 3 steps."  # type: ignore[union-attr]
    assert seen == [(1, 3, "step 1"), (2, 3, "step 2"), (3, 3, "step 3")]
    assert not quiet.is_error and len(seen) == 3


def test_raw_posts_get_json_unless_they_ask_for_progress(server: RunningServer) -> None:
    """Which transport answers: SSE only for a tools/call with a progress token from a client that accepts
    it; JSON for the rest; a body over the limit is refused, whatever it holds."""
    url = f"{server.base_url}/mcp"
    both = {"Accept": "application/json, text/event-stream", "MCP-Protocol-Version": "2025-06-18"}
    call = {
        "jsonrpc": "2.0",
        "id": 3,
        "method": "tools/call",
        "params": {"name": fixture.PROGRESS_TOOL, "arguments": {}, "_meta": {"progressToken": "tok-1"}},
    }
    streamed = httpx.post(url, json=call, headers=both, timeout=30)
    assert streamed.status_code == 200 and streamed.headers["content-type"].startswith("text/event-stream")
    events = [json.loads(line[5:]) for line in streamed.text.splitlines() if line.startswith("data:") and line[5:]]
    progress = [e["params"]["progress"] for e in events if e.get("method") == "notifications/progress"]
    assert progress == [1, 2, 3] and events[-1]["result"]["content"][0]["text"] == "Done in 3 steps."

    plain = httpx.post(url, json={**call, "params": {"name": fixture.PROGRESS_TOOL}}, headers=both, timeout=30)
    assert plain.headers["content-type"].startswith("application/json"), plain.text
    assert plain.json()["result"]["content"][0]["text"] == "Done in 3 steps."

    padded = {**call, "params": {**call["params"], "arguments": {"pad": "x" * (4 * 1024 * 1024)}}}
    too_big = httpx.post(url, json=padded, headers=both, timeout=30)
    assert too_big.status_code == 413, too_big.text
