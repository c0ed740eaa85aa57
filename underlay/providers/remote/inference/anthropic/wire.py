"""Chat completions ⇄ Anthropic's Messages wire format, for ``remote::anthropic``.

The reverse of what the Messages front door does for chat-only models: here a chat completion request
becomes a Messages request, and Anthropic's message (or event stream) becomes a chat completion (or
chunk stream). What maps where:

- system and developer messages → ``system``; tool messages → ``tool_result`` blocks in a user turn;
  the assistant's tool calls → ``tool_use`` blocks; consecutive turns of one role are merged (Anthropic
  expects user and assistant to alternate).
- ``max_tokens`` is required by Anthropic: the request's limit, else the provider's ``default_max_tokens``.
- ``temperature`` is 0..1 there (0..2 in chat): higher values are capped at 1. ``stop`` →
  ``stop_sequences``; ``tool_choice`` ``required`` → ``any``; ``parallel_tool_calls: false`` →
  ``disable_parallel_tool_use``; ``user`` → ``metadata.user_id``.
- stop reasons: ``end_turn``/``pause_turn`` → ``stop``, ``stop_sequence`` → ``stop`` with the string in
  ``stop_reason`` (vLLM's field), ``max_tokens`` → ``length``, ``tool_use`` → ``tool_calls``,
  ``refusal`` → ``content_filter``.
- usage: ``prompt_tokens`` counts the cached input too (``cache_read``/``cache_creation``), since chat
  has one input figure.
"""

from __future__ import annotations

import json
from typing import Any

from underlay.api.errors import InvalidRequestError
from underlay.api.inference import (
    ChatCompletion,
    ChatCompletionRequest,
    Choice,
    FunctionCall,
    NamedToolChoice,
    ResponseMessage,
    ToolCall,
    Usage,
    content_text,
)
from underlay.api.messages import Message, TextBlock, ToolUseBlock
from underlay.api.messages import Usage as MessagesUsage

