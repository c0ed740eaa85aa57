"""Anthropic Messages ⇄ the internal chat completion interface, for models whose provider speaks only chat.

Why a translation rather than a second code path per provider: every inference provider already
serves chat completions (the embedded model with grammar-constrained tool calls, the remote adapters
with their retries and error mapping), so one faithful mapping here makes every model answer the
``anthropic`` SDK. The mapping, both ways:

- ``system`` → a system message; ``tool_result`` blocks → tool messages (placed before the user's
  other content, where chat expects them); ``tool_use`` blocks → the assistant's tool calls; thinking
  blocks are dropped (they are the model's own notes, not input).
- ``tools`` / ``tool_choice`` → function tools and ``auto`` / ``required`` (for ``any``) / a named
  function / ``none``; ``disable_parallel_tool_use`` → ``parallel_tool_calls: false``.
- finish reasons: ``stop`` → ``end_turn`` (``stop_sequence`` when the provider names the stop string
  it met, as vLLM and the embedded model do in ``stop_reason``), ``length`` → ``max_tokens``,
  ``tool_calls`` → ``tool_use``, ``content_filter`` → ``refusal``.
- a chunk stream → Anthropic's event sequence (``message_start``, ``ping``, per block
  ``content_block_start`` / ``_delta`` / ``_stop``, ``message_delta`` with usage, ``message_stop``).

What chat cannot carry is refused with a 400 naming the field: documents, images inside tool results,
and Anthropic's server tools. Those reach a provider that speaks Messages natively untouched.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import AsyncIterator
from typing import Any

from pydantic import ValidationError

from underlay.api.errors import InvalidRequestError
from underlay.api.inference import (
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ImagePart,
    ImageURL,
    StreamOptions,
    TextPart,
)
from underlay.api.inference import Usage as ChatUsage
from underlay.api.messages import (
    ContentBlock,
    ContentBlockDeltaEvent,
    ContentBlockParam,
    ContentBlockStartEvent,
    ContentBlockStopEvent,
    CountTokensRequest,
    ImageBlockParam,
    InputJSONDelta,
    Message,
    MessageDelta,
    MessageDeltaEvent,
    MessageDeltaUsage,
    MessageParam,
    MessagesRequest,
    MessageStartEvent,
    MessageStopEvent,
    MessageStreamEvent,
    PingEvent,
    StopReason,
    TextBlock,
    TextBlockParam,
    TextDelta,
    ToolResultBlockParam,
    ToolUseBlock,
    ToolUseBlockParam,
    Usage,
)

_STOP_REASONS: dict[str, StopReason] = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}


def new_message_id() -> str:
    """``msg_`` and 24 random hex characters, the shape Anthropic's ids have."""
    return f"msg_{secrets.token_hex(12)}"


# ---------------------------------------------------------------------------------------------------
# Request: Messages → chat
# ---------------------------------------------------------------------------------------------------


def chat_request(params: MessagesRequest | CountTokensRequest, *, count_only: bool = False) -> ChatCompletionRequest:
    """The chat completion request that asks the model what ``params`` asks it.

    ``count_only``: one token at most, no stream; the answer's ``prompt_tokens`` is the input count.
    """
    messages: list[dict[str, Any]] = []
    system = _system_text(params.system)
    if system:
        messages.append({"role": "system", "content": system})
    for i, message in enumerate(params.messages):
        messages.extend(_chat_messages(message, i))
    body: dict[str, Any] = {"model": params.model, "messages": messages}
    tools = _chat_tools(params)
    if tools:
        body["tools"] = tools
    if params.tool_choice is not None:
        choice = params.tool_choice
        if choice.type == "tool":
            if not choice.name:
                raise InvalidRequestError("tool_choice of type 'tool' needs the tool's name.", param="tool_choice.name")
            body["tool_choice"] = {"type": "function", "function": {"name": choice.name}}
        else:
            body["tool_choice"] = {"auto": "auto", "any": "required", "none": "none"}[choice.type]
        if choice.disable_parallel_tool_use:
            body["parallel_tool_calls"] = False
    if count_only:
        body["max_tokens"] = 1
    elif isinstance(params, MessagesRequest):
        body["max_tokens"] = params.max_tokens
        for name in ("temperature", "top_p", "top_k"):
            value = getattr(params, name)
            if value is not None:
                body[name] = value
        if params.stop_sequences:
            body["stop"] = [s for s in params.stop_sequences if s]
        if params.metadata is not None and params.metadata.user_id:
            body["user"] = params.metadata.user_id
        if params.stream:
            body["stream"] = True
            body["stream_options"] = StreamOptions(include_usage=True).model_dump()
    try:
        return ChatCompletionRequest.model_validate(body)
    except ValidationError as exc:  # e.g. tool_choice names a tool that is not in tools
        first = exc.errors()[0]
        problem = str(first.get("msg", "invalid request")).removeprefix("Value error, ")
        raise InvalidRequestError(f"{problem}.", param=_param_of(first)) from None


