"""promptfoo with Underlay as its OpenAI-compatible provider: a model and a deployed agent (slow: npm, Node 22).

Runs ``scripts/promptfoo_eval.py``, which installs promptfoo and Node 22 from the npm registry into
``.cache/promptfoo`` (once) and runs ``promptfoo eval`` offline. The config is the one docs/evals.md
shows (``tests/fixtures/promptfoo/promptfooconfig.yaml``, pointed at this test's port): one prompt, two
targets, ``openai:chat:<model>`` and ``openai:chat:agent/<name>``, so promptfoo's own OpenAI provider
calls Underlay's chat completions for the model and for the agent's loop. A missing promptfoo (no npm,
no registry) fails the test, never skips it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.integration.harness import QWEN, ROOT, RunningServer, local_config, start_server

pytestmark = pytest.mark.slow
SCRIPT = ROOT / "scripts" / "promptfoo_eval.py"
CONFIG = ROOT / "tests" / "fixtures" / "promptfoo" / "promptfooconfig.yaml"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    config = local_config(apis=["inference", "models", "agents", "conversations", "responses"])
    config["providers"]["responses"] = [{"provider_id": "builtin", "provider_type": "inline::builtin", "config": {}}]
    running = start_server(config, tmp_path_factory.mktemp("promptfoo"), timeout=300)
    deployed = httpx.post(
        f"{running.v1}/agents",
        json={
            "name": "capitals-desk",
            "model": QWEN,
            "instructions": "You answer geography questions. Reply with the name of the city only.",
            "temperature": 0,
            "max_output_tokens": 32,
        },
        timeout=30,
    )
    assert deployed.status_code == 200, deployed.text
    yield running
    running.stop()


def test_the_docs_page_shows_the_config_this_test_runs() -> None:
    page = (ROOT / "docs" / "evals.md").read_text()
    assert f"```yaml\n{CONFIG.read_text()}```" in page


def test_promptfoo_evaluates_a_model_and_a_deployed_agent(server: RunningServer, tmp_path: Path) -> None:
    config = tmp_path / "promptfooconfig.yaml"
    config.write_text(CONFIG.read_text().replace("127.0.0.1:8321", f"127.0.0.1:{server.port}"))
    output = tmp_path / "results.json"
    done = subprocess.run(
        [sys.executable, str(SCRIPT), str(config), "--output", str(output)],
        capture_output=True,
        text=True,
        timeout=1500,
    )
    assert done.returncode != 2, f"promptfoo could not be installed: {done.stderr.strip()}"
    results = json.loads(output.read_text())["results"]["results"]
    seen = {(r["provider"]["label"], r["testCase"]["description"]): r for r in results}
    assert set(seen) == {
        (target, test) for target in ("model", "agent") for test in ("capital of France", "capital of Japan")
    }, done.stdout
    for key, result in seen.items():
        assert not result.get("error"), f"{key}: {result.get('error')}"
    assert done.returncode == 0, done.stdout + done.stderr
    assert "4 of 4 passed" in done.stdout
