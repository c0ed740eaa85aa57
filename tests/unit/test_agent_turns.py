"""What ``Agent`` and ``AsyncAgent`` share, without a server: one folder binds to the same requests and
definition through either class, a turn's state machine maps the Responses stream's events (built as the
``openai`` SDK's own event types) and carries function outputs into the next round, and client functions
run the same way sync or async (plain ones off the loop, in a thread).

Real turns over a real stack are in tests/inprocess/test_async_agent.py (echo model) and
tests/integration/test_async_agent.py (the embedded model, file_search and a forced function call).
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import openai
import pytest
from openai.types.responses import (
    Response,
    ResponseCompletedEvent,
    ResponseErrorEvent,
    ResponseFailedEvent,
    ResponseFileSearchToolCall,
    ResponseFunctionToolCall,
    ResponseOutputItemAddedEvent,
    ResponseOutputItemDoneEvent,
    ResponseTextDeltaEvent,
)
from openai.types.responses.response_output_item import McpCall

import underlay
from underlay.agents import Agent, AsyncAgent, TextDelta, ToolCall, ToolResult, TurnDone
from underlay.agents.async_agent import sync_client_like
from underlay.agents.base import MAX_FUNCTION_ROUNDS, AgentBase, Turn
from underlay.agents.functions import function_from_callable
from underlay.agents.templates import write_template


def _response(response_id: str, **extra: Any) -> Response:
    return Response.model_construct(id=response_id, object="response", output=[], **extra)


def _delta(text: str) -> ResponseTextDeltaEvent:
    return ResponseTextDeltaEvent(
        type="response.output_text.delta", delta=text, item_id="msg_1", output_index=0, content_index=0,
        sequence_number=1, logprobs=[],
    )  # fmt: skip


def _call(name: str, arguments: str, call_id: str) -> ResponseOutputItemDoneEvent:
    item = ResponseFunctionToolCall(type="function_call", name=name, arguments=arguments, call_id=call_id)
    return ResponseOutputItemDoneEvent(type="response.output_item.done", item=item, output_index=0, sequence_number=2)


def _completed(response_id: str) -> ResponseCompletedEvent:
    return ResponseCompletedEvent(type="response.completed", response=_response(response_id), sequence_number=9)


def order_status(order_id: str) -> str:
    """The delivery status of an order."""
    return f"{order_id}: delivered"


def test_a_turn_maps_events_and_answers_function_calls_in_the_next_round() -> None:
    agent = AgentBase(object(), model="m", instructions="be brief", tools=[order_status], tool_choice="required")
    turn = Turn(agent, "where is A-1?")
    first = turn.request()
    assert first["stream"] is True and first["tool_choice"] == "required" and first["input"] == "where is A-1?"
    assert first["tools"][0]["name"] == "order_status" and "previous_response_id" not in first

    search = ResponseFileSearchToolCall(id="fs_1", type="file_search_call", queries=["A-1"], status="searching")
    mcp = McpCall(id="mcp_1", type="mcp_call", server_label="docs", name="lookup", arguments="{}")
    events = [
        ResponseOutputItemAddedEvent(type="response.output_item.added", item=search, output_index=0, sequence_number=0),
        ResponseOutputItemAddedEvent(type="response.output_item.added", item=mcp, output_index=1, sequence_number=1),
        _delta("Let me check. "),
        _call("order_status", '{"order_id": "A-1"}', "call_1"),
        _call("refund", "{}", "call_2"),
        _completed("resp_1"),
    ]
    mapped = [turn.observe(e) for e in events]
    assert mapped == [
        ToolCall("file_search_call", "file_search", ""),
        ToolCall("mcp_call", "docs.lookup", ""),
        TextDelta("Let me check. "),
        ToolCall("function_call", "order_status", '{"order_id": "A-1"}'),
        ToolCall("function_call", "refund", "{}"),
        None,
    ]
    assert turn.end_round() is None and turn.done is None and turn.response_id == "resp_1"
    results = []
    for call in turn.calls:
        function = turn.function(call)
        results.append(turn.answer(call, function.invoke(call.arguments) if function else None))
    assert results == [
        ToolResult("order_status", "A-1: delivered"),
        ToolResult("refund", "error: no client function 'refund'"),
    ]

    second = turn.request()  # answers the calls, chained on the first response; tool_choice was for the first only
    assert second["previous_response_id"] == "resp_1" and "tool_choice" not in second
    assert second["input"] == [
        {"type": "function_call_output", "call_id": "call_1", "output": "A-1: delivered"},
        {"type": "function_call_output", "call_id": "call_2", "output": "error: no client function 'refund'"},
    ]
    assert turn.observe(_delta("Delivered.")) == TextDelta("Delivered.")
    turn.observe(_completed("resp_2"))
    assert turn.end_round() == TurnDone("Let me check. Delivered.", "resp_2") == turn.done


def test_on_a_conversation_rounds_are_not_chained_by_id() -> None:
    turn = Turn(AgentBase(object(), model="m", tools=[order_status]), "hi", conversation="conv_1")
    assert turn.request()["conversation"] == "conv_1"
    call = _call("order_status", '{"order_id": "B"}', "c")
    turn.observe(call)
    turn.observe(_completed("resp_1"))
    assert turn.end_round() is None
    turn.answer(call.item, "ok")
    follow = turn.request()
    assert follow["conversation"] == "conv_1" and "previous_response_id" not in follow


def test_a_turn_stops_after_the_last_allowed_round() -> None:
    turn = Turn(AgentBase(object(), model="m", name="loopy"), "go")
    for round_number in range(MAX_FUNCTION_ROUNDS):
        turn.request()
        turn.observe(_call("again", "{}", f"c{round_number}"))
        assert turn.end_round() is None
        turn.answer(turn.calls[0], "more")
    with pytest.raises(RuntimeError, match=rf"^agent loopy: still calling functions after {MAX_FUNCTION_ROUNDS} "):
        turn.request()


def test_failed_responses_and_stream_errors_raise_naming_the_agent() -> None:
    turn = Turn(AgentBase(object(), model="m", name="desk"), "hi")
    turn.request()
    failed = ResponseFailedEvent(
        type="response.failed", sequence_number=3,
        response=_response("resp_x", error={"code": "server_error", "message": "the model is down"}),
    )  # fmt: skip
    with pytest.raises(RuntimeError, match=r"^agent desk: the response failed: the model is down$"):
        turn.observe(failed)
    error = ResponseErrorEvent(type="error", message="stream cut", sequence_number=4, code=None, param=None)
    with pytest.raises(RuntimeError, match=r"^agent desk: stream cut$"):
        turn.observe(error)


def _support_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "desk"
    write_template(folder, "support")
    text = (folder / "agent.yaml").read_text()
    (folder / "agent.yaml").write_text(text.replace("temperature: 0\n", "temperature: 0\nshields: [pii]\n"))
    return folder


async def test_both_classes_bind_a_folder_to_the_same_requests_and_definition(tmp_path: Path) -> None:
    folder = _support_folder(tmp_path)
    sync_agent = Agent.from_dir(folder, "server", client=object(), environ={}, sync=False)  # no request made
    async_agent = await AsyncAgent.from_dir(folder, "server", client=object(), environ={}, sync=False)
    assert isinstance(async_agent, AsyncAgent) and async_agent.spec is not None
    assert sync_agent.functions.keys() == async_agent.functions.keys() == {"order_status"}
    for turn in (("q", None, None, None), ([{"type": "function_call_output"}], "resp_1", "conv_1", "auto")):
        assert sync_agent._request(*turn) == async_agent._request(*turn)
    assert Turn(sync_agent, "q").request() == Turn(async_agent, "q").request()
    assert sync_agent.to_definition() == async_agent.to_definition()
    assert async_agent.to_definition().guardrails == ["pii"]
    await async_agent.aclose()  # a client it was given is the caller's to close
    assert not async_agent._owns_client


def test_a_sync_client_for_the_knowledge_sync_reaches_the_same_server() -> None:
    given = openai.AsyncOpenAI(
        base_url="http://127.0.0.1:9/v1", api_key="sk-test", default_headers={"X-Tenant": "t1"},
        default_query={"team": "a"}, timeout=12.0, max_retries=4,
    )  # fmt: skip
    twin = sync_client_like(given)
    try:
        assert str(twin.base_url) == str(given.base_url) and twin.api_key == "sk-test"
        assert twin.default_headers["X-Tenant"] == "t1" and twin.default_query == {"team": "a"}
        assert twin.timeout == 12.0 and twin.max_retries == 4
    finally:
        twin.close()
    with pytest.raises(TypeError, match="needs an openai.AsyncOpenAI client.*sync=False"):
        sync_client_like(openai.OpenAI(base_url="http://127.0.0.1:9/v1", api_key="x"))


async def test_client_functions_run_off_the_loop_or_on_it() -> None:
    loop_thread = threading.get_ident()
    seen: dict[str, int] = {}

    def plain(city: str) -> dict[str, str]:
        """Blocking lookup."""
        seen["plain"] = threading.get_ident()
        return {"city": city}

    async def awaited(city: str, days: int = 1) -> str:
        """Async lookup."""
        seen["awaited"] = threading.get_ident()
        await asyncio.sleep(0)
        return f"{city} x{days}"

    async def broken(city: str) -> str:
        """Raises."""
        raise LookupError(f"no {city}")

    assert await function_from_callable(plain).ainvoke('{"city": "Oslo"}') == '{"city": "Oslo"}'
    assert seen["plain"] != loop_thread  # a plain function does not block the loop
    assert await function_from_callable(awaited).ainvoke('{"city": "Rome", "days": 2}') == "Rome x2"
    assert seen["awaited"] == loop_thread
    assert await function_from_callable(broken).ainvoke('{"city": "Atlantis"}') == (
        "error: broken failed: LookupError: no Atlantis"
    )
    bad = await function_from_callable(awaited).ainvoke('{"days": "many"}')
    assert bad.startswith("error: invalid arguments for awaited:")
    assert bad == function_from_callable(awaited).invoke('{"days": "many"}')  # sync and async say the same


def test_the_sync_agent_runs_async_functions_to_their_end() -> None:
    async def awaited(city: str) -> str:
        """Async lookup."""
        await asyncio.sleep(0)
        return f"{city}!"

    assert function_from_callable(awaited).invoke('{"city": "Rome"}') == "Rome!"


def test_the_package_exports_the_async_agent_lazily() -> None:
    assert "AsyncAgent" in underlay.__all__ and "AsyncAgent" in dir(underlay)
    assert underlay.AsyncAgent is AsyncAgent
