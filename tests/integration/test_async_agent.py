"""``AsyncAgent`` end to end with the embedded chat model and MiniLM, on the embedded stack that
``AsyncAgent.from_dir`` starts in this process (the folder's ``local`` environment, no server running).

The folder is what ``underlay agent init --template rag`` writes; its answers ("roasted buckwheat flour",
"6:40") are only in its knowledge/, so right answers mean file_search ran over the store the async agent
synced. Two turns run at once on the one agent (``asyncio.gather``), one of them streamed; then an
``async def`` client function, forced by ``tool_choice`` as the 0.5B model needs, is called on the same
client, and its output is what the answer says.
"""

from __future__ import annotations

import asyncio
import os
import threading
from pathlib import Path

import pytest

from underlay import AsyncAgent
from underlay.agents import TextDelta, ToolCall, ToolResult, TurnDone
from underlay.cli.main import main

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]  # three turns of the model; minutes on 2 busy cores

QUESTION = "What is the secret ingredient of the Lumen sourdough?"


async def test_an_agent_folder_runs_async_with_concurrent_turns_and_an_async_function(tmp_path: Path) -> None:
    folder = tmp_path / "bakery"
    assert main(["agent", "init", str(folder), "--template", "rag"]) == 0
    environ = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    loop_thread = threading.get_ident()

    async with await AsyncAgent.from_dir(folder, "local", environ=environ) as agent:
        server = agent.client._underlay_server
        assert server is not None and agent.sync_report is not None
        assert agent.sync_report.uploaded == ["handbook.md"] and agent.vector_store_id is not None

        async def streamed() -> list[object]:
            return [event async for event in agent.stream(QUESTION)]

        events, opening = await asyncio.gather(streamed(), agent.run("What time does the Lumen Bakery open?"))
        assert any(isinstance(e, ToolCall) and e.kind == "file_search_call" for e in events)
        done = events[-1]
        assert isinstance(done, TurnDone) and done.response_id.startswith("resp_")
        assert done.text == "".join(e.text for e in events if isinstance(e, TextDelta))
        assert "buckwheat" in done.text.lower()
        assert "6:40" in opening.text and opening.response_id != done.response_id

        calls: list[tuple[str, int]] = []

        async def lookup_order(order_id: str) -> str:
            """The delivery status of an order, by its id (for example A-1001)."""
            calls.append((order_id, threading.get_ident()))
            await asyncio.sleep(0)
            return f"Order {order_id} was delivered on Tuesday by the courier Mira."

        forced = {"type": "function", "name": "lookup_order"}
        desk = AsyncAgent(
            agent.client,
            model=agent.model,
            tools=[lookup_order],
            tool_choice=forced,
            temperature=0,
            max_output_tokens=60,
        )
        turn = [event async for event in desk.stream("Where is order A-1001?")]
        assert calls == [("A-1001", loop_thread)]  # awaited on this loop
        assert ToolCall("function_call", "lookup_order", '{"order_id": "A-1001"}') in turn
        result = next(e for e in turn if isinstance(e, ToolResult))
        assert result.name == "lookup_order" and "Mira" in result.output
        answer = turn[-1]
        assert isinstance(answer, TurnDone) and "mira" in answer.text.lower()
    assert not server._thread.is_alive()  # leaving the block stopped the stack
    assert (folder / ".underlay").is_dir()
