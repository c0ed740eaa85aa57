"""The Responses loop with a scripted model and tool runtime: limits, concurrency, failures, approvals.

A real model decides for itself when to call tools, so the limits and failure paths are pinned here
with a fake model that always answers the same way; the end-to-end tests use the embedded model.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from underlay.api.inference import ChatCompletionChunk, ChatCompletionRequest, ChoiceDelta, ChunkChoice, ToolCallDelta
from underlay.api.response_items import normalize_item
from underlay.api.responses import CreateResponseRequest, ResponseObject
from underlay.api.tool_runtime import ToolDef, ToolInvocationResult
from underlay.providers.inline.responses.config import BuiltinResponsesConfig
from underlay.providers.inline.responses.convert import items_to_messages
from underlay.providers.inline.responses.engine import Engine
from underlay.providers.inline.responses.policy import citations, needs_approval
from underlay.providers.inline.responses.server_tools import ServerTools
from underlay.providers.inline.responses.state import Run


def _chunk(delta: ChoiceDelta, finish: str | None = None, usage: dict[str, int] | None = None) -> ChatCompletionChunk:
    return ChatCompletionChunk.model_validate(
        {
            "id": "c",
            "created": 0,
            "model": "m",
            "choices": [ChunkChoice(index=0, delta=delta, finish_reason=finish)] if usage is None else [],
            "usage": usage,
        }
    )


class FakeModel:
    """Answers with text, or with the same tool calls, on every turn; records the requests."""

    def __init__(self, calls: list[tuple[str, dict[str, Any]]] | None = None, text: str = "Done.") -> None:
        self.calls = calls or []
        self.text = text
        self.requests: list[ChatCompletionRequest] = []

    async def openai_chat_completion(self, request: ChatCompletionRequest) -> AsyncIterator[ChatCompletionChunk]:
        self.requests.append(request)
        calls = self.calls if request.tool_choice != "none" else []

        async def stream() -> AsyncIterator[ChatCompletionChunk]:
            if calls:
                for i, (name, args) in enumerate(calls):
                    yield _chunk(
                        ChoiceDelta(
                            tool_calls=[
                                ToolCallDelta(
                                    index=i,
                                    id=f"call_{len(self.requests)}_{i}",
                                    function={"name": name, "arguments": json.dumps(args)},
                                )
                            ]
                        )
                    )
                yield _chunk(ChoiceDelta(), "tool_calls")
            else:
                for word in self.text.split(" "):
                    yield _chunk(ChoiceDelta(content=word + " "))
                yield _chunk(ChoiceDelta(), "stop")
            yield _chunk(ChoiceDelta(), usage={"prompt_tokens": 10, "completion_tokens": 3, "total_tokens": 13})

        return stream()


class FakeRuntime:
    """An MCP server with ``add`` (slow), ``explode`` (fails) and ``delete`` tools."""

    def __init__(self, delay: float = 0.3) -> None:
        self.delay = delay
        self.invoked: list[str] = []

    async def list_tools(self, toolgroup_id: Any = None, **kwargs: Any) -> list[ToolDef]:
        schema = {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}}}
        return [ToolDef(name=n, description=n, input_schema=schema) for n in ("add", "explode", "delete")]

    async def invoke_tool(self, name: str, kwargs: dict[str, Any], **options: Any) -> ToolInvocationResult:
        self.invoked.append(name)
        await asyncio.sleep(self.delay)
        if name == "explode":
            return ToolInvocationResult(error_message="fixture: exploded", error_code="tool_error")
        return ToolInvocationResult(content=str(kwargs.get("a", 0) + kwargs.get("b", 0)))


MCP = {"type": "mcp", "server_label": "calc", "server_url": "http://127.0.0.1:1/mcp", "require_approval": "never"}


def _run(request: dict[str, Any], **fields: Any) -> Run:
    params = CreateResponseRequest.model_validate({"model": "m", **request})
    raw = [{"role": "user", "content": params.input}] if isinstance(params.input, str) else params.input
    response = ResponseObject(id="resp_1", created_at=0, status="in_progress", model="m")
    return Run(
        request=params,
        response=response,
        history=fields.pop("history", []),
        input_items=[normalize_item(i) for i in raw],
        max_infer_iters=params.max_infer_iters or 10,
        **fields,
    )


async def _drive(model: FakeModel, runtime: FakeRuntime | None, run: Run) -> list[Any]:
    routers = {"tool_runtime": runtime} if runtime is not None else {}
    engine = Engine(model, ServerTools(BuiltinResponsesConfig(), routers.get))
    return [event async for event in engine.run(run)]


async def test_parallel_server_calls_run_concurrently_and_failures_are_items() -> None:
    model = FakeModel([("add", {"a": 2, "b": 3}), ("explode", {})])
    runtime = FakeRuntime(delay=0.4)
    run = _run({"input": "go", "tools": [MCP], "max_infer_iters": 1})
    started = time.monotonic()
    events = await _drive(model, runtime, run)
    elapsed = time.monotonic() - started
    assert elapsed < 0.75, "two 0.4 s calls of one turn must overlap"
    kinds = [i["type"] for i in run.response.output]
    assert kinds == ["mcp_list_tools", "mcp_call", "mcp_call"]
    ok, failed = run.response.output[1], run.response.output[2]
    assert ok["status"] == "completed" and ok["output"] == "5"
    assert failed["status"] == "failed" and failed["error"]["type"] == "mcp_tool_execution_error"
    assert "exploded" in failed["error"]["content"][0]["text"]
    assert run.response.status == "incomplete" and run.response.incomplete_details.reason == "max_infer_iters"
    types = [e.type for e in events]
    assert types[:2] == ["response.created", "response.in_progress"] and types[-1] == "response.incomplete"
    assert "response.mcp_call.failed" in types and "response.mcp_call.completed" in types
    assert [e.sequence_number for e in events] == list(range(len(events)))


async def test_failed_call_is_shown_to_the_model_which_then_answers() -> None:
    model = FakeModel([("explode", {})])
    runtime = FakeRuntime(delay=0)
    run = _run({"input": "go", "tools": [MCP], "tool_choice": "required", "max_infer_iters": 3})
    engine_events = _drive(model, runtime, run)

    # After the first turn the model stops calling tools (the fake follows tool_choice none only, so
    # switch it to text once the failed item exists).
    async def second_turn_answers() -> list[Any]:
        original = model.openai_chat_completion

        async def wrapped(request: ChatCompletionRequest) -> AsyncIterator[ChatCompletionChunk]:
            if len(model.requests) >= 1:
                model.calls = []
            return await original(request)

        model.openai_chat_completion = wrapped  # type: ignore[method-assign]
        return await engine_events

    await second_turn_answers()
    assert run.response.status == "completed"
    assert [i["type"] for i in run.response.output] == ["mcp_list_tools", "mcp_call", "message"]
    tool_message = [m for m in model.requests[1].messages if m.role == "tool"][0]
    assert "exploded" in tool_message.content
    assert run.response.usage.input_tokens == 20 and run.response.usage.output_tokens == 6


async def test_max_tool_calls_ends_incomplete() -> None:
    model = FakeModel([("add", {"a": 1, "b": 1}), ("add", {"a": 2, "b": 2})])
    run = _run({"input": "go", "tools": [MCP], "max_tool_calls": 1})
    await _drive(model, FakeRuntime(delay=0), run)
    assert run.response.status == "incomplete" and run.response.incomplete_details.reason == "max_tool_calls"
    assert sum(1 for i in run.response.output if i["type"] == "mcp_call") == 1


async def test_max_output_tokens_over_all_turns() -> None:
    model = FakeModel([("add", {"a": 1, "b": 1})])
    run = _run({"input": "go", "tools": [MCP], "max_output_tokens": 5})
    await _drive(model, FakeRuntime(delay=0), run)
    assert run.response.status == "incomplete" and run.response.incomplete_details.reason == "max_output_tokens"
    assert model.requests[0].max_tokens == 5 and model.requests[1].max_tokens == 2


async def test_client_function_call_ends_the_response() -> None:
    tool = {"type": "function", "name": "lookup", "parameters": {"type": "object", "properties": {}}}
    model = FakeModel([("lookup", {}), ("add", {"a": 1, "b": 2})])
    run = _run({"input": "go", "tools": [tool, MCP]})
    events = await _drive(model, FakeRuntime(delay=0), run)
    assert run.response.status == "completed"
    kinds = [i["type"] for i in run.response.output]
    assert kinds == ["mcp_list_tools", "function_call", "mcp_call"]  # server calls of the turn still ran
    call = run.response.output[1]
    assert call["name"] == "lookup" and call["call_id"] == "call_1_0" and call["status"] == "completed"
    types = [e.type for e in events]
    assert "response.function_call_arguments.delta" in types and "response.function_call_arguments.done" in types


async def test_approval_request_then_approved_call() -> None:
    tool = {**MCP, "require_approval": {"never": {"tool_names": ["add"]}}}
    model = FakeModel([("delete", {"a": 1})])
    first = _run({"input": "go", "tools": [tool]})
    runtime = FakeRuntime(delay=0)
    await _drive(model, runtime, first)
    request = next(i for i in first.response.output if i["type"] == "mcp_approval_request")
    assert request["name"] == "delete" and runtime.invoked == []
    assert first.response.status == "completed"

    history = [*first.input_items, *first.response.output]
    approve = {"type": "mcp_approval_response", "approval_request_id": request["id"], "approve": True}
    model.calls = []
    second = _run({"input": [approve], "tools": [tool]}, history=history)
    await _drive(model, runtime, second)
    kinds = [i["type"] for i in second.response.output]
    assert kinds == ["mcp_call", "message"]  # the earlier listing is reused, not repeated
    assert second.response.output[0]["approval_request_id"] == request["id"] and runtime.invoked == ["delete"]

    deny = {"type": "mcp_approval_response", "approval_request_id": request["id"], "approve": False}
    third = _run({"input": [deny], "tools": [tool]}, history=history)
    await _drive(model, runtime, third)
    assert [i["type"] for i in third.response.output] == ["message"]
    tool_messages = [m for m in model.requests[-1].messages if m.role == "tool"]
    assert "declined" in tool_messages[-1].content


def test_approval_policy() -> None:
    from underlay.api.responses import McpTool

    def tool(policy: Any) -> McpTool:
        return McpTool.model_validate({**MCP, "require_approval": policy})

    assert needs_approval(tool(None), "x", None) and not needs_approval(tool("never"), "x", None)
    only_delete = tool({"always": {"tool_names": ["delete"]}})
    assert needs_approval(only_delete, "delete", None) and not needs_approval(only_delete, "add", None)
    except_add = tool({"never": {"tool_names": ["add"]}})
    assert not needs_approval(except_add, "add", None) and needs_approval(except_add, "delete", None)
    read_only = tool({"never": {"read_only": True}})
    assert not needs_approval(read_only, "get", {"readOnlyHint": True}) and needs_approval(read_only, "put", {})


def test_citations_follow_markers_or_cite_each_file() -> None:
    results = [
        {"file_id": "file-a", "filename": "a.txt", "text": "A"},
        {"file_id": "file-b", "filename": "b.txt", "text": "B"},
    ]
    marked = citations("Cats purr [2]. Dogs bark [1].", results)
    assert [(c["file_id"], c["index"]) for c in marked] == [("file-b", 10), ("file-a", 25)]
    unmarked = citations("Cats purr.", results + [results[0]])
    assert [(c["filename"], c["index"]) for c in unmarked] == [("a.txt", 10), ("b.txt", 10)]


def test_items_to_messages_rebuilds_tool_turns() -> None:
    items = [
        normalize_item({"role": "user", "content": "hi"}),
        {"type": "mcp_list_tools", "id": "l1", "server_label": "s", "tools": []},
        {"type": "file_search_call", "id": "fs1", "queries": ["cats"], "status": "completed",
         "results": [{"file_id": "f", "filename": "cats.txt", "text": "Cats purr."}]},
        {"type": "mcp_call", "id": "m1", "server_label": "s", "name": "add", "arguments": "{}", "output": "3"},
        {"type": "function_call", "id": "fc1", "call_id": "c1", "name": "lookup", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "c1", "output": "found"},
    ]  # fmt: skip
    messages = items_to_messages("Be brief.", items)
    roles = [m["role"] for m in messages]
    assert roles == ["system", "user", "assistant", "tool", "tool", "tool"]
    assert [c["id"] for c in messages[2]["tool_calls"]] == ["fs1", "m1", "c1"]
    assert "[1] cats.txt: Cats purr." in messages[3]["content"] and messages[4]["content"] == "3"


@pytest.mark.parametrize("bad", [{"type": "code_interpreter", "container": "auto"}, {"type": "computer"}])
def test_unsupported_tools_are_refused(bad: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="not supported"):
        CreateResponseRequest.model_validate({"model": "m", "input": "x", "tools": [bad]})


async def test_truncation_auto_drops_the_oldest_turns() -> None:
    from underlay.api.errors import InvalidRequestError

    class SmallContext(FakeModel):
        async def openai_chat_completion(self, request: ChatCompletionRequest) -> AsyncIterator[ChatCompletionChunk]:
            stream = await super().openai_chat_completion(request)
            if len(request.messages) > 3:

                async def refuse() -> AsyncIterator[ChatCompletionChunk]:
                    raise InvalidRequestError("too long", code="context_length_exceeded")
                    yield  # pragma: no cover

                return refuse()
            return stream

    history = [
        normalize_item({"role": "user", "content": "one"}),
        normalize_item({"role": "assistant", "content": "1"}),
        normalize_item({"role": "user", "content": "two"}),
        normalize_item({"role": "assistant", "content": "2"}),
    ]
    model = SmallContext()
    run = _run({"input": "three", "instructions": "Be brief.", "truncation": "auto"}, history=history)
    await _drive(model, None, run)
    assert run.response.status == "completed"
    kept = [(m.role, m.content) for m in model.requests[-1].messages]
    assert kept == [("system", "Be brief."), ("user", "three")]  # whole turns went, oldest first

    model = SmallContext()
    strict = _run({"input": "three", "instructions": "Be brief."}, history=history)
    await _drive(model, None, strict)
    assert strict.response.status == "failed" and strict.response.error.code == "context_length_exceeded"
    assert strict.client_error is not None  # a non-streaming request gets the 400 itself


def test_citations_come_from_the_search_before_a_client_function_call() -> None:
    """The answer to a turn that searched and called a client function arrives in the follow-up response;
    its citations must use that search's results, but never results from before the last user message."""
    from underlay.providers.inline.responses.provider import _recent_search_results

    results = [{"file_id": "file-1", "filename": "a.txt", "score": 0.9, "text": "x"}]
    older = [{"file_id": "file-0", "filename": "old.txt", "score": 0.5, "text": "y"}]
    history = [
        {"type": "file_search_call", "results": older},
        {"type": "message", "role": "user", "content": "plan"},
        {"type": "function_call", "call_id": "c1", "name": "lookup", "arguments": "{}"},
        {"type": "file_search_call", "results": results},
        {"type": "function_call_output", "call_id": "c1", "output": "ok"},
    ]
    assert _recent_search_results(history) == results
    assert _recent_search_results(history[:2]) == []


