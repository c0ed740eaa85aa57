"""Stored prompts on ``/mcp``: a real server with API-key auth, the ``mcp`` SDK's client, two users.

Alice stores prompts over REST; over MCP she lists them (at their default versions, variables as
required arguments) and gets one rendered with her arguments. Bob, with his own key, neither lists nor
gets hers. No model is needed: MCP prompts are rendered text the host hands to its own model.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager

import httpx
import httpx2
import mcp_types as types
import pytest
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from tests.integration.harness import RunningServer, start_server

KEYS = {"alice": "sk-test-mcp-prompts-alice", "bob": "sk-test-mcp-prompts-bob"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    keys = [{"sha256": hashlib.sha256(k.encode()).hexdigest(), "principal": n} for n, k in KEYS.items()]
    config = {"apis": ["prompts"], "server": {"auth": {"providers": [{"type": "api_keys", "keys": keys}]}}}
    running = start_server(config, tmp_path_factory.mktemp("mcp-prompts"))
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


async def test_stored_prompts_are_mcp_prompts_of_their_owner(server: RunningServer) -> None:
    headers = {"Authorization": f"Bearer {KEYS['alice']}"}
    async with httpx.AsyncClient(base_url=server.v1, headers=headers, timeout=30) as rest:
        body = {"prompt": "Review {{language}} code for {{concern}}.", "metadata": {"title": "Code review"}}
        created = await rest.post("/prompts", json=body)
        assert created.status_code == 200, created.text
        prompt_id = created.json()["id"]
        newer = {"prompt": "v2 {{language}}", "set_as_default": False}  # not the default: MCP shows version 1
        assert (await rest.post(f"/prompts/{prompt_id}/versions", json=newer)).status_code == 200

    async with session_as(server, "alice") as alice:
        listed = {p.name: p for p in (await alice.list_prompts()).prompts}
        assert prompt_id in listed
        shown = listed[prompt_id]
        assert shown.title == "Code review"
        assert [(a.name, a.required) for a in shown.arguments or []] == [("language", True), ("concern", True)]
        got = await alice.get_prompt(prompt_id, {"language": "Rust", "concern": "unsafe blocks"})
        assert len(got.messages) == 1 and got.messages[0].role == "user"
        content = got.messages[0].content
        assert isinstance(content, types.TextContent) and content.text == "Review Rust code for unsafe blocks."
        with pytest.raises(MCPError) as missing:
            await alice.get_prompt(prompt_id, {"language": "Rust"})
        assert "concern" in str(missing.value)
        with pytest.raises(MCPError) as unknown:
            await alice.get_prompt(prompt_id, {"language": "Rust", "concern": "x", "colour": "red"})
        assert "colour" in str(unknown.value)

    async with session_as(server, "bob") as bob:
        assert prompt_id not in {p.name for p in (await bob.list_prompts()).prompts}
        with pytest.raises(MCPError) as hidden:
            await bob.get_prompt(prompt_id, {"language": "Rust", "concern": "x"})
        assert "Unknown prompt" in str(hidden.value)
