"""The native batch seam's provider side without a network: Anthropic's translation and Azure's renaming.

The integration tests (``tests/integration/test_batches_native_providers.py``) drive the same code
through a real server and stand-ins; here each mapping is pinned on its own, including the cases a
stand-in run does not reach (every result type, malformed upstream objects, the custom_id limits).
"""

from __future__ import annotations

import inspect
import json
from typing import Any

import pytest

from underlay.api import batches
from underlay.api.errors import InvalidRequestError
from underlay.providers.remote.inference.anthropic import AnthropicInferenceProvider
from underlay.providers.remote.inference.anthropic import Config as AnthropicConfig
from underlay.providers.remote.inference.anthropic.batches import (
    batch_from_anthropic,
    client_custom_id,
    input_reference,
    parse_reference,
    requests_from_lines,
    result_record,
    results_file,
    upstream_custom_id,
)
from underlay.providers.remote.inference.azure_openai import AzureOpenAIInferenceProvider
from underlay.providers.remote.inference.azure_openai import Config as AzureConfig

CHAT = "/v1/chat/completions"


def _body(text: str = "hi", **extra: Any) -> dict[str, Any]:
    return {"model": "claude-x", "messages": [{"role": "user", "content": text}], **extra}


@pytest.mark.parametrize(
    "custom_id",
    ["request-1", "a_b", "x" * 64, "x-looks-escaped", "with space", "ünïcode", "q/1?", "é" * 23, "!" * 46],
)
def test_custom_ids_round_trip(custom_id: str) -> None:
    sent = upstream_custom_id(custom_id)
    assert sent is not None and 1 <= len(sent) <= 64
    assert all(c.isascii() and (c.isalnum() or c in "-_") for c in sent), sent
    assert client_custom_id(sent) == custom_id


def test_a_custom_id_anthropic_can_take_goes_as_it_is_and_one_too_long_to_spell_is_refused() -> None:
    assert upstream_custom_id("doc-7") == "doc-7"
    assert upstream_custom_id("x-7") != "x-7"  # the escape prefix itself is escaped, so decoding is unambiguous
    assert upstream_custom_id("a b" * 16) is None  # 48 bytes with spaces: no reversible spelling fits 64
    assert upstream_custom_id("y" * 65) is None


def test_lines_become_messages_requests_as_a_live_chat_request_would() -> None:
    lines = [
        {"custom_id": "one", "method": "POST", "url": CHAT, "body": _body("Hello", max_tokens=7, stop="END")},
        {
            "custom_id": "two words",
            "method": "POST",
            "url": CHAT,
            "body": {
                "model": "claude-x",
                "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
                "temperature": 1.7,
            },
        },
    ]
    content = b"".join(json.dumps(line).encode() + b"\n" for line in lines)
    first, second = requests_from_lines(content, "anthropic", 1024)
    assert first == {
        "custom_id": "one",
        "params": {
            "model": "claude-x",
            "messages": [{"role": "user", "content": [{"type": "text", "text": "Hello"}]}],
            "max_tokens": 7,
            "stop_sequences": ["END"],
        },
    }
    assert client_custom_id(second["custom_id"]) == "two words"
    assert second["params"]["system"] == "Be brief." and second["params"]["max_tokens"] == 1024
    assert second["params"]["temperature"] == 1.0


def test_the_input_reference_carries_the_count_and_time() -> None:
    reference = input_reference(b"x\n", 3, 1_700_000_000)
    assert parse_reference(reference) == (3, 1_700_000_000)
    assert parse_reference("file-abc") is None


def _anthropic_batch(**fields: Any) -> dict[str, Any]:
    counts = {"processing": 0, "succeeded": 0, "errored": 0, "canceled": 0, "expired": 0}
    counts.update(fields.pop("counts", {}))
    return {
        "id": "msgbatch_01",
        "type": "message_batch",
        "processing_status": "in_progress",
        "request_counts": counts,
        "created_at": "2024-09-24T18:37:24.100435Z",
        "expires_at": "2024-09-25T18:37:24.100435Z",
        "ended_at": None,
        "cancel_initiated_at": None,
        "results_url": None,
        **fields,
    }