def _param_of(error: Any) -> str | None:
    loc = [str(part) for part in error.get("loc", ()) if not str(part).startswith(("function-", "union"))]
    if not loc:
        return "tool_choice"
    return {"stop": "stop_sequences", "messages": "messages", "tools": "tools"}.get(loc[0], loc[0])


def _system_text(system: str | list[TextBlockParam] | None) -> str:
    if system is None:
        return ""
    if isinstance(system, str):
        return system
    return "\n\n".join(block.text for block in system)


def _chat_messages(message: MessageParam, i: int) -> list[dict[str, Any]]:
    where = f"messages[{i}].content"
    if isinstance(message.content, str):
        return [{"role": message.role, "content": message.content}]
    if message.role == "assistant":
        return [_assistant_message(message.content, where)]
    tool_messages: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []
    for j, block in enumerate(message.content):
        here = f"{where}[{j}]"
        if isinstance(block, ToolResultBlockParam):
            tool_messages.append(
                {"role": "tool", "tool_call_id": block.tool_use_id, "content": _tool_result_text(block, here)}
            )
        elif isinstance(block, TextBlockParam):
            parts.append(TextPart(text=block.text).model_dump())
        elif isinstance(block, ImageBlockParam):
            parts.append(ImagePart(image_url=ImageURL(url=_image_url(block, here))).model_dump(exclude_none=True))
        elif isinstance(block, ToolUseBlockParam):
            raise InvalidRequestError("tool_use blocks belong in assistant messages.", param=here)
        else:
            raise _native_only(block.type, here)
    out = list(tool_messages)
    if parts:
        out.append({"role": "user", "content": parts})
    return out


def _assistant_message(blocks: list[ContentBlockParam], where: str) -> dict[str, Any]:
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for j, block in enumerate(blocks):
        here = f"{where}[{j}]"
        if isinstance(block, TextBlockParam):
            texts.append(block.text)
        elif isinstance(block, ToolUseBlockParam):
            arguments = json.dumps(block.input, ensure_ascii=False)
            calls.append({"id": block.id, "type": "function", "function": {"name": block.name, "arguments": arguments}})
        elif block.type in ("thinking", "redacted_thinking"):
            continue
        elif block.type == "tool_result":
            raise InvalidRequestError("tool_result blocks belong in user messages.", param=here)
        else:
            raise _native_only(block.type, here)
    out: dict[str, Any] = {"role": "assistant", "content": "".join(texts) or None}
    if calls:
        out["tool_calls"] = calls
    return out


def _tool_result_text(block: ToolResultBlockParam, where: str) -> str:
    content = block.content
    if content is None:
        text = ""
    elif isinstance(content, str):
        text = content
    else:
        pieces = []
        for k, part in enumerate(content):
            if not isinstance(part, TextBlockParam):
                raise _native_only("image inside a tool_result", f"{where}.content[{k}]")
            pieces.append(part.text)
        text = "\n".join(pieces)
    return f"Error: {text}" if block.is_error else text


def _image_url(block: ImageBlockParam, where: str) -> str:
    source = block.source
    if source.type == "url":
        if not source.url:
            raise InvalidRequestError("An image source of type 'url' needs its url.", param=f"{where}.source.url")
        return source.url
    if not source.data or not source.media_type:
        raise InvalidRequestError(
            "An image source of type 'base64' needs media_type and data.", param=f"{where}.source"
        )
    return f"data:{source.media_type};base64,{source.data}"


def _chat_tools(params: MessagesRequest | CountTokensRequest) -> list[dict[str, Any]]:
    tools = []
    for i, tool in enumerate(params.tools or []):
        if tool.type not in (None, "custom"):
            raise _native_only(f"server tool '{tool.type}'", f"tools[{i}]")
        if tool.input_schema is None:
            raise InvalidRequestError(
                "A tool needs its input_schema (a JSON Schema).", param=f"tools[{i}].input_schema"
            )
        function: dict[str, Any] = {"name": tool.name, "parameters": tool.input_schema}
        if tool.description:
            function["description"] = tool.description
        tools.append({"type": "function", "function": function})
    return tools


def _native_only(what: str, where: str) -> InvalidRequestError:
    return InvalidRequestError(
        f"{what} is only served by a provider that speaks the Messages API natively (remote::anthropic); "
        "this model's provider speaks chat completions.",
        param=where,
    )


# ---------------------------------------------------------------------------------------------------
# Response: chat → Messages
# ---------------------------------------------------------------------------------------------------


