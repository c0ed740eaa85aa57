"""A STAND-IN for Azure OpenAI on loopback, written from Azure OpenAI's public REST reference.

Azure is a cloud service this machine cannot reach (and moto does not cover it), so this small aiohttp
server answers what ``remote::azure-openai`` calls, shaped as Azure documents it:

- ``POST /openai/deployments/{deployment}/chat/completions?api-version=...`` and ``.../embeddings``;
  a missing ``api-version`` or an unknown deployment is Azure's 404 ``DeploymentNotFound``-style error;
- ``POST /openai/v1/chat/completions`` (the newer form: the deployment travels as ``model``);
- ``GET /openai/models?api-version=...``;
- authentication by ``api-key`` header or ``Authorization: Bearer`` (an Entra ID token), 401 otherwise
  with Azure's body; a Microsoft Entra ID token endpoint (``POST /{tenant}/oauth2/v2.0/token``,
  client-credentials grant, form-encoded) that issues short-lived tokens and counts how often it is asked;
- streams that open with a chunk carrying only ``prompt_filter_results`` (no choices), as Azure's do;
- the content filter: a prompt containing ``FORBIDDEN`` gets Azure's 400 ``content_filter`` error with its
  ``innererror.content_filter_result``; throttling is 429 with ``retry-after``;
- the Batch API, OpenAI's Files and Batches wire under ``/openai`` with ``api-version`` on every call:
  ``POST /openai/files`` (multipart, ``purpose`` ``batch``; the file is ``pending`` until the next
  ``GET /openai/files/{id}``, and no batch is made over a pending one), ``GET /openai/files/{id}/content``,
  ``POST /openai/batches`` (``endpoint`` is ``/chat/completions`` or ``/embeddings``, without ``/v1``),
  ``GET /openai/batches`` (``limit``, ``after``), ``GET /openai/batches/{id}``, ``POST .../{id}/cancel``.
  Every line's ``model`` must name one and the same Global Batch deployment (``BATCH_DEPLOYMENT``);
  anything else fails the batch at validation with Azure-style errors naming the line. A batch moves one
  step per retrieve (``validating`` → ``in_progress``, one request per retrieve → ``finalizing`` →
  ``completed``; ``hold`` stops it in ``in_progress``), answering each line as the live endpoint would
  (so a ``FORBIDDEN`` prompt is a 400 ``content_filter`` line in the error file). Its batch object has no
  ``usage`` (the 2024-10-21 shape); ``batch_creates``/``batch_cancels`` count calls.

Fault injection (a status, a stall) goes through :meth:`StandIn.fail`.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import itertools
import json
import time
from dataclasses import dataclass, field
from email.parser import BytesParser
from email.policy import HTTP
from typing import Any
from urllib.parse import parse_qs

from aiohttp import web

from tests.integration.wire_openai_batches import _Routes
from tests.integration.wire_standins import Handler, Seen, StandIn, sse

API_KEY = "azure-key-3c9f0e7d1b"
TENANT, CLIENT_ID, CLIENT_SECRET = "tenant-standin", "client-standin", "entra-secret-55ab"
CHAT_DEPLOYMENT = "gpt4o-mini-prod"
EMBED_DEPLOYMENT = "embed-small"
BATCH_DEPLOYMENT = "gpt4o-mini-batch"
"""The resource's one Global Batch deployment (what every line of a batch file must name as ``model``)."""
BATCH_ENDPOINTS = ("/chat/completions", "/embeddings")
CREATED = 1733500000


def _unauthorized() -> web.Response:
    message = (
        "Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide a valid key "
        "for an active subscription and use a correct regional API endpoint for your resource."
    )
    return web.json_response({"error": {"code": "401", "message": message}}, status=401)


def _not_found() -> web.Response:
    message = "The API deployment for this resource does not exist."
    return web.json_response({"error": {"code": "DeploymentNotFound", "message": message}}, status=404)


