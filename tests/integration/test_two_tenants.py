"""Two tenants on one real server: neither reaches the other's data, and a sharing policy grants exactly that.

Each server is a real ``underlay run`` with static API keys (alice and alex in team-a, bob in team-b,
root with the admin role), the echo inference provider (instant, no weights), the embedded MiniLM
embeddings, sqlite-vec and localfs files. Alice creates one of everything that users own; then every
API that can name her data is called as bob, one test id per cell.

- ``isolated``: no ``access_policy`` (the default): bob gets 404 everywhere, exactly as for an id
  that never existed, and alice's data is untouched afterwards.
- ``shared``: a policy that lets team members *read* each other's files, vector stores, responses and
  conversations (not stored chat completions), hides one model from everyone but admins, and
  forbids registering models by route unless admin. Alex (alice's team) can read and search but gets
  403 for every change; bob still gets 404.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.harness import MINILM, RunningServer, start_server
from tests.integration.storage.conftest import PG_HOST, PG_PASSWORD, PG_PORT, PG_USER

KEYS = {
    "alice": ("sk-test-alice-0001", {"teams": ["team-a"]}),
    "alex": ("sk-test-alex-0002", {"teams": ["team-a"]}),
    "bob": ("sk-test-bob-0003", {"teams": ["team-b"]}),
    "root": ("sk-test-root-0004", {"teams": ["ops"], "roles": ["admin"]}),
    "guest": ("sk-test-guest-0005", {"teams": ["team-a"], "roles": ["guest"]}),
}
DOC = "Otters hold hands while they sleep so they do not drift apart. A group of otters is a raft."

SHARING_POLICY: dict[str, Any] = {
    "rules": [
        {
            "effect": "forbid",
            "actions": ["create"],
            "when": ["user with guest in roles"],
            "description": "guests look, they do not create",
        },
        {
            "effect": "forbid",
            "resources": ["model"],
            "ids": ["echo/echo-slow"],
            "unless": ["user with admin in roles"],
            "description": "the slow model is for admins",
        },
        {"effect": "permit", "actions": ["read"], "resources": ["model", "shield", "tool_group"]},
        {"effect": "permit", "resources": ["model"], "when": ["user with admin in roles"]},
        {"effect": "permit", "when": ["user is owner"]},
        {
            "effect": "permit",
            "actions": ["read"],
            "resources": ["file", "vector_store", "response", "conversation"],
            "when": ["user in owners teams"],
        },
    ],
    "routes": [
        {
            "effect": "forbid",
            "methods": ["POST", "DELETE"],
            "path": "/v1/models*",
            "unless": ["user with admin in roles"],
            "description": "only admins manage models",
        }
    ],
}


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _config(access_policy: dict[str, Any] | None, sqlstore: dict[str, Any] | None = None) -> dict[str, Any]:
    config: dict[str, Any] = {
        "apis": ["inference", "models", "files", "vector_io", "vector_stores", "conversations", "responses"],
        "providers": {
            "inference": [
                {"provider_id": "echo", "provider_type": "remote::echo-test", "config": {"delay_seconds": 0}},
                {
                    "provider_id": "sentence-transformers",
                    "provider_type": "inline::sentence-transformers",
                    "config": {"models": [{"name": MINILM, "packaged": MINILM}]},
                },
            ],
            "files": [{"provider_id": "localfs", "provider_type": "inline::localfs", "config": {"root": "files"}}],
            "vector_io": [
                {"provider_id": "sqlite-vec", "provider_type": "inline::sqlite-vec", "config": {"db_path": "v.db"}}
            ],
            "responses": [{"provider_id": "builtin", "provider_type": "inline::builtin", "config": {}}],
        },
        "jobs": {"workers": 2, "lease_seconds": 2, "poll_seconds": 0.1},
        "server": {
            "auth": {
                "providers": [
                    {
                        "type": "api_keys",
                        "keys": [
                            {"sha256": _sha256(key), "principal": name, "attributes": attributes}
                            for name, (key, attributes) in KEYS.items()
                        ],
                    }
                ]
            }
        },
    }
    if access_policy is not None:
        config["access_policy"] = access_policy
    if sqlstore is not None:
        config["storage"] = {"sqlstore": sqlstore}
    return config


@dataclass
class Tenants:
    """A running server, a client per principal, and the ids of what alice created on it."""

    server: RunningServer
    clients: dict[str, httpx.Client]
    ids: dict[str, str]

    def __call__(self, who: str) -> httpx.Client:
        return self.clients[who]


def _wait(predicate: Callable[[], Any], timeout: float = 120.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def _ok(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    return response.json()


def _populate(client: httpx.Client) -> dict[str, str]:
    """One of everything a user owns, created as alice."""
    ids: dict[str, str] = {}
    upload = client.post("/files", files={"file": ("otters.txt", DOC.encode())}, data={"purpose": "assistants"})
    ids["file"] = _ok(upload)["id"]
    store = _ok(client.post("/vector_stores", json={"name": "alice-notes", "embedding_model": MINILM}))
    ids["vector_store"] = store["id"]
    _ok(client.post(f"/vector_stores/{store['id']}/files", json={"file_id": ids["file"]}))
    _wait(
        lambda: _ok(client.get(f"/vector_stores/{store['id']}/files/{ids['file']}"))["status"] == "completed",
        what="alice's file to be ingested",
    )
    batch = _ok(client.post(f"/vector_stores/{store['id']}/file_batches", json={"file_ids": [ids["file"]]}))
    ids["batch"] = batch["id"]
    _wait(  # the batch re-ingests the same file; search hides it until it is done
        lambda: _ok(client.get(f"/vector_stores/{store['id']}/file_batches/{batch['id']}"))["status"] == "completed",
        what="alice's file batch",
    )
    response = _ok(client.post("/responses", json={"model": "echo", "input": "alice private question"}))
    ids["response"] = response["id"]
    background = _ok(client.post("/responses", json={"model": "echo", "input": "later", "background": True}))
    ids["background_response"] = background["id"]
    conversation = _ok(
        client.post("/conversations", json={"items": [{"type": "message", "role": "user", "content": "alice note"}]})
    )
    ids["conversation"] = conversation["id"]
    items = _ok(client.get(f"/conversations/{conversation['id']}/items"))
    ids["item"] = items["data"][0]["id"]
    completion = _ok(
        client.post(
            "/chat/completions",
            json={"model": "echo", "messages": [{"role": "user", "content": "alice secret"}], "store": True},
        )
    )
    ids["chat_completion"] = completion["id"]
    return ids


def _tenants(
    access_policy: dict[str, Any] | None,
    workdir: Path,
    external_provider_path: Path,
    sqlstore: dict[str, Any] | None = None,
) -> Iterator[Tenants]:
    config = _config(access_policy, sqlstore)
    server = start_server(config, workdir, extra_pythonpath=[external_provider_path], timeout=180)
    clients = {
        name: httpx.Client(base_url=server.v1, headers={"Authorization": f"Bearer {key}"}, timeout=60)
        for name, (key, _) in KEYS.items()
    }
    try:
        yield Tenants(server, clients, _populate(clients["alice"]))
    finally:
        for client in clients.values():
            client.close()
        server.stop()


@pytest.fixture(scope="module")
def isolated(tmp_path_factory: pytest.TempPathFactory, external_provider_path: Path) -> Iterator[Tenants]:
    yield from _tenants(None, tmp_path_factory.mktemp("isolated"), external_provider_path)


@contextmanager
def _fresh_postgres_database() -> Iterator[dict[str, Any]]:
    """A new PostgreSQL database for one server (dropped afterwards), as a sqlstore config."""
    import asyncpg

    name = f"underlay_tenants_{uuid.uuid4().hex[:12]}"

    async def admin(statement: str) -> None:
        conn = await asyncpg.connect(
            host=PG_HOST, port=PG_PORT, user=PG_USER, password=PG_PASSWORD, database="postgres"
        )
        try:
            await conn.execute(statement)
        finally:
            await conn.close()

    asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    try:
        yield {
            "type": "postgres",
            "host": PG_HOST,
            "port": PG_PORT,
            "user": PG_USER,
            "password": PG_PASSWORD,
            "db": name,
        }
    finally:
        asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def shared(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, external_provider_path: Path
) -> Iterator[Tenants]:
    """The sharing policy, over each SQL store (team predicates are JSON queries that differ per backend)."""
    workdir = tmp_path_factory.mktemp(f"shared-{request.param}")
    if request.param == "sqlite":
        yield from _tenants(SHARING_POLICY, workdir, external_provider_path)
        return
    with _fresh_postgres_database() as sqlstore:
        yield from _tenants(SHARING_POLICY, workdir, external_provider_path, sqlstore)


# ---- the matrix: every way to name alice's data, as someone who may not see it ------------------------------


@dataclass(frozen=True)
class Cell:
    """One call against alice's data; ``check`` (run as alice afterwards) proves nothing changed."""

    method: str
    path: str
    body: dict[str, Any] | None = None
    check: str | None = None  # a GET path alice must still be able to read


