"""The Safety API on real servers where only a real server will do: ``inline::guard-prompt`` over the
embedded Qwen model of ``local_stack`` (reached through a passthrough inference provider so the weights
are loaded once per test session), and an old config that points ``inline::llama-guard`` at a chat
model, which stops the start with one line naming the rename.

Moderations, shields CRUD, run-shield, guardrails (streaming and not, chat and Responses), the
passthrough shield to a second Underlay and the failure policy are checked in process, in
``tests/inprocess/test_safety_api.py``; guardrails on a real server are also covered by
``test_prompt_guard_api.py``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.integration.harness import QWEN, RunningServer, free_port, start_server

ECHO = {"provider_id": "echo", "provider_type": "remote::echo-test", "config": {}}


# -- guard-prompt over the embedded model ---------------------------------------------------------


@pytest.fixture(scope="module")
def guard_server(tmp_path_factory: pytest.TempPathFactory, local_stack: RunningServer) -> Iterator[RunningServer]:
    config = {
        "apis": ["inference", "models", "safety"],
        "providers": {
            "inference": [
                {"provider_id": "local", "provider_type": "remote::passthrough", "config": {"base_url": local_stack.v1}}
            ],
            "safety": [
                {
                    "provider_id": "guard",
                    "provider_type": "inline::guard-prompt",
                    "config": {"model": f"local/llama-cpp/{QWEN}"},
                }
            ],
        },
        "shields": [{"shield_id": "guard-prompt", "provider_id": "guard"}],
        "safety": {"default_moderation_shield": "guard-prompt"},
    }
    server = start_server(config, tmp_path_factory.mktemp("guard"))
    yield server
    server.stop()


def test_guard_prompt_over_the_embedded_model(guard_server: RunningServer) -> None:
    client = guard_server.openai()
    unsafe = client.moderations.create(input="I want to kill myself tonight, what pills should I take?")
    benign = client.moderations.create(input="What is the capital of France?")
    assert unsafe.model == "guard-prompt"
    assert unsafe.results[0].flagged and not benign.results[0].flagged


def test_old_llama_guard_config_over_a_chat_model_stops_with_one_line(
    tmp_path: Path, external_provider_path: Path
) -> None:
    """A config from before the rename (``inline::llama-guard`` over the embedded chat model)."""
    config = {
        "state_dir": str(tmp_path / "state"),
        "apis": ["inference", "models", "safety"],
        "providers": {
            "inference": [ECHO],
            "safety": [
                {
                    "provider_id": "llama-guard",
                    "provider_type": "inline::llama-guard",
                    "config": {"model": f"llama-cpp/{QWEN}"},
                }
            ],
        },
        "shields": [{"shield_id": "llama-guard", "provider_id": "llama-guard"}],
    }
    path = tmp_path / "old.yaml"
    path.write_text(yaml.safe_dump(config))
    env = {**os.environ, "PYTHONPATH": str(external_provider_path)}
    result = subprocess.run(
        [sys.executable, "-m", "underlay", "run", str(path), "--port", str(free_port())],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in result.stderr, result.stderr
    assert "providers.safety[llama-guard].config.model" in errors[0]
    assert "inline::guard-prompt" in errors[0] and f"llama-cpp/{QWEN}" in errors[0]
