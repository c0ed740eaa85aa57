"""Prompts end to end: a real server, the openai SDK, and the embedded model reading a rendered prompt.

What it proves that the in-process tests cannot: the rendered template is what the model reads as its
instructions. With greedy decoding the model's answer is a function of its context, so a response made
from ``prompt`` must answer exactly as one given the same text as ``instructions``, in the foreground
and as a background job (which runs from the stored, already-rendered request).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from tests.integration.harness import SMOLLM2, RunningServer, start_server

pytestmark = pytest.mark.slow


def _config() -> dict[str, Any]:
    return {
        "apis": ["inference", "models", "prompts", "responses"],
        "providers": {
            "inference": [
                {
                    "provider_id": "llama-cpp",
                    "provider_type": "inline::llama-cpp",
                    "config": {"models": [{"name": SMOLLM2, "packaged": SMOLLM2, "n_ctx": 2048}]},
                }
            ],
            "responses": [{"provider_id": "builtin", "provider_type": "inline::builtin", "config": {}}],
        },
        "jobs": {"workers": 1, "lease_seconds": 5, "poll_seconds": 0.1},
    }


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    running = start_server(_config(), tmp_path_factory.mktemp("prompts"), timeout=300)
    yield running
    running.stop()


def test_a_prompt_becomes_the_models_instructions(server: RunningServer) -> None:
    client = openai.OpenAI(base_url=server.v1, api_key="unused", max_retries=0)
    http = httpx.Client(base_url=server.v1, timeout=60)
    created = http.post(
        "/prompts", json={"prompt": "You are a {{role}}. Always mention the word {{word}}.", "metadata": {"a": "b"}}
    )
    assert created.status_code == 200, created.text
    prompt_id = created.json()["id"]
    http.post(f"/prompts/{prompt_id}/versions", json={"prompt": "Answer in French, {{role}} {{word}}."})
    rendered = "You are a pirate. Always mention the word banana."
    common: dict[str, Any] = {"model": SMOLLM2, "input": "Describe the sea.", "max_output_tokens": 16, "temperature": 0}

    from_prompt = client.responses.create(
        prompt={"id": prompt_id, "version": "1", "variables": {"role": "pirate", "word": "banana"}}, **common
    )
    assert from_prompt.status in ("completed", "incomplete"), from_prompt.error
    assert from_prompt.instructions == rendered
    assert from_prompt.prompt is not None and from_prompt.prompt.id == prompt_id and from_prompt.prompt.version == "1"
    from_text = client.responses.create(instructions=rendered, **common)
    assert from_prompt.output_text and from_prompt.output_text == from_text.output_text

    background = client.responses.create(
        prompt={"id": prompt_id, "version": "1", "variables": {"role": "pirate", "word": "banana"}},
        background=True,
        **common,
    )
    deadline = time.monotonic() + 120
    while background.status in ("queued", "in_progress") and time.monotonic() < deadline:
        time.sleep(0.2)
        background = client.responses.retrieve(background.id)
    assert background.status in ("completed", "incomplete"), background.error
    assert background.instructions == rendered and background.output_text == from_text.output_text
    assert background.prompt is not None and background.prompt.version == "1"

    with pytest.raises(openai.BadRequestError) as caught:
        client.responses.create(prompt={"id": prompt_id, "variables": {"role": "pirate"}}, **common)
    error = caught.value.response.json()["error"]
    assert error["param"] == "prompt.variables.word" and error["code"] == "missing_variable"
    http.close()
