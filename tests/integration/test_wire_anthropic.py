"""``remote::anthropic`` against a STAND-IN of Anthropic's Messages API (``wire_anthropic.py``), and the real one.

A real ``underlay run`` serves the stand-in's models. Through both front doors:

- ``/v1/chat/completions`` (the ``openai`` SDK): the request is translated to Messages (checked in
  what the stand-in received: ``x-api-key``, ``anthropic-version``, ``system``, ``max_tokens``, tools),
  and the answer back (text, tool calls, finish reasons, usage), streaming and not;
- ``/v1/messages`` (the ``anthropic`` SDK): the request reaches Anthropic as the client sent it, only
  the model renamed, with fields chat could not carry (a document block) intact.

Faults: Anthropic's 429 becomes 429 with ``Retry-After``, its 401 a 502 naming the provider (never the
key), its 529 a 503 (529 ``overloaded_error`` on the Messages door), and a stream cut mid-way the error
event of the door the client used.

``test_real_anthropic`` runs against api.anthropic.com when ``ANTHROPIC_API_KEY`` is set.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest

from tests.integration.harness import RunningServer, start_server
from tests.integration.wire_anthropic import CUT_MODEL, KEY, MODEL, anthropic_standin
from tests.integration.wire_standins import Failure, StandIn

CLIENT_MODEL = f"anthropic/{MODEL}"
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


def _config(standin: StandIn, key: str = KEY) -> dict[str, Any]:
    return {
        "apis": ["inference", "models", "messages"],
        "providers": {
            "inference": [
                {
                    "provider_id": "anthropic",
                    "provider_type": "remote::anthropic",
                    "config": {"base_url": f"{standin.root}/v1", "api_key": key, "max_retries": 0},
                }
            ]
        },
    }


@pytest.fixture(scope="module")
def standin() -> Iterator[StandIn]:
    server = anthropic_standin()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def server(standin: StandIn, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    running = start_server(_config(standin), tmp_path_factory.mktemp("anthropic"))
    yield running
    running.stop()


def messages_sdk(server: RunningServer) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=server.base_url, api_key="unused", max_retries=0)


def test_models_are_listed(server: RunningServer) -> None:
    ids = {m.id for m in server.openai().models.list().data}
    assert {CLIENT_MODEL, f"anthropic/{CUT_MODEL}"} <= ids


def test_chat_is_translated_to_messages(server: RunningServer, standin: StandIn) -> None:
    before = len(standin.requests_to("/v1/messages"))
    reply = server.openai().chat.completions.create(
        model=CLIENT_MODEL,
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hello there"}],
        stop=["there"],
    )
    sent = standin.requests_to("/v1/messages")[before]
    assert sent.headers["x-api-key"] == KEY and "authorization" not in sent.headers
    assert sent.headers["anthropic-version"] == "2023-06-01"
    assert sent.body["model"] == MODEL and sent.body["system"] == "Be brief."
    assert sent.body["max_tokens"] == 4096  # Anthropic needs one; the provider's default
    assert sent.body["messages"] == [{"role": "user", "content": [{"type": "text", "text": "hello there"}]}]
    choice = reply.choices[0]
    assert choice.message.content == "stand-in says: hello "
    assert choice.finish_reason == "stop"
    assert reply.usage is not None and reply.usage.prompt_tokens == 4  # the stand-in counts words


def test_chat_tools_streaming(server: RunningServer, standin: StandIn) -> None:
    stream = server.openai().chat.completions.create(
        model=CLIENT_MODEL,
        messages=[{"role": "user", "content": "What is the weather in Paris?"}],
        tools=[WEATHER],
        tool_choice="required",
        stream=True,
        stream_options={"include_usage": True},
    )
    calls: dict[int, dict[str, str]] = {}
    finish, usage = None, None
    for chunk in stream:
        usage = chunk.usage or usage
        for choice in chunk.choices:
            for call in choice.delta.tool_calls or []:
                slot = calls.setdefault(call.index, {"id": "", "name": "", "arguments": ""})
                slot["id"] += call.id or ""
                slot["name"] += (call.function.name or "") if call.function else ""
                slot["arguments"] += (call.function.arguments or "") if call.function else ""
            finish = choice.finish_reason or finish
    assert finish == "tool_calls"
    assert calls == {0: {"id": "toolu_standin01", "name": "get_weather", "arguments": '{"city": "Paris"}'}}
    assert usage is not None and usage.completion_tokens > 0
    sent = standin.requests_to("/v1/messages")[-1].body
    assert sent["tool_choice"] == {"type": "any"}
    assert sent["tools"][0]["input_schema"] == WEATHER["function"]["parameters"]


def test_messages_pass_through_natively(server: RunningServer, standin: StandIn) -> None:
    document = {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "A memo."}}
    reply = messages_sdk(server).messages.create(
        model=CLIENT_MODEL,
        max_tokens=50,
        messages=[{"role": "user", "content": [document, {"type": "text", "text": "summarize the memo"}]}],
        stop_sequences=["memo"],
        extra_body={"service_tier": "auto"},
    )
    sent = standin.requests_to("/v1/messages")[-1].body
    assert sent["model"] == MODEL  # renamed to the provider's name, nothing else changed
    assert sent["messages"][0]["content"][0] == document
    assert sent["service_tier"] == "auto" and sent["stop_sequences"] == ["memo"]
    assert reply.model == CLIENT_MODEL
    assert reply.stop_reason == "stop_sequence" and reply.stop_sequence == "memo"
    assert reply.content[0].text == "stand-in says: summarize the "


def test_messages_stream_natively(server: RunningServer) -> None:
    client = messages_sdk(server)
    with client.messages.stream(
        model=CLIENT_MODEL,
        max_tokens=50,
        tools=[{"name": "get_weather", "input_schema": WEATHER["function"]["parameters"]}],
        messages=[{"role": "user", "content": "weather in Paris please"}],
    ) as stream:
        final = stream.get_final_message()
    assert final.model == CLIENT_MODEL and final.stop_reason == "tool_use"
    assert [(b.type, b.input) for b in final.content] == [("tool_use", {"city": "Paris"})]  # type: ignore[union-attr]
    count = client.messages.count_tokens(
        model=CLIENT_MODEL, messages=[{"role": "user", "content": "three small words"}]
    )
    assert count.input_tokens == 3


def test_throttling_is_429_with_retry_after(server: RunningServer, standin: StandIn) -> None:
    throttled = Failure(
        429, {"type": "error", "error": {"type": "rate_limit_error", "message": "slow down"}}, {"retry-after": "7"}
    )
    standin.fail("/v1/messages", throttled, throttled)
    with pytest.raises(openai.RateLimitError) as chat:
        server.openai().chat.completions.create(model=CLIENT_MODEL, messages=[{"role": "user", "content": "x"}])
    assert chat.value.response.headers["retry-after"] == "7"
    with pytest.raises(anthropic.RateLimitError) as native:
        messages_sdk(server).messages.create(
            model=CLIENT_MODEL, max_tokens=5, messages=[{"role": "user", "content": "x"}]
        )
    assert native.value.response.headers["retry-after"] == "7"
    assert native.value.body["error"]["type"] == "rate_limit_error"  # type: ignore[index]


def test_overloaded_is_503_or_529(server: RunningServer, standin: StandIn) -> None:
    overloaded = Failure(529, {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})
    standin.fail("/v1/messages", overloaded, overloaded)
    with pytest.raises(openai.InternalServerError) as chat:
        server.openai().chat.completions.create(model=CLIENT_MODEL, messages=[{"role": "user", "content": "x"}])
    assert chat.value.status_code == 503 and "anthropic" in chat.value.message
    with pytest.raises(anthropic.APIStatusError) as native:
        messages_sdk(server).messages.create(
            model=CLIENT_MODEL, max_tokens=5, messages=[{"role": "user", "content": "x"}]
        )
    assert native.value.status_code == 529
    assert native.value.body["error"]["type"] == "overloaded_error"  # type: ignore[index]


def test_refused_key_is_502_naming_the_provider(standin: StandIn, tmp_path: Path) -> None:
    wrong = "sk-ant-wrong-key-4471"
    config = _config(standin, key=wrong)  # discovery fails with this key: the model is registered by hand
    config["models"] = [{"model_id": CLIENT_MODEL, "provider_id": "anthropic", "provider_model_id": MODEL}]
    running = start_server(config, tmp_path)
    try:
        with pytest.raises(openai.APIStatusError) as chat:
            running.openai().chat.completions.create(model=CLIENT_MODEL, messages=[{"role": "user", "content": "x"}])
        assert chat.value.status_code == 502
        assert "anthropic" in chat.value.message and wrong not in chat.value.message
        response = httpx.post(
            f"{running.v1}/messages",
            json={"model": CLIENT_MODEL, "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]},
        )
        assert response.status_code == 502
        body = response.json()
        assert body["error"]["type"] == "api_error" and "anthropic" in body["error"]["message"]
        assert wrong not in response.text and wrong not in running.log()
    finally:
        running.stop()


def test_stream_cut_is_an_error_event_on_either_door(server: RunningServer) -> None:
    cut_model = f"anthropic/{CUT_MODEL}"
    with httpx.stream(
        "POST",
        f"{server.v1}/messages",
        json={
            "model": cut_model,
            "max_tokens": 50,
            "stream": True,
            "messages": [{"role": "user", "content": "a b c d"}],
        },
        timeout=30,
    ) as response:
        frames = response.read().decode().strip().split("\n\n")
    assert frames[0].startswith("event: message_start")
    assert frames[-1].startswith("event: error\n")
    error = json.loads(frames[-1].split("data: ", 1)[1])
    assert error["type"] == "error" and "anthropic" in error["error"]["message"]
    with pytest.raises(openai.APIError) as chat:
        for _ in server.openai().chat.completions.create(
            model=cut_model, messages=[{"role": "user", "content": "a b c d"}], stream=True
        ):
            pass
    assert "anthropic" in str(chat.value)


@pytest.mark.skipif(
    not os.environ.get("ANTHROPIC_API_KEY"),
    reason="needs ANTHROPIC_API_KEY: this test calls the real api.anthropic.com (ANTHROPIC_TEST_MODEL picks the model)",
)
def test_real_anthropic(tmp_path: Path) -> None:
    model = os.environ.get("ANTHROPIC_TEST_MODEL", "claude-3-5-haiku-latest")
    config = {
        "apis": ["inference", "models", "messages"],
        "providers": {"inference": [{"provider_id": "anthropic", "provider_type": "remote::anthropic", "config": {}}]},
    }
    running = start_server(config, tmp_path, env={"ANTHROPIC_API_KEY": os.environ["ANTHROPIC_API_KEY"]})
    try:
        chat = running.openai().chat.completions.create(
            model=f"anthropic/{model}", messages=[{"role": "user", "content": "Say OK."}], max_tokens=10
        )
        assert chat.choices[0].message.content and chat.usage is not None and chat.usage.prompt_tokens > 0
        client = messages_sdk(running)
        with client.messages.stream(
            model=f"anthropic/{model}", max_tokens=10, messages=[{"role": "user", "content": "Say OK."}]
        ) as stream:
            final = stream.get_final_message()
        assert final.content and final.stop_reason in ("end_turn", "max_tokens")
    finally:
        running.stop()