def _content_filtered() -> web.Response:
    result = {
        "hate": {"filtered": False, "severity": "safe"},
        "self_harm": {"filtered": False, "severity": "safe"},
        "sexual": {"filtered": False, "severity": "safe"},
        "violence": {"filtered": True, "severity": "medium"},
        "jailbreak": {"filtered": False, "detected": False},
    }
    error = {
        "message": "The response was filtered due to the prompt triggering Azure OpenAI's content management policy.",
        "type": None,
        "param": "prompt",
        "code": "content_filter",
        "status": 400,
        "innererror": {"code": "ResponsibleAIPolicyViolation", "content_filter_result": result},
    }
    return web.json_response({"error": error}, status=400)


def _last_user(body: dict[str, Any]) -> str:
    users = [m for m in body.get("messages", []) if m.get("role") == "user"]
    content = users[-1]["content"] if users else ""
    return content if isinstance(content, str) else " ".join(p.get("text", "") for p in content)


_FILTER_OK = {"hate": {"filtered": False, "severity": "safe"}, "violence": {"filtered": False, "severity": "safe"}}


async def _cut(seen: Seen, events: list[dict[str, Any]]) -> web.StreamResponse:
    """Send a few events, then drop the connection mid-stream (no [DONE], no finish reason)."""
    assert seen.request is not None
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(seen.request)
    await response.write(b"".join(f"data: {json.dumps(e)}\n\n".encode() for e in events))
    await asyncio.sleep(0.3)  # let the client read them: aiohttp drops buffered data once the connection fails
    if seen.request.transport is not None:
        seen.request.transport.close()
    return response


def _reply(body: dict[str, Any]) -> tuple[dict[str, Any], str, dict[str, int], dict[str, Any]]:
    """The stand-in model's message, finish reason, usage and the completion's common fields."""
    text = _last_user(body)
    usage = {"prompt_tokens": len(text.split()) + 5, "completion_tokens": 0, "total_tokens": 0}
    message: dict[str, Any] = {"role": "assistant", "content": f"Azure echo: {text}"}
    reason = "stop"
    if (
        body.get("tools")
        and body.get("tool_choice") != "none"
        and not any(m.get("role") == "tool" for m in body["messages"])
    ):
        name = body["tools"][0]["function"]["name"]
        call = {
            "id": "call_az1",
            "type": "function",
            "function": {"name": name, "arguments": json.dumps({"q": text})},
        }
        message, reason = {"role": "assistant", "content": None, "tool_calls": [call]}, "tool_calls"
    elif body.get("messages") and body["messages"][-1].get("role") == "tool":
        message["content"] = f"Tool result was: {body['messages'][-1]['content']}"
    usage["completion_tokens"] = len(str(message.get("content") or "").split())
    usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
    base = {"id": "chatcmpl-az1", "created": CREATED, "model": "gpt-4o-mini-2024-07-18", "system_fingerprint": "fp_az"}
    return message, reason, usage, base


@dataclass
class _BatchFile:
    id: str
    filename: str
    purpose: str
    content: bytes
    status: str = "processed"

    def view(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "file",
            "bytes": len(self.content),
            "created_at": CREATED,
            "filename": self.filename,
            "purpose": self.purpose,
            "status": self.status,
            "status_details": None,
        }


@dataclass
class _AzureBatch:
    id: str
    input_file_id: str
    endpoint: str
    metadata: dict[str, str] | None
    created_at: int
    status: str = "validating"
    requests: list[dict[str, Any]] = field(default_factory=list)
    done: list[tuple[bool, dict[str, Any]]] = field(default_factory=list)
    errors: dict[str, Any] | None = None
    output_file_id: str | None = None
    error_file_id: str | None = None
    stamps: dict[str, int] = field(default_factory=dict)

    def view(self) -> dict[str, Any]:
        completed = sum(1 for ok, _ in self.done if ok)
        return {
            "object": "batch",
            "id": self.id,
            "endpoint": self.endpoint,
            "errors": self.errors,
            "input_file_id": self.input_file_id,
            "completion_window": "24h",
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
            "metadata": self.metadata,
        }


