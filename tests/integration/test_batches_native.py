"""Batches passed through to OpenAI's own Batches API, on a real server, against a loopback stand-in.

``remote::openai`` points at :mod:`tests.integration.wire_openai_batches` (OpenAI cannot be reached from
here); the client is the ``openai`` SDK with strict response validation. What is checked:

- a batch whose lines all name the provider's models goes upstream: one upload with each ``model``
  renamed to the provider's name, one upstream batch, and local output and error files with the
  ``custom_id`` kept and the model named as the client named it, with the upstream's counts and usage;
- a cancel reaches the upstream; an upstream batch that fails, and an upstream that answers 500 to every
  create, both end the batch ``failed`` with an error naming the provider;
- a server restarted while the upstream batch runs follows the same batch (the stand-in counts creates);
- a batch mixing providers, on a provider with ``native_batches: false``, or asking Underlay to store
  its chat completions, runs inline;
- the upstream key appears in no response body, no stored batch record and not in the server's log.
"""

from __future__ import annotations

import json
import signal
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import openai
import pytest

from tests.integration.harness import RunningServer, start_server
from tests.integration.wire_openai_batches import API_KEY, CHAT_MODEL, EMBED_MODEL, OpenAIBatchesStandIn
from tests.integration.wire_standins import Failure

T = TypeVar("T")
ENDED = ("completed", "failed", "expired", "cancelled")
CHAT = "/v1/chat/completions"


def _config(stand_in: OpenAIBatchesStandIn) -> dict[str, Any]:
    upstream = {"base_url": stand_in.v1, "api_key": API_KEY, "max_retries": 0}
    return {
        "apis": ["inference", "models", "files", "batches"],
        "providers": {
            "inference": [
                {"provider_id": "openai", "provider_type": "remote::openai", "config": upstream},
                {
                    "provider_id": "openai-inline",
                    "provider_type": "remote::openai",
                    "config": {**upstream, "native_batches": False, "provider_data_key": "openai_inline_key"},
                },
            ],
            "files": [{"provider_id": "localfs", "provider_type": "inline::localfs", "config": {}}],
        },
        "models": [{"model_id": "fast-chat", "provider_id": "openai", "provider_model_id": CHAT_MODEL}],
        "jobs": {"lease_seconds": 2, "poll_seconds": 0.05},
        "batches": {"native_poll_seconds": 0.05},
    }


