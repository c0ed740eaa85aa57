"""The Datasets API in process: register (inline rows, Files API files, allowed file:// paths), paging with
iterrows, append-rows, per-row checks that name the row and field, purposes, and two tenants.

No model is needed (``apis: [files, datasets]``). The rows live in the SQL store, so the app runs on
SQLite and on a fresh PostgreSQL database. A real server registering an uploaded file runs in
``tests/integration/test_datasets_server.py``.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.inprocess.harness import InProcessServer, serve_in_process

KEYS = {"alice": "sk-alice-datasets", "bob": "sk-bob-datasets"}
QA = [{"input_query": f"What is {i} + {i}?", "expected_answer": str(2 * i)} for i in range(5)]


def _config(state_dir: Path, allowed: Path) -> dict[str, Any]:
    keys = [
        {"sha256": hashlib.sha256(key.encode()).hexdigest(), "principal": name, "attributes": {}}
        for name, key in KEYS.items()
    ]
    return {
        "state_dir": str(state_dir),
        "apis": ["files", "datasets"],
        "providers": {
            "files": [{"provider_id": "localfs", "provider_type": "inline::localfs", "config": {}}],
            "datasets": [
                {
                    "provider_id": "localfs-datasets",
                    "provider_type": "inline::localfs",
                    "config": {"allowed_dirs": [str(allowed)]},
                }
            ],
        },
        "server": {"auth": {"providers": [{"type": "api_keys", "keys": keys}]}},
    }


@pytest.fixture(scope="module")
def allowed_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("datasets-allowed")


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
async def app(
    request: pytest.FixtureRequest, allowed_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[InProcessServer]:
    config = _config(tmp_path_factory.mktemp("inprocess-datasets"), allowed_dir)
    if request.param == "sqlite":
        async with serve_in_process(config) as server:
            yield server
        return
    import asyncpg

    pg = {
        "host": os.environ.get("UNDERLAY_TEST_POSTGRES_HOST", "127.0.0.1"),
        "port": int(os.environ.get("UNDERLAY_TEST_POSTGRES_PORT", "5432")),
        "user": os.environ.get("UNDERLAY_TEST_POSTGRES_USER", "postgres"),
        "password": os.environ.get("UNDERLAY_TEST_POSTGRES_PASSWORD") or None,
    }
    name = f"underlay_datasets_{uuid.uuid4().hex[:12]}"
    config["storage"] = {"sqlstore": {"type": "postgres", "db": name, "create_database": True, **pg}}
    try:
        async with serve_in_process(config) as server:
            yield server
    finally:
        conn = await asyncpg.connect(database="postgres", **pg)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()


def _as(who: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {KEYS[who]}"}


def _ok(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()
    return data


def _error(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    return error


def _unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


async def _register(app: InProcessServer, who: str, **body: Any) -> httpx.Response:
    return await app.http.post("/v1beta/datasets", json=body, headers=_as(who))


async def _upload(app: InProcessServer, who: str, name: str, data: bytes) -> str:
    response = await app.http.post(
        "/v1/files", files={"file": (name, data)}, data={"purpose": "user_data"}, headers=_as(who)
    )
    return str(_ok(response)["id"])


async def _rows(app: InProcessServer, who: str, dataset_id: str, **query: Any) -> dict[str, Any]:
    return _ok(await app.http.get(f"/v1beta/datasetio/iterrows/{dataset_id}", params=query, headers=_as(who)))


async def test_register_inline_rows_page_and_append(app: InProcessServer) -> None:
    dataset_id = _unique("arith")
    created = _ok(
        await _register(
            app,
            "alice",
            purpose="eval/question-answer",
            source={"type": "rows", "rows": QA},
            dataset_id=dataset_id,
            metadata={"team": "evals"},
        )
    )
    assert created["identifier"] == dataset_id and created["object"] == "dataset" and created["type"] == "dataset"
    assert created["purpose"] == "eval/question-answer" and created["row_count"] == 5
    assert created["provider_id"] == "localfs-datasets" and created["metadata"] == {"team": "evals"}
    assert created["source"] == {"type": "rows", "rows": []}  # rows are read with iterrows, not echoed

    first = await _rows(app, "alice", dataset_id, limit=2)
    assert first == {"data": QA[:2], "next_start_index": 2}
    second = await _rows(app, "alice", dataset_id, start_index=2, limit=2)
    assert second == {"data": QA[2:4], "next_start_index": 4}
    last = await _rows(app, "alice", dataset_id, start_index=4, limit=2)
    assert last == {"data": QA[4:], "next_start_index": None}
    assert await _rows(app, "alice", dataset_id, start_index=50) == {"data": [], "next_start_index": None}

    more = [{"input_query": "Capital of France?", "expected_answer": "Paris", "tag": "geo"}]
    appended = _ok(
        await app.http.post(f"/v1beta/datasetio/append-rows/{dataset_id}", json={"rows": more}, headers=_as("alice"))
    )
    assert appended == {
        "dataset_id": dataset_id,
        "object": "dataset.rows_appended",
        "appended": 1,
        "row_count": 6,
    }
    assert (await _rows(app, "alice", dataset_id, start_index=5))["data"] == more  # extra fields are kept
    shown = _ok(await app.http.get(f"/v1beta/datasets/{dataset_id}", headers=_as("alice")))
    assert shown["row_count"] == 6

    listed = _ok(await app.http.get("/v1beta/datasets", params={"limit": 100}, headers=_as("alice")))
    assert dataset_id in [d["identifier"] for d in listed["data"]]

    deleted = _ok(await app.http.delete(f"/v1beta/datasets/{dataset_id}", headers=_as("alice")))
    assert deleted == {"id": dataset_id, "object": "dataset.deleted", "deleted": True}
    _error(await app.http.get(f"/v1beta/datasets/{dataset_id}", headers=_as("alice")), 404)
    _error(await app.http.get(f"/v1beta/datasetio/iterrows/{dataset_id}", headers=_as("alice")), 404)
    # The id is free again, and the new dataset does not see the old rows.
    again = _ok(
        await _register(
            app, "alice", purpose="free-form", source={"type": "rows", "rows": [{"x": 1}]}, dataset_id=dataset_id
        )
    )
    assert again["row_count"] == 1
    assert (await _rows(app, "alice", dataset_id))["data"] == [{"x": 1}]


@pytest.mark.parametrize(
    ("purpose", "rows", "param", "words"),
    [
        (
            "eval/question-answer",
            [QA[0], QA[1], {"input_query": "q"}],
            "source.rows[2].expected_answer",
            ["row 3", "'expected_answer'", "missing"],
        ),
        (
            "eval/question-answer",
            [{"input_query": ["not", "text"], "expected_answer": "a"}],
            "source.rows[0].input_query",
            ["row 1", "must be a string"],
        ),
        (
            "eval/messages-answer",
            [
                {"messages": [{"role": "user", "content": "hi"}], "expected_answer": "hello"},
                {"messages": [], "expected_answer": "x"},
            ],
            "source.rows[1].messages",
            ["row 2", "non-empty list"],
        ),
        (
            "post-training/messages",
            [{"messages": [{"role": "user", "content": "hi"}, {"role": "wizard", "content": "?"}]}],
            "source.rows[0].messages[1].role",
            ["row 1", "messages[1].role", "user"],
        ),
        (
            "eval/question-answer",
            [{"input_query": "q", "expected_answer": "a", "chat_completion_input": "not json"}],
            "source.rows[0].chat_completion_input",
            ["row 1", "chat_completion_input"],
        ),
    ],
)
async def test_a_malformed_row_names_its_row_and_field(
    app: InProcessServer, purpose: str, rows: list[Any], param: str, words: list[str]
) -> None:
    dataset_id = _unique("bad")
    error = _error(
        await _register(app, "alice", purpose=purpose, source={"type": "rows", "rows": rows}, dataset_id=dataset_id),
        400,
    )
    assert error["param"] == param and error["code"] == "invalid_row"
    for word in words:
        assert word in error["message"], error
    # Nothing half-registered is left behind: the id is unknown, and free to use.
    _error(await app.http.get(f"/v1beta/datasets/{dataset_id}", headers=_as("alice")), 404)
    _ok(
        await _register(app, "alice", purpose="free-form", source={"type": "rows", "rows": [{}]}, dataset_id=dataset_id)
    )


async def test_append_checks_rows_against_the_purpose(app: InProcessServer) -> None:
    dataset_id = _unique("chat")
    rows = [{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}]
    _ok(
        await _register(
            app, "alice", purpose="post-training/messages", source={"type": "rows", "rows": rows}, dataset_id=dataset_id
        )
    )
    bad = {"rows": [rows[0], {"text": "no messages here"}]}
    error = _error(
        await app.http.post(f"/v1beta/datasetio/append-rows/{dataset_id}", json=bad, headers=_as("alice")), 400
    )
    assert error["param"] == "rows[1].messages" and "row 2" in error["message"]
    assert (await _rows(app, "alice", dataset_id))["data"] == rows  # nothing of the refused append was kept


async def test_register_from_uploaded_files(app: InProcessServer) -> None:
    jsonl = b"".join(json.dumps(row).encode() + b"\n" for row in QA)
    file_id = await _upload(app, "alice", "qa.jsonl", jsonl)
    from_jsonl = _ok(
        await _register(app, "alice", purpose="eval/question-answer", source={"type": "uri", "uri": file_id})
    )
    assert from_jsonl["identifier"].startswith("ds_") and from_jsonl["row_count"] == 5
    assert from_jsonl["source"] == {"type": "uri", "uri": file_id, "format": None}
    assert (await _rows(app, "alice", from_jsonl["identifier"], limit=100))["data"] == QA

    csv_text = "input_query,expected_answer,chat_completion_input\n"
    csv_text += '"Say ""hi""",hi,"[{""role"": ""user"", ""content"": ""Say hi""}]"\n'
    csv_id = await _upload(app, "alice", "qa.csv", csv_text.encode())
    from_csv = _ok(await _register(app, "alice", purpose="eval/question-answer", source={"type": "uri", "uri": csv_id}))
    (row,) = (await _rows(app, "alice", from_csv["identifier"]))["data"]
    assert row["input_query"] == 'Say "hi"' and row["chat_completion_input"] == [{"role": "user", "content": "Say hi"}]

    import pyarrow as pa
    import pyarrow.parquet as pq

    buffer = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(QA), buffer)
    parquet_id = await _upload(app, "alice", "qa.parquet", buffer.getvalue())
    from_parquet = _ok(
        await _register(app, "alice", purpose="eval/question-answer", source={"type": "uri", "uri": parquet_id})
    )
    assert (await _rows(app, "alice", from_parquet["identifier"], limit=3))["data"] == QA[:3]

    # A broken line is named by its number; a name that says no format needs source.format.
    broken = await _upload(app, "alice", "broken.jsonl", jsonl + b"{not json\n")
    error = _error(
        await _register(app, "alice", purpose="eval/question-answer", source={"type": "uri", "uri": broken}), 400
    )
    assert "line 6" in error["message"] and "not JSON" in error["message"]
    odd = await _upload(app, "alice", "rows.data", jsonl)
    error = _error(
        await _register(app, "alice", purpose="eval/question-answer", source={"type": "uri", "uri": odd}), 400
    )
    assert error["param"] == "source.format"
    told = _ok(
        await _register(
            app, "alice", purpose="eval/question-answer", source={"type": "uri", "uri": odd, "format": "jsonl"}
        )
    )
    assert told["row_count"] == 5
    # A file whose rows do not fit the purpose: the row and field, numbered as in the file.
    wrong = await _upload(app, "alice", "chat.jsonl", jsonl)
    error = _error(
        await _register(app, "alice", purpose="post-training/messages", source={"type": "uri", "uri": wrong}), 400
    )
    assert error["param"] == "source[0].messages" and "row 1" in error["message"]


