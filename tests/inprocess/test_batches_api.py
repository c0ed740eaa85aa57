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
    assert done.model is None  # two models named (one unknown): no single model to report
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
    assert done.model == "echo-embed"  # every line names it, as OpenAI's batch object reports
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


async def test_usage_is_the_sum_of_the_lines_usage(app: InProcessServer) -> None:
    """The batch's ``usage`` adds up what each output line's response reported (chat: prompt and
    completion tokens; the failed line reports none)."""
    alice = _sdk(app, "alice")
    lines = [_chat("one", "a b c"), _chat("two", "d e f g h"), _chat("bad", "x", model="no-such-model")]
    batch = await alice.batches.create(
        input_file_id=await _upload(alice, lines), endpoint="/v1/chat/completions", completion_window="24h"
    )
    done = await _settled(alice, batch.id)
    assert done.status == "completed" and done.usage is not None
    output = await _lines(alice, done.output_file_id)
    usages = [line["response"]["body"]["usage"] for line in output]
    prompt = sum(u["prompt_tokens"] for u in usages)
    completion = sum(u["completion_tokens"] for u in usages)
    assert prompt > 0 and completion > 0
    assert (done.usage.input_tokens, done.usage.output_tokens) == (prompt, completion)
    assert done.usage.total_tokens == prompt + completion


async def test_output_expires_after_sets_the_files_expiry(app: InProcessServer) -> None:
    alice = _sdk(app, "alice")
    lines = [_chat("ok", "fine"), _chat("bad", "x", model="no-such-model")]
    batch = await alice.batches.create(
        input_file_id=await _upload(alice, lines),
        endpoint="/v1/chat/completions",
        completion_window="24h",
        output_expires_after={"anchor": "created_at", "seconds": 7200},
    )
    done = await _settled(alice, batch.id)
    for file_id in (done.output_file_id, done.error_file_id):
        assert file_id is not None
        stored = await alice.files.retrieve(file_id)
        assert stored.expires_at == stored.created_at + 7200, stored
    plain = await alice.batches.create(
        input_file_id=await _upload(alice, [_chat("ok", "fine")]),
        endpoint="/v1/chat/completions",
        completion_window="24h",
    )
    kept = await alice.files.retrieve((await _settled(alice, plain.id)).output_file_id or "")
    assert kept.expires_at is None  # no expiry asked for: the output stays until deleted
    with pytest.raises(openai.BadRequestError) as caught:
        await alice.batches.create(
            input_file_id=await _upload(alice, [_chat("ok", "fine")]),
            endpoint="/v1/chat/completions",
            completion_window="24h",
            output_expires_after={"anchor": "created_at", "seconds": 60},
        )
    assert caught.value.body["param"] == "output_expires_after.seconds"


async def test_a_line_over_the_size_limit_is_reported_by_its_number(app: InProcessServer) -> None:
    alice = _sdk(app, "alice")
    from underlay.api.batches import MAX_LINE_BYTES

    huge = _chat("huge", "x" * MAX_LINE_BYTES)
    batch = await alice.batches.create(
        input_file_id=await _upload(alice, [_chat("ok", "fine"), huge, _chat("also-ok", "fine")]),
        endpoint="/v1/chat/completions",
        completion_window="24h",
    )
    done = await _settled(alice, batch.id)
    assert done.status == "failed" and done.errors is not None and done.errors.data is not None
    assert [(e.line, e.code) for e in done.errors.data] == [(2, "line_too_large")]
    assert str(MAX_LINE_BYTES) in (done.errors.data[0].message or "")


def _in_flight_probe(server: InProcessServer, hold: float = 0.05) -> list[int]:
    """Wraps the batches router's per-line call to record how many lines run at once: an observer
    (the line still runs through the real router), holding each line briefly so overlap can show."""
    router = server.app.state.stack.routers.get("batches")
    original = router._call
    peaks = [0]
    running = 0

    async def counted(endpoint: Any, line: Any) -> Any:
        nonlocal running
        running += 1
        peaks[0] = max(peaks[0], running)
        try:
            await asyncio.sleep(hold)
            return await original(endpoint, line)
        finally:
            running -= 1

    router._call = counted
    return peaks


