"""The OpenAI chat ⇄ Bedrock Converse mapping of ``remote::bedrock``, as pure functions."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from underlay.api.errors import InvalidRequestError
from underlay.api.inference import ChatCompletionRequest
from underlay.providers.remote.inference.bedrock.converse import (
    StreamTranslator,
    completion_from_converse,
    converse_request,
    finish_reason,
)

PNG = base64.b64encode(b"\x89PNG fake").decode()


def request(**fields: Any) -> ChatCompletionRequest:
    return ChatCompletionRequest.model_validate({"model": "m", **fields})


def test_system_turns_are_lifted_and_same_role_turns_merged() -> None:
    sent = converse_request(
        request(
            messages=[
                {"role": "system", "content": "rule one"},
                {"role": "developer", "content": [{"type": "text", "text": "rule two"}]},
                {"role": "user", "content": "weather?"},
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {"id": "a", "type": "function", "function": {"name": "w", "arguments": '{"city": "X"}'}},
                        {"id": "b", "type": "function", "function": {"name": "w", "arguments": '{"city": "Y"}'}},
                    ],
                },
                {"role": "tool", "tool_call_id": "a", "content": "sunny"},
                {"role": "tool", "tool_call_id": "b", "content": ""},
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "and?"},
                        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
                    ],
                },
            ],
            max_tokens=10,
            stop="END",
            tools=[{"type": "function", "function": {"name": "w"}}],
        )
    )
    assert sent["system"] == [{"text": "rule one"}, {"text": "rule two"}]
    assert [m["role"] for m in sent["messages"]] == ["user", "assistant", "user"]
    assert sent["messages"][1]["content"] == [
        {"toolUse": {"toolUseId": "a", "name": "w", "input": {"city": "X"}}},
        {"toolUse": {"toolUseId": "b", "name": "w", "input": {"city": "Y"}}},
    ]
    merged = sent["messages"][2]["content"]
    assert merged[0] == {"toolResult": {"toolUseId": "a", "content": [{"text": "sunny"}]}}
    assert merged[1] == {"toolResult": {"toolUseId": "b", "content": [{"text": "(empty)"}]}}
    assert merged[2] == {"text": "and?"}
    assert merged[3] == {"image": {"format": "png", "source": {"bytes": b"\x89PNG fake"}}}
    assert sent["inferenceConfig"] == {"maxTokens": 10, "stopSequences": ["END"]}
    assert "toolChoice" not in sent["toolConfig"]


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        ("auto", {"auto": {}}),
        ("required", {"any": {}}),
        ({"type": "function", "function": {"name": "w"}}, {"tool": {"name": "w"}}),
        (None, None),
    ],
)
def test_tool_choice(choice: Any, expected: Any) -> None:
    tools = [{"type": "function", "function": {"name": "w"}}]
    fields: dict[str, Any] = {"messages": [{"role": "user", "content": "x"}], "tools": tools}
    if choice is not None:
        fields["tool_choice"] = choice
    config = converse_request(request(**fields))["toolConfig"]
    assert config["tools"] == [
        {"toolSpec": {"name": "w", "inputSchema": {"json": {"type": "object", "properties": {}}}}}
    ]
    assert config.get("toolChoice") == expected


def test_tool_choice_none_sends_no_tools_and_earlier_tool_turns_as_text() -> None:
    tools = [{"type": "function", "function": {"name": "w"}}]
    messages = [
        {"role": "user", "content": "x"},
        {"role": "assistant", "tool_calls": [{"id": "a", "function": {"name": "w", "arguments": '{"q": 1}'}}]},
        {"role": "tool", "tool_call_id": "a", "content": "done"},
    ]
    sent = converse_request(request(messages=messages, tools=tools, tool_choice="none"))
    assert "toolConfig" not in sent
    assert sent["messages"][1]["content"] == [{"text": '[called tool w with {"q": 1}]'}]
    assert sent["messages"][2]["content"] == [{"text": "[tool result for a: done]"}]
    with_tools = converse_request(request(messages=messages, tools=tools))
    assert "toolUse" in with_tools["messages"][1]["content"][0]


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"n": 2}, "n"),
        ({"logprobs": True}, "logprobs"),
        ({"response_format": {"type": "json_object"}}, "response_format"),
        (
            {
                "messages": [
                    {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://x/y.png"}}]}
                ]
            },
            "messages[0].content[0].image_url.url",
        ),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [{"type": "image_url", "image_url": {"url": "data:image/tiff;base64,AAAA"}}],
                    }
                ]
            },
            "messages[0].content[0].image_url.url",
        ),
        (
            {
                "messages": [
                    {"role": "user", "content": "x"},
                    {
                        "role": "assistant",
                        "tool_calls": [{"id": "a", "function": {"name": "w", "arguments": "{not json"}}],
                    },
                ]
            },
            "messages[1].tool_calls[0].function.arguments",
        ),
    ],
)
def test_unsupported_options_are_refused_naming_the_parameter(fields: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        converse_request(request(**{"messages": [{"role": "user", "content": "x"}], **fields}))
    assert caught.value.param == param


@pytest.mark.parametrize(
    ("stop", "reason"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("model_context_window_exceeded", "length"),
        ("tool_use", "tool_calls"),
        ("guardrail_intervened", "content_filter"),
        ("content_filtered", "content_filter"),
        ("something_new", "stop"),
    ],
)
def test_stop_reasons(stop: str, reason: str) -> None:
    assert finish_reason(stop) == reason


def test_completion_from_converse() -> None:
    answer = {
        "output": {
            "message": {
                "role": "assistant",
                "content": [{"text": "Calling."}, {"toolUse": {"toolUseId": "t1", "name": "w", "input": {"a": 1}}}],
            }
        },
        "stopReason": "tool_use",
        "usage": {"inputTokens": 12, "outputTokens": 4, "totalTokens": 16},
    }
    completion = completion_from_converse(answer, "m")
    choice = completion.choices[0]
    assert choice.message.content == "Calling." and choice.finish_reason == "tool_calls"
    assert choice.message.tool_calls is not None and choice.message.tool_calls[0].function.arguments == '{"a": 1}'
    assert completion.usage is not None and completion.usage.model_dump() == {
        "prompt_tokens": 12,
        "completion_tokens": 4,
        "total_tokens": 16,
    }


def test_stream_translator_numbers_tool_calls_and_reports_usage() -> None:
    translator = StreamTranslator("m", include_usage=True)
    events = [
        {"messageStart": {"role": "assistant"}},
        {"contentBlockDelta": {"contentBlockIndex": 0, "delta": {"text": "Hi"}}},
        {"contentBlockStop": {"contentBlockIndex": 0}},
        {"contentBlockStart": {"contentBlockIndex": 1, "start": {"toolUse": {"toolUseId": "t1", "name": "w"}}}},
        {"contentBlockDelta": {"contentBlockIndex": 1, "delta": {"toolUse": {"input": '{"a":'}}}},
        {"contentBlockDelta": {"contentBlockIndex": 1, "delta": {"toolUse": {"input": "1}"}}}},
        {"contentBlockStart": {"contentBlockIndex": 2, "start": {"toolUse": {"toolUseId": "t2", "name": "v"}}}},
        {"messageStop": {"stopReason": "tool_use"}},
        {"metadata": {"usage": {"inputTokens": 3, "outputTokens": 2, "totalTokens": 5}}},
    ]
    chunks = [c for c in (translator.translate(e) for e in events) if c is not None]
    assert translator.finished
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[1].choices[0].delta.content == "Hi"
    calls = [d for c in chunks if c.choices for d in c.choices[0].delta.tool_calls or []]
    assert [(d.index, d.id) for d in calls] == [(0, "t1"), (0, None), (0, None), (1, "t2")]
    assert "".join((d.function or {}).get("arguments", "") for d in calls if d.index == 0) == '{"a":1}'
    assert chunks[-2].choices[0].finish_reason == "tool_calls"
    assert chunks[-1].choices == [] and chunks[-1].usage is not None and chunks[-1].usage.total_tokens == 5
    assert len({c.id for c in chunks}) == 1
