"""``underlay agent deploy|ls|show|rollback`` against a real server on loopback.

The server runs only the Agents API (deploying needs no model when the folder has no knowledge); the
commands run as a user runs them, through ``underlay.cli.main.main`` and the SDK over HTTP. What this
proves: a folder's environment names the server, each deploy is a new version, ``rollback`` with no
``--to`` restores the previous one, and mistakes are one line with a non-zero exit.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.integration.harness import RunningServer, start_server
from underlay.cli.main import main


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    running = start_server({"apis": ["agents"]}, tmp_path_factory.mktemp("agent-deploy"), timeout=120)
    yield running
    running.stop()


def _folder(root: Path, base_url: str, instructions: str) -> Path:
    folder = root / "desk"
    folder.mkdir(exist_ok=True)
    (folder / "agent.yaml").write_text(
        "name: desk\n"
        "description: answers questions\n"
        "model: local-model\n"
        f"instructions: {json.dumps(instructions)}\n"
        "temperature: 0\n"
        "environments:\n"
        f"  prod: {{base_url: {json.dumps(base_url)}, models: {{local-model: served/model-a}}}}\n",
        encoding="utf-8",
    )
    return folder


def test_deploy_ls_show_rollback(server: RunningServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = _folder(tmp_path, server.v1, "first")
    assert main(["agent", "deploy", str(folder), "--env", "prod"]) == 0
    assert "deployed desk version 1 (default)" in capsys.readouterr().out
    _folder(tmp_path, server.v1, "second")
    assert main(["agent", "deploy", str(folder), "--env", "prod"]) == 0
    assert "version 2 (default)" in capsys.readouterr().out

    stored = httpx.get(f"{server.v1}/agents/desk").json()
    assert stored["version"] == 2 and stored["definition"]["instructions"] == "second"
    assert stored["definition"]["model"] == "served/model-a"  # the environment's model mapping applied
    assert stored["definition"]["description"] == "answers questions"

    assert main(["agent", "ls", "--base-url", server.v1]) == 0
    listing = capsys.readouterr().out.splitlines()
    assert listing[0].split() == ["NAME", "VERSION", "LATEST", "MODEL"]
    assert listing[1].split() == ["desk", "2", "2", "served/model-a"]

    assert main(["agent", "rollback", "desk", "--dir", str(folder), "--env", "prod"]) == 0
    assert "default is now version 1 (latest 2)" in capsys.readouterr().out
    assert main(["agent", "show", "desk", "--base-url", server.v1]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["version"] == 1 and shown["definition"]["instructions"] == "first"
    assert main(["agent", "rollback", "desk", "--to", "2", "--base-url", server.v1]) == 0
    capsys.readouterr()

    assert main(["agent", "rollback", "desk", "--to", "7", "--base-url", server.v1]) == 1
    error = capsys.readouterr().err
    assert error.startswith("error: the server answered 400") and "versions are 1 to 2" in error
    assert len(error.strip().splitlines()) == 1
    assert main(["agent", "show", "nobody", "--base-url", server.v1]) == 1
    assert "404" in capsys.readouterr().err


def test_no_server_named_is_one_line(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("UNDERLAY_BASE_URL", raising=False)
    assert main(["agent", "ls"]) == 2
    error = capsys.readouterr().err
    assert "--base-url" in error and len(error.strip().splitlines()) == 1
