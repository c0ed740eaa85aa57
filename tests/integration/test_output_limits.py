"""Output limits past the model's context are refused up front, naming the field and the limit.

A real server with SmolLM2 in llama.cpp (``n_ctx`` 2048, reported as ``context_length``) and the same
weights registered a second time under an id whose config ``metadata`` says ``context_length: 512``.
Before the check, ``max_tokens`` far beyond the context went to the provider unchecked.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import openai
import pytest

from tests.integration.harness import SMOLLM2, RunningServer, local_config, start_server

pytestmark = pytest.mark.slow

SMALL = "small-context"
DISCOVERED = f"llama-cpp/{SMOLLM2}"  # its bare alias goes to none: SMALL is configured on the same weights


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    config = local_config()
    config["apis"] = ["inference", "models", "conversations", "responses"]
    config["providers"]["inference"] = [
        {
            "provider_id": "llama-cpp",
            "provider_type": "inline::llama-cpp",
            "config": {"models": [{"name": SMOLLM2, "packaged": SMOLLM2, "n_ctx": 2048}]},
        }
    ]
    config["providers"]["responses"] = [{"provider_id": "builtin", "provider_type": "inline::builtin"}]
    config["models"] = [
        {
            "model_id": SMALL,
            "provider_id": "llama-cpp",
            "provider_model_id": SMOLLM2,
            "metadata": {"context_length": 512},
        }
    ]
    running = start_server(config, tmp_path_factory.mktemp("limits"), timeout=300)
    yield running
    running.stop()


def _refused(call: Any, field: str, most: int) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        call()
    body = info.value.body
    assert isinstance(body, dict) and body["param"] == field, body
    assert f"at most {most}" in body["message"] and "context length" in body["message"], body["message"]


def test_limits_past_the_llama_cpp_context_are_400(server: RunningServer) -> None:
    client = server.openai(timeout=120)
    assert client.models.retrieve(DISCOVERED).model_extra["context_length"] == 2048
    messages: Any = [{"role": "user", "content": "Hi"}]
    _refused(
        lambda: client.chat.completions.create(model=DISCOVERED, messages=messages, max_tokens=2048), "max_tokens", 2047
    )
    _refused(
        lambda: client.chat.completions.create(model=DISCOVERED, messages=messages, max_completion_tokens=10**9),
        "max_completion_tokens",
        2047,
    )
    _refused(lambda: client.completions.create(model=DISCOVERED, prompt="Hi", max_tokens=4096), "max_tokens", 2047)
    _refused(
        lambda: client.responses.create(model=DISCOVERED, input="Hi", max_output_tokens=100_000),
        "max_output_tokens",
        2047,
    )
    _refused(
        lambda: client.responses.create(model=DISCOVERED, input="Hi", max_output_tokens=5000, background=True),
        "max_output_tokens",
        2047,
    )
    within = client.chat.completions.create(model=DISCOVERED, messages=messages, max_tokens=4)
    assert within.usage is not None and within.usage.completion_tokens <= 4


def test_registered_context_length_metadata_is_the_limit(server: RunningServer) -> None:
    client = server.openai(timeout=120)
    assert client.models.retrieve(SMALL).model_extra["context_length"] == 512
    messages: Any = [{"role": "user", "content": "Hi"}]
    _refused(lambda: client.chat.completions.create(model=SMALL, messages=messages, max_tokens=512), "max_tokens", 511)
    answer = client.chat.completions.create(model=SMALL, messages=messages, max_tokens=3)
    assert answer.model == SMALL and answer.choices[0].finish_reason in ("length", "stop")
