"""The remote adapters pointed at a second, real Underlay instance (the echo server fixture).

Two hops, both real servers on loopback: client → Underlay B (remote adapter) → Underlay A → provider.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from tests.integration.harness import RunningServer, free_port, start_server


@pytest.fixture(scope="module")
def front(echo_server: RunningServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    upstream = echo_server.v1
    config = {
        "apis": ["inference", "models"],
        "providers": {
            "inference": [
                {
                    "provider_id": "pt",
                    "provider_type": "remote::passthrough",
                    "config": {
                        "base_url": upstream,
                        "allowed_models": ["echo/echo", "echo/echo-fail", "echo/echo-embed"],
                    },
                },
                {"provider_id": "vl", "provider_type": "remote::vllm", "config": {"url": upstream}},
                {
                    "provider_id": "oa",
                    "provider_type": "remote::openai",
                    "config": {"base_url": upstream, "api_key": "sk-front-secret"},
                },
                {
                    "provider_id": "down",
                    "provider_type": "remote::passthrough",
                    "config": {"base_url": f"http://127.0.0.1:{free_port()}/v1", "max_retries": 1, "backoff": 0.01},
                },
            ]
        },
    }
    server = start_server(config, tmp_path_factory.mktemp("front"))
    yield server
    server.stop()


def test_discovery_and_allow_list(front: RunningServer) -> None:
    ids = {m.id for m in front.openai().models.list().data}
    assert {"pt/echo/echo", "pt/echo/echo-fail", "pt/echo/echo-embed"} <= ids
    assert "pt/echo/echo-slow" not in ids  # outside the allow list
    assert "vl/echo/echo-slow" in ids and "oa/echo/echo" in ids
    embed = front.openai().models.retrieve("pt/echo/echo-embed")
    assert embed.model_extra["model_type"] == "embedding"


@pytest.mark.parametrize("model", ["pt/echo/echo", "vl/echo/echo", "oa/echo/echo"])
def test_chat_through_each_adapter(front: RunningServer, model: str) -> None:
    client = front.openai()
    reply = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "two hops"}])
    assert reply.choices[0].message.content == "echo: two hops" and reply.model == model
    chunks = list(
        client.chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": "a b c"}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "echo: a b c"
    assert chunks[-1].usage is not None


def test_completions_and_embeddings(front: RunningServer) -> None:
    client = front.openai()
    text = client.completions.create(model="pt/echo/echo", prompt="abc")
    assert text.choices[0].text == "echo: abc"
    vectors = client.embeddings.create(model="pt/echo/echo-embed", input=["x", "y"])
    assert [d.index for d in vectors.data] == [0, 1] and len(vectors.data[0].embedding) == 8


def test_upstream_errors_are_mapped(front: RunningServer) -> None:
    client = front.openai()
    with pytest.raises(openai.APIStatusError) as info:
        client.chat.completions.create(model="down/anything", messages=[{"role": "user", "content": "x"}])
    assert info.value.status_code == 404  # never discovered: the upstream is down
    registered = httpx.post(f"{front.v1}/models", json={"model_id": "down-model", "provider_id": "down"})
    assert registered.status_code == 200
    with pytest.raises(openai.APIStatusError) as info:
        client.chat.completions.create(model="down-model", messages=[{"role": "user", "content": "x"}])
    assert info.value.status_code == 503 and "down" in info.value.message


def test_mid_stream_failure_crosses_two_hops(front: RunningServer) -> None:
    with httpx.stream(
        "POST",
        f"{front.v1}/chat/completions",
        json={"model": "pt/echo/echo-fail", "messages": [{"role": "user", "content": "a b c d"}], "stream": True},
    ) as response:
        frames = [line for line in response.iter_lines() if line.startswith("data: ")]
    assert response.status_code == 200
    error = json.loads(frames[-1][len("data: ") :])["error"]
    assert "pt" in error["message"] and "mid-stream" in error["message"]


def test_secret_stays_out_of_providers_listing(front: RunningServer, tmp_path: Path) -> None:
    assert "sk-front-secret" not in httpx.get(f"{front.v1}/providers").text