def stop_reason(
    finish_reason: str | None, matched: Any, stops: list[str] | None
) -> tuple[StopReason | None, str | None]:
    """Anthropic's stop reason and stop sequence for a chat finish reason.

    ``matched`` is the provider's ``stop_reason`` (vLLM's name for the stop string it met); only a
    string the client sent in ``stop_sequences`` counts as one.
    """
    if finish_reason == "stop" and isinstance(matched, str) and stops and matched in stops:
        return "stop_sequence", matched
    if finish_reason is None:
        return None, None
    return _STOP_REASONS.get(finish_reason, "end_turn"), None


def tool_input(arguments: str) -> dict[str, Any]:
    """A tool call's JSON arguments as the ``input`` object (anything else is kept under ``arguments``)."""
    try:
        value = json.loads(arguments) if arguments.strip() else {}
    except ValueError:
        return {"arguments": arguments}
    return value if isinstance(value, dict) else {"arguments": value}


def message_from_chat(completion: ChatCompletion, model: str, params: MessagesRequest) -> Message:
    """The Message for a (non-streamed) chat completion; the client's model id is kept."""
    content: list[ContentBlock | dict[str, Any]] = []
    if not completion.choices:
        reason, sequence = "end_turn", None
    else:
        choice = completion.choices[0]
        if choice.message.content:
            content.append(TextBlock(text=choice.message.content))
        for call in choice.message.tool_calls or []:
            content.append(ToolUseBlock(id=call.id, name=call.function.name, input=tool_input(call.function.arguments)))
        matched = (choice.model_extra or {}).get("stop_reason")
        found_reason, sequence = stop_reason(choice.finish_reason, matched, params.stop_sequences)
        reason = found_reason or "end_turn"
    return Message(
        id=new_message_id(),
        content=content,
        model=model,
        stop_reason=reason,  # type: ignore[arg-type]
        stop_sequence=sequence,
        usage=_usage(completion.usage),
    )


def _usage(usage: ChatUsage | None) -> Usage:
    if usage is None:
        return Usage(input_tokens=0, output_tokens=0)
    return Usage(input_tokens=usage.prompt_tokens, output_tokens=usage.completion_tokens)


async def events_from_chunks(
    chunks: AsyncIterator[ChatCompletionChunk], model: str, params: MessagesRequest
) -> AsyncIterator[MessageStreamEvent]:
    """Anthropic's stream for a chat chunk stream; a failure of ``chunks`` propagates (the server sends it
    as the ``error`` event), after the events already sent."""
    yield MessageStartEvent(
        message=Message(id=new_message_id(), content=[], model=model, usage=Usage(input_tokens=0, output_tokens=0))
    )
    yield PingEvent()
    index = -1
    open_kind: str | None = None  # "text" or "tool", the block now open
    tool_blocks: dict[int, int] = {}  # chat tool-call index → block index
    finish: str | None = None
    matched: Any = None
    usage: ChatUsage | None = None
    try:
        async for chunk in chunks:
            if chunk.usage is not None:
                usage = chunk.usage
            for choice in chunk.choices:
                if choice.index != 0:
                    continue
                delta = choice.delta
                if delta.content:
                    if open_kind != "text":
                        if open_kind is not None:
                            yield ContentBlockStopEvent(index=index)
                        index += 1
                        open_kind = "text"
                        yield ContentBlockStartEvent(index=index, content_block=TextBlock(text=""))
                    yield ContentBlockDeltaEvent(index=index, delta=TextDelta(text=delta.content))
                for call in delta.tool_calls or []:
                    function = call.function or {}
                    if call.index not in tool_blocks:
                        if open_kind is not None:
                            yield ContentBlockStopEvent(index=index)
                        index += 1
                        open_kind = "tool"
                        tool_blocks[call.index] = index
                        block = ToolUseBlock(
                            id=call.id or f"toolu_{secrets.token_hex(12)}", name=function.get("name") or "", input={}
                        )
                        yield ContentBlockStartEvent(index=index, content_block=block)
                    arguments = function.get("arguments") or ""
                    if arguments:  # to its own block, also in the rare stream that interleaves two calls
                        target = tool_blocks[call.index]
                        yield ContentBlockDeltaEvent(index=target, delta=InputJSONDelta(partial_json=arguments))
                if choice.finish_reason is not None:
                    finish = choice.finish_reason
                    matched = (choice.model_extra or {}).get("stop_reason")
    finally:
        aclose = getattr(chunks, "aclose", None)
        if aclose is not None:
            await aclose()
    if open_kind is not None:
        yield ContentBlockStopEvent(index=index)
    reason, sequence = stop_reason(finish or "stop", matched, params.stop_sequences)
    yield MessageDeltaEvent(
        delta=MessageDelta(stop_reason=reason, stop_sequence=sequence),
        usage=MessageDeltaUsage(
            output_tokens=usage.completion_tokens if usage else 0,
            input_tokens=usage.prompt_tokens if usage else None,
        ),
    )
    yield MessageStopEvent()