async def test_concurrency_and_max_lines_come_from_the_run_config(echo_plugin: Path, tmp_path: Path) -> None:
    """``batches.concurrency`` caps the lines of one batch in flight; ``batches.max_lines`` caps its size."""
    for concurrency in (1, 3):
        config = _config(tmp_path / f"c{concurrency}")
        config["batches"] = {"concurrency": concurrency, "max_lines": 8}
        async with serve_in_process(config) as server:
            peaks = _in_flight_probe(server)
            alice = _sdk(server, "alice")
            batch = await alice.batches.create(
                input_file_id=await _upload(alice, [_chat(f"q{i}", "hi") for i in range(8)]),
                endpoint="/v1/chat/completions",
                completion_window="24h",
            )
            done = await _settled(alice, batch.id)
            assert done.status == "completed" and done.request_counts is not None
            assert done.request_counts.completed == 8
            assert peaks[0] == concurrency, (concurrency, peaks)
            too_many = await alice.batches.create(
                input_file_id=await _upload(alice, [_chat(f"q{i}", "hi") for i in range(9)]),
                endpoint="/v1/chat/completions",
                completion_window="24h",
            )
            failed = await _settled(alice, too_many.id)
            assert failed.status == "failed" and failed.errors is not None and failed.errors.data is not None
            assert [(e.line, e.code) for e in failed.errors.data] == [(9, "too_many_requests")]


async def test_moderations_lines(echo_plugin: Path, tmp_path: Path) -> None:
    """A moderations batch through the ``inline::pii`` shield (no model): each line is the live
    endpoint's answer, the line naming no model goes to ``safety.default_moderation_shield``."""
    config = _config(tmp_path)
    config["apis"].append("safety")
    config["providers"]["safety"] = [{"provider_id": "pii", "provider_type": "inline::pii"}]
    config["shields"] = [{"shield_id": "pii", "provider_id": "pii"}]
    config["safety"] = {"default_moderation_shield": "pii"}
    async with serve_in_process(config) as server:
        alice = _sdk(server, "alice")

        def line(custom_id: str, body: dict[str, Any]) -> dict[str, Any]:
            return {"custom_id": custom_id, "method": "POST", "url": "/v1/moderations", "body": body}

        lines = [
            line("clean", {"input": "the weather is nice today"}),
            line("email", {"model": "pii", "input": ["hello", "mail me at ann@example.com"]}),
            line("unknown-shield", {"model": "no-such-shield", "input": "x"}),
        ]
        batch = await alice.batches.create(
            input_file_id=await _upload(alice, lines), endpoint="/v1/moderations", completion_window="24h"
        )
        done = await _settled(alice, batch.id)
        assert done.status == "completed" and done.request_counts is not None
        assert (done.request_counts.completed, done.request_counts.failed) == (2, 1)
        assert done.usage is None  # moderations report no tokens
        output = {ln["custom_id"]: ln["response"]["body"] for ln in await _lines(alice, done.output_file_id)}
        assert [r["flagged"] for r in output["clean"]["results"]] == [False]
        assert [r["flagged"] for r in output["email"]["results"]] == [False, True]
        live = await alice.moderations.create(model="pii", input=["hello", "mail me at ann@example.com"])
        assert [r.flagged for r in live.results] == [False, True]
        [error] = await _lines(alice, done.error_file_id)
        assert error["custom_id"] == "unknown-shield" and error["response"]["status_code"] in (400, 404)
        assert "no-such-shield" in error["response"]["body"]["error"]["message"]


async def test_lines_spend_the_owners_token_budget(echo_plugin: Path, tmp_path: Path) -> None:
    """With quotas on, each line's tokens are charged to the batch's owner as a live request's would be:
    alice's remaining tokens drop by the batch's usage, bob's (same server, no batch) do not move."""
    config = _config(tmp_path)
    config["server"]["quotas"] = {"limits": {"tokens_per_day": 1000}}
    async with serve_in_process(config) as server:
        alice, bob = _sdk(server, "alice"), _sdk(server, "bob")

        async def remaining(client: openai.AsyncOpenAI) -> int:
            raw = await client.models.with_raw_response.list()
            return int(raw.headers["x-ratelimit-remaining-tokens"])

        assert await remaining(alice) == 1000
        batch = await alice.batches.create(
            input_file_id=await _upload(alice, [_chat("a", "one two three"), _chat("b", "four five")]),
            endpoint="/v1/chat/completions",
            completion_window="24h",
        )
        done = await _settled(alice, batch.id)
        assert done.status == "completed" and done.usage is not None and done.usage.total_tokens > 0
        assert await remaining(alice) == 1000 - done.usage.total_tokens
        assert await remaining(bob) == 1000
