"""Translation between OpenAI chat completions and Amazon Bedrock's Converse API (pure, no I/O).

Kept apart from the provider (:mod:`underlay.providers.remote.inference.bedrock`) so the mapping can be
read and tested on its own. The shapes follow Bedrock's public Converse / ConverseStream reference:

- ``system`` and ``developer`` messages become Converse's top-level ``system`` blocks; Converse wants
  user and assistant turns to alternate, so consecutive turns of one role (several tool results, a tool
  result followed by a user message) are merged into one message;
- assistant ``tool_calls`` become ``toolUse`` blocks (the arguments parsed to JSON), ``tool`` messages
  ``toolResult`` blocks in a user turn; ``tools`` become ``toolConfig.tools[].toolSpec`` and
  ``tool_choice`` auto/required/named becomes ``auto``/``any``/``tool`` (``none`` sends no tools at all,
  as Converse has no such choice, and then earlier tool calls and results go as text, since Converse
  refuses tool blocks without tools);
- sampling knobs go to ``inferenceConfig`` (``maxTokens``, ``temperature``, ``topP``, ``stopSequences``);
- ``stopReason`` maps to ``finish_reason``: end_turn and stop_sequence are ``stop``, max_tokens and
  model_context_window_exceeded ``length``, tool_use ``tool_calls``, guardrail_intervened and
  content_filtered ``content_filter``.

Options Converse cannot honour (several choices, logprobs, a JSON response format, audio or file
parts, images by URL) are refused with a 400 naming the parameter, rather than silently dropped.
"""

from __future__ import annotations

import base64
import binascii
import json
import time
import uuid
from typing import Any

from underlay.api.errors import InvalidRequestError
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
    ImagePart,
    NamedToolChoice,
    ResponseMessage,
    SystemMessage,
    TextPart,
    ToolCall,
    ToolCallDelta,
    ToolMessage,
    Usage,
    content_text,
)

__all__ = [
    "FINISH_REASONS",
    "StreamTranslator",
    "completion_from_converse",
    "converse_request",
    "finish_reason",
    "usage_from_converse",
]

FINISH_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "guardrail_intervened": "content_filter",
    "content_filtered": "content_filter",
}
_IMAGE_FORMATS = {"image/png": "png", "image/jpeg": "jpeg", "image/jpg": "jpeg", "image/gif": "gif"}
_IMAGE_FORMATS["image/webp"] = "webp"


def finish_reason(stop_reason: str | None) -> str:
    """Bedrock's ``stopReason`` as an OpenAI finish reason (an unknown one reads as ``stop``)."""
    return FINISH_REASONS.get(stop_reason or "", "stop")


def converse_request(params: ChatCompletionRequest) -> dict[str, Any]:
    """The keyword arguments of ``Converse`` / ``ConverseStream`` (without ``modelId``) for a chat request."""
    _refuse_unsupported(params)
    system: list[dict[str, Any]] = []
    turns: list[dict[str, Any]] = []
    for index, message in enumerate(params.messages):
        if isinstance(message, SystemMessage | DeveloperMessage):
            text = content_text(message.content)
            if text:
                system.append({"text": text})
            continue
        if isinstance(message, ToolMessage):
            role, blocks = "user", [_tool_result(message)]
        elif isinstance(message, AssistantMessage):
            role, blocks = "assistant", _assistant_blocks(message, index)
        else:
            role, blocks = "user", _user_blocks(message.content, index)
        if not blocks:
            continue
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": role, "content": blocks})
    request: dict[str, Any] = {"messages": turns}
    if system:
        request["system"] = system
    inference: dict[str, Any] = {}
    limit = params.max_completion_tokens or params.max_tokens
    if limit is not None:
        inference["maxTokens"] = limit
    if params.temperature is not None:
        inference["temperature"] = params.temperature
    if params.top_p is not None:
        inference["topP"] = params.top_p
    if params.stop_list:
        inference["stopSequences"] = params.stop_list
    if inference:
        request["inferenceConfig"] = inference
    tool_config = _tool_config(params)
    if tool_config is not None:
        request["toolConfig"] = tool_config
    else:
        _tool_blocks_as_text(turns)
    return request


