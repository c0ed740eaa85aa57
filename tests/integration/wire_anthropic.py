"""A STAND-IN for Anthropic's Messages API on loopback, speaking its documented wire format.

Why a stand-in: api.anthropic.com cannot be reached from the test machine (and costs money). This
small aiohttp app answers the endpoints ``remote::anthropic`` calls, shaped as Anthropic documents them:

- ``GET /v1/models``: ``{"data": [{"type": "model", "id", "display_name", "created_at"}], "has_more", ...}``;
- ``POST /v1/messages``: the ``x-api-key`` and ``anthropic-version`` headers are required (401
  ``authentication_error`` / 400 ``invalid_request_error`` otherwise), ``max_tokens`` too; the answer is
  a ``message`` (text, or a ``tool_use`` block when a tool is forced or the prompt asks for the
  weather), ``stop_sequences`` cut the text with ``stop_reason: "stop_sequence"``; with ``stream`` the
  named events ``message_start``, ``content_block_start``/``_delta``/``_stop`` (``text_delta`` and
  ``input_json_delta``), ``ping``, ``message_delta`` with usage, ``message_stop``;
- ``POST /v1/messages/count_tokens``: ``{"input_tokens": N}`` (N counts words, a stand-in's tokenizer);
- errors as ``{"type": "error", "error": {"type", "message"}}`` with Anthropic's statuses.

Model ``claude-stand-in-cut`` breaks its stream off after two text deltas (a connection cut no real
upstream produces on demand). ``StandIn.fail`` injects 429s, 529s and the like. Every request is
recorded, so a test can check what the adapter sent.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiohttp import web

from tests.integration.wire_standins import Seen, StandIn

KEY = "sk-ant-standin-5c1f0e"
MODEL = "claude-stand-in-1"
CUT_MODEL = "claude-stand-in-cut"
MODELS = [MODEL, CUT_MODEL]


def error(status: int, kind: str, message: str) -> web.Response:
    return web.json_response({"type": "error", "error": {"type": kind, "message": message}}, status=status)


def _texts(content: Any) -> list[str]:
    if isinstance(content, str):
        return [content]
    out = []
    for block in content or []:
        if block.get("type") == "text":
            out.append(block.get("text", ""))
        elif block.get("type") == "tool_result":
            out.extend(_texts(block.get("content")))
    return out


def _words(body: dict[str, Any]) -> int:
    system = body.get("system")
    words = len(" ".join(_texts(system)).split()) if system else 0
    for message in body.get("messages", []):
        words += len(" ".join(_texts(message.get("content"))).split())
    return words


def _checked(seen: Seen) -> web.Response | None:
    """Anthropic's own refusals, in its order: key, version, then the body."""
    if seen.headers.get("x-api-key") != KEY:
        return error(401, "authentication_error", "invalid x-api-key")
    if "anthropic-version" not in seen.headers:
        return error(400, "invalid_request_error", "anthropic-version: header is required")
    body = seen.body
    if not isinstance(body, dict):
        return error(400, "invalid_request_error", "body must be a JSON object")
    if body.get("model") not in MODELS:
        return error(404, "not_found_error", f"model: {body.get('model')}")
    if not body.get("messages"):
        return error(400, "invalid_request_error", "messages: Field required")
    return None


def _answer(body: dict[str, Any]) -> tuple[list[dict[str, Any]], str, str | None]:
    """The content blocks, the stop reason and the stop sequence the stand-in model answers with."""
    last = body["messages"][-1]
    prompt = " ".join(_texts(last.get("content")))
    tools = body.get("tools") or []
    choice = body.get("tool_choice") or {"type": "auto"}
    answered = any(b.get("type") == "tool_result" for b in last.get("content", []) if isinstance(b, dict))
    wants_tool = choice["type"] in ("any", "tool") or ("weather" in prompt.lower() and choice["type"] == "auto")
    if tools and wants_tool and not answered and choice["type"] != "none":
        name = choice.get("name") or tools[0]["name"]
        block = {"type": "tool_use", "id": "toolu_standin01", "name": name, "input": {"city": "Paris"}}
        return [block], "tool_use", None
    text = f"stand-in says: {prompt}"
    for stop in body.get("stop_sequences") or []:
        at = text.find(stop)
        if at >= 0:
            return [{"type": "text", "text": text[:at]}], "stop_sequence", stop
    limit = int(body.get("max_tokens", 0))
    words = text.split(" ")
    if len(words) > limit:
        return [{"type": "text", "text": " ".join(words[:limit])}], "max_tokens", None
    return [{"type": "text", "text": text}], "end_turn", None


