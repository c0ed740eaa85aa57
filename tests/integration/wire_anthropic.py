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
- the Message Batches API: ``POST /v1/messages/batches`` (``{"requests": [{"custom_id", "params"}]}``,
  each ``custom_id`` 1 to 64 of ``A-Za-z0-9_-`` and unique, else a 400) → a ``message_batch`` in
  ``in_progress``; ``GET /v1/messages/batches/{id}``, ``POST .../{id}/cancel``, ``GET /v1/messages/batches``
  (newest first, ``limit``, ``after_id``, ``has_more``, ``last_id``) and ``GET .../{id}/results`` (JSONL,
  once ``ended``: ``{"custom_id", "result": {"type": "succeeded", "message"}}``, or ``errored`` with an
  error response, ``canceled``, ``expired``); times are RFC 3339, ``request_counts`` has Anthropic's five;
- errors as ``{"type": "error", "error": {"type", "message"}}`` with Anthropic's statuses.

Model ``claude-stand-in-cut`` breaks its stream off after two text deltas (a connection cut no real
upstream produces on demand). ``StandIn.fail`` injects 429s, 529s and the like. Every request is
recorded, so a test can check what the adapter sent.

A batch moves one step per retrieve: one request answered (as ``/v1/messages`` answers it; a request
the live endpoint refuses, or whose last message contains ``REFUSE``, is ``errored``, the latter quoting
the caller's key as some upstreams echo credentials), then ``ended``. Controls on
:class:`AnthropicStandIn`: ``hold`` keeps batches from progressing, ``expire`` ends them with the
unanswered requests ``expired``, ``create_stall`` makes a create record the batch and then wait that
many seconds before answering (a crash mid-create); ``creates``/``cancels`` count calls.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from tests.integration.wire_openai_batches import _Routes
from tests.integration.wire_standins import Handler, Seen, StandIn

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


def _message(body: dict[str, Any], message_id: str = "msg_standin0123456789") -> dict[str, Any]:
    """The stand-in model's ``message`` for a checked request body."""
    content, stop_reason, stop_sequence = _answer(body)
    output = sum(len(b.get("text", "").split()) for b in content) + sum(4 for b in content if b["type"] == "tool_use")
    usage = {"input_tokens": _words(body), "output_tokens": output}
    return {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": body["model"],
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": stop_sequence,
        "usage": usage,
    }


async def messages(seen: Seen) -> web.StreamResponse:
    refused = _checked(seen)
    if refused is not None:
        return refused
    body = seen.body
    if not isinstance(body.get("max_tokens"), int):
        return error(400, "invalid_request_error", "max_tokens: Field required")
    message = _message(body)
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
    return AnthropicStandIn().start().standin


# -- Message Batches --------------------------------------------------------------------------------------

_CUSTOM_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
_ENDED = "ended"


def _rfc3339(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass
class _MessageBatch:
    id: str
    requests: list[dict[str, Any]]
    created_at: float
    key: str
    status: str = "in_progress"
    results: list[dict[str, Any]] = field(default_factory=list)
    ended_at: float | None = None
    cancel_initiated_at: float | None = None

    def counts(self) -> dict[str, int]:
        counts = {"processing": len(self.requests) - len(self.results)}
        for kind in ("succeeded", "errored", "canceled", "expired"):
            counts[kind] = sum(1 for r in self.results if r["result"]["type"] == kind)
        return counts

    def view(self, root: str) -> dict[str, Any]:
        ended = self.status == _ENDED
        return {
            "id": self.id,
            "type": "message_batch",
            "processing_status": self.status,
            "request_counts": self.counts(),
            "ended_at": _rfc3339(self.ended_at),
            "created_at": _rfc3339(self.created_at),
            "expires_at": _rfc3339(self.created_at + 24 * 3600),
            "archived_at": None,
            "cancel_initiated_at": _rfc3339(self.cancel_initiated_at),
            "results_url": f"{root}/v1/messages/batches/{self.id}/results" if ended else None,
        }


class AnthropicStandIn:
    """The stand-in with its Message Batches state: ``.standin`` is the server (``.standin.root``)."""

    def __init__(self) -> None:
        self.batches: dict[str, _MessageBatch] = {}
        self.hold = False
        self.expire = False
        self.create_stall = 0.0
        self.creates = 0
        self.cancels = 0
        self._ids = itertools.count(1)
        exact: dict[tuple[str, str], Handler] = {
            ("GET", "/v1/models"): models,
            ("POST", "/v1/messages"): messages,
            ("POST", "/v1/messages/count_tokens"): count_tokens,
            ("POST", "/v1/messages/batches"): self._create,
            ("GET", "/v1/messages/batches"): self._list,
        }
        templated: list[tuple[str, str, Handler]] = [
            ("GET", r"/v1/messages/batches/[^/]+", self._retrieve),
            ("POST", r"/v1/messages/batches/[^/]+/cancel", self._cancel),
            ("GET", r"/v1/messages/batches/[^/]+/results", self._results),
        ]
        self.standin = StandIn("anthropic", _Routes(exact, templated))

    def start(self) -> AnthropicStandIn:
        self.standin.start()
        return self

    def stop(self) -> None:
        self.standin.stop()

    @property
    def v1(self) -> str:
        return f"{self.standin.root}/v1"

    @staticmethod
    def _auth(seen: Seen) -> web.Response | None:
        if seen.headers.get("x-api-key") != KEY:
            return error(401, "authentication_error", "invalid x-api-key")
        if "anthropic-version" not in seen.headers:
            return error(400, "invalid_request_error", "anthropic-version: header is required")
        return None

    def _batch(self, seen: Seen) -> _MessageBatch | web.Response:
        batch = self.batches.get(seen.path.split("/")[4])
        if batch is None:
            return error(404, "not_found_error", "Message batch not found.")
        return batch

    async def _create(self, seen: Seen) -> web.StreamResponse:
        if (refused := self._auth(seen)) is not None:
            return refused
        requests = seen.body.get("requests") if isinstance(seen.body, dict) else None
        if not isinstance(requests, list) or not requests:
            return error(400, "invalid_request_error", "requests: at least one request is required")
        ids: set[str] = set()
        for index, request in enumerate(requests):
            custom_id = request.get("custom_id") if isinstance(request, dict) else None
            if not isinstance(custom_id, str) or not _CUSTOM_ID.fullmatch(custom_id):
                return error(400, "invalid_request_error", f"requests.{index}.custom_id: String should match pattern")
            if custom_id in ids:
                return error(400, "invalid_request_error", f"requests.{index}.custom_id: duplicate {custom_id!r}")
            if not isinstance(request.get("params"), dict):
                return error(400, "invalid_request_error", f"requests.{index}.params: Field required")
            ids.add(custom_id)
        batch = _MessageBatch(
            id=f"msgbatch_{next(self._ids):06d}standin",
            requests=requests,
            created_at=time.time(),
            key=str(seen.headers.get("x-api-key")),
        )
        self.batches[batch.id] = batch
        self.creates += 1
        if self.create_stall:
            await asyncio.sleep(self.create_stall)  # made, but the answer comes late (or never reaches the caller)
        return web.json_response(batch.view(self.standin.root))

    async def _list(self, seen: Seen) -> web.StreamResponse:
        if (refused := self._auth(seen)) is not None:
            return refused
        limit = max(1, min(1000, int(seen.query.get("limit", "20"))))
        newest = list(reversed(self.batches.values()))
        after = seen.query.get("after_id")
        if after:
            ids = [b.id for b in newest]
            newest = newest[ids.index(after) + 1 :] if after in ids else []
        page = newest[:limit]
        return web.json_response(
            {
                "data": [b.view(self.standin.root) for b in page],
                "has_more": len(newest) > limit,
                "first_id": page[0].id if page else None,
                "last_id": page[-1].id if page else None,
            }
        )

    async def _retrieve(self, seen: Seen) -> web.StreamResponse:
        if (refused := self._auth(seen)) is not None:
            return refused
        batch = self._batch(seen)
        if isinstance(batch, web.Response):
            return batch
        self._advance(batch)
        return web.json_response(batch.view(self.standin.root))

    async def _cancel(self, seen: Seen) -> web.StreamResponse:
        if (refused := self._auth(seen)) is not None:
            return refused
        batch = self._batch(seen)
        if isinstance(batch, web.Response):
            return batch
        if batch.status == _ENDED:
            return error(400, "invalid_request_error", f"Batch {batch.id} has already ended.")
        if batch.status != "canceling":
            self.cancels += 1
            batch.status = "canceling"
            batch.cancel_initiated_at = time.time()
        return web.json_response(batch.view(self.standin.root))

    async def _results(self, seen: Seen) -> web.StreamResponse:
        if (refused := self._auth(seen)) is not None:
            return refused
        batch = self._batch(seen)
        if isinstance(batch, web.Response):
            return batch
        if batch.status != _ENDED:
            return error(
                400, "invalid_request_error", f"Batch {batch.id} is still processing; results come at the end."
            )
        body = b"".join(json.dumps(r).encode() + b"\n" for r in batch.results)
        return web.Response(body=body, content_type="application/binary")

    def _advance(self, batch: _MessageBatch) -> None:
        """One step per retrieve: the next request answered, or the batch ended (none while ``hold``)."""
        if batch.status == _ENDED:
            return
        pending = batch.requests[len(batch.results) :]
        if batch.status == "canceling" or (self.expire and pending):
            kind = "canceled" if batch.status == "canceling" else "expired"
            batch.results += [{"custom_id": r["custom_id"], "result": {"type": kind}} for r in pending]
            pending = []
        if self.hold and pending:
            return
        if pending:
            request = pending[0]
            batch.results.append({"custom_id": request["custom_id"], "result": self._result(request["params"], batch)})
            return
        batch.status = _ENDED
        batch.ended_at = time.time()

    def _result(self, params: dict[str, Any], batch: _MessageBatch) -> dict[str, Any]:
        seen = Seen("POST", "/v1/messages", {}, {"x-api-key": batch.key, "anthropic-version": "batch"}, params)
        refused = _checked(seen)
        if refused is None and not isinstance(params.get("max_tokens"), int):
            refused = error(400, "invalid_request_error", "max_tokens: Field required")
        if refused is not None:
            assert isinstance(refused.text, str)
            return {"type": "errored", "error": json.loads(refused.text)}
        prompt = " ".join(_texts(params["messages"][-1].get("content")))
        if "REFUSE" in prompt:
            said = f"This request was refused (key {batch.key} has no access to it)."
            return {
                "type": "errored",
                "error": {"type": "error", "error": {"type": "invalid_request_error", "message": said}},
            }
        message_id = f"msg_{batch.id}_{len(batch.results):04d}"
        return {"type": "succeeded", "message": _message(params, message_id)}
