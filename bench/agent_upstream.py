"""A scripted OpenAI-compatible "model" for the agent-loop benchmark: part of the benchmark only.

It answers every streamed ``POST /v1/chat/completions`` at once, with no model behind it:

- when the last message is the user's, that message is a JSON plan,
  ``{"calls": [{"name": ..., "arguments": {...}}, ...]}``, and the answer is exactly those tool calls,
  streamed the way OpenAI-compatible servers stream them (the name in one chunk, the arguments in
  three pieces), ending ``finish_reason: tool_calls``. A named tool the request does not offer is
  refused with a 400, so a benchmark that guesses a tool's name wrong fails loudly;
- when the last message is a tool result, or the plan has no calls, the answer is ``ANSWER_TOKENS``
  text chunks that cite ``[1]``, ending ``finish_reason: stop``.

Either way a usage chunk and ``[DONE]`` follow. ``GET /v1/models`` lists the one model ``agent``.

It keeps, per chat-completions request, the ``time.monotonic_ns()`` at which the request was read
in full and at which the whole answer was handed to the socket, plus what it answered; ``GET /timings``
returns those records (and forgets them). On Linux that clock is the same in every process of the
machine, so the benchmark can lay these next to its own timestamps. Raw asyncio HTTP/1.1 with
keep-alive, like ``upstream_stub.py``, so the upstream costs as little as possible.

    python bench/agent_upstream.py PORT
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

ANSWER_TOKENS = 40
MODEL = "agent"
_MODELS = json.dumps(
    {"object": "list", "data": [{"id": MODEL, "object": "model", "created": 0, "owned_by": "bench"}]}
).encode()
_RECORDS: list[dict[str, Any]] = []


def _frame(delta: dict[str, Any] | None, finish: str | None = None, usage: dict[str, int] | None = None) -> bytes:
    body: dict[str, Any] = {"id": "chatcmpl-agent", "object": "chat.completion.chunk", "created": 0, "model": MODEL}
    body["choices"] = [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish}]
    if usage is not None:
        body["usage"] = usage
    return b"data: " + json.dumps(body, separators=(",", ":")).encode() + b"\n\n"


def _pieces(text: str, n: int) -> list[str]:
    size = max(1, -(-len(text) // n))
    return [text[i : i + size] for i in range(0, len(text), size)] or [""]


def _tool_calls(calls: list[dict[str, Any]], offered: set[str], turn: int) -> bytes:
    out = [_frame({"role": "assistant", "content": None})]
    for index, call in enumerate(calls):
        name = call["name"]
        if name not in offered:
            raise LookupError(f"tool '{name}' is not offered; offered: {sorted(offered)}")
        head = {"index": index, "id": f"call_{turn}_{index}", "type": "function"}
        out.append(_frame({"tool_calls": [{**head, "function": {"name": name, "arguments": ""}}]}))
        for piece in _pieces(json.dumps(call.get("arguments") or {}), 3):
            out.append(_frame({"tool_calls": [{"index": index, "function": {"arguments": piece}}]}))
    out.append(_frame({}, "tool_calls"))
    usage = {"prompt_tokens": 200, "completion_tokens": 20 * len(calls), "total_tokens": 200 + 20 * len(calls)}
    out.append(_frame(None, usage=usage))
    return b"".join(out) + b"data: [DONE]\n\n"


def _answer() -> bytes:
    words = ["Per", " the", " documents", " [1]", ","] + [f" w{i}" for i in range(ANSWER_TOKENS - 6)] + ["."]
    out = [_frame({"role": "assistant", "content": ""})]
    out += [_frame({"content": word}) for word in words]
    out.append(_frame({}, "stop"))
    usage = {"prompt_tokens": 400, "completion_tokens": len(words), "total_tokens": 400 + len(words)}
    out.append(_frame(None, usage=usage))
    return b"".join(out) + b"data: [DONE]\n\n"


_ANSWER = _answer()
_turns = 0


def _text(content: str | list[dict[str, Any]]) -> str:
    return content if isinstance(content, str) else "".join(p.get("text", "") for p in content)


def _complete(body: bytes) -> tuple[bytes, str]:
    """The SSE body for one chat-completions request and what kind of answer it was."""
    global _turns
    request = json.loads(body)
    messages = request["messages"]
    last = messages[-1]
    if last["role"] == "user" and json.loads(_text(last["content"]))["calls"]:
        plan = json.loads(_text(last["content"]))
        offered = {t["function"]["name"] for t in request.get("tools") or []}
        _turns += 1
        return _tool_calls(plan["calls"], offered, _turns), "tool_calls:" + ",".join(c["name"] for c in plan["calls"])
    return _ANSWER, "answer"


def _reply(writer: asyncio.StreamWriter, status: bytes, ctype: bytes, payload: bytes) -> None:
    writer.write(
        b"HTTP/1.1 "
        + status
        + b"\r\ncontent-type: "
        + ctype
        + b"\r\ncontent-length: "
        + str(len(payload)).encode()
        + b"\r\n\r\n"
        + payload
    )


async def _handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            _method, path, _ = lines[0].split(" ", 2)
            length = 0
            for line in lines[1:]:
                if line.lower().startswith("content-length:"):
                    length = int(line.split(":", 1)[1])
            body = await reader.readexactly(length) if length else b""
            if path.endswith("/chat/completions"):
                received = time.monotonic_ns()
                try:
                    payload, kind = _complete(body)
                    _reply(writer, b"200 OK", b"text/event-stream", payload)
                except (LookupError, ValueError, TypeError) as exc:
                    kind = f"refused: {exc}"
                    error = {"error": {"message": str(exc), "type": "invalid_request_error"}}
                    _reply(writer, b"400 Bad Request", b"application/json", json.dumps(error).encode())
                await writer.drain()
                _RECORDS.append({"received_ns": received, "sent_ns": time.monotonic_ns(), "kind": kind})
                continue
            if path.endswith("/timings"):
                payload = json.dumps(_RECORDS).encode()
                _RECORDS.clear()
            else:
                payload = _MODELS
            _reply(writer, b"200 OK", b"application/json", payload)
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError, ValueError):
        pass
    finally:
        writer.close()


async def serve(port: int) -> None:
    server = await asyncio.start_server(_handle, "127.0.0.1", port, backlog=1024)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(serve(int(sys.argv[1])))
