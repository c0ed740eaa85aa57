"""Quotas through a real ``underlay run`` with the echo provider, driven by the openai SDK and httpx.

Anonymous clients are budgeted by address. uvicorn takes the address from ``X-Forwarded-For`` when the
connection comes from a trusted proxy (127.0.0.1 by default), so each test plays a client of its own
by sending a distinct forwarded address through one server. Tests that count per minute first wait
for a minute with room left, so a window boundary cannot fall between their requests.
"""

from __future__ import annotations

import hashlib
import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.integration.harness import RunningServer, free_port, start_server

ECHO = {"inference": [{"provider_id": "echo", "provider_type": "remote::echo-test", "config": {}}]}
RESET = re.compile(r"^(\d+ms|\d+(\.\d+)?s|\d+m\d+s|\d+h\d+m\d+s)$")


def echo_config(quotas: dict[str, Any], **server: Any) -> dict[str, Any]:
    return {"apis": ["inference", "models"], "providers": ECHO, "server": {"quotas": quotas, **server}}


def fresh_minute(room: float = 15.0) -> None:
    """Sleep into the next UTC minute when fewer than ``room`` seconds are left in this one."""
    left = 60 - time.time() % 60
    if left < room:
        time.sleep(left + 0.05)


def new_client_ip() -> str:
    raw = uuid.uuid4().bytes
    return f"10.{raw[0]}.{raw[1]}.{raw[2] or 1}"


def sdk(server: RunningServer, ip: str) -> openai.OpenAI:
    return server.openai(default_headers={"X-Forwarded-For": ip})


def chat(client: openai.OpenAI, text: str = "hi", **kwargs: Any) -> Any:
    return client.chat.completions.with_raw_response.create(
        model="echo/echo", messages=[{"role": "user", "content": text}], **kwargs
    )


@pytest.fixture(scope="module")
def limits_server(tmp_path_factory: pytest.TempPathFactory, external_provider_path: Path) -> Iterator[RunningServer]:
    config = echo_config({"limits": {"requests_per_minute": 3, "requests_per_day": 1000}})
    server = start_server(config, tmp_path_factory.mktemp("quota"), extra_pythonpath=[external_provider_path])
    yield server
    server.stop()


@pytest.fixture(scope="module")
def token_server(tmp_path_factory: pytest.TempPathFactory, external_provider_path: Path) -> Iterator[RunningServer]:
    config = echo_config({"limits": {"tokens_per_day": 20}})
    server = start_server(config, tmp_path_factory.mktemp("tokens"), extra_pythonpath=[external_provider_path])
    yield server
    server.stop()


def test_requests_over_the_limit_get_429_with_openai_headers(limits_server: RunningServer) -> None:
    fresh_minute()
    ip = new_client_ip()
    client = sdk(limits_server, ip)
    for _ in range(5):  # health and version are never counted
        health = httpx.get(f"{limits_server.v1}/health", headers={"X-Forwarded-For": ip})
        assert health.status_code == 200 and "x-ratelimit-limit-requests" not in health.headers
        assert httpx.get(f"{limits_server.v1}/version", headers={"X-Forwarded-For": ip}).status_code == 200
    remaining = []
    for _ in range(3):
        raw = chat(client)
        assert raw.parse().choices[0].message.content == "echo: hi"
        assert raw.headers["x-ratelimit-limit-requests"] == "3"
        assert RESET.match(raw.headers["x-ratelimit-reset-requests"])
        remaining.append(raw.headers["x-ratelimit-remaining-requests"])
    assert remaining == ["2", "1", "0"]

    with pytest.raises(openai.RateLimitError) as info:
        chat(client)
    response = info.value.response
    assert response.status_code == 429
    assert 1 <= int(response.headers["retry-after"]) <= 60
    assert response.headers["x-ratelimit-remaining-requests"] == "0"
    error = response.json()["error"]
    assert error["type"] == "rate_limit_error" and error["code"] == "rate_limit_exceeded"
    assert f"client {ip}" in error["message"] and "requests_per_minute" in error["message"]
    with pytest.raises(openai.RateLimitError):  # every API route is counted, not just inference
        client.models.list()

    other = chat(sdk(limits_server, new_client_ip()))  # another client has its own budget
    assert other.headers["x-ratelimit-remaining-requests"] == "2"


