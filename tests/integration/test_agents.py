"""One agent folder, unmodified, on two environments: the embedded stack in process (``local``) and a
real ``underlay run local`` server on loopback (``server``), with the embedded chat model and MiniLM.

The folder is what ``underlay agent init --template rag`` writes; its answer ("roasted buckwheat flour")
is only in its knowledge/, so a right answer means file_search ran over the synced store. Syncing again
uploads nothing (content hashes match), and a changed file is the only one uploaded. On the server the
CLI's ``eval`` and ``chat`` (turns kept on a conversation) run the same folder.
"""

from __future__ import annotations

import io
import os
import re
import sys
from pathlib import Path

import pytest

from tests.integration.harness import start_server
from underlay import Agent
from underlay.agents import TextDelta, ToolCall, TurnDone
from underlay.agents.sync import sync_knowledge
from underlay.cli.main import main

pytestmark = pytest.mark.slow

QUESTION = "What is the secret ingredient of the Lumen sourdough?"


def _turn(agent: Agent) -> str:
    events = list(agent.stream(QUESTION))
    assert any(isinstance(e, ToolCall) and e.kind == "file_search_call" for e in events)
    deltas = [e.text for e in events if isinstance(e, TextDelta)]
    done = events[-1]
    assert isinstance(done, TurnDone) and done.text == "".join(deltas) and done.response_id.startswith("resp_")
    return done.text


def test_the_same_folder_runs_in_process_and_against_a_server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "bakery"
    assert main(["agent", "init", str(folder), "--template", "rag"]) == 0
    environ = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}

    # (1) in process: no server running, the embedded stack starts inside this process
    with Agent.from_dir(folder, "local", environ=environ) as agent:
        assert agent.spec is not None and agent.vector_store_id is not None
        assert "buckwheat" in _turn(agent).lower()
        same = sync_knowledge(agent.client, folder, agent.spec.name, "local", agent.spec.knowledge)
        assert same.vector_store_id == agent.vector_store_id and same.uploaded == [] and same.detached == []
        (folder / "knowledge" / "extra.md").write_text("The bakery cat is called Crumb.\n")
        changed = sync_knowledge(agent.client, folder, agent.spec.name, "local", agent.spec.knowledge)
        assert changed.uploaded == ["extra.md"] and changed.unchanged == ["handbook.md"]
        (folder / "knowledge" / "extra.md").unlink()
        removed = sync_knowledge(agent.client, folder, agent.spec.name, "local", agent.spec.knowledge)
        assert removed.uploaded == [] and len(removed.detached) == 1
    assert (folder / ".underlay").is_dir()  # the in-process state lives in the folder (git-ignored)

    # (2) a real server on loopback: the folder's "server" environment, pointed at it by ${env...}
    server = start_server(
        "local", tmp_path / "server", env={"UNDERLAY_STATE_DIR": str(tmp_path / "state")}, timeout=600
    )
    try:
        environ["UNDERLAY_AGENT_URL"] = server.v1
        with Agent.from_dir(folder, "server", environ=environ) as agent:
            assert agent.client.base_url.port == server.port
            assert "buckwheat" in _turn(agent).lower()
            assert agent.spec is not None
            again = sync_knowledge(agent.client, folder, agent.spec.name, "server", agent.spec.knowledge)
            assert again.vector_store_id == agent.vector_store_id and again.uploaded == []

        # the CLI on the same server: eval runs the folder's cases, chat keeps its turns on a conversation
        monkeypatch.setenv("UNDERLAY_AGENT_URL", server.v1)
        capsys.readouterr()
        assert main(["agent", "eval", str(folder), "--env", "server", "--min-pass-rate", "0.5"]) == 0
        assert re.search(r"pass rate [12]/2 = ", capsys.readouterr().out)
        monkeypatch.setattr(sys, "stdin", io.StringIO(QUESTION + "\n\n"))
        assert main(["agent", "chat", str(folder), "--env", "server"]) == 0
        chat = capsys.readouterr()
        assert "buckwheat" in chat.out.lower() and "[tool] file_search" in chat.err
        conversation = re.search(r"conversation (conv_\w+)", chat.err)
        assert conversation is not None
        with server.openai() as client:
            items = list(client.conversations.items.list(conversation.group(1)))
        assert any(i.type == "message" and i.role == "user" for i in items)
        assert any(i.type == "message" and i.role == "assistant" for i in items)
    finally:
        server.stop()
