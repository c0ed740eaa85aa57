"""The test suite's MCP fixture server, timed: part of the agent-loop benchmark only.

It serves the tools of ``tests/fixtures/mcp/server.py`` (``add``, ``echo``, ``sleep``, ...) over
streamable HTTP at ``/mcp``, unchanged, inside a small ASGI wrapper that notes, for every POST, the
``time.monotonic_ns()`` at which the request body had been read and at which the last byte of the
answer was handed to the server, with the JSON-RPC method (and tool name for ``tools/call``).
``GET /timings`` returns those records and forgets them. On Linux that clock is the same in every
process of the machine, so the benchmark can tell how much of a response's time the MCP server spent.

    python bench/agent_mcp.py PORT
"""

from __future__ import annotations

import importlib.util
import json
import sys
import time
from pathlib import Path
from typing import Any

FIXTURE = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "mcp" / "server.py"
_RECORDS: list[dict[str, Any]] = []


def _fixture() -> Any:
    spec = importlib.util.spec_from_file_location("mcp_fixture_server", FIXTURE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _what(body: bytes) -> str:
    try:
        message = json.loads(body)
    except ValueError:
        return "?"
    messages = message if isinstance(message, list) else [message]
    names = []
    for m in messages:
        if not isinstance(m, dict):
            continue
        method = str(m.get("method") or "response")
        if method == "tools/call":
            method += ":" + str((m.get("params") or {}).get("name"))
        names.append(method)
    return ",".join(names)


def timed(app: Any) -> Any:
    async def wrapper(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        if scope["path"] == "/timings":
            payload = json.dumps(_RECORDS).encode()
            _RECORDS.clear()
            await send(
                {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]}
            )
            await send({"type": "http.response.body", "body": payload})
            return
        if scope["method"] != "POST":
            await app(scope, receive, send)
            return
        chunks = []
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        body = b"".join(chunks)
        record = {"received_ns": time.monotonic_ns(), "sent_ns": None, "what": _what(body)}
        replayed = False

        async def replay() -> dict[str, Any]:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        async def timed_send(message: dict[str, Any]) -> None:
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body"):
                record["sent_ns"] = time.monotonic_ns()

        try:
            await app(scope, replay, timed_send)
        finally:
            if record["sent_ns"] is None:
                record["sent_ns"] = time.monotonic_ns()
            _RECORDS.append(record)

    return wrapper


def main() -> None:
    import uvicorn

    server = _fixture().build("bench")
    uvicorn.run(
        timed(server.streamable_http_app()), host="127.0.0.1", port=int(sys.argv[1]), log_level="warning", lifespan="on"
    )


if __name__ == "__main__":
    main()
