"""A pool of live MCP client sessions, one per server and credential, reconnected when they die.

Why a pool: an MCP session costs a handshake (and for stdio a process start), so agents calling a
tool a few times a turn should not pay it per call. Why one per (server, headers): a server may tie a
session to the credential that opened it, so two callers with different tokens never share one.

Why an owner task per session: the SDK's transports and ``ClientSession`` are anyio context managers
that must be entered and left in the same task, and their background tasks live in that task's task
group. Each session is therefore opened, held and closed by its own task; callers in any request task
send requests on it (the session correlates replies). When the transport dies (server killed, stream
cut) the owner task ends and the entry is marked dead; the next caller opens a fresh one.

Idle sessions are closed after ``idle_timeout`` by a reaper task (so an idle stdio server's process
ends too), and the pool never holds more than ``max_sessions``, closing the least recently used idle
one first. :meth:`SessionPool.close_server` closes every session of one server at once (its tool group
was deleted), which also ends the session on the server (the streamable-HTTP client sends DELETE).

Why a backoff on failed opens: every caller that finds no live session opens one, so a server that is
down (or a group that points back at this server and times out) would be dialled by every request.
After two failed opens in a row a key waits (0.5 s, doubling, at most ``max_backoff``) before the next
try, and callers in the meantime get the last failure at once, with the attempt count.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx2
from mcp import ClientSession, StdioServerParameters, stdio_client
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client
from mcp_types import Implementation

from underlay.api.tool_runtime import McpConnection
from underlay.providers.remote.tool_runtime.model_context_protocol.redaction import mask

log = logging.getLogger("underlay.tool_runtime.mcp")

PoolKey = tuple[Any, ...]


class SessionOpenError(Exception):
    """Opening a session failed; ``cause`` says why, ``http_error`` is the server's last HTTP error, if any.

    ``attempts`` counts the failed opens in a row and ``retry_in`` is set (seconds) when this call was
    refused without dialling because the key is backing off.
    """

    def __init__(
        self,
        cause: BaseException,
        http_error: tuple[int, str] | None,
        *,
        attempts: int = 1,
        retry_in: float | None = None,
    ) -> None:
        super().__init__(str(cause))
        self.cause = cause
        self.http_error = http_error
        self.attempts = attempts
        self.retry_in = retry_in


@dataclass
class _Failures:
    name: str
    count: int
    retry_at: float
    error: SessionOpenError


def pool_key(connection: McpConnection, auth_key: str | None = None) -> PoolKey:
    """Sessions are shared only between calls that would open an identical connection (same headers,
    same OAuth identity)."""
    headers = tuple(sorted((k.lower(), v) for k, v in connection.headers.items()))
    if connection.transport == "stdio":
        stdio = connection.stdio
        assert stdio is not None
        return ("stdio", stdio.command, tuple(stdio.args), tuple(sorted(stdio.env.items())), stdio.cwd)
    return (connection.transport, connection.uri, headers, auth_key)


@dataclass
class PooledSession:
    key: PoolKey
    connection: McpConnection
    ready: asyncio.Future[ClientSession]
    auth: httpx2.Auth | None = None
    """OAuth for this session's HTTP requests (the SDK's provider: discovery, tokens, refresh)."""
    elicit: Any = None
    """``elicit(entry, context, params)`` answers the server's elicitation requests, if set."""
    calls: list[Any] = field(default_factory=list)
    """The tool calls in flight on this session (what an elicitation request is attributed to)."""
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None
    dead: bool = False
    users: int = 0
    last_used: float = field(default_factory=time.monotonic)
    last_http_error: tuple[int, str] | None = None
    """The last HTTP error status the server answered with (and a bit of its body), for messages."""

    @property
    def session(self) -> ClientSession:
        return self.ready.result()


