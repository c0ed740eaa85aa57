"""STAND-IN on loopback for Google's Generative Language API (Gemini), which cannot be reached from here.

It speaks the wire format of Google's public REST reference for ``v1beta``, only as far as
``remote::gemini`` uses it:

- ``GET /v1beta/models`` with ``pageSize`` / ``pageToken`` paging: ``Model`` objects (``name``
  ``models/...``, ``supportedGenerationMethods``, ``inputTokenLimit``, ``outputTokenLimit``);
- ``POST /v1beta/models/{m}:generateContent`` and ``:streamGenerateContent?alt=sse`` (each SSE event a
  whole ``GenerateContentResponse``; no ``[DONE]``, the body just ends): ``candidates[].content.parts``
  with ``text`` or ``functionCall`` (with a ``thoughtSignature``), ``finishReason``, ``usageMetadata``;
- ``POST /v1beta/models/{m}:batchEmbedContents``: ``{"embeddings": [{"values": [...]}]}``;
- the key in ``x-goog-api-key``: none is 403 ``PERMISSION_DENIED``, a wrong one 400 ``INVALID_ARGUMENT``
  with ``ErrorInfo.reason`` ``API_KEY_INVALID``, as the real service answers;
- errors as ``google.rpc.Status``: ``{"error": {"code", "message", "status", "details": [...]}}``.

What the model "says" is scripted from the request, so a test can drive every path: tools and a user
turn mentioning the weather produce a function call; a function response produces a sentence quoting
it; "unsafe" ends with ``SAFETY``; ``maxOutputTokens: 1`` ends with ``MAX_TOKENS``; in a stream,
"cut" sends one event and drops the connection once ``CUT_NOW`` is set. Everything else is ``gemini heard: <text>``.
"""

from __future__ import annotations

import asyncio
import json
import threading
from typing import Any

from aiohttp import web

from tests.integration.wire_standins import Seen, StandIn

GEMINI_KEY = "AIza-standin-key-5c1f0e"
CHAT_MODEL = "gemini-2.5-flash"
EMBED_MODEL = "gemini-embedding-001"
SIGNATURE = "c2lnbmF0dXJlLW9mLXRoZS1jYWxs"
VECTOR = [0.5, -0.25, 0.75]
ROOT = "/v1beta"
#: Set by a test once it has read the first event of a "cut" stream: the stand-in then drops the connection.
CUT_NOW = threading.Event()

_MODELS = [
    {
        "name": f"models/{CHAT_MODEL}",
        "version": "001",
        "displayName": "Gemini 2.5 Flash",
        "inputTokenLimit": 1048576,
        "outputTokenLimit": 65536,
        "supportedGenerationMethods": ["generateContent", "countTokens", "createCachedContent"],
        "temperature": 1,
        "topP": 0.95,
        "topK": 64,
        "thinking": True,
    },
    {
        "name": "models/imagen-4.0-generate-001",
        "displayName": "Imagen 4",
        "inputTokenLimit": 480,
        "outputTokenLimit": 8192,
        "supportedGenerationMethods": ["predict"],
    },
    {
        "name": f"models/{EMBED_MODEL}",
        "displayName": "Gemini Embedding 001",
        "inputTokenLimit": 2048,
        "outputTokenLimit": 1,
        "supportedGenerationMethods": ["embedContent", "countTextTokens", "countTokens"],
    },
]


def status_body(code: int, status: str, message: str, *details: dict[str, Any]) -> dict[str, Any]:
    """A ``google.rpc.Status`` error body, as Google's APIs send it."""
    error: dict[str, Any] = {"code": code, "message": message, "status": status}
    if details:
        error["details"] = list(details)
    return {"error": error}


def retry_info(seconds: str) -> dict[str, Any]:
    return {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": seconds}


def _key_refusal(seen: Seen) -> web.Response | None:
    key = seen.headers.get("x-goog-api-key")
    if not key:
        body = status_body(
            403,
            "PERMISSION_DENIED",
            "Method doesn't allow unregistered callers (callers without established identity). "
            "Please use API Key or other form of API consumer identity to call this API.",
        )
        return web.json_response(body, status=403)
    if key != GEMINI_KEY:
        info = {
            "@type": "type.googleapis.com/google.rpc.ErrorInfo",
            "reason": "API_KEY_INVALID",
            "domain": "googleapis.com",
            "metadata": {"service": "generativelanguage.googleapis.com"},
        }
        body = status_body(400, "INVALID_ARGUMENT", "API key not valid. Please pass a valid API key.", info)
        return web.json_response(body, status=400)
    return None


def _usage(prompt: int, output: int) -> dict[str, Any]:
    return {
        "promptTokenCount": prompt,
        "candidatesTokenCount": output,
        "thoughtsTokenCount": 2,
        "totalTokenCount": prompt + output + 2,
        "promptTokensDetails": [{"modality": "TEXT", "tokenCount": prompt}],
    }


def _answer(body: dict[str, Any]) -> tuple[list[dict[str, Any]], str]:
    """The parts and finish reason the scripted model answers ``body`` with."""
    contents = body.get("contents") or []
    last = contents[-1] if contents else {"parts": []}
    responses = [p["functionResponse"] for p in last.get("parts", []) if "functionResponse" in p]
    if responses:
        said = "; ".join(f"{r['name']} -> {json.dumps(r['response'], sort_keys=True)}" for r in responses)
        return [{"text": f"Tool results: {said}"}], "STOP"
    text = " ".join(p.get("text", "") for p in last.get("parts", []) if "text" in p)
    if body.get("tools") and "weather" in text.lower():
        call = {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}, "thoughtSignature": SIGNATURE}
        return [call], "STOP"
    if "unsafe" in text.lower():
        return [], "SAFETY"
    if (body.get("generationConfig") or {}).get("maxOutputTokens") == 1:
        return [{"text": "gemini"}], "MAX_TOKENS"
    return [{"text": f"gemini heard: {text}"}], "STOP"


