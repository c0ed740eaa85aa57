"""A STAND-IN for Amazon Bedrock's runtime API on loopback, written from Bedrock's public API reference.

Bedrock is a cloud service this machine cannot reach, and moto 5.2.5 implements only ``InvokeModel`` for
bedrock-runtime (not Converse or ConverseStream), so this small aiohttp server speaks the parts of the
wire format ``remote::bedrock`` uses:

- ``POST /model/{modelId}/converse``: Converse's JSON request and answer (``output.message.content``
  blocks, ``stopReason``, ``usage``);
- ``POST /model/{modelId}/converse-stream``: the same conversation as an
  ``application/vnd.amazon.eventstream`` body, binary frames (prelude, headers, JSON payload, both CRC32s)
  carrying ``messageStart``, ``contentBlockStart``/``Delta``/``Stop``, ``messageStop`` and ``metadata``
  events, or an exception frame;
- ``POST /model/{modelId}/invoke``: InvokeModel with Titan (``inputText``) and Cohere (``texts``)
  embedding bodies, the input token count in ``X-Amzn-Bedrock-Input-Token-Count``;
- ``GET /foundation-models``: the control plane's ListFoundationModels, for ``discover_models``;
- errors as Bedrock sends them: an HTTP status, ``x-amzn-ErrorType`` and ``{"message": ...}``.

Every request's SigV4 ``Authorization`` is recomputed with botocore from the known key pair, so a request
AWS would reject for its signature is recorded in ``signature_errors`` (tests assert that stays empty);
an unknown access key gets ``UnrecognizedClientException`` as from AWS. The "model" is deterministic: it
echoes the last user text, calls the first offered tool with the user text as each required string
argument, and answers a tool result by quoting it. Fault models (ids starting ``stand-in.``) throttle,
are not ready, or break their stream.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import struct
import time
import zlib
from typing import Any

from aiohttp import web
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from tests.integration.wire_standins import Seen, StandIn

ACCESS_KEY, SECRET_KEY, REGION = "AKIDBEDROCKSTANDIN00", "bedrock-stand-in-secret-9f3a", "eu-central-1"
CHAT_MODEL = "anthropic.claude-3-5-haiku-20241022-v1:0"
TITAN = "amazon.titan-embed-text-v2:0"
COHERE = "cohere.embed-english-v3"
THROTTLED = "stand-in.throttled"
NOT_READY = "stand-in.not-ready"
CUT = "stand-in.cut-stream"
STREAM_ERROR = "stand-in.stream-error"
MODELS = (CHAT_MODEL, TITAN, COHERE, THROTTLED, NOT_READY, CUT, STREAM_ERROR)


# -- event-stream framing (written from the AWS event-stream encoding description) -----------------


def event_frame(headers: dict[str, str], payload: bytes) -> bytes:
    """One event-stream message: total and header lengths, prelude CRC, string headers, payload, message CRC."""
    encoded = b"".join(
        bytes([len(name)]) + name.encode() + b"\x07" + struct.pack(">H", len(value.encode())) + value.encode()
        for name, value in headers.items()
    )
    prelude = struct.pack(">II", 12 + len(encoded) + len(payload) + 4, len(encoded))
    message = prelude + struct.pack(">I", zlib.crc32(prelude)) + encoded + payload
    return message + struct.pack(">I", zlib.crc32(message))


def event(name: str, body: dict[str, Any]) -> bytes:
    headers = {":event-type": name, ":content-type": "application/json", ":message-type": "event"}
    return event_frame(headers, json.dumps(body).encode())


def exception(name: str, message: str) -> bytes:
    headers = {":exception-type": name, ":content-type": "application/json", ":message-type": "exception"}
    return event_frame(headers, json.dumps({"message": message}).encode())


# -- the deterministic "model" ----------------------------------------------------------------------


def _words(text: str) -> int:
    return len(text.split())


def _text_of(blocks: list[dict[str, Any]]) -> str:
    return " ".join(str(b["text"]) for b in blocks if isinstance(b.get("text"), str))


def answer(body: dict[str, Any]) -> tuple[list[dict[str, Any]], str, dict[str, int]]:
    """Content blocks, stop reason and usage for a Converse request."""
    messages = body.get("messages") or []
    last = messages[-1]["content"] if messages else []
    prompt_words = sum(_words(_text_of(m["content"])) for m in messages) + sum(
        _words(s.get("text", "")) for s in body.get("system") or []
    )
    results = [b["toolResult"] for b in last if "toolResult" in b]
    tools = (body.get("toolConfig") or {}).get("tools") or []
    blocks: list[dict[str, Any]]
    if results:
        said = " ".join(_text_of(r.get("content") or []) for r in results)
        blocks, reason = [{"text": f"The tool said: {said}"}], "end_turn"
    elif tools:
        spec = tools[0]["toolSpec"]
        choice = (body.get("toolConfig") or {}).get("toolChoice") or {}
        if "tool" in choice:
            spec = next(t["toolSpec"] for t in tools if t["toolSpec"]["name"] == choice["tool"]["name"])
        schema = spec["inputSchema"]["json"]
        arguments = {name: _text_of(last) for name in schema.get("required") or []}
        tool_id = "tooluse_" + hashlib.sha1(_text_of(last).encode()).hexdigest()[:12]
        blocks = [
            {"text": "Let me check."},
            {"toolUse": {"toolUseId": tool_id, "name": spec["name"], "input": arguments}},
        ]
        reason = "tool_use"
    else:
        text = f"Echo: {_text_of(last)}"
        reason = "end_turn"
        config = body.get("inferenceConfig") or {}
        for stop in config.get("stopSequences") or []:
            if stop in text:
                text, reason = text[: text.index(stop)], "stop_sequence"
        limit = config.get("maxTokens")
        if limit is not None and _words(text) > limit:
            text, reason = " ".join(text.split()[:limit]), "max_tokens"
        blocks = [{"text": text}]
    output = sum(_words(_text_of([b])) + (3 if "toolUse" in b else 0) for b in blocks)
    usage = {"inputTokens": prompt_words, "outputTokens": output, "totalTokens": prompt_words + output}
    return blocks, reason, usage


def stream_events(blocks: list[dict[str, Any]], reason: str, usage: dict[str, int]) -> list[bytes]:
    """The ConverseStream events for an answer, text split into words."""
    frames = [event("messageStart", {"role": "assistant"})]
    for index, block in enumerate(blocks):
        if "text" in block:
            words = block["text"].split(" ")
            for position, word in enumerate(words):
                piece = word if position == len(words) - 1 else word + " "
                frames.append(event("contentBlockDelta", {"contentBlockIndex": index, "delta": {"text": piece}}))
        else:
            use = block["toolUse"]
            start = {"toolUse": {"toolUseId": use["toolUseId"], "name": use["name"]}}
            frames.append(event("contentBlockStart", {"contentBlockIndex": index, "start": start}))
            arguments = json.dumps(use["input"])
            half = len(arguments) // 2
            for piece in (arguments[:half], arguments[half:]):
                frames.append(
                    event("contentBlockDelta", {"contentBlockIndex": index, "delta": {"toolUse": {"input": piece}}})
                )
        frames.append(event("contentBlockStop", {"contentBlockIndex": index}))
    frames.append(event("messageStop", {"stopReason": reason}))
    frames.append(event("metadata", {"usage": usage, "metrics": {"latencyMs": 12}}))
    return frames


def _vector(text: str, size: int) -> list[float]:
    digest = hashlib.sha256(text.encode()).digest()
    return [round((digest[i % len(digest)] - 128) / 128, 4) for i in range(size)]


# -- the server -------------------------------------------------------------------------------------


def _error(status: int, kind: str, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"message": message}, status=status, headers={"x-amzn-ErrorType": kind, **(headers or {})})


class BedrockStandIn:
    """The stand-in: ``.root`` is the endpoint_url, ``.seen`` the requests, ``.signature_errors`` the mismatches."""

    def __init__(self) -> None:
        routes: dict[tuple[str, str], Any] = {}
        for model in MODELS:
            routes[("POST", f"/model/{model}/converse")] = self._converse
            routes[("POST", f"/model/{model}/converse-stream")] = self._converse_stream
            routes[("POST", f"/model/{model}/invoke")] = self._invoke
        routes[("GET", "/foundation-models")] = self._foundation_models
        self.standin = StandIn("bedrock", routes)
        self.signature_errors: list[str] = []

    def start(self, port: int | None = None) -> BedrockStandIn:
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
    def seen(self) -> list[Seen]:
        return self.standin.seen

    async def _refusal(self, seen: Seen) -> web.Response | None:
        """Check the SigV4 signature as AWS would; an unknown key is refused the way AWS refuses it."""
        assert seen.request is not None
        auth = seen.headers.get("authorization", "")
        try:
            fields = dict(part.strip().split("=", 1) for part in auth.removeprefix("AWS4-HMAC-SHA256 ").split(","))
            key_id, date, region, service, _ = fields["Credential"].split("/")
            signed = fields["SignedHeaders"].split(";")
        except (KeyError, ValueError):
            self.signature_errors.append(f"{seen.path}: unsigned or malformed authorization: {auth!r}")
            return _error(403, "MissingAuthenticationTokenException", "Missing Authentication Token")
        if key_id != ACCESS_KEY:
            return _error(403, "UnrecognizedClientException", "The security token included in the request is invalid.")
        body = await seen.request.read()
        request = AWSRequest(
            method=seen.method,
            url=f"{self.root}{seen.request.raw_path}",
            data=body,
            headers={h: seen.headers[h] for h in signed},
        )
        request.context["timestamp"] = seen.headers["x-amz-date"]
        signer = SigV4Auth(Credentials(ACCESS_KEY, SECRET_KEY), "bedrock", REGION)
        expected = signer.signature(signer.string_to_sign(request, signer.canonical_request(request)), request)
        if (region, service) != (REGION, "bedrock") or fields["Signature"] != expected:
            self.signature_errors.append(f"{seen.path}: bad signature or scope {fields['Credential']}")
            return _error(403, "InvalidSignatureException", "The request signature we calculated does not match.")
        return None

    @staticmethod
    def _model(seen: Seen) -> str:
        return seen.path.split("/")[2]

    def _fault(self, model: str) -> web.Response | None:
        if model == THROTTLED:
            return _error(429, "ThrottlingException", "Too many requests, please wait before trying again.")
        if model == NOT_READY:
            return _error(429, "ModelNotReadyException", "Model is not ready for inference. Wait and try again.")
        return None

    @staticmethod
    def _invalid(body: Any) -> web.Response | None:
        messages = body.get("messages") if isinstance(body, dict) else None
        if not messages:
            return _error(400, "ValidationException", "A conversation must start with a user message.")
        uses_tools = any("toolUse" in b or "toolResult" in b for m in messages for b in m.get("content") or [])
        if uses_tools and not body.get("toolConfig"):
            return _error(
                400,
                "ValidationException",
                "The toolConfig field must be defined when using toolUse and toolResult content blocks.",
            )
        roles = [m.get("role") for m in messages]
        if roles[0] != "user" or any(a == b for a, b in zip(roles, roles[1:], strict=False)):
            return _error(400, "ValidationException", "A conversation must alternate between user and assistant roles.")
        return None

    async def _converse(self, seen: Seen) -> web.StreamResponse:
        refused = await self._refusal(seen) or self._fault(self._model(seen)) or self._invalid(seen.body)
        if refused is not None:
            return refused
        blocks, reason, usage = answer(seen.body)
        return web.json_response(
            {
                "output": {"message": {"role": "assistant", "content": blocks}},
                "stopReason": reason,
                "usage": usage,
                "metrics": {"latencyMs": 12},
            }
        )

    async def _converse_stream(self, seen: Seen) -> web.StreamResponse:
        refused = await self._refusal(seen) or self._fault(self._model(seen)) or self._invalid(seen.body)
        if refused is not None:
            return refused
        assert seen.request is not None
        model = self._model(seen)
        blocks, reason, usage = answer(seen.body)
        frames = stream_events(blocks, reason, usage)
        response = web.StreamResponse(headers={"Content-Type": "application/vnd.amazon.eventstream"})
        await response.prepare(seen.request)
        if model == CUT:
            # Two whole events, then half a frame, then the connection drops.
            await response.write(b"".join(frames[:2]) + frames[2][: len(frames[2]) // 2])
            await asyncio.sleep(0.3)  # let the client read them: aiohttp drops buffered data once the connection fails
            transport = seen.request.transport
            if transport is not None:
                transport.close()
            return response
        if model == STREAM_ERROR:
            frames = [*frames[:2], exception("modelStreamErrorException", "The model stopped unexpectedly.")]
        for frame in frames:
            await response.write(frame)
        await response.write_eof()
        return response

    async def _foundation_models(self, seen: Seen) -> web.StreamResponse:
        """The control plane's ListFoundationModels (same host here; AWS serves it from ``bedrock.``)."""
        refused = await self._refusal(seen)
        if refused is not None:
            return refused

        def summary(model_id: str, outputs: list[str], kinds: list[str]) -> dict[str, Any]:
            return {
                "modelId": model_id,
                "modelArn": f"arn:aws:bedrock:{REGION}::foundation-model/{model_id}",
                "providerName": model_id.split(".")[0].title(),
                "inputModalities": ["TEXT"],
                "outputModalities": outputs,
                "inferenceTypesSupported": kinds,
            }

        models = [
            summary("amazon.nova-lite-v1:0", ["TEXT"], ["ON_DEMAND"]),
            summary(TITAN, ["EMBEDDING"], ["ON_DEMAND"]),
            summary("stability.sd3-large-v1:0", ["IMAGE"], ["ON_DEMAND"]),
            summary("meta.llama3-70b-instruct-v1:0", ["TEXT"], ["PROVISIONED"]),
        ]
        wanted = seen.query.get("byInferenceType")
        return web.json_response(
            {"modelSummaries": [m for m in models if not wanted or wanted in m["inferenceTypesSupported"]]}
        )

    async def _invoke(self, seen: Seen) -> web.StreamResponse:
        refused = await self._refusal(seen) or self._fault(self._model(seen))
        if refused is not None:
            return refused
        model, body = self._model(seen), seen.body
        if model.startswith("amazon.titan-embed"):
            if not isinstance(body.get("inputText"), str) or not body["inputText"]:
                return _error(400, "ValidationException", "inputText must be a non-empty string.")
            size = body.get("dimensions", 1024)
            if size not in (256, 512, 1024):
                return _error(400, "ValidationException", "dimensions must be 256, 512 or 1024.")
            tokens = _words(body["inputText"])
            payload: dict[str, Any] = {
                "embedding": _vector(body["inputText"], size),
                "inputTextTokenCount": tokens,
            }
        elif model.startswith("cohere.embed"):
            texts = body.get("texts")
            if not isinstance(texts, list) or not texts or len(texts) > 96 or "input_type" not in body:
                return _error(400, "ValidationException", "texts (1 to 96) and input_type are required.")
            tokens = sum(_words(t) for t in texts)
            vectors = [_vector(t, 1024) for t in texts]
            embeddings: Any = {"float": vectors} if body.get("embedding_types") else vectors
            payload = {"id": "emb-1", "texts": texts, "embeddings": embeddings, "response_type": "embeddings_floats"}
        else:
            return _error(400, "ValidationException", f"The provided model {model} does not support InvokeModel here.")
        return web.json_response(payload, headers={"X-Amzn-Bedrock-Input-Token-Count": str(tokens)})


def main() -> None:
    """``python -m tests.integration.wire_bedrock --port N``: serve until interrupted (for the docs' examples)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--port", type=int, required=True)
    stand_in = BedrockStandIn().start(parser.parse_args().port)
    print(f"stand-in listening on {stand_in.root}", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        stand_in.stop()


if __name__ == "__main__":
    main()
