"""Batches passed through to Azure OpenAI's Batch API and Anthropic's Message Batches, on a real server.

Neither cloud can be reached from here, so ``remote::azure-openai`` points at the loopback STAND-IN of
:mod:`tests.integration.wire_azure` and ``remote::anthropic`` at that of :mod:`tests.integration.wire_anthropic`,
each speaking its service's documented batch wire format. The client is the ``openai`` SDK with strict
response validation. What is checked, per provider:

- a batch whose lines all name the provider's models goes upstream once, in the upstream's own terms
  (Azure: ``api-version`` on every call, ``/chat/completions``, the Global Batch deployment as ``model``,
  api-key or an Entra ID bearer; Anthropic: Messages ``params`` translated as a live request's, custom ids
  Anthropic cannot take escaped), and comes back as local output and error files in OpenAI's line format,
  with each ``custom_id`` and the client's model names, counts and summed usage;
- a failed line is in the error file with its status, its message naming the provider, the key scrubbed;
- an upstream batch that fails validation fails the batch naming the provider; a cancel is forwarded;
  Anthropic's ``expired`` and ``canceled`` results are error lines;
- a batch mixing providers, or with a line the upstream's format cannot carry, runs inline;
- a server killed while the upstream batches run follows the same ones after a restart; one killed in
  the middle of Anthropic's create call neither loses a batch that was not made nor makes a second one.
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
from tests.integration.wire_anthropic import KEY as ANTHROPIC_KEY
from tests.integration.wire_anthropic import MODEL as CLAUDE
from tests.integration.wire_anthropic import AnthropicStandIn
from tests.integration.wire_azure import API_KEY as AZURE_KEY
from tests.integration.wire_azure import (
    BATCH_DEPLOYMENT,
    CHAT_DEPLOYMENT,
    CLIENT_ID,
    CLIENT_SECRET,
    TENANT,
    AzureStandIn,
)
from tests.integration.wire_standins import Failure

T = TypeVar("T")
ENDED = ("completed", "failed", "expired", "cancelled")
SECRETS = (AZURE_KEY, ANTHROPIC_KEY, CLIENT_SECRET)


@pytest.fixture(scope="module")
def azure() -> Iterator[AzureStandIn]:
    stand_in = AzureStandIn().start()
    yield stand_in
    stand_in.stop()


@pytest.fixture(scope="module")
def anthropic() -> Iterator[AnthropicStandIn]:
    stand_in = AnthropicStandIn().start()
    yield stand_in
    stand_in.stop()


def _config(azure: AzureStandIn, anthropic: AnthropicStandIn) -> dict[str, Any]:
    quick = {"max_retries": 0, "timeout": {"connect": 2, "read": 10}}
    entra = {"tenant_id": TENANT, "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET, "token_url": azure.token_url}
    azure_common = {"azure_endpoint": azure.root, "native_batches": True, **quick}
    return {
        "apis": ["inference", "models", "files", "batches"],
        "providers": {
            "inference": [
                {
                    "provider_id": "azure",
                    "provider_type": "remote::azure-openai",
                    "config": {
                        **azure_common,
                        "api_key": AZURE_KEY,
                        "deployments": {"gpt-4o-mini": CHAT_DEPLOYMENT, "gpt-4o": "gpt4o-prod"},
                        # gpt4o-standard is an ordinary deployment: Azure's validation refuses it in a batch
                        "batch_deployments": {"gpt-4o-mini": BATCH_DEPLOYMENT, "gpt-4o": "gpt4o-standard"},
                    },
                },
                {
                    "provider_id": "azure-entra",
                    "provider_type": "remote::azure-openai",
                    "config": {
                        **azure_common,
                        "entra": entra,
                        "deployments": {"gpt-4o-mini": CHAT_DEPLOYMENT},
                        "batch_deployments": {"gpt-4o-mini": BATCH_DEPLOYMENT},
                        "provider_data_key": "azure_entra_key",
                    },
                },
                {
                    "provider_id": "anthropic",
                    "provider_type": "remote::anthropic",
                    "config": {"base_url": anthropic.v1, "api_key": ANTHROPIC_KEY, "default_max_tokens": 64, **quick},
                },
            ],
            "files": [{"provider_id": "localfs", "provider_type": "inline::localfs", "config": {}}],
        },
        "models": [{"model_id": "claude", "provider_id": "anthropic", "provider_model_id": CLAUDE}],
        "jobs": {"lease_seconds": 2, "poll_seconds": 0.05},
        "batches": {"native_poll_seconds": 0.05},
    }


def _start(azure: AzureStandIn, anthropic: AnthropicStandIn, workdir: Path, port: int | None = None) -> RunningServer:
    env = {"AZURE_OPENAI_API_KEY": "", "AZURE_OPENAI_AD_TOKEN": "", "ANTHROPIC_API_KEY": ""}
    return start_server(_config(azure, anthropic), workdir, env=env, port=port)


@pytest.fixture(scope="module")
def underlay(
    azure: AzureStandIn, anthropic: AnthropicStandIn, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningServer]:
    server = _start(azure, anthropic, tmp_path_factory.mktemp("native-providers"))
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def _reset(azure: AzureStandIn, anthropic: AnthropicStandIn) -> Iterator[None]:
    yield
    azure.hold = anthropic.hold = anthropic.expire = False
    anthropic.create_stall = 0.0
    azure.standin.failures.clear()
    anthropic.standin.failures.clear()


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


def _line(custom_id: str, model: str, text: str, **body: Any) -> dict[str, Any]:
    payload = {"model": model, "messages": [{"role": "user", "content": text}], **body}
    return {"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions", "body": payload}


def _submit(client: openai.OpenAI, lines: list[dict[str, Any]], **kw: Any) -> Any:
    data = b"".join(json.dumps(line).encode() + b"\n" for line in lines)
    source = client.files.create(file=("requests.jsonl", data), purpose="batch")
    return client.batches.create(
        input_file_id=source.id, endpoint="/v1/chat/completions", completion_window="24h", **kw
    )


def _ended(client: openai.OpenAI, batch_id: str, timeout: float = 30) -> Any:
    return _wait(lambda: (b := client.batches.retrieve(batch_id)).status in ENDED and b, f"batch {batch_id}", timeout)


def _lines(client: openai.OpenAI, file_id: str | None) -> list[dict[str, Any]]:
    assert file_id is not None
    return [json.loads(line) for line in client.files.content(file_id).text.splitlines()]


def _assert_no_secret(server: RunningServer, *texts: str) -> None:
    for text in texts:
        for secret in SECRETS:
            assert secret not in text
    log = server.log()
    assert not any(secret in log for secret in SECRETS)
    state = Path(server.config_path).parent / "state" / "sqlstore.db"
    with sqlite3.connect(state) as db:
        for table in ("batches", "batch_upstreams", "batch_lines", "jobs"):
            for row in db.execute(f"SELECT * FROM {table}").fetchall():  # noqa: S608 - fixed table names
                dumped = json.dumps(row, default=str)
                assert not any(secret in dumped for secret in SECRETS), table


def _azure_batch_calls(azure: AzureStandIn, since: int) -> list[Any]:
    return [s for s in azure.standin.seen[since:] if s.path.startswith(("/openai/files", "/openai/batches"))]


# -- Azure OpenAI ---------------------------------------------------------------------------------------


def test_an_azure_batch_runs_on_the_global_batch_deployment(underlay: RunningServer, azure: AzureStandIn) -> None:
    client = _client(underlay)
    creates, seen_from, before = azure.batch_creates, len(azure.standin.seen), set(azure.batches)
    lines = [
        _line("first", "azure/gpt-4o-mini", "Say hello"),
        _line("filtered", "azure/gpt-4o-mini", "Something FORBIDDEN here"),
        _line("third", "azure/gpt-4o-mini", "Name a colour"),
    ]
    done = _ended(client, _submit(client, lines, metadata={"job": "nightly"}).id)

    assert done.status == "completed", done.errors
    assert azure.batch_creates == creates + 1
    (upstream_id,) = set(azure.batches) - before
    upstream = azure.batches[upstream_id]
    assert upstream.endpoint == "/chat/completions" and upstream.metadata == {"job": "nightly"}
    sent = [json.loads(raw) for raw in azure.files[upstream.input_file_id].content.splitlines()]
    assert [(s["custom_id"], s["url"], s["body"]["model"]) for s in sent] == [
        (c, "/chat/completions", BATCH_DEPLOYMENT) for c in ("first", "filtered", "third")
    ]
    calls = _azure_batch_calls(azure, seen_from)
    assert calls and all(c.query.get("api-version") == "2024-10-21" for c in calls)
    assert all(c.headers.get("api-key") == AZURE_KEY and "authorization" not in c.headers for c in calls)
    order = [(c.method, c.path) for c in calls]
    file_check = ("GET", f"/openai/files/{upstream.input_file_id}")  # pending until looked at: waited for
    assert order.index(file_check) < order.index(("POST", "/openai/batches"))

    assert done.request_counts is not None
    assert (done.request_counts.total, done.request_counts.completed, done.request_counts.failed) == (3, 2, 1)
    output = _lines(client, done.output_file_id)
    assert [o["custom_id"] for o in output] == ["first", "third"]
    assert {o["response"]["body"]["model"] for o in output} == {"azure/gpt-4o-mini"}
    assert output[0]["response"]["body"]["choices"][0]["message"]["content"] == "Azure echo: Say hello"
    (error,) = _lines(client, done.error_file_id)
    assert error["custom_id"] == "filtered" and error["response"]["status_code"] == 400
    envelope = error["response"]["body"]["error"]
    assert envelope["code"] == "content_filter" and envelope["message"].startswith("Provider 'azure': ")

    prompt = sum(o["response"]["body"]["usage"]["prompt_tokens"] for o in output)
    completion = sum(o["response"]["body"]["usage"]["completion_tokens"] for o in output)
    assert done.usage is not None and (done.usage.input_tokens, done.usage.output_tokens) == (prompt, completion)
    bodies = [httpx.get(f"{underlay.v1}/batches/{done.id}").text, client.files.content(done.error_file_id).text]
    _assert_no_secret(underlay, *bodies)


def test_an_azure_batch_with_entra_client_credentials_sends_the_bearer_token(
    underlay: RunningServer, azure: AzureStandIn
) -> None:
    client = _client(underlay)
    seen_from = len(azure.standin.seen)
    done = _ended(client, _submit(client, [_line("only", "azure-entra/gpt-4o-mini", "Hi there")]).id)
    assert done.status == "completed", done.errors
    calls = _azure_batch_calls(azure, seen_from)
    assert calls and all(c.headers.get("authorization", "").startswith("Bearer eyJ") for c in calls)
    assert all("api-key" not in c.headers for c in calls)
    assert [o["custom_id"] for o in _lines(client, done.output_file_id)] == ["only"]


def test_an_azure_batch_that_azure_refuses_fails_naming_the_provider(
    underlay: RunningServer, azure: AzureStandIn
) -> None:
    client = _client(underlay)
    done = _ended(client, _submit(client, [_line("a", "azure/gpt-4o", "hi"), _line("b", "azure/gpt-4o", "yo")]).id)
    assert done.status == "failed" and done.errors is not None
    messages = [(e.line, e.code, e.message or "") for e in done.errors.data]
    assert [(line, code) for line, code, _ in messages] == [(1, "model_not_found"), (2, "model_not_found")]
    assert all(m.startswith("Provider 'azure': ") and "gpt4o-standard" in m for _, _, m in messages)


def test_cancel_reaches_azure(underlay: RunningServer, azure: AzureStandIn) -> None:
    client = _client(underlay)
    azure.hold = True
    cancels = azure.batch_cancels
    batch = _submit(client, [_line("a", "azure/gpt-4o-mini", "one"), _line("b", "azure/gpt-4o-mini", "two")])
    _wait(lambda: client.batches.retrieve(batch.id).status == "in_progress", "the upstream batch to start")
    assert client.batches.cancel(batch.id).status in ("cancelling", "cancelled")
    done = _ended(client, batch.id)
    assert done.status == "cancelled" and azure.batch_cancels == cancels + 1
    assert any(b.status == "cancelled" for b in azure.batches.values())


# -- Anthropic ------------------------------------------------------------------------------------------


def test_an_anthropic_batch_goes_to_message_batches_and_comes_back_as_chat_completions(
    underlay: RunningServer, anthropic: AnthropicStandIn
) -> None:
    client = _client(underlay)
    creates, before = anthropic.creates, set(anthropic.batches)
    system = {"role": "system", "content": "Be brief."}
    lines = [
        _line("q-1", "claude", "Hello there", max_tokens=20),
        {
            "custom_id": "q 2 (spaced)",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {
                "model": f"anthropic/{CLAUDE}",
                "messages": [system, {"role": "user", "content": "Name a colour"}],
                "stop": ["never"],
            },
        },
        _line("refused", "claude", "Please REFUSE this"),
    ]
    done = _ended(client, _submit(client, lines, metadata={"kept": "here"}).id)

    assert done.status == "completed", done.errors
    assert anthropic.creates == creates + 1
    (upstream_id,) = set(anthropic.batches) - before
    sent = anthropic.batches[upstream_id].requests
    assert sent[0] == {
        "custom_id": "q-1",
        "params": {
            "model": CLAUDE,
            "messages": [{"role": "user", "content": [{"type": "text", "text": "Hello there"}]}],
            "max_tokens": 20,
        },
    }
    assert sent[1]["custom_id"].startswith("x-") and sent[1]["params"]["system"] == "Be brief."
    assert sent[1]["params"]["max_tokens"] == 64 and sent[1]["params"]["stop_sequences"] == ["never"]
    assert done.metadata == {"kept": "here"}  # Anthropic keeps none; the local batch does

    assert done.request_counts is not None
    assert (done.request_counts.total, done.request_counts.completed, done.request_counts.failed) == (3, 2, 1)
    output = sorted(_lines(client, done.output_file_id), key=lambda o: o["custom_id"])
    assert [o["custom_id"] for o in output] == ["q 2 (spaced)", "q-1"]
    assert [o["response"]["body"]["model"] for o in output] == [f"anthropic/{CLAUDE}", "claude"]
    first = output[1]["response"]
    assert first["status_code"] == 200 and first["body"]["object"] == "chat.completion"
    assert first["body"]["choices"][0]["message"]["content"] == "stand-in says: Hello there"
    assert first["body"]["choices"][0]["finish_reason"] == "stop"
    (error,) = _lines(client, done.error_file_id)
    assert error["custom_id"] == "refused" and error["response"]["status_code"] == 400
    message = error["response"]["body"]["error"]["message"]
    assert message.startswith("Provider 'anthropic' rejected the request; Anthropic said invalid_request_error")
    assert "***" in message  # the stand-in quoted the key: scrubbed before it was stored

    usage = [o["response"]["body"]["usage"] for o in output]
    assert done.usage is not None
    assert done.usage.input_tokens == sum(u["prompt_tokens"] for u in usage) > 0
    assert done.usage.output_tokens == sum(u["completion_tokens"] for u in usage) > 0
    _assert_no_secret(underlay, httpx.get(f"{underlay.v1}/batches/{done.id}").text, json.dumps(error))


def test_cancel_reaches_anthropic_and_unrun_requests_are_error_lines(
    underlay: RunningServer, anthropic: AnthropicStandIn
) -> None:
    client = _client(underlay)
    anthropic.hold = True
    cancels = anthropic.cancels
    batch = _submit(client, [_line("a", "claude", "one"), _line("b", "claude", "two")])
    _wait(lambda: client.batches.retrieve(batch.id).status == "in_progress", "the upstream batch to start")
    assert client.batches.cancel(batch.id).status in ("cancelling", "cancelled")
    done = _ended(client, batch.id)
    assert done.status == "cancelled" and anthropic.cancels == cancels + 1
    errors = _lines(client, done.error_file_id)
    assert sorted(e["custom_id"] for e in errors) == ["a", "b"]
    assert {e["error"]["code"] for e in errors} == {"batch_cancelled"} and all(e["response"] is None for e in errors)


def test_an_anthropic_batch_that_expires_upstream_expires_here(
    underlay: RunningServer, anthropic: AnthropicStandIn
) -> None:
    client = _client(underlay)
    anthropic.expire = True
    done = _ended(client, _submit(client, [_line("late", "claude", "one")]).id)
    assert done.status == "expired" and done.expired_at is not None
    (error,) = _lines(client, done.error_file_id)
    assert error["error"]["code"] == "batch_expired" and error["error"]["message"].startswith("Provider 'anthropic'")


def test_a_failing_anthropic_create_fails_the_batch_naming_the_provider(
    underlay: RunningServer, anthropic: AnthropicStandIn
) -> None:
    client = _client(underlay)
    creates = anthropic.creates
    overloaded = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    anthropic.standin.fail("/v1/messages/batches", *[Failure(529, overloaded) for _ in range(40)])
    done = _ended(client, _submit(client, [_line("a", "claude", "hi")]).id)
    assert done.status == "failed" and done.errors is not None
    error = done.errors.data[0]
    assert error.message is not None and error.message.startswith("Provider 'anthropic': "), error
    assert "overloaded" in error.message.lower()
    assert anthropic.creates == creates


# -- the rule: one upstream batch per batch, or inline ---------------------------------------------------


def test_a_mixed_or_untranslatable_batch_runs_inline(
    underlay: RunningServer, azure: AzureStandIn, anthropic: AnthropicStandIn
) -> None:
    client = _client(underlay)
    creates = (azure.batch_creates, anthropic.creates)
    live = (
        len(azure.standin.requests_to(f"/openai/deployments/{CHAT_DEPLOYMENT}/chat/completions")),
        len(anthropic.standin.requests_to("/v1/messages")),
    )
    mixed = [_line("to-azure", "azure/gpt-4o-mini", "one"), _line("to-claude", "claude", "two")]
    two_choices = [_line("fine", "claude", "three"), _line("n2", "claude", "four", n=2)]
    long_id = [_line("é" * 40, "claude", "five")]  # 80 bytes: no spelling Anthropic's custom_id takes

    done = _ended(client, _submit(client, mixed).id)
    assert done.status == "completed", done.errors
    output = _lines(client, done.output_file_id)
    assert [o["custom_id"] for o in output] == ["to-azure", "to-claude"]
    assert [o["response"]["body"]["model"] for o in output] == ["azure/gpt-4o-mini", "claude"]

    done = _ended(client, _submit(client, two_choices).id)
    assert done.status == "completed", done.errors
    assert [o["custom_id"] for o in _lines(client, done.output_file_id)] == ["fine"]
    (error,) = _lines(client, done.error_file_id)
    assert error["response"]["status_code"] == 400 and "n=1" in error["response"]["body"]["error"]["message"]

    done = _ended(client, _submit(client, long_id).id)
    assert done.status == "completed" and [o["custom_id"] for o in _lines(client, done.output_file_id)] == ["é" * 40]

    assert (azure.batch_creates, anthropic.creates) == creates
    assert len(azure.standin.requests_to(f"/openai/deployments/{CHAT_DEPLOYMENT}/chat/completions")) == live[0] + 1
    assert len(anthropic.standin.requests_to("/v1/messages")) == live[1] + 3  # "n2" is refused before any call


# -- restarts -------------------------------------------------------------------------------------------


def test_a_restart_follows_the_same_upstream_batches(
    azure: AzureStandIn, anthropic: AnthropicStandIn, tmp_path: Path
) -> None:
    first = _start(azure, anthropic, tmp_path)
    azure.hold = anthropic.hold = True
    try:
        client = _client(first)
        creates = (azure.batch_creates, anthropic.creates)
        to_azure = _submit(client, [_line("a", "azure/gpt-4o-mini", "one"), _line("b", "azure/gpt-4o-mini", "two")])
        to_claude = _submit(client, [_line("c", "claude", "three"), _line("d", "claude", "four")])

        def running() -> bool:
            return all(client.batches.retrieve(b.id).status == "in_progress" for b in (to_azure, to_claude))

        _wait(running, "the upstream batches to start")
        assert (azure.batch_creates, anthropic.creates) == (creates[0] + 1, creates[1] + 1)
    finally:
        first.stop(signal.SIGKILL)

    second = _start(azure, anthropic, tmp_path, port=first.port)
    try:
        azure.hold = anthropic.hold = False
        client = _client(second)
        for batch, ids in ((to_azure, ["a", "b"]), (to_claude, ["c", "d"])):
            done = _ended(client, batch.id)
            assert done.status == "completed", done.errors
            assert sorted(o["custom_id"] for o in _lines(client, done.output_file_id)) == ids
        assert (azure.batch_creates, anthropic.creates) == (creates[0] + 1, creates[1] + 1), "submitted twice"
        _assert_no_secret(second)
    finally:
        second.stop()


def _kill_mid_create(
    azure: AzureStandIn, anthropic: AnthropicStandIn, workdir: Path, size: int, sent: Callable[[], bool]
) -> tuple[RunningServer, str]:
    """Submit a batch of ``size`` Anthropic lines, SIGKILL the server once ``sent()`` says the create is out."""
    first = _start(azure, anthropic, workdir)
    try:
        client = _client(first)
        batch = _submit(client, [_line(f"r{i}", "claude", f"line {i}") for i in range(size)])
        _wait(sent, "the create call to reach Anthropic")
    finally:
        first.stop(signal.SIGKILL)
    return _start(azure, anthropic, workdir, port=first.port), batch.id


def test_a_crash_in_an_anthropic_create_that_made_a_batch_never_makes_a_second(
    azure: AzureStandIn, anthropic: AnthropicStandIn, tmp_path: Path
) -> None:
    creates = anthropic.creates
    anthropic.create_stall = 3.0  # the batch is made; the answer is still on its way when the server dies
    second, batch_id = _kill_mid_create(azure, anthropic, tmp_path, 5, lambda: anthropic.creates == creates + 1)
    try:
        done = _ended(_client(second), batch_id)
        assert done.status == "failed" and done.errors is not None
        error = done.errors.data[0]
        (made,) = [b for b in anthropic.batches.values() if len(b.requests) == 5]
        assert error.code == "native_batch_unknown" and error.message is not None
        assert error.message.startswith("Provider 'anthropic': ") and made.id in error.message
        assert anthropic.creates == creates + 1
    finally:
        second.stop()


def test_a_crash_in_an_anthropic_create_that_made_nothing_creates_it_once_after_the_restart(
    azure: AzureStandIn, anthropic: AnthropicStandIn, tmp_path: Path
) -> None:
    creates = anthropic.creates
    posts = len([s for s in anthropic.standin.seen if s.path == "/v1/messages/batches" and s.method == "POST"])
    stalled = {"type": "error", "error": {"type": "api_error", "message": "Internal server error"}}
    anthropic.standin.fail("/v1/messages/batches", Failure(500, stalled, delay=3.0))  # dies before making one

    def create_sent() -> bool:
        return (
            len([s for s in anthropic.standin.seen if s.path == "/v1/messages/batches" and s.method == "POST"]) > posts
        )

    second, batch_id = _kill_mid_create(azure, anthropic, tmp_path, 6, create_sent)
    try:
        done = _ended(_client(second), batch_id)
        assert done.status == "completed", done.errors
        assert anthropic.creates == creates + 1
        assert sorted(o["custom_id"] for o in _lines(_client(second), done.output_file_id)) == [
            f"r{i}" for i in range(6)
        ]
    finally:
        second.stop()