def test_input_files_and_compaction_items_reach_the_model_as_text() -> None:
    from underlay.api.errors import InvalidRequestError
    from underlay.providers.inline.responses import compaction
    from underlay.providers.inline.responses.convert import check_input_items

    message = normalize_item(
        {"role": "user", "content": [{"type": "input_text", "text": "Title?"}, {"type": "input_file", "file_id": "f"}]}
    )
    summary = {"type": "compaction", "id": "cmp_1", "encrypted_content": compaction.encode("We chose PAPAYA.")}
    messages = items_to_messages(None, [summary, message], {f"{message['id']}/1": "[File: a.md]\n# Report"})
    assert messages[0] == {"role": "user", "content": compaction.SUMMARY_INTRO + "We chose PAPAYA."}
    assert messages[1]["content"] == "Title?\n[File: a.md]\n# Report\n"
    with pytest.raises(InvalidRequestError) as caught:
        check_input_items([{"type": "compaction", "id": "c", "encrypted_content": "opaque-from-elsewhere"}])
    assert caught.value.param == "input[0].encrypted_content"


def test_output_text_parts_always_carry_logprobs_and_stored_nulls_read_as_defaults() -> None:
    from underlay.api.response_items import shape_for_client

    assistant = normalize_item({"role": "assistant", "content": [{"type": "output_text", "text": "hi"}]})
    assert assistant["content"][0]["annotations"] == [] and assistant["content"][0]["logprobs"] == []
    with_lp = {"type": "message", "content": [{"type": "output_text", "text": "a", "logprobs": [{"token": "a"}]}]}
    assert shape_for_client(with_lp, None)["content"][0]["logprobs"] == []
    assert shape_for_client(with_lp, ["message.output_text.logprobs"])["content"][0]["logprobs"] == [{"token": "a"}]
    old = ResponseObject.model_validate(
        {"id": "r", "created_at": 0, "status": "completed", "model": "m", "temperature": None, "top_p": None,
         "top_logprobs": None}
    )  # fmt: skip
    assert (old.temperature, old.top_p, old.top_logprobs, old.presence_penalty) == (1.0, 1.0, 0, 0.0)
    usage = ResponseObject.model_validate({"id": "r", "created_at": 0, "status": "completed", "model": "m",
                                           "usage": {"input_tokens": 1}}).model_dump()["usage"]  # fmt: skip
    assert usage["input_tokens_details"] == {"cached_tokens": 0, "cache_write_tokens": 0}
