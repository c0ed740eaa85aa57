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
from collections.abc import AsyncIterator
from typing import Any

from pydantic import ValidationError

from underlay.api.errors import InvalidRequestError, UnderlayError
from underlay.api.ids import now
from underlay.api.inference import ChatCompletionRequest
from underlay.api.response_items import item_id, shape_for_client
from underlay.api.responses import (
    AnnotationAddedEvent,
    ContentPartEvent,
    ErrorEvent,
    FileSearchTool,
    FormatJSONObject,
    FormatJSONSchema,
    FunctionTool,
    IncompleteDetails,
    McpTool,
    OutputTextDeltaEvent,
    OutputTextDoneEvent,
    RefusalDeltaEvent,
    RefusalDoneEvent,
    ResponseErrorInfo,
    ResponseEvent,
    ResponseUsage,
    WebSearchTool,
)
from underlay.api.tool_runtime import ElicitationResponse
from underlay.providers.inline.responses.convert import items_to_messages
from underlay.providers.inline.responses.policy import (
    allowed,
    chat_tools,
    citations,
    needs_approval,
    safe_name,
    tool_choice,
)
from underlay.providers.inline.responses.server_tools import ServerTools
from underlay.providers.inline.responses.state import Call, McpBinding, Run, Turn, tool_of
from underlay.providers.inline.responses.tool_items import ToolItems

log = logging.getLogger("underlay.responses")


