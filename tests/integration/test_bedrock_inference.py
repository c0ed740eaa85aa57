"""``remote::bedrock`` inference through a real ``underlay run``, driven by the ``openai`` SDK.

Bedrock cannot be reached from here, so the provider points at the loopback STAND-IN of
``wire_bedrock.py`` (Converse, ConverseStream with binary event-stream frames, InvokeModel; SigV4 checked
on every request). The tests assert both sides: what Underlay sent Bedrock (Converse's shapes: system
blocks, inferenceConfig, toolConfig, toolUse/toolResult turns) and what the OpenAI client received
(content, tool calls, finish reasons, usage, embeddings), and how each failure reaches the client:
throttling 429 with Retry-After, refused credentials 502 naming the provider and no key, validation 400,
a model not ready 503, and a stream cut or failing mid-way an error event in the chat stream.

``test_real_bedrock`` runs against the real service when AWS credentials and a model id are in the
environment, and is skipped otherwise with a reason saying so.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import struct
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from tests.integration.harness import RunningServer, free_port, start_server
from tests.integration.wire_bedrock import (
    ACCESS_KEY,
    CHAT_MODEL,
    COHERE,
    CUT,
    MODELS,
    NOT_READY,
    REGION,
    SECRET_KEY,
    STREAM_ERROR,
    THROTTLED,
    TITAN,
    BedrockStandIn,
)
from underlay.api.errors import UpstreamError
from underlay.api.inference import ChatCompletion, ChatCompletionRequest, EmbeddingsRequest
from underlay.providers.remote.inference.bedrock.provider import BedrockInferenceProvider, Config

WRONG_KEY, WRONG_SECRET = "AKIDNOTKNOWN00000000", "wrong-secret-never-shown"
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


@pytest.fixture(scope="module")
def bedrock() -> Iterator[BedrockStandIn]:
    stand_in = BedrockStandIn().start()
    yield stand_in
    stand_in.stop()
    assert stand_in.signature_errors == []


def _provider(provider_id: str, url: str, key: str, secret: str, models: tuple[str, ...]) -> dict[str, object]:
    return {
        "provider_id": provider_id,
        "provider_type": "remote::bedrock",
        "config": {
            "endpoint_url": url,
            "region": REGION,
            "access_key_id": key,
            "secret_access_key": secret,
            "max_attempts": 1,
            "read_timeout": 10,
            "throttle_retry_after": 7,
            "models": [{"model_id": m} for m in models],
        },
    }


@pytest.fixture(scope="module")
def server(bedrock: BedrockStandIn, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    config = {
        "apis": ["inference", "models", "conversations", "responses", "messages"],
        "providers": {
            "inference": [
                _provider("bedrock", bedrock.root, ACCESS_KEY, SECRET_KEY, MODELS),
                _provider("bedrock-badkey", bedrock.root, WRONG_KEY, WRONG_SECRET, (CHAT_MODEL,)),
            ],
            "responses": [{"provider_id": "builtin", "provider_type": "inline::builtin", "config": {}}],
        },
    }
    running = start_server(config, tmp_path_factory.mktemp("bedrock"))
    yield running
    running.stop()


def _client(server: RunningServer) -> openai.OpenAI:
    return server.openai()  # no retries: each failure reaches the test as sent


def _last_sent(bedrock: BedrockStandIn, suffix: str) -> dict[str, object]:
    body = [s for s in bedrock.seen if s.path.endswith(suffix)][-1].body
    assert isinstance(body, dict)
    return body


def test_models_are_listed_with_their_types(server: RunningServer) -> None:
    listed = {m.id for m in _client(server).models.list().data}
    assert {f"bedrock/{CHAT_MODEL}", f"bedrock/{TITAN}", f"bedrock/{COHERE}", f"bedrock-badkey/{CHAT_MODEL}"} <= listed


def test_chat_maps_system_inference_config_and_usage(server: RunningServer, bedrock: BedrockStandIn) -> None:
    completion = _client(server).chat.completions.create(
        model=f"bedrock/{CHAT_MODEL}",
        messages=[
            {"role": "system", "content": "Be terse."},
            {"role": "user", "content": "hello from the test"},
        ],
        max_tokens=50,
        temperature=0.3,
        top_p=0.9,
    )
    sent = _last_sent(bedrock, "/converse")
    assert sent["system"] == [{"text": "Be terse."}]
    assert sent["messages"] == [{"role": "user", "content": [{"text": "hello from the test"}]}]
    assert sent["inferenceConfig"] == {"maxTokens": 50, "temperature": 0.3, "topP": 0.9}
    assert completion.model == f"bedrock/{CHAT_MODEL}"
    assert completion.choices[0].message.content == "Echo: hello from the test"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (6, 5)
    assert completion.usage.total_tokens == 11


def test_stop_sequences_and_max_tokens_map_to_finish_reasons(server: RunningServer, bedrock: BedrockStandIn) -> None:
    client = _client(server)
    stopped = client.chat.completions.create(
        model=f"bedrock/{CHAT_MODEL}", messages=[{"role": "user", "content": "one two STOP three"}], stop=["STOP"]
    )
    assert _last_sent(bedrock, "/converse")["inferenceConfig"] == {"stopSequences": ["STOP"]}
    assert stopped.choices[0].message.content == "Echo: one two "
    assert stopped.choices[0].finish_reason == "stop"
    cut = client.chat.completions.create(
        model=f"bedrock/{CHAT_MODEL}", messages=[{"role": "user", "content": "a b c d e"}], max_completion_tokens=2
    )
    assert cut.choices[0].message.content == "Echo: a"
    assert cut.choices[0].finish_reason == "length"


def test_streaming_decodes_event_stream_frames(server: RunningServer) -> None:
    stream = _client(server).chat.completions.create(
        model=f"bedrock/{CHAT_MODEL}",
        messages=[{"role": "user", "content": "stream these words please"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Echo: stream these words please"
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["stop"]
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 5


def test_tool_round_trip(server: RunningServer, bedrock: BedrockStandIn) -> None:
    client = _client(server)
    messages: list[dict[str, object]] = [{"role": "user", "content": "Paris"}]
    first = client.chat.completions.create(
        model=f"bedrock/{CHAT_MODEL}",
        messages=messages,
        tools=[WEATHER_TOOL],
        tool_choice="required",  # type: ignore[list-item]
    )
    sent = _last_sent(bedrock, "/converse")
    assert sent["toolConfig"] == {
        "tools": [
            {
                "toolSpec": {
                    "name": "get_weather",
                    "description": "Current weather for a city.",
                    "inputSchema": {"json": WEATHER_TOOL["function"]["parameters"]},  # type: ignore[index]
                }
            }
        ],
        "toolChoice": {"any": {}},
    }
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content == "Let me check."
    call = choice.message.tool_calls[0]  # type: ignore[index]
    assert call.function.name == "get_weather" and call.function.arguments == '{"city": "Paris"}'
    messages += [
        choice.message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "18 C and sunny"},
    ]
    second = client.chat.completions.create(model=f"bedrock/{CHAT_MODEL}", messages=messages, tools=[WEATHER_TOOL])  # type: ignore[arg-type,list-item]
    sent = _last_sent(bedrock, "/converse")
    assert sent["messages"][1] == {  # type: ignore[index]
        "role": "assistant",
        "content": [
            {"text": "Let me check."},
            {"toolUse": {"toolUseId": call.id, "name": "get_weather", "input": {"city": "Paris"}}},
        ],
    }
    assert sent["messages"][2] == {  # type: ignore[index]
        "role": "user",
        "content": [{"toolResult": {"toolUseId": call.id, "content": [{"text": "18 C and sunny"}]}}],
    }
    assert "toolChoice" not in sent["toolConfig"]  # type: ignore[operator]  # no tool_choice: Bedrock's default
    assert second.choices[0].message.content == "The tool said: 18 C and sunny"
    assert second.choices[0].finish_reason == "stop"


def test_streamed_tool_call_arguments_are_assembled(server: RunningServer, bedrock: BedrockStandIn) -> None:
    stream = _client(server).chat.completions.create(
        model=f"bedrock/{CHAT_MODEL}",
        messages=[{"role": "user", "content": "Oslo"}],
        tools=[WEATHER_TOOL],  # type: ignore[list-item]
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        stream=True,
    )
    chunks = list(stream)
    assert _last_sent(bedrock, "/converse-stream")["toolConfig"]["toolChoice"] == {"tool": {"name": "get_weather"}}  # type: ignore[index]
    deltas = [d for c in chunks if c.choices for d in c.choices[0].delta.tool_calls or []]
    assert deltas[0].id and deltas[0].function.name == "get_weather"  # type: ignore[union-attr]
    assert {d.index for d in deltas} == {0}
    assert "".join(d.function.arguments or "" for d in deltas) == '{"city": "Oslo"}'  # type: ignore[union-attr]
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def _floats(packed: str | list[float]) -> list[float]:
    if isinstance(packed, list):
        return packed
    raw = base64.b64decode(packed)
    return list(struct.unpack(f"<{len(raw) // 4}f", raw))


def test_titan_and_cohere_embeddings(server: RunningServer, bedrock: BedrockStandIn) -> None:
    client = _client(server)
    titan = client.embeddings.create(model=f"bedrock/{TITAN}", input=["first text", "second one here"], dimensions=256)
    titan_calls = [s.body for s in bedrock.seen if s.path == f"/model/{TITAN}/invoke"]
    assert sorted(b["inputText"] for b in titan_calls[-2:]) == ["first text", "second one here"]  # type: ignore[index]
    assert all(b["dimensions"] == 256 for b in titan_calls[-2:])  # type: ignore[index]
    assert [len(_floats(d.embedding)) for d in titan.data] == [256, 256]  # type: ignore[arg-type]
    assert [d.index for d in titan.data] == [0, 1]
    assert titan.usage.prompt_tokens == 5
    cohere = client.embeddings.create(model=f"bedrock/{COHERE}", input="just one", encoding_format="float")
    sent = _last_sent(bedrock, f"/model/{COHERE}/invoke")
    assert sent == {"texts": ["just one"], "input_type": "search_document", "embedding_types": ["float"]}
    assert len(cohere.data[0].embedding) == 1024 and cohere.usage.prompt_tokens == 2


def test_throttling_is_429_with_retry_after(server: RunningServer) -> None:
    with pytest.raises(openai.RateLimitError) as caught:
        _client(server).chat.completions.create(
            model=f"bedrock/{THROTTLED}", messages=[{"role": "user", "content": "hi"}]
        )
    assert caught.value.response.headers["retry-after"] == "7"
    assert "bedrock" in caught.value.message and "ThrottlingException" in caught.value.message


def test_refused_credentials_are_502_naming_the_provider_not_the_key(server: RunningServer) -> None:
    with pytest.raises(openai.APIStatusError) as caught:
        _client(server).chat.completions.create(
            model=f"bedrock-badkey/{CHAT_MODEL}", messages=[{"role": "user", "content": "hi"}]
        )
    error = caught.value
    assert error.status_code == 502
    assert "Provider 'bedrock-badkey'" in error.message and "UnrecognizedClientException" in error.message
    text = error.response.text
    assert WRONG_KEY not in text and WRONG_SECRET not in text


def test_validation_and_not_ready_and_unsupported_options(server: RunningServer) -> None:
    client = _client(server)
    with pytest.raises(openai.BadRequestError) as invalid:
        client.chat.completions.create(
            model=f"bedrock/{CHAT_MODEL}", messages=[{"role": "assistant", "content": "I speak first"}]
        )
    assert "ValidationException" in invalid.value.message and "alternate" in invalid.value.message
    with pytest.raises(openai.BadRequestError) as several:
        client.chat.completions.create(model=f"bedrock/{CHAT_MODEL}", messages=[{"role": "user", "content": "x"}], n=2)
    assert several.value.body["param"] == "n"  # type: ignore[index]
    with pytest.raises(openai.InternalServerError) as not_ready:
        client.chat.completions.create(model=f"bedrock/{NOT_READY}", messages=[{"role": "user", "content": "x"}])
    assert not_ready.value.status_code == 503 and "ModelNotReadyException" in not_ready.value.message
    with pytest.raises(openai.BadRequestError) as tokens:
        client.embeddings.create(model=f"bedrock/{TITAN}", input=[[1, 2, 3]])
    assert tokens.value.body["param"] == "input"  # type: ignore[index]


@pytest.mark.parametrize(("model", "expected"), [(CUT, "broke off the stream"), (STREAM_ERROR, "modelStreamError")])
def test_stream_failure_mid_way_is_an_error_event(server: RunningServer, model: str, expected: str) -> None:
    stream = _client(server).chat.completions.create(
        model=f"bedrock/{model}", messages=[{"role": "user", "content": "tell me a long story"}], stream=True
    )
    received: list[str] = []
    with pytest.raises(openai.APIError) as caught:
        for chunk in stream:
            received.append(chunk.choices[0].delta.content or "")
    assert "Echo:" in "".join(received)  # the first events arrived before the failure
    assert "bedrock" in caught.value.message and expected.lower() in caught.value.message.lower()


def _sse_events(server: RunningServer, path: str, body: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(event name, data) of each server-sent event of a streamed POST, read raw."""
    events: list[tuple[str, dict[str, Any]]] = []
    with httpx.stream("POST", f"{server.v1}/{path}", json=body, timeout=30) as response:
        assert response.status_code == 200
        name = ""
        for line in response.iter_lines():
            if line.startswith("event:"):
                name = line.partition(":")[2].strip()
            elif line.startswith("data:") and line != "data: [DONE]":
                events.append((name, json.loads(line.partition(":")[2])))
                name = ""
    return events


