"""Messages ⇄ chat, both ways: the front door's translation (core) and remote::anthropic's (provider).

Each direction is checked on the fields that carry meaning: turns and their order, tool calls and tool
results with their ids, tool choice, limits and sampling, stop reasons and the stop string, usage.
A round trip (Messages → chat → Messages request) keeps a conversation with tools intact.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from underlay.api.errors import InvalidRequestError
from underlay.api.inference import ChatCompletion, ChatCompletionChunk, ChatCompletionRequest
from underlay.api.messages import Message, MessagesRequest
from underlay.core.messages_chat import chat_request, events_from_chunks, message_from_chat
from underlay.providers.remote.inference.anthropic.wire import completion_from_message, messages_payload

WEATHER = {
    "name": "get_weather",
    "description": "Weather for a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}
CONVERSATION: dict[str, Any] = {
    "model": "m",
    "max_tokens": 100,
    "system": [{"type": "text", "text": "Be brief."}, {"type": "text", "text": "Use tools."}],
    "temperature": 0.3,
    "top_k": 20,
    "stop_sequences": ["END"],
    "tools": [WEATHER],
    "tool_choice": {"type": "any", "disable_parallel_tool_use": True},
    "messages": [
        {"role": "user", "content": "Weather in Paris?"},
        {
            "role": "assistant",
            "content": [
                {"type": "thinking", "thinking": "need the tool", "signature": "sig"},
                {"type": "text", "text": "Checking."},
                {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}},
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": [{"type": "text", "text": "18C"}]},
                {"type": "text", "text": "And tomorrow?"},
            ],
        },
    ],
}


def test_messages_request_becomes_chat() -> None:
    chat = chat_request(MessagesRequest.model_validate(CONVERSATION))
    roles = [m.role for m in chat.messages]
    assert roles == ["system", "user", "assistant", "tool", "user"]  # tool results before the user's words
    assert chat.messages[0].content == "Be brief.\n\nUse tools."
    assistant = chat.messages[2]
    assert assistant.content == "Checking."  # the thinking block is not input
    assert assistant.tool_calls is not None and assistant.tool_calls[0].id == "toolu_1"
    assert json.loads(assistant.tool_calls[0].function.arguments) == {"city": "Paris"}
    assert chat.messages[3].tool_call_id == "toolu_1" and chat.messages[3].content == "18C"
    assert chat.tool_choice == "required" and chat.parallel_tool_calls is False
    assert chat.tools is not None and chat.tools[0].function.parameters == WEATHER["input_schema"]
    assert (chat.max_tokens, chat.temperature, chat.stop) == (100, 0.3, ["END"])
    assert (chat.model_extra or {})["top_k"] == 20


def test_named_tool_choice_and_errors() -> None:
    named = chat_request(
        MessagesRequest.model_validate({**CONVERSATION, "tool_choice": {"type": "tool", "name": "get_weather"}})
    )
    assert named.tool_choice is not None and named.tool_choice.function.name == "get_weather"  # type: ignore[union-attr]
    with pytest.raises(InvalidRequestError) as unknown:
        chat_request(MessagesRequest.model_validate({**CONVERSATION, "tool_choice": {"type": "tool", "name": "nope"}}))
    assert "nope" in unknown.value.message
    server_tool = {
        **CONVERSATION,
        "tools": [{"type": "web_search_20250305", "name": "web_search"}],
        "tool_choice": None,
    }
    with pytest.raises(InvalidRequestError) as native:
        chat_request(MessagesRequest.model_validate(server_tool))
    assert native.value.param == "tools[0]"


def _completion(finish: str, content: str | None, **choice_extra: Any) -> ChatCompletion:
    return ChatCompletion.model_validate(
        {
            "id": "c1",
            "created": 1,
            "model": "provider-name",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": content},
                    "finish_reason": finish,
                    **choice_extra,
                }
            ],
            "usage": {"prompt_tokens": 11, "completion_tokens": 4, "total_tokens": 15},
        }
    )


def test_chat_answer_becomes_a_message() -> None:
    params = MessagesRequest.model_validate(CONVERSATION)
    stopped = message_from_chat(_completion("stop", "it is", stop_reason="END"), "client-id", params)
    assert (stopped.stop_reason, stopped.stop_sequence, stopped.model) == ("stop_sequence", "END", "client-id")
    assert (stopped.usage.input_tokens, stopped.usage.output_tokens) == (11, 4)
    natural = message_from_chat(_completion("stop", "done"), "client-id", params)
    assert (natural.stop_reason, natural.stop_sequence) == ("end_turn", None)
    assert message_from_chat(_completion("length", "cut"), "x", params).stop_reason == "max_tokens"
    calls = _completion("tool_calls", None)
    calls.choices[0].message.tool_calls = (
        ChatCompletion.model_validate(
            {
                "id": "c",
                "created": 1,
                "model": "m",
                "choices": [
                    {
                        "index": 0,
                        "finish_reason": "tool_calls",
                        "message": {
                            "role": "assistant",
                            "tool_calls": [
                                {
                                    "id": "call_9",
                                    "type": "function",
                                    "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'},
                                }
                            ],
                        },
                    }
                ],
            }
        )
        .choices[0]
        .message.tool_calls
    )
    used = message_from_chat(calls, "x", params)
    assert used.stop_reason == "tool_use"
    assert [b.model_dump() for b in used.content] == [
        {"type": "tool_use", "id": "call_9", "name": "get_weather", "input": {"city": "Oslo"}}
    ]


async def _chunks(items: list[dict[str, Any]]) -> AsyncIterator[ChatCompletionChunk]:
    for item in items:
        yield ChatCompletionChunk.model_validate({"id": "c", "created": 1, "model": "m", **item})


async def test_chunk_stream_becomes_events() -> None:
    params = MessagesRequest.model_validate({**CONVERSATION, "stream": True})
    chunks = [
        {"choices": [{"index": 0, "delta": {"role": "assistant", "content": "Let me "}}]},
        {"choices": [{"index": 0, "delta": {"content": "check."}}]},
        {
            "choices": [
                {
                    "index": 0,
                    "delta": {
                        "tool_calls": [
                            {
                                "index": 0,
                                "id": "call_1",
                                "type": "function",
                                "function": {"name": "get_weather", "arguments": ""},
                            }
                        ]
                    },
                }
            ]
        },
        {"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": '{"city":'}}]}}]},
        {"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": ' "Rome"}'}}]}}]},
        {"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]},
        {"choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 6, "total_tokens": 15}},
    ]
    events = [e async for e in events_from_chunks(_chunks(chunks), "client-id", params)]
    names = [e.type for e in events]
    assert names == [
        "message_start",
        "ping",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    tool_start = events[6].model_dump()
    assert tool_start["index"] == 1
    assert tool_start["content_block"] == {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {}}
    partial = "".join(e.model_dump()["delta"]["partial_json"] for e in events[7:9])
    assert json.loads(partial) == {"city": "Rome"}
    delta = events[-2].model_dump()
    assert delta["delta"]["stop_reason"] == "tool_use"
    assert delta["usage"] == {"output_tokens": 6, "input_tokens": 9}


def test_provider_side_chat_becomes_messages() -> None:
    chat = chat_request(MessagesRequest.model_validate(CONVERSATION))
    payload = messages_payload(chat, "anthropic", default_max_tokens=4096)
    assert payload["system"] == "Be brief.\n\nUse tools."
    assert [t["role"] for t in payload["messages"]] == ["user", "assistant", "user"]
    assistant = payload["messages"][1]["content"]
    assert assistant[-1] == {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}}
    follow_up = payload["messages"][2]["content"]  # the tool result and the next words merged in one user turn
    assert follow_up[0] == {"type": "tool_result", "tool_use_id": "toolu_1", "content": "18C"}
    assert follow_up[1] == {"type": "text", "text": "And tomorrow?"}
    assert payload["tool_choice"] == {"type": "any", "disable_parallel_tool_use": True}
    assert payload["tools"][0]["input_schema"] == WEATHER["input_schema"]
    assert (payload["max_tokens"], payload["stop_sequences"], payload["top_k"]) == (100, ["END"], 20)
    hot = ChatCompletionRequest.model_validate(
        {"model": "m", "messages": [{"role": "user", "content": "x"}], "temperature": 1.7}
    )
    hot_payload = messages_payload(hot, "anthropic", default_max_tokens=333)
    assert (hot_payload["temperature"], hot_payload["max_tokens"]) == (1.0, 333)


def test_provider_side_message_becomes_chat() -> None:
    message = Message.model_validate(
        {
            "id": "msg_1",
            "model": "claude",
            "content": [
                {"type": "text", "text": "It is"},
                {"type": "tool_use", "id": "toolu_2", "name": "f", "input": {"a": 1}},
            ],
            "stop_reason": "tool_use",
            "usage": {"input_tokens": 5, "output_tokens": 7, "cache_read_input_tokens": 3},
        }
    )
    completion = completion_from_message(message, 10)
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content == "It is"
    assert choice.message.tool_calls is not None and json.loads(choice.message.tool_calls[0].function.arguments) == {
        "a": 1
    }
    assert completion.usage is not None and (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (
        8,
        7,
    )
    stopped = completion_from_message(
        message.model_copy(update={"stop_reason": "stop_sequence", "stop_sequence": "##"}), 1
    )
    assert stopped.choices[0].finish_reason == "stop" and (stopped.choices[0].model_extra or {})["stop_reason"] == "##"