CELLS: dict[str, Cell] = {
    # files (metadata and content)
    "files-retrieve": Cell("GET", "/files/{file}"),
    "files-content": Cell("GET", "/files/{file}/content"),
    "files-delete": Cell("DELETE", "/files/{file}", check="/files/{file}/content"),
    "files-list-after": Cell("GET", "/files?after={file}"),
    # vector stores, their search and their files
    "vector_stores-retrieve": Cell("GET", "/vector_stores/{vector_store}"),
    "vector_stores-update": Cell(
        "POST", "/vector_stores/{vector_store}", {"name": "hijacked"}, check="/vector_stores/{vector_store}"
    ),
    "vector_stores-delete": Cell("DELETE", "/vector_stores/{vector_store}", check="/vector_stores/{vector_store}"),
    "vector_stores-search": Cell("POST", "/vector_stores/{vector_store}/search", {"query": "otters"}),
    "vector_stores-files-list": Cell("GET", "/vector_stores/{vector_store}/files"),
    "vector_stores-files-retrieve": Cell("GET", "/vector_stores/{vector_store}/files/{file}"),
    "vector_stores-files-content": Cell("GET", "/vector_stores/{vector_store}/files/{file}/content"),
    "vector_stores-files-update": Cell(
        "POST",
        "/vector_stores/{vector_store}/files/{file}",
        {"attributes": {"owner": "bob"}},
        check="/vector_stores/{vector_store}/files/{file}",
    ),
    "vector_stores-files-delete": Cell(
        "DELETE", "/vector_stores/{vector_store}/files/{file}", check="/vector_stores/{vector_store}/files/{file}"
    ),
    "vector_stores-files-attach": Cell("POST", "/vector_stores/{vector_store}/files", {"file_id": "{own_file}"}),
    "vector_stores-batches-create": Cell(
        "POST", "/vector_stores/{vector_store}/file_batches", {"file_ids": ["{own_file}"]}
    ),
    "vector_stores-batches-retrieve": Cell("GET", "/vector_stores/{vector_store}/file_batches/{batch}"),
    "vector_stores-batches-files": Cell("GET", "/vector_stores/{vector_store}/file_batches/{batch}/files"),
    "vector_stores-batches-cancel": Cell(
        "POST",
        "/vector_stores/{vector_store}/file_batches/{batch}/cancel",
        check="/vector_stores/{vector_store}/file_batches/{batch}",
    ),
    "vector_stores-list-after": Cell("GET", "/vector_stores?after={vector_store}"),
    # responses, their input items, chaining, deletion
    "responses-retrieve": Cell("GET", "/responses/{response}"),
    "responses-input_items": Cell("GET", "/responses/{response}/input_items"),
    "responses-delete": Cell("DELETE", "/responses/{response}", check="/responses/{response}"),
    "responses-cancel": Cell("POST", "/responses/{background_response}/cancel"),
    "responses-chain": Cell(
        "POST", "/responses", {"model": "echo", "input": "go on", "previous_response_id": "{response}"}
    ),
    "responses-into-conversation": Cell(
        "POST", "/responses", {"model": "echo", "input": "hi", "conversation": "{conversation}"}
    ),
    "responses-list-after": Cell("GET", "/responses?after={response}"),
    # conversations and their items
    "conversations-retrieve": Cell("GET", "/conversations/{conversation}"),
    "conversations-update": Cell(
        "POST", "/conversations/{conversation}", {"metadata": {"by": "bob"}}, check="/conversations/{conversation}"
    ),
    "conversations-delete": Cell("DELETE", "/conversations/{conversation}", check="/conversations/{conversation}"),
    "conversations-items-list": Cell("GET", "/conversations/{conversation}/items"),
    "conversations-items-create": Cell(
        "POST",
        "/conversations/{conversation}/items",
        {"items": [{"type": "message", "role": "user", "content": "bob was here"}]},
    ),
    "conversations-items-retrieve": Cell("GET", "/conversations/{conversation}/items/{item}"),
    "conversations-items-delete": Cell(
        "DELETE", "/conversations/{conversation}/items/{item}", check="/conversations/{conversation}/items/{item}"
    ),
    # stored chat completions
    "chat_completions-retrieve": Cell("GET", "/chat/completions/{chat_completion}"),
    "chat_completions-messages": Cell("GET", "/chat/completions/{chat_completion}/messages"),
    "chat_completions-delete": Cell(
        "DELETE", "/chat/completions/{chat_completion}", check="/chat/completions/{chat_completion}"
    ),
    "chat_completions-list-after": Cell("GET", "/chat/completions?after={chat_completion}"),
}

