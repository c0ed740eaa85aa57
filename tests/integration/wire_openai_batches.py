"""A STAND-IN for OpenAI's Files and Batches APIs on loopback, written from OpenAI's public API reference.

api.openai.com cannot be reached from a test machine, so this small aiohttp server answers what
``remote::openai`` calls when it passes a batch through, shaped as OpenAI documents it:

- ``GET /v1/models`` (so Underlay discovers ``gpt-4o-mini`` and ``text-embedding-3-small``), and
  ``POST /v1/chat/completions`` and ``/v1/embeddings`` for lines a batch runs inline;
- ``POST /v1/files`` (``multipart/form-data`` with ``purpose`` and ``file``) → a file object,
  ``GET /v1/files/{file_id}`` and ``GET /v1/files/{file_id}/content`` (the raw bytes);
- ``POST /v1/batches`` (``input_file_id``, ``endpoint``, ``completion_window``, ``metadata``) → a batch in
  ``validating``; ``GET /v1/batches/{batch_id}``; ``POST /v1/batches/{batch_id}/cancel``; ``GET /v1/batches``
  (newest first, ``limit`` and ``after``, ``has_more``);
- a batch moves one step each time it is retrieved: ``validating`` → ``in_progress`` (one request done per
  retrieve) → ``finalizing`` → ``completed``, with ``request_counts``, ``usage`` and, at the end, an
  ``output_file_id`` (lines that succeeded) and an ``error_file_id`` (lines that did not), each line
  ``{"id", "custom_id", "response": {"status_code", "request_id", "body"}, "error"}``; a cancel goes
  ``cancelling`` → ``cancelled`` keeping the requests already done;
- authentication by ``Authorization: Bearer``; a wrong key gets OpenAI's 401 ``invalid_api_key`` body.

Answers are canned: a chat line answers with a fixed sentence and names the model by its dated snapshot
(as OpenAI does, so a test sees the name mapped back), an embeddings line gets a vector derived from its
input, and a chat line whose last user message contains ``REFUSE`` gets a 400 in the error file.

Test controls (plain attributes; the server runs in a thread): ``hold`` keeps batches ``in_progress``
without progress; ``fail_validation`` makes the next batches end ``failed`` with a validation error whose
message quotes the caller's key (as some upstreams echo credentials), so a test sees it scrubbed;
``creates`` counts batches created. Failures of a whole path go through :meth:`StandIn.fail`.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.parser import BytesParser
from email.policy import HTTP
from typing import Any

from aiohttp import web

from tests.integration.wire_standins import Handler, Seen, StandIn

API_KEY = "sk-standin-batches-7d1e0c9b4a"
CHAT_MODEL = "gpt-4o-mini"
CHAT_SNAPSHOT = "gpt-4o-mini-2024-07-18"
EMBED_MODEL = "text-embedding-3-small"
ENDPOINTS = ("/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/responses")
CREATED = 1733500000


def _error(status: int, message: str, kind: str = "invalid_request_error", code: str | None = None) -> web.Response:
    body = {"error": {"message": message, "type": kind, "param": None, "code": code}}
    return web.json_response(body, status=status)


def _vector(text: str) -> list[float]:
    digest = hashlib.sha256(text.encode()).digest()
    return [round((b - 128) / 128, 6) for b in digest[:8]]


def _tokens(text: str) -> int:
    return max(1, len(text.split()))


@dataclass
class _File:
    id: str
    filename: str
    purpose: str
    content: bytes
    created_at: int

    def view(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "file",
            "bytes": len(self.content),
            "created_at": self.created_at,
            "filename": self.filename,
            "purpose": self.purpose,
            "status": "processed",
            "expires_at": None,
            "status_details": None,
        }


@dataclass
class _Batch:
    id: str
    input_file_id: str
    endpoint: str
    completion_window: str
    metadata: dict[str, str] | None
    created_at: int
    key: str
    status: str = "validating"
    requests: list[dict[str, Any]] = field(default_factory=list)
    done: list[tuple[bool, dict[str, Any]]] = field(default_factory=list)
    errors: dict[str, Any] | None = None
    output_file_id: str | None = None
    error_file_id: str | None = None
    stamps: dict[str, int] = field(default_factory=dict)

    def view(self) -> dict[str, Any]:
        completed = sum(1 for ok, _ in self.done if ok)
        usage = {"input_tokens": 0, "output_tokens": 0}
        for ok, record in self.done:
            body = record["response"]["body"] if ok else {}
            tokens = body.get("usage") or {}
            usage["input_tokens"] += int(tokens.get("prompt_tokens", 0))
            usage["output_tokens"] += int(tokens.get("completion_tokens", 0))
        return {
            "id": self.id,
            "object": "batch",
            "endpoint": self.endpoint,
            "model": CHAT_SNAPSHOT if self.endpoint == "/v1/chat/completions" else EMBED_MODEL,
            "errors": self.errors,
            "input_file_id": self.input_file_id,
            "completion_window": self.completion_window,
            "status": self.status,
            "output_file_id": self.output_file_id,
            "error_file_id": self.error_file_id,
            "created_at": self.created_at,
            "in_progress_at": self.stamps.get("in_progress"),
            "expires_at": self.created_at + 24 * 3600,
            "finalizing_at": self.stamps.get("finalizing"),
            "completed_at": self.stamps.get("completed"),
            "failed_at": self.stamps.get("failed"),
            "expired_at": None,
            "cancelling_at": self.stamps.get("cancelling"),
            "cancelled_at": self.stamps.get("cancelled"),
            "request_counts": {
                "total": len(self.requests),
                "completed": completed,
                "failed": len(self.done) - completed,
            },
            "usage": {
                "input_tokens": usage["input_tokens"],
                "input_tokens_details": {"cached_tokens": 0},
                "output_tokens": usage["output_tokens"],
                "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": usage["input_tokens"] + usage["output_tokens"],
            },
            "metadata": self.metadata,
        }


class _Routes(dict[tuple[str, str], Handler]):
    """Exact routes first, then the templated ones (``/v1/files/{id}``) the Files and Batches APIs use."""

    def __init__(self, exact: dict[tuple[str, str], Handler], templated: list[tuple[str, str, Handler]]) -> None:
        super().__init__(exact)
        self.templated = [(method, re.compile(pattern), handler) for method, pattern, handler in templated]

    def get(self, key: tuple[str, str], default: Any = None) -> Any:  # type: ignore[override]
        if key in self:
            return self[key]
        method, path = key
        for wanted, pattern, handler in self.templated:
            if wanted == method and pattern.fullmatch(path):
                return handler
        return default


class OpenAIFilesAPI:
    """The Files endpoints both OpenAI stand-ins serve (upload, retrieve, content), behind ``api_key``.

    A stand-in sets ``api_key`` and fills ``files`` and ``_ids`` in its constructor.
    """

    api_key: str
    files: dict[str, _File]
    _ids: Iterator[int]

    def _new_id(self, prefix: str) -> str:
        return f"{prefix}{next(self._ids):06d}standin"

    @staticmethod
    def _key(seen: Seen) -> str:
        return seen.headers.get("authorization", "").removeprefix("Bearer ")

    def _refusal(self, seen: Seen) -> web.Response | None:
        key = self._key(seen)
        if key != self.api_key:
            shown = f"{key[:3]}***{key[-4:]}" if len(key) > 8 else "(none)"
            return _error(401, f"Incorrect API key provided: {shown}.", code="invalid_api_key")
        return None

    async def _upload(self, seen: Seen) -> web.StreamResponse:
        if (refused := self._refusal(seen)) is not None:
            return refused
        assert seen.request is not None
        raw = await seen.request.read()  # aiohttp keeps the body the dispatcher read
        head = f"Content-Type: {seen.headers.get('content-type', '')}\r\n\r\n".encode()
        message = BytesParser(policy=HTTP).parsebytes(head + raw)
        if not message.is_multipart():
            return _error(400, "Expected a multipart/form-data body with 'file' and 'purpose'.")
        fields: dict[str, tuple[str | None, bytes]] = {}
        for part in message.iter_parts():
            name = part.get_param("name", header="content-disposition")
            payload = part.get_payload(decode=True)
            if isinstance(name, str) and isinstance(payload, bytes):
                fields[name] = (part.get_filename(), payload)
        if "file" not in fields:
            return _error(400, "Missing required parameter: 'file'.")
        purpose = fields.get("purpose", (None, b""))[1].decode()
        if purpose not in ("batch", "fine-tune", "assistants", "user_data", "vision", "evals"):
            return _error(400, f"'{purpose}' is not one of the supported purposes.")
        stored = _File(
            self._new_id("file-"), fields["file"][0] or "upload", purpose, fields["file"][1], int(time.time())
        )
        self.files[stored.id] = stored
        return web.json_response(stored.view())

    async def _file(self, seen: Seen) -> web.StreamResponse:
        if (refused := self._refusal(seen)) is not None:
            return refused
        stored = self.files.get(seen.path.rsplit("/", 1)[1])
        if stored is None:
            return _error(404, "No such File object.")
        return web.json_response(stored.view())

    async def _content(self, seen: Seen) -> web.StreamResponse:
        if (refused := self._refusal(seen)) is not None:
            return refused
        stored = self.files.get(seen.path.split("/")[3])
        if stored is None:
            return _error(404, "No such File object.")
        return web.Response(body=stored.content, content_type="application/octet-stream")


class OpenAIBatchesStandIn(OpenAIFilesAPI):
    """The stand-in: ``.root`` is the server, ``.v1`` the base URL to give ``remote::openai``."""

    api_key = API_KEY

    def __init__(self) -> None:
        self.files: dict[str, _File] = {}
        self.batches: dict[str, _Batch] = {}
        self.hold = False
        self.fail_validation = False
        self.creates = 0
        self.cancels = 0
        self._ids = itertools.count(1)
        exact: dict[tuple[str, str], Handler] = {
            ("GET", "/v1/models"): self._models,
            ("POST", "/v1/chat/completions"): self._chat_live,
            ("POST", "/v1/embeddings"): self._embeddings_live,
            ("POST", "/v1/files"): self._upload,
            ("POST", "/v1/batches"): self._create,
            ("GET", "/v1/batches"): self._list,
        }
        templated: list[tuple[str, str, Handler]] = [
            ("GET", r"/v1/files/[^/]+", self._file),
            ("GET", r"/v1/files/[^/]+/content", self._content),
            ("GET", r"/v1/batches/[^/]+", self._retrieve),
            ("POST", r"/v1/batches/[^/]+/cancel", self._cancel),
        ]
        self.standin = StandIn("openai-batches", _Routes(exact, templated))

    def start(self) -> OpenAIBatchesStandIn:
        self.standin.start()
        return self

    def stop(self) -> None:
        self.standin.stop()

    @property
    def v1(self) -> str:
        return f"{self.standin.root}/v1"

    def uploaded_lines(self, batch_id: str) -> list[dict[str, Any]]:
        """The input lines the upstream batch ``batch_id`` was created over."""
        batch = self.batches[batch_id]
        return [json.loads(line) for line in self.files[batch.input_file_id].content.splitlines() if line.strip()]

    # -- helpers -----------------------------------------------------------------------------------

    @staticmethod
    def _chat_body(body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        users = [m for m in body.get("messages", []) if isinstance(m, dict) and m.get("role") == "user"]
        prompt = str(users[-1].get("content", "")) if users else ""
        if body.get("model") != CHAT_MODEL:
            message = f"The model `{body.get('model')}` does not exist or you do not have access to it."
            error = {"message": message, "type": "invalid_request_error", "param": None, "code": "model_not_found"}
            return 404, {"error": error}
        if "REFUSE" in prompt:
            error = {"message": "The prompt was refused.", "type": "invalid_request_error", "param": "messages"}
            return 400, {"error": {**error, "code": None}}
        answer = "A canned answer from the stand-in."
        prompt_tokens, completion_tokens = _tokens(prompt), _tokens(answer)
        return 200, {
            "id": f"chatcmpl-{hashlib.sha256(prompt.encode()).hexdigest()[:12]}",
            "object": "chat.completion",
            "created": CREATED,
            "model": CHAT_SNAPSHOT,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": answer, "refusal": None},
                    "logprobs": None,
                    "finish_reason": "stop",
                }
            ],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
            "system_fingerprint": "fp_standin",
        }

    @staticmethod
    def _embeddings_body(body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        if body.get("model") != EMBED_MODEL:
            message = f"The model `{body.get('model')}` does not exist or you do not have access to it."
            return 404, {"error": {"message": message, "type": "invalid_request_error", "param": None, "code": None}}
        inputs = body.get("input")
        texts = inputs if isinstance(inputs, list) else [inputs]
        data = [{"object": "embedding", "index": i, "embedding": _vector(str(t))} for i, t in enumerate(texts)]
        tokens = sum(_tokens(str(t)) for t in texts)
        return 200, {
            "object": "list",
            "data": data,
            "model": EMBED_MODEL,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }

    def _answer(self, endpoint: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        if endpoint == "/v1/embeddings":
            return self._embeddings_body(body)
        return self._chat_body(body)

    # -- live inference ------------------------------------------------------------------------------

    async def _models(self, seen: Seen) -> web.StreamResponse:
        if (refused := self._refusal(seen)) is not None:
            return refused
        data = [
            {"id": CHAT_MODEL, "object": "model", "created": CREATED, "owned_by": "system"},
            {"id": EMBED_MODEL, "object": "model", "created": CREATED, "owned_by": "system"},
        ]
        return web.json_response({"object": "list", "data": data})

    async def _chat_live(self, seen: Seen) -> web.StreamResponse:
        if (refused := self._refusal(seen)) is not None:
            return refused
        status, body = self._chat_body(seen.body)
        return web.json_response(body, status=status)

    async def _embeddings_live(self, seen: Seen) -> web.StreamResponse:
        if (refused := self._refusal(seen)) is not None:
            return refused
        status, body = self._embeddings_body(seen.body)
        return web.json_response(body, status=status)

    # -- batches -------------------------------------------------------------------------------------

    async def _create(self, seen: Seen) -> web.StreamResponse:
        if (refused := self._refusal(seen)) is not None:
            return refused
        body = seen.body if isinstance(seen.body, dict) else {}
        source = self.files.get(str(body.get("input_file_id")))
        if source is None:
            return _error(404, f"No such File object: {body.get('input_file_id')}.")
        if source.purpose != "batch":
            return _error(400, "The input file must be uploaded with purpose 'batch'.")
        if body.get("endpoint") not in ENDPOINTS:
            return _error(400, f"Invalid endpoint: {body.get('endpoint')}.")
        if body.get("completion_window") != "24h":
            return _error(400, "completion_window must be '24h'.")
        batch = _Batch(
            id=self._new_id("batch_"),
            input_file_id=source.id,
            endpoint=str(body["endpoint"]),
            completion_window="24h",
            metadata=body.get("metadata"),
            created_at=int(time.time()),
            key=self._key(seen),
        )
        self.batches[batch.id] = batch
        self.creates += 1
        return web.json_response(batch.view())

    async def _list(self, seen: Seen) -> web.StreamResponse:
        if (refused := self._refusal(seen)) is not None:
            return refused
        limit = max(1, min(100, int(seen.query.get("limit", "20"))))
        newest = list(reversed(self.batches.values()))
        after = seen.query.get("after")
        if after:
            ids = [b.id for b in newest]
            newest = newest[ids.index(after) + 1 :] if after in ids else []
        page = newest[:limit]
        return web.json_response(
            {
                "object": "list",
                "data": [b.view() for b in page],
                "first_id": page[0].id if page else None,
                "last_id": page[-1].id if page else None,
                "has_more": len(newest) > limit,
            }
        )

    async def _retrieve(self, seen: Seen) -> web.StreamResponse:
        if (refused := self._refusal(seen)) is not None:
            return refused
        batch = self.batches.get(seen.path.rsplit("/", 1)[1])
        if batch is None:
            return _error(404, "No such Batch object.")
        self._advance(batch)
        return web.json_response(batch.view())

    async def _cancel(self, seen: Seen) -> web.StreamResponse:
        if (refused := self._refusal(seen)) is not None:
            return refused
        batch = self.batches.get(seen.path.split("/")[3])
        if batch is None:
            return _error(404, "No such Batch object.")
        if batch.status in ("completed", "failed", "expired", "cancelled"):
            return _error(400, f"Cannot cancel a batch with status '{batch.status}'.")
        if batch.status != "cancelling":
            self.cancels += 1
            batch.status = "cancelling"
            batch.stamps["cancelling"] = int(time.time())
        return web.json_response(batch.view())

    def _advance(self, batch: _Batch) -> None:
        """One step of the batch's life per retrieve (none while ``hold`` is set)."""
        now = int(time.time())
        if batch.status == "cancelling":
            self._write_files(batch)
            batch.status = "cancelled"
            batch.stamps["cancelled"] = now
        elif batch.status == "validating":
            self._validate(batch, now)
        elif batch.status == "in_progress" and not self.hold:
            if len(batch.done) < len(batch.requests):
                request = batch.requests[len(batch.done)]
                status, body = self._answer(batch.endpoint, request["body"])
                record = {
                    "id": self._new_id("batch_req_"),
                    "custom_id": request["custom_id"],
                    "response": {"status_code": status, "request_id": self._new_id("req_"), "body": body},
                    "error": None,
                }
                batch.done.append((status < 400, record))
            else:
                batch.status = "finalizing"
                batch.stamps["finalizing"] = now
        elif batch.status == "finalizing":
            self._write_files(batch)
            batch.status = "completed"
            batch.stamps["completed"] = now

    def _validate(self, batch: _Batch, now: int) -> None:
        problems: list[dict[str, Any]] = []
        requests: list[dict[str, Any]] = []
        for number, line in enumerate(self.files[batch.input_file_id].content.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                item = json.loads(line)
            except ValueError:
                problems.append(
                    {"code": "invalid_json_line", "line": number, "message": "Invalid JSON.", "param": None}
                )
                continue
            if item.get("url") != batch.endpoint or item.get("method") != "POST":
                message = f"The url must match the batch's endpoint {batch.endpoint}."
                problems.append({"code": "mismatched_endpoint", "line": number, "message": message, "param": "url"})
                continue
            requests.append(item)
        if self.fail_validation:
            message = f"This organization (key {batch.key}) has no batch quota left for {CHAT_SNAPSHOT}."
            problems.append({"code": "token_limit_exceeded", "line": None, "message": message, "param": None})
        if problems:
            batch.status = "failed"
            batch.errors = {"object": "list", "data": problems}
            batch.stamps["failed"] = now
            return
        batch.requests = requests
        batch.status = "in_progress"
        batch.stamps["in_progress"] = now

    def _write_files(self, batch: _Batch) -> None:
        for ok, attribute in ((True, "output_file_id"), (False, "error_file_id")):
            records = [record for good, record in batch.done if good is ok]
            if not records:
                continue
            content = b"".join(json.dumps(r).encode() + b"\n" for r in records)
            stored = _File(self._new_id("file-"), f"{batch.id}_{attribute}.jsonl", "batch_output", content, now_s())
            self.files[stored.id] = stored
            setattr(batch, attribute, stored.id)


def now_s() -> int:
    return int(time.time())