def test_batch_objects_map_status_counts_and_times() -> None:
    running = batch_from_anthropic(_anthropic_batch(counts={"processing": 3, "succeeded": 1}))
    assert running.status == "in_progress" and running.endpoint == CHAT
    assert (running.request_counts.total, running.request_counts.completed, running.request_counts.failed) == (4, 1, 0)
    assert running.created_at == 1727203044 and running.expires_at == 1727203044 + 24 * 3600
    assert running.output_file_id is None and running.error_file_id is None

    ended = batch_from_anthropic(
        _anthropic_batch(
            processing_status="ended", ended_at="2024-09-24T19:00:00Z", counts={"succeeded": 2, "errored": 1}
        )
    )
    assert ended.status == "completed" and ended.completed_at == 1727204400
    assert ended.output_file_id == "msgbatch_01:output" and ended.error_file_id == "msgbatch_01:errors"
    assert results_file(ended.output_file_id) == ("msgbatch_01", True)
    assert results_file(ended.error_file_id) == ("msgbatch_01", False)

    cancelling = batch_from_anthropic(
        _anthropic_batch(processing_status="canceling", cancel_initiated_at="2024-09-24T18:40:00Z")
    )
    assert cancelling.status == "cancelling" and cancelling.cancelling_at is not None
    cancelled = batch_from_anthropic(
        _anthropic_batch(
            processing_status="ended",
            cancel_initiated_at="2024-09-24T18:40:00Z",
            ended_at="2024-09-24T18:41:00Z",
            counts={"succeeded": 1, "canceled": 2},
        )
    )
    assert cancelled.status == "cancelled" and cancelled.cancelled_at is not None
    assert cancelled.output_file_id is not None and cancelled.error_file_id is not None
    expired = batch_from_anthropic(
        _anthropic_batch(processing_status="ended", ended_at="2024-09-25T18:37:24Z", counts={"expired": 2})
    )
    assert expired.status == "expired" and expired.output_file_id is None and expired.error_file_id is not None


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"processing_status": "paused"}, "processing_status"),
        ({"created_at": "yesterday"}, "created_at"),
        ({"request_counts": None}, "request_counts"),
        ({"id": None}, "id"),
    ],
)
def test_a_malformed_batch_object_names_the_field(change: dict[str, Any], named: str) -> None:
    with pytest.raises(ValueError, match=named):
        batch_from_anthropic(_anthropic_batch(**change))


