"""Request-rate quotas through a real ``underlay run`` with the echo provider, driven by the openai SDK and httpx.

Anonymous clients are budgeted by address. uvicorn takes the address from ``X-Forwarded-For`` when the
connection comes from a trusted proxy (127.0.0.1 by default), so each test plays a client of its own
by sending a distinct forwarded address through one server. Tests that count per minute first wait
for a minute with room left, so a window boundary cannot fall between their requests.

Token budgets (chat, streamed, embeddings, Responses), per-principal tiers and an unreachable Redis
are checked in process, in ``tests/inprocess/test_quotas.py``.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.integration.harness import RunningServer, start_server

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