def _tool_blocks_as_text(turns: list[dict[str, Any]]) -> None:
    """Converse refuses toolUse/toolResult blocks in a request without ``toolConfig`` (no ``tools``, or
    ``tool_choice: none``), so earlier tool calls and results are shown to the model as text instead."""
    for turn in turns:
        for index, block in enumerate(turn["content"]):
            if "toolUse" in block:
                use = block["toolUse"]
                text = f"[called tool {use['name']} with {json.dumps(use['input'])}]"
                turn["content"][index] = {"text": text}
            elif "toolResult" in block:
                result = block["toolResult"]
                said = " ".join(str(part.get("text", "")) for part in result["content"])
                turn["content"][index] = {"text": f"[tool result for {result['toolUseId']}: {said}]"}


def _refuse_unsupported(params: ChatCompletionRequest) -> None:
    if params.n is not None and params.n > 1:
        raise InvalidRequestError("Bedrock's Converse API returns one choice; send n=1 or leave it out.", param="n")
    if params.logprobs:
        raise InvalidRequestError("Bedrock's Converse API does not return logprobs; leave it out.", param="logprobs")
    if params.response_format is not None and params.response_format.type != "text":
        raise InvalidRequestError(
            "Bedrock's Converse API has no JSON response format; describe the format in the prompt, or use a "
            "tool whose parameters are the schema.",
            param="response_format",
        )


def _user_blocks(content: str | list[Any], index: int) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"text": content}] if content else []
    blocks: list[dict[str, Any]] = []
    for part_index, part in enumerate(content):
        where = f"messages[{index}].content[{part_index}]"
        if isinstance(part, TextPart):
            if part.text:
                blocks.append({"text": part.text})
        elif isinstance(part, ImagePart):
            blocks.append(_image_block(part.image_url.url, where))
        else:
            kind = getattr(part, "type", type(part).__name__)
            raise InvalidRequestError(
                f"Bedrock's Converse API takes text and image parts here, not '{kind}'.", param=where
            )
    return blocks


def _image_block(url: str, where: str) -> dict[str, Any]:
    """A ``data:`` URL as an image block; Bedrock does not fetch URLs, so any other URL is refused."""
    head, _, data = url.partition(",")
    if not url.startswith("data:") or ";base64" not in head:
        raise InvalidRequestError(
            "Bedrock does not fetch images by URL; send the image inline as a data:image/...;base64 URL.",
            param=f"{where}.image_url.url",
        )
    mime = head[5:].split(";", 1)[0].lower()
    image_format = _IMAGE_FORMATS.get(mime)
    if image_format is None:
        raise InvalidRequestError(
            f"Bedrock takes png, jpeg, gif or webp images, not '{mime}'.", param=f"{where}.image_url.url"
        )
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidRequestError("The image's data URL is not valid base64.", param=f"{where}.image_url.url") from None
    return {"image": {"format": image_format, "source": {"bytes": raw}}}


def _assistant_blocks(message: AssistantMessage, index: int) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = []
    text = content_text(message.content)
    if text:
        blocks.append({"text": text})
    for call_index, call in enumerate(message.tool_calls or []):
        try:
            arguments = json.loads(call.function.arguments or "{}")
        except ValueError:
            raise InvalidRequestError(
                "A tool call's arguments must be a JSON object for Bedrock.",
                param=f"messages[{index}].tool_calls[{call_index}].function.arguments",
            ) from None
        if not isinstance(arguments, dict):
            arguments = {"value": arguments}
        blocks.append({"toolUse": {"toolUseId": call.id, "name": call.function.name, "input": arguments}})
    return blocks


def _tool_result(message: ToolMessage) -> dict[str, Any]:
    text = content_text(message.content)
    return {"toolResult": {"toolUseId": message.tool_call_id, "content": [{"text": text or "(empty)"}]}}


def _tool_config(params: ChatCompletionRequest) -> dict[str, Any] | None:
    choice = params.tool_choice
    if not params.tools or choice == "none":
        return None
    tools = []
    for tool in params.tools:
        spec: dict[str, Any] = {
            "name": tool.function.name,
            "inputSchema": {"json": tool.function.parameters or {"type": "object", "properties": {}}},
        }
        if tool.function.description:
            spec["description"] = tool.function.description
        tools.append({"toolSpec": spec})
    config: dict[str, Any] = {"tools": tools}
    if choice == "required":
        config["toolChoice"] = {"any": {}}
    elif isinstance(choice, NamedToolChoice):
        config["toolChoice"] = {"tool": {"name": choice.function.name}}
    elif choice == "auto":
        config["toolChoice"] = {"auto": {}}
    return config


