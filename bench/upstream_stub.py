"""A minimal OpenAI-compatible upstream that answers at once: part of the overhead benchmark only.

Raw asyncio HTTP/1.1 with keep-alive, so the upstream itself costs as little CPU as possible and the
figures show what Underlay adds. Serves ``GET /v1/models``, ``POST /v1/chat/completions`` (JSON, or
SSE with ``N`` chunks when ``stream`` is true).
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

CHUNKS = 50
_MODELS = json.dumps(
    {"object": "list", "data": [{"id": "stub", "object": "model", "created": 0, "owned_by": "bench"}]}
).encode()
_COMPLETION = json.dumps(
    {
        "id": "chatcmpl-stub",
        "object": "chat.completion",
        "created": 0,
        "model": "stub",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6},
    }
).encode()


def _chunk(i: int, last: bool) -> bytes:
    delta = {} if last else {"content": f"t{i} "}
    body = {
        "id": "chatcmpl-stub",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": "stub",
        "choices": [{"index": 0, "delta": delta, "finish_reason": "stop" if last else None}],
    }
    return b"data: " + json.dumps(body).encode() + b"\n\n"


_STREAM = b"".join(_chunk(i, False) for i in range(CHUNKS)) + _chunk(CHUNKS, True) + b"data: [DONE]\n\n"


async def _handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            method, path, _ = lines[0].split(" ", 2)
            length = 0
            for line in lines[1:]:
                if line.lower().startswith("content-length:"):
                    length = int(line.split(":", 1)[1])
            body = await reader.readexactly(length) if length else b""
            if path.endswith("/models"):
                payload, ctype = _MODELS, b"application/json"
            elif b'"stream":true' in body.replace(b" ", b""):
                payload, ctype = _STREAM, b"text/event-stream"
            else:
                payload, ctype = _COMPLETION, b"application/json"
            writer.write(
                b"HTTP/1.1 200 OK\r\ncontent-type: "
                + ctype
                + b"\r\ncontent-length: "
                + str(len(payload)).encode()
                + b"\r\n\r\n"
                + payload
            )
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
    print(f"stub upstream on {sys.argv[1]} at {time.time()}", flush=True)
    asyncio.run(serve(int(sys.argv[1])))