LISTS = {
    "files": ("/files", "file"),
    "vector_stores": ("/vector_stores", "vector_store"),
    "responses": ("/responses", "response"),
    "chat_completions": ("/chat/completions", "chat_completion"),
}


def _fill(value: Any, ids: dict[str, str]) -> Any:
    if isinstance(value, str):
        return value.format(**ids)
    if isinstance(value, list):
        return [_fill(v, ids) for v in value]
    if isinstance(value, dict):
        return {k: _fill(v, ids) for k, v in value.items()}
    return value


def _own_file(client: httpx.Client) -> str:
    """A file the caller owns, for cells that try to put it into alice's store."""
    upload = client.post("/files", files={"file": ("mine.txt", b"my own words")}, data={"purpose": "assistants"})
    return _ok(upload)["id"]


def _call(tenants: Tenants, who: str, cell: Cell) -> httpx.Response:
    ids = {**tenants.ids}
    if "{own_file}" in str(cell.body):
        ids["own_file"] = _own_file(tenants(who))
    body = _fill(cell.body, ids)
    return tenants(who).request(cell.method, _fill(cell.path, ids), json=body)


def _still_there(tenants: Tenants, check: str) -> None:
    """Alice can still read what the refused call tried to change or delete."""
    response = tenants("alice").get(_fill(check, tenants.ids))
    assert response.status_code == 200, response.text
    if "/content" not in check:
        body = response.json()
        assert "hijacked" not in str(body) and "bob" not in str(body.get("metadata") or body.get("attributes") or "")