def test_streamed_requests_are_counted_and_carry_headers(limits_server: RunningServer) -> None:
    fresh_minute()
    ip = new_client_ip()
    body = {"model": "echo/echo", "messages": [{"role": "user", "content": "a b"}], "stream": True}
    for expected in ("2", "1", "0"):
        with httpx.stream(
            "POST", f"{limits_server.v1}/chat/completions", json=body, headers={"X-Forwarded-For": ip}
        ) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            assert response.headers["x-ratelimit-remaining-requests"] == expected
            assert "data: [DONE]" in response.read().decode()
    refused = httpx.post(f"{limits_server.v1}/chat/completions", json=body, headers={"X-Forwarded-For": ip})
    assert refused.status_code == 429
    assert refused.json()["error"]["type"] == "rate_limit_error"


def test_token_budget_is_charged_after_each_call(token_server: RunningServer) -> None:
    client = sdk(token_server, new_client_ip())
    # The echo provider reports 2 tokens per word of its answer: "echo: one two three four five" is 12.
    first = chat(client, "one two three four five")
    assert first.parse().usage.total_tokens == 12
    assert first.headers["x-ratelimit-limit-tokens"] == "20"
    assert first.headers["x-ratelimit-remaining-tokens"] == "20"
    second = chat(client, "one two three four five")
    assert second.headers["x-ratelimit-remaining-tokens"] == "8"
    with pytest.raises(openai.RateLimitError) as info:  # 24 of 20 spent
        chat(client)
    error = info.value.response.json()["error"]
    assert error["code"] == "tokens_exceeded" and "tokens_per_day" in error["message"]
    assert info.value.response.headers["x-ratelimit-remaining-tokens"] == "0"


