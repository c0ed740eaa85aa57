"""The Prompts API in process: versions, the default, template checks, two tenants, and Responses' ``prompt``.

The CRUD app needs no model (``apis: [prompts]``); the Responses tests use the echo plugin, which
answers with the last user message, so what they check is the rendered ``instructions`` the response
reports and the errors that stop a response before any model time. The embedded model reading a
rendered prompt runs on a real server in ``tests/integration/test_prompts_server.py``.
"""

from __future__ import annotations

import base64
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
    "alice": ("sk-alice-prompts", ["team-a"]),
    "bob": ("sk-bob-prompts", ["team-b"]),
    "carol": ("sk-carol-prompts", ["team-a"]),
}
TEAM_READS_PROMPTS = {
    "rules": [
        {"effect": "permit", "when": ["user is owner"]},
        {"effect": "permit", "actions": ["read"], "resources": ["prompt"], "when": ["user in owners teams"]},
    ]
}


def _auth() -> dict[str, Any]:
    keys = [
        {"sha256": hashlib.sha256(key.encode()).hexdigest(), "principal": name, "attributes": {"teams": teams}}
        for name, (key, teams) in KEYS.items()
    ]
    return {"auth": {"providers": [{"type": "api_keys", "keys": keys}]}}


@pytest.fixture(scope="module")
async def app(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[InProcessServer]:
    config = {"state_dir": str(tmp_path_factory.mktemp("inprocess-prompts")), "apis": ["prompts"], "server": _auth()}
    async with serve_in_process(config) as server:
        yield server


def _as(app: InProcessServer, who: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {KEYS[who][0]}"}


async def _ok(response: httpx.Response | Any) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()
    return data


def _error(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    return error


async def test_versions_and_the_default(app: InProcessServer) -> None:
    alice = _as(app, "alice")
    http = app.http
    created = await _ok(
        await http.post(
            "/v1/prompts",
            json={"prompt": "You help {{ customer }} with {{product}}.", "metadata": {"team": "support"}},
            headers=alice,
        )
    )
    prompt_id = created["id"]
    assert prompt_id.startswith("pmpt_") and created["object"] == "prompt"
    assert created["version"] == 1 and created["is_default"] is True
    assert created["variables"] == ["customer", "product"]  # inferred from the template, in order of use
    assert created["metadata"] == {"team": "support"}

    v2 = await _ok(
        await http.post(
            f"/v1/prompts/{prompt_id}/versions",
            json={"prompt": "Be brief with {{customer}}.", "variables": ["customer"]},
            headers=alice,
        )
    )
    assert v2["version"] == 2 and v2["is_default"] is True and v2["variables"] == ["customer"]
    v3 = await _ok(
        await http.post(
            f"/v1/prompts/{prompt_id}/versions",
            json={"prompt": "Draft {{customer}}.", "set_as_default": False},
            headers=alice,
        )
    )
    assert v3["version"] == 3 and v3["is_default"] is False

    default = await _ok(await http.get(f"/v1/prompts/{prompt_id}", headers=alice))
    assert default["version"] == 2 and default["prompt"] == "Be brief with {{customer}}."
    first = await _ok(await http.get(f"/v1/prompts/{prompt_id}", params={"version": 1}, headers=alice))
    assert first["version"] == 1 and first["is_default"] is False and first["metadata"] == {"team": "support"}

    versions = await _ok(await http.get(f"/v1/prompts/{prompt_id}/versions", headers=alice))
    assert [v["version"] for v in versions["data"]] == [3, 2, 1] and versions["has_more"] is False
    page = await _ok(
        await http.get(f"/v1/prompts/{prompt_id}/versions", params={"order": "asc", "limit": 2}, headers=alice)
    )
    assert [v["version"] for v in page["data"]] == [1, 2] and page["has_more"] is True
    rest = await _ok(
        await http.get(f"/v1/prompts/{prompt_id}/versions", params={"order": "asc", "after": 2}, headers=alice)
    )
    assert [v["version"] for v in rest["data"]] == [3] and rest["has_more"] is False

    made_default = await _ok(
        await http.post(f"/v1/prompts/{prompt_id}/set_default_version", json={"version": 1}, headers=alice)
    )
    assert made_default["version"] == 1 and made_default["is_default"] is True
    assert (await _ok(await http.get(f"/v1/prompts/{prompt_id}", headers=alice)))["version"] == 1

    listed = await _ok(await http.get("/v1/prompts", params={"limit": 100}, headers=alice))
    mine = [p for p in listed["data"] if p["id"] == prompt_id]
    assert len(mine) == 1 and mine[0]["version"] == 1  # each prompt once, at its default version

    deleted = await _ok(await http.delete(f"/v1/prompts/{prompt_id}", headers=alice))
    assert deleted == {"id": prompt_id, "object": "prompt.deleted", "deleted": True}
    error = _error(await http.get(f"/v1/prompts/{prompt_id}", headers=alice), 404)
    assert error["code"] == "prompt_not_found" and prompt_id in error["message"]
    _error(await http.get(f"/v1/prompts/{prompt_id}/versions", headers=alice), 404)


async def test_list_pages_in_creation_order(app: InProcessServer) -> None:
    bob = _as(app, "bob")  # bob's own prompts only, so the list is exactly these
    ids = []
    for n in range(3):
        ids.append((await _ok(await app.http.post("/v1/prompts", json={"prompt": f"p{n}"}, headers=bob)))["id"])
    every = await _ok(await app.http.get("/v1/prompts", params={"order": "asc", "limit": 100}, headers=bob))
    assert [p["id"] for p in every["data"]][-3:] == ids
    first = await _ok(await app.http.get("/v1/prompts", params={"limit": 1}, headers=bob))
    after = await _ok(await app.http.get("/v1/prompts", params={"limit": 1, "after": first["last_id"]}, headers=bob))
    assert first["data"][0]["id"] != after["data"][0]["id"] and first["has_more"] is True


async def test_template_and_version_errors_name_the_field(app: InProcessServer) -> None:
    alice = _as(app, "alice")
    http = app.http
    error = _error(
        await http.post(
            "/v1/prompts", json={"prompt": "Hi {{name}} from {{place}}", "variables": ["name"]}, headers=alice
        ),
        400,
    )
    assert "place" in error["message"] and "variables" in (error["param"] or "")
    error = _error(
        await http.post("/v1/prompts", json={"prompt": "x", "variables": ["not-a-name"]}, headers=alice), 400
    )
    assert "not-a-name" in error["message"]
    error = _error(await http.post("/v1/prompts", json={"prompt": "x", "variables": ["a", "a"]}, headers=alice), 400)
    assert "once" in error["message"]
    _error(await http.post("/v1/prompts", json={"prompt": ""}, headers=alice), 400)
    _error(await http.post("/v1/prompts", json={"prompt": "x" * 100_001}, headers=alice), 400)
    error = _error(await http.post("/v1/prompts", json={"prompt": "x", "bogus": 1}, headers=alice), 400)
    assert "bogus" in error["message"] or error["param"] == "bogus"

    prompt_id = (await _ok(await http.post("/v1/prompts", json={"prompt": "x"}, headers=alice)))["id"]
    error = _error(await http.get(f"/v1/prompts/{prompt_id}", params={"version": 7}, headers=alice), 404)
    assert error["param"] == "version" and "1 to 1" in error["message"]
    error = _error(
        await http.post(f"/v1/prompts/{prompt_id}/set_default_version", json={"version": 9}, headers=alice), 400
    )
    assert error["param"] == "version" and "no version 9" in error["message"]
    _error(await http.post(f"/v1/prompts/{prompt_id}/set_default_version", json={"version": 0}, headers=alice), 400)
    _error(await http.get("/v1/prompts/pmpt_missing", headers=alice), 404)


async def test_another_tenant_cannot_see_use_or_change_a_prompt(app: InProcessServer) -> None:
    alice, bob = _as(app, "alice"), _as(app, "bob")
    http = app.http
    prompt_id = (await _ok(await http.post("/v1/prompts", json={"prompt": "secret {{x}}"}, headers=alice)))["id"]
    missing = _error(await http.get("/v1/prompts/pmpt_nothing_here", headers=bob), 404)
    hidden = _error(await http.get(f"/v1/prompts/{prompt_id}", headers=bob), 404)
    assert hidden["code"] == missing["code"] == "prompt_not_found"  # hidden answers like missing
    _error(await http.get(f"/v1/prompts/{prompt_id}/versions", headers=bob), 404)
    _error(await http.post(f"/v1/prompts/{prompt_id}/versions", json={"prompt": "mine now"}, headers=bob), 404)
    _error(await http.post(f"/v1/prompts/{prompt_id}/set_default_version", json={"version": 1}, headers=bob), 404)
    _error(await http.delete(f"/v1/prompts/{prompt_id}", headers=bob), 404)
    listed = await _ok(await http.get("/v1/prompts", params={"limit": 100}, headers=bob))
    assert prompt_id not in [p["id"] for p in listed["data"]]
    _error(await http.get("/v1/prompts", params={"after": prompt_id}, headers=bob), 400)  # no paging from it

    still = await _ok(await http.get(f"/v1/prompts/{prompt_id}", headers=alice))
    assert still["version"] == 1 and still["prompt"] == "secret {{x}}"
    assert (await http.get("/v1/prompts")).status_code == 401


@pytest.fixture(params=["sqlite", "postgres"])
async def sqlstore(request: pytest.FixtureRequest) -> AsyncIterator[dict[str, Any] | None]:
    """The default SQLite store, or a fresh PostgreSQL database (dropped afterwards): team predicates are
    JSON queries, which differ per backend."""
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
    name = f"underlay_prompts_{uuid.uuid4().hex[:12]}"
    yield {"type": "postgres", "db": name, "create_database": True, **server}
    conn = await asyncpg.connect(database="postgres", **server)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


async def test_a_policy_shares_prompts_with_a_team_read_only(
    tmp_path_factory: pytest.TempPathFactory, sqlstore: dict[str, Any] | None
) -> None:
    config: dict[str, Any] = {
        "state_dir": str(tmp_path_factory.mktemp("inprocess-prompts-team")),
        "apis": ["prompts"],
        "server": _auth(),
        "access_policy": TEAM_READS_PROMPTS,
    }
    if sqlstore is not None:
        config["storage"] = {"sqlstore": sqlstore}
    async with serve_in_process(config) as app:
        alice, carol, bob = _as(app, "alice"), _as(app, "carol"), _as(app, "bob")
        http = app.http
        prompt_id = (await _ok(await http.post("/v1/prompts", json={"prompt": "team {{x}}"}, headers=alice)))["id"]
        assert (await _ok(await http.get(f"/v1/prompts/{prompt_id}", headers=carol)))["prompt"] == "team {{x}}"
        listed = await _ok(await http.get("/v1/prompts", headers=carol))
        assert [p["id"] for p in listed["data"]] == [prompt_id]  # the team predicate is in the list query
        versions = await _ok(await http.get(f"/v1/prompts/{prompt_id}/versions", headers=carol))
        assert [v["version"] for v in versions["data"]] == [1]
        refused = _error(await http.post(f"/v1/prompts/{prompt_id}/versions", json={"prompt": "y"}, headers=carol), 403)
        assert refused["code"] == "access_denied" and "update prompt" in refused["message"]
        _error(await http.delete(f"/v1/prompts/{prompt_id}", headers=carol), 403)
        _error(await http.get(f"/v1/prompts/{prompt_id}", headers=bob), 404)
        assert (await _ok(await http.get("/v1/prompts", headers=bob)))["data"] == []
        assert (await _ok(await http.get(f"/v1/prompts/{prompt_id}", headers=alice)))["version"] == 1


# ---- Responses' prompt parameter ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
async def responses_app(echo_plugin: Path, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[InProcessServer]:
    config = echo_config(
        tmp_path_factory.mktemp("inprocess-prompt-responses"),
        apis=["inference", "models", "prompts", "responses"],
        server={**_auth(), "max_request_bytes": 65536},
    )
    config["providers"]["responses"] = [{"provider_id": "builtin", "provider_type": "inline::builtin"}]
    async with serve_in_process(config) as server:
        yield server


async def _prompt(app: InProcessServer, who: str, template: str, **extra: Any) -> str:
    body = {"prompt": template, **extra}
    return str((await _ok(await app.http.post("/v1/prompts", json=body, headers=_as(app, who))))["id"])


async def test_a_response_renders_the_prompt_into_its_instructions(responses_app: InProcessServer) -> None:
    app = responses_app
    prompt_id = await _prompt(app, "alice", "Answer as {{ persona }} for {{company}}.")
    await app.http.post(
        f"/v1/prompts/{prompt_id}/versions", json={"prompt": "V2 {{persona}} {{company}}"}, headers=_as(app, "alice")
    )
    client = app.openai_from("127.0.0.1", api_key=KEYS["alice"][0])
    response = await client.responses.create(
        model="echo/echo",
        input="hello",
        prompt={
            "id": prompt_id,
            "version": "1",
            "variables": {"persona": "a pirate", "company": {"type": "input_text", "text": "Acme"}},
        },
        instructions="Keep it short.",
    )
    assert response.instructions == "Answer as a pirate for Acme.\n\nKeep it short."
    assert response.prompt is not None and response.prompt.id == prompt_id and response.prompt.version == "1"
    assert response.prompt.variables is not None and response.prompt.variables["persona"] == "a pirate"
    assert response.output_text == "echo: hello"

    latest = await client.responses.create(
        model="echo/echo", input="hi", prompt={"id": prompt_id, "variables": {"persona": "p", "company": "c"}}
    )
    assert latest.instructions == "V2 p c" and latest.prompt is not None and latest.prompt.version == "2"
    stored = await client.responses.retrieve(latest.id)
    assert stored.prompt is not None and stored.prompt.version == "2" and stored.instructions == "V2 p c"

    plain = await client.responses.create(model="echo/echo", input="hi")
    assert "prompt" not in plain.model_dump(exclude_unset=True)  # omitted when no prompt was used


async def test_a_file_variable_gives_its_text(responses_app: InProcessServer) -> None:
    app = responses_app
    prompt_id = await _prompt(app, "alice", "Use this policy:\n{{policy}}")
    data = base64.b64encode(b"Refunds within 30 days.").decode()
    response = await app.openai_from("127.0.0.1", api_key=KEYS["alice"][0]).responses.create(
        model="echo/echo",
        input="hi",
        prompt={
            "id": prompt_id,
            "variables": {
                "policy": {
                    "type": "input_file",
                    "filename": "policy.txt",
                    "file_data": f"data:text/plain;base64,{data}",
                }
            },
        },
    )
    assert response.instructions is not None and "Refunds within 30 days." in response.instructions


async def test_prompt_errors_are_400s_naming_the_variable(responses_app: InProcessServer) -> None:
    app = responses_app
    alice = _as(app, "alice")
    prompt_id = await _prompt(app, "alice", "Hello {{name}}")

    async def create(prompt: dict[str, Any], who: dict[str, str] = alice) -> httpx.Response:
        body = {"model": "echo/echo", "input": "hi", "prompt": prompt}
        return await app.http.post("/v1/responses", json=body, headers=who)

    error = _error(await create({"id": prompt_id, "variables": {}}), 400)
    assert error["param"] == "prompt.variables.name" and error["code"] == "missing_variable"
    assert "'name'" in error["message"]
    error = _error(await create({"id": prompt_id, "variables": {"name": "x", "nmae": "y"}}), 400)
    assert error["param"] == "prompt.variables.nmae" and error["code"] == "unknown_variable"
    assert "declares: name" in error["message"]
    error = _error(
        await create({"id": prompt_id, "variables": {"name": {"type": "input_image", "image_url": "data:,"}}}), 400
    )
    assert error["param"] == "prompt.variables.name" and "input_image" in error["message"]
    error = _error(await create({"id": prompt_id, "variables": {"name": {"type": "input_audio"}}}), 400)
    assert "input_text, input_file or input_image" in error["message"]
    error = _error(await create({"id": prompt_id, "version": "two", "variables": {"name": "x"}}), 400)
    assert error["param"] == "prompt.version"
    error = _error(await create({"id": prompt_id, "version": "5", "variables": {"name": "x"}}), 404)
    assert error["param"] == "prompt.version"
    error = _error(await create({"id": "pmpt_nope", "variables": {"name": "x"}}), 404)
    assert error["param"] == "prompt.id" and error["code"] == "prompt_not_found"
    # bob cannot use alice's prompt: it does not exist for him
    error = _error(await create({"id": prompt_id, "variables": {"name": "x"}}, _as(app, "bob")), 404)
    assert error["param"] == "prompt.id"
    # a long value used many times is refused before the text is built
    big = await _prompt(app, "alice", "{{v}}" * 200)
    error = _error(await create({"id": big, "variables": {"v": "x" * 6000}}), 400)
    assert error["code"] == "prompt_too_large"


async def test_prompt_without_the_prompts_api_says_how_to_switch_it_on(
    echo_plugin: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    config = echo_config(tmp_path_factory.mktemp("inprocess-no-prompts"), apis=["inference", "models", "responses"])
    config["providers"]["responses"] = [{"provider_id": "builtin", "provider_type": "inline::builtin"}]
    async with serve_in_process(config) as app:
        body = {"model": "echo/echo", "input": "hi", "prompt": {"id": "pmpt_x"}}
        error = _error(await app.http.post("/v1/responses", json=body), 400)
        assert error["param"] == "prompt" and "add prompts to apis" in error["message"]
