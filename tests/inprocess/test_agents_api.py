"""The Agents API in process: deploys make versions, rollback moves the default, tenants are apart, and
``model="agent/<name>[@version]"`` in Responses runs the agent's definition.

The CRUD app needs no model (``apis: [agents]``); the Responses tests use the echo plugin, which answers
with the last user message, so what they check is the instructions and tools the response reports: the
agent's, not the caller's. The embedded model running a deployed agent is in
``tests/integration/test_agents_server.py``.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.inprocess.harness import InProcessServer, echo_config, serve_in_process

KEYS = {
    "alice": ("sk-alice-agents", ["team-a"]),
    "bob": ("sk-bob-agents", ["team-b"]),
    "carol": ("sk-carol-agents", ["team-a"]),
}
TEAM_READS_AGENTS = {
    "rules": [
        {"effect": "permit", "when": ["user is owner"]},
        {"effect": "permit", "actions": ["read"], "resources": ["agent"], "when": ["user in owners teams"]},
    ]
}


def _auth() -> dict[str, Any]:
    keys = [
        {"sha256": hashlib.sha256(key.encode()).hexdigest(), "principal": name, "attributes": {"teams": teams}}
        for name, (key, teams) in KEYS.items()
    ]
    return {"auth": {"providers": [{"type": "api_keys", "keys": keys}]}}


def _as(who: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {KEYS[who][0]}"}


def _ok(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()
    return data


def _error(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    return error


@pytest.fixture(scope="module")
async def app(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[InProcessServer]:
    config = {"state_dir": str(tmp_path_factory.mktemp("inprocess-agents")), "apis": ["agents"], "server": _auth()}
    async with serve_in_process(config) as server:
        yield server


async def test_deploys_make_versions_and_rollback_moves_the_default(app: InProcessServer) -> None:
    http = app.http
    first = _ok(
        await http.post(
            "/v1/agents",
            json={"name": "support", "model": "echo/echo", "instructions": "v1", "description": "helps"},
            headers=_as("alice"),
        )
    )
    assert first["object"] == "agent" and first["id"].startswith("agent_") and first["version"] == 1
    assert first["is_default"] and first["definition"]["instructions"] == "v1"
    second = _ok(
        await http.post(
            "/v1/agents", json={"name": "support", "model": "echo/echo", "instructions": "v2"}, headers=_as("alice")
        )
    )
    assert second["id"] == first["id"] and second["version"] == 2 and second["default_version"] == 2
    staged = _ok(
        await http.post(
            "/v1/agents",
            json={"name": "support", "model": "echo/echo", "instructions": "v3", "set_as_default": False},
            headers=_as("alice"),
        )
    )
    assert staged["version"] == 3 and not staged["is_default"] and staged["default_version"] == 2

    current = _ok(await http.get("/v1/agents/support", headers=_as("alice")))
    assert current["version"] == 2 and current["definition"]["instructions"] == "v2"
    old = _ok(await http.get("/v1/agents/support", params={"version": 1}, headers=_as("alice")))
    assert old["definition"]["instructions"] == "v1" and not old["is_default"]

    versions = _ok(await http.get("/v1/agents/support/versions", headers=_as("alice")))
    assert [v["version"] for v in versions["data"]] == [3, 2, 1]
    page = _ok(await http.get("/v1/agents/support/versions", params={"limit": 1, "after": 3}, headers=_as("alice")))
    assert [v["version"] for v in page["data"]] == [2] and page["has_more"]

    rolled = _ok(await http.post("/v1/agents/support/set_default_version", json={"version": 1}, headers=_as("alice")))
    assert rolled["version"] == 1 and rolled["is_default"]
    assert _ok(await http.get("/v1/agents/support", headers=_as("alice")))["definition"]["instructions"] == "v1"

    listed = _ok(await http.get("/v1/agents", headers=_as("alice")))
    assert [(a["name"], a["version"]) for a in listed["data"]] == [("support", 1)]

    deleted = _ok(await http.delete("/v1/agents/support", headers=_as("alice")))
    assert deleted == {"id": first["id"], "name": "support", "object": "agent.deleted", "deleted": True}
    _error(await http.get("/v1/agents/support", headers=_as("alice")), 404)


async def test_errors_name_the_field(app: InProcessServer) -> None:
    http = app.http
    alice = _as("alice")
    bad_name = _error(await http.post("/v1/agents", json={"name": "Bad_Name", "model": "m"}, headers=alice), 400)
    assert bad_name["param"] == "name"
    nested = _error(await http.post("/v1/agents", json={"name": "a", "model": "agent/b"}, headers=alice), 400)
    assert "not another agent" in nested["message"]
    both = {"name": "a", "model": "m", "instructions": "x", "prompt": {"id": "pmpt_1"}}
    assert "not both" in _error(await http.post("/v1/agents", json=both, headers=alice), 400)["message"]
    tool = {"name": "a", "model": "m", "tools": [{"type": "code_interpreter"}]}
    assert "tools[0].type" in _error(await http.post("/v1/agents", json=tool, headers=alice), 400)["message"]
    unknown = {"name": "a", "model": "m", "colour": "red"}
    assert _error(await http.post("/v1/agents", json=unknown, headers=alice), 400)["param"] == "colour"
    choice = {"name": "a", "model": "m", "tool_choice": "always"}
    assert _error(await http.post("/v1/agents", json=choice, headers=alice), 400)["param"] == "tool_choice"
    nudged = {"name": "nudged", "model": "m", "tool_choice": {"type": "file_search"}}
    assert _ok(await http.post("/v1/agents", json=nudged, headers=alice))["definition"]["tool_choice"] == {
        "type": "file_search"
    }

    _ok(await http.post("/v1/agents", json={"name": "errs", "model": "m"}, headers=alice))
    missing = _error(await http.post("/v1/agents/errs/set_default_version", json={"version": 9}, headers=alice), 400)
    assert missing["param"] == "version" and "1 to 1" in missing["message"]
    gone = _error(await http.get("/v1/agents/errs", params={"version": 4}, headers=alice), 404)
    assert gone["param"] == "version"
    assert _error(await http.get("/v1/agents/nobody", headers=alice), 404)["param"] == "agent_name"


async def test_two_tenants_cannot_see_or_overwrite_each_others_agents(app: InProcessServer) -> None:
    http = app.http
    mine = _ok(
        await http.post(
            "/v1/agents", json={"name": "shared-name", "model": "m", "instructions": "alice's"}, headers=_as("alice")
        )
    )
    assert all(a["name"] != "shared-name" for a in _ok(await http.get("/v1/agents", headers=_as("bob")))["data"])
    _error(await http.get("/v1/agents/shared-name", headers=_as("bob")), 404)
    _error(await http.post("/v1/agents/shared-name/set_default_version", json={"version": 1}, headers=_as("bob")), 404)
    _error(await http.delete("/v1/agents/shared-name", headers=_as("bob")), 404)
    # Bob deploying the same name makes his own agent, version 1; Alice's is untouched.
    his = _ok(
        await http.post(
            "/v1/agents", json={"name": "shared-name", "model": "m", "instructions": "bob's"}, headers=_as("bob")
        )
    )
    assert his["id"] != mine["id"] and his["version"] == 1
    theirs = _ok(await http.get("/v1/agents/shared-name", headers=_as("alice")))
    assert (
        theirs["id"] == mine["id"]
        and theirs["definition"]["instructions"] == "alice's"
        and theirs["latest_version"] == 1
    )


@pytest.fixture(params=["sqlite", "postgres"])
async def sqlstore(request: pytest.FixtureRequest) -> AsyncIterator[dict[str, Any] | None]:
    """The default SQLite store, or a fresh PostgreSQL database (dropped afterwards): the policy's team
    predicate is a JSON query, which differs per backend."""
    if request.param == "sqlite":
        yield None
        return
    import asyncpg

    server = {
        "host": os.environ.get("UNDERLAY_TEST_POSTGRES_HOST", "127.0.0.1"),
        "port": int(os.environ.get("UNDERLAY_TEST_POSTGRES_PORT", "5432")),
        "user": os.environ.get("UNDERLAY_TEST_POSTGRES_USER", "postgres"),
        "password": os.environ.get("UNDERLAY_TEST_POSTGRES_PASSWORD") or None,
    }
    name = f"underlay_agents_{uuid.uuid4().hex[:12]}"
    yield {"type": "postgres", "db": name, "create_database": True, **server}
    conn = await asyncpg.connect(database="postgres", **server)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


async def test_a_policy_shares_agents_with_a_team_read_only(
    tmp_path_factory: pytest.TempPathFactory, sqlstore: dict[str, Any] | None
) -> None:
    config: dict[str, Any] = {
        "state_dir": str(tmp_path_factory.mktemp("inprocess-agents-team")),
        "apis": ["agents"],
        "server": _auth(),
        "access_policy": TEAM_READS_AGENTS,
    }
    if sqlstore is not None:
        config["storage"] = {"sqlstore": sqlstore}
    async with serve_in_process(config) as app:
        http = app.http
        body = {"name": "team-desk", "model": "m", "instructions": "alice's"}
        mine = _ok(await http.post("/v1/agents", json=body, headers=_as("alice")))
        _ok(await http.post("/v1/agents", json={**body, "instructions": "alice's v2"}, headers=_as("alice")))
        seen = _ok(await http.get("/v1/agents/team-desk", headers=_as("carol")))
        assert seen["id"] == mine["id"] and seen["version"] == 2
        assert [a["id"] for a in _ok(await http.get("/v1/agents", headers=_as("carol")))["data"]] == [mine["id"]]
        versions = _ok(await http.get("/v1/agents/team-desk/versions", headers=_as("carol")))
        assert [v["version"] for v in versions["data"]] == [2, 1]
        refused = _error(
            await http.post("/v1/agents/team-desk/set_default_version", json={"version": 1}, headers=_as("carol")),
            403,
        )
        assert refused["code"] == "access_denied"
        _error(await http.delete("/v1/agents/team-desk", headers=_as("carol")), 403)
        _error(await http.get("/v1/agents/team-desk", headers=_as("bob")), 404)
        assert _ok(await http.get("/v1/agents", headers=_as("bob")))["data"] == []
        # Carol deploying the name makes her own agent, which her lookups then prefer.
        hers = _ok(await http.post("/v1/agents", json={**body, "instructions": "carol's"}, headers=_as("carol")))
        assert hers["id"] != mine["id"] and hers["version"] == 1
        assert _ok(await http.get("/v1/agents/team-desk", headers=_as("carol")))["id"] == hers["id"]
        assert _ok(await http.get("/v1/agents/team-desk", headers=_as("alice")))["id"] == mine["id"]


# ---- model="agent/<name>" in Responses --------------------------------------------------------------------------


@pytest.fixture(scope="module")
async def responses_app(echo_plugin: Path, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[InProcessServer]:
    config = echo_config(
        tmp_path_factory.mktemp("inprocess-agent-responses"),
        apis=["inference", "models", "agents", "responses"],
        server={**_auth(), "max_request_bytes": 65536},
    )
    config["providers"]["responses"] = [{"provider_id": "builtin", "provider_type": "inline::builtin"}]
    async with serve_in_process(config) as server:
        yield server


async def test_a_response_runs_the_agents_definition(responses_app: InProcessServer) -> None:
    app = responses_app
    tool = {"type": "function", "name": "lookup", "parameters": {"type": "object", "properties": {}}}
    body = {"name": "helper", "model": "echo/echo", "instructions": "Be brief.", "tools": [tool], "temperature": 0.5}
    _ok(await app.http.post("/v1/agents", json=body, headers=_as("alice")))
    _ok(await app.http.post("/v1/agents", json={**body, "instructions": "Version two."}, headers=_as("alice")))
    client = app.openai_from("127.0.0.1", api_key=KEYS["alice"][0])

    response = await client.responses.create(model="agent/helper", input="hello", instructions="Say hi.")
    assert response.instructions == "Version two.\n\nSay hi."
    assert [t.name for t in response.tools if t.type == "function"] == ["lookup"]
    assert response.temperature == 0.5 and response.output_text == "echo: hello"
    pinned = await client.responses.create(model="agent/helper@1", input="hi")
    assert pinned.instructions == "Be brief."
    # A rollback is seen by the very next call (resolved agents are reused briefly; a write clears them).
    rolled = await app.http.post("/v1/agents/helper/set_default_version", json={"version": 1}, headers=_as("alice"))
    assert rolled.status_code == 200, rolled.text
    after = await client.responses.create(model="agent/helper", input="hi")
    assert after.instructions == "Be brief."


async def test_another_tenant_cannot_call_an_agent(responses_app: InProcessServer) -> None:
    app = responses_app
    _ok(await app.http.post("/v1/agents", json={"name": "private", "model": "echo/echo"}, headers=_as("alice")))
    refused = await app.http.post("/v1/responses", json={"model": "agent/private", "input": "hi"}, headers=_as("bob"))
    error = _error(refused, 404)
    assert error["param"] == "model" and "agent/private" in error["message"]
    malformed = await app.http.post("/v1/responses", json={"model": "agent/Bad@x", "input": "hi"}, headers=_as("bob"))
    assert _error(malformed, 400)["code"] == "invalid_agent_model"


async def test_chat_completions_run_the_agent_streamed_and_not(responses_app: InProcessServer) -> None:
    app = responses_app
    _ok(await app.http.post("/v1/agents", json={"name": "chatty", "model": "echo/echo"}, headers=_as("alice")))
    client = app.openai_from("127.0.0.1", api_key=KEYS["alice"][0])
    messages: Any = [{"role": "system", "content": "Be kind."}, {"role": "user", "content": "hello there"}]
    completion = await client.chat.completions.create(model="agent/chatty", messages=messages)
    assert completion.model == "agent/chatty" and completion.object == "chat.completion"
    assert completion.choices[0].message.content == "echo: hello there"
    assert completion.choices[0].finish_reason == "stop"

    stream = await client.chat.completions.create(model="agent/chatty@1", messages=messages, stream=True)
    chunks = [chunk async for chunk in stream]
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "echo: hello there"
    assert chunks[-1].choices[0].finish_reason == "stop" and all(c.model == "agent/chatty@1" for c in chunks)

    refused = await app.http.post(
        "/v1/chat/completions", json={"model": "agent/chatty", "messages": messages}, headers=_as("bob")
    )
    assert _error(refused, 404)["param"] == "model"
