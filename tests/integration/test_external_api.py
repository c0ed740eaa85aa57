"""A whole new API from a package outside ``underlay/``: the Notes API of ``tests/fixtures/external_api``.

The package is installed by pip (a real wheel build, offline, into a folder put on the server's
``PYTHONPATH``) and found through its ``underlay.apis`` and ``underlay.providers`` entry points. A real
``underlay run`` serves it with API keys on, and the tests drive it over HTTP as two tenants, checking
that it gets what a built-in API gets: its routes in /openapi.json and /v1/inspect/routes, the error
envelope, auth, ownership in its SQL rows and queries, quotas, spans and metrics, a durable job in the
runner's bulk lane, and a call into the built-in inference API (the echo provider of
``tests/fixtures/external_provider``, which answers instantly). Then the same package is served from a
folder (``apis_dir``), and the mistakes an operator can make end ``underlay run`` with one line.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import yaml

from tests.integration.harness import (
    FIXTURES,
    ROOT,
    RunningServer,
    free_port,
    install_external_provider,
    start_server,
)
from underlay import AsyncUnderlay, Underlay
from underlay.client import generic

PACKAGE = FIXTURES / "external_api"
PAGE = ROOT / "docs" / "extending-apis.md"
_NAMED_BLOCK = re.compile(r"^```\w+\n# (\S+)\n(.*?)^```", re.S | re.M)
KEYS = {"alice": "sk-notes-alice-0001", "bob": "sk-notes-bob-0002", "carol": "sk-notes-carol-0003"}
TEXT = "Otters hold hands while they sleep. A group of otters is a raft."


def _copy_package(target: Path) -> Path:
    """The fixture's source, copied so that building it leaves nothing in the repository."""
    shutil.copytree(PACKAGE, target, ignore=shutil.ignore_patterns("__pycache__", "build", "*.egg-info"))
    return target


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The Notes package installed by pip into its own folder, next to the echo inference provider."""
    source = _copy_package(tmp_path_factory.mktemp("notes-src") / "underlay-notes")
    target = tmp_path_factory.mktemp("notes-site")
    command = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--no-build-isolation"]
    result = subprocess.run([*command, "--target", str(target), str(source)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "underlay.apis" in next(target.glob("underlay_notes-0.1.0.dist-info/entry_points.txt")).read_text()
    return install_external_provider(target)


def page_files() -> dict[str, str]:
    """Each block of docs/extending-apis.md that opens with ``# FILE``: the name and the text as shown."""
    return {name: f"# {name}\n{body}" for name, body in _NAMED_BLOCK.findall(PAGE.read_text())}


def _config(**extra: Any) -> dict[str, Any]:
    """The page's notes.yaml (its apis and notes providers), with auth, quotas and telemetry switched on.

    The echo inference provider stands in for the page's embedded model (instant, no weights), so the
    ``writer`` provider asks it; everything else is the page's config.
    """
    page = yaml.safe_load(page_files()["notes.yaml"])
    notes = page["providers"]["notes"]
    for provider in notes:
        if provider["provider_type"] == "inline::model":
            provider["config"]["model"] = "echo"
    config: dict[str, Any] = {
        "apis": [*page["apis"], "telemetry"],
        "providers": {
            "inference": [
                {"provider_id": "echo", "provider_type": "remote::echo-test", "config": {"delay_seconds": 0}}
            ],
            "notes": notes,
        },
        "jobs": {"workers": 1, "poll_seconds": 0.1},
        "telemetry": {"flush_seconds": 0.2},
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
            },
            "quotas": {
                "limits": {"requests_per_minute": 10_000},
                "overrides": [{"principals": ["carol"], "limits": {"requests_per_minute": 2}}],
            },
        },
    }
    return {**config, **extra}