def usage_from_converse(usage: Any) -> Usage | None:
    """Converse's ``usage`` (inputTokens, outputTokens, totalTokens) in OpenAI's terms."""
    if not isinstance(usage, dict):
        return None
    prompt = int(usage.get("inputTokens") or 0)
    completion = int(usage.get("outputTokens") or 0)
    return Usage(
        prompt_tokens=prompt,
        completion_tokens=completion,
        total_tokens=int(usage.get("totalTokens") or prompt + completion),
    )


def completion_from_converse(answer: dict[str, Any], model: str) -> ChatCompletion:
    """A Converse answer as a chat completion with one choice."""
    message = (answer.get("output") or {}).get("message") or {}
    texts: list[str] = []
    calls: list[ToolCall] = []
    for block in message.get("content") or []:
        if not isinstance(block, dict):
            continue
        if isinstance(block.get("text"), str):
            texts.append(block["text"])
        elif isinstance(block.get("toolUse"), dict):
            use = block["toolUse"]
            calls.append(
                ToolCall(
                    id=str(use.get("toolUseId") or f"call_{uuid.uuid4().hex[:24]}"),
                    function=FunctionCall(name=str(use.get("name", "")), arguments=json.dumps(use.get("input") or {})),
                )
            )
    reason = finish_reason(answer.get("stopReason"))
    return ChatCompletion(
        id=f"chatcmpl-{uuid.uuid4().hex}",
        created=int(time.time()),
        model=model,
        choices=[
            Choice(
                index=0,
                message=ResponseMessage(content="".join(texts) if texts else None, tool_calls=calls or None),
                finish_reason=reason,  # type: ignore[arg-type]
            )
        ],
        usage=usage_from_converse(answer.get("usage")),
    )


class StreamTranslator:
    """Turns ConverseStream events into chat completion chunks, one event at a time.

    Tool calls are numbered in the order their ``contentBlockStart`` arrives (OpenAI's ``index``), and the
    Converse block index is remembered so later ``toolUse`` deltas land on the right call. ``finished``
    says whether ``messageStop`` was seen: a stream that ends before it was cut short.
    """

    def __init__(self, model: str, include_usage: bool) -> None:
        self.model = model
        self.include_usage = include_usage
        self.id = f"chatcmpl-{uuid.uuid4().hex}"
        self.created = int(time.time())
        self.finished = False
        self._tool_index: dict[int, int] = {}
        self._started = False

    def _chunk(self, delta: ChoiceDelta, reason: str | None = None) -> ChatCompletionChunk:
        return ChatCompletionChunk(
            id=self.id,
            created=self.created,
            model=self.model,
            choices=[ChunkChoice(index=0, delta=delta, finish_reason=reason)],  # type: ignore[arg-type]
        )

    def translate(self, event: dict[str, Any]) -> ChatCompletionChunk | None:
        """The chunk one event stands for, or ``None`` for events with nothing to forward."""
        if "messageStart" in event:
            self._started = True
            return self._chunk(ChoiceDelta(role="assistant", content=""))
        if "contentBlockStart" in event:
            body = event["contentBlockStart"]
            use = (body.get("start") or {}).get("toolUse")
            if not isinstance(use, dict):
                return None
            index = self._tool_index.setdefault(int(body.get("contentBlockIndex", 0)), len(self._tool_index))
            call = ToolCallDelta(
                index=index,
                id=str(use.get("toolUseId", "")),
                type="function",
                function={"name": str(use.get("name", "")), "arguments": ""},
            )
            return self._chunk(ChoiceDelta(tool_calls=[call]))
        if "contentBlockDelta" in event:
            body = event["contentBlockDelta"]
            delta = body.get("delta") or {}
            if isinstance(delta.get("text"), str):
                return self._chunk(ChoiceDelta(content=delta["text"]))
            use = delta.get("toolUse")
            if isinstance(use, dict):
                block = int(body.get("contentBlockIndex", 0))
                index = self._tool_index.setdefault(block, len(self._tool_index))
                arguments = str(use.get("input", ""))
                return self._chunk(
                    ChoiceDelta(tool_calls=[ToolCallDelta(index=index, function={"arguments": arguments})])
                )
            return None
        if "messageStop" in event:
            self.finished = True
            return self._chunk(ChoiceDelta(), finish_reason(event["messageStop"].get("stopReason")))
        if "metadata" in event and self.include_usage:
            usage = usage_from_converse(event["metadata"].get("usage"))
            if usage is None:
                return None
            return ChatCompletionChunk(id=self.id, created=self.created, model=self.model, choices=[], usage=usage)
        return None
