"""The OpenAI ⇄ Gemini translation of ``remote::gemini``: schema cutting, messages, finish reasons, usage, errors."""

from __future__ import annotations

import json
from typing import Any

import pytest

from underlay.api.errors import InvalidRequestError, RateLimitedError, UnauthenticatedError, UpstreamError
from underlay.api.inference import ChatCompletionRequest
from underlay.providers.remote.inference.gemini.provider import Config, GeminiInferenceProvider, google_error
from underlay.providers.remote.inference.gemini.wire import (
    chat_request,
    completion_from_response,
    finish_reason,
    model_path,
    parse_duration,
    to_gemini_schema,
    usage_from_metadata,
)
from underlay.providers.utils.openai_compat import Credential


def _request(**fields: Any) -> ChatCompletionRequest:
    return ChatCompletionRequest.model_validate({"model": "gemini-2.5-flash", **fields})


def test_schema_refs_nullable_unions_and_dropped_keywords() -> None:
    schema = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "$defs": {"Point": {"type": "object", "properties": {"x": {"type": "number", "format": "double"}}}},
        "properties": {
            "where": {"$ref": "#/$defs/Point", "description": "a point"},
            "tag": {"type": ["string", "null"], "format": "uri", "maxLength": 10},
            "kind": {"const": "circle"},
            "size": {"anyOf": [{"type": "integer"}, {"type": "string"}]},
            "extra": {"type": "object", "additionalProperties": {"type": "string"}},
            "items": {"type": "array", "items": {"type": "integer", "enum": [1, 2]}},
        },
        "required": ["where", "ghost"],
        "additionalProperties": False,
    }
    assert to_gemini_schema(schema, param="p") == {
        "type": "OBJECT",
        "properties": {
            "where": {
                "type": "OBJECT",
                "description": "a point",
                "properties": {"x": {"type": "NUMBER", "format": "double"}},
            },
            "tag": {"type": "STRING", "maxLength": 10, "nullable": True},  # "uri" is no Gemini format
            "kind": {"type": "STRING", "format": "enum", "enum": ["circle"]},
            "size": {"anyOf": [{"type": "INTEGER"}, {"type": "STRING"}]},
            "extra": {"type": "OBJECT"},
            "items": {"type": "ARRAY", "items": {"type": "INTEGER"}},  # Gemini enums are strings only
        },
        "required": ["where"],  # a required name with no property is dropped
    }


def test_schema_all_of_merges_and_recursion_is_a_400() -> None:
    merged = to_gemini_schema(
        {
            "allOf": [
                {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]},
                {"properties": {"b": {"type": "boolean"}}, "required": ["b"]},
            ]
        },
        param="p",
    )
    assert merged["properties"] == {"a": {"type": "STRING"}, "b": {"type": "BOOLEAN"}}
    assert merged["required"] == ["a", "b"] and merged["type"] == "OBJECT"
    recursive = {
        "$defs": {"Node": {"type": "object", "properties": {"next": {"$ref": "#/$defs/Node"}}}},
        "$ref": "#/$defs/Node",
    }
    with pytest.raises(InvalidRequestError, match="deeper than") as info:
        to_gemini_schema(recursive, param="tools[0].function.parameters")
    assert info.value.param == "tools[0].function.parameters"
    with pytest.raises(InvalidRequestError, match="points to no"):
        to_gemini_schema({"$ref": "#/$defs/Missing"}, param="p")


