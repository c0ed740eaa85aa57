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
  ``innererror.content_filter_result``; throttling is 429 with ``retry-after``.

Fault injection (a status, a stall) goes through :meth:`StandIn.fail`.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import itertools
import json
import time
from typing import Any
from urllib.parse import parse_qs

from aiohttp import web

from tests.integration.wire_standins import Seen, StandIn, sse

API_KEY = "azure-key-3c9f0e7d1b"
TENANT, CLIENT_ID, CLIENT_SECRET = "tenant-standin", "client-standin", "entra-secret-55ab"
CHAT_DEPLOYMENT = "gpt4o-mini-prod"
EMBED_DEPLOYMENT = "embed-small"
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


class AzureStandIn:
    """The stand-in: ``.root`` is the resource endpoint; ``.token_requests`` counts Entra ID token grants."""

    def __init__(self, token_lifetime: int = 3600) -> None:
        self.tokens: set[str] = set()
        self.token_requests = 0
        self.token_lifetime = token_lifetime
        self._counter = itertools.count(1)
        routes: dict[tuple[str, str], Any] = {
            ("GET", "/openai/models"): self._models,
            ("POST", "/openai/v1/chat/completions"): self._chat_v1,
            ("POST", f"/{TENANT}/oauth2/v2.0/token"): self._token,
        }
        for deployment in (CHAT_DEPLOYMENT, EMBED_DEPLOYMENT):
            routes[("POST", f"/openai/deployments/{deployment}/chat/completions")] = self._chat
            routes[("POST", f"/openai/deployments/{deployment}/embeddings")] = self._embeddings
        self.standin = StandIn("azure-openai", routes)

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
        text = _last_user(body)
        if "FORBIDDEN" in text:
            return _content_filtered()
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
        base = {
            "id": "chatcmpl-az1",
            "created": CREATED,
            "model": "gpt-4o-mini-2024-07-18",
            "system_fingerprint": "fp_az",
        }
        if body.get("stream"):
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
            if "CUTSTREAM" in text:
                return await _cut(seen, events[:3])
            return await sse(seen, events)
        choice = {"index": 0, "message": message, "finish_reason": reason, "content_filter_results": _FILTER_OK}
        return web.json_response(
            {
                **base,
                "object": "chat.completion",
                "choices": [choice],
                "usage": usage,
                "prompt_filter_results": [{"prompt_index": 0, "content_filter_results": _FILTER_OK}],
            }
        )

    async def _embeddings(self, seen: Seen) -> web.StreamResponse:
        if (refused := self._refusal(seen)) is not None:
            return refused
        if seen.path.split("/")[3] != EMBED_DEPLOYMENT:
            return _not_found()
        inputs = seen.body["input"] if isinstance(seen.body["input"], list) else [seen.body["input"]]
        size = seen.body.get("dimensions", 8)
        data = []
        for index, text in enumerate(inputs):
            digest = hashlib.sha256(str(text).encode()).digest()
            data.append(
                {
                    "object": "embedding",
                    "index": index,
                    "embedding": [(digest[i % 32] - 128) / 128 for i in range(size)],
                }
            )
        tokens = sum(len(str(t).split()) for t in inputs)
        return web.json_response(
            {
                "object": "list",
                "model": "text-embedding-3-small",
                "data": data,
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            }
        )


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
