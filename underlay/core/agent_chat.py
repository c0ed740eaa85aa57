"""Chat completions against a deployed agent: ``model="agent/<name>"`` from any chat client.

Why through Responses and not a second loop: the agent's loop (server-side tools, knowledge, shields)
is the Responses engine's. A chat request is translated into a Responses request (system and developer
messages become instructions, earlier tool calls and their results become function-call items), the
agent's definition is applied by the Responses router, and the final output is translated back: text
becomes the message, client-side function calls become ``tool_calls`` with ``finish_reason
"tool_calls"``, as OpenAI's API returns them. Nothing is stored, as a plain chat completion isn't.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from pydantic import ValidationError

from underlay.api.errors import InvalidRequestError, UpstreamError
from underlay.api.inference import (
    AssistantMessage,
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    Choice,
    ChoiceDelta,
    ChunkChoice,
    DeveloperMessage,
    FunctionCall,
    ResponseFormatJSONObject,
    ResponseFormatJSONSchema,
    ResponseMessage,
    SystemMessage,
    ToolCall,
    ToolCallDelta,
    ToolMessage,
    Usage,
    content_text,
)
from underlay.api.responses import CreateResponseRequest, ResponseEvent, ResponseObject, ResponsesApi

ResponsesLookup = Callable[[], ResponsesApi | None]
"""The Responses router, looked up per call: it is built after the inference router it serves."""


def _input_items(params: ChatCompletionRequest) -> tuple[str | None, list[dict[str, Any]]]:
    """The chat messages as (instructions, Responses input items)."""
    instructions: list[str] = []
    items: list[dict[str, Any]] = []
    for message in params.messages:
        if isinstance(message, SystemMessage | DeveloperMessage):
            instructions.append(content_text(message.content))
        elif isinstance(message, ToolMessage):
            items.append(
                {
                    "type": "function_call_output",
                    "call_id": message.tool_call_id,
                    "output": content_text(message.content),
                }
            )
        elif isinstance(message, AssistantMessage):
            text = content_text(message.content)
            if text:
                items.append({"role": "assistant", "content": text})
            for call in message.tool_calls or []:
                items.append(
                    {
                        "type": "function_call",
                        "call_id": call.id,
                        "name": call.function.name,
                        "arguments": call.function.arguments,
                    }
                )
        else:
            items.append({"role": "user", "content": content_text(message.content)})
    return ("\n\n".join(instructions) or None), items


_UNSUPPORTED = ("stop", "logprobs", "top_logprobs", "logit_bias")
"""Chat parameters with no Responses counterpart here: refused rather than silently dropped."""
_PASSED = (
    "temperature",
    "top_p",
    "presence_penalty",
    "frequency_penalty",
    "parallel_tool_calls",
    "metadata",
    "user",
    "seed",
    "tool_choice",
)


def _tool_choice(value: Any) -> Any:
    """Chat's ``{"type": "function", "function": {"name": n}}`` is Responses' ``{"type": "function", "name": n}``."""
    if isinstance(value, str):
        return value
    dumped = value.model_dump(exclude_none=True) if hasattr(value, "model_dump") else dict(value)
    function = dumped.get("function") or {}
    return {"type": "function", "name": function.get("name")}


def responses_request(params: ChatCompletionRequest) -> CreateResponseRequest:
    """The Responses request a chat request to an agent becomes (before the agent's definition applies)."""
    if params.n is not None and params.n > 1:
        raise InvalidRequestError("An agent gives one answer per request; leave out n or set it to 1.", param="n")
    for name in _UNSUPPORTED:
        if getattr(params, name) not in (None, False, 0):
            raise InvalidRequestError(
                f"{name} is not supported when model is a deployed agent (it runs on the Responses API); leave it out.",
                param=name,
            )
    instructions, items = _input_items(params)
    body: dict[str, Any] = {"model": params.model, "input": items, "store": False, "stream": bool(params.stream)}
    if instructions:
        body["instructions"] = instructions
    if params.tools:
        body["tools"] = [{"type": "function", **t.function.model_dump(exclude_none=True)} for t in params.tools]
    for name in _PASSED:
        value = getattr(params, name)
        if value is not None:
            body[name] = _tool_choice(value) if name == "tool_choice" else value
    fmt = params.response_format
    if isinstance(fmt, ResponseFormatJSONObject):
        body["text"] = {"format": {"type": "json_object"}}
    elif isinstance(fmt, ResponseFormatJSONSchema):
        spec = fmt.json_schema
        schema: dict[str, Any] = {"type": "json_schema", "name": spec.name, "schema": spec.schema_ or {}}
        if spec.description is not None:
            schema["description"] = spec.description
        if spec.strict is not None:
            schema["strict"] = spec.strict
        body["text"] = {"format": schema}
    shields = (params.model_extra or {}).get("guardrails")
    if shields is not None:
        body["guardrails"] = shields
    limit = params.max_completion_tokens or params.max_tokens
    if limit is not None:
        body["max_output_tokens"] = limit
    try:
        return CreateResponseRequest.model_validate(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise InvalidRequestError(
            f"This chat request cannot run as a deployed agent: {where}: {first['msg']}.", param=where or None
        ) from None


def _calls(response: ResponseObject) -> list[ToolCall]:
    return [
        ToolCall(id=item["call_id"], function=FunctionCall(name=item["name"], arguments=item.get("arguments") or "{}"))
        for item in response.output
        if item.get("type") == "function_call"
    ]


def _finish(response: ResponseObject, calls: list[ToolCall]) -> str:
    if calls:
        return "tool_calls"
    details = response.incomplete_details
    return "length" if response.status == "incomplete" and details is not None else "stop"


def _usage(response: ResponseObject) -> Usage | None:
    if response.usage is None:
        return None
    u = response.usage
    return Usage(prompt_tokens=u.input_tokens, completion_tokens=u.output_tokens, total_tokens=u.total_tokens)


def _check(response: ResponseObject, model: str) -> None:
    if response.status == "failed":
        message = response.error.message if response.error is not None else "the agent's response failed"
        raise UpstreamError(model, message)


def chat_completion(response: ResponseObject, model: str) -> ChatCompletion:
    """A finished response as the chat completion OpenAI's API would give."""
    _check(response, model)
    calls = _calls(response)
    message = ResponseMessage(content=response.output_text or None, tool_calls=calls or None)
    return ChatCompletion(
        id=f"chatcmpl-{response.id.removeprefix('resp_')}",
        created=response.created_at,
        model=model,
        choices=[Choice(index=0, message=message, finish_reason=_finish(response, calls))],  # type: ignore[arg-type]
        usage=_usage(response),
    )


async def chat_chunks(events: AsyncIterator[ResponseEvent], model: str) -> AsyncIterator[ChatCompletionChunk]:
    """A Responses event stream as chat completion chunks: text deltas as they come, then the tool calls
    and the finish reason from the finished response."""
    chunk_id = f"chatcmpl-agent-{time.time_ns()}"
    created = int(time.time())

    def chunk(delta: ChoiceDelta, finish: str | None = None, usage: Usage | None = None) -> ChatCompletionChunk:
        choice = ChunkChoice(index=0, delta=delta, finish_reason=finish)  # type: ignore[arg-type]
        return ChatCompletionChunk(id=chunk_id, created=created, model=model, choices=[choice], usage=usage)

    yield chunk(ChoiceDelta(role="assistant", content=""))
    try:
        async for event in events:
            if event.type == "response.output_text.delta":
                yield chunk(ChoiceDelta(content=str(getattr(event, "delta", ""))))
            elif event.type in ("response.completed", "response.incomplete", "response.failed"):
                response: ResponseObject = getattr(event, "response")  # noqa: B009 - lifecycle events carry it
                _check(response, model)
                calls = _calls(response)
                if calls:
                    deltas = [
                        ToolCallDelta(
                            index=i,
                            id=c.id,
                            type="function",
                            function={"name": c.function.name, "arguments": c.function.arguments},
                        )
                        for i, c in enumerate(calls)
                    ]
                    yield chunk(ChoiceDelta(tool_calls=deltas))
                yield chunk(ChoiceDelta(), _finish(response, calls), _usage(response))
                return
            elif event.type == "error":
                raise UpstreamError(model, json.dumps(event.model_dump(exclude={"type", "sequence_number"}))[:500])
    finally:
        aclose = getattr(events, "aclose", None)
        if aclose is not None:
            await aclose()


class AgentChat:
    """Runs a chat request whose model is ``agent/<name>[@version]`` through the Responses router."""

    def __init__(self, responses: ResponsesLookup) -> None:
        self.responses = responses

    async def __call__(self, params: ChatCompletionRequest) -> ChatCompletion | AsyncIterator[ChatCompletionChunk]:
        router = self.responses()
        if router is None:
            raise InvalidRequestError(
                f"'{params.model[:80]}' names a deployed agent, which runs on the Responses API; add responses "
                "and agents to apis.",
                param="model",
            )
        result = await router.create_response(responses_request(params))
        if isinstance(result, ResponseObject):
            return chat_completion(result, params.model)
        return chat_chunks(result, params.model)
