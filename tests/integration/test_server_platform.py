"""The server around the providers, driven with the openai SDK and raw HTTP against a real subprocess.

The provider here is the external echo package (loaded through the entry-point group), so these tests
need no model weights and prove third-party discovery at the same time.
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


def test_model_metadata_in_openai_shape(echo_server: RunningServer) -> None:
    raw = httpx.get(f"{echo_server.v1}/models/echo/echo-embed").json()
    assert raw["object"] == "model" and raw["owned_by"] == "echo"
    assert raw["provider_id"] == "echo" and raw["model_type"] == "embedding"
    assert raw["embedding_dimension"] == 8
    model = echo_server.openai().models.retrieve("echo/echo")
    assert model.id == "echo/echo"
    assert model.model_extra["context_length"] == 1024


def test_unknown_model_is_404_envelope(echo_server: RunningServer) -> None:
    client = echo_server.openai()
    with pytest.raises(openai.NotFoundError) as info:
        client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "x"}])
    body = info.value.body
    assert body["type"] == "not_found_error" and "nope" in body["message"] and body["param"] == "model"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("missing-model")


@pytest.mark.parametrize(
    ("payload", "param"),
    [
        ({"model": "echo"}, "messages"),
        ({"model": "echo", "messages": [{"role": "user", "content": "x"}], "temperature": "hot"}, "temperature"),
        ({"model": "echo", "messages": [{"role": "user", "content": "x"}], "temperature": 7}, "temperature"),
        ({"model": "echo", "messages": [{"role": "wizard", "content": "x"}]}, "messages[0]"),
        ({"model": "echo", "messages": [{"role": "user"}]}, "messages[0]"),
        (
            {"model": "echo", "messages": [{"role": "user", "content": "x"}], "tool_choice": "required"},
            None,
        ),
    ],
)
def test_validation_errors_are_400_naming_the_field(
    echo_server: RunningServer, payload: dict, param: str | None
) -> None:
    response = httpx.post(f"{echo_server.v1}/chat/completions", json=payload)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    if param is not None:
        assert error["param"] is not None and error["param"].startswith(param)
        assert param.split("[")[0] in error["message"]
    assert "Traceback" not in response.text


def test_invalid_json_and_unknown_routes(echo_server: RunningServer) -> None:
    bad = httpx.post(
        f"{echo_server.v1}/chat/completions", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert bad.status_code == 400 and "JSON" in bad.json()["error"]["message"]
    missing = httpx.get(f"{echo_server.v1}/nowhere")
    assert missing.status_code == 404 and missing.json()["error"]["type"] == "not_found_error"
    wrong_method = httpx.put(f"{echo_server.v1}/chat/completions")
    assert wrong_method.status_code == 405 and "error" in wrong_method.json()


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


def test_streaming_with_usage(echo_server: RunningServer) -> None:
    stream = echo_server.openai().chat.completions.create(
        model="echo",
        messages=[{"role": "user", "content": "one two three"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "echo: one two three"
    assert chunks[-1].choices == [] and chunks[-1].usage.total_tokens == 8
    assert any(c.choices and c.choices[0].finish_reason == "stop" for c in chunks)


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


def test_embedding_model_cannot_chat(echo_server: RunningServer) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        echo_server.openai().chat.completions.create(model="echo-embed", messages=[{"role": "user", "content": "x"}])
    assert "embedding" in info.value.message
    vectors = echo_server.openai().embeddings.create(model="echo-embed", input=["a", "b"])
    assert len(vectors.data) == 2 and len(vectors.data[0].embedding) == 8


def test_register_and_delete_model(echo_server: RunningServer) -> None:
    created = httpx.post(
        f"{echo_server.v1}/models",
        json={"model_id": "my-echo", "provider_id": "echo", "provider_model_id": "echo"},
    )
    assert created.status_code == 200, created.text
    client = echo_server.openai()
    reply = client.chat.completions.create(model="my-echo", messages=[{"role": "user", "content": "hi"}])
    assert reply.model == "my-echo" and reply.choices[0].message.content == "echo: hi"
    clash = httpx.post(f"{echo_server.v1}/models", json={"model_id": "echo", "provider_id": "echo"})
    assert clash.status_code == 400
    bad_provider = httpx.post(f"{echo_server.v1}/models", json={"model_id": "x", "provider_id": "ghost"})
    assert bad_provider.status_code == 400 and bad_provider.json()["error"]["param"] == "provider_id"
    assert httpx.delete(f"{echo_server.v1}/models/my-echo").json()["deleted"] is True
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="my-echo", messages=[{"role": "user", "content": "hi"}])


def test_stored_chat_completions(echo_server: RunningServer) -> None:
    client = echo_server.openai()
    tag = str(time.time_ns())
    made = [
        client.chat.completions.create(
            model="echo",
            messages=[{"role": "developer", "content": "be brief"}, {"role": "user", "content": f"n{i}"}],
            store=True,
            metadata={"tag": tag, "i": str(i)},
        )
        for i in range(3)
    ]
    streamed = client.chat.completions.create(
        model="echo",
        messages=[{"role": "user", "content": "streamed one"}],
        store=True,
        stream=True,
        metadata={"tag": tag, "i": "s"},
    )
    streamed_id = [c.id for c in streamed][0]
    not_stored = client.chat.completions.create(model="echo", messages=[{"role": "user", "content": "x"}])

    fetched = client.chat.completions.retrieve(made[0].id)
    assert fetched.choices[0].message.content == "echo: n0"
    assert client.chat.completions.retrieve(streamed_id).choices[0].message.content == "echo: streamed one"
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.retrieve(not_stored.id)

    listed = client.chat.completions.list(metadata={"tag": tag}, limit=10)
    assert [c.id for c in listed.data] == [streamed_id] + [c.id for c in reversed(made)]
    first_page = client.chat.completions.list(metadata={"tag": tag}, limit=2, order="asc")
    assert [c.id for c in first_page.data] == [made[0].id, made[1].id] and first_page.has_more
    raw = httpx.get(
        f"{echo_server.v1}/chat/completions", params={"limit": 2, "order": "asc", "after": made[1].id}
    ).json()
    assert raw["data"][0]["id"] == made[2].id

    messages = client.chat.completions.messages.list(made[1].id)
    assert [m.content for m in messages.data] == ["be brief", "n1"]

    deleted = client.chat.completions.delete(made[0].id)
    assert deleted.deleted is True
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.retrieve(made[0].id)
    bad_limit = httpx.get(f"{echo_server.v1}/chat/completions", params={"limit": 0})
    assert bad_limit.status_code == 400 and bad_limit.json()["error"]["param"] == "limit"


def test_platform_routes(echo_server: RunningServer) -> None:
    assert httpx.get(f"{echo_server.v1}/health").json() == {"status": "OK"}
    assert httpx.get(f"{echo_server.v1}/version").json()["version"]
    routes = httpx.get(f"{echo_server.v1}/inspect/routes").json()["data"]
    assert {"method": "POST", "path": "/v1/chat/completions"}.items() <= routes[0].items() or any(
        r["path"] == "/v1/chat/completions" and r["method"] == "POST" for r in routes
    )
    spec = httpx.get(f"{echo_server.base_url}/openapi.json").json()
    assert "/v1/chat/completions" in spec["paths"] and "/v1/embeddings" in spec["paths"]
    assert httpx.get(f"{echo_server.base_url}/docs").status_code == 200
    providers = httpx.get(f"{echo_server.v1}/providers").json()["data"]
    assert providers[0]["provider_type"] == "remote::echo-test"
    assert httpx.get(f"{echo_server.v1}/health").headers["x-request-id"].startswith("req_")


def test_provider_data_header_must_be_json(echo_server: RunningServer) -> None:
    response = httpx.get(f"{echo_server.v1}/models", headers={"X-Underlay-Provider-Data": "not json"})
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "X-Underlay-Provider-Data"


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
