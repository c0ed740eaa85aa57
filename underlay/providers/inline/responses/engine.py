"""The agent loop: model turns and server-side tools, as one stream of OpenAI's response events.

One async generator produces every event of a response, in order, with sequence numbers; the
non-streaming call drains the same generator, so both return the same final object. A turn streams
the model's answer (text deltas as they come), then acts on its tool calls:

- client ``function`` calls end the response with ``function_call`` items (the client runs them and
  continues with ``previous_response_id``);
- server-side calls (file_search, mcp, web_search) of one turn run concurrently, each becoming an item
  whose result the next turn sees; a failing call is a failed item, never a failed response;
- an MCP call that needs approval becomes an ``mcp_approval_request`` and ends the response; the
  client's ``mcp_approval_response`` in the next request runs (or declines) it first.

Limits end the response ``incomplete``: ``max_output_tokens`` (over all turns), ``max_tool_calls``
(server-side calls), ``max_infer_iters`` (model turns).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import jsonschema

from underlay.api.errors import InvalidRequestError, UnderlayError
from underlay.api.ids import now
from underlay.api.inference import ChatCompletionRequest
from underlay.api.response_items import item_id, shape_for_client
from underlay.api.responses import (
    AnnotationAddedEvent,
    ArgumentsDeltaEvent,
    ArgumentsDoneEvent,
    ContentPartEvent,
    CreateResponseRequest,
    FileSearchTool,
    FormatJSONObject,
    FormatJSONSchema,
    FunctionTool,
    IncompleteDetails,
    McpApprovalFilter,
    McpTool,
    OutputItemEvent,
    OutputTextDeltaEvent,
    OutputTextDoneEvent,
    ResponseErrorInfo,
    ResponseEvent,
    ResponseLifecycleEvent,
    ResponseObject,
    ResponseUsage,
    ToolChoiceAllowed,
    ToolChoiceFunction,
    ToolChoiceHosted,
    ToolChoiceMcp,
    ToolProgressEvent,
    WebSearchTool,
)
from underlay.providers.inline.responses.convert import items_to_messages, mcp_error_text
from underlay.providers.inline.responses.server_tools import (
    FILE_SEARCH_DEF,
    WEB_SEARCH_DEF,
    McpServer,
    Outcome,
    ServerTools,
)

log = logging.getLogger("underlay.responses")

_SAFE_NAME = re.compile(r"[^a-zA-Z0-9_-]")
_CITATION = re.compile(r"\[(\d{1,2})\]")


@dataclass
class McpBinding:
    """One MCP tool as the model sees it (``function_name``) and where it really lives."""

    function_name: str
    tool_name: str
    server: McpServer
    needs_approval: bool
    definition: dict[str, Any]


@dataclass
class Run:
    """The state of one response while it is produced."""

    request: CreateResponseRequest
    response: ResponseObject
    history: list[dict[str, Any]]
    input_items: list[dict[str, Any]]
    max_infer_iters: int
    include: list[str] = field(default_factory=list)
    sequence: int = 0
    announce: bool = True
    client_error: UnderlayError | None = None
    server_tool_calls: int = 0
    last_results: list[dict[str, Any]] = field(default_factory=list)
    mcp: dict[str, McpBinding] = field(default_factory=dict)

    def stamp(self, event: ResponseEvent) -> ResponseEvent:
        event.sequence_number = self.sequence
        self.sequence += 1
        return event

    def snapshot(self) -> ResponseObject:
        copy = self.response.model_copy(deep=True)
        copy.output = [shape_for_client(i, self.include) for i in copy.output]
        return copy

    def lifecycle(self, kind: str) -> ResponseEvent:
        return self.stamp(ResponseLifecycleEvent(type=kind, response=self.snapshot()))  # type: ignore[arg-type]

    def add_item(self, item: dict[str, Any]) -> tuple[int, ResponseEvent]:
        self.response.output.append(item)
        index = len(self.response.output) - 1
        return index, self.stamp(
            OutputItemEvent(type="response.output_item.added", output_index=index, item=dict(item))
        )

    def item_done(self, index: int) -> ResponseEvent:
        item = shape_for_client(self.response.output[index], self.include)
        return self.stamp(OutputItemEvent(type="response.output_item.done", output_index=index, item=dict(item)))

    def progress(self, kind: str, item: dict[str, Any], index: int) -> ResponseEvent:
        return self.stamp(ToolProgressEvent(type=kind, item_id=item["id"], output_index=index))  # type: ignore[arg-type]


@dataclass
class _Call:
    call_id: str
    name: str
    arguments: str


@dataclass
class _Turn:
    text: str = ""
    calls: list[_Call] = field(default_factory=list)
    finish_reason: str | None = None
    message_index: int | None = None


def _safe_name(name: str, taken: set[str]) -> str:
    base = _SAFE_NAME.sub("_", name)[:64] or "tool"
    candidate, n = base, 2
    while candidate in taken:
        suffix = f"_{n}"
        candidate, n = base[: 64 - len(suffix)] + suffix, n + 1
    return candidate


def needs_approval(tool: McpTool, name: str, annotations: dict[str, Any] | None) -> bool:
    """OpenAI's rule: approval is required unless ``never``, or the per-tool filter exempts the tool."""
    policy = tool.require_approval
    if policy is None or policy == "always":
        return True
    if policy == "never":
        return False
    assert isinstance(policy, McpApprovalFilter)
    read_only = bool((annotations or {}).get("readOnlyHint"))

    def matches(flt: Any) -> bool:
        if flt is None:
            return False
        if flt.tool_names is not None and name in flt.tool_names:
            return True
        return bool(flt.read_only) and read_only

    if matches(policy.never):
        return False
    if matches(policy.always):
        return True
    return not (policy.always is not None and policy.never is None)


