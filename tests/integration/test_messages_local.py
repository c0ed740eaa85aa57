"""``/v1/messages`` end to end: the ``anthropic`` SDK against a real server running the embedded models.

SmolLM2 (fast) covers plain turns, streaming and stop sequences; Qwen2.5-Coder 0.5B covers tools, where
the call is grammar-constrained, so a forced ``tool_use`` block always matches its ``input_schema``.
The tests compare the server with itself (greedy decoding; a stop sequence cut from its own answer)
rather than with hard-coded text, so they hold for any model output. The SDK (1.13) has no
``temperature`` argument any more; it still reaches the server as a field of the body (``extra_body``).
"""

from __future__ import annotations

from collections.abc import Iterator

import anthropic
import httpx
import jsonschema
import pytest

from tests.integration.harness import QWEN, SMOLLM2, RunningServer, start_server

pytestmark = pytest.mark.slow

FAST = f"llama-cpp/{SMOLLM2}"
TOOLS_MODEL = f"llama-cpp/{QWEN}"
WEATHER = {
    "name": "get_weather",
    "description": "Current weather for a city",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["c", "f"]}},
        "required": ["city"],
    },
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    config = {
        "apis": ["inference", "models", "messages"],
        "providers": {
            "inference": [
                {
                    "provider_id": "llama-cpp",
                    "provider_type": "inline::llama-cpp",
                    "config": {
                        "models": [
                            {"name": QWEN, "packaged": QWEN, "n_ctx": 4096},
                            {"name": SMOLLM2, "packaged": SMOLLM2, "n_ctx": 2048},
                        ]
                    },
                }
            ]
        },
    }
    running = start_server(config, tmp_path_factory.mktemp("messages-local"), timeout=300)
    yield running
    running.stop()


def client(server: RunningServer, **kwargs: object) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=server.base_url, api_key="unused", max_retries=0, **kwargs)  # type: ignore[arg-type]


def test_multi_turn_with_system(server: RunningServer) -> None:
    reply = client(server).messages.create(
        model=FAST,
        max_tokens=24,
        extra_body={"temperature": 0},
        system="You answer in one short sentence.",
        messages=[
            {"role": "user", "content": "Name a colour."},
            {"role": "assistant", "content": "Blue."},
            {"role": "user", "content": "Name another one."},
        ],
    )
    assert reply.model == FAST and reply.id.startswith("msg_")
    assert reply.content and reply.content[0].type == "text" and reply.content[0].text.strip()
    assert reply.stop_reason in ("end_turn", "max_tokens")
    assert reply.usage.input_tokens > 10 and 0 < reply.usage.output_tokens <= 24


def test_stream_events_rebuild_the_answer(server: RunningServer) -> None:
    messages = [{"role": "user", "content": "Count from one to five."}]
    plain = client(server).messages.create(model=FAST, max_tokens=20, extra_body={"temperature": 0}, messages=messages)
    with client(server).messages.stream(
        model=FAST, max_tokens=20, extra_body={"temperature": 0}, messages=messages
    ) as stream:
        names = [event.type for event in stream]
        final = stream.get_final_message()
    assert names[0] == "message_start" and names[-1] == "message_stop"
    assert "content_block_start" in names and "content_block_stop" in names and "message_delta" in names
    assert final.content[0].text == plain.content[0].text  # type: ignore[union-attr]
    assert final.stop_reason == plain.stop_reason
    assert final.usage.output_tokens == plain.usage.output_tokens
    assert final.usage.input_tokens == plain.usage.input_tokens  # reported in message_delta


def test_stop_sequence_is_reported(server: RunningServer) -> None:
    messages = [{"role": "user", "content": "Write one sentence about the sea."}]
    full = client(server).messages.create(model=FAST, max_tokens=30, extra_body={"temperature": 0}, messages=messages)
    text = full.content[0].text  # type: ignore[union-attr]
    words = text.split()
    assert len(words) >= 4, text
    stop = words[len(words) // 2]
    cut = client(server).messages.create(
        model=FAST, max_tokens=30, extra_body={"temperature": 0}, messages=messages, stop_sequences=[stop]
    )
    assert cut.stop_reason == "stop_sequence" and cut.stop_sequence == stop
    assert cut.content[0].text == text[: text.index(stop)]  # type: ignore[union-attr]


def test_forced_tool_use_and_result_round_trip(server: RunningServer) -> None:
    messages: list[dict[str, object]] = [{"role": "user", "content": "What is the weather in Paris?"}]
    first = client(server).messages.create(
        model=TOOLS_MODEL, max_tokens=80, tools=[WEATHER], tool_choice={"type": "any"}, messages=messages
    )
    assert first.stop_reason == "tool_use"
    uses = [b for b in first.content if b.type == "tool_use"]
    assert len(uses) >= 1 and uses[0].name == "get_weather"
    jsonschema.validate(uses[0].input, WEATHER["input_schema"])
    messages += [
        {"role": "assistant", "content": [b.model_dump() for b in first.content]},
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": uses[0].id, "content": "Sunny, 24 C"}],
        },
    ]
    second = client(server).messages.create(model=TOOLS_MODEL, max_tokens=60, tools=[WEATHER], messages=messages)
    assert second.stop_reason in ("end_turn", "max_tokens")
    assert any(b.type == "text" and b.text.strip() for b in second.content)


def test_streamed_tool_use_by_name(server: RunningServer) -> None:
    with client(server).messages.stream(
        model=TOOLS_MODEL,
        max_tokens=80,
        tools=[WEATHER],
        tool_choice={"type": "tool", "name": "get_weather"},
        messages=[{"role": "user", "content": "Weather in Oslo in fahrenheit?"}],
    ) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_message()
    assert "content_block_delta" in kinds
    use = next(b for b in final.content if b.type == "tool_use")
    jsonschema.validate(use.input, WEATHER["input_schema"])  # rebuilt by the SDK from input_json_delta events
    assert final.stop_reason == "tool_use"


def test_count_tokens(server: RunningServer) -> None:
    messages = [{"role": "user", "content": "Hello there, how are you today?"}]
    bare = client(server).messages.count_tokens(model=TOOLS_MODEL, messages=messages)
    with_tools = client(server).messages.count_tokens(model=TOOLS_MODEL, messages=messages, tools=[WEATHER])
    reply = client(server).messages.create(model=TOOLS_MODEL, max_tokens=1, messages=messages)
    assert bare.input_tokens == reply.usage.input_tokens  # what the model reads when answering
    assert with_tools.input_tokens > bare.input_tokens  # the tool definitions are in the prompt


def test_errors(server: RunningServer) -> None:
    with pytest.raises(anthropic.NotFoundError) as missing:
        client(server).messages.create(
            model="llama-cpp/no-such-model", max_tokens=5, messages=[{"role": "user", "content": "x"}]
        )
    assert missing.value.body["error"]["type"] == "not_found_error"  # type: ignore[index]
    with pytest.raises(anthropic.BadRequestError) as version:
        client(server, default_headers={"anthropic-version": "2020-02-02"}).messages.create(
            model=FAST, max_tokens=5, messages=[{"role": "user", "content": "x"}]
        )
    assert "anthropic-version" in version.value.message
    response = httpx.post(f"{server.v1}/messages", json={"model": FAST, "messages": [{"role": "user", "content": "x"}]})
    assert response.status_code == 400
    assert response.json() == {
        "type": "error",
        "error": {"type": "invalid_request_error", "message": "Missing required parameter: 'max_tokens'."},
    }