async def test_file_uris_only_inside_allowed_directories(
    app: InProcessServer, allowed_dir: Path, tmp_path: Path
) -> None:
    inside = allowed_dir / f"{_unique('qa')}.jsonl"
    inside.write_text("".join(json.dumps(row) + "\n" for row in QA))
    created = _ok(
        await _register(app, "alice", purpose="eval/question-answer", source={"type": "uri", "uri": inside.as_uri()})
    )
    assert created["row_count"] == 5

    outside = tmp_path / "secret.jsonl"
    outside.write_text(json.dumps(QA[0]) + "\n")
    link = allowed_dir / f"{_unique('link')}.jsonl"
    link.symlink_to(outside)
    for uri in (
        outside.as_uri(),
        "file:///etc/passwd",
        f"file://{allowed_dir}/../{outside.parent.name}/secret.jsonl",
        link.as_uri(),  # a symlink out of the directory is outside it
        f"file://{allowed_dir}/missing.jsonl",
        "file://evil.example/etc/passwd",
        "https://example.com/rows.jsonl",
    ):
        error = _error(await _register(app, "alice", purpose="free-form", source={"type": "uri", "uri": uri}), 400)
        assert error["param"] == "source.uri", (uri, error)
        assert "root:" not in error["message"]


async def test_two_tenants_do_not_see_each_others_datasets(app: InProcessServer) -> None:
    dataset_id = _unique("private")
    _ok(
        await _register(
            app, "alice", purpose="eval/question-answer", source={"type": "rows", "rows": QA}, dataset_id=dataset_id
        )
    )
    for response in (
        await app.http.get(f"/v1beta/datasets/{dataset_id}", headers=_as("bob")),
        await app.http.get(f"/v1beta/datasetio/iterrows/{dataset_id}", headers=_as("bob")),
        await app.http.post(f"/v1beta/datasetio/append-rows/{dataset_id}", json={"rows": QA[:1]}, headers=_as("bob")),
        await app.http.delete(f"/v1beta/datasets/{dataset_id}", headers=_as("bob")),
    ):
        error = _error(response, 404)
        assert dataset_id in error["message"]
    listed = _ok(await app.http.get("/v1beta/datasets", params={"limit": 100}, headers=_as("bob")))
    assert dataset_id not in [d["identifier"] for d in listed["data"]]
    # Bob cannot turn Alice's uploaded file into a dataset of his.
    file_id = await _upload(app, "alice", "mine.jsonl", json.dumps(QA[0]).encode() + b"\n")
    _error(await _register(app, "bob", purpose="eval/question-answer", source={"type": "uri", "uri": file_id}), 404)
    # A taken id is a conflict, not a way to overwrite.
    error = _error(
        await _register(app, "bob", purpose="free-form", source={"type": "rows", "rows": [{}]}, dataset_id=dataset_id),
        409,
    )
    assert error["param"] == "dataset_id"
    assert (await _rows(app, "alice", dataset_id, limit=100))["data"] == QA
    _error(await app.http.get("/v1beta/datasets"), 401)


