"""``/mcp`` hands on the resources, templates and prompts of registered MCP tool groups.

A real MCP server (``tests/fixtures/mcp/content_server.py``) with resources and prompts is started;
Alice registers it as a tool group over the REST API on a real Underlay with API-key auth and the
Files API. Through ``/mcp`` (the ``mcp`` SDK's ``ClientSession``), Alice lists, reads and gets them as
the server sent them; Bob, who cannot see Alice's group, gets none of them. Underlay's own ``underlay:``
URIs and prompt names cannot be taken over by the upstream server (the fixture tries both), and a
second group whose server is down does not hide the first. Before this, every upstream URI or prompt
read as "unknown".
"""

from __future__ import annotations

import hashlib
import subprocess
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager

import httpx
import httpx2
import mcp_types as types
import pytest
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from tests.fixtures.mcp import content_server as fixture
from tests.integration.harness import RunningServer, free_port, start_server
from tests.integration.test_mcp_server_content import start_content_server

KEYS = {"alice": "sk-test-upstream-alice", "bob": "sk-test-upstream-bob00"}
GROUP_META = "underlay/toolgroup_id"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    workdir = tmp_path_factory.mktemp("mcp-upstream")
    upstream: subprocess.Popen[bytes]
    upstream, url = start_content_server(workdir)
    config = {
        "apis": ["files", "tool_runtime"],
        "providers": {
            "files": [{"provider_id": "localfs", "provider_type": "inline::localfs", "config": {"root": "f"}}],
            "tool_runtime": [{"provider_id": "mcp", "provider_type": "remote::model-context-protocol"}],
        },
        "server": {
            "auth": {
                "providers": [
                    {
                        "type": "api_keys",
                        "keys": [
                            {"sha256": hashlib.sha256(key.encode()).hexdigest(), "principal": name}
                            for name, key in KEYS.items()
                        ],
                    }
                ]
            }
        },
    }
    running = start_server(config, workdir)
    try:
        alice = {"Authorization": f"Bearer {KEYS['alice']}"}
        for group, endpoint in (("a-down", f"http://127.0.0.1:{free_port()}/mcp"), ("content", url)):
            registered = httpx.post(
                f"{running.v1}/toolgroups",
                headers=alice,
                json={"toolgroup_id": group, "mcp_endpoint": {"uri": endpoint}},
                timeout=30,
            )
            assert registered.status_code == 200, registered.text
        yield running
    finally:
        running.stop()
        upstream.terminate()
        upstream.wait(10)


