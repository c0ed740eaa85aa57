"""Tool calls as output items: client function calls, approval requests, and server-side calls.

Server-side calls of one turn are announced in output order, run concurrently, then reported in the
same order, so the event stream stays deterministic while the work overlaps.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

from underlay.api.errors import UnderlayError
from underlay.api.response_items import item_id
from underlay.api.responses import ArgumentsDeltaEvent, ArgumentsDoneEvent, FileSearchTool, ResponseEvent
from underlay.providers.inline.responses.server_tools import Outcome, ServerTools
from underlay.providers.inline.responses.state import Call, McpBinding, Run, tool_of

log = logging.getLogger("underlay.responses")

# Event-loop iterations (and at most this many seconds) a turn's remote calls get to send their
# requests before its local searches start.
_REMOTE_HEAD_START = 30
_REMOTE_HEAD_START_S = 0.002


class ToolItems:
    def __init__(self, tools: ServerTools) -> None:
        self.tools = tools

    async def client_calls(self, run: Run, calls: list[Call]) -> AsyncIterator[ResponseEvent]:
        for call in calls:
            item = {
                "type": "function_call",
                "id": item_id("function_call"),
                "call_id": call.call_id,
                "name": call.name,
                "arguments": "",
                "status": "in_progress",
            }
            index, added = run.add_item(item)
            yield added
            for event in argument_events(run, "response.function_call_arguments", item, index, call, name=call.name):
                yield event
            item["status"] = "completed"
            yield run.item_done(index)

    async def approval_requests(
        self, run: Run, approvals: list[tuple[Call, McpBinding]]
    ) -> AsyncIterator[ResponseEvent]:
        for call, binding in approvals:
            item = {
                "type": "mcp_approval_request",
                "id": item_id("mcp_approval_request"),
                "server_label": binding.server.label,
                "name": binding.tool_name,
                "arguments": call.arguments,
            }
            index, added = run.add_item(item)
            yield added
            yield run.item_done(index)

    async def run_server_calls(
        self, run: Run, calls: list[tuple[Call, Any, str | None]]
    ) -> AsyncIterator[ResponseEvent]:
        """Announce every call, run them all at once, then report each (in output order)."""
        if not calls:
            return
        started: list[tuple[int, dict[str, Any], Call, Any]] = []
        for call, target, approval_id in calls:
            run.server_tool_calls += 1
            if isinstance(target, McpBinding):
                item: dict[str, Any] = {
                    "type": "mcp_call",
                    "id": item_id("mcp_call"),
                    "server_label": target.server.label,
                    "name": target.tool_name,
                    "arguments": "",
                    "status": "in_progress",
                }
                if approval_id:
                    item["approval_request_id"] = approval_id
                index, added = run.add_item(item)
                yield added
                for event in argument_events(run, "response.mcp_call_arguments", item, index, call):
                    yield event
                yield run.progress("response.mcp_call.in_progress", item, index)
            else:
                query = query_of(call.arguments)
                if target == "file_search":
                    item = {
                        "type": "file_search_call",
                        "id": item_id("file_search_call"),
                        "queries": [query],
                        "status": "in_progress",
                        "results": None,
                    }
                else:
                    item = {
                        "type": "web_search_call",
                        "id": item_id("web_search_call"),
                        "status": "in_progress",
                        "action": {"type": "search", "query": query},
                    }
                index, added = run.add_item(item)
                yield added
                prefix = "response.file_search_call" if target == "file_search" else "response.web_search_call"
                yield run.progress(f"{prefix}.in_progress", item, index)
                item["status"] = "searching"
                yield run.progress(f"{prefix}.searching", item, index)
            started.append((index, item, call, target))
        outcomes = await self._run_all(run, [(call, target) for _, _, call, target in started])
        new_results: list[dict[str, Any]] = []
        for (index, item, _call, target), outcome in zip(started, outcomes, strict=True):
            if isinstance(target, McpBinding):
                if outcome.elicitation is not None:
                    # The server asked a question: the call waits for the client's answer, asked for
                    # as an approval request carrying the question (see engine._approved_calls).
                    item["status"] = "incomplete"
                    item["error"] = {
                        "type": "mcp_elicitation_required",
                        "content": [{"type": "text", "text": outcome.error or ""}],
                    }
                    yield run.progress("response.mcp_call.failed", item, index)
                    yield run.item_done(index)
                    request = {
                        "type": "mcp_approval_request",
                        "id": item_id("mcp_approval_request"),
                        "server_label": target.server.label,
                        "name": target.tool_name,
                        "arguments": _call.arguments,
                        "elicitation": outcome.elicitation,
                    }
                    asked, added = run.add_item(request)
                    yield added
                    yield run.item_done(asked)
                    run.awaiting_input = True
                    continue
                if outcome.error is not None:
                    item["status"] = "failed"
                    item["error"] = {
                        "type": "mcp_tool_execution_error",
                        "content": [{"type": "text", "text": outcome.error}],
                    }
                    yield run.progress("response.mcp_call.failed", item, index)
                else:
                    item["status"] = "completed"
                    item["output"] = outcome.text
                    yield run.progress("response.mcp_call.completed", item, index)
            elif target == "file_search":
                if outcome.error is not None:
                    item["status"] = "failed"
                    item["error"] = outcome.error
                else:
                    item["status"] = "completed"
                    item["results"] = outcome.results
                    new_results = outcome.results
                yield run.progress("response.file_search_call.completed", item, index)
            else:
                if outcome.error is not None:
                    item["status"] = "failed"
                    item["error"] = outcome.error
                else:
                    item["status"] = "completed"
                    item["results"] = outcome.results
                    sources = [{"type": "url", "url": r["url"]} for r in outcome.results if r.get("url")]
                    item["action"]["sources"] = sources
                yield run.progress("response.web_search_call.completed", item, index)
            yield run.item_done(index)
        run.last_results = new_results

    async def _run_all(self, run: Run, calls: list[tuple[Call, Any]]) -> list[Outcome]:
        """Every call at once; outcomes in ``calls`` order.

        Calls to other servers (MCP, web search) go out before any file_search starts: a search's
        local work (database reads, the query embedding in a thread that holds the GIL for
        milliseconds) would otherwise delay the remote requests, which take a few event-loop
        iterations to reach the socket and are usually the longer calls. The searches wait those
        few iterations (microseconds) instead.
        """
        remote = [i for i, (_, target) in enumerate(calls) if target != "file_search"]
        local = [i for i, (_, target) in enumerate(calls) if target == "file_search"]
        tasks: dict[int, asyncio.Future[Outcome]] = {}
        for i in remote:
            tasks[i] = asyncio.ensure_future(self._execute(run, *calls[i]))
        if remote and local:
            until = time.monotonic() + _REMOTE_HEAD_START_S
            for _ in range(_REMOTE_HEAD_START):
                await asyncio.sleep(0)
                if time.monotonic() >= until:
                    break
        for i in local:
            tasks[i] = asyncio.ensure_future(self._execute(run, *calls[i]))
        try:
            return list(await asyncio.gather(*(tasks[i] for i in range(len(calls)))))
        finally:
            for task in tasks.values():
                task.cancel()

    async def _execute(self, run: Run, call: Call, target: Any) -> Outcome:
        try:
            if isinstance(target, McpBinding):
                answers = run.elicitation_answers.get(call.call_id)
                return await self.tools.mcp_call(target.server, target.tool_name, call.arguments, answers)
            if target == "file_search":
                tool = tool_of(run, FileSearchTool)
                return await self.tools.file_search(tool, query_of(call.arguments))
            return await self.tools.web_search(query_of(call.arguments))
        except Exception as exc:  # never let one tool take the response down
            log.exception("server-side tool %s failed", call.name)
            message = exc.message if isinstance(exc, UnderlayError) else f"{type(exc).__name__}: {exc}"
            return Outcome(error=message, error_code="internal_error")


def argument_events(
    run: Run, prefix: str, item: dict[str, Any], index: int, call: Call, name: str | None = None
) -> list[ResponseEvent]:
    """The ``<prefix>.delta`` / ``.done`` pair for a call's arguments (sent whole: the model's call is
    complete before it is announced), recording the arguments on the item in between."""
    delta = run.stamp(
        ArgumentsDeltaEvent(type=f"{prefix}.delta", item_id=item["id"], output_index=index, delta=call.arguments)
    )
    item["arguments"] = call.arguments
    done = run.stamp(
        ArgumentsDoneEvent(
            type=f"{prefix}.done", item_id=item["id"], output_index=index, arguments=call.arguments, name=name
        )
    )
    return [delta, done]


def query_of(arguments: str) -> str:
    try:
        value = json.loads(arguments or "{}")
    except ValueError:
        return arguments
    if isinstance(value, dict):
        query = value.get("query") or value.get("queries")
        if isinstance(query, list):
            return " ".join(str(q) for q in query)
        return str(query or "")
    return str(value)
