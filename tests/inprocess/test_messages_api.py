"""``/v1/messages`` and ``/v1/messages/count_tokens`` over the real app, driven by the ``anthropic`` SDK.

The echo plugin answers ``echo: <last user text>``, so these tests check what reached the model and the
Anthropic wire shapes around it: the message, the named stream events, the error body and statuses of
every layer (validation, auth, body limit, the router, a stream that breaks), ``x-api-key`` auth and
the ``anthropic-version`` check. The embedded model and tools are in tests/integration/test_messages_local.py.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anthropic
import httpx2
import pytest

from tests.inprocess.harness import BASE_URL, InProcessServer, echo_config, serve_in_process

MODEL = "echo/echo"
KEY = "sk-messages-test-1"


def sdk(server: InProcessServer, **kwargs: Any) -> anthropic.AsyncAnthropic:
    """The SDK over the app in process (it speaks ``httpx2``, so it gets its own ASGI transport)."""
    options: dict[str, Any] = {"api_key": "unused", "max_retries": 0, **kwargs}
    transport = httpx2.ASGITransport(app=server.app)
    client = httpx2.AsyncClient(transport=transport, base_url=BASE_URL, timeout=30)
    return anthropic.AsyncAnthropic(base_url=BASE_URL, http_client=client, **options)


@pytest.fixture(scope="module")
async def app(echo_plugin: Path, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[InProcessServer]:
    config = echo_config(tmp_path_factory.mktemp("inprocess-messages"), apis=["inference", "models", "messages"])
    async with serve_in_process(config) as server:
        yield server


@pytest.fixture(scope="module")
async def authed(echo_plugin: Path, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[InProcessServer]:
    config = echo_config(tmp_path_factory.mktemp("inprocess-messages-auth"), apis=["inference", "models", "messages"])
    digest = hashlib.sha256(KEY.encode()).hexdigest()
    config["server"]["auth"] = {
        "providers": [{"type": "api_keys", "keys": [{"sha256": digest, "principal": "ann", "attributes": {}}]}]
    }
    async with serve_in_process(config) as server:
        yield server


def events_of(raw: str) -> list[tuple[str, dict[str, Any]]]:
    """``(event name, data)`` for each SSE frame of a body."""
    out = []
    for frame in raw.strip().split("\n\n"):
        lines = frame.split("\n")
        name = next(line[7:] for line in lines if line.startswith("event: "))
        data = json.loads("".join(line[6:] for line in lines if line.startswith("data: ")))
        out.append((name, data))
    return out


async def test_message_with_system_and_turns(app: InProcessServer) -> None:
    reply = await sdk(app).messages.create(
        model=MODEL,
        max_tokens=64,
        system="You are terse.",
        messages=[
            {"role": "user", "content": "first question"},
            {"role": "assistant", "content": "first answer"},
            {"role": "user", "content": [{"type": "text", "text": "second question"}]},
        ],
    )
    assert reply.type == "message" and reply.role == "assistant"
    assert reply.id.startswith("msg_")
    assert reply.model == MODEL  # the client's id, not the provider's name
    assert [b.type for b in reply.content] == ["text"]
    assert reply.content[0].text == "echo: second question"  # the last user turn reached the model
    assert reply.stop_reason == "end_turn" and reply.stop_sequence is None
    assert reply.usage.input_tokens > 0 and reply.usage.output_tokens > 0


async def test_stream_is_anthropics_event_sequence(app: InProcessServer) -> None:
    body = {"model": MODEL, "max_tokens": 64, "stream": True, "messages": [{"role": "user", "content": "a b c"}]}
    response = await app.http.post("/v1/messages", json=body, headers={"anthropic-version": "2023-06-01"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert "[DONE]" not in response.text
    events = events_of(response.text)
    names = [name for name, _ in events]
    assert all(name == data["type"] for name, data in events)
    assert names[:3] == ["message_start", "ping", "content_block_start"]
    assert names[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert set(names[3:-3]) == {"content_block_delta"}
    text = "".join(data["delta"]["text"] for name, data in events if name == "content_block_delta")
    assert text == "echo: a b c"
    delta = events[-2][1]
    assert delta["delta"]["stop_reason"] == "end_turn"
    assert delta["usage"]["output_tokens"] > 0
    assert events[0][1]["message"]["model"] == MODEL and events[0][1]["message"]["content"] == []


async def test_sdk_stream_matches_the_plain_answer(app: InProcessServer) -> None:
    client = sdk(app)
    messages = [{"role": "user", "content": "same words both ways"}]
    plain = await client.messages.create(model=MODEL, max_tokens=64, messages=messages)
    async with client.messages.stream(model=MODEL, max_tokens=64, messages=messages) as stream:
        pieces = [text async for text in stream.text_stream]
        final = await stream.get_final_message()
    assert "".join(pieces) == plain.content[0].text == final.content[0].text
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens == plain.usage.output_tokens


async def test_stream_cut_mid_way_is_an_error_event(app: InProcessServer) -> None:
    body = {
        "model": "echo/echo-fail",
        "max_tokens": 64,
        "stream": True,
        "messages": [{"role": "user", "content": "one two three four"}],
    }
    response = await app.http.post("/v1/messages", json=body)
    events = events_of(response.text)
    assert events[0][0] == "message_start"
    assert any(name == "content_block_delta" for name, _ in events)  # the start was sent before the cut
    name, data = events[-1]
    assert name == "error"
    assert data["type"] == "error" and data["error"]["type"] == "api_error"
    assert "echo" in data["error"]["message"]  # names the provider
    with pytest.raises(anthropic.APIStatusError):
        async with sdk(app).messages.stream(model="echo/echo-fail", max_tokens=64, messages=body["messages"]) as s:
            async for _ in s.text_stream:
                pass


async def test_chat_front_door_keeps_openais_stream(app: InProcessServer) -> None:
    body = {"model": "echo/echo-fail", "stream": True, "messages": [{"role": "user", "content": "one two three"}]}
    response = await app.http.post("/v1/chat/completions", json=body)
    assert "event: " not in response.text  # the dialect applies to its own routes only
    last = response.text.strip().split("\n\n")[-1]
    assert json.loads(last[6:])["error"]["type"] == "upstream_error"


async def test_count_tokens(app: InProcessServer) -> None:
    client = sdk(app)
    short = await client.messages.count_tokens(model=MODEL, messages=[{"role": "user", "content": "one"}])
    long = await client.messages.count_tokens(
        model=MODEL, messages=[{"role": "user", "content": "one two three four five six"}]
    )
    assert 0 < short.input_tokens < long.input_tokens


@pytest.mark.parametrize(
    ("body", "headers", "status", "kind", "fragment"),
    [
        (
            {"model": MODEL, "messages": [{"role": "user", "content": "x"}]},
            {},
            400,
            "invalid_request_error",
            "max_tokens",
        ),
        (
            {"model": MODEL, "max_tokens": 0, "messages": [{"role": "user", "content": "x"}]},
            {},
            400,
            "invalid_request_error",
            "max_tokens",
        ),
        (
            {"model": MODEL, "max_tokens": 5, "messages": [{"role": "robot", "content": "x"}]},
            {},
            400,
            "invalid_request_error",
            "role",
        ),
        (
            {"model": MODEL, "max_tokens": 5, "temperature": 1.5, "messages": [{"role": "user", "content": "x"}]},
            {},
            400,
            "invalid_request_error",
            "temperature",
        ),
        (
            {"model": "echo/none-such", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]},
            {},
            404,
            "not_found_error",
            "none-such",
        ),
        (
            {"model": MODEL, "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]},
            {"anthropic-version": "1999-01-01"},
            400,
            "invalid_request_error",
            "anthropic-version",
        ),
        (
            {
                "model": MODEL,
                "max_tokens": 5,
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "document", "source": {"type": "text", "data": "d", "media_type": "text/plain"}}
                        ],
                    }
                ],
            },
            {},
            400,
            "invalid_request_error",
            "natively",
        ),
        (
            {
                "model": MODEL,
                "max_tokens": 5,
                "tool_choice": {"type": "tool", "name": "nope"},
                "tools": [{"name": "f", "input_schema": {"type": "object"}}],
                "messages": [{"role": "user", "content": "x"}],
            },
            {},
            400,
            "invalid_request_error",
            "nope",
        ),
    ],
    ids=[
        "missing-max-tokens",
        "zero-max-tokens",
        "bad-role",
        "temperature",
        "unknown-model",
        "bad-version",
        "document",
        "tool-choice",
    ],
)
async def test_errors_in_anthropics_shape(
    app: InProcessServer, body: dict[str, Any], headers: dict[str, str], status: int, kind: str, fragment: str
) -> None:
    response = await app.http.post("/v1/messages", json=body, headers=headers)
    assert response.status_code == status, response.text
    payload = response.json()
    assert payload["type"] == "error" and set(payload) == {"type", "error"}
    assert payload["error"]["type"] == kind
    assert fragment in payload["error"]["message"]


async def test_sdk_raises_its_own_error_classes(app: InProcessServer) -> None:
    client = sdk(app)
    with pytest.raises(anthropic.NotFoundError) as missing:
        await client.messages.create(model="echo/nope", max_tokens=5, messages=[{"role": "user", "content": "x"}])
    assert missing.value.body["error"]["type"] == "not_found_error"  # type: ignore[index]
    with pytest.raises(anthropic.BadRequestError):
        await client.messages.create(
            model=MODEL, max_tokens=5, messages=[{"role": "user", "content": "x"}], stop_sequences=["s" * 300]
        )


async def test_body_over_the_limit_is_request_too_large(app: InProcessServer) -> None:
    body = {"model": MODEL, "max_tokens": 5, "messages": [{"role": "user", "content": "x" * 70_000}]}
    response = await app.http.post("/v1/messages", json=body)
    assert response.status_code == 413
    assert response.json()["error"]["type"] == "request_too_large"


async def test_x_api_key_goes_through_the_auth_layer(authed: InProcessServer) -> None:
    reply = await sdk(authed, api_key=KEY).messages.create(
        model=MODEL, max_tokens=16, messages=[{"role": "user", "content": "hello"}]
    )
    assert reply.content[0].text == "echo: hello"
    with pytest.raises(anthropic.AuthenticationError) as refused:
        await sdk(authed, api_key="sk-wrong").messages.create(
            model=MODEL, max_tokens=16, messages=[{"role": "user", "content": "hello"}]
        )
    assert refused.value.status_code == 401
    assert refused.value.body["error"]["type"] == "authentication_error"  # type: ignore[index]
    assert "sk-wrong" not in json.dumps(refused.value.body)
    body = {"model": MODEL, "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]}
    bearer = await authed.http.post("/v1/messages", json=body, headers={"Authorization": f"Bearer {KEY}"})
    assert bearer.status_code == 200
    anonymous = await authed.http.post("/v1/messages", json=body)
    assert anonymous.status_code == 401 and anonymous.json()["error"]["type"] == "authentication_error"
    # x-api-key is this dialect's header only: the OpenAI routes keep Authorization alone.
    chat = await authed.http.post(
        "/v1/chat/completions",
        json={"model": MODEL, "messages": [{"role": "user", "content": "hi"}]},
        headers={"x-api-key": KEY},
    )
    assert chat.status_code == 401 and "error" in chat.json() and "type" not in chat.json()


async def test_routes_are_listed(app: InProcessServer) -> None:
    routes = (await app.http.get("/v1/inspect/routes")).json()["data"]
    mine = {(r["method"], r["path"], r["streaming"]) for r in routes if r["api"] == "messages"}
    assert mine == {("POST", "/v1/messages", True), ("POST", "/v1/messages/count_tokens", False)}
