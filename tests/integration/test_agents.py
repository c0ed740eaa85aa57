"""One agent folder, unmodified, on two environments: the embedded stack in process (``local``) and a
real ``underlay run local`` server on loopback (``server``), with the embedded chat model and MiniLM.

The folder is what ``underlay agent init --template rag`` writes; its answer ("roasted buckwheat flour")
is only in its knowledge/, so a right answer means file_search ran over the synced store. Syncing again
uploads nothing (content hashes match), and a changed file is the only one uploaded. On the server the
CLI's ``chat`` keeps its turns on a conversation (``agent eval`` runs in ``test_agent_environments.py``, as
an eval job on two servers and client-side on a third). Each step is its own test on one module-scoped
server, so a slow step fails alone.
"""

from __future__ import annotations

import io
import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.harness import RunningServer, start_server
from underlay import Agent
from underlay.agents import TextDelta, ToolCall, TurnDone
from underlay.agents.sync import sync_knowledge
from underlay.cli.main import main

pytestmark = pytest.mark.slow

QUESTION = "What is the secret ingredient of the Lumen sourdough?"
ENVIRON = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


def _turn(agent: Agent) -> str:
    events = list(agent.stream(QUESTION))
    assert any(isinstance(e, ToolCall) and e.kind == "file_search_call" for e in events)
    deltas = [e.text for e in events if isinstance(e, TextDelta)]
    done = events[-1]
    assert isinstance(done, TurnDone) and done.text == "".join(deltas) and done.response_id.startswith("resp_")
    return done.text


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    made = tmp_path_factory.mktemp("agents") / "bakery"
    assert main(["agent", "init", str(made), "--template", "rag"]) == 0
    return made


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """A real ``underlay run local`` on loopback, the folder's "server" environment (by ``${env...}``)."""
    root = tmp_path_factory.mktemp("agents-server")
    running = start_server("local", root / "server", env={"UNDERLAY_STATE_DIR": str(root / "state")}, timeout=600)
    yield running
    running.stop()


def test_the_folder_runs_in_process_with_no_server(folder: Path) -> None:
    """The embedded stack starts inside this process; knowledge syncs by content hash."""
    with Agent.from_dir(folder, "local", environ=ENVIRON) as agent:
        assert agent.spec is not None and agent.vector_store_id is not None
        assert "buckwheat" in _turn(agent).lower()
        same = sync_knowledge(agent.client, folder, agent.spec.name, "local", agent.spec.knowledge)
        assert same.vector_store_id == agent.vector_store_id and same.uploaded == [] and same.detached == []
        (folder / "knowledge" / "extra.md").write_text("The bakery cat is called Crumb.\n")
        changed = sync_knowledge(agent.client, folder, agent.spec.name, "local", agent.spec.knowledge)
        assert changed.uploaded == ["extra.md"] and changed.unchanged == ["handbook.md"]
        (folder / "knowledge" / "extra.md").unlink()
        removed = sync_knowledge(agent.client, folder, agent.spec.name, "local", agent.spec.knowledge)
        assert removed.uploaded == [] and removed.detached == []  # kept for versions that still name it
        assert removed.superseded == ["extra.md"] and "extra.md" not in removed.files
    assert (folder / ".underlay").is_dir()  # the in-process state lives in the folder (git-ignored)


def test_the_same_folder_runs_against_a_server(folder: Path, server: RunningServer) -> None:
    environ = {**ENVIRON, "UNDERLAY_AGENT_URL": server.v1}
    with Agent.from_dir(folder, "server", environ=environ) as agent:
        assert agent.client.base_url.port == server.port
        assert "buckwheat" in _turn(agent).lower()
        assert agent.spec is not None
        again = sync_knowledge(agent.client, folder, agent.spec.name, "server", agent.spec.knowledge)
        assert again.vector_store_id == agent.vector_store_id and again.uploaded == []


def test_cli_chat_keeps_its_turns_on_a_conversation(
    folder: Path, server: RunningServer, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("UNDERLAY_AGENT_URL", server.v1)
    monkeypatch.setattr(sys, "stdin", io.StringIO(QUESTION + "\n\n"))
    capsys.readouterr()
    assert main(["agent", "chat", str(folder), "--env", "server"]) == 0
    chat = capsys.readouterr()
    assert "buckwheat" in chat.out.lower() and "[tool] file_search" in chat.err
    conversation = re.search(r"conversation (conv_\w+)", chat.err)
    assert conversation is not None
    with server.openai() as client:
        items = list(client.conversations.items.list(conversation.group(1)))
    assert any(i.type == "message" and i.role == "user" for i in items)
    assert any(i.type == "message" and i.role == "assistant" for i in items)