FINISH_REASONS = {
    "end_turn": "stop",
    "pause_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}


def messages_payload(params: ChatCompletionRequest, provider_id: str, default_max_tokens: int) -> dict[str, Any]:
    """The JSON body of ``POST /v1/messages`` for a chat completion request."""
    if params.n is not None and params.n > 1:
        raise InvalidRequestError(f"Provider '{provider_id}' (Anthropic) returns one choice; send n=1.", param="n")
    if params.response_format is not None and params.response_format.type != "text":
        raise InvalidRequestError(
            f"Provider '{provider_id}' (Anthropic) does not take response_format '{params.response_format.type}'; "
            "describe the format in the prompt or use a tool.",
            param="response_format",
        )
    system: list[str] = []
    turns: list[dict[str, Any]] = []
    for message in params.messages:
        role = message.role
        if role in ("system", "developer"):
            system.append(content_text(message.content))
            continue
        if role == "tool":
            block = {
                "type": "tool_result",
                "tool_use_id": message.tool_call_id,
                "content": content_text(message.content),
            }
            _append(turns, "user", [block])
        elif role == "user":
            _append(turns, "user", _user_blocks(message.content))
        else:
            _append(turns, "assistant", _assistant_blocks(message))
    body: dict[str, Any] = {
        "model": params.model,
        "messages": turns,
        "max_tokens": params.token_limit or default_max_tokens,
    }
    if system:
        body["system"] = "\n\n".join(system)
    if params.temperature is not None:
        body["temperature"] = min(params.temperature, 1.0)
    if params.top_p is not None:
        body["top_p"] = params.top_p
    top_k = (params.model_extra or {}).get("top_k")
    if isinstance(top_k, int) and not isinstance(top_k, bool):
        body["top_k"] = top_k
    if params.stop_list:
        body["stop_sequences"] = [s for s in params.stop_list if s]
    if params.user:
        body["metadata"] = {"user_id": params.user}
    if params.tools:
        body["tools"] = [
            {
                "name": tool.function.name,
                **({"description": tool.function.description} if tool.function.description else {}),
                "input_schema": tool.function.parameters or {"type": "object", "properties": {}},
            }
            for tool in params.tools
        ]
    choice = _tool_choice(params)
    if choice is not None:
        body["tool_choice"] = choice
    if params.stream:
        body["stream"] = True
    return body


def _append(turns: list[dict[str, Any]], role: str, blocks: list[dict[str, Any]]) -> None:
    if turns and turns[-1]["role"] == role:
        turns[-1]["content"].extend(blocks)
    else:
        turns.append({"role": role, "content": list(blocks)})


def _user_blocks(content: Any) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    blocks: list[dict[str, Any]] = []
    for part in content:
        if part.type == "text":
            blocks.append({"type": "text", "text": part.text})
        elif part.type == "image_url":
            blocks.append({"type": "image", "source": _image_source(part.image_url.url)})
        else:
            raise InvalidRequestError(f"Anthropic's Messages API does not take '{part.type}' content parts.")
    return blocks


def _image_source(url: str) -> dict[str, Any]:
    if url.startswith("data:") and ";base64," in url:
        head, data = url[5:].split(";base64,", 1)
        return {"type": "base64", "media_type": head, "data": data}
    return {"type": "url", "url": url}


def _assistant_blocks(message: Any) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = []
    text = content_text(message.content) if message.content is not None else ""
    if text:
        blocks.append({"type": "text", "text": text})
    for call in message.tool_calls or []:
        blocks.append(
            {"type": "tool_use", "id": call.id, "name": call.function.name, "input": _input(call.function.arguments)}
        )
    if not blocks:
        blocks.append({"type": "text", "text": ""})
    return blocks


def _input(arguments: str) -> dict[str, Any]:
    try:
        value = json.loads(arguments) if arguments.strip() else {}
    except ValueError:
        return {"arguments": arguments}
    return value if isinstance(value, dict) else {"arguments": value}


def _tool_choice(params: ChatCompletionRequest) -> dict[str, Any] | None:
    choice = params.tool_choice
    out: dict[str, Any] | None
    if choice is None:
        out = None
    elif isinstance(choice, NamedToolChoice):
        out = {"type": "tool", "name": choice.function.name}
    else:
        out = {"type": {"auto": "auto", "required": "any", "none": "none"}.get(str(choice), "auto")}
    if params.parallel_tool_calls is False and params.tools:
        out = out or {"type": "auto"}
        if out["type"] != "none":
            out["disable_parallel_tool_use"] = True
    return out


def chat_usage(usage: MessagesUsage | None) -> Usage | None:
    if usage is None:
        return None
    prompt = usage.input_tokens + (usage.cache_read_input_tokens or 0) + (usage.cache_creation_input_tokens or 0)
    return Usage(prompt_tokens=prompt, completion_tokens=usage.output_tokens, total_tokens=prompt + usage.output_tokens)


def completion_from_message(message: Message, created: int) -> ChatCompletion:
    """The chat completion for Anthropic's message (thinking blocks are left out: chat has no place for them)."""
    texts = [block.text for block in message.content if isinstance(block, TextBlock)]
    calls = [
        ToolCall(id=block.id, function=FunctionCall(name=block.name, arguments=json.dumps(block.input)))
        for block in message.content
        if isinstance(block, ToolUseBlock)
    ]
    extra = {"stop_reason": message.stop_sequence} if message.stop_reason == "stop_sequence" else {}
    choice = Choice(
        index=0,
        message=ResponseMessage(content="".join(texts) or None, tool_calls=calls or None),
        finish_reason=FINISH_REASONS.get(message.stop_reason or "end_turn", "stop"),  # type: ignore[arg-type]
        **extra,
    )
    return ChatCompletion(
        id=message.id, created=created, model=message.model, choices=[choice], usage=chat_usage(message.usage)
    )
