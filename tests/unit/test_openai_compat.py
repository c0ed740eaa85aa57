"""Pure helpers of the OpenAI-compatible adapter base: parsing upstream headers and bodies."""

from __future__ import annotations

import base64
import email.utils
import struct
import time

import httpx
import pytest

from underlay.api.inference import ChatCompletion, Completion
from underlay.providers.remote.inference.llama_cpp_server import mean_pool
from underlay.providers.utils.openai_compat import (
    TimeoutSettings,
    body_message,
    floats_to_base64,
    guess_model_type,
    normalize_finish_reasons,
    retry_after_seconds,
    with_v1,
)


def test_retry_after_forms() -> None:
    assert retry_after_seconds(httpx.Headers({"Retry-After": "2"})) == 2.0
    assert retry_after_seconds(httpx.Headers({"retry-after-ms": "250", "Retry-After": "9"})) == 0.25
    future = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 25 <= (retry_after_seconds(httpx.Headers({"Retry-After": future})) or 0) <= 31
    assert retry_after_seconds(httpx.Headers({"Retry-After": "soon"})) is None
    assert retry_after_seconds(httpx.Headers()) is None


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"error": {"message": "bad model", "type": "invalid_request_error"}}, "bad model"),
        ({"error": "plain"}, "plain"),
        ({"detail": "Invalid API key"}, "Invalid API key"),
        ({"detail": [{"loc": ["body", "messages", 0], "msg": "Field required"}]}, "messages.0: Field required"),
        ({"message": "from elsewhere"}, "from elsewhere"),
        ('{"error": {"message": "as text"}}', "as text"),
        ("not json", ""),
        ([1, 2], ""),
    ],
)
def test_body_message_shapes(body: object, message: str) -> None:
    assert body_message(body) == message


def test_with_v1_only_fills_a_bare_url() -> None:
    assert with_v1("http://h:8000") == "http://h:8000/v1"
    assert with_v1("http://h:8000/") == "http://h:8000/v1"
    assert with_v1("http://h:8000/v1/") == "http://h:8000/v1"
    assert with_v1("https://gateway/llm/openai") == "https://gateway/llm/openai"


def test_timeout_number_sets_read() -> None:
    assert TimeoutSettings.model_validate(30) == TimeoutSettings(connect=5, read=30)
    assert TimeoutSettings.model_validate(2) == TimeoutSettings(connect=2, read=2)


def test_unknown_finish_reasons_become_stop() -> None:
    body = {"choices": [{"finish_reason": "abort"}, {"finish_reason": "tool_calls"}, {"finish_reason": None}]}
    assert [c["finish_reason"] for c in normalize_finish_reasons(ChatCompletion, body)["choices"]] == [
        "stop",
        "tool_calls",
        None,
    ]
    completion = {"choices": [{"finish_reason": "tool_calls"}]}
    assert normalize_finish_reasons(Completion, completion)["choices"][0]["finish_reason"] == "stop"


def test_base64_is_little_endian_float32() -> None:
    encoded = floats_to_base64([1.0, -2.5])
    assert struct.unpack("<2f", base64.b64decode(encoded)) == (1.0, -2.5)


def test_mean_pool_and_type_guess() -> None:
    assert mean_pool([[1.0, 2.0], [3.0, 4.0]]) == [2.0, 3.0]
    assert guess_model_type("nomic-Embed-text") == "embedding"
    assert guess_model_type("llama3") == "llm"