def test_messages_merge_turns_and_group_tool_results() -> None:
    def call(i: int) -> dict[str, Any]:
        return {"id": f"c{i}", "type": "function", "function": {"name": f"f{i}", "arguments": json.dumps({"n": i})}}

    body = chat_request(
        _request(
            messages=[
                {"role": "system", "content": "S1"},
                {"role": "developer", "content": [{"type": "text", "text": "S2"}]},
                {"role": "user", "content": "a"},
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "b"},
                        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
                    ],
                },
                {"role": "assistant", "content": None, "tool_calls": [call(1), call(2)]},
                {"role": "tool", "tool_call_id": "c1", "content": "plain text"},
                {"role": "tool", "tool_call_id": "c2", "content": "[1, 2]"},
                {"role": "user", "content": "thanks"},
            ]
        )
    )
    assert body["systemInstruction"] == {"parts": [{"text": "S1"}, {"text": "S2"}]}
    assert body["contents"] == [
        {
            "role": "user",
            "parts": [{"text": "a"}, {"text": "b"}, {"inlineData": {"mimeType": "image/png", "data": "AAAA"}}],
        },
        {
            "role": "model",
            "parts": [
                {"functionCall": {"name": "f1", "args": {"n": 1}}},
                {"functionCall": {"name": "f2", "args": {"n": 2}}},
            ],
        },
        {
            "role": "user",
            "parts": [
                {"functionResponse": {"name": "f1", "response": {"result": "plain text"}}},
                {"functionResponse": {"name": "f2", "response": {"result": [1, 2]}}},
            ],
        },
        {"role": "user", "parts": [{"text": "thanks"}]},
    ]


def test_request_errors_name_the_field() -> None:
    bad_args = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "not json"}}
    with pytest.raises(InvalidRequestError) as info:
        chat_request(
            _request(messages=[{"role": "user", "content": "x"}, {"role": "assistant", "tool_calls": [bad_args]}])
        )
    assert info.value.param == "messages[1].tool_calls[0].function.arguments"
    with pytest.raises(InvalidRequestError) as info:
        chat_request(_request(messages=[{"role": "user", "content": "x"}], stop=["1", "2", "3", "4", "5", "6"]))
    assert info.value.param == "stop"
    with pytest.raises(InvalidRequestError) as info:
        chat_request(_request(messages=[{"role": "user", "content": "x"}], logprobs=True))
    assert info.value.param == "logprobs"
    with pytest.raises(InvalidRequestError) as info:
        chat_request(_request(messages=[{"role": "system", "content": "only a system prompt"}]))
    assert info.value.param == "messages"
    with pytest.raises(InvalidRequestError) as info:
        chat_request(_request(messages=[{"role": "user", "content": "x"}], top_k=0))
    assert info.value.param == "top_k"
    for name in ("../files/x", "gemini?alt=1", "a" * 200, ""):
        with pytest.raises(InvalidRequestError):
            model_path(name)
    assert model_path("models/gemini-2.5-pro") == "models/gemini-2.5-pro"
    assert model_path("tunedModels/my-model-1") == "tunedModels/my-model-1"