def _assert_hidden(response: httpx.Response) -> None:
    """404 (or 400 for a cursor) in the error envelope, naming nothing of alice's data."""
    assert response.status_code in (400, 404), (response.status_code, response.text)
    error = response.json()["error"]
    assert set(error) >= {"message", "type", "param", "code"}
    assert "alice" not in response.text and DOC[:20] not in response.text


@pytest.mark.parametrize("cell", list(CELLS), ids=list(CELLS))
def test_other_tenant_cannot_reach_data(isolated: Tenants, cell: str) -> None:
    spec = CELLS[cell]
    _assert_hidden(_call(isolated, "bob", spec))
    if spec.check is not None:
        _still_there(isolated, spec.check)


@pytest.mark.parametrize("api", list(LISTS), ids=list(LISTS))
def test_other_tenant_lists_nothing_of_alices(isolated: Tenants, api: str) -> None:
    path, kind = LISTS[api]
    assert isolated.ids[kind] in [item["id"] for item in _ok(isolated("alice").get(path))["data"]]
    assert isolated.ids[kind] not in [item["id"] for item in _ok(isolated("bob").get(path))["data"]]


def test_other_tenants_search_never_returns_alices_chunks(isolated: Tenants) -> None:
    store = _ok(isolated("bob").post("/vector_stores", json={"name": "bob-notes", "embedding_model": MINILM}))
    hits = _ok(isolated("bob").post(f"/vector_stores/{store['id']}/search", json={"query": "otters sleep"}))
    assert hits["data"] == []
    mine = _ok(
        isolated("alice").post(f"/vector_stores/{isolated.ids['vector_store']}/search", json={"query": "otters"})
    )
    assert "Otters" in mine["data"][0]["content"][0]["text"]


