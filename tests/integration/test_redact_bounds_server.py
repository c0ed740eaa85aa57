"""Huge client text cannot stall the server through secret redaction (issue 9, item 1).

A real ``underlay run`` with API keys on loopback (the echo inference provider) gets, unauthenticated
and authenticated, a 100,000-character vector store id in the path, a 100,000-character model name
and a 100,000-character provider-data header, several at once, while ``/v1/health`` is polled. Before
the redactor was linear, the access log line of a 3,000-character id held the event loop (and health)
for 80 s and 10,000 characters never answered. The timeouts here are hang guards, not timings.
"""

from __future__ import annotations

import hashlib
import http.client
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.integration.harness import RunningServer, start_server

KEY = "sk-underlay-bounds-0001"
N = 100_000
HANG_GUARD = 20.0


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, external_provider_path: Path) -> Iterator[RunningServer]:
    config = {
        "apis": ["inference", "models"],
        "providers": {"inference": [{"provider_id": "echo", "provider_type": "remote::echo-test", "config": {}}]},
        "server": {
            "auth": {
                "providers": [
                    {
                        "type": "api_keys",
                        "keys": [{"sha256": hashlib.sha256(KEY.encode()).hexdigest(), "principal": "alice"}],
                    },
                ]
            }
        },
    }
    running = start_server(config, tmp_path_factory.mktemp("bounds"), extra_pythonpath=[external_provider_path])
    yield running
    running.stop()


def _while_health_answers(server: RunningServer, calls: list[Callable[[], httpx.Response]]) -> list[httpx.Response]:
    """Run ``calls`` concurrently; meanwhile /v1/health must keep answering."""
    with ThreadPoolExecutor(max_workers=len(calls) + 1) as pool:
        pending = [pool.submit(call) for call in calls]
        health = httpx.get(f"{server.v1}/health", timeout=HANG_GUARD)
        assert health.status_code == 200
        answers = [p.result(timeout=HANG_GUARD * 2) for p in pending]
    assert httpx.get(f"{server.v1}/health", timeout=HANG_GUARD).status_code == 200
    return answers


def _get_raw(server: RunningServer, path: str, headers: dict[str, str]) -> httpx.Response:
    """GET with the standard library's client: httpx refuses URLs over 64 KiB, a client need not."""
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=HANG_GUARD)
    try:
        connection.request("GET", path, headers=headers)
        answer = connection.getresponse()
        return httpx.Response(answer.status, content=answer.read())
    finally:
        connection.close()


def test_a_huge_id_in_the_path_answers_and_health_keeps_answering(server: RunningServer) -> None:
    """65,000 characters: about the longest request line the HTTP parser passes on (64 KiB), so the id
    reaches the auth layer, whose refusal is logged with the path (quadratic before: 20,000 took 39 s)."""
    path = f"/v1/vector_stores/vs_{'a' * 65_000}"
    authed = {"Authorization": f"Bearer {KEY}"}
    calls = [lambda: _get_raw(server, path, {})] * 3 + [lambda: _get_raw(server, path, authed)]
    answers = _while_health_answers(server, calls)
    for answer in answers[:3]:
        assert answer.status_code == 401 and answer.json()["error"]["type"] == "authentication_error"
    assert answers[3].status_code == 404 and len(answers[3].text) < 20_000  # no route; the path is not echoed whole
    # 100,000 characters: refused by the HTTP parser itself, at once, before any of our code runs.
    assert _get_raw(server, f"/v1/vector_stores/vs_{'a' * N}", authed).status_code == 400


def test_a_huge_model_name_answers_and_health_keeps_answering(server: RunningServer) -> None:
    body = {"model": "m" * N, "messages": [{"role": "user", "content": "hi"}]}
    headers = {"Authorization": f"Bearer {KEY}"}

    def call() -> httpx.Response:
        return httpx.post(f"{server.v1}/chat/completions", json=body, headers=headers, timeout=HANG_GUARD)

    for answer in _while_health_answers(server, [call] * 4):
        assert answer.status_code == 404, answer.text[:300]
        error = answer.json()["error"]
        assert error["param"] == "model" and error["code"] == "model_not_found"
        assert len(answer.text) < 20_000 and "GET /v1/models" in error["message"]  # bounded, and still says what to do


def test_a_huge_header_answers_and_health_keeps_answering(server: RunningServer) -> None:
    body = {"model": "echo/echo", "messages": [{"role": "user", "content": "hi"}]}
    secret = "v" * N

    def call(data: str) -> Callable[[], httpx.Response]:
        headers = {"Authorization": f"Bearer {KEY}", "X-Underlay-Provider-Data": data}
        return lambda: httpx.post(f"{server.v1}/chat/completions", json=body, headers=headers, timeout=HANG_GUARD)

    valid, broken = call('{"openai_api_key": "' + secret + '"}'), call('{"openai_api_key": "' + secret)
    answers = _while_health_answers(server, [valid, valid, broken, broken])
    assert [a.status_code for a in answers] == [200, 200, 400, 400], [a.text[:200] for a in answers]
    for answer in answers:
        assert secret[:64] not in answer.text and len(answer.text) < 20_000
