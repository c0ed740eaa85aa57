"""Deployed agents on ``/mcp``: a real server with API-key auth, the ``mcp`` SDK's client, two users.

Alice deploys an agent over REST; over MCP she sees it as the tool ``ask_<name>`` and calling it runs the
agent's loop (the echo provider answers instantly with the last user message, so the answer shows the
caller's input reached the agent). Bob, with his own key, neither lists nor calls it.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import httpx2
import mcp_types as types
import pytest
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client

from tests.integration.harness import RunningServer, start_server

KEYS = {"alice": "sk-test-mcp-agents-alice", "bob": "sk-test-mcp-agents-bob"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, external_provider_path: Path) -> Iterator[RunningServer]:
    keys = [{"sha256": hashlib.sha256(k.encode()).hexdigest(), "principal": n} for n, k in KEYS.items()]
    config = {
        "apis": ["inference", "models", "agents", "responses"],
        "providers": {
            "inference": [{"provider_id": "echo", "provider_type": "remote::echo-test", "config": {}}],
            "responses": [{"provider_id": "builtin", "provider_type": "inline::builtin", "config": {}}],
        },
        "server": {"auth": {"providers": [{"type": "api_keys", "keys": keys}]}},
    }
    running = start_server(
        config, tmp_path_factory.mktemp("mcp-agents"), extra_pythonpath=[external_provider_path], timeout=180
    )
    yield running
    running.stop()


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


async def test_a_deployed_agent_is_a_tool_of_its_owner(server: RunningServer) -> None:
    headers = {"Authorization": f"Bearer {KEYS['alice']}"}
    async with httpx.AsyncClient(base_url=server.v1, headers=headers, timeout=30) as rest:
        body = {"name": "helper", "model": "echo/echo", "instructions": "Be brief.", "description": "Answers briefly"}
        deployed = await rest.post("/agents", json=body)
        assert deployed.status_code == 200, deployed.text

    async with session_as(server, "alice") as alice:
        tools = {t.name: t for t in (await alice.list_tools()).tools}
        assert tools["ask_helper"].description == "Answers briefly"
        assert tools["ask_helper"].input_schema["required"] == ["input"]
        result = await alice.call_tool("ask_helper", {"input": "hello agent"})
        assert not result.is_error
        assert isinstance(result.content[0], types.TextContent) and result.content[0].text == "echo: hello agent"
        missing = await alice.call_tool("ask_helper", {})
        assert missing.is_error and "needs input" in str(missing.content[0])

    async with session_as(server, "bob") as bob:
        assert "ask_helper" not in {t.name for t in (await bob.list_tools()).tools}
        hidden = await bob.call_tool("ask_helper", {"input": "hi"})
        assert hidden.is_error and "not found" in str(hidden.content[0])