def gemini_standin() -> StandIn:
    async def models(seen: Seen) -> web.StreamResponse:
        if (refused := _key_refusal(seen)) is not None:
            return refused
        # Two pages, so the adapter must follow nextPageToken.
        if seen.query.get("pageToken") == "page-2":
            return web.json_response({"models": _MODELS[2:]})
        return web.json_response({"models": _MODELS[:2], "nextPageToken": "page-2"})

    async def generate(seen: Seen) -> web.StreamResponse:
        if (refused := _key_refusal(seen)) is not None:
            return refused
        parts, reason = _answer(seen.body)
        candidate: dict[str, Any] = {"finishReason": reason, "index": 0}
        if parts:
            candidate["content"] = {"parts": parts, "role": "model"}
        return web.json_response(
            {
                "candidates": [candidate],
                "usageMetadata": _usage(11, 4),
                "modelVersion": CHAT_MODEL,
                "responseId": "resp-standin-1",
            }
        )

    async def stream(seen: Seen) -> web.StreamResponse:
        if (refused := _key_refusal(seen)) is not None:
            return refused
        if seen.query.get("alt") != "sse":
            return web.json_response(status_body(400, "INVALID_ARGUMENT", "this stand-in only streams SSE"), status=400)
        assert seen.request is not None
        parts, reason = _answer(seen.body)
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(seen.request)
        pieces: list[list[dict[str, Any]]] = []
        for part in parts:
            if "text" in part:
                words = part["text"].split(" ")
                pieces.extend([{"text": w + (" " if i < len(words) - 1 else "")}] for i, w in enumerate(words))
            else:
                pieces.append([part])
        cut = "cut" in json.dumps(seen.body.get("contents", [])[-1:])
        for i, piece in enumerate(pieces or [[]]):
            last = i == len(pieces or [[]]) - 1
            candidate: dict[str, Any] = {"index": 0}
            if piece:
                candidate["content"] = {"parts": piece, "role": "model"}
            if last and not cut:
                candidate["finishReason"] = reason
            event = {
                "candidates": [candidate],
                "usageMetadata": _usage(11, i + 1),
                "modelVersion": CHAT_MODEL,
                "responseId": "resp-standin-2",
            }
            await response.write(f"data: {json.dumps(event)}\r\n\r\n".encode())
            if cut:
                # Cut only once the test has seen the first event arrive (else the close could overtake it),
                # or after 10 s. The connection ends mid-body, with no last chunk.
                await asyncio.get_running_loop().run_in_executor(None, CUT_NOW.wait, 10)
                CUT_NOW.clear()
                assert seen.request.transport is not None
                seen.request.transport.close()
                return response
        await response.write_eof()
        return response

    async def embed(seen: Seen) -> web.StreamResponse:
        if (refused := _key_refusal(seen)) is not None:
            return refused
        requests = seen.body.get("requests") or []
        for request in requests:
            if request.get("model") != f"models/{EMBED_MODEL}":
                body = status_body(400, "INVALID_ARGUMENT", "Model name in each request must match the URL's.")
                return web.json_response(body, status=400)
        size = requests[0].get("outputDimensionality") if requests else None
        values = VECTOR[:size] if size else VECTOR
        return web.json_response({"embeddings": [{"values": values} for _ in requests]})

    chat = f"{ROOT}/models/{CHAT_MODEL}"
    routes = {
        ("GET", f"{ROOT}/models"): models,
        ("POST", f"{chat}:generateContent"): generate,
        ("POST", f"{chat}:streamGenerateContent"): stream,
        ("POST", f"{ROOT}/models/{EMBED_MODEL}:batchEmbedContents"): embed,
    }
    return StandIn("gemini", routes).start()