class AzureStandIn:
    """The stand-in: ``.root`` is the resource endpoint; ``.token_requests`` counts Entra ID token grants."""

    def __init__(self, token_lifetime: int = 3600) -> None:
        self.tokens: set[str] = set()
        self.token_requests = 0
        self.token_lifetime = token_lifetime
        self._counter = itertools.count(1)
        self.files: dict[str, _BatchFile] = {}
        self.batches: dict[str, _AzureBatch] = {}
        self.hold = False
        self.batch_creates = 0
        self.batch_cancels = 0
        routes: dict[tuple[str, str], Handler] = {
            ("GET", "/openai/models"): self._models,
            ("POST", "/openai/v1/chat/completions"): self._chat_v1,
            ("POST", f"/{TENANT}/oauth2/v2.0/token"): self._token,
            ("POST", "/openai/files"): self._upload,
            ("POST", "/openai/batches"): self._create_batch,
            ("GET", "/openai/batches"): self._list_batches,
        }
        for deployment in (CHAT_DEPLOYMENT, EMBED_DEPLOYMENT):
            routes[("POST", f"/openai/deployments/{deployment}/chat/completions")] = self._chat
            routes[("POST", f"/openai/deployments/{deployment}/embeddings")] = self._embeddings
        templated: list[tuple[str, str, Handler]] = [
            ("GET", r"/openai/files/[^/]+", self._file),
            ("GET", r"/openai/files/[^/]+/content", self._file_content),
            ("GET", r"/openai/batches/[^/]+", self._retrieve_batch),
            ("POST", r"/openai/batches/[^/]+/cancel", self._cancel_batch),
        ]
        self.standin = StandIn("azure-openai", _Routes(routes, templated))

    def start(self, port: int | None = None) -> AzureStandIn:
        """Serve on a free loopback port, or on ``port`` (the docs' examples pick it)."""
        if port is None:
            self.standin.start()
            return self
        stand_in = self.standin
        stand_in._thread.start()
        asyncio.run_coroutine_threadsafe(stand_in._start(port), stand_in._loop).result(10)
        stand_in.root = f"http://127.0.0.1:{port}"
        return self

    def stop(self) -> None:
        self.standin.stop()

    @property
    def root(self) -> str:
        return self.standin.root

    @property
    def token_url(self) -> str:
        return f"{self.root}/{TENANT}/oauth2/v2.0/token"

    def _refusal(self, seen: Seen, *, versioned: bool = True) -> web.Response | None:
        bearer = seen.headers.get("authorization", "").removeprefix("Bearer ")
        if seen.headers.get("api-key") != API_KEY and bearer not in self.tokens:
            return _unauthorized()
        if versioned and not seen.query.get("api-version"):
            return web.json_response({"error": {"code": "404", "message": "Resource not found"}}, status=404)
        return None

    async def _token(self, seen: Seen) -> web.StreamResponse:
        """Entra ID's token endpoint for the client-credentials grant (form-encoded in, JSON out)."""
        assert seen.request is not None
        raw = await seen.request.read()
        form = {k: v[0] for k, v in parse_qs(raw.decode()).items()}
        self.token_requests += 1
        if form.get("grant_type") != "client_credentials" or form.get("client_id") != CLIENT_ID:
            body = {"error": "unauthorized_client", "error_description": "AADSTS700016: Application not found."}
            return web.json_response(body, status=400)
        if form.get("client_secret") != CLIENT_SECRET:
            body = {"error": "invalid_client", "error_description": "AADSTS7000215: Invalid client secret provided."}
            return web.json_response(body, status=401)
        token = f"eyJ0eXAi.standin.{next(self._counter)}"
        self.tokens.add(token)
        return web.json_response(
            {"token_type": "Bearer", "expires_in": self.token_lifetime, "ext_expires_in": 3600, "access_token": token}
        )

    async def _models(self, seen: Seen) -> web.StreamResponse:
        if (refused := self._refusal(seen)) is not None:
            return refused
        return web.json_response({"object": "list", "data": [{"id": "gpt-4o-mini", "object": "model"}]})

    async def _chat(self, seen: Seen) -> web.StreamResponse:
        if (refused := self._refusal(seen)) is not None:
            return refused
        if seen.path.split("/")[3] != CHAT_DEPLOYMENT:
            return _not_found()
        return await self._answer(seen)

    async def _chat_v1(self, seen: Seen) -> web.StreamResponse:
        if (refused := self._refusal(seen, versioned=False)) is not None:
            return refused
        if seen.body.get("model") != CHAT_DEPLOYMENT:
            return _not_found()
        return await self._answer(seen)

    async def _answer(self, seen: Seen) -> web.StreamResponse:
        body = seen.body
        if "FORBIDDEN" in _last_user(body):
            return _content_filtered()
        if body.get("stream"):
            return await self._stream(seen, body)
        return web.json_response(self._completion(body))

    @staticmethod
    def _completion(body: dict[str, Any]) -> dict[str, Any]:
        """The non-streamed chat completion for an accepted request body."""
        message, reason, usage, base = _reply(body)
        choice = {"index": 0, "message": message, "finish_reason": reason, "content_filter_results": _FILTER_OK}
        return {
            **base,
            "object": "chat.completion",
            "choices": [choice],
            "usage": usage,
            "prompt_filter_results": [{"prompt_index": 0, "content_filter_results": _FILTER_OK}],
        }

    async def _stream(self, seen: Seen, body: dict[str, Any]) -> web.StreamResponse:
        message, reason, usage, base = _reply(body)
        preamble = {
            "id": "",
            "object": "",
            "created": 0,
            "model": "",
            "choices": [],
            "prompt_filter_results": [{"prompt_index": 0, "content_filter_results": _FILTER_OK}],
        }
        chunk = {**base, "object": "chat.completion.chunk"}
        events: list[dict[str, Any]] = [
            preamble,
            {
                **chunk,
                "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}],
            },
        ]
        for word in str(message.get("content") or "").split(" "):
            delta = {"index": 0, "delta": {"content": word + " "}, "finish_reason": None}
            events.append({**chunk, "choices": [{**delta, "content_filter_results": _FILTER_OK}]})
        events.append({**chunk, "choices": [{"index": 0, "delta": {}, "finish_reason": reason}]})
        if (body.get("stream_options") or {}).get("include_usage"):
            events.append({**chunk, "choices": [], "usage": usage})
        if "CUTSTREAM" in _last_user(body):
            return await _cut(seen, events[:3])
        return await sse(seen, events)

    async def _embeddings(self, seen: Seen) -> web.StreamResponse:
        if (refused := self._refusal(seen)) is not None:
            return refused
        if seen.path.split("/")[3] != EMBED_DEPLOYMENT:
            return _not_found()
        return web.json_response(_embedded(seen.body))

    # -- the Batch API (OpenAI's Files and Batches wire under /openai) ------------------------------------

    async def _upload(self, seen: Seen) -> web.StreamResponse:
        if (refused := self._refusal(seen)) is not None:
            return refused
        assert seen.request is not None
        raw = await seen.request.read()
        head = f"Content-Type: {seen.headers.get('content-type', '')}\r\n\r\n".encode()
        message = BytesParser(policy=HTTP).parsebytes(head + raw)
        fields: dict[str, tuple[str | None, bytes]] = {}
        for part in message.iter_parts() if message.is_multipart() else []:
            name = part.get_param("name", header="content-disposition")
            payload = part.get_payload(decode=True)
            if isinstance(name, str) and isinstance(payload, bytes):
                fields[name] = (part.get_filename(), payload)
        if "file" not in fields or fields.get("purpose", (None, b""))[1] != b"batch":
            return _bad_request("A multipart body with 'file' and purpose 'batch' is required.")
        stored = _BatchFile(
            f"file-{next(self._counter):08d}az", fields["file"][0] or "upload", "batch", fields["file"][1], "pending"
        )
        self.files[stored.id] = stored
        return web.json_response(stored.view())

    async def _file(self, seen: Seen) -> web.StreamResponse:
        """A file object; an upload is ``pending`` when it comes and ``processed`` from the next look on."""
        if (refused := self._refusal(seen)) is not None:
            return refused
        stored = self.files.get(seen.path.rsplit("/", 1)[1])
        if stored is None:
            return web.json_response({"error": {"code": "404", "message": "File not found."}}, status=404)
        view = stored.view()
        stored.status = "processed"
        return web.json_response(view)

    async def _file_content(self, seen: Seen) -> web.StreamResponse:
        if (refused := self._refusal(seen)) is not None:
            return refused
        stored = self.files.get(seen.path.split("/")[3])
        if stored is None:
            return web.json_response({"error": {"code": "404", "message": "File not found."}}, status=404)
        return web.Response(body=stored.content, content_type="application/octet-stream")

    async def _create_batch(self, seen: Seen) -> web.StreamResponse:
        if (refused := self._refusal(seen)) is not None:
            return refused
        body = seen.body if isinstance(seen.body, dict) else {}
        source = self.files.get(str(body.get("input_file_id")))
        if source is None:
            return _bad_request(f"Input file {body.get('input_file_id')} not found.")
        if source.status != "processed":
            return _bad_request(f"Input file {source.id} is {source.status}; wait until it is processed.")
        if body.get("endpoint") not in BATCH_ENDPOINTS:
            return _bad_request(f"Endpoint {body.get('endpoint')} is not supported; use one of {BATCH_ENDPOINTS}.")
        if body.get("completion_window") != "24h":
            return _bad_request("completion_window must be '24h'.")
        batch = _AzureBatch(
            f"batch_{next(self._counter):08d}az",
            source.id,
            str(body["endpoint"]),
            body.get("metadata"),
            int(time.time()),
        )
        self.batches[batch.id] = batch
        self.batch_creates += 1
        return web.json_response(batch.view())

    async def _list_batches(self, seen: Seen) -> web.StreamResponse:
        if (refused := self._refusal(seen)) is not None:
            return refused
        limit = max(1, min(100, int(seen.query.get("limit", "20"))))
        newest = list(reversed(self.batches.values()))
        if after := seen.query.get("after"):
            ids = [b.id for b in newest]
            newest = newest[ids.index(after) + 1 :] if after in ids else []
        page = newest[:limit]
        data = [b.view() for b in page]
        return web.json_response({"object": "list", "data": data, "has_more": len(newest) > limit})

    async def _retrieve_batch(self, seen: Seen) -> web.StreamResponse:
        if (refused := self._refusal(seen)) is not None:
            return refused
        batch = self.batches.get(seen.path.rsplit("/", 1)[1])
        if batch is None:
            return web.json_response({"error": {"code": "404", "message": "Batch not found."}}, status=404)
        self._advance(batch)
        return web.json_response(batch.view())

    async def _cancel_batch(self, seen: Seen) -> web.StreamResponse:
        if (refused := self._refusal(seen)) is not None:
            return refused
        batch = self.batches.get(seen.path.split("/")[3])
        if batch is None:
            return web.json_response({"error": {"code": "404", "message": "Batch not found."}}, status=404)
        if batch.status in ("completed", "failed", "expired", "cancelled"):
            return _bad_request(f"Batch {batch.id} is {batch.status}; it cannot be cancelled.")
        if batch.status != "cancelling":
            self.batch_cancels += 1
            batch.status = "cancelling"
            batch.stamps["cancelling"] = int(time.time())
        return web.json_response(batch.view())

    def _advance(self, batch: _AzureBatch) -> None:
        now = int(time.time())
        if batch.status == "cancelling":
            self._write_files(batch)
            batch.status, batch.stamps["cancelled"] = "cancelled", now
        elif batch.status == "validating":
            self._validate(batch, now)
        elif batch.status == "in_progress" and not self.hold:
            if len(batch.done) < len(batch.requests):
                request = batch.requests[len(batch.done)]
                status, body = self._line_answer(batch.endpoint, request["body"])
                response = {"status_code": status, "request_id": f"req-{len(batch.done)}", "body": body}
                batch.done.append(
                    (status < 400, {"custom_id": request["custom_id"], "response": response, "error": None})
                )
            else:
                batch.status, batch.stamps["finalizing"] = "finalizing", now
        elif batch.status == "finalizing":
            self._write_files(batch)
            batch.status, batch.stamps["completed"] = "completed", now

    def _validate(self, batch: _AzureBatch, now: int) -> None:
        problems: list[dict[str, Any]] = []
        requests: list[dict[str, Any]] = []
        for number, raw in enumerate(self.files[batch.input_file_id].content.splitlines(), start=1):
            if not raw.strip():
                continue
            item = json.loads(raw)
            model = (item.get("body") or {}).get("model")
            if item.get("url") != batch.endpoint:
                message = f"The url in line {number} does not match the batch's endpoint {batch.endpoint}."
                problems.append({"code": "url_mismatch", "line": number, "message": message, "param": "url"})
            elif model != BATCH_DEPLOYMENT:
                message = f"Line {number} names deployment '{model}', which is not a Global Batch deployment."
                problems.append({"code": "model_not_found", "line": number, "message": message, "param": "model"})
            else:
                requests.append(item)
        if problems:
            batch.status, batch.errors, batch.stamps["failed"] = "failed", {"object": "list", "data": problems}, now
            return
        batch.requests, batch.status, batch.stamps["in_progress"] = requests, "in_progress", now

    def _line_answer(self, endpoint: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        if endpoint == "/embeddings":
            return 200, _embedded(body)
        if "FORBIDDEN" in _last_user(body):
            response = _content_filtered()
            assert isinstance(response.text, str)
            return 400, json.loads(response.text)
        return 200, self._completion(body)

    def _write_files(self, batch: _AzureBatch) -> None:
        for ok, attribute in ((True, "output_file_id"), (False, "error_file_id")):
            records = [record for good, record in batch.done if good is ok]
            if records:
                content = b"".join(json.dumps(r).encode() + b"\n" for r in records)
                stored = _BatchFile(f"file-{next(self._counter):08d}az", f"{batch.id}.jsonl", "batch_output", content)
                self.files[stored.id] = stored
                setattr(batch, attribute, stored.id)


def _bad_request(message: str) -> web.Response:
    return web.json_response({"error": {"code": "invalidPayload", "message": message}}, status=400)


def _embedded(body: dict[str, Any]) -> dict[str, Any]:
    inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
    size = body.get("dimensions", 8)
    data = []
    for index, text in enumerate(inputs):
        digest = hashlib.sha256(str(text).encode()).digest()
        data.append(
            {"object": "embedding", "index": index, "embedding": [(digest[i % 32] - 128) / 128 for i in range(size)]}
        )
    tokens = sum(len(str(t).split()) for t in inputs)
    return {
        "object": "list",
        "model": "text-embedding-3-small",
        "data": data,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }


def main() -> None:
    """``python -m tests.integration.wire_azure --port N``: serve until interrupted (for the docs' examples)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--port", type=int, required=True)
    stand_in = AzureStandIn().start(parser.parse_args().port)
    print(f"stand-in listening on {stand_in.root}", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        stand_in.stop()


if __name__ == "__main__":
    main()
