"""OpenAI-compatible presets wired by environment variables alone, through a real ``underlay run``.

The hosts themselves (Groq, Together, LM Studio…) cannot be reached from here, so a loopback STAND-IN
plays an OpenAI-compatible server (``GET /models``, ``POST /chat/completions``) at two addresses: one
for a hosted preset (``remote::groq``, moved with ``GROQ_BASE_URL`` and keyed by ``GROQ_API_KEY``) and
one for a local preset (``remote::lmstudio``, found by a bare ``LMSTUDIO_URL`` that gets ``/v1``). The
provider entries carry no config at all: what is proven is that each preset reads its own variables,
sends the key as a bearer token only where one is set, and that a hosted preset refuses to call out
without a key, naming the variable to set.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import openai
import pytest
from aiohttp import web

from tests.integration.harness import RunningServer, start_server
from tests.integration.wire_standins import Seen, StandIn

GROQ_KEY = "gsk_standin_4b7a19"
MODEL = "llama-3.1-8b-instant"


def openai_compatible_standin() -> StandIn:
    def routes(prefix: str, owner: str) -> dict[tuple[str, str], Any]:
        async def models(seen: Seen) -> web.StreamResponse:
            return web.json_response({"object": "list", "data": [{"id": MODEL, "object": "model", "owned_by": owner}]})

        async def chat(seen: Seen) -> web.StreamResponse:
            said = seen.body["messages"][-1]["content"]
            message = {"role": "assistant", "content": f"{owner} heard: {said}"}
            return web.json_response(
                {
                    "id": "chatcmpl-preset",
                    "object": "chat.completion",
                    "created": 1733500000,
                    "model": seen.body["model"],
                    "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
                    "usage": {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8},
                }
            )

        return {("GET", f"{prefix}/models"): models, ("POST", f"{prefix}/chat/completions"): chat}

    return StandIn("openai-compatible", {**routes("/openai/v1", "groq"), **routes("/v1", "lmstudio")}).start()


@pytest.fixture(scope="module")
def standin() -> Iterator[StandIn]:
    running = openai_compatible_standin()
    yield running
    running.stop()


@pytest.fixture(scope="module")
def server(standin: StandIn, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    config = {
        "apis": ["inference", "models"],
        "providers": {
            "inference": [
                {"provider_id": "groq", "provider_type": "remote::groq"},
                {"provider_id": "lmstudio", "provider_type": "remote::lmstudio"},
                {"provider_id": "together", "provider_type": "remote::together", "config": {"max_retries": 0}},
            ]
        },
        "models": [{"model_id": "together-llama", "provider_id": "together", "provider_model_id": MODEL}],
    }
    env = {
        "GROQ_API_KEY": GROQ_KEY,
        "GROQ_BASE_URL": f"{standin.root}/openai/v1",
        "LMSTUDIO_URL": standin.root,  # bare: the preset appends /v1
        "TOGETHER_API_KEY": "",
        "LMSTUDIO_API_KEY": "",
    }
    running = start_server(config, tmp_path_factory.mktemp("presets"), env=env)
    yield running
    running.stop()


def test_hosted_preset_reads_its_key_and_base_url_variables(server: RunningServer, standin: StandIn) -> None:
    client = server.openai()
    assert f"groq/{MODEL}" in {m.id for m in client.models.list().data}
    reply = client.chat.completions.create(model=f"groq/{MODEL}", messages=[{"role": "user", "content": "ping"}])
    assert reply.choices[0].message.content == "groq heard: ping"
    sent = standin.requests_to("/openai/v1/chat/completions")[-1]
    assert sent.headers["authorization"] == f"Bearer {GROQ_KEY}" and sent.body["model"] == MODEL


def test_local_preset_finds_its_server_by_url_and_sends_no_key(server: RunningServer, standin: StandIn) -> None:
    client = server.openai()
    reply = client.chat.completions.create(model=f"lmstudio/{MODEL}", messages=[{"role": "user", "content": "hey"}])
    assert reply.choices[0].message.content == "lmstudio heard: hey"
    sent = standin.requests_to("/v1/chat/completions")[-1]
    assert "authorization" not in sent.headers


def test_hosted_preset_without_a_key_names_the_variable(server: RunningServer, standin: StandIn) -> None:
    before = len(standin.seen)
    with pytest.raises(openai.AuthenticationError) as refused:
        server.openai().chat.completions.create(model="together-llama", messages=[{"role": "user", "content": "x"}])
    body = refused.value.body if isinstance(refused.value.body, dict) else {}
    message = body.get("error", body)["message"]
    assert "together" in message and "TOGETHER_API_KEY" in message
    assert len(standin.seen) == before  # refused before any request left


def test_no_traceback_in_the_server_log(server: RunningServer) -> None:
    assert "Traceback" not in server.log()