def _message(text: str = "Hello there") -> dict[str, Any]:
    return {
        "id": "msg_01",
        "type": "message",
        "role": "assistant",
        "model": "claude-x-2025",
        "content": [{"type": "text", "text": text}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": 5, "output_tokens": 2},
    }


def test_results_become_openai_output_lines() -> None:
    ok, line = result_record(
        {"custom_id": upstream_custom_id("q 1"), "result": {"type": "succeeded", "message": _message()}},
        "msgbatch_01",
        "anthropic",
        1700000000,
    )
    assert ok and line["custom_id"] == "q 1" and line["error"] is None
    response = line["response"]
    assert response["status_code"] == 200 and response["request_id"] == "msg_01"
    body = response["body"]
    assert body["object"] == "chat.completion" and body["choices"][0]["message"]["content"] == "Hello there"
    assert body["choices"][0]["finish_reason"] == "stop"
    usage = body["usage"]
    assert (usage["prompt_tokens"], usage["completion_tokens"], usage["total_tokens"]) == (5, 2, 7)
    again = result_record(
        {"custom_id": upstream_custom_id("q 1"), "result": {"type": "succeeded", "message": _message()}},
        "msgbatch_01",
        "anthropic",
        1700000000,
    )[1]
    assert again["id"] == line["id"]  # the same line read twice (a retried copy) keeps its id


@pytest.mark.parametrize(
    ("kind", "status", "starts"),
    [
        (
            "invalid_request_error",
            400,
            "Provider 'anthropic' rejected the request; Anthropic said invalid_request_error",
        ),
        ("not_found_error", 404, "Provider 'anthropic' rejected the request"),
        ("overloaded_error", 503, "Provider 'anthropic': Anthropic failed the request (overloaded_error)"),
        ("api_error", 502, "Provider 'anthropic': Anthropic failed the request (api_error)"),
    ],
)
def test_errored_results_keep_a_status_and_name_the_provider(kind: str, status: int, starts: str) -> None:
    error = {"type": "error", "error": {"type": kind, "message": "nope"}}
    ok, line = result_record({"custom_id": "a", "result": {"type": "errored", "error": error}}, "b", "anthropic", 0)
    assert not ok and line["response"]["status_code"] == status
    envelope = line["response"]["body"]["error"]
    assert envelope["message"].startswith(starts) and envelope["message"].endswith("nope")
    assert envelope["code"] == kind


@pytest.mark.parametrize(("kind", "code"), [("canceled", "batch_cancelled"), ("expired", "batch_expired")])
def test_requests_that_never_ran_are_error_lines(kind: str, code: str) -> None:
    ok, line = result_record({"custom_id": "a", "result": {"type": kind}}, "b", "anthropic", 0)
    assert not ok and line["response"] is None
    assert line["error"]["code"] == code and line["error"]["message"].startswith("Provider 'anthropic': ")


def test_a_malformed_result_is_a_502_line_not_a_crash() -> None:
    broken = {"custom_id": "a", "result": {"type": "succeeded", "message": {"id": "m"}}}
    ok, line = result_record(broken, "b", "anthropic", 0)
    assert not ok and line["response"]["status_code"] == 502
    ok, line = result_record({"custom_id": "a", "result": {"type": "mystery"}}, "b", "anthropic", 0)
    assert not ok and "mystery" in line["response"]["body"]["error"]["message"]


def _anthropic(**config: Any) -> AnthropicInferenceProvider:
    return AnthropicInferenceProvider("anthropic", AnthropicConfig.model_validate({"api_key": "sk-ant-unit", **config}))


def _azure(**config: Any) -> AzureOpenAIInferenceProvider:
    base = {"azure_endpoint": "http://127.0.0.1:9", "api_key": "azure-unit-key", "native_batches": True}
    return AzureOpenAIInferenceProvider("azure", AzureConfig.model_validate({**base, **config}))


def test_both_providers_implement_the_seam_with_its_signatures() -> None:
    members = [name for name in vars(batches.NativeBatchProvider) if not name.startswith("_")]
    for provider in (_anthropic(), _azure()):
        assert isinstance(provider, batches.NativeBatchProvider)
        for name in members:
            expected = inspect.signature(getattr(batches.NativeBatchProvider, name))
            assert inspect.signature(getattr(type(provider), name)) == expected, (type(provider).__name__, name)


def test_anthropic_batches_chat_only_and_only_lines_it_can_carry() -> None:
    provider = _anthropic()
    assert provider.native_batches_for(CHAT)
    assert not provider.native_batches_for("/v1/embeddings") and not provider.native_batches_for("/v1/completions")
    assert not _anthropic(native_batches=False).native_batches_for(CHAT)
    assert provider.native_batch_accepts(CHAT, [("a", _body()), ("b c", _body())])
    assert not provider.native_batch_accepts(CHAT, [("a", _body()), ("b", _body(n=2))])  # one choice only
    assert not provider.native_batch_accepts(CHAT, [("a" * 100, _body())])
    rf = {"type": "json_schema", "json_schema": {"name": "x", "schema": {}}}
    assert not provider.native_batch_accepts(CHAT, [("a", _body(response_format=rf))])
    with pytest.raises(InvalidRequestError):
        requests_from_lines(json.dumps({"custom_id": "a" * 100, "body": _body()}).encode(), "anthropic", 10)


def test_anthropic_without_a_key_of_its_own_keeps_batches_here(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    assert not AnthropicInferenceProvider("anthropic", AnthropicConfig()).native_batches_for(CHAT)


def test_azure_is_off_by_default_and_wants_one_batch_deployment() -> None:
    assert not _azure(native_batches=False).native_batches_for(CHAT)
    provider = _azure(deployments={"mini": "mini-live", "big": "big-live"}, batch_deployments="mini=mini-batch")
    assert provider.native_batches_for(CHAT) and provider.native_batches_for("/v1/embeddings")
    assert not provider.native_batches_for("/v1/completions")
    assert provider.native_batch_accepts(CHAT, [("a", {"model": "mini"}), ("b", {"model": "mini"})])
    assert not provider.native_batch_accepts(CHAT, [("a", {"model": "big"})])  # no batch deployment for it
    both = _azure(batch_deployments={"mini": "batch-1", "big": "batch-2"})
    assert not both.native_batch_accepts(CHAT, [("a", {"model": "mini"}), ("b", {"model": "big"})])
    unmapped = _azure()
    assert unmapped.native_batch_accepts(CHAT, [("a", {"model": "mini"})])


def test_azure_renames_lines_and_paths() -> None:
    provider = _azure(
        deployments={"mini": "mini-live"}, batch_deployments={"mini": "mini-batch"}, api_version="2024-10-21"
    )
    line = {"custom_id": "a", "method": "POST", "url": CHAT, "body": {"model": "mini", "messages": []}}
    sent = json.loads(provider._native_content(json.dumps(line).encode() + b"\n"))
    assert sent["url"] == "/chat/completions" and sent["body"]["model"] == "mini-batch"
    assert provider._batch_path("batches") == "batches?api-version=2024-10-21"
    assert provider._batch_path("batches?limit=100") == "batches?limit=100&api-version=2024-10-21"
    assert provider._native_endpoint("/v1/embeddings") == "/embeddings"
    assert _azure(api_style="v1")._batch_path("files") == "files"


def test_azure_with_entra_client_credentials_may_batch_before_it_has_a_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AZURE_OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("AZURE_OPENAI_AD_TOKEN", raising=False)
    entra = {"tenant_id": "t", "client_id": "c", "client_secret": "s3cret-value"}
    provider = AzureOpenAIInferenceProvider(
        "azure",
        AzureConfig.model_validate({"azure_endpoint": "http://127.0.0.1:9", "entra": entra, "native_batches": True}),
    )
    assert provider.native_batches_for(CHAT)
    keyless = AzureOpenAIInferenceProvider(
        "azure", AzureConfig.model_validate({"azure_endpoint": "http://127.0.0.1:9", "native_batches": True})
    )
    assert not keyless.native_batches_for(CHAT)
