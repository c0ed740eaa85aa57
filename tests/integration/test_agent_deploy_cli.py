"""``underlay agent deploy|ls|show|rollback`` against a real server on loopback.

The server runs only the Agents API (deploying needs no model when the folder has no knowledge); the
commands run as a user runs them, through ``underlay.cli.main.main`` and the SDK over HTTP. What this
proves: a folder's environment names the server, each deploy is a new version, ``rollback`` with no
``--to`` restores the previous one, and mistakes are one line with a non-zero exit.

The knowledge test runs a second server with the files, vector-store and agents APIs and MiniLM
embeddings only (no chat model): it searches the agent's store with each version's own ``file_search``
filter, as the Responses engine does for ``model="agent/<name>@N"``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from tests.integration.harness import MINILM, RunningServer, start_server
from underlay.api.agents import AgentObject
from underlay.api.responses import CreateResponseRequest
from underlay.cli.main import main
from underlay.core.config import DISTRIBUTIONS_DIR
from underlay.core.routers.agents import agent_request

KNOWLEDGE_APIS = ("inference", "models", "files", "vector_io", "vector_stores", "agents")


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


# ---- versioned knowledge ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def knowledge_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """The local distribution cut down to files, vector stores and agents, with MiniLM as its only model."""
    config = yaml.safe_load((DISTRIBUTIONS_DIR / "local.yaml").read_text())
    config["apis"] = list(KNOWLEDGE_APIS)
    config["providers"] = {api: p for api, p in config["providers"].items() if api in KNOWLEDGE_APIS}
    config["providers"]["inference"] = [p for p in config["providers"]["inference"] if MINILM in str(p)]
    for key in ("state_dir", "shields", "safety", "tool_groups"):  # state_dir: the harness's, under tmp
        config.pop(key, None)
    running = start_server(config, tmp_path_factory.mktemp("agent-knowledge"), timeout=300)
    yield running
    running.stop()


FACT_A = "The harbour ferry to the island leaves at seven in the morning."
FACT_B = "The harbour ferry to the island leaves at noon."
QUESTION = "When does the harbour ferry to the island leave?"


def _knowledge_folder(root: Path, base_url: str, ferry: str) -> Path:
    folder = root / "ferries"
    (folder / "knowledge").mkdir(parents=True, exist_ok=True)
    (folder / "agent.yaml").write_text(
        "name: ferries\n"
        "model: local-model\n"
        "instructions: answer from the timetable\n"
        "tools:\n"
        "  - type: file_search\n"
        "environments:\n"
        f"  prod: {{base_url: {json.dumps(base_url)}}}\n",
        encoding="utf-8",
    )
    (folder / "knowledge" / "ferry.md").write_text(ferry + "\n", encoding="utf-8")
    (folder / "knowledge" / "bakery.md").write_text("The bakery sells rye bread on Fridays.\n", encoding="utf-8")
    return folder


def _deploy(folder: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> str:
    capsys.readouterr()
    assert main(["agent", "deploy", str(folder), "--env", "prod", *extra]) == 0
    return capsys.readouterr().out


def _agent(server: RunningServer, version: int | None = None) -> AgentObject:
    query = {} if version is None else {"version": version}
    return AgentObject.model_validate(httpx.get(f"{server.v1}/agents/ferries", params=query, timeout=30).json())


def _found(server: RunningServer, agent: AgentObject) -> str:
    """What the agent's own file_search finds for QUESTION: the Responses request ``model="agent/..."``
    becomes (its tools, with their filter) searched as the Responses engine searches."""
    request = agent_request(agent, CreateResponseRequest.model_validate({"model": "agent/ferries", "input": "?"}))
    tool = next(t for t in request.model_dump(exclude_none=True)["tools"] if t["type"] == "file_search")
    body: dict[str, object] = {"query": QUESTION, "max_num_results": 5}
    if "filters" in tool:
        body["filters"] = tool["filters"]
    store = tool["vector_store_ids"][0]
    answer = httpx.post(f"{server.v1}/vector_stores/{store}/search", json=body, timeout=60)
    assert answer.status_code == 200, answer.text
    return "\n".join(c["text"] for r in answer.json()["data"] for c in r["content"])


def _store_files(server: RunningServer, store: str) -> int:
    listed = httpx.get(f"{server.v1}/vector_stores/{store}/files", params={"limit": 100}, timeout=30).json()
    return len(listed["data"])


def test_knowledge_is_versioned_and_rollback_restores_answers(
    knowledge_server: RunningServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = _knowledge_folder(tmp_path, knowledge_server.v1, FACT_A)
    assert "knowledge: 2 uploaded, 0 unchanged, 0 removed, 0 kept" in _deploy(folder, capsys)
    v1 = _agent(knowledge_server)
    assert v1.definition.knowledge is not None
    store = v1.definition.knowledge.vector_store_id
    assert store is not None

    _knowledge_folder(tmp_path, knowledge_server.v1, FACT_B)
    out = _deploy(folder, capsys)
    assert "knowledge: 1 uploaded, 1 unchanged, 0 removed, 1 kept for earlier versions" in out  # one file embedded
    assert _store_files(knowledge_server, store) == 3  # the old ferry.md stays attached for version 1
    v2 = _agent(knowledge_server)
    assert v2.version == 2 and v2.definition.knowledge is not None
    assert v2.definition.knowledge.vector_store_id == store
    assert v2.definition.knowledge.files["ferry.md"] != v1.definition.knowledge.files["ferry.md"]
    found = _found(knowledge_server, v2)
    assert "noon" in found and "seven" not in found
    found = _found(knowledge_server, _agent(knowledge_server, 1))  # agent/ferries@1 while 2 is the default
    assert "seven" in found and "noon" not in found

    assert main(["agent", "rollback", "ferries", "--base-url", knowledge_server.v1]) == 0
    default = _agent(knowledge_server)
    assert default.version == 1
    found = _found(knowledge_server, default)
    assert "seven" in found and "noon" not in found

    assert "knowledge: 0 uploaded, 2 unchanged" in _deploy(folder, capsys)  # unchanged: nothing uploaded
    assert _store_files(knowledge_server, store) == 3
    found = _found(knowledge_server, _agent(knowledge_server))
    assert "noon" in found and "seven" not in found

    # every version still names fact A's content, so a prune keeps it; with the versions gone, it goes
    assert "pruned 0 knowledge file(s)" in _deploy(folder, capsys, "--prune")
    assert httpx.delete(f"{knowledge_server.v1}/agents/ferries", timeout=30).status_code == 200
    out = _deploy(folder, capsys, "--prune")
    assert "knowledge: 0 uploaded" in out and "pruned 1 knowledge file(s)" in out
    assert _store_files(knowledge_server, store) == 2
    unfiltered = httpx.post(
        f"{knowledge_server.v1}/vector_stores/{store}/search", json={"query": QUESTION}, timeout=60
    ).json()
    texts = "\n".join(c["text"] for r in unfiltered["data"] for c in r["content"])
    assert "noon" in texts and "seven" not in texts