async def messages(seen: Seen) -> web.StreamResponse:
    refused = _checked(seen)
    if refused is not None:
        return refused
    body = seen.body
    if not isinstance(body.get("max_tokens"), int):
        return error(400, "invalid_request_error", "max_tokens: Field required")
    content, stop_reason, stop_sequence = _answer(body)
    output = sum(len(b.get("text", "").split()) for b in content) + sum(4 for b in content if b["type"] == "tool_use")
    usage = {"input_tokens": _words(body), "output_tokens": output}
    message = {
        "id": "msg_standin0123456789",
        "type": "message",
        "role": "assistant",
        "model": body["model"],
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": stop_sequence,
        "usage": usage,
    }
    if not body.get("stream"):
        return web.json_response(message)
    return await _stream(seen, message)


async def _stream(seen: Seen, message: dict[str, Any]) -> web.StreamResponse:
    assert seen.request is not None
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    await response.prepare(seen.request)

    async def send(event: dict[str, Any]) -> None:
        await response.write(f"event: {event['type']}\ndata: {json.dumps(event)}\n\n".encode())

    start = {**message, "content": [], "stop_reason": None, "stop_sequence": None}
    start["usage"] = {"input_tokens": message["usage"]["input_tokens"], "output_tokens": 1}
    await send({"type": "message_start", "message": start})
    await send({"type": "ping"})
    for index, block in enumerate(message["content"]):
        if block["type"] == "text":
            await send({"type": "content_block_start", "index": index, "content_block": {"type": "text", "text": ""}})
            words = block["text"].split(" ")
            for n, word in enumerate(words):
                piece = word if n == 0 else f" {word}"
                await send(
                    {"type": "content_block_delta", "index": index, "delta": {"type": "text_delta", "text": piece}}
                )
                if message["model"] == CUT_MODEL and n == 1:
                    await asyncio.sleep(0.5)  # the events so far reach the client before the cut
                    assert seen.request.transport is not None
                    seen.request.transport.close()  # the connection dies mid-stream
                    return response
        else:
            opened = {**block, "input": {}}
            await send({"type": "content_block_start", "index": index, "content_block": opened})
            text = json.dumps(block["input"])
            for piece in (text[: len(text) // 2], text[len(text) // 2 :]):
                await send(
                    {
                        "type": "content_block_delta",
                        "index": index,
                        "delta": {"type": "input_json_delta", "partial_json": piece},
                    }
                )
        await send({"type": "content_block_stop", "index": index})
    await send(
        {
            "type": "message_delta",
            "delta": {"stop_reason": message["stop_reason"], "stop_sequence": message["stop_sequence"]},
            "usage": {"output_tokens": message["usage"]["output_tokens"]},
        }
    )
    await send({"type": "message_stop"})
    await response.write_eof()
    return response


async def count_tokens(seen: Seen) -> web.StreamResponse:
    refused = _checked(seen)
    if refused is not None:
        return refused
    return web.json_response({"input_tokens": _words(seen.body)})


async def models(seen: Seen) -> web.StreamResponse:
    if seen.headers.get("x-api-key") != KEY:
        return error(401, "authentication_error", "invalid x-api-key")
    data = [
        {"type": "model", "id": m, "display_name": m.replace("-", " ").title(), "created_at": "2025-05-14T00:00:00Z"}
        for m in MODELS
    ]
    return web.json_response({"data": data, "has_more": False, "first_id": MODELS[0], "last_id": MODELS[-1]})


def anthropic_standin() -> StandIn:
    """A started stand-in; its API root (the provider's ``base_url``) is ``root + "/v1"``."""
    return StandIn(
        "anthropic",
        {
            ("GET", "/v1/models"): models,
            ("POST", "/v1/messages"): messages,
            ("POST", "/v1/messages/count_tokens"): count_tokens,
        },
    ).start()