def test_stream_cut_is_the_error_event_of_the_responses_front_door(server: RunningServer) -> None:
    body = {"model": f"bedrock/{CUT}", "input": "tell me a story", "stream": True}
    events = _sse_events(server, "responses", body)
    kinds = [data.get("type") for _, data in events]
    assert "response.output_text.delta" in kinds  # the first words arrived before the cut
    assert kinds[-1] in ("response.failed", "error")
    assert "bedrock" in json.dumps(events[-1][1])


def test_stream_cut_is_the_error_event_of_the_messages_front_door(server: RunningServer) -> None:
    body = {
        "model": f"bedrock/{CUT}",
        "max_tokens": 50,
        "messages": [{"role": "user", "content": "tell me a story"}],
        "stream": True,
    }
    events = _sse_events(server, "messages", body)
    assert events[0][0] == "message_start"
    assert events[-1][0] == "error" and events[-1][1]["type"] == "error"
    assert "bedrock" in events[-1][1]["error"]["message"]


# -- the provider on its own: signing, discovery, moto -------------------------------------------------


def _direct(url: str, **overrides: Any) -> BedrockInferenceProvider:
    config = {
        "endpoint_url": url,
        "region": REGION,
        "access_key_id": ACCESS_KEY,
        "secret_access_key": SECRET_KEY,
        "max_attempts": 1,
        "read_timeout": 10,
        **overrides,
    }
    return BedrockInferenceProvider("bedrock", Config.model_validate(config))


