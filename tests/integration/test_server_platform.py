"""The server around the providers, driven with the openai SDK and raw HTTP against a real subprocess.

The provider here is the external echo package (loaded through the entry-point group), so these tests
need no model weights and prove third-party discovery at the same time. Only what needs a real process
and socket stays here: discovery by ``underlay run``, body limits on chunked HTTP/1.1 bodies, a stream
failing on a live connection, redaction in the process log, graceful shutdown. The API shapes
(models, validation errors, SSE with usage, stored completions, platform routes) are checked in
process, in ``tests/inprocess/test_server_api.py``.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import httpx
import openai
import pytest

from tests.integration.harness import RunningServer, start_server


def test_external_provider_is_discovered_and_serves(echo_server: RunningServer) -> None:
    client = echo_server.openai()
    ids = {m.id for m in client.models.list().data}
    assert {"echo/echo", "echo/echo-embed"} <= ids
    reply = client.chat.completions.create(model="echo", messages=[{"role": "user", "content": "hello there"}])
    assert reply.choices[0].message.content == "echo: hello there"
    assert reply.model == "echo"
    assert reply.usage is not None and reply.usage.total_tokens == 6


def test_body_size_limit_is_413(echo_server: RunningServer) -> None:
    big = {"model": "echo", "messages": [{"role": "user", "content": "x" * 70000}]}
    response = httpx.post(f"{echo_server.v1}/chat/completions", json=big)
    assert response.status_code == 413
    assert "max_request_bytes" in response.json()["error"]["message"]

    def chunks():  # no content-length: the limit must hold for chunked bodies too
        yield b'{"model": "echo", "messages": [{"role": "user", "content": "'
        for _ in range(10):
            yield b"y" * 10000
        yield b'"}]}'

    chunked = httpx.post(
        f"{echo_server.v1}/chat/completions", content=chunks(), headers={"content-type": "application/json"}
    )
    assert chunked.status_code == 413


def test_failure_mid_stream_is_an_error_event(echo_server: RunningServer) -> None:
    with httpx.stream(
        "POST",
        f"{echo_server.v1}/chat/completions",
        json={"model": "echo-fail", "messages": [{"role": "user", "content": "a b c d"}], "stream": True},
    ) as response:
        assert response.status_code == 200
        frames = [line for line in response.iter_lines() if line.startswith("data: ")]
    assert len(frames) == 3  # two chunks, then the error event; the connection closed cleanly
    error = json.loads(frames[-1][len("data: ") :])["error"]
    assert "echo" in error["message"] and error["type"] == "upstream_error"
    with pytest.raises(openai.APIError):
        list(
            echo_server.openai().chat.completions.create(
                model="echo-fail", messages=[{"role": "user", "content": "a b c d"}], stream=True
            )
        )


def test_secrets_are_redacted(tmp_path: Path, external_provider_path: Path) -> None:
    config = {
        "apis": ["inference", "models"],
        "providers": {
            "inference": [
                {
                    "provider_id": "echo",
                    "provider_type": "remote::echo-test",
                    "config": {"api_key": "sk-very-secret", "prefix": "> "},
                }
            ]
        },
    }
    server = start_server(config, tmp_path, extra_pythonpath=[external_provider_path])
    try:
        body = httpx.get(f"{server.v1}/providers").text
        assert "sk-very-secret" not in body and "********" in body
    finally:
        server.stop()
    assert "sk-very-secret" not in server.log()


def test_graceful_shutdown_lets_streams_finish(tmp_path: Path, external_provider_path: Path) -> None:
    config = {
        "apis": ["inference", "models"],
        "providers": {
            "inference": [
                {"provider_id": "echo", "provider_type": "remote::echo-test", "config": {"delay_seconds": 0.3}}
            ]
        },
    }
    server = start_server(config, tmp_path, extra_pythonpath=[external_provider_path])
    received: list[str] = []

    def consume() -> None:
        stream = server.openai().chat.completions.create(
            model="echo-slow", messages=[{"role": "user", "content": "a b c d e"}], stream=True
        )
        for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                received.append(chunk.choices[0].delta.content)

    worker = threading.Thread(target=consume)
    worker.start()
    time.sleep(0.5)
    code = server.stop()
    worker.join(10)
    assert "".join(received) == "echo: a b c d e"
    assert code == 0
