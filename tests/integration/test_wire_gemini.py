"""``remote::gemini`` through a real ``underlay run``, driven by the ``openai`` SDK, against a STAND-IN.

Google's API cannot be reached from here, so the provider points at ``wire_gemini.py``, a loopback
stand-in speaking the Generative Language API's documented wire format. Each test checks both ends:
what the adapter sent Google (paths, ``x-goog-api-key``, the translated body) and what the OpenAI
client got back (text, tool calls, finish reasons, usage, errors with their status and headers).

``test_real_gemini_service`` runs the same calls against Google itself when ``GEMINI_API_KEY`` is set.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from tests.integration.harness import RunningServer, start_server
from tests.integration.wire_gemini import (
    CHAT_MODEL,
    CUT_NOW,
    EMBED_MODEL,
    GEMINI_KEY,
    SIGNATURE,
    VECTOR,
    gemini_standin,
    retry_info,
    status_body,
)
from tests.integration.wire_standins import Failure, StandIn

CHAT = f"gemini/{CHAT_MODEL}"
GENERATE = f"/v1beta/models/{CHAT_MODEL}:generateContent"
STREAM = f"/v1beta/models/{CHAT_MODEL}:streamGenerateContent"
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city.",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "description": "City name"},
                "unit": {"anyOf": [{"type": "string", "enum": ["c", "f"]}, {"type": "null"}]},
            },
            "required": ["city"],
            "additionalProperties": False,
        },
    },
}


@pytest.fixture(scope="module")
def standin() -> Iterator[StandIn]:
    running = gemini_standin()
    yield running
    running.stop()


@pytest.fixture(scope="module")
def server(standin: StandIn, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    quick = {"max_retries": 1, "backoff": 0.01, "timeout": {"connect": 2, "read": 5}}
    base_url = f"{standin.root}/v1beta"
    config = {
        "apis": ["inference", "models"],
        "providers": {
            "inference": [
                {
                    "provider_id": "gemini",
                    "provider_type": "remote::gemini",
                    "config": {"base_url": base_url, **quick},  # the key comes from GEMINI_API_KEY
                },
                {
                    "provider_id": "gemini-stale",
                    "provider_type": "remote::gemini",
                    "config": {"base_url": base_url, "api_key": "AIza-revoked-key-0000", **quick},
                },
            ]
        },
        # The stale key cannot list models, so its model is registered by hand.
        "models": [{"model_id": "stale-flash", "provider_id": "gemini-stale", "provider_model_id": CHAT_MODEL}],
    }
    running = start_server(config, tmp_path_factory.mktemp("gemini"), env={"GEMINI_API_KEY": GEMINI_KEY})
    yield running
    running.stop()


def _error(exc: openai.APIStatusError) -> dict[str, Any]:
    body = exc.body if isinstance(exc.body, dict) else {}
    return body.get("error", body)


def test_models_are_listed_across_pages(server: RunningServer, standin: StandIn) -> None:
    models = {m.id: m.model_dump() for m in server.openai().models.list().data}
    assert CHAT in models and f"gemini/{EMBED_MODEL}" in models
    assert "gemini/imagen-4.0-generate-001" not in models  # it can neither chat nor embed
    assert models[f"gemini/{EMBED_MODEL}"]["model_type"] == "embedding"
    assert models[CHAT]["model_type"] == "llm" and "1048576" in str(models[CHAT])  # inputTokenLimit
    listing = [s for s in standin.requests_to("/v1beta/models") if s.headers.get("x-goog-api-key") == GEMINI_KEY]
    assert {s.query.get("pageToken") for s in listing} >= {None, "page-2"}
    assert not any("authorization" in s.headers for s in standin.seen)  # the key travels in x-goog-api-key only


def test_chat_translates_both_ways(server: RunningServer, standin: StandIn) -> None:
    reply = server.openai().chat.completions.create(
        model=CHAT,
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "first"},
            {"role": "assistant", "content": "ok"},
            {"role": "user", "content": "hello gemini"},
        ],
        temperature=0.3,
        top_p=0.9,
        max_tokens=50,
        stop=["END"],
        response_format={"type": "json_object"},
        extra_body={"top_k": 20},
    )
    assert reply.choices[0].message.content == "gemini heard: hello gemini"
    assert reply.choices[0].finish_reason == "stop" and reply.model == CHAT
    assert reply.id == "chatcmpl-resp-standin-1"
    assert reply.usage is not None
    # Thinking tokens count as completion tokens, as OpenAI counts reasoning tokens.
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens, reply.usage.total_tokens) == (11, 6, 17)
    assert reply.usage.completion_tokens_details is not None
    assert reply.usage.completion_tokens_details.reasoning_tokens == 2
    sent = standin.requests_to(GENERATE)[-1]
    assert sent.headers["x-goog-api-key"] == GEMINI_KEY
    assert sent.body["systemInstruction"] == {"parts": [{"text": "Be brief."}]}
    assert sent.body["contents"] == [
        {"role": "user", "parts": [{"text": "first"}]},
        {"role": "model", "parts": [{"text": "ok"}]},
        {"role": "user", "parts": [{"text": "hello gemini"}]},
    ]
    assert sent.body["generationConfig"] == {
        "temperature": 0.3,
        "topP": 0.9,
        "topK": 20,
        "maxOutputTokens": 50,
        "stopSequences": ["END"],
        "responseMimeType": "application/json",
    }


def test_finish_reasons_length_and_content_filter(server: RunningServer) -> None:
    client = server.openai()
    short = client.chat.completions.create(model=CHAT, messages=[{"role": "user", "content": "hi"}], max_tokens=1)
    assert short.choices[0].finish_reason == "length" and short.choices[0].message.content == "gemini"
    blocked = client.chat.completions.create(model=CHAT, messages=[{"role": "user", "content": "something unsafe"}])
    assert blocked.choices[0].finish_reason == "content_filter"


def test_streaming_with_usage(server: RunningServer, standin: StandIn) -> None:
    stream = server.openai().chat.completions.create(
        model=CHAT,
        messages=[{"role": "user", "content": "stream this please"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "gemini heard: stream this please"
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert (
        chunks[-1].usage.prompt_tokens == 11 and chunks[-1].usage.completion_tokens == 5 + 2
    )  # the last event's: 5 words, 2 thinking
    sent = standin.requests_to(STREAM)[-1]
    assert sent.query == {"alt": "sse"} and sent.headers["x-goog-api-key"] == GEMINI_KEY


def test_tool_round_trip(server: RunningServer, standin: StandIn) -> None:
    client = server.openai()
    messages: list[Any] = [{"role": "user", "content": "What's the weather in Paris?"}]
    first = client.chat.completions.create(model=CHAT, messages=messages, tools=[WEATHER_TOOL], tool_choice="required")
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.tool_calls
    call = choice.message.tool_calls[0]
    assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {"city": "Paris"}
    sent = standin.requests_to(GENERATE)[-1].body
    declaration = sent["tools"][0]["functionDeclarations"][0]
    assert declaration["name"] == "get_weather" and declaration["description"] == "Current weather for a city."
    assert declaration["parameters"] == {
        "type": "OBJECT",
        "properties": {
            "city": {"type": "STRING", "description": "City name"},
            "unit": {"type": "STRING", "format": "enum", "enum": ["c", "f"], "nullable": True},
        },
        "required": ["city"],
    }
    assert sent["toolConfig"] == {"functionCallingConfig": {"mode": "ANY"}}

    # The assistant message goes back as the client got it, thought signature included.
    messages.append(choice.message.model_dump(exclude_none=True))
    messages.append({"role": "tool", "tool_call_id": call.id, "content": '{"temperature_c": 18}'})
    second = client.chat.completions.create(
        model=CHAT,
        messages=messages,
        tools=[WEATHER_TOOL],
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
    )
    assert second.choices[0].message.content == 'Tool results: get_weather -> {"temperature_c": 18}'
    sent = standin.requests_to(GENERATE)[-1].body
    assert sent["contents"][1:] == [
        {
            "role": "model",
            "parts": [
                {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}, "thoughtSignature": SIGNATURE}
            ],
        },
        {"role": "user", "parts": [{"functionResponse": {"name": "get_weather", "response": {"temperature_c": 18}}}]},
    ]
    assert sent["toolConfig"] == {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["get_weather"]}}


def test_streamed_tool_call(server: RunningServer) -> None:
    stream = server.openai().chat.completions.create(
        model=CHAT, messages=[{"role": "user", "content": "weather in Paris?"}], tools=[WEATHER_TOOL], stream=True
    )
    chunks = [c for c in stream if c.choices]
    calls = [tc for c in chunks for tc in c.choices[0].delta.tool_calls or []]
    assert len(calls) == 1 and calls[0].index == 0 and calls[0].function is not None
    assert calls[0].function.name == "get_weather" and json.loads(calls[0].function.arguments or "") == {
        "city": "Paris"
    }
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_embeddings(server: RunningServer, standin: StandIn) -> None:
    client = server.openai()
    vectors = client.embeddings.create(model=f"gemini/{EMBED_MODEL}", input=["one", "two"])  # the SDK asks base64
    assert [d.embedding for d in vectors.data] == [VECTOR, VECTOR] and [d.index for d in vectors.data] == [0, 1]
    sent = standin.requests_to(f"/v1beta/models/{EMBED_MODEL}:batchEmbedContents")[-1].body
    assert sent == {
        "requests": [
            {"model": f"models/{EMBED_MODEL}", "content": {"parts": [{"text": "one"}]}},
            {"model": f"models/{EMBED_MODEL}", "content": {"parts": [{"text": "two"}]}},
        ]
    }
    short = client.embeddings.create(
        model=f"gemini/{EMBED_MODEL}",
        input="three",
        dimensions=2,
        encoding_format="float",
        extra_body={"task_type": "RETRIEVAL_QUERY"},
    )
    assert short.data[0].embedding == VECTOR[:2]
    sent = standin.requests_to(f"/v1beta/models/{EMBED_MODEL}:batchEmbedContents")[-1].body
    assert sent["requests"][0]["outputDimensionality"] == 2 and sent["requests"][0]["taskType"] == "RETRIEVAL_QUERY"


def test_throttling_is_429_with_retry_after(server: RunningServer, standin: StandIn) -> None:
    exhausted = Failure(
        429,
        status_body(
            429,
            "RESOURCE_EXHAUSTED",
            "You exceeded your current quota, please check your plan and billing details.",
            retry_info("37s"),
        ),
    )
    before = len(standin.requests_to(GENERATE))
    standin.fail(GENERATE, exhausted, exhausted)
    with pytest.raises(openai.RateLimitError) as throttled:
        server.openai().chat.completions.create(model=CHAT, messages=[{"role": "user", "content": "hi"}])
    assert throttled.value.response.headers["retry-after"] == "37"  # from RetryInfo.retryDelay
    message = _error(throttled.value)["message"]
    assert "gemini" in message and "RESOURCE_EXHAUSTED" in message and "exceeded your current quota" in message
    assert len(standin.requests_to(GENERATE)) - before == 2  # one retry, as configured


def test_a_refused_key_is_502_naming_the_provider_not_the_key(server: RunningServer) -> None:
    with pytest.raises(openai.APIStatusError) as refused:
        server.openai().chat.completions.create(model="stale-flash", messages=[{"role": "user", "content": "hi"}])
    error = _error(refused.value)
    assert refused.value.status_code == 502 and error["code"] == "upstream_auth_failed"
    assert "gemini-stale" in error["message"] and "API key not valid" in error["message"]
    assert "AIza-revoked-key-0000" not in json.dumps(refused.value.body) and GEMINI_KEY not in json.dumps(
        refused.value.body
    )


def test_a_callers_refused_key_is_401(server: RunningServer) -> None:
    with pytest.raises(openai.AuthenticationError) as refused:
        server.openai().chat.completions.create(
            model=CHAT,
            messages=[{"role": "user", "content": "hi"}],
            extra_headers={"X-Underlay-Provider-Data": json.dumps({"gemini_api_key": "AIza-callers-own-key"})},
        )
    assert "gemini_api_key" in _error(refused.value)["message"]
    assert "AIza-callers-own-key" not in json.dumps(refused.value.body)


def test_other_google_statuses(server: RunningServer, standin: StandIn) -> None:
    client = server.openai()

    def ask() -> Any:
        return client.chat.completions.create(model=CHAT, messages=[{"role": "user", "content": "hi"}])

    violation = {
        "@type": "type.googleapis.com/google.rpc.BadRequest",
        "fieldViolations": [{"field": "generation_config.temperature", "description": "out of range"}],
    }
    standin.fail(GENERATE, Failure(400, status_body(400, "INVALID_ARGUMENT", "Invalid temperature.", violation)))
    with pytest.raises(openai.BadRequestError) as bad:
        ask()
    assert "Invalid temperature" in _error(bad.value)["message"]
    assert _error(bad.value)["param"] == "generation_config.temperature"

    overloaded = Failure(503, status_body(503, "UNAVAILABLE", "The model is overloaded. Please try again later."))
    standin.fail(GENERATE, overloaded, overloaded)
    with pytest.raises(openai.APIStatusError) as unavailable:
        ask()
    assert unavailable.value.status_code == 503 and "overloaded" in _error(unavailable.value)["message"]

    standin.fail(GENERATE, Failure(404, status_body(404, "NOT_FOUND", f"models/{CHAT_MODEL} is not found.")))
    with pytest.raises(openai.NotFoundError) as missing:
        ask()
    assert _error(missing.value)["param"] == "model"


def test_a_stream_cut_midway_is_an_error_event(server: RunningServer) -> None:
    with httpx.stream(
        "POST",
        f"{server.v1}/chat/completions",
        json={"model": CHAT, "messages": [{"role": "user", "content": "please cut me off"}], "stream": True},
        timeout=30,
    ) as response:
        frames = []
        for line in response.iter_lines():
            if line.startswith("data: "):
                frames.append(line[len("data: ") :])
                CUT_NOW.set()  # the first event is through: now the upstream connection drops
    assert response.status_code == 200, frames
    first = json.loads(frames[0])
    assert first["choices"][0]["delta"]["content"] == "gemini ", frames  # the part that arrived before the cut
    error = json.loads(frames[-1])["error"]
    assert "gemini" in error["message"] and "stream" in error["message"], error
    assert error["type"] and GEMINI_KEY not in frames[-1]


def test_invalid_requests_are_400_before_calling_google(server: RunningServer, standin: StandIn) -> None:
    client = server.openai()
    before = len(standin.seen)
    with pytest.raises(openai.BadRequestError) as orphan:
        client.chat.completions.create(
            model=CHAT,
            messages=[{"role": "user", "content": "hi"}, {"role": "tool", "tool_call_id": "nope", "content": "x"}],
        )
    assert _error(orphan.value)["param"] == "messages[1].tool_call_id"
    with pytest.raises(openai.BadRequestError) as legacy:
        client.completions.create(model=CHAT, prompt="hi")
    assert "chat completions" in _error(legacy.value)["message"]
    assert len(standin.seen) == before


def test_no_traceback_in_the_server_log(server: RunningServer) -> None:
    assert "Traceback" not in server.log()


@pytest.mark.skipif(
    not os.environ.get("GEMINI_API_KEY"),
    reason="GEMINI_API_KEY is not set: this test calls Google's real Gemini API and needs a key and network access",
)
def test_real_gemini_service(tmp_path_factory: pytest.TempPathFactory) -> None:
    chat_model = os.environ.get("GEMINI_TEST_MODEL", "gemini-2.5-flash-lite")
    config = {
        "apis": ["inference", "models"],
        "providers": {"inference": [{"provider_id": "gemini", "provider_type": "remote::gemini"}]},
    }
    running = start_server(config, tmp_path_factory.mktemp("gemini-real"))
    try:
        client = running.openai()
        ids = {m.id for m in client.models.list().data}
        assert f"gemini/{chat_model}" in ids
        reply = client.chat.completions.create(
            model=f"gemini/{chat_model}", messages=[{"role": "user", "content": "Say the word: pong"}], max_tokens=200
        )
        assert reply.choices[0].message.content and reply.usage is not None and reply.usage.prompt_tokens > 0
        stream = client.chat.completions.create(
            model=f"gemini/{chat_model}", messages=[{"role": "user", "content": "Count to three."}], stream=True
        )
        assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
        vectors = client.embeddings.create(model="gemini/gemini-embedding-001", input="hello", dimensions=8)
        assert len(vectors.data[0].embedding) == 8
    finally:
        running.stop()