@pytest.fixture(scope="module")
def stand_in() -> Iterator[OpenAIBatchesStandIn]:
    server = OpenAIBatchesStandIn().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def underlay(stand_in: OpenAIBatchesStandIn, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    server = start_server(_config(stand_in), tmp_path_factory.mktemp("native-batches"))
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def _reset(stand_in: OpenAIBatchesStandIn) -> Iterator[None]:
    yield
    stand_in.hold = False
    stand_in.fail_validation = False
    stand_in.standin.failures.clear()


def _client(server: RunningServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.v1, api_key="unused", max_retries=0, _strict_response_validation=True)


def _wait(probe: Callable[[], T | None | bool], what: str, timeout: float = 30) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value  # type: ignore[return-value]
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def _chat_line(custom_id: str, model: str, text: str) -> dict[str, Any]:
    body = {"model": model, "messages": [{"role": "user", "content": text}], "max_tokens": 16}
    return {"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions", "body": body}


def _submit(
    client: openai.OpenAI, lines: list[dict[str, Any]], endpoint: str = "/v1/chat/completions", **kw: Any
) -> Any:
    data = b"".join(json.dumps(line).encode() + b"\n" for line in lines)
    source = client.files.create(file=("requests.jsonl", data), purpose="batch")
    return client.batches.create(input_file_id=source.id, endpoint=endpoint, completion_window="24h", **kw)  # type: ignore[arg-type]


def _ended(client: openai.OpenAI, batch_id: str, timeout: float = 30) -> Any:
    return _wait(lambda: (b := client.batches.retrieve(batch_id)).status in ENDED and b, f"batch {batch_id}", timeout)


def _lines(client: openai.OpenAI, file_id: str | None) -> list[dict[str, Any]]:
    assert file_id is not None
    return [json.loads(line) for line in client.files.content(file_id).text.splitlines()]


def _upstream_of(stand_in: OpenAIBatchesStandIn, input_models: set[str], before: set[str]) -> str:
    created = [b for b in stand_in.batches if b not in before]
    assert len(created) == 1, created
    assert {line["body"]["model"] for line in stand_in.uploaded_lines(created[0])} == input_models
    return created[0]


def _assert_no_key(server: RunningServer, *texts: str) -> None:
    for text in texts:
        assert API_KEY not in text
    assert API_KEY not in server.log()
    state = Path(server.config_path).parent / "state" / "sqlstore.db"
    with sqlite3.connect(state) as db:
        for table in ("batches", "batch_upstreams", "batch_lines", "jobs"):
            for row in db.execute(f"SELECT * FROM {table}").fetchall():  # noqa: S608 - fixed table names
                assert API_KEY not in json.dumps(row, default=str), table


def test_a_native_batch_runs_upstream_and_comes_back_under_the_clients_names(
    underlay: RunningServer, stand_in: OpenAIBatchesStandIn
) -> None:
    client = _client(underlay)
    before, creates = set(stand_in.batches), stand_in.creates
    lines = [
        _chat_line("first", "fast-chat", "Say hello in three words."),
        _chat_line("refused", "fast-chat", "REFUSE this one."),
        _chat_line("third", f"openai/{CHAT_MODEL}", "Name a colour."),
    ]
    batch = _submit(client, lines, metadata={"job": "nightly"})
    done = _ended(client, batch.id)

    assert done.status == "completed", done.errors
    assert stand_in.creates == creates + 1
    upstream_id = _upstream_of(stand_in, {CHAT_MODEL}, before)
    assert stand_in.batches[upstream_id].metadata == {"job": "nightly"}
    assert [line["custom_id"] for line in stand_in.uploaded_lines(upstream_id)] == ["first", "refused", "third"]

    assert done.request_counts is not None
    assert (done.request_counts.total, done.request_counts.completed, done.request_counts.failed) == (3, 2, 1)
    output = _lines(client, done.output_file_id)
    assert [line["custom_id"] for line in output] == ["first", "third"]
    assert [line["response"]["body"]["model"] for line in output] == ["fast-chat", f"openai/{CHAT_MODEL}"]
    assert all(line["response"]["status_code"] == 200 for line in output)
    errors = _lines(client, done.error_file_id)
    assert [(e["custom_id"], e["response"]["status_code"]) for e in errors] == [("refused", 400)]

    prompt = sum(line["response"]["body"]["usage"]["prompt_tokens"] for line in output)
    completion = sum(line["response"]["body"]["usage"]["completion_tokens"] for line in output)
    assert done.usage is not None
    assert (done.usage.input_tokens, done.usage.output_tokens) == (prompt, completion)
    assert done.usage.total_tokens == prompt + completion
    assert done.in_progress_at is not None and done.completed_at is not None

    # The copied files are the creator's own local files, as an inline batch's are.
    copied = client.files.retrieve(done.output_file_id)
    assert copied.purpose == "batch_output" and copied.id.startswith("file-")
    assert copied.id != stand_in.batches[upstream_id].output_file_id

    bodies = [
        httpx.get(f"{underlay.v1}/batches/{batch.id}").text,
        httpx.get(f"{underlay.v1}/batches").text,
        client.files.content(done.output_file_id).text,
        client.files.content(done.error_file_id).text,
    ]
    _assert_no_key(underlay, *bodies)


def test_an_embeddings_batch_goes_upstream(underlay: RunningServer, stand_in: OpenAIBatchesStandIn) -> None:
    client = _client(underlay)
    before = set(stand_in.batches)
    lines = [
        {
            "custom_id": f"e{i}",
            "method": "POST",
            "url": "/v1/embeddings",
            "body": {"model": f"openai/{EMBED_MODEL}", "input": t},
        }
        for i, t in enumerate(["a cat on a mat", "stock markets fell"])
    ]
    done = _ended(client, _submit(client, lines, endpoint="/v1/embeddings").id)
    assert done.status == "completed", done.errors
    _upstream_of(stand_in, {EMBED_MODEL}, before)
    output = _lines(client, done.output_file_id)
    assert [line["custom_id"] for line in output] == ["e0", "e1"]
    assert len(output[0]["response"]["body"]["data"][0]["embedding"]) == 8
    assert done.usage is not None and done.usage.output_tokens == 0 and done.usage.input_tokens > 0


def test_cancel_goes_upstream(underlay: RunningServer, stand_in: OpenAIBatchesStandIn) -> None:
    client = _client(underlay)
    stand_in.hold = True
    cancels = stand_in.cancels
    batch = _submit(client, [_chat_line("a", "fast-chat", "one"), _chat_line("b", "fast-chat", "two")])
    _wait(lambda: client.batches.retrieve(batch.id).status == "in_progress", "the upstream batch to start")

    cancelling = client.batches.cancel(batch.id)
    assert cancelling.status in ("cancelling", "cancelled")
    done = _ended(client, batch.id)
    assert done.status == "cancelled" and done.cancelled_at is not None
    assert stand_in.cancels == cancels + 1
    upstream = [b for b in stand_in.batches.values() if b.status == "cancelled"]
    assert upstream, "the upstream batch was not cancelled"
    assert done.request_counts is not None and done.request_counts.total == 2


def test_an_upstream_batch_that_fails_fails_the_batch_naming_the_provider(
    underlay: RunningServer, stand_in: OpenAIBatchesStandIn
) -> None:
    client = _client(underlay)
    stand_in.fail_validation = True  # its message quotes the key: the batch must not
    done = _ended(client, _submit(client, [_chat_line("a", "fast-chat", "hi")]).id)
    assert done.status == "failed" and done.failed_at is not None
    assert done.errors is not None and done.errors.data
    message = done.errors.data[0].message or ""
    assert message.startswith("Provider 'openai': ") and "no batch quota" in message, message
    assert done.errors.data[0].code == "token_limit_exceeded"
    _assert_no_key(underlay, httpx.get(f"{underlay.v1}/batches/{done.id}").text, message)


def test_an_upstream_that_answers_500_fails_the_batch_without_creating_one(
    underlay: RunningServer, stand_in: OpenAIBatchesStandIn
) -> None:
    client = _client(underlay)
    creates = stand_in.creates
    broken = {"error": {"message": "The server had an error while processing your request.", "type": "server_error"}}
    stand_in.standin.fail("/v1/batches", *[Failure(500, broken) for _ in range(40)])
    done = _ended(client, _submit(client, [_chat_line("a", "fast-chat", "hi")]).id)
    assert done.status == "failed"
    assert done.errors is not None and done.errors.data
    error = done.errors.data[0]
    assert error.code == "upstream_unavailable"
    assert error.message is not None and error.message.startswith("Provider 'openai': ") and "500" in error.message
    assert stand_in.creates == creates
    _assert_no_key(underlay, httpx.get(f"{underlay.v1}/batches/{done.id}").text)


def test_a_mixed_a_switched_off_or_a_stored_batch_runs_inline(
    underlay: RunningServer, stand_in: OpenAIBatchesStandIn
) -> None:
    client = _client(underlay)
    creates = stand_in.creates
    live_calls = len(stand_in.standin.requests_to("/v1/chat/completions"))
    mixed = [_chat_line("native", "fast-chat", "one"), _chat_line("off", f"openai-inline/{CHAT_MODEL}", "two")]
    switched_off = [_chat_line("off-1", f"openai-inline/{CHAT_MODEL}", "three")]
    stored = [_chat_line("kept", "fast-chat", "four")]
    stored[0]["body"]["store"] = True  # Underlay keeps the completion: only an inline line can
    for lines in (mixed, switched_off, stored):
        done = _ended(client, _submit(client, lines).id)
        assert done.status == "completed", done.errors
        output = _lines(client, done.output_file_id)
        assert [line["custom_id"] for line in output] == [line["custom_id"] for line in lines]
        assert [line["response"]["body"]["model"] for line in output] == [line["body"]["model"] for line in lines]
    assert stand_in.creates == creates
    assert len(stand_in.standin.requests_to("/v1/chat/completions")) == live_calls + 4


def test_a_restart_follows_the_same_upstream_batch(stand_in: OpenAIBatchesStandIn, tmp_path: Path) -> None:
    config = _config(stand_in)
    first = start_server(config, tmp_path)
    stand_in.hold = True
    try:
        client = _client(first)
        creates = stand_in.creates
        batch = _submit(client, [_chat_line("a", "fast-chat", "one"), _chat_line("b", "fast-chat", "two")])
        _wait(lambda: client.batches.retrieve(batch.id).status == "in_progress", "the upstream batch to start")
        assert stand_in.creates == creates + 1
    finally:
        first.stop(signal.SIGKILL)

    second = start_server(config, tmp_path, port=first.port)
    try:
        stand_in.hold = False
        client = _client(second)
        done = _ended(client, batch.id)
        assert done.status == "completed", done.errors
        assert stand_in.creates == creates + 1, "the restarted server submitted the batch again"
        assert [line["custom_id"] for line in _lines(client, done.output_file_id)] == ["a", "b"]
        _assert_no_key(second)
    finally:
        second.stop()