def _allowed(tool: McpTool, name: str, annotations: dict[str, Any] | None) -> bool:
    allowed = tool.allowed_tools
    if allowed is None:
        return True
    if isinstance(allowed, list):
        return name in allowed
    if allowed.tool_names is not None and name not in allowed.tool_names:
        return False
    return not (allowed.read_only and not (annotations or {}).get("readOnlyHint"))


def citations(text: str, results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``file_citation`` annotations: at each ``[n]`` the model wrote, else one per file at the end."""
    out: list[dict[str, Any]] = []
    for match in _CITATION.finditer(text):
        n = int(match.group(1))
        if 1 <= n <= len(results):
            r = results[n - 1]
            out.append(
                {"type": "file_citation", "file_id": r["file_id"], "filename": r["filename"], "index": match.start()}
            )
    if out or not text:
        return out
    seen: set[str] = set()
    for r in results:
        if r.get("file_id") and r["file_id"] not in seen:
            seen.add(r["file_id"])
            out.append(
                {"type": "file_citation", "file_id": r["file_id"], "filename": r["filename"], "index": len(text)}
            )
    return out


class Engine:
    def __init__(self, inference: Any, tools: ServerTools) -> None:
        self.inference = inference
        self.tools = tools

    # ---- tools the model sees -------------------------------------------------------------------------

    async def _prepare_mcp(self, run: Run) -> AsyncIterator[ResponseEvent]:
        """Bind each mcp tool's server tools: from an earlier listing in the context, else list them now."""
        known = {
            i["server_label"]: i
            for i in run.history + run.input_items
            if i.get("type") == "mcp_list_tools" and not i.get("error")
        }
        taken = {t.name for t in run.request.tools or [] if isinstance(t, FunctionTool)} | {"file_search", "web_search"}
        for index, tool in enumerate(run.request.tools or []):
            if not isinstance(tool, McpTool):
                continue
            server = self.tools.resolve_mcp(tool, f"tools[{index}]")
            listing = known.get(tool.server_label)
            if listing is None:
                item = {
                    "type": "mcp_list_tools",
                    "id": item_id("mcp_list_tools"),
                    "server_label": tool.server_label,
                    "tools": [],
                }
                out_index, added = run.add_item(item)
                yield added
                yield run.progress("response.mcp_list_tools.in_progress", item, out_index)
                try:
                    listed = await self.tools.mcp_list(server)
                    item["tools"] = [t for t in listed if _allowed(tool, t["name"], t.get("annotations"))]
                    yield run.progress("response.mcp_list_tools.completed", item, out_index)
                except Exception as exc:  # an unreachable server: the item says so, the model goes on without it
                    item["error"] = exc.message if isinstance(exc, UnderlayError) else f"{type(exc).__name__}: {exc}"
                    yield run.progress("response.mcp_list_tools.failed", item, out_index)
                yield run.item_done(out_index)
                listing = item
            for entry in listing.get("tools") or []:
                name, annotations = entry["name"], entry.get("annotations")
                if not _allowed(tool, name, annotations):
                    continue
                function_name = _safe_name(name, taken)
                taken.add(function_name)
                run.mcp[function_name] = McpBinding(
                    function_name=function_name,
                    tool_name=name,
                    server=server,
                    needs_approval=needs_approval(tool, name, annotations),
                    definition={
                        "name": function_name,
                        "description": entry.get("description") or f"{name} on {tool.server_label}",
                        "parameters": entry.get("input_schema") or {"type": "object", "properties": {}},
                    },
                )

    def _chat_tools(self, run: Run) -> list[dict[str, Any]]:
        defs: list[dict[str, Any]] = []
        for tool in run.request.tools or []:
            if isinstance(tool, FunctionTool):
                d: dict[str, Any] = {
                    "name": tool.name,
                    "parameters": tool.parameters or {"type": "object", "properties": {}},
                }
                if tool.description:
                    d["description"] = tool.description
                if tool.strict is not None:
                    d["strict"] = tool.strict
                defs.append(d)
            elif isinstance(tool, FileSearchTool):
                defs.append(FILE_SEARCH_DEF)
            elif isinstance(tool, WebSearchTool):
                defs.append(WEB_SEARCH_DEF)
        defs += [b.definition for b in run.mcp.values()]
        choice = run.request.tool_choice
        if isinstance(choice, ToolChoiceAllowed):
            names = {self._choice_name(run, t) for t in choice.tools}
            defs = [d for d in defs if d["name"] in names]
        if isinstance(choice, ToolChoiceMcp):
            keep = {b.function_name for b in run.mcp.values() if b.server.label == choice.server_label}
            defs = [d for d in defs if d["name"] in keep or d["name"] not in run.mcp]
        unique = {d["name"]: d for d in defs}
        return [{"type": "function", "function": d} for d in unique.values()]

    @staticmethod
    def _choice_name(run: Run, entry: dict[str, Any]) -> str:
        kind = entry.get("type")
        if kind == "function":
            return str(entry.get("name"))
        if kind == "mcp":
            for b in run.mcp.values():
                if b.server.label == entry.get("server_label") and (entry.get("name") in (None, b.tool_name)):
                    return b.function_name
        return "file_search" if kind == "file_search" else "web_search"

    def _tool_choice(self, run: Run, turn: int, tools: list[dict[str, Any]]) -> Any:
        """The request's choice on the first turn; after tools ran, the model may answer (``auto``)."""
        choice = run.request.tool_choice
        if not tools:
            return None
        if choice is None or choice == "auto":
            return "auto"
        if choice == "none":
            return "none"
        if turn > 0:
            return "auto"
        if choice == "required":
            return "required"
        if isinstance(choice, ToolChoiceFunction):
            return {"type": "function", "function": {"name": choice.name}}
        if isinstance(choice, ToolChoiceHosted):
            name = "file_search" if choice.type == "file_search" else "web_search"
            return {"type": "function", "function": {"name": name}}
        if isinstance(choice, ToolChoiceMcp):
            for b in run.mcp.values():
                if b.server.label == choice.server_label and choice.name in (None, b.tool_name):
                    if choice.name is not None:
                        return {"type": "function", "function": {"name": b.function_name}}
            return "required"
        if isinstance(choice, ToolChoiceAllowed):
            return choice.mode
        return "auto"

    # ---- the loop -------------------------------------------------------------------------------------

    async def run(self, run: Run) -> AsyncIterator[ResponseEvent]:
        response = run.response
        if run.announce:
            yield run.lifecycle("response.created")
        response.status = "in_progress"
        yield run.lifecycle("response.in_progress")
        try:
            async for event in self._prepare_mcp(run):
                yield event
            async for event in self._approved_calls(run):
                yield event
            async for event in self._loop(run):
                yield event
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if isinstance(exc, UnderlayError):
                error = ResponseErrorInfo(code=exc.code or "server_error", message=exc.message)
                if exc.status_code < 500 and not any(i.get("type") == "message" for i in response.output):
                    run.client_error = exc
            else:
                log.exception("response %s failed", response.id)
                error = ResponseErrorInfo(code="server_error", message=f"{type(exc).__name__}: {exc}")
            response.status = "failed"
            response.error = error
        if response.status == "in_progress":
            response.status = "completed"
        if response.status in ("completed", "incomplete", "failed"):
            response.completed_at = now() if response.status == "completed" else None
        kind = {"completed": "response.completed", "incomplete": "response.incomplete"}.get(
            response.status, "response.failed"
        )
        yield run.lifecycle(kind)

    async def _approved_calls(self, run: Run) -> AsyncIterator[ResponseEvent]:
        """Run the MCP calls the client approved in this request's input (declined ones the model sees)."""
        context = run.history + run.input_items
        requests = {i["id"]: i for i in context if i.get("type") == "mcp_approval_request"}
        done = {i.get("approval_request_id") for i in context if i.get("type") == "mcp_call"}
        pending: list[tuple[dict[str, Any], McpBinding]] = []
        for position, item in enumerate(run.input_items):
            if item.get("type") != "mcp_approval_response" or not item.get("approve"):
                continue
            request = requests.get(item["approval_request_id"])
            if request is None:
                raise InvalidRequestError(
                    f"mcp_approval_response refers to approval request '{item['approval_request_id']}', which is "
                    "not in this response's context; send it with the previous_response_id that asked for it.",
                    param=f"input[{position}].approval_request_id",
                )
            if request["id"] in done:
                continue
            binding = next(
                (
                    b
                    for b in run.mcp.values()
                    if b.server.label == request["server_label"] and b.tool_name == request["name"]
                ),
                None,
            )
            if binding is None:
                raise InvalidRequestError(
                    f"The approved call needs tool '{request['name']}' of MCP server '{request['server_label']}'; "
                    "send the same mcp tool again in tools.",
                    param=f"input[{position}]",
                )
            pending.append((request, binding))
        if pending:
            calls = [(_Call(r["id"], b.function_name, r["arguments"]), b, r["id"]) for r, b in pending]
            async for event in self._run_server_calls(run, [(c, b, a) for c, b, a in calls]):
                yield event

    async def _loop(self, run: Run) -> AsyncIterator[ResponseEvent]:
        response = run.response
        request = run.request
        budget = request.max_output_tokens
        for turn_number in range(run.max_infer_iters):
            if budget is not None and self._output_tokens(run) >= budget:
                response.status = "incomplete"
                response.incomplete_details = IncompleteDetails(reason="max_output_tokens")
                return
            turn = _Turn()
            async for event in self._model_turn(run, turn_number, turn):
                yield event
            if turn.finish_reason == "length":
                response.status = "incomplete"
                response.incomplete_details = IncompleteDetails(reason="max_output_tokens")
                return
            if not turn.calls:
                self._check_format(run, turn.text)
                return
            client_calls, server_calls, approvals = self._classify(run, turn.calls)
            limit = request.max_tool_calls
            dropped = 0
            if limit is not None:
                room = max(0, limit - run.server_tool_calls)
                dropped = max(0, len(server_calls) + len(approvals) - room)
                server_calls = server_calls[:room]
                approvals = approvals[: max(0, room - len(server_calls))]
            async for event in self._client_calls(run, client_calls):
                yield event
            async for event in self._approval_requests(run, approvals):
                yield event
            async for event in self._run_server_calls(run, [(c, b, None) for c, b in server_calls]):
                yield event
            if dropped:
                response.status = "incomplete"
                response.incomplete_details = IncompleteDetails(reason="max_tool_calls")
                return
            if client_calls or approvals:
                return
        response.status = "incomplete"
        response.incomplete_details = IncompleteDetails(reason="max_infer_iters")

    @staticmethod
    def _output_tokens(run: Run) -> int:
        return run.response.usage.output_tokens if run.response.usage else 0

    def _classify(
        self, run: Run, calls: list[_Call]
    ) -> tuple[list[_Call], list[tuple[_Call, Any]], list[tuple[_Call, McpBinding]]]:
        client: list[_Call] = []
        server: list[tuple[_Call, Any]] = []
        approvals: list[tuple[_Call, McpBinding]] = []
        functions = {t.name for t in run.request.tools or [] if isinstance(t, FunctionTool)}
        for call in calls:
            binding = run.mcp.get(call.name)
            if call.name in functions:
                client.append(call)
            elif binding is not None:
                (approvals if binding.needs_approval else server).append((call, binding))  # type: ignore[arg-type]
            elif call.name == "file_search" and self._tool_of(run, FileSearchTool) is not None:
                server.append((call, "file_search"))
            elif call.name == "web_search" and self._tool_of(run, WebSearchTool) is not None:
                server.append((call, "web_search"))
            else:
                client.append(call)  # a name the model made up: the client sees it, like any function call
        return client, server, approvals

    @staticmethod
    def _tool_of(run: Run, kind: type) -> Any:
        return next((t for t in run.request.tools or [] if isinstance(t, kind)), None)

    # ---- a model turn ---------------------------------------------------------------------------------

    def _chat_request(self, run: Run, turn_number: int, messages: list[dict[str, Any]]) -> ChatCompletionRequest:
        request = run.request
        tools = self._chat_tools(run)
        body: dict[str, Any] = {
            "model": request.model,
            "messages": messages,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if tools:
            body["tools"] = tools
            body["tool_choice"] = self._tool_choice(run, turn_number, tools)
            if request.parallel_tool_calls is not None:
                body["parallel_tool_calls"] = request.parallel_tool_calls
        for key in ("temperature", "top_p", "seed"):
            if getattr(request, key) is not None:
                body[key] = getattr(request, key)
        if request.max_output_tokens is not None:
            body["max_tokens"] = max(1, request.max_output_tokens - self._output_tokens(run))
        fmt = request.text.format if request.text else None
        if isinstance(fmt, FormatJSONSchema):
            spec: dict[str, Any] = {"name": fmt.name, "schema": fmt.schema_}
            if fmt.strict is not None:
                spec["strict"] = fmt.strict
            body["response_format"] = {"type": "json_schema", "json_schema": spec}
        elif isinstance(fmt, FormatJSONObject):
            body["response_format"] = {"type": "json_object"}
        if "message.output_text.logprobs" in run.include:
            body["logprobs"] = True
            body["top_logprobs"] = request.top_logprobs or 0
        return ChatCompletionRequest.model_validate(body)

    async def _open_stream(self, run: Run, turn_number: int) -> tuple[Any, Any]:
        """Start the model's stream, dropping the oldest context when it does not fit (``truncation: auto``).

        Returns the stream and its first chunk (so a context-length error surfaces here, before any event).
        """
        context = run.history + run.input_items + run.response.output
        messages = items_to_messages(run.request.instructions, context)
        while True:
            stream = await self.inference.openai_chat_completion(self._chat_request(run, turn_number, messages))
            try:
                first = await anext(stream)
                return stream, first
            except StopAsyncIteration:
                return stream, None
            except InvalidRequestError as exc:
                await stream.aclose()
                if exc.code != "context_length_exceeded" or run.request.truncation != "auto":
                    raise
                messages = self._truncate(messages)
                if messages is None:
                    raise

    @staticmethod
    def _truncate(messages: list[dict[str, Any]]) -> list[dict[str, Any]] | None:
        """Drop the oldest turn (keeping the system message); ``None`` when only the last user turn is left."""
        head = [m for m in messages[:1] if m["role"] == "system"]
        body = messages[len(head) :]
        users = [i for i, m in enumerate(body) if m["role"] == "user"]
        if len(users) < 2 and not (users and users[0] > 0):
            return None
        cut = users[1] if users[0] == 0 else users[0]
        return head + body[cut:]

    async def _model_turn(self, run: Run, turn_number: int, turn: _Turn) -> AsyncIterator[ResponseEvent]:
        stream, first = await self._open_stream(run, turn_number)
        calls: dict[int, dict[str, str]] = {}
        message: dict[str, Any] | None = None
        index = -1
        pieces: list[str] = []
        logprobs: list[dict[str, Any]] = []
        want_lp = "message.output_text.logprobs" in run.include
        cite = bool(run.last_results)
        try:
            chunk = first
            while chunk is not None:
                if chunk.usage is not None:
                    self._add_usage(run, chunk.usage.prompt_tokens, chunk.usage.completion_tokens)
                for choice in chunk.choices[:1]:
                    delta = choice.delta
                    if delta.content:
                        if message is None:
                            message = {
                                "type": "message",
                                "id": item_id("message"),
                                "role": "assistant",
                                "status": "in_progress",
                                "content": [],
                            }
                            index, added = run.add_item(message)
                            turn.message_index = index
                            yield added
                            yield run.stamp(
                                ContentPartEvent(
                                    type="response.content_part.added",
                                    item_id=message["id"],
                                    output_index=index,
                                    content_index=0,
                                    part={"type": "output_text", "text": "", "annotations": []},
                                )
                            )
                        pieces.append(delta.content)
                        lp = []
                        if want_lp and choice.logprobs and choice.logprobs.content:
                            lp = [t.model_dump(mode="json") for t in choice.logprobs.content]
                            logprobs.extend(lp)
                        yield run.stamp(
                            OutputTextDeltaEvent(
                                item_id=message["id"],
                                output_index=index,
                                content_index=0,
                                delta=delta.content,
                                logprobs=lp,
                            )
                        )
                    for call in delta.tool_calls or []:
                        slot = calls.setdefault(call.index, {"id": "", "name": "", "arguments": ""})
                        if call.id:
                            slot["id"] = call.id
                        function = call.function or {}
                        slot["name"] += function.get("name") or ""
                        slot["arguments"] += function.get("arguments") or ""
                    if choice.finish_reason:
                        turn.finish_reason = choice.finish_reason
                chunk = await anext(stream, None)
        finally:
            await stream.aclose()
        turn.text = "".join(pieces)
        turn.calls = [
            _Call(c["id"] or item_id("function_call"), c["name"], c["arguments"]) for _, c in sorted(calls.items())
        ]
        if message is not None:
            part: dict[str, Any] = {"type": "output_text", "text": turn.text, "annotations": []}
            if want_lp:
                part["logprobs"] = logprobs
            if cite and not turn.calls:
                for n, annotation in enumerate(citations(turn.text, run.last_results)):
                    part["annotations"].append(annotation)
                    yield run.stamp(
                        AnnotationAddedEvent(
                            item_id=message["id"],
                            output_index=index,
                            content_index=0,
                            annotation_index=n,
                            annotation=annotation,
                        )
                    )
            yield run.stamp(
                OutputTextDoneEvent(
                    item_id=message["id"], output_index=index, content_index=0, text=turn.text, logprobs=logprobs
                )
            )
            message["content"] = [part]
            yield run.stamp(
                ContentPartEvent(
                    type="response.content_part.done",
                    item_id=message["id"],
                    output_index=index,
                    content_index=0,
                    part=shape_for_client({"type": "message", "content": [part]}, run.include)["content"][0],
                )
            )
            message["status"] = "incomplete" if turn.finish_reason == "length" else "completed"
            yield run.item_done(index)

    @staticmethod
    def _add_usage(run: Run, prompt: int, completion: int) -> None:
        usage = run.response.usage or ResponseUsage()
        usage.input_tokens += prompt
        usage.output_tokens += completion
        usage.total_tokens = usage.input_tokens + usage.output_tokens
        run.response.usage = usage

    def _check_format(self, run: Run, text: str) -> None:
        """``text.format`` json_object / json_schema: the final answer must parse (and match the schema)."""
        fmt = run.request.text.format if run.request.text else None
        if not isinstance(fmt, FormatJSONObject | FormatJSONSchema):
            return
        try:
            value = json.loads(text)
        except ValueError as exc:
            raise UnderlayError(f"The model's answer is not valid JSON ({exc}).", code="invalid_output") from None
        if isinstance(fmt, FormatJSONObject) and not isinstance(value, dict):
            raise UnderlayError("The model's answer is JSON but not an object.", code="invalid_output")
        if isinstance(fmt, FormatJSONSchema):
            try:
                jsonschema.validate(value, fmt.schema_)
            except jsonschema.ValidationError as exc:
                raise UnderlayError(
                    f"The model's answer does not match the schema '{fmt.name}': {exc.message}", code="invalid_output"
                ) from None

    # ---- tool calls -----------------------------------------------------------------------------------

    async def _client_calls(self, run: Run, calls: list[_Call]) -> AsyncIterator[ResponseEvent]:
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
            yield run.stamp(
                ArgumentsDeltaEvent(
                    type="response.function_call_arguments.delta",
                    item_id=item["id"],
                    output_index=index,
                    delta=call.arguments,
                )
            )
            item["arguments"] = call.arguments
            yield run.stamp(
                ArgumentsDoneEvent(
                    type="response.function_call_arguments.done",
                    item_id=item["id"],
                    output_index=index,
                    arguments=call.arguments,
                    name=call.name,
                )
            )
            item["status"] = "completed"
            yield run.item_done(index)

    async def _approval_requests(
        self, run: Run, approvals: list[tuple[_Call, McpBinding]]
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

    async def _run_server_calls(
        self, run: Run, calls: list[tuple[_Call, Any, str | None]]
    ) -> AsyncIterator[ResponseEvent]:
        """Announce every call, run them all at once, then report each (in output order)."""
        if not calls:
            return
        started: list[tuple[int, dict[str, Any], _Call, Any]] = []
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
                yield run.stamp(
                    ArgumentsDeltaEvent(
                        type="response.mcp_call_arguments.delta",
                        item_id=item["id"],
                        output_index=index,
                        delta=call.arguments,
                    )
                )
                item["arguments"] = call.arguments
                yield run.stamp(
                    ArgumentsDoneEvent(
                        type="response.mcp_call_arguments.done",
                        item_id=item["id"],
                        output_index=index,
                        arguments=call.arguments,
                    )
                )
                yield run.progress("response.mcp_call.in_progress", item, index)
            else:
                query = _query_of(call.arguments)
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
        outcomes = await asyncio.gather(*(self._execute(run, call, target) for _, _, call, target in started))
        new_results: list[dict[str, Any]] = []
        for (index, item, _call, target), outcome in zip(started, outcomes, strict=True):
            if isinstance(target, McpBinding):
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

    async def _execute(self, run: Run, call: _Call, target: Any) -> Outcome:
        try:
            if isinstance(target, McpBinding):
                return await self.tools.mcp_call(target.server, target.tool_name, call.arguments)
            if target == "file_search":
                tool = self._tool_of(run, FileSearchTool)
                return await self.tools.file_search(tool, _query_of(call.arguments))
            return await self.tools.web_search(_query_of(call.arguments))
        except Exception as exc:  # never let one tool take the response down
            log.exception("server-side tool %s failed", call.name)
            message = exc.message if isinstance(exc, UnderlayError) else f"{type(exc).__name__}: {exc}"
            return Outcome(error=message, error_code="internal_error")


def _query_of(arguments: str) -> str:
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


__all__ = ["Engine", "Run", "citations", "mcp_error_text", "needs_approval"]