@pytest.fixture(scope="module")
def server(site: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    running = start_server(_config(), tmp_path_factory.mktemp("notes"), extra_pythonpath=[site])
    yield running
    running.stop()


def _client(server: RunningServer, who: str) -> httpx.Client:
    return httpx.Client(base_url=server.base_url, headers={"Authorization": f"Bearer {KEYS[who]}"}, timeout=30)


def _ok(response: httpx.Response) -> Any:
    assert response.status_code < 300, response.text
    return response.json()


def _envelope(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}, error
    return dict(error)


def _summary(client: httpx.Client, note_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 30
    while True:
        note = _ok(client.get(f"/v1alpha/notes/{note_id}"))
        if note["summary_status"] in ("succeeded", "failed", "cancelled") or time.monotonic() > deadline:
            return dict(note)
        time.sleep(0.1)


def test_the_docs_page_shows_the_package_file_by_file() -> None:
    shown = page_files()
    files = [p for p in PACKAGE.rglob("*") if p.is_file() and "__pycache__" not in p.parts]
    assert len(files) == 6
    for path in files:
        name = str(path.relative_to(PACKAGE))
        assert shown.get(name) == path.read_text(), f"docs/extending-apis.md does not show {name} as it is"


def test_its_routes_are_published_under_its_version(server: RunningServer) -> None:
    with _client(server, "alice") as alice:
        paths = _ok(alice.get("/openapi.json"))["paths"]
        routes = _ok(alice.get("/v1/inspect/routes"))["data"]
    assert {"/v1alpha/notes", "/v1alpha/notes/{note_id}", "/v1alpha/notes/{note_id}/stream"} <= set(paths)
    assert "/v1/notes" not in paths
    assert set(paths["/v1alpha/notes"]) == {"get", "post"}
    notes = {(r["method"], r["path"]): r for r in routes if r["api"] == "notes"}
    assert len(notes) == 6
    assert notes[("GET", "/v1alpha/notes/{note_id}/stream")]["streaming"] is True
    assert {(r["version"], r["stability"]) for r in notes.values()} == {("v1alpha", "alpha")}
    chat = next(r for r in routes if (r["method"], r["path"]) == ("POST", "/v1/chat/completions"))
    assert (chat["api"], chat["version"], chat["stability"]) == ("inference", "v1", "stable")  # built-ins alongside


def test_auth_and_the_error_envelope_cover_it(server: RunningServer) -> None:
    error = _envelope(httpx.post(f"{server.base_url}/v1alpha/notes", json={"title": "t", "text": "x"}), 401)
    assert error["type"] == "authentication_error" or "key" in error["message"].lower()
    with _client(server, "alice") as alice:
        error = _envelope(alice.post("/v1alpha/notes", json={"title": "t" * 201, "text": "x"}), 400)
        assert error["param"] == "title"
        error = _envelope(alice.get("/v1alpha/notes", params={"limit": 1000}), 400)
        assert error["param"] == "limit"
        error = _envelope(alice.get("/v1alpha/notes/note_missing"), 404)
        assert error["param"] == "note_id" and "note_missing" in error["message"]


def test_two_tenants_each_see_only_their_own_notes(server: RunningServer) -> None:
    with _client(server, "alice") as alice, _client(server, "bob") as bob:
        mine = [_ok(alice.post("/v1alpha/notes", json={"title": f"a{i}", "text": TEXT})) for i in range(3)]
        bobs = _ok(bob.post("/v1alpha/notes", json={"title": "b", "text": "Bob's note."}))
        listed = _ok(alice.get("/v1alpha/notes", params={"limit": 100}))
        assert {n["id"] for n in mine} <= {n["id"] for n in listed["data"]}
        assert bobs["id"] not in {n["id"] for n in listed["data"]}
        first = _ok(alice.get("/v1alpha/notes", params={"limit": 2, "order": "asc"}))
        assert len(first["data"]) == 2 and first["has_more"] is True
        rest = _ok(alice.get("/v1alpha/notes", params={"limit": 100, "order": "asc", "after": first["last_id"]}))
        assert not {n["id"] for n in first["data"]} & {n["id"] for n in rest["data"]}

        assert [n["id"] for n in _ok(bob.get("/v1alpha/notes"))["data"]] == [bobs["id"]]
        target = mine[0]["id"]
        for response in (
            bob.get(f"/v1alpha/notes/{target}"),
            bob.delete(f"/v1alpha/notes/{target}"),
            bob.get(f"/v1alpha/notes/{target}/stream"),
            bob.post(f"/v1alpha/notes/{target}/summarize", json={}),
        ):
            assert _envelope(response, 404)["message"] == f"Note '{target}' not found."
        error = _envelope(bob.get("/v1alpha/notes", params={"after": target}), 400)  # no paging from her cursor
        assert error["param"] == "after"
        assert _ok(alice.get(f"/v1alpha/notes/{target}"))["title"] == "a0"  # untouched

        assert _ok(alice.delete(f"/v1alpha/notes/{mine[2]['id']}"))["deleted"] is True
        _envelope(alice.get(f"/v1alpha/notes/{mine[2]['id']}"), 404)

    with sqlite3.connect(server.config_path.parent / "state" / "sqlstore.db") as db:
        owners = dict(db.execute("SELECT id, owner_principal FROM notes").fetchall())
    assert owners[target] == "alice" and owners[bobs["id"]] == "bob"


def test_the_streaming_route_sends_sse_events(server: RunningServer) -> None:
    with _client(server, "alice") as alice:
        note = _ok(alice.post("/v1alpha/notes", json={"title": "s", "text": TEXT}))
        with alice.stream("GET", f"/v1alpha/notes/{note['id']}/stream") as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            events = [
                json.loads(line[len("data: ") :])
                for line in response.iter_lines()
                if line.startswith("data: ") and line != "data: [DONE]"
            ]
    assert "".join(e["delta"] for e in events if e["type"] == "note.delta") == TEXT
    assert events[-1] == {"type": "note.done", "note_id": note["id"]}


def test_summaries_are_durable_jobs_run_by_either_provider(server: RunningServer) -> None:
    with _client(server, "alice") as alice:
        note = _ok(alice.post("/v1alpha/notes", json={"title": "j", "text": TEXT}))
        job = alice.post(f"/v1alpha/notes/{note['id']}/summarize", json={"provider": "first"})
        assert job.status_code == 202 and job.json()["status"] == "queued" and job.json()["id"].startswith("job_")
        done = _summary(alice, note["id"])
        assert (done["summary_status"], done["summary"]) == ("succeeded", "Otters hold hands while they sleep")

        # The second provider calls the built-in inference API through its router, as the note's owner.
        _ok(alice.post(f"/v1alpha/notes/{note['id']}/summarize", json={"provider": "writer"}))
        assert _summary(alice, note["id"])["summary"] == f"echo: {TEXT}"

        error = _envelope(alice.post(f"/v1alpha/notes/{note['id']}/summarize", json={"provider": "nope"}), 400)
        assert error["param"] == "provider" and "first, writer" in error["message"]

    with sqlite3.connect(server.config_path.parent / "state" / "sqlstore.db") as db:
        jobs = db.execute(
            "SELECT kind, status, owner_principal FROM jobs WHERE reference = ?", (note["id"],)
        ).fetchall()
    assert jobs == [("notes.summarize", "succeeded", "alice")] * 2


def test_spans_metrics_and_quotas_cover_it(server: RunningServer) -> None:
    with _client(server, "alice") as alice:
        created = alice.post("/v1alpha/notes", json={"title": "t", "text": TEXT})
        trace_id = created.headers["x-trace-id"]
        deadline = time.monotonic() + 15
        while True:  # spans reach the store in batches, off the request path
            spans = alice.get(f"/v1/telemetry/traces/{trace_id}/spans").json().get("data", [])
            if {"route", "router"} <= {s["layer"] for s in spans} or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        names = {s["layer"]: s["name"] for s in spans}
        assert names["route"] == "POST /v1alpha/notes", spans
        assert "notes" in names["router"] and "create_note" in names["router"], spans
        metrics = alice.get("/metrics").text
    assert 'route="/v1alpha/notes"' in metrics

    with _client(server, "carol") as carol:
        statuses = [carol.get("/v1alpha/notes").status_code for _ in range(3)]
        assert statuses[:2] == [200, 200]
        error = _envelope(carol.get("/v1alpha/notes"), 429)
    assert "carol" in error["message"]


def _sdk_round_trip(server: RunningServer) -> tuple[list[Any], list[Any]]:
    """Alice and Bob through ``client.api("notes")`` (sync): create, list, stream; Bob cannot reach hers.

    Returns what Alice's list and stream gave, for the caller to check their types."""
    with Underlay(base_url=server.v1, api_key=KEYS["alice"], max_retries=0) as alice_client:
        with Underlay(base_url=server.v1, api_key=KEYS["bob"], max_retries=0) as bob_client:
            alice, bob = alice_client.api("notes"), bob_client.api("notes")
            made = alice.create_note(title="sdk", text=TEXT)
            note_id = made["id"] if isinstance(made, dict) else made.id
            bobs = bob.create_note({"title": "sdk-b", "text": "Bob's."})
            bob_id = bobs["id"] if isinstance(bobs, dict) else bobs.id
            listed = alice.list_notes(limit=100, order="desc")
            data = listed["data"] if isinstance(listed, dict) else listed.data
            ids = [n["id"] if isinstance(n, dict) else n.id for n in data]
            assert note_id in ids and bob_id not in ids
            events = list(alice.stream_note(note_id=note_id))
            with pytest.raises(openai.NotFoundError, match=f"Note '{note_id}' not found"):
                bob.retrieve_note(note_id=note_id)
            with pytest.raises(openai.BadRequestError) as caught:
                alice.create_note(title="t" * 201, text="x")
            assert caught.value.body["param"] == "title"  # type: ignore[index]
            with pytest.raises(openai.AuthenticationError):
                Underlay(base_url=server.v1, api_key="sk-wrong", max_retries=0).api("notes").list_notes()
    return data, events


def test_the_sdk_calls_it_from_the_server_description_without_the_package(server: RunningServer) -> None:
    """This test process cannot import ``underlay_notes`` (only the server has it on its path)."""
    data, events = _sdk_round_trip(server)
    assert all(isinstance(n, dict) for n in data)
    assert "".join(e["delta"] for e in events if e["type"] == "note.delta") == TEXT
    assert events[-1]["type"] == "note.done"


def test_the_sdk_is_typed_by_its_models_when_the_package_is_importable(
    site: Path, server: RunningServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(site))  # as if the client had pip-installed underlay-notes too
    try:
        from underlay_notes.contract import Note, NoteDelta, NoteDone

        data, events = _sdk_round_trip(server)
        assert data and all(isinstance(n, Note) for n in data)
        assert all(isinstance(e, NoteDelta | NoteDone) for e in events) and isinstance(events[-1], NoteDone)
        assert "".join(e.delta for e in events if isinstance(e, NoteDelta)) == TEXT

        async def in_async() -> list[Any]:
            async with AsyncUnderlay(base_url=server.v1, api_key=KEYS["alice"], max_retries=0) as client:
                notes = client.api("notes")
                made = await notes.create_note(title="async", text=TEXT)
                assert isinstance(made, Note)
                return [event async for event in await notes.stream_note(note_id=made.id)]

        streamed = asyncio.run(in_async())
        assert isinstance(streamed[-1], NoteDone) and "".join(e.delta for e in streamed[:-1]) == TEXT
    finally:
        generic._local_tables.cache_clear()  # later tests see the package as absent again


def test_an_operator_folder_serves_the_same_api(site: Path, tmp_path: Path) -> None:
    """``apis_dir``: the package copied into a folder, not installed; its providers come from ``PROVIDERS``.

    A broken package in the folder that no config names does not stop the server.
    """
    folder = tmp_path / "apis"
    _copy_package(tmp_path / "src")
    shutil.copytree(tmp_path / "src" / "underlay_notes", folder / "underlay_notes")
    _write_package(folder, "unused_and_broken", "raise RuntimeError('never configured')\n")  # not in apis: ignored
    config = _config(apis=["notes"], apis_dir="apis")
    config["providers"] = {"notes": [{"provider_id": "first", "provider_type": "inline::first-sentence"}]}
    running = start_server(config, tmp_path)  # no extra PYTHONPATH: nothing is installed
    try:
        with _client(running, "alice") as alice:
            note = _ok(alice.post("/v1alpha/notes", json={"title": "d", "text": TEXT}))
            _ok(alice.post(f"/v1alpha/notes/{note['id']}/summarize", json={}))
            assert _summary(alice, note["id"])["summary"] == "Otters hold hands while they sleep"
            _envelope(alice.post("/v1/chat/completions", json={}), 404)  # only the APIs it lists
    finally:
        running.stop()


# ---- one line for each mistake ---------------------------------------------------------------------------


def _run(tmp_path: Path, config: dict[str, Any], pythonpath: Path | None = None) -> str:
    """``underlay run`` on ``config``; returns its single stderr line (exit 2, no traceback)."""
    (tmp_path / "run.yaml").write_text(yaml.safe_dump({"state_dir": str(tmp_path / "state"), **config}))
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    if pythonpath is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(pythonpath), env.get("PYTHONPATH", "")])
    result = subprocess.run(
        [sys.executable, "-m", "underlay", "run", str(tmp_path / "run.yaml"), "--port", str(free_port())],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=tmp_path,
        env=env,
    )
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2 and "Traceback" not in result.stderr and len(lines) == 1, result.stderr[-3000:]
    return lines[0]


