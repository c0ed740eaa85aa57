"""Deployed agents end to end: a real server, the embedded Qwen model, and the openai SDK calling
``model="agent/<name>"`` through chat completions (streamed and not) and Responses.

What it proves that the in-process tests cannot: the agent's declared client-side function tool reaches
a real model through the agent's loop, and the model's call comes back to the caller as OpenAI's API
returns it (chat: ``tool_calls`` with ``finish_reason`` tool_calls; Responses: a ``function_call`` item),
never run on the server. Decoding is greedy so the outcome is deterministic.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import openai
import pytest

from tests.integration.harness import QWEN, RunningServer, local_config, start_server

pytestmark = pytest.mark.slow

WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "Current weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}
ASK = "What's the weather in Paris right now?"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    config = local_config()
    config["apis"] = ["inference", "models", "agents", "responses"]
    config["providers"]["responses"] = [{"provider_id": "builtin", "provider_type": "inline::builtin", "config": {}}]
    running = start_server(config, tmp_path_factory.mktemp("agents"), timeout=300)
    deployed = httpx.post(
        f"{running.v1}/agents",
        json={
            "name": "weather-desk",
            "model": QWEN,
            "instructions": "You answer weather questions using the get_weather tool.",
            "tools": [WEATHER],
            "temperature": 0,
            "max_output_tokens": 64,
        },
        timeout=30,
    )
    assert deployed.status_code == 200, deployed.text
    yield running
    running.stop()


@pytest.fixture(scope="module")
def client(server: RunningServer) -> openai.OpenAI:
    return server.openai(timeout=600)


def test_chat_completion_gives_the_agents_function_call_back(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(model="agent/weather-desk", messages=[{"role": "user", "content": ASK}])
    choice = reply.choices[0]
    assert reply.model == "agent/weather-desk"
    assert choice.finish_reason == "tool_calls", choice
    (call,) = choice.message.tool_calls or []
    assert call.type == "function" and call.function.name == "get_weather"
    assert "paris" in json.loads(call.function.arguments)["city"].lower()


def test_streamed_chat_completion_gives_the_call_back(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model="agent/weather-desk", messages=[{"role": "user", "content": ASK}], stream=True
    )
    chunks = list(stream)
    calls = [d for c in chunks if c.choices for d in c.choices[0].delta.tool_calls or []]
    assert [d.function.name for d in calls if d.function] == ["get_weather"]
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_responses_gives_a_function_call_item(client: openai.OpenAI) -> None:
    response = client.responses.create(model="agent/weather-desk", input=ASK)
    calls = [item for item in response.output if item.type == "function_call"]
    assert [c.name for c in calls] == ["get_weather"], response.output
    assert "paris" in json.loads(calls[0].arguments)["city"].lower()
