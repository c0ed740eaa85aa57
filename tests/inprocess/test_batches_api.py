"""The Batches API in process, through the ``openai`` SDK with strict response validation.

The echo plugin answers chat with the last user message and embeds ``echo-embed`` deterministically, so
what these tests check is the batch lifecycle, the output and error files' line format, line-numbered
validation errors, ownership across two tenants and cancellation. The embedded models running a batch
on a real server live in ``tests/integration``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import openai
import pytest

from tests.inprocess.harness import InProcessServer, echo_config, serve_in_process

KEYS = {"alice": "sk-alice-batches", "bob": "sk-bob-batches"}


def _config(state_dir: Path, **jobs: Any) -> dict[str, Any]:
    keys = [
        {"sha256": hashlib.sha256(key.encode()).hexdigest(), "principal": name, "attributes": {}}
        for name, key in KEYS.items()
    ]
    config = echo_config(state_dir, apis=["inference", "models", "files", "batches"])
    config["providers"]["files"] = [{"provider_id": "localfs", "provider_type": "inline::localfs", "config": {}}]
    config["server"]["auth"] = {"providers": [{"type": "api_keys", "keys": keys}]}
    config["jobs"] = {"poll_seconds": 0.05, **jobs}
    return config


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
async def app(
    request: pytest.FixtureRequest, echo_plugin: Path, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[InProcessServer]:
    """One app per SQL backend (a fresh PostgreSQL database, dropped afterwards): the claim and the
    conditional status updates are queries that differ per backend. Responses is on for its batch lines."""
    config = _config(tmp_path_factory.mktemp("inprocess-batches"))
    config["apis"].append("responses")
    config["providers"]["responses"] = [{"provider_id": "builtin", "provider_type": "inline::builtin"}]
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
    name = f"underlay_batches_{uuid.uuid4().hex[:12]}"
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


def _sdk(app: InProcessServer, who: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(
        base_url=app.v1, api_key=KEYS[who], max_retries=0, http_client=app.http, _strict_response_validation=True
    )


def _jsonl(lines: list[Any]) -> bytes:
    return b"".join((line if isinstance(line, bytes) else json.dumps(line).encode()) + b"\n" for line in lines)


async def _upload(client: openai.AsyncOpenAI, lines: list[Any], purpose: Any = "batch") -> str:
    uploaded = await client.files.create(file=("requests.jsonl", _jsonl(lines)), purpose=purpose)
    return uploaded.id


async def _settled(client: openai.AsyncOpenAI, batch_id: str) -> Any:
    for _ in range(400):
        batch = await client.batches.retrieve(batch_id)
        if batch.status in ("completed", "failed", "cancelled", "expired"):
            return batch
        await asyncio.sleep(0.05)
    raise AssertionError(f"batch {batch_id} still {batch.status}")


async def _lines(client: openai.AsyncOpenAI, file_id: str | None) -> list[dict[str, Any]]:
    assert file_id is not None
    content = await client.files.content(file_id)
    return [json.loads(line) for line in content.text.splitlines()]


def _chat(custom_id: str, text: str, model: str = "echo") -> dict[str, Any]:
    body = {"model": model, "messages": [{"role": "user", "content": text}]}
    return {"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions", "body": body}


async def test_chat_batch_runs_every_line_and_keeps_custom_ids(app: InProcessServer) -> None:
    alice = _sdk(app, "alice")
    lines = [_chat(f"q{i}", f"hello number {i}") for i in range(6)]
    lines.append(_chat("bad-model", "hi", model="no-such-model"))
    file_id = await _upload(alice, lines)
    created = await alice.batches.create(
        input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h", metadata={"run": "nightly"}
    )
    assert created.status == "validating" and created.id.startswith("batch_")
    assert created.metadata == {"run": "nightly"} and created.expires_at == created.created_at + 24 * 3600
    done = await _settled(alice, created.id)
    assert done.status == "completed", done
    assert done.request_counts is not None
    assert (done.request_counts.total, done.request_counts.completed, done.request_counts.failed) == (7, 6, 1)
    assert done.in_progress_at and done.finalizing_at and done.completed_at
    output = await _lines(alice, done.output_file_id)
    assert [line["custom_id"] for line in output] == [f"q{i}" for i in range(6)]
    for i, line in enumerate(output):
        assert line["id"].startswith("batch_req_") and line["error"] is None
        assert line["response"]["status_code"] == 200 and line["response"]["request_id"].startswith("req_")
        assert line["response"]["body"]["choices"][0]["message"]["content"].endswith(f"hello number {i}")
    errors = await _lines(alice, done.error_file_id)
    assert [line["custom_id"] for line in errors] == ["bad-model"]
    failed = errors[0]["response"]
    assert failed["status_code"] == 404 and set(failed["body"]["error"]) == {"message", "type", "param", "code"}
    assert "no-such-model" in failed["body"]["error"]["message"]
    listed = await alice.batches.list(limit=100)
    assert created.id in [b.id for b in listed.data]


async def test_embeddings_batch(app: InProcessServer) -> None:
    alice = _sdk(app, "alice")
    lines = [
        {"custom_id": f"e{i}", "method": "POST", "url": "/v1/embeddings", "body": {"model": "echo-embed", "input": t}}
        for i, t in enumerate(["alpha", "beta"])
    ]
    batch = await alice.batches.create(
        input_file_id=await _upload(alice, lines), endpoint="/v1/embeddings", completion_window="24h"
    )
    done = await _settled(alice, batch.id)
    assert done.status == "completed" and done.error_file_id is None
    output = await _lines(alice, done.output_file_id)
    direct = await alice.embeddings.create(model="echo-embed", input="beta")
    assert output[1]["custom_id"] == "e1"
    assert output[1]["response"]["body"]["data"][0]["embedding"] == direct.data[0].embedding


async def test_bad_lines_fail_the_batch_with_their_line_numbers(app: InProcessServer) -> None:
    alice = _sdk(app, "alice")
    lines: list[Any] = [
        _chat("ok", "fine"),
        b"{not json",
        {**_chat("other-url", "x"), "url": "/v1/embeddings"},
        _chat("ok", "duplicate id"),
        {**_chat("no-messages", "x"), "body": {"model": "echo"}},
        {**_chat("streams", "x"), "body": {"model": "echo", "messages": [], "stream": True}},
        {**_chat("get", "x"), "method": "GET"},
    ]
    batch = await alice.batches.create(
        input_file_id=await _upload(alice, lines), endpoint="/v1/chat/completions", completion_window="24h"
    )
    done = await _settled(alice, batch.id)
    assert done.status == "failed" and done.failed_at and done.output_file_id is None
    assert done.errors is not None and done.errors.data is not None
    found = {(e.line, e.code) for e in done.errors.data}
    assert found == {
        (2, "invalid_json_line"),
        (3, "mismatched_endpoint"),
        (4, "duplicate_custom_id"),
        (5, "invalid_body"),
        (6, "invalid_body"),
        (7, "invalid_method"),
    }
    missing = next(e for e in done.errors.data if e.line == 5)
    assert missing.param == "body.messages" and "messages" in (missing.message or "")


async def test_create_errors_are_openai_envelopes(app: InProcessServer) -> None:
    alice = _sdk(app, "alice")
    wrong_purpose = await _upload(alice, [_chat("a", "b")], purpose="assistants")
    with pytest.raises(openai.BadRequestError) as caught:
        await alice.batches.create(
            input_file_id=wrong_purpose, endpoint="/v1/chat/completions", completion_window="24h"
        )
    assert caught.value.body["param"] == "input_file_id" and "purpose 'batch'" in caught.value.body["message"]
    with pytest.raises(openai.NotFoundError):
        await alice.batches.create(input_file_id="file-nope", endpoint="/v1/chat/completions", completion_window="24h")
    response = await app.http.post(
        "/v1/batches",
        json={"input_file_id": wrong_purpose, "endpoint": "/v1/chat/completions", "completion_window": "48h"},
        headers={"Authorization": f"Bearer {KEYS['alice']}"},
    )
    assert response.status_code == 400 and response.json()["error"]["param"] == "completion_window"
    with pytest.raises(openai.BadRequestError) as caught:
        await alice.batches.create(input_file_id=wrong_purpose, endpoint="/v1/moderations", completion_window="24h")
    assert caught.value.body["param"] == "endpoint"  # the safety API is off in this app
    assert "/v1/moderations" in caught.value.body["message"]


async def test_completions_and_responses_lines(app: InProcessServer) -> None:
    alice = _sdk(app, "alice")
    for endpoint, body, read in [
        ("/v1/completions", {"model": "echo", "prompt": "once upon"}, lambda b: b["choices"][0]["text"]),
        (
            "/v1/responses",
            {"model": "echo", "input": "tell me", "store": False},
            lambda b: b["output"][0]["content"][0]["text"],
        ),
    ]:
        line = {"custom_id": "only", "method": "POST", "url": endpoint, "body": body}
        batch = await alice.batches.create(
            input_file_id=await _upload(alice, [line]),
            endpoint=endpoint,
            completion_window="24h",  # type: ignore[arg-type]
        )
        done = await _settled(alice, batch.id)
        assert done.status == "completed", (endpoint, done)
        [result] = await _lines(alice, done.output_file_id)
        assert result["response"]["status_code"] == 200
        assert read(result["response"]["body"]).endswith(body.get("prompt") or body["input"]), result


async def test_two_tenants(app: InProcessServer) -> None:
    alice, bob = _sdk(app, "alice"), _sdk(app, "bob")
    file_id = await _upload(alice, [_chat("a", "private")])
    batch = await alice.batches.create(input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h")
    with pytest.raises(openai.NotFoundError):
        await bob.batches.retrieve(batch.id)
    with pytest.raises(openai.NotFoundError):
        await bob.batches.cancel(batch.id)
    with pytest.raises(openai.NotFoundError):  # nor can bob batch alice's file
        await bob.batches.create(input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h")
    assert batch.id not in [b.id for b in (await bob.batches.list(limit=100)).data]
    done = await _settled(alice, batch.id)
    with pytest.raises(openai.NotFoundError):
        await bob.files.content(done.output_file_id or "")


async def test_cancel_a_queued_batch(echo_plugin: Path, tmp_path: Path) -> None:
    """With no workers the job stays queued, so the cancel is certain to land before any line runs."""
    async with serve_in_process(_config(tmp_path, workers=0, reserved_workers={})) as server:
        alice = _sdk(server, "alice")
        file_id = await _upload(alice, [_chat("a", "b"), _chat("c", "d")])
        batch = await alice.batches.create(
            input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h"
        )
        cancelled = await alice.batches.cancel(batch.id)
        assert cancelled.status == "cancelled" and cancelled.cancelling_at and cancelled.cancelled_at
        assert cancelled.output_file_id is None
        again = await alice.batches.cancel(batch.id)
        assert again.status == "cancelled"


async def test_cancelling_a_finished_batch_is_a_400(app: InProcessServer) -> None:
    alice = _sdk(app, "alice")
    batch = await alice.batches.create(
        input_file_id=await _upload(alice, [_chat("a", "b")]), endpoint="/v1/chat/completions", completion_window="24h"
    )
    await _settled(alice, batch.id)
    with pytest.raises(openai.BadRequestError) as caught:
        await alice.batches.cancel(batch.id)
    assert caught.value.body["code"] == "batch_not_cancellable"


async def test_a_batch_past_its_window_expires_and_keeps_the_lines(echo_plugin: Path, tmp_path: Path) -> None:
    """No workers: the test claims the job itself after moving the batch's deadline into the past (the
    only way to pass 24 hours in a test); every line is then recorded as expired, none is run."""
    async with serve_in_process(_config(tmp_path, workers=0, reserved_workers={})) as server:
        alice = _sdk(server, "alice")
        batch = await alice.batches.create(
            input_file_id=await _upload(alice, [_chat("a", "b"), _chat("c", "d")]),
            endpoint="/v1/chat/completions",
            completion_window="24h",
        )
        stack = server.app.state.stack
        row = await stack.sql().fetch_one("batches", {"id": batch.id})
        await stack.sql().update("batches", {"batch": {**row["batch"], "expires_at": 1}}, {"id": batch.id})
        runner = stack.job_runner()
        job = await runner.claim_one()
        assert job is not None
        await runner.run_claimed(job)
        done = await alice.batches.retrieve(batch.id)
        assert done.status == "expired" and done.expired_at and done.output_file_id is None
        assert done.request_counts is not None and done.request_counts.failed == 2
        errors = await _lines(alice, done.error_file_id)
        assert [(e["custom_id"], e["response"], e["error"]["code"]) for e in errors] == [
            ("a", None, "batch_expired"),
            ("c", None, "batch_expired"),
        ]


async def test_cancel_between_lines_keeps_finished_lines(echo_plugin: Path, tmp_path: Path) -> None:
    """The cancel lands while the job runs (the test holds the job's first line by cancelling from
    inside the runner's checkpoint), so it is honoured between lines: finished lines are in the
    output file, the rest never run."""
    async with serve_in_process(_config(tmp_path, workers=0, reserved_workers={})) as server:
        alice = _sdk(server, "alice")
        lines = [_chat(f"q{i}", f"text {i}") for i in range(40)]
        batch = await alice.batches.create(
            input_file_id=await _upload(alice, lines), endpoint="/v1/chat/completions", completion_window="24h"
        )
        stack = server.app.state.stack
        runner = stack.job_runner()
        job = await runner.claim_one()
        assert job is not None
        from underlay.core.jobs import JobContext

        original = JobContext.checkpoint
        calls = 0
        cancelled: list[Any] = []

        async def checkpoint(self: JobContext, progress: float | None = None) -> None:
            nonlocal calls
            calls += 1
            if calls == 6 and not cancelled:  # a few lines in: cancel through the API, as a client would
                cancelled.append(await alice.batches.cancel(batch.id))
            await original(self, progress)

        JobContext.checkpoint = checkpoint  # type: ignore[method-assign]
        try:
            await runner.run_claimed(job)
        finally:
            JobContext.checkpoint = original  # type: ignore[method-assign]
        assert cancelled and cancelled[0].status == "cancelling" and cancelled[0].cancelling_at
        done = await alice.batches.retrieve(batch.id)
        assert done.status == "cancelled" and done.cancelled_at
        assert done.request_counts is not None
        finished = done.request_counts.completed
        assert 1 <= finished < 40 and done.request_counts.failed == 0
        output = await _lines(alice, done.output_file_id)
        assert len(output) == finished and len({line["custom_id"] for line in output}) == finished
        assert (await runner.get(job.id)).status == "cancelled"
