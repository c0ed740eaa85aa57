"""The server's API shapes around a provider, in process: models, chat errors, limits, SSE, stored completions.

The provider is the external echo package, discovered through the ``underlay.providers`` entry-point
group; the app is the real one over ``httpx.ASGITransport`` (see :mod:`tests.inprocess.harness`).
That discovery, graceful shutdown and secret redaction in logs keep their real-server tests in
``tests/integration/test_server_platform.py``.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator

import openai
import pytest

from tests.inprocess.harness import InProcessServer


async def test_echo_plugin_serves_chat_in_process(echo_app: InProcessServer) -> None:
    client = echo_app.openai()
    ids = {m.id async for m in client.models.list()}
    assert {"echo/echo", "echo/echo-embed"} <= ids
    reply = await client.chat.completions.create(model="echo", messages=[{"role": "user", "content": "hello there"}])
    assert reply.choices[0].message.content == "echo: hello there"
    assert reply.usage is not None and reply.usage.total_tokens == 6


async def test_model_metadata_in_openai_shape(echo_app: InProcessServer) -> None:
    raw = (await echo_app.http.get("/v1/models/echo/echo-embed")).json()
    assert raw["object"] == "model" and raw["owned_by"] == "echo"
    assert raw["provider_id"] == "echo" and raw["model_type"] == "embedding"
    assert raw["embedding_dimension"] == 8
    model = await echo_app.openai().models.retrieve("echo/echo")
    assert model.id == "echo/echo"
    assert model.model_extra is not None and model.model_extra["context_length"] == 1024


async def test_unknown_model_is_404_envelope(echo_app: InProcessServer) -> None:
    client = echo_app.openai()
    with pytest.raises(openai.NotFoundError) as info:
        await client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "x"}])
    body = info.value.body
    assert isinstance(body, dict)
    assert body["type"] == "not_found_error" and "nope" in body["message"] and body["param"] == "model"
    with pytest.raises(openai.NotFoundError):
        await client.models.retrieve("missing-model")


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
async def test_validation_errors_are_400_naming_the_field(
    echo_app: InProcessServer, payload: dict, param: str | None
) -> None:
    response = await echo_app.http.post("/v1/chat/completions", json=payload)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    if param is not None:
        assert error["param"] is not None and error["param"].startswith(param)
        assert param.split("[")[0] in error["message"]
    assert "Traceback" not in response.text


async def test_invalid_json_and_unknown_routes(echo_app: InProcessServer) -> None:
    bad = await echo_app.http.post(
        "/v1/chat/completions", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert bad.status_code == 400 and "JSON" in bad.json()["error"]["message"]
    missing = await echo_app.http.get("/v1/nowhere")
    assert missing.status_code == 404 and missing.json()["error"]["type"] == "not_found_error"
    wrong_method = await echo_app.http.put("/v1/chat/completions")
    assert wrong_method.status_code == 405 and "error" in wrong_method.json()


async def test_body_size_limit_is_413(echo_app: InProcessServer) -> None:
    big = {"model": "echo", "messages": [{"role": "user", "content": "x" * 70000}]}
    response = await echo_app.http.post("/v1/chat/completions", json=big)
    assert response.status_code == 413
    assert "max_request_bytes" in response.json()["error"]["message"]

    async def chunks() -> AsyncIterator[bytes]:  # no content-length: the limit must hold for chunked bodies too
        yield b'{"model": "echo", "messages": [{"role": "user", "content": "'
        for _ in range(10):
            yield b"y" * 10000
        yield b'"}]}'

    chunked = await echo_app.http.post(
        "/v1/chat/completions", content=chunks(), headers={"content-type": "application/json"}
    )
    assert "content-length" not in chunked.request.headers
    assert chunked.status_code == 413


async def test_streaming_with_usage(echo_app: InProcessServer) -> None:
    stream = await echo_app.openai().chat.completions.create(
        model="echo",
        messages=[{"role": "user", "content": "one two three"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [chunk async for chunk in stream]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "echo: one two three"
    last_usage = chunks[-1].usage
    assert chunks[-1].choices == [] and last_usage is not None and last_usage.total_tokens == 8
    assert any(c.choices and c.choices[0].finish_reason == "stop" for c in chunks)


async def test_failure_mid_stream_is_an_error_event(echo_app: InProcessServer) -> None:
    async with echo_app.http.stream(
        "POST",
        "/v1/chat/completions",
        json={"model": "echo-fail", "messages": [{"role": "user", "content": "a b c d"}], "stream": True},
    ) as response:
        assert response.status_code == 200
        frames = [line async for line in response.aiter_lines() if line.startswith("data: ")]
    assert len(frames) == 3  # two chunks, then the error event; the stream ended cleanly
    error = json.loads(frames[-1][len("data: ") :])["error"]
    assert "echo" in error["message"] and error["type"] == "upstream_error"
    with pytest.raises(openai.APIError):
        stream = await echo_app.openai().chat.completions.create(
            model="echo-fail", messages=[{"role": "user", "content": "a b c d"}], stream=True
        )
        _ = [chunk async for chunk in stream]


async def test_embedding_model_cannot_chat(echo_app: InProcessServer) -> None:
    client = echo_app.openai()
    with pytest.raises(openai.BadRequestError) as info:
        await client.chat.completions.create(model="echo-embed", messages=[{"role": "user", "content": "x"}])
    assert "embedding" in info.value.message
    vectors = await client.embeddings.create(model="echo-embed", input=["a", "b"])
    assert len(vectors.data) == 2 and len(vectors.data[0].embedding) == 8


async def test_register_and_delete_model(echo_app: InProcessServer) -> None:
    created = await echo_app.http.post(
        "/v1/models", json={"model_id": "my-echo", "provider_id": "echo", "provider_model_id": "echo"}
    )
    assert created.status_code == 200, created.text
    client = echo_app.openai()
    reply = await client.chat.completions.create(model="my-echo", messages=[{"role": "user", "content": "hi"}])
    assert reply.model == "my-echo" and reply.choices[0].message.content == "echo: hi"
    clash = await echo_app.http.post("/v1/models", json={"model_id": "echo", "provider_id": "echo"})
    assert clash.status_code == 400
    bad_provider = await echo_app.http.post("/v1/models", json={"model_id": "x", "provider_id": "ghost"})
    assert bad_provider.status_code == 400 and bad_provider.json()["error"]["param"] == "provider_id"
    assert (await echo_app.http.delete("/v1/models/my-echo")).json()["deleted"] is True
    with pytest.raises(openai.NotFoundError):
        await client.chat.completions.create(model="my-echo", messages=[{"role": "user", "content": "hi"}])


async def test_stored_chat_completions(echo_app: InProcessServer) -> None:
    client = echo_app.openai()
    tag = str(time.time_ns())
    made = [
        await client.chat.completions.create(
            model="echo",
            messages=[{"role": "developer", "content": "be brief"}, {"role": "user", "content": f"n{i}"}],
            store=True,
            metadata={"tag": tag, "i": str(i)},
        )
        for i in range(3)
    ]
    streamed = await client.chat.completions.create(
        model="echo",
        messages=[{"role": "user", "content": "streamed one"}],
        store=True,
        stream=True,
        metadata={"tag": tag, "i": "s"},
    )
    streamed_id = [c.id async for c in streamed][0]
    not_stored = await client.chat.completions.create(model="echo", messages=[{"role": "user", "content": "x"}])

    fetched = await client.chat.completions.retrieve(made[0].id)
    assert fetched.choices[0].message.content == "echo: n0"
    assert (await client.chat.completions.retrieve(streamed_id)).choices[0].message.content == "echo: streamed one"
    with pytest.raises(openai.NotFoundError):
        await client.chat.completions.retrieve(not_stored.id)

    listed = await client.chat.completions.list(metadata={"tag": tag}, limit=10)
    assert [c.id for c in listed.data] == [streamed_id] + [c.id for c in reversed(made)]
    first_page = await client.chat.completions.list(metadata={"tag": tag}, limit=2, order="asc")
    assert [c.id for c in first_page.data] == [made[0].id, made[1].id] and first_page.has_more
    raw = (
        await echo_app.http.get("/v1/chat/completions", params={"limit": 2, "order": "asc", "after": made[1].id})
    ).json()
    assert raw["data"][0]["id"] == made[2].id

    messages = await client.chat.completions.messages.list(made[1].id)
    assert [m.content for m in messages.data] == ["be brief", "n1"]

    deleted = await client.chat.completions.delete(made[0].id)
    assert deleted.deleted is True
    with pytest.raises(openai.NotFoundError):
        await client.chat.completions.retrieve(made[0].id)
    bad_limit = await echo_app.http.get("/v1/chat/completions", params={"limit": 0})
    assert bad_limit.status_code == 400 and bad_limit.json()["error"]["param"] == "limit"


async def test_platform_routes(echo_app: InProcessServer) -> None:
    http = echo_app.http
    assert (await http.get("/v1/health")).json() == {"status": "OK"}
    assert (await http.get("/v1/version")).json()["version"]
    routes = (await http.get("/v1/inspect/routes")).json()["data"]
    assert any(r["path"] == "/v1/chat/completions" and r["method"] == "POST" for r in routes)
    spec = (await http.get("/openapi.json")).json()
    assert "/v1/chat/completions" in spec["paths"] and "/v1/embeddings" in spec["paths"]
    assert (await http.get("/docs")).status_code == 200
    providers = (await http.get("/v1/providers")).json()["data"]
    assert providers[0]["provider_type"] == "remote::echo-test"
    assert (await http.get("/v1/health")).headers["x-request-id"].startswith("req_")


async def test_provider_data_header_must_be_json(echo_app: InProcessServer) -> None:
    response = await echo_app.http.get("/v1/models", headers={"X-Underlay-Provider-Data": "not json"})
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "X-Underlay-Provider-Data"