def _write_package(folder: Path, name: str, init: str) -> None:
    (folder / name).mkdir(parents=True)
    (folder / name / "__init__.py").write_text(init)


def test_a_missing_api_package_is_one_line(tmp_path: Path) -> None:
    line = _run(tmp_path, {"apis": ["notes"]})
    assert "apis: unknown API 'notes'" in line and "'underlay.apis' entry point" in line and "apis_dir" in line


def test_a_broken_api_package_is_one_line_naming_it(tmp_path: Path) -> None:
    _write_package(tmp_path / "apis", "notes", "import underlay_notes_dependency_that_is_missing\n")
    line = _run(tmp_path, {"apis": ["notes"], "apis_dir": "apis"})
    assert "API 'notes' from package notes (in " in line and "failed to load" in line, line
    assert "ModuleNotFoundError" in line and "underlay_notes_dependency_that_is_missing" in line, line


def test_two_packages_claiming_one_route_are_refused(site: Path, tmp_path: Path) -> None:
    """A folder package that serves ``/v1alpha/notes`` too, next to the installed Notes package."""
    _write_package(
        tmp_path / "apis",
        "memos",
        "from underlay_notes import API\nAPIS = {'memos': API}\n",  # the same routes under another name
    )
    line = _run(tmp_path, {"apis": ["notes", "memos"], "apis_dir": "apis"}, pythonpath=site)
    assert "POST /v1alpha/notes is claimed by both API 'notes' (package underlay-notes)" in line, line
    assert "API 'memos' (package memos (in " in line, line


def test_an_api_may_not_take_a_platform_or_built_in_route(site: Path, tmp_path: Path) -> None:
    init = (
        "from dataclasses import replace\nfrom underlay_notes import API\n"
        "APIS = {'clash': replace(API, version='v1', routes=[replace(API.routes[1], path='/models')])}\n"
    )
    _write_package(tmp_path / "apis", "clash", init)
    line = _run(tmp_path, {"apis": ["inference", "models", "clash"], "apis_dir": "apis"}, pythonpath=site)
    assert "GET /v1/models is claimed by both API 'models' (package underlay)" in line, line


def test_a_malformed_version_is_one_line(site: Path, tmp_path: Path) -> None:
    _write_package(
        tmp_path / "apis",
        "odd",
        "from dataclasses import replace\nfrom underlay_notes import API\n"
        "APIS = {'odd': replace(API, version='latest')}\n",
    )
    line = _run(tmp_path, {"apis": ["odd"], "apis_dir": "apis"}, pythonpath=site)
    assert "API 'odd' (package odd (in " in line and "version 'latest'" in line and "v1alpha" in line, line