def _chat_request(model: str) -> ChatCompletionRequest:
    return ChatCompletionRequest.model_validate({"model": model, "messages": [{"role": "user", "content": "hi"}]})


async def test_a_bad_signature_is_refused_as_502_without_the_secret(bedrock: BedrockStandIn) -> None:
    provider = _direct(bedrock.root, secret_access_key="not-the-right-secret")
    await provider.initialize()
    try:
        with pytest.raises(UpstreamError) as caught:
            await provider.openai_chat_completion(_chat_request(CHAT_MODEL))
    finally:
        await provider.shutdown()
    assert caught.value.status_code == 502 and caught.value.code == "upstream_auth_failed"
    assert "InvalidSignatureException" in caught.value.message and "not-the-right-secret" not in caught.value.message
    assert len(bedrock.signature_errors) == 1  # the stand-in saw the mismatch, as AWS would
    bedrock.signature_errors.clear()


async def test_discover_models_lists_the_regions_on_demand_text_and_embedding_models(bedrock: BedrockStandIn) -> None:
    provider = _direct(
        bedrock.root, models=[{"model_id": CHAT_MODEL}], discover_models=True, control_endpoint_url=bedrock.root
    )
    await provider.initialize()
    try:
        listed = {m.provider_resource_id: m.model_type for m in await provider.list_provider_models()}
    finally:
        await provider.shutdown()
    assert listed == {CHAT_MODEL: "llm", "amazon.nova-lite-v1:0": "llm", TITAN: "embedding"}
    assert [s.query for s in bedrock.seen if s.path == "/foundation-models"][-1] == {"byInferenceType": "ON_DEMAND"}