def test_hidden_ids_answer_like_missing_ones(isolated: Tenants) -> None:
    hidden = isolated("bob").get(f"/files/{isolated.ids['file']}").json()["error"]
    missing = isolated("bob").get("/files/file-doesnotexist0000000000").json()["error"]
    assert hidden["type"] == missing["type"] == "not_found_error"
    assert hidden["message"].replace(isolated.ids["file"], "ID") == missing["message"].replace(
        "file-doesnotexist0000000000", "ID"
    )


# ---- the sharing policy: team members read, and only read ----------------------------------------------------

READS = [
    "files-retrieve",
    "files-content",
    "vector_stores-retrieve",
    "vector_stores-search",
    "vector_stores-files-list",
    "vector_stores-files-retrieve",
    "vector_stores-files-content",
    "vector_stores-batches-retrieve",
    "vector_stores-batches-files",
    "responses-retrieve",
    "responses-input_items",
    "responses-chain",
    "conversations-retrieve",
    "conversations-items-list",
    "conversations-items-retrieve",
]
WRITES = [
    "files-delete",
    "vector_stores-update",
    "vector_stores-delete",
    "vector_stores-files-update",
    "vector_stores-files-delete",
    "vector_stores-files-attach",
    "vector_stores-batches-create",
    "vector_stores-batches-cancel",
    "responses-delete",
    "responses-cancel",
    "responses-into-conversation",
    "conversations-update",
    "conversations-delete",
    "conversations-items-create",
    "conversations-items-delete",
]
NOT_SHARED = [
    "chat_completions-retrieve",
    "chat_completions-messages",
    "chat_completions-delete",
    "chat_completions-list-after",
]


@pytest.mark.parametrize("cell", READS, ids=READS)
def test_team_member_may_read(shared: Tenants, cell: str) -> None:
    response = _call(shared, "alex", CELLS[cell])
    assert response.status_code == 200, response.text
    if cell == "vector_stores-search":
        assert "Otters" in response.json()["data"][0]["content"][0]["text"]
    if cell == "responses-chain":
        assert response.json()["previous_response_id"] == shared.ids["response"]


@pytest.mark.parametrize("cell", WRITES, ids=WRITES)
def test_team_member_may_not_change(shared: Tenants, cell: str) -> None:
    spec = CELLS[cell]
    response = _call(shared, "alex", spec)
    assert response.status_code == 403, response.text
    error = response.json()["error"]
    assert error["type"] == "permission_error" and error["code"] == "access_denied"
    assert "access_policy" in error["message"]
    if spec.check is not None:
        _still_there(shared, spec.check)


@pytest.mark.parametrize("cell", NOT_SHARED, ids=NOT_SHARED)
def test_team_member_does_not_see_what_is_not_shared(shared: Tenants, cell: str) -> None:
    _assert_hidden(_call(shared, "alex", CELLS[cell]))


@pytest.mark.parametrize("cell", READS + WRITES, ids=READS + WRITES)
def test_other_team_still_sees_nothing(shared: Tenants, cell: str) -> None:
    _assert_hidden(_call(shared, "bob", CELLS[cell]))


