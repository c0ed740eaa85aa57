"""Underlay as an MCP server: ``/mcp`` driven by the ``mcp`` SDK's own clients against a real server.

Both client styles are used: ``mcp.Client`` (which negotiates the newest protocol it can) and a
``ClientSession`` over the streamable-HTTP transport with the classic initialize handshake, as older
clients and other SDKs do. The proxied tools come from a real MCP fixture server registered as a
tool group; vector-store search runs over a real store with embedded MiniLM embeddings (slow).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import httpx2
import mcp_types as types
import pytest
from mcp import Client, ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from tests.integration.harness import RunningServer, start_server
from tests.integration.mcp_fixtures import DOCUMENTS, WEB_PAGES, McpFixtureServer, make_vector_store, vector_config

TOKEN = "mcp-server-token"


@pytest.fixture(scope="module")
def upstreams(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, McpFixtureServer]]:
    base = tmp_path_factory.mktemp("upstreams")
    servers = {
        "open": McpFixtureServer(base, name="open-upstream"),
        "guarded": McpFixtureServer(base, token=TOKEN, name="guarded-upstream"),
    }
    try:
        for server in servers.values():
            server.start()
        yield servers
    finally:
        for server in servers.values():
            server.stop()


def _groups(upstreams: dict[str, McpFixtureServer]) -> list[dict[str, Any]]:
    # "guarded" is first, so a tool name resolves to it whenever the caller's credential lets it be listed.
    return [
        {"toolgroup_id": "guarded", "provider_id": "mcp", "mcp_endpoint": upstreams["guarded"].url},
        {"toolgroup_id": "upstream", "provider_id": "mcp", "mcp_endpoint": upstreams["open"].url},
    ]


@pytest.fixture(scope="module")
def server(upstreams: dict[str, McpFixtureServer], tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    config = {
        "apis": ["tool_runtime"],
        "providers": {
            "tool_runtime": [
                {"provider_id": "mcp", "provider_type": "remote::model-context-protocol"},
                {
                    "provider_id": "websearch",
                    "provider_type": "builtin::websearch",
                    "config": {"engine": "local-index", "documents": str(WEB_PAGES), "index_path": ":memory:"},
                },
            ]
        },
        "tool_groups": _groups(upstreams),
    }
    running = start_server(config, tmp_path_factory.mktemp("mcp-server"))
    yield running
    running.stop()


@asynccontextmanager
async def legacy_session(server: RunningServer, headers: dict[str, str] | None = None) -> AsyncIterator[ClientSession]:
    """A ClientSession with the initialize handshake, over streamable HTTP, with optional headers."""
    async with (
        httpx2.AsyncClient(headers=headers, timeout=60) as http,
        streamable_http_client(f"{server.base_url}/mcp", http_client=http) as (read, write),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        yield session


def _text(result: Any) -> str:
    return "\n".join(block.text for block in result.content if getattr(block, "type", None) == "text")


async def test_lists_own_and_proxied_tools(server: RunningServer) -> None:
    async with Client(f"{server.base_url}/mcp") as client:
        tools = {t.name: t for t in (await client.list_tools()).tools}
    assert {"add", "echo", "whoami", "explode", "sleep", "web_search"} <= set(tools)
    assert "search_vector_store" not in tools  # the Vector Stores API is off on this server
    assert tools["add"].input_schema["required"] == ["a", "b"]
    assert tools["web_search"].description and "web" in tools["web_search"].description.lower()
    assert tools["add"].meta == {"underlay/toolgroup_id": "upstream"}


async def test_calls_proxied_tools(server: RunningServer) -> None:
    async with Client(f"{server.base_url}/mcp") as client:
        added = await client.call_tool("add", {"a": 19, "b": 23})
        assert not added.is_error and _text(added) == "42"
        assert added.structured_content == {"result": 42}
        echoed = await client.call_tool("echo", {"text": "through underlay"})
        assert _text(echoed) == "open-upstream: through underlay"
        searched = await client.call_tool("web_search", {"query": "how do honeybees tell each other where flowers are"})
        assert not searched.is_error and "waggle" in _text(searched)
        assert searched.structured_content["results"][0]["url"] == "https://example.org/nature/honeybees"


async def test_tool_failures_are_mcp_error_results(server: RunningServer) -> None:
    async with legacy_session(server) as session:
        exploded = await session.call_tool("explode", {"message": "via mcp"})
        assert exploded.is_error and "exploded: via mcp" in _text(exploded) and "'upstream'" in _text(exploded)
        unknown = await session.call_tool("no_such_tool", {})
        assert unknown.is_error and "no_such_tool" in _text(unknown)
        bad = await session.call_tool("web_search", {"max_num_results": 2})
        assert bad.is_error and "query" in _text(bad)


async def test_caller_credentials_reach_proxied_servers(server: RunningServer) -> None:
    provider_data = {"mcp_headers": {"guarded": {"Authorization": f"Bearer {TOKEN}"}}}
    headers = {"X-Underlay-Provider-Data": json.dumps(provider_data)}
    async with legacy_session(server, headers) as session:
        listed = {t.name for t in (await session.list_tools()).tools}
        assert "whoami" in listed
        seen = await session.call_tool("whoami", {})
        assert not seen.is_error and _text(seen) == f"Bearer {TOKEN}"


def test_mcp_endpoint_is_plain_http_too(server: RunningServer) -> None:
    """A raw JSON-RPC POST works (stateless, JSON responses), and a browser-style GET gets a clean error."""
    headers = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
    init = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-06-18",
            "capabilities": {},
            "clientInfo": {"name": "raw-http", "version": "0"},
        },
    }
    response = httpx.post(f"{server.base_url}/mcp", json=init, headers=headers, timeout=30)
    assert response.status_code == 200, response.text
    assert response.json()["result"]["serverInfo"]["name"] == "underlay"
    assert httpx.get(f"{server.v1}/health").status_code == 200


# ---------------------------------------------------------------------------------------------------
# Vector stores over MCP (embedded embeddings: slow)
# ---------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def vector_server(
    upstreams: dict[str, McpFixtureServer], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningServer]:
    running = start_server(
        vector_config(tool_groups=_groups(upstreams)), tmp_path_factory.mktemp("mcp-vectors"), timeout=300
    )
    yield running
    running.stop()


@pytest.mark.slow
async def test_search_vector_store_over_mcp(vector_server: RunningServer) -> None:
    store_id = make_vector_store(vector_server, DOCUMENTS, name="mcp-notes")
    async with Client(f"{vector_server.base_url}/mcp") as client:
        names = {t.name for t in (await client.list_tools()).tools}
        assert {"list_vector_stores", "search_vector_store", "file_search", "add"} <= names

        stores = await client.call_tool("list_vector_stores", {})
        assert not stores.is_error and store_id in _text(stores) and "mcp-notes" in _text(stores)
        assert store_id in {s["id"] for s in stores.structured_content["vector_stores"]}

        found = await client.call_tool(
            "search_vector_store",
            {"vector_store_id": store_id, "query": "how do glaciers move and carve valleys?", "max_num_results": 2},
        )
        assert not found.is_error, _text(found)
        results = found.structured_content["results"]
        assert results[0]["filename"] == "glaciers.txt" and "U-shaped" in results[0]["text"]
        assert "[1] glaciers.txt" in _text(found)

        keyword = await client.call_tool(
            "search_vector_store", {"vector_store_id": store_id, "query": "crema espresso", "search_mode": "keyword"}
        )
        assert keyword.structured_content["results"][0]["filename"] == "espresso.md"

        missing = await client.call_tool("search_vector_store", {"vector_store_id": "vs_nope", "query": "x"})
        assert missing.is_error and "vs_nope" in _text(missing)

        proxied = await client.call_tool("file_search", {"query": "castling in chess", "vector_store_ids": [store_id]})
        assert not proxied.is_error and proxied.structured_content["results"][0]["filename"] == "chess.txt"

        upstream = await client.call_tool("add", {"a": 1, "b": 1})
        assert _text(upstream) == "2"


@pytest.mark.slow
async def test_vector_store_search_as_resources_and_prompts(vector_server: RunningServer) -> None:
    """The search results link their files as readable resources; the search template and the
    answer_from_vector_store prompt return the same passages; completion offers the caller's stores."""
    store_id = make_vector_store(vector_server, DOCUMENTS, name="mcp-resources")
    async with legacy_session(vector_server) as session:
        found = await session.call_tool(
            "search_vector_store", {"vector_store_id": store_id, "query": "how do glaciers move?", "max_num_results": 1}
        )
        [link] = [b for b in found.content if b.type == "resource_link"]
        assert (
            link.name == "glaciers.txt"
            and link.uri == f"underlay://files/{found.structured_content['results'][0]['file_id']}"
        )
        file = (await session.read_resource(link.uri)).contents[0]
        assert file.text == DOCUMENTS["glaciers.txt"]  # type: ignore[union-attr]

        templates = {t.name: t.uri_template for t in (await session.list_resource_templates()).resource_templates}
        assert (
            templates["vector_store_search"]
            == "underlay://vector_stores/{vector_store_id}/search{?query,max_num_results}"
        )
        uri = f"underlay://vector_stores/{store_id}/search?query=crema%20espresso&max_num_results=1"
        searched = json.loads((await session.read_resource(uri)).contents[0].text)  # type: ignore[union-attr]
        assert searched["results"][0]["filename"] == "espresso.md"
        with pytest.raises(MCPError) as missing:
            await session.read_resource("underlay://vector_stores/vs_nope/search?query=x")
        assert "vs_nope" in missing.value.message
        with pytest.raises(MCPError) as crowded:
            await session.read_resource(f"underlay://vector_stores/{store_id}/search?query=x&a=1&b=2&c=3&d=4")
        assert "query and max_num_results" in crowded.value.message

        prompt = await session.get_prompt(
            "answer_from_vector_store", {"vector_store_id": store_id, "question": "When may a player castle?"}
        )
        passages, ask = prompt.messages
        assert isinstance(passages.content, types.EmbeddedResource)
        assert "chess.txt" in passages.content.resource.text  # type: ignore[union-attr]
        assert "When may a player castle?" in ask.content.text  # type: ignore[union-attr]

        ref = types.PromptReference(type="ref/prompt", name="answer_from_vector_store")
        completed = await session.complete(ref, {"name": "vector_store_id", "value": "mcp-res"})
        assert completed.completion.values == [store_id]
