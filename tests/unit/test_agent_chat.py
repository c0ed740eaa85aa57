"""A chat request to a deployed agent, as the Responses request it becomes (pure translation, no server).

What a chat client sends must reach the agent's loop with the same meaning: system text as
instructions, earlier tool calls and their results as function-call items, function tools and
``tool_choice`` in Responses' flat shape, ``response_format`` as ``text.format``; what has no Responses
counterpart is a 400 naming the parameter instead of being dropped.
"""

from __future__ import annotations

from typing import Any

import pytest

from underlay.api.errors import InvalidRequestError
from underlay.api.inference import ChatCompletionRequest
from underlay.api.responses import ResponseObject
from underlay.core.agent_chat import chat_completion, responses_request


def _request(**extra: Any) -> ChatCompletionRequest:
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Weather in Paris?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
    ]
    return ChatCompletionRequest.model_validate({"model": "agent/desk", "messages": messages, **extra})


def test_messages_tools_and_formats_translate() -> None:
    tool = {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}
    fmt = {"type": "json_schema", "json_schema": {"name": "answer", "schema": {"type": "object"}, "strict": True}}
    request = responses_request(
        _request(
            tools=[tool],
            tool_choice={"type": "function", "function": {"name": "get_weather"}},
            response_format=fmt,
            max_tokens=50,
            seed=7,
            guardrails=["pii"],
        )
    )
    body = request.model_dump(mode="json", exclude_none=True, by_alias=True)
    assert body["instructions"] == "Be brief." and body["store"] is False
    assert body["input"][0] == {"type": "message", "role": "user", "content": "Weather in Paris?"}
    assert body["input"][1]["type"] == "function_call" and body["input"][1]["call_id"] == "call_1"
    assert body["input"][2] == {"type": "function_call_output", "call_id": "call_1", "output": "sunny"}
    assert body["tools"][0]["type"] == "function" and body["tools"][0]["name"] == "get_weather"
    assert body["tool_choice"] == {"type": "function", "name": "get_weather"}
    assert body["text"]["format"]["type"] == "json_schema" and body["text"]["format"]["name"] == "answer"
    assert body["text"]["format"]["schema"] == {"type": "object"} and body["text"]["format"]["strict"] is True
    assert body["max_output_tokens"] == 50 and body["seed"] == 7 and body["guardrails"] == ["pii"]


@pytest.mark.parametrize("extra", [{"stop": ["\n"]}, {"logprobs": True}, {"logit_bias": {"1": 1.0}}, {"n": 2}])
def test_what_responses_cannot_do_is_refused_by_name(extra: dict[str, Any]) -> None:
    with pytest.raises(InvalidRequestError) as refused:
        responses_request(_request(**extra))
    assert refused.value.param == next(iter(extra))


def test_a_function_call_becomes_tool_calls() -> None:
    response = ResponseObject.model_validate(
        {
            "id": "resp_abc",
            "created_at": 1,
            "status": "completed",
            "model": "m",
            "output": [{"type": "function_call", "call_id": "call_9", "name": "get_weather", "arguments": '{"a":1}'}],
        }
    )
    completion = chat_completion(response, "agent/desk")
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    assert choice.message.tool_calls is not None and choice.message.tool_calls[0].id == "call_9"
    assert completion.model == "agent/desk" and completion.id == "chatcmpl-abc"