def test_json_schema_response_format_and_thought_signature_round_trip() -> None:
    body = chat_request(
        _request(
            messages=[
                {"role": "user", "content": "x"},
                {
                    "role": "assistant",
                    "tool_calls": [
                        {
                            "id": "c1",
                            "type": "function",
                            "function": {"name": "f", "arguments": ""},
                            "extra_content": {"google": {"thought_signature": "SIG"}},
                        }
                    ],
                },
                {"role": "tool", "tool_call_id": "c1", "content": '{"ok": true}'},
            ],
            response_format={
                "type": "json_schema",
                "json_schema": {"name": "out", "schema": {"type": "object", "properties": {"ok": {"type": "boolean"}}}},
            },
            tools=[{"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {}}}}],
            tool_choice="none",
        )
    )
    assert body["contents"][1]["parts"] == [{"functionCall": {"name": "f", "args": {}}, "thoughtSignature": "SIG"}]
    assert body["generationConfig"]["responseMimeType"] == "application/json"
    assert body["generationConfig"]["responseSchema"] == {"type": "OBJECT", "properties": {"ok": {"type": "BOOLEAN"}}}
    assert body["tools"] == [{"functionDeclarations": [{"name": "f"}]}]  # no parameters: none sent
    assert body["toolConfig"] == {"functionCallingConfig": {"mode": "NONE"}}


@pytest.mark.parametrize(
    ("reason", "has_calls", "expected"),
    [
        ("STOP", False, "stop"),
        ("STOP", True, "tool_calls"),
        ("MAX_TOKENS", False, "length"),
        ("SAFETY", False, "content_filter"),
        ("RECITATION", False, "content_filter"),
        ("PROHIBITED_CONTENT", False, "content_filter"),
        ("MALFORMED_FUNCTION_CALL", False, "stop"),
        ("OTHER", False, "stop"),
        (None, False, None),
    ],
)
def test_finish_reasons(reason: str | None, has_calls: bool, expected: str | None) -> None:
    assert finish_reason(reason, has_calls) == expected


def test_usage_and_response_mapping() -> None:
    usage = usage_from_metadata(
        {
            "promptTokenCount": 10,
            "candidatesTokenCount": 5,
            "thoughtsTokenCount": 7,
            "cachedContentTokenCount": 4,
            "totalTokenCount": 22,
        }
    )
    assert usage == {
        "prompt_tokens": 10,
        "completion_tokens": 12,
        "total_tokens": 22,
        "prompt_tokens_details": {"cached_tokens": 4},
        "completion_tokens_details": {"reasoning_tokens": 7},
    }
    response = completion_from_response(
        {
            "candidates": [
                {
                    "content": {
                        "role": "model",
                        "parts": [
                            {"text": "thinking...", "thought": True},
                            {"text": "Hi"},
                            {"functionCall": {"name": "f", "args": {"a": 1}}, "thoughtSignature": "S"},
                        ],
                    },
                    "finishReason": "STOP",
                }
            ],
            "responseId": "abc",
        },
        "m",
    )
    message = response["choices"][0]["message"]
    assert message["content"] == "Hi" and response["choices"][0]["finish_reason"] == "tool_calls"
    assert json.loads(message["tool_calls"][0]["function"]["arguments"]) == {"a": 1}
    assert message["tool_calls"][0]["extra_content"] == {"google": {"thought_signature": "S"}}
    assert response["id"] == "chatcmpl-abc" and "usage" not in response
    blocked = completion_from_response({"promptFeedback": {"blockReason": "SAFETY"}}, "m")
    assert blocked["choices"] == [
        {"index": 0, "message": {"role": "assistant", "content": None}, "finish_reason": "content_filter"}
    ]


def test_google_errors_map_by_status() -> None:
    provider = GeminiInferenceProvider("gem", Config(api_key="AIza-secret-key"))
    env = Credential("AIza-secret-key", "env", "the GEMINI_API_KEY environment variable")
    throttled = provider.map_google_error(
        {
            "code": 429,
            "status": "RESOURCE_EXHAUSTED",
            "message": "Quota exceeded for AIza-secret-key",
            "details": [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "12.4s"}],
        },
        429,
        env,
        "m",
    )
    assert isinstance(throttled, RateLimitedError) and throttled.headers == {"Retry-After": "12"}
    assert "AIza-secret-key" not in throttled.message and "gem" in throttled.message
    bad_key = {
        "code": 400,
        "status": "INVALID_ARGUMENT",
        "message": "API key not valid.",
        "details": [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID"}],
    }
    operator = provider.map_google_error(bad_key, 400, env, "m")
    assert (
        isinstance(operator, UpstreamError) and operator.status_code == 502 and operator.code == "upstream_auth_failed"
    )
    caller = provider.map_google_error(bad_key, 400, Credential("k", "request", "the header"), "m")
    assert isinstance(caller, UnauthenticatedError)
    precondition = provider.map_google_error(
        {"code": 400, "status": "FAILED_PRECONDITION", "message": "billing"}, 400, env, "m"
    )
    assert precondition.status_code == 502
    assert (
        provider.map_google_error({"code": 500, "status": "INTERNAL", "message": "x"}, 500, env, "m").status_code == 502
    )
    assert (
        provider.map_google_error(
            {"code": 504, "status": "DEADLINE_EXCEEDED", "message": "x"}, 504, env, "m"
        ).status_code
        == 504
    )
    assert google_error('[{"error": {"code": 400, "message": "m", "status": "INVALID_ARGUMENT"}}]') is not None
    assert google_error('{"error": "plain"}') is None and google_error("<html>") is None
    assert parse_duration("37s") == 37.0 and parse_duration("0.5s") == 0.5 and parse_duration("soon") is None


def test_key_goes_in_x_goog_api_key_only() -> None:
    provider = GeminiInferenceProvider("gem", Config(api_key="AIza-k"))
    headers = provider._headers(Credential("AIza-k", "config", "the provider's config"), stream=False)
    assert headers["x-goog-api-key"] == "AIza-k" and "Authorization" not in headers
