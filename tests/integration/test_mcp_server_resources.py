"""``/mcp`` resources, prompts and completion, against a real server with API-key auth and two users.

Alice and bob each upload files over the REST API (the ``openai`` SDK); then each talks to ``/mcp``
with the ``mcp`` SDK's ``ClientSession`` over streamable HTTP, carrying their own key. Each must see,
read, prompt with and complete only their own files; the other's read as "not found".
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import httpx2
import mcp_types as types
import openai
import pytest
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from tests.integration.harness import RunningServer, start_server

KEYS = {"alice": "sk-test-mcp-alice-01", "bob": "sk-test-mcp-bob-0002"}
NOTES = "# Otters\n\nOtters hold hands while they sleep so they do not drift apart.\n"
PIXEL = bytes.fromhex("89504e470d0a1a0a0000000d4948445200000001000000010806000000")  # the start of a PNG
BIG = 8 * 1024 * 1024 + 1


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    config = {
        "apis": ["files"],
        "providers": {
            "files": [{"provider_id": "localfs", "provider_type": "inline::localfs", "config": {"root": "f"}}]
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
    running = start_server(config, tmp_path_factory.mktemp("mcp-resources"))
    yield running
    running.stop()


@pytest.fixture(scope="module")
def files(server: RunningServer) -> dict[str, str]:
    """filename → id: alice's notes.md, pixel.png and big.txt (over the MCP read cap), bob's secret.txt."""
    ids: dict[str, str] = {}
    for user, name, data in (
        ("alice", "notes.md", NOTES.encode()),
        ("alice", "pixel.png", PIXEL),
        ("alice", "big.txt", b"x" * BIG),
        ("bob", "secret.txt", b"bob's secret"),
    ):
        client = openai.OpenAI(base_url=server.v1, api_key=KEYS[user], max_retries=0)
        ids[name] = client.files.create(file=(name, data), purpose="assistants").id
    return ids


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


def _uri(file_id: str) -> str:
    return f"underlay://files/{file_id}"


async def test_each_user_lists_only_their_own_files(server: RunningServer, files: dict[str, str]) -> None:
    async with session_as(server, "alice") as alice:
        listed = {r.uri: r for r in (await alice.list_resources()).resources}
    assert set(listed) == {_uri(files[n]) for n in ("notes.md", "pixel.png", "big.txt")}
    notes = listed[_uri(files["notes.md"])]
    assert notes.name == "notes.md" and notes.mime_type == "text/markdown" and notes.size == len(NOTES.encode())
    async with session_as(server, "bob") as bob:
        assert [r.uri for r in (await bob.list_resources()).resources] == [_uri(files["secret.txt"])]
        templates = [t.uri_template for t in (await bob.list_resource_templates()).resource_templates]
    assert templates == ["underlay://files/{file_id}"]  # no vector stores on this server


async def test_listing_pages_with_an_opaque_cursor(server: RunningServer, files: dict[str, str]) -> None:
    async with session_as(server, "alice") as alice:
        first = await alice.list_resources()
        assert first.next_cursor is None  # three files: one page
        after_newest = await alice.list_resources(
            params=types.PaginatedRequestParams(cursor=first.resources[0].uri[17:])
        )
        assert [r.uri for r in after_newest.resources] == [r.uri for r in first.resources[1:]]
        with pytest.raises(MCPError) as bad:
            await alice.list_resources(params=types.PaginatedRequestParams(cursor="../../etc"))
        assert bad.value.code == types.INVALID_PARAMS and "cursor" in bad.value.message


async def test_reading_files_as_resources(server: RunningServer, files: dict[str, str]) -> None:
    async with session_as(server, "alice") as alice:
        text = (await alice.read_resource(_uri(files["notes.md"]))).contents[0]
        assert isinstance(text, types.TextResourceContents) and text.text == NOTES
        assert text.uri == _uri(files["notes.md"]) and text.mime_type == "text/markdown"
        blob = (await alice.read_resource(_uri(files["pixel.png"]))).contents[0]
        assert isinstance(blob, types.BlobResourceContents) and base64.b64decode(blob.blob) == PIXEL
        assert blob.mime_type == "image/png"

        with pytest.raises(MCPError) as theirs:
            await alice.read_resource(_uri(files["secret.txt"]))
        assert theirs.value.code == types.INVALID_PARAMS and "not yours" in theirs.value.message
        assert "bob's secret" not in theirs.value.message

        with pytest.raises(MCPError) as big:
            await alice.read_resource(_uri(files["big.txt"]))
        assert f"/v1/files/{files['big.txt']}/content" in big.value.message

        with pytest.raises(MCPError) as unknown:
            await alice.read_resource("file:///etc/passwd")
        assert "underlay://files/{file_id}" in unknown.value.message

        with pytest.raises(MCPError) as malformed:
            await alice.read_resource("underlay://files/../../etc/passwd")
        assert "not a valid file id" in malformed.value.message


async def test_summarize_file_prompt_embeds_the_callers_file(server: RunningServer, files: dict[str, str]) -> None:
    async with session_as(server, "alice") as alice:
        prompts = {p.name: p for p in (await alice.list_prompts()).prompts}
        assert set(prompts) == {"summarize_file"}  # answer_from_vector_store needs the Vector Stores API
        assert [(a.name, a.required) for a in prompts["summarize_file"].arguments or []] == [
            ("file_id", True),
            ("focus", None),
        ]
        got = await alice.get_prompt("summarize_file", {"file_id": files["notes.md"], "focus": "sleep"})
        attached, ask = got.messages
        assert isinstance(attached.content, types.EmbeddedResource) and attached.role == "user"
        assert attached.content.resource.uri == _uri(files["notes.md"])
        assert isinstance(attached.content.resource, types.TextResourceContents)
        assert attached.content.resource.text == NOTES
        assert isinstance(ask.content, types.TextContent) and "focusing on: sleep" in ask.content.text

        with pytest.raises(MCPError) as theirs:
            await alice.get_prompt("summarize_file", {"file_id": files["secret.txt"]})
        assert "not yours" in theirs.value.message
        with pytest.raises(MCPError) as missing:
            await alice.get_prompt("summarize_file", {})
        assert "file_id" in missing.value.message
        with pytest.raises(MCPError) as unknown:
            await alice.get_prompt("no_such_prompt", {})
        assert "summarize_file" in unknown.value.message


async def test_completion_offers_only_the_callers_ids(server: RunningServer, files: dict[str, str]) -> None:
    prompt = types.PromptReference(type="ref/prompt", name="summarize_file")
    async with session_as(server, "alice") as alice:
        everything = await alice.complete(prompt, {"name": "file_id", "value": ""})
        assert set(everything.completion.values) == {files[n] for n in ("notes.md", "pixel.png", "big.txt")}
        by_name = await alice.complete(prompt, {"name": "file_id", "value": "pix"})
        assert by_name.completion.values == [files["pixel.png"]]
        template = types.ResourceTemplateReference(type="ref/resource", uri="underlay://files/{file_id}")
        by_id = await alice.complete(template, {"name": "file_id", "value": files["notes.md"][:-2]})
        assert by_id.completion.values == [files["notes.md"]]
        other = await alice.complete(prompt, {"name": "focus", "value": "s"})
        assert other.completion.values == []


def test_mcp_requires_the_servers_auth(server: RunningServer) -> None:
    headers = {"Accept": "application/json, text/event-stream"}
    body: dict[str, Any] = {"jsonrpc": "2.0", "id": 1, "method": "resources/list", "params": {}}
    refused = httpx.post(f"{server.base_url}/mcp", json=body, headers=headers, timeout=30)
    assert refused.status_code == 401
    assert set(refused.json()["error"]) == {"message", "type", "param", "code"}


def test_resources_work_as_plain_json_rpc(server: RunningServer, files: dict[str, str], tmp_path: Path) -> None:
    """A stateless raw POST (no handshake, as a script would send) reads a resource too."""
    headers = {
        "Accept": "application/json, text/event-stream",
        "Authorization": f"Bearer {KEYS['alice']}",
        "MCP-Protocol-Version": "2025-06-18",
    }
    body = {"jsonrpc": "2.0", "id": 7, "method": "resources/read", "params": {"uri": _uri(files["notes.md"])}}
    reply = httpx.post(f"{server.base_url}/mcp", json=body, headers=headers, timeout=30)
    assert reply.status_code == 200, reply.text
    assert reply.json()["result"]["contents"][0]["text"] == NOTES
