"""STAND-INS on loopback for services a test machine cannot run, each speaking that service's wire format.

Why stand-ins: vLLM needs a GPU, Ollama cannot be installed offline, and Brave Search and Tavily are
paid cloud APIs. Each stand-in here is a small aiohttp app that answers only the endpoints our adapters
call, with bodies shaped as the services document them (vLLM's OpenAI-compatible server and its error
object, Ollama's ``/api/tags`` and ``/v1`` API, Brave's ``/res/v1/web/search``, Tavily's ``/search``).
It records every request (method, path, query, headers, JSON body) so a test can assert what the
adapter sent, and can be told to fail the next requests (a status and body, or a stall) to check how
each failure reaches the client.

The stand-in runs its own event loop in a thread, so synchronous tests (the ``openai`` SDK against a
real ``underlay run``) can use it.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

Handler = Callable[["Seen"], Awaitable[web.StreamResponse]]


@dataclass
class Seen:
    """One request as the stand-in received it."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: Any
    request: web.Request | None = field(default=None, repr=False)


@dataclass
class Failure:
    status: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0


class StandIn:
    """A loopback HTTP server: ``routes`` maps ``(method, path)`` to a handler of :class:`Seen`."""

    def __init__(self, name: str, routes: dict[tuple[str, str], Handler]) -> None:
        self.name = name
        self.routes = routes
        self.seen: list[Seen] = []
        self.failures: dict[str, list[Failure]] = {}
        self.root = ""
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=f"standin-{name}", daemon=True)
        self._runner: web.AppRunner | None = None

    def start(self) -> StandIn:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(port), self._loop).result(10)
        self.root = f"http://127.0.0.1:{port}"
        return self

    async def _start(self, port: int) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._dispatch)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", port).start()

    def stop(self) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def fail(self, path: str, *failures: Failure) -> None:
        """The next requests to ``path`` get these failures, one each, in order."""
        self.failures[path] = list(failures)

    def requests_to(self, path: str) -> list[Seen]:
        return [s for s in self.seen if s.path == path]

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode("utf-8", "replace")
        seen = Seen(
            request.method,
            request.path,
            dict(request.query),
            {k.lower(): v for k, v in request.headers.items()},
            body,
            request,
        )
        self.seen.append(seen)
        queued = self.failures.get(request.path)
        if queued:
            failure = queued.pop(0)
            if failure.delay:
                await asyncio.sleep(failure.delay)
            return web.json_response(failure.body, status=failure.status, headers=failure.headers)
        handler = self.routes.get((request.method, request.path))
        if handler is None:
            return web.json_response({"detail": "Not Found"}, status=404)
        return await handler(seen)


async def sse(seen: Seen, events: list[dict[str, Any]]) -> web.StreamResponse:
    """Server-sent events as OpenAI-compatible servers send them: ``data: {json}`` and ``data: [DONE]``."""
    assert seen.request is not None
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    await response.prepare(seen.request)
    for event in events:
        await response.write(f"data: {json.dumps(event)}\n\n".encode())
    await response.write(b"data: [DONE]\n\n")
    await response.write_eof()
    return response
