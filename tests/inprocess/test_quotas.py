"""Quotas in process: token budgets (chat, streamed, embeddings, Responses), per-principal tiers, and an
unreachable Redis (refused with a 503 naming it, or let through when configured so).

Anonymous clients are budgeted by address: each test is a client of its own by sending from an address
of its own (the ASGI ``client``, see ``InProcessServer.openai_from``). The request-rate limits, with
addresses taken from ``X-Forwarded-For`` by uvicorn, keep their real-server tests in
``tests/integration/test_quota_server.py``.
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import openai
import pytest

from tests.inprocess.harness import InProcessServer, echo_config, serve_in_process
from tests.integration.harness import free_port

RESPONSES = {"provider_id": "builtin", "provider_type": "inline::builtin"}


def new_client_ip() -> str:
    raw = uuid.uuid4().bytes
    return f"10.{raw[0]}.{raw[1]}.{raw[2] or 1}"


async def chat(client: openai.AsyncOpenAI, text: str = "hi", **kwargs: Any) -> Any:
    return await client.chat.completions.with_raw_response.create(
        model="echo/echo", messages=[{"role": "user", "content": text}], **kwargs
    )


def quota_config(state_dir: Path, quotas: dict[str, Any], **server: Any) -> dict[str, Any]:
    return echo_config(state_dir, server={"quotas": quotas, **server})


@pytest.fixture(scope="module")
async def token_app(echo_plugin: Path, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[InProcessServer]:
    config = quota_config(tmp_path_factory.mktemp("inprocess-tokens"), {"limits": {"tokens_per_day": 20}})
    async with serve_in_process(config) as app:
        yield app


async def test_token_budget_is_charged_after_each_call(token_app: InProcessServer) -> None:
    client = token_app.openai_from(new_client_ip())
    # The echo provider reports 2 tokens per word of its answer: "echo: one two three four five" is 12.
    first = await chat(client, "one two three four five")
    assert first.parse().usage.total_tokens == 12
    assert first.headers["x-ratelimit-limit-tokens"] == "20"
    assert first.headers["x-ratelimit-remaining-tokens"] == "20"
    second = await chat(client, "one two three four five")
    assert second.headers["x-ratelimit-remaining-tokens"] == "8"
    with pytest.raises(openai.RateLimitError) as info:  # 24 of 20 spent
        await chat(client)
    error = info.value.response.json()["error"]
    assert error["code"] == "tokens_exceeded" and "tokens_per_day" in error["message"]
    assert info.value.response.headers["x-ratelimit-remaining-tokens"] == "0"


async def test_streamed_usage_is_charged_even_when_the_client_did_not_ask(token_app: InProcessServer) -> None:
    client = token_app.openai_from(new_client_ip())
    stream = await client.chat.completions.create(
        model="echo/echo", messages=[{"role": "user", "content": "one two three four five"}], stream=True
    )
    chunks = [chunk async for chunk in stream]
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "echo: one two three four five"
    assert all(c.usage is None for c in chunks)  # the usage chunk it did not ask for is not sent
    assert (await chat(client)).headers["x-ratelimit-remaining-tokens"] == "8"  # the stream's 12 were charged

    asked = await client.chat.completions.create(
        model="echo/echo",
        messages=[{"role": "user", "content": "x"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    assert [c.usage.total_tokens async for c in asked if c.usage is not None] == [4]
    with pytest.raises(openai.RateLimitError):  # 12 + 4 (the "hi" call) + 4 = 20 of 20
        await chat(client)


async def test_embeddings_are_charged_their_usage(token_app: InProcessServer) -> None:
    client = token_app.openai_from(new_client_ip())
    remaining = []
    for _ in range(3):  # the echo provider reports 1 token per embeddings call
        raw = await client.embeddings.with_raw_response.create(model="echo/echo-embed", input="text")
        remaining.append(raw.headers["x-ratelimit-remaining-tokens"])
    assert remaining == ["20", "19", "18"]


async def test_unreachable_redis_is_503_naming_it(
    echo_plugin: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    quotas = {"backend": "redis", "url": url, "limits": {"requests_per_day": 100}}
    with caplog.at_level(logging.WARNING, logger="underlay"):
        async with serve_in_process(quota_config(tmp_path, quotas)) as app:
            assert (await app.http.get("/v1/health")).status_code == 200
            with pytest.raises(openai.InternalServerError) as info:
                await chat(app.openai())
    assert info.value.response.status_code == 503
    error = info.value.response.json()["error"]
    assert error["type"] == "service_unavailable" and error["code"] == "quota_backend_unavailable"
    assert f"Redis at {url} (server.quotas.url) is unreachable" in error["message"]
    assert "on_backend_error" in error["message"]
    assert "quota counters unreachable" in caplog.text or "quotas: Redis at" in caplog.text


async def test_fail_open_lets_requests_through_unmetered(echo_plugin: Path, tmp_path: Path) -> None:
    quotas = {
        "backend": "redis",
        "url": f"redis://127.0.0.1:{free_port()}/0",
        "on_backend_error": "allow",
        "limits": {"requests_per_day": 1},
    }
    async with serve_in_process(quota_config(tmp_path, quotas)) as app:
        client = app.openai()
        for _ in range(3):
            raw = await chat(client)
            assert raw.parse().choices[0].message.content == "echo: hi"
            assert "x-ratelimit-limit-requests" not in raw.headers


def _key_entry(key: str, principal: str, roles: list[str]) -> dict[str, Any]:
    return {"sha256": hashlib.sha256(key.encode()).hexdigest(), "principal": principal, "attributes": {"roles": roles}}


async def test_authenticated_principals_get_their_tier(echo_plugin: Path, tmp_path: Path) -> None:
    keys = {"alice": "sk-alice-" + uuid.uuid4().hex, "bob": "sk-bob-" + uuid.uuid4().hex}
    auth = {
        "providers": [
            {
                "type": "api_keys",
                "keys": [_key_entry(keys["alice"], "alice", ["basic"]), _key_entry(keys["bob"], "bob", ["premium"])],
            }
        ]
    }
    quotas = {
        "limits": {"requests_per_day": 1},
        "overrides": [{"attributes": {"roles": ["premium"]}, "limits": {"requests_per_day": 3}}],
    }
    async with serve_in_process(quota_config(tmp_path, quotas, auth=auth)) as app:
        address = new_client_ip()  # both principals call from one address

        def client(name: str) -> openai.AsyncOpenAI:
            return app.openai_from(address, api_key=keys[name])

        assert (await chat(client("alice"))).headers["x-ratelimit-limit-requests"] == "1"
        with pytest.raises(openai.RateLimitError) as info:
            await chat(client("alice"))
        message = info.value.response.json()["error"]["message"]
        assert "principal 'alice'" in message and keys["alice"] not in message
        # Budgets follow the principal, not the address: bob shares alice's address but has his own tier.
        remaining = [(await chat(client("bob"))).headers["x-ratelimit-remaining-requests"] for _ in range(3)]
        assert remaining == ["2", "1", "0"]
        with pytest.raises(openai.RateLimitError):
            await chat(client("bob"))
        # An unauthenticated request is refused by auth (401) before it reaches the quota layer.
        with pytest.raises(openai.AuthenticationError):
            await chat(app.openai_from(address, api_key="sk-wrong"))


async def test_responses_calls_are_charged_their_model_usage(echo_plugin: Path, tmp_path: Path) -> None:
    config = echo_config(
        tmp_path,
        apis=["inference", "models", "conversations", "responses"],
        server={"quotas": {"limits": {"tokens_per_day": 30}}},
    )
    config["providers"]["responses"] = [RESPONSES]
    async with serve_in_process(config) as app:
        client = app.openai()
        raw = await client.responses.with_raw_response.create(model="echo/echo", input="one two three four five")
        usage = raw.parse().usage
        assert usage is not None and usage.total_tokens == 12
        assert raw.headers["x-ratelimit-remaining-tokens"] == "30"
        stream = await client.responses.create(model="echo/echo", input="one two three four five", stream=True)
        events: list[Any] = [event async for event in stream]
        assert events[-1].type == "response.completed" and events[-1].response.usage.total_tokens == 12
        after = await client.responses.with_raw_response.create(model="echo/echo", input="x")
        assert after.headers["x-ratelimit-remaining-tokens"] == "6"  # 30 - 12 - 12: both calls were charged
        last = await client.responses.with_raw_response.create(model="echo/echo", input="x")
        assert last.headers["x-ratelimit-remaining-tokens"] == "2"  # admitted with 2 left; it used 4
        with pytest.raises(openai.RateLimitError) as info:
            await client.responses.create(model="echo/echo", input="x")
        assert info.value.response.json()["error"]["code"] == "tokens_exceeded"