def test_streamed_usage_is_charged_even_when_the_client_did_not_ask(token_server: RunningServer) -> None:
    client = sdk(token_server, new_client_ip())
    stream = client.chat.completions.create(
        model="echo/echo", messages=[{"role": "user", "content": "one two three four five"}], stream=True
    )
    chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "echo: one two three four five"
    assert all(c.usage is None for c in chunks)  # the usage chunk it did not ask for is not sent
    assert chat(client).headers["x-ratelimit-remaining-tokens"] == "8"  # the stream's 12 tokens were charged

    asked = client.chat.completions.create(
        model="echo/echo",
        messages=[{"role": "user", "content": "x"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    assert [c.usage.total_tokens for c in asked if c.usage is not None] == [4]
    with pytest.raises(openai.RateLimitError):  # 12 + 4 (the "hi" call) + 4 = 20 of 20
        chat(client)


def test_embeddings_are_charged_their_usage(token_server: RunningServer) -> None:
    client = sdk(token_server, new_client_ip())
    remaining = []
    for _ in range(3):  # the echo provider reports 1 token per embeddings call
        raw = client.embeddings.with_raw_response.create(model="echo/echo-embed", input="text")
        remaining.append(raw.headers["x-ratelimit-remaining-tokens"])
    assert remaining == ["20", "19", "18"]


def test_unreachable_redis_is_503_naming_it(tmp_path: Path, external_provider_path: Path) -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    quotas = {"backend": "redis", "url": url, "limits": {"requests_per_day": 100}}
    server = start_server(echo_config(quotas), tmp_path / "down", extra_pythonpath=[external_provider_path])
    try:
        assert httpx.get(f"{server.v1}/health").status_code == 200
        with pytest.raises(openai.InternalServerError) as info:
            chat(server.openai())
        assert info.value.response.status_code == 503
        error = info.value.response.json()["error"]
        assert error["type"] == "service_unavailable" and error["code"] == "quota_backend_unavailable"
        assert f"Redis at {url} (server.quotas.url) is unreachable" in error["message"]
        assert "on_backend_error" in error["message"]
    finally:
        server.stop()
    assert "quota counters unreachable" in server.log() or "quotas: Redis at" in server.log()


def test_fail_open_lets_requests_through_unmetered(tmp_path: Path, external_provider_path: Path) -> None:
    quotas = {
        "backend": "redis",
        "url": f"redis://127.0.0.1:{free_port()}/0",
        "on_backend_error": "allow",
        "limits": {"requests_per_day": 1},
    }
    server = start_server(echo_config(quotas), tmp_path / "open", extra_pythonpath=[external_provider_path])
    try:
        client = server.openai()
        for _ in range(3):
            raw = chat(client)
            assert raw.parse().choices[0].message.content == "echo: hi"
            assert "x-ratelimit-limit-requests" not in raw.headers
    finally:
        server.stop()


def _key_entry(key: str, principal: str, roles: list[str]) -> dict[str, Any]:
    return {"sha256": hashlib.sha256(key.encode()).hexdigest(), "principal": principal, "attributes": {"roles": roles}}


def test_authenticated_principals_get_their_tier(tmp_path: Path, external_provider_path: Path) -> None:
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
    config = echo_config(quotas, auth=auth)
    server = start_server(config, tmp_path, extra_pythonpath=[external_provider_path])
    try:

        def client(name: str) -> openai.OpenAI:
            return openai.OpenAI(base_url=server.v1, api_key=keys[name], max_retries=0)

        assert chat(client("alice")).headers["x-ratelimit-limit-requests"] == "1"
        with pytest.raises(openai.RateLimitError) as info:
            chat(client("alice"))
        message = info.value.response.json()["error"]["message"]
        assert "principal 'alice'" in message and keys["alice"] not in message
        # Budgets follow the principal, not the address: bob shares alice's address but has his own tier.
        assert [chat(client("bob")).headers["x-ratelimit-remaining-requests"] for _ in range(3)] == ["2", "1", "0"]
        with pytest.raises(openai.RateLimitError):
            chat(client("bob"))
        # An unauthenticated request is refused by auth (401) before it reaches the quota layer.
        with pytest.raises(openai.AuthenticationError):
            chat(openai.OpenAI(base_url=server.v1, api_key="sk-wrong", max_retries=0))
    finally:
        server.stop()


def test_responses_calls_are_charged_their_model_usage(tmp_path: Path, external_provider_path: Path) -> None:
    config = {
        "apis": ["inference", "models", "conversations", "responses"],
        "providers": {**ECHO, "responses": [{"provider_id": "builtin", "provider_type": "inline::builtin"}]},
        "server": {"quotas": {"limits": {"tokens_per_day": 30}}},
    }
    server = start_server(config, tmp_path, extra_pythonpath=[external_provider_path])
    try:
        client = server.openai()
        raw = client.responses.with_raw_response.create(model="echo/echo", input="one two three four five")
        assert raw.parse().usage.total_tokens == 12
        assert raw.headers["x-ratelimit-remaining-tokens"] == "30"
        events = list(client.responses.create(model="echo/echo", input="one two three four five", stream=True))
        assert events[-1].type == "response.completed" and events[-1].response.usage.total_tokens == 12
        after = client.responses.with_raw_response.create(model="echo/echo", input="x")
        assert after.headers["x-ratelimit-remaining-tokens"] == "6"  # 30 - 12 - 12: both calls were charged
        last = client.responses.with_raw_response.create(model="echo/echo", input="x")
        assert last.headers["x-ratelimit-remaining-tokens"] == "2"  # admitted with 2 left; it used 4
        with pytest.raises(openai.RateLimitError) as info:
            client.responses.create(model="echo/echo", input="x")
        assert info.value.response.json()["error"]["code"] == "tokens_exceeded"
    finally:
        server.stop()