class Engine:
    def __init__(self, inference: Any, tools: ServerTools) -> None:
        self.inference = inference
        self.tools = tools
        self.items = ToolItems(tools)

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
                    item["tools"] = [t for t in listed if allowed(tool, t["name"], t.get("annotations"))]
                    yield run.progress("response.mcp_list_tools.completed", item, out_index)
                except Exception as exc:  # an unreachable server: the item says so, the model goes on without it
                    item["error"] = exc.message if isinstance(exc, UnderlayError) else f"{type(exc).__name__}: {exc}"
                    yield run.progress("response.mcp_list_tools.failed", item, out_index)
                yield run.item_done(out_index)
                listing = item
            for entry in listing.get("tools") or []:
                name, annotations = entry["name"], entry.get("annotations")
                if not allowed(tool, name, annotations):
                    continue
                function_name = safe_name(name, taken)
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
            yield run.stamp(ErrorEvent(code=error.code, message=error.message))
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
            question = request.get("elicitation")
            if isinstance(question, dict) and question.get("id"):
                # Approving a question is answering it: the call runs again and gets the answer.
                content = item.get("elicitation_content")
                answer = {"id": str(question["id"]), "action": "accept", "content": content}
                try:
                    run.elicitation_answers[request["id"]] = [ElicitationResponse.model_validate(answer)]
                except ValidationError:
                    raise InvalidRequestError(
                        "elicitation_content must be an object of strings, numbers, booleans or string lists "
                        "matching the question's requested_schema.",
                        param=f"input[{position}].elicitation_content",
                    ) from None
            pending.append((request, binding))
        if pending:
            calls = [(Call(r["id"], b.function_name, r["arguments"]), b, r["id"]) for r, b in pending]
            async for event in self.items.run_server_calls(run, [(c, b, a) for c, b, a in calls]):
                yield event

    async def _loop(self, run: Run) -> AsyncIterator[ResponseEvent]:
        response = run.response
        request = run.request
        budget = request.max_output_tokens
        if run.awaiting_input:  # an approved call asked another question: the client answers it first
            return
        for turn_number in range(run.max_infer_iters):
            if budget is not None and self._output_tokens(run) >= budget:
                response.status = "incomplete"
                response.incomplete_details = IncompleteDetails(reason="max_output_tokens")
                return
            turn = Turn()
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
            async for event in self.items.client_calls(run, client_calls):
                yield event
            async for event in self.items.approval_requests(run, approvals):
                yield event
            async for event in self.items.run_server_calls(run, [(c, b, None) for c, b in server_calls]):
                yield event
            if dropped:
                response.status = "incomplete"
                response.incomplete_details = IncompleteDetails(reason="max_tool_calls")
                return
            if client_calls or approvals or run.awaiting_input:
                return
        response.status = "incomplete"
        response.incomplete_details = IncompleteDetails(reason="max_infer_iters")

    @staticmethod
    def _output_tokens(run: Run) -> int:
        return run.response.usage.output_tokens if run.response.usage else 0

    def _classify(
        self, run: Run, calls: list[Call]
    ) -> tuple[list[Call], list[tuple[Call, Any]], list[tuple[Call, McpBinding]]]:
        client: list[Call] = []
        server: list[tuple[Call, Any]] = []
        approvals: list[tuple[Call, McpBinding]] = []
        functions = {t.name for t in run.request.tools or [] if isinstance(t, FunctionTool)}
        for call in calls:
            binding = run.mcp.get(call.name)
            if call.name in functions:
                client.append(call)
            elif binding is not None:
                (approvals if binding.needs_approval else server).append((call, binding))  # type: ignore[arg-type]
            elif call.name == "file_search" and tool_of(run, FileSearchTool) is not None:
                server.append((call, "file_search"))
            elif call.name == "web_search" and tool_of(run, WebSearchTool) is not None:
                server.append((call, "web_search"))
            else:
                client.append(call)  # a name the model made up: the client sees it, like any function call
        return client, server, approvals

    # ---- a model turn ---------------------------------------------------------------------------------

    def _chat_request(self, run: Run, turn_number: int, messages: list[dict[str, Any]]) -> ChatCompletionRequest:
        request = run.request
        tools = chat_tools(run)
        body: dict[str, Any] = {
            "model": request.model,
            "messages": messages,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if tools:
            body["tools"] = tools
            body["tool_choice"] = tool_choice(run, turn_number, tools)
            if request.parallel_tool_calls is not None:
                body["parallel_tool_calls"] = request.parallel_tool_calls
        sampling = run.response  # the effective values the response reports, so they are what the model used
        body["temperature"] = sampling.temperature
        body["top_p"] = sampling.top_p
        for key in ("presence_penalty", "frequency_penalty"):
            if getattr(sampling, key):
                body[key] = getattr(sampling, key)
        if request.seed is not None:
            body["seed"] = request.seed
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
        guardrails = (request.model_extra or {}).get("guardrails")
        if guardrails is not None:  # the inference router runs them (input first, output as it streams)
            body["guardrails"] = guardrails
        return ChatCompletionRequest.model_validate(body)

    async def _open_stream(self, run: Run, turn_number: int) -> tuple[Any, Any]:
        """Start the model's stream, dropping the oldest context when it does not fit (``truncation: auto``).

        Returns the stream and its first chunk (so a context-length error surfaces here, before any event).
        """
        context = run.history + run.input_items + run.response.output
        messages = items_to_messages(run.request.instructions, context, run.files)
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

    async def _model_turn(self, run: Run, turn_number: int, turn: Turn) -> AsyncIterator[ResponseEvent]:
        stream, first = await self._open_stream(run, turn_number)
        calls: dict[int, dict[str, str]] = {}
        message: dict[str, Any] | None = None
        index = -1
        pieces: list[str] = []
        refusals: list[str] = []
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
                                    part={"type": "output_text", "text": "", "annotations": [], "logprobs": []},
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
                    if delta.refusal:  # a guardrail refused: the refusal part is written after the loop
                        refusals.append(delta.refusal)
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
            Call(c["id"] or item_id("function_call"), c["name"], c["arguments"]) for _, c in sorted(calls.items())
        ]
        if refusals:
            async for event in self._refusal_part(run, turn, message, "".join(refusals)):
                yield event
            return
        if message is not None:
            part: dict[str, Any] = {"type": "output_text", "text": turn.text, "annotations": [], "logprobs": logprobs}
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

    async def _refusal_part(
        self, run: Run, turn: Turn, message: dict[str, Any] | None, refusal: str
    ) -> AsyncIterator[ResponseEvent]:
        """End the turn's message with a ``refusal`` content part (after any text that passed the guardrails)."""
        turn.calls = []  # a refused turn runs no tools
        if message is None:
            message = {"type": "message", "id": item_id("message"), "role": "assistant", "status": "in_progress"}
            message["content"] = []
            index, added = run.add_item(message)
            turn.message_index = index
            yield added
        index = turn.message_index
        parts: list[dict[str, Any]] = []
        if turn.text:  # the text that was already streamed stays, as the first part
            text_part = {"type": "output_text", "text": turn.text, "annotations": [], "logprobs": []}
            yield run.stamp(
                OutputTextDoneEvent(item_id=message["id"], output_index=index, content_index=0, text=turn.text)
            )
            yield run.stamp(
                ContentPartEvent(
                    type="response.content_part.done",
                    item_id=message["id"],
                    output_index=index,
                    content_index=0,
                    part=text_part,
                )
            )
            parts.append(text_part)
        at = len(parts)
        for kind, part in (("added", {"type": "refusal", "refusal": ""}), ("done", None)):
            if kind == "done":
                yield run.stamp(
                    RefusalDeltaEvent(item_id=message["id"], output_index=index, content_index=at, delta=refusal)
                )
                yield run.stamp(
                    RefusalDoneEvent(item_id=message["id"], output_index=index, content_index=at, refusal=refusal)
                )
                part = {"type": "refusal", "refusal": refusal}
            yield run.stamp(
                ContentPartEvent(
                    type=f"response.content_part.{kind}",  # type: ignore[arg-type]
                    item_id=message["id"],
                    output_index=index,
                    content_index=at,
                    part=part,
                )
            )
        message["content"] = [*parts, {"type": "refusal", "refusal": refusal}]
        message["status"] = "completed"
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
            import jsonschema  # imported by the first structured answer, not at start

            try:
                jsonschema.validate(value, fmt.schema_)
            except jsonschema.ValidationError as exc:
                raise UnderlayError(
                    f"The model's answer does not match the schema '{fmt.name}': {exc.message}", code="invalid_output"
                ) from None

    # ---- tool calls -----------------------------------------------------------------------------------