async def test_moto_invoke_model_empty_answer_is_a_malformed_upstream() -> None:
    """moto 5.2.5 serves bedrock-runtime's InvokeModel (only that) and answers ``{}``: the request is
    accepted as sent (path, signing, body), and an answer without a vector is named, not crashed on."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    moto.start()
    # moto loads its backend on the first request, which takes seconds on a busy machine: a patient timeout.
    provider = _direct(f"http://127.0.0.1:{port}", region="us-east-1", read_timeout=90)
    await provider.initialize()
    try:
        with pytest.raises(UpstreamError) as caught:
            await provider.openai_embeddings(EmbeddingsRequest(model=TITAN, input="hello"))
    finally:
        await provider.shutdown()
        moto.stop()
    assert caught.value.code == "malformed_upstream_response"
    assert f"no 'embedding' list of numbers for model '{TITAN}'" in caught.value.message


@pytest.mark.skipif(
    not (os.environ.get("UNDERLAY_TEST_BEDROCK_MODEL") and os.environ.get("AWS_ACCESS_KEY_ID")),
    reason="real Bedrock needs AWS credentials (AWS_ACCESS_KEY_ID, ...) and UNDERLAY_TEST_BEDROCK_MODEL in the "
    "environment; none are set, so only the stand-in was tested",
)
def test_real_bedrock() -> None:
    model = os.environ["UNDERLAY_TEST_BEDROCK_MODEL"]

    async def run() -> None:
        provider = BedrockInferenceProvider("bedrock", Config(models=[{"model_id": model}]))  # type: ignore[list-item]
        await provider.initialize()
        try:
            request = ChatCompletionRequest.model_validate(
                {"model": model, "messages": [{"role": "user", "content": "Say OK."}], "max_tokens": 10}
            )
            answer = await provider.openai_chat_completion(request)
            assert isinstance(answer, ChatCompletion) and answer.choices[0].message.content
            assert answer.usage is not None and answer.usage.completion_tokens > 0
        finally:
            await provider.shutdown()

    asyncio.run(run())