def test_team_listing_includes_teammates_rows_in_the_query(shared: Tenants) -> None:
    own = _own_file(shared("alex"))
    listed = [f["id"] for f in _ok(shared("alex").get("/files?limit=100"))["data"]]
    assert shared.ids["file"] in listed and own in listed
    assert own not in [f["id"] for f in _ok(shared("bob").get("/files?limit=100"))["data"]]
    # Paging from a teammate's id works because the cursor row is visible in the same query.
    _ok(shared("alex").get(f"/files?after={shared.ids['file']}"))
    stores = [s["id"] for s in _ok(shared("alex").get("/vector_stores"))["data"]]
    assert shared.ids["vector_store"] in stores
    chats = [c["id"] for c in _ok(shared("alex").get("/chat/completions"))["data"]]
    assert shared.ids["chat_completion"] not in chats


# ---- resource and route policies on registered resources ------------------------------------------------------


def test_model_hidden_from_everyone_but_admins(shared: Tenants) -> None:
    for who in ("alice", "bob"):
        assert "echo/echo-slow" not in [m["id"] for m in _ok(shared(who).get("/models"))["data"]]
        assert shared(who).get("/models/echo/echo-slow").status_code == 404
        use = shared(who).post(
            "/chat/completions", json={"model": "echo-slow", "messages": [{"role": "user", "content": "x"}]}
        )
        assert use.status_code == 404 and use.json()["error"]["param"] == "model"
    assert "echo/echo" in [m["id"] for m in _ok(shared("bob").get("/models"))["data"]]
    assert "echo/echo-slow" in [m["id"] for m in _ok(shared("root").get("/models"))["data"]]
    _ok(shared("root").get("/models/echo/echo-slow"))


def test_route_policy_keeps_model_management_to_admins(shared: Tenants) -> None:
    body = {"model_id": "bobs-model", "provider_id": "echo", "provider_model_id": "echo"}
    refused = shared("bob").post("/models", json=body)
    assert refused.status_code == 403
    assert "POST /v1/models" in refused.json()["error"]["message"]
    assert shared("bob").delete("/models/echo/echo").status_code == 403
    created = _ok(shared("root").post("/models", json={**body, "model_id": "roots-model"}))
    assert created["id"] == "roots-model"
    assert "roots-model" in [m["id"] for m in _ok(shared("bob").get("/models"))["data"]]
    _ok(shared("root").delete("/models/roots-model"))


def test_default_policy_keeps_registered_resources_open(isolated: Tenants) -> None:
    for who in ("alice", "bob"):
        assert "echo/echo-slow" in [m["id"] for m in _ok(isolated(who).get("/models"))["data"]]


CREATES = {
    "files": ("POST", "/files", None),
    "vector_stores": ("POST", "/vector_stores", {"name": "guest", "embedding_model": MINILM}),
    "responses": ("POST", "/responses", {"model": "echo", "input": "hi"}),
    "conversations": ("POST", "/conversations", {}),
    "chat_completions-stored": (
        "POST",
        "/chat/completions",
        {"model": "echo", "messages": [{"role": "user", "content": "hi"}], "store": True},
    ),
}


@pytest.mark.parametrize("api", list(CREATES), ids=list(CREATES))
def test_create_can_be_forbidden_by_role(shared: Tenants, api: str) -> None:
    method, path, body = CREATES[api]
    if api == "files":
        refused = shared("guest").post(path, files={"file": ("g.txt", b"guest")}, data={"purpose": "assistants"})
    else:
        refused = shared("guest").request(method, path, json=body)
    assert refused.status_code == 403, refused.text
    assert refused.json()["error"]["code"] == "access_denied"
    # The guest still reads what its team shares, and may call a model without storing anything.
    _ok(shared("guest").get(f"/files/{shared.ids['file']}"))
    if api == "chat_completions-stored":
        _ok(shared("guest").request(method, path, json={**body, "store": False}))
    if api == "responses":
        _ok(shared("guest").request(method, path, json={**body, "store": False}))