async def test_bounds_and_bad_requests(app: InProcessServer) -> None:
    bad_id = _error(
        await _register(app, "alice", purpose="free-form", source={"type": "rows", "rows": []}, dataset_id="../x"), 400
    )
    assert bad_id["param"] is not None and "dataset_id" in bad_id["param"]
    purpose = _error(await _register(app, "alice", purpose="eval/anything", source={"type": "rows", "rows": []}), 400)
    assert "purpose" in (purpose["param"] or "")
    source = _error(await _register(app, "alice", purpose="free-form", source={"type": "ftp", "uri": "x"}), 400)
    assert "source" in (source["param"] or "")
    provider = _error(
        await _register(app, "alice", purpose="free-form", source={"type": "rows", "rows": []}, provider_id="nope"), 400
    )
    assert provider["param"] == "provider_id" and "localfs-datasets" in provider["message"]
    dataset_id = _unique("bounds")
    _ok(
        await _register(
            app, "alice", purpose="free-form", source={"type": "rows", "rows": [{"a": 1}]}, dataset_id=dataset_id
        )
    )
    limit = _error(
        await app.http.get(f"/v1beta/datasetio/iterrows/{dataset_id}", params={"limit": 5000}, headers=_as("alice")),
        400,
    )
    assert limit["param"] is not None and "limit" in limit["param"]
    empty = _error(
        await app.http.post(f"/v1beta/datasetio/append-rows/{dataset_id}", json={"rows": []}, headers=_as("alice")), 400
    )
    assert "rows" in (empty["param"] or "")
    not_object = _error(await _register(app, "alice", purpose="free-form", source={"type": "rows", "rows": [1]}), 400)
    assert "source" in (not_object["param"] or "")
    huge = {"input_query": "x" * 250_000, "expected_answer": "y"}
    too_big = _error(
        await _register(app, "alice", purpose="eval/question-answer", source={"type": "rows", "rows": [huge]}), 400
    )
    assert "row 1" in too_big["message"] and "bytes" in too_big["message"]
