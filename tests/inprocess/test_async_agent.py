"""``AsyncAgent`` on a real stack in this process, with no model weights: an agent folder whose ``local``
environment names an echo run config, so ``AsyncAgent.from_dir`` starts the embedded stack itself
(``AsyncUnderlay.in_process``, its loopback server on a thread), syncs ``knowledge/`` through a sync
client on that same server, and streams turns through the real Responses API.

Real components: the echo provider (an installed plugin; ``echo`` answers "echo: <question>",
``echo-slow`` streams one word every 0.2 s), sqlite-vec vector stores with ``echo-embed``, the builtin
Responses provider and the Conversations API. The embedded model's run (file_search, a forced async
function call) is tests/integration/test_async_agent.py.
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
from pathlib import Path

import pytest

from underlay import AsyncAgent, Underlay
from underlay.agents import Agent, TextDelta, ToolCall, TurnDone
from underlay.core.config import ConfigError

RUN_YAML = """\
version: 1
state_dir: ${env.UNDERLAY_STATE_DIR}
apis: [inference, models, files, vector_io, vector_stores, tool_runtime, responses, conversations]
providers:
  inference:
    - {provider_id: echo, provider_type: "remote::echo-test", config: {}}
  files:
    - {provider_id: localfs, provider_type: "inline::localfs", config: {root: files}}
  vector_io:
    - {provider_id: sqlite-vec, provider_type: "inline::sqlite-vec", config: {db_path: v.db}}
  tool_runtime:
    - {provider_id: file-search, provider_type: "builtin::file_search"}
  responses:
    - {provider_id: builtin, provider_type: "inline::builtin"}
vector_stores:
  default_embedding_model: echo/echo-embed
"""

AGENT_YAML = """\
name: echoer
model: echo
instructions: Repeat the question.
tools:
  - type: file_search
knowledge: ["**/*.md"]
environments:
  local: {config: run.yaml}
"""


def _folder(tmp_path: Path, extra: str = "") -> Path:
    folder = tmp_path / "echoer"
    (folder / "knowledge").mkdir(parents=True)
    (folder / "run.yaml").write_text(RUN_YAML)
    (folder / "agent.yaml").write_text(AGENT_YAML + extra)
    (folder / "knowledge" / "handbook.md").write_text("The echo bakery opens at noon.\n")
    return folder


def _stack_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("underlay-in-process-")]


async def test_a_folder_runs_in_process_streams_and_takes_concurrent_turns(tmp_path: Path, echo_plugin: Path) -> None:
    folder = _folder(tmp_path)
    agent = await AsyncAgent.from_dir(folder, "local", environ={})
    server = agent.client._underlay_server
    assert server is not None and (folder / ".underlay").is_dir()  # the environment's state_dir
    async with agent:
        assert agent.sync_report is not None and agent.sync_report.uploaded == ["handbook.md"]
        handbook = hashlib.sha256((folder / "knowledge" / "handbook.md").read_bytes()).hexdigest()
        only_this_version = {"type": "in", "key": "sha256", "value": [handbook]}  # its own knowledge's content
        assert agent.tools == [
            {"type": "file_search", "vector_store_ids": [agent.vector_store_id], "filters": only_this_version}
        ]

        events = [e async for e in agent.stream("one two three")]
        deltas = [e.text for e in events if isinstance(e, TextDelta)]
        done = events[-1]
        assert len(deltas) > 1 and isinstance(done, TurnDone) and done.response_id.startswith("resp_")
        assert done.text == "".join(deltas) == "echo: one two three"
        assert not any(isinstance(e, ToolCall) for e in events)  # echo never calls a tool

        # Two turns at once on one agent: each keeps its own text and response.
        first, second = await asyncio.gather(agent.run("alpha beta"), agent.run("gamma delta"))
        assert (first.text, second.text) == ("echo: alpha beta", "echo: gamma delta")
        assert first.response_id != second.response_id

        # ...and they really overlap: streamed together, the slow model's words interleave.
        slow = AsyncAgent(agent.client, model="echo-slow")
        order: list[str] = []

        async def collect(tag: str, question: str) -> None:
            async for event in slow.stream(question):
                if isinstance(event, TextDelta):
                    order.append(tag)

        await asyncio.gather(collect("a", "a1 a2 a3 a4"), collect("b", "b1 b2 b3 b4"))
        assert order.count("a") == order.count("b") == 5
        assert order != sorted(order), order  # not all of one turn before the other

        # A turn on a conversation is kept there.
        conversation = await agent.client.conversations.create()
        kept = await agent.run("remember me", conversation=conversation.id)
        items = [i async for i in agent.client.conversations.items.list(conversation.id)]
        assert kept.text == "echo: remember me" and {i.role for i in items if i.type == "message"} == {
            "user",
            "assistant",
        }

        # The sync agent, on the same server, answers the same: both read the stream the same way.
        def sync_turn() -> list[object]:
            with Underlay(base_url=str(agent.client.base_url), max_retries=0) as client:
                twin = Agent.from_dir(folder, "local", client=client, environ={})
                assert twin.sync_report is not None and twin.sync_report.uploaded == []  # already synced
                assert twin.vector_store_id == agent.vector_store_id
                return [type(e).__name__ for e in twin.stream("one two three")]

        assert await asyncio.to_thread(sync_turn) == [type(e).__name__ for e in events]
    assert not server._thread.is_alive() and not _stack_threads()  # leaving the block stopped the stack


async def test_a_broken_tools_file_stops_the_stack_it_started(tmp_path: Path, echo_plugin: Path) -> None:
    folder = _folder(tmp_path, "  # the functions below\n")
    text = (folder / "agent.yaml").read_text().replace("  - type: file_search\n", "  - type: functions\n")
    (folder / "agent.yaml").write_text(text)
    (folder / "tools.py").write_text("raise ValueError('not today')\n")
    before = len(_stack_threads())
    with pytest.raises(ConfigError, match=r"tools\.py: importing it failed \(ValueError: not today\)"):
        await AsyncAgent.from_dir(folder, "local", environ={})
    assert len(_stack_threads()) == before


async def test_knowledge_sync_needs_an_async_openai_client(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match=r"needs an openai\.AsyncOpenAI client .*sync=False"):
        await AsyncAgent.from_dir(_folder(tmp_path), "local", client=object(), environ={})


async def test_a_start_cancelled_by_its_caller_stops_the_stack(tmp_path: Path, echo_plugin: Path) -> None:
    """A server's request that is cancelled while ``from_dir`` starts the stack must not leave it running:
    the start's thread cannot be cancelled, so the stack is stopped once it is up."""
    folder = _folder(tmp_path)
    before = len(_stack_threads())
    making = asyncio.create_task(AsyncAgent.from_dir(folder, "local", environ={}))
    for _ in range(600):  # cancelled while the stack's thread is starting
        if len(_stack_threads()) > before or making.done():
            break
        await asyncio.sleep(0.01)
    assert not making.done(), "the stack started before the test could cancel it"
    making.cancel()
    with pytest.raises(asyncio.CancelledError):
        await making
    for _ in range(600):
        if len(_stack_threads()) == before:
            break
        await asyncio.sleep(0.05)
    assert len(_stack_threads()) == before