@asynccontextmanager
async def session_as(server: RunningServer, user: str) -> AsyncIterator[ClientSession]:
    headers = {"Authorization": f"Bearer {KEYS[user]}"}
    async with (
        httpx2.AsyncClient(headers=headers, timeout=60) as http,
        streamable_http_client(f"{server.base_url}/mcp", http_client=http) as (read, write),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        yield session


async def test_upstream_resources_are_listed_and_read_as_sent(server: RunningServer) -> None:
    async with session_as(server, "alice") as alice:
        listed = {r.uri: r for r in (await alice.list_resources()).resources}
        templates = {t.uri_template: t for t in (await alice.list_resource_templates()).resource_templates}
        text = await alice.read_resource("test://static-text")
        binary = await alice.read_resource("test://static-binary")
        item = await alice.read_resource("test://template/4711/data")
    assert {"test://static-text", "test://static-binary", "test://watched-resource"} <= set(listed)
    assert listed["test://static-text"].meta == {GROUP_META: "content"}
    assert listed["test://static-text"].mime_type == "text/plain"
    assert templates["test://template/{id}/data"].meta == {GROUP_META: "content"}
    assert "underlay://files/{file_id}" in templates  # Underlay's own stay, first
    assert text.contents == [
        types.TextResourceContents(uri="test://static-text", mime_type="text/plain", text=fixture.STATIC_TEXT)
    ]
    assert binary.contents == [
        types.BlobResourceContents(
            uri="test://static-binary", mime_type="application/octet-stream", blob=fixture.STATIC_BLOB
        )
    ]
    [contents] = item.contents
    assert isinstance(contents, types.TextResourceContents) and '"id": "4711"' in contents.text


async def test_upstream_prompts_are_listed_and_filled_in_by_their_server(server: RunningServer) -> None:
    async with session_as(server, "alice") as alice:
        prompts = (await alice.list_prompts()).prompts
        simple = await alice.get_prompt("test_simple_prompt")
        with_args = await alice.get_prompt("test_prompt_with_arguments", {"arg1": "kelp", "arg2": "coral"})
        embedded = await alice.get_prompt("test_prompt_with_embedded_resource", {"resourceUri": "test://x"})
        image = await alice.get_prompt("test_prompt_with_image")
    by_name = {p.name: p for p in prompts}
    assert by_name["test_prompt_with_arguments"].meta == {GROUP_META: "content"}
    assert [a.name for a in by_name["test_prompt_with_arguments"].arguments or []] == ["arg1", "arg2"]
    assert simple.messages[0].content == types.TextContent(type="text", text="Say something kind about tide pools.")
    assert with_args.messages[0].content == types.TextContent(type="text", text="Compare kelp with coral.")
    resource = embedded.messages[0].content
    assert isinstance(resource, types.EmbeddedResource) and resource.resource.uri == "test://x"
    assert image.messages[0].content == types.ImageContent(type="image", data=fixture.PNG, mime_type="image/png")


async def test_underlay_keeps_its_own_scheme_and_prompt_names(server: RunningServer) -> None:
    """The fixture lists ``underlay://files/file-from-upstream`` and a ``summarize_file`` prompt: neither
    is handed on, and reading or getting them reaches Underlay's own files and prompt."""
    async with session_as(server, "alice") as alice:
        uris = [r.uri for r in (await alice.list_resources()).resources]
        prompts = [p for p in (await alice.list_prompts()).prompts if p.name == "summarize_file"]
        with pytest.raises(MCPError) as read:
            await alice.read_resource(fixture.SHADOW_URI)
        with pytest.raises(MCPError) as prompt:
            await alice.get_prompt("summarize_file")
    assert fixture.SHADOW_URI not in uris
    assert len(prompts) == 1 and prompts[0].meta is None  # Underlay's, not the fixture's
    assert read.value.error.code == types.INVALID_PARAMS
    assert "No file 'file-from-upstream'" in read.value.error.message
    assert "needs the 'file_id' argument" in prompt.value.error.message


async def test_unknown_upstream_uri_and_prompt_are_clear_errors(server: RunningServer) -> None:
    async with session_as(server, "alice") as alice:
        with pytest.raises(MCPError) as read:
            await alice.read_resource("test://nowhere")
        with pytest.raises(MCPError) as prompt:
            await alice.get_prompt("no_such_prompt")
    assert read.value.error.code == types.INVALID_PARAMS
    assert "no registered tool group lists it" in read.value.error.message
    assert prompt.value.error.code == types.INVALID_PARAMS
    assert "Unknown prompt 'no_such_prompt'" in prompt.value.error.message


async def test_another_principal_gets_none_of_a_group_it_cannot_see(server: RunningServer) -> None:
    async with session_as(server, "bob") as bob:
        uris = [r.uri for r in (await bob.list_resources()).resources]
        templates = [t.uri_template for t in (await bob.list_resource_templates()).resource_templates]
        prompts = [p.name for p in (await bob.list_prompts()).prompts]
        with pytest.raises(MCPError) as read:
            await bob.read_resource("test://static-text")
        with pytest.raises(MCPError) as prompt:
            await bob.get_prompt("test_simple_prompt")
    assert uris == [] and templates == ["underlay://files/{file_id}"] and prompts == ["summarize_file"]
    assert "no registered tool group lists it" in read.value.error.message
    assert "Unknown prompt" in prompt.value.error.message