class SessionPool:
    def __init__(
        self,
        *,
        connect_timeout: float,
        sse_read_timeout: float,
        idle_timeout: float,
        max_sessions: int,
        client_info: Implementation,
        max_backoff: float = 30.0,
    ) -> None:
        self.max_backoff = max_backoff
        self._failures: dict[PoolKey, _Failures] = {}
        self.connect_timeout = connect_timeout
        self.sse_read_timeout = sse_read_timeout
        self.idle_timeout = idle_timeout
        self.max_sessions = max_sessions
        self.client_info = client_info
        self._entries: dict[PoolKey, PooledSession] = {}
        self._closing = False
        self._reaper: asyncio.Task[None] | None = None

    # -- public -----------------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def lease(
        self,
        connection: McpConnection,
        *,
        auth: httpx2.Auth | None = None,
        auth_key: str | None = None,
        elicit: Any = None,
    ) -> AsyncIterator[tuple[PooledSession, bool]]:
        """A live session for ``connection`` and whether it was opened just now (fresh).

        ``auth``/``auth_key``: the OAuth provider a new session's HTTP client uses and the identity it
        stands for (part of the pool key, so principals never share a session). ``elicit``: the
        elicitation callback a new session is opened with.

        Raises :class:`SessionOpenError` when the connection cannot be opened (connect errors, HTTP
        errors, a handshake slower than ``connect_timeout``); the entry is then dropped so the next
        call tries again (after a backoff once it failed twice in a row).
        """
        key = pool_key(connection, auth_key)
        failures = self._failures.get(key)
        if failures is not None and key not in self._entries:
            wait = failures.retry_at - time.monotonic()
            if wait > 0:
                previous = failures.error
                raise SessionOpenError(
                    previous.cause, previous.http_error, attempts=failures.count, retry_in=wait
                ) from None
        entry, fresh = self._entry_for(connection, key, auth, elicit)
        entry.users += 1
        try:
            try:
                ready = entry.ready
                if not ready.done() or ready.cancelled() or ready.exception() is not None:
                    # Only a session still opening is waited for; a live one is used at once (a
                    # wait_for costs a task and a loop iteration on every call).
                    await asyncio.wait_for(asyncio.shield(ready), self.connect_timeout)
            except asyncio.CancelledError:
                if entry.users == 1:
                    await self.discard(entry)
                raise
            except Exception as exc:
                await self.discard(entry)
                raise self._failed(key, connection.name, SessionOpenError(exc, entry.last_http_error)) from exc
            self._failures.pop(key, None)
            yield entry, fresh
        finally:
            entry.users -= 1
            entry.last_used = time.monotonic()

    async def discard(self, entry: PooledSession) -> None:
        """Close ``entry`` and forget it (a dead or stale session)."""
        entry.dead = True
        if self._entries.get(entry.key) is entry:
            del self._entries[entry.key]
        await self._close(entry)

    def _failed(self, key: PoolKey, name: str, error: SessionOpenError) -> SessionOpenError:
        """Count a failed open; from the second in a row the key backs off (0.5 s doubling, capped)."""
        previous = self._failures.get(key)
        count = previous.count + 1 if previous is not None else 1
        delay = 0.0 if count < 2 else min(0.5 * 2 ** (count - 2), self.max_backoff)
        self._failures[key] = _Failures(name=name, count=count, retry_at=time.monotonic() + delay, error=error)
        error.attempts = count
        while len(self._failures) > 4 * self.max_sessions:  # a bounded memory of failing servers
            del self._failures[next(iter(self._failures))]
        if count > 1:
            log.info("MCP server %s: %d failed connection attempts in a row; next in %.1fs", name, count, delay)
        return error

    def forget_failures(self, name: str) -> None:
        """Count no failures for the server called ``name`` (the open stopped for a person, not an outage)."""
        for key in [k for k, f in self._failures.items() if f.name == name]:
            del self._failures[key]

    async def close_server(self, name: str) -> int:
        """Close every session opened for the server called ``name`` (a deleted tool group) and forget
        its failures; returns how many sessions were closed."""
        entries = [e for e in self._entries.values() if e.connection.name == name]
        for entry in entries:
            self._entries.pop(entry.key, None)
        self.forget_failures(name)
        await asyncio.gather(*(self._close(e) for e in entries), return_exceptions=True)
        return len(entries)

    async def close(self) -> None:
        self._closing = True
        if self._reaper is not None:
            self._reaper.cancel()
        entries = list(self._entries.values())
        self._entries.clear()
        await asyncio.gather(*(self._close(e) for e in entries), return_exceptions=True)

    def __len__(self) -> int:
        return len(self._entries)

    # -- internals --------------------------------------------------------------------------------

    def _entry_for(
        self, connection: McpConnection, key: PoolKey, auth: httpx2.Auth | None, elicit: Any
    ) -> tuple[PooledSession, bool]:
        if self._closing:
            raise RuntimeError("the MCP session pool is shut down")
        if self._reaper is None or self._reaper.done():
            self._reaper = asyncio.create_task(self._reap_idle(), name="mcp-session-reaper")
        entry = self._entries.get(key)
        if entry is not None and not entry.dead and not (entry.ready.done() and entry.ready.exception()):
            return entry, False
        if entry is not None:
            self._entries.pop(key, None)
            self._spawn_close(entry)
        self._evict()
        loop = asyncio.get_running_loop()
        entry = PooledSession(key=key, connection=connection, ready=loop.create_future(), auth=auth, elicit=elicit)
        # The future's exception is read by the waiters; mark it retrieved so an abandoned one never warns.
        entry.ready.add_done_callback(lambda f: f.cancelled() or f.exception())
        entry.task = asyncio.create_task(self._own(entry), name=f"mcp-session {connection.name}")
        self._entries[key] = entry
        return entry, True

    def _evict(self) -> None:
        """Close sessions idle past ``idle_timeout``, then the least recently used idle ones over the cap."""
        now = time.monotonic()
        for key, entry in list(self._entries.items()):
            if entry.dead or (entry.users == 0 and now - entry.last_used > self.idle_timeout):
                del self._entries[key]
                self._spawn_close(entry)
        idle = sorted((e for e in self._entries.values() if e.users == 0), key=lambda e: e.last_used)
        while len(self._entries) >= self.max_sessions and idle:
            entry = idle.pop(0)
            del self._entries[entry.key]
            self._spawn_close(entry)

    async def _reap_idle(self) -> None:
        """Close sessions idle past ``idle_timeout``, checking a few times per timeout."""
        interval = min(max(self.idle_timeout / 4, 0.05), 60.0)
        while not self._closing:
            await asyncio.sleep(interval)
            now = time.monotonic()
            for key, entry in list(self._entries.items()):
                if entry.dead or (entry.users == 0 and now - entry.last_used > self.idle_timeout):
                    del self._entries[key]
                    self._spawn_close(entry)

    def _spawn_close(self, entry: PooledSession) -> None:
        task = asyncio.create_task(self._close(entry))
        task.add_done_callback(lambda t: t.cancelled() or t.exception())

    async def _close(self, entry: PooledSession) -> None:
        entry.dead = True
        entry.stop.set()
        task = entry.task
        if task is None or task.done():
            return
        try:
            await asyncio.wait_for(asyncio.shield(task), 5)
        except (TimeoutError, asyncio.CancelledError, Exception):
            task.cancel()
            with contextlib.suppress(BaseException):
                await task

    async def _own(self, entry: PooledSession) -> None:
        """Open the connection and session, hold them until told to stop or the transport dies."""
        try:
            async with contextlib.AsyncExitStack() as stack:
                read, write = await stack.enter_async_context(self._transport(entry))
                session = await stack.enter_async_context(
                    ClientSession(
                        read,
                        write,
                        client_info=self.client_info,
                        elicitation_callback=functools.partial(entry.elicit, entry) if entry.elicit else None,
                    )
                )
                await session.initialize()
                entry.ready.set_result(session)
                await entry.stop.wait()
        except BaseException as exc:
            if not entry.ready.done():
                if isinstance(exc, asyncio.CancelledError):
                    entry.ready.set_exception(ConnectionError("the MCP connection was closed while opening"))
                else:
                    entry.ready.set_exception(exc)
            elif not entry.stop.is_set():
                log.info("MCP session to %s ended: %s", entry.connection.name, _describe(exc))
            if isinstance(exc, asyncio.CancelledError):
                raise
        finally:
            entry.dead = True
            if not entry.ready.done():
                entry.ready.set_exception(ConnectionError("the MCP connection closed during the handshake"))

    def _transport(self, entry: PooledSession) -> contextlib.AbstractAsyncContextManager[Any]:
        connection = entry.connection
        if connection.transport == "stdio":
            assert connection.stdio is not None
            params = StdioServerParameters(
                command=connection.stdio.command,
                args=connection.stdio.args,
                env=connection.stdio.env or None,
                cwd=connection.stdio.cwd,
            )
            return stdio_client(params, errlog=sys.stderr)
        assert connection.uri is not None

        async def remember_errors(response: httpx2.Response) -> None:
            if response.status_code < 400:
                # An OAuth challenge answered by a retry is no error; only the latest failure counts.
                if response.request.method == "POST":
                    entry.last_http_error = None
                return
            if response.status_code >= 400:
                try:
                    # Masked before the cut, so a credential the server echoes is never shown in part.
                    body = mask((await response.aread()).decode(errors="replace"), entry.connection)[:200]
                except Exception:
                    body = ""
                entry.last_http_error = (response.status_code, body)

        hooks = {"response": [remember_errors]}
        timeout = httpx2.Timeout(self.connect_timeout, read=self.sse_read_timeout)
        if connection.transport == "sse":

            def factory(
                headers: dict[str, str] | None = None,
                timeout: httpx2.Timeout | None = None,
                auth: httpx2.Auth | None = None,
            ) -> httpx2.AsyncClient:
                return httpx2.AsyncClient(headers=headers, timeout=timeout, auth=auth, event_hooks=hooks)

            return sse_client(
                connection.uri,
                headers=dict(connection.headers),
                timeout=self.connect_timeout,
                sse_read_timeout=self.sse_read_timeout,
                httpx_client_factory=factory,
                auth=entry.auth,
            )
        return _streamable_http(connection.uri, connection.headers, timeout, hooks, entry.auth)


@contextlib.asynccontextmanager
async def _streamable_http(
    uri: str, headers: dict[str, str], limits: httpx2.Timeout, hooks: dict[str, Any], auth: httpx2.Auth | None
) -> AsyncIterator[Any]:
    """The streamable-HTTP transport on an HTTP client we own (headers, timeouts, error hook, OAuth)."""
    async with (
        httpx2.AsyncClient(headers=headers, timeout=limits, event_hooks=hooks, auth=auth) as client,
        streamable_http_client(uri, http_client=client) as streams,
    ):
        yield streams


def _describe(exc: BaseException) -> str:
    leaf = root_cause(exc)
    return f"{type(leaf).__name__}: {leaf}"


def root_cause(exc: BaseException) -> BaseException:
    """The first meaningful leaf of an exception group (anyio wraps transport failures in groups)."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        inner = [e for e in exc.exceptions if not isinstance(e, asyncio.CancelledError)]
        exc = (inner or list(exc.exceptions))[0]
    return exc
