"""The HTTP client under the OpenAI-compatible adapters: an aiohttp session, its failures sorted, SSE lines.

Why aiohttp rather than httpx: Underlay is a proxy, so the upstream client sits on every request's hot
path. Against a loopback upstream that answers at once, one httpx request cost about 0.5 ms of CPU and,
with 64 requests in flight, httpcore's pool bookkeeping made that several milliseconds each; aiohttp's
C-accelerated parser and pool cost about 0.1 ms either way (``bench/overhead.py`` shows the effect).

What this module owns is only the transport: the adapter base
(:mod:`underlay.providers.utils.openai_compat`) decides what is retried and which typed error each
:class:`Failure` becomes.
"""

from __future__ import annotations

import asyncio
import enum
import os
import ssl
import urllib.request
from collections import deque
from urllib.parse import urlsplit

import aiohttp


class Failure(enum.Enum):
    """What went wrong before a response was complete, in the terms the retry policy cares about."""

    CONNECT = "connect"  # refused, unresolvable, TLS failure: nothing was sent
    CONNECT_TIMEOUT = "connect_timeout"  # no connection within the connect timeout: nothing was sent
    POOL_TIMEOUT = "pool_timeout"  # every pooled connection stayed busy
    READ_TIMEOUT = "read_timeout"  # connected and sent, but the upstream went quiet
    DROPPED = "dropped"  # the connection closed or reset under us (often a stale keep-alive one)
    OTHER = "other"  # a malformed response and anything else


def new_session(
    connect_timeout: float, read_timeout: float, base_url: str, max_connections: int = 256
) -> aiohttp.ClientSession:
    """A pooled session: ``read_timeout`` bounds each wait for data (and a wait for a free connection),
    ``connect_timeout`` opening a socket. Redirects are never followed (see the adapter's 3xx error)."""
    ssl_context: ssl.SSLContext | bool = _ssl_context() if base_url.startswith("https:") else True
    connector = aiohttp.TCPConnector(
        limit=max_connections, limit_per_host=0, keepalive_timeout=30, ttl_dns_cache=300, ssl=ssl_context
    )
    timeout = aiohttp.ClientTimeout(
        total=None, connect=read_timeout, sock_connect=connect_timeout, sock_read=read_timeout
    )
    return aiohttp.ClientSession(connector=connector, timeout=timeout, raise_for_status=False, trust_env=False)


def _ssl_context() -> ssl.SSLContext:
    """Verify certificates as httpx (used here before) did: against ``SSL_CERT_FILE`` / ``SSL_CERT_DIR``
    when set, else certifi's bundle, so an upstream trusted before is still trusted."""
    cafile, capath = os.environ.get("SSL_CERT_FILE"), os.environ.get("SSL_CERT_DIR")
    if cafile or capath:
        return ssl.create_default_context(cafile=cafile or None, capath=capath or None)
    try:
        import certifi
    except ImportError:
        return ssl.create_default_context()
    return ssl.create_default_context(cafile=certifi.where())


def env_proxy(url: str) -> str | None:
    """The proxy the environment (``HTTP_PROXY``, ``HTTPS_PROXY``, ``ALL_PROXY``, ``NO_PROXY``) names
    for ``url``, looked up once per provider rather than on every request."""
    parts = urlsplit(url)
    proxies = urllib.request.getproxies_environment()
    proxy = proxies.get(parts.scheme) or proxies.get("all")
    if not proxy or urllib.request.proxy_bypass_environment(parts.hostname or "", proxies):
        return None
    return proxy


def classify(exc: BaseException, waited: float, pool_timeout: float) -> Failure:
    """Sort an exception raised while sending a request or reading its answer.

    aiohttp raises the same ``ConnectionTimeoutError`` for a slow connect and for a long wait for a
    pooled connection; the pool wait is bounded by ``pool_timeout`` (the read timeout), so a failure
    that took that long was the pool.
    """
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return Failure.POOL_TIMEOUT if waited >= pool_timeout * 0.99 else Failure.CONNECT_TIMEOUT
    if isinstance(exc, aiohttp.ServerTimeoutError | asyncio.TimeoutError):
        return Failure.READ_TIMEOUT
    if isinstance(exc, aiohttp.ClientConnectorError):
        return Failure.CONNECT
    if isinstance(exc, aiohttp.ServerDisconnectedError | aiohttp.ClientOSError | ConnectionError):
        return Failure.DROPPED
    return Failure.OTHER


def describe(exc: BaseException) -> str:
    """A short reason for a transport error (the exception's message, or its class name)."""
    text = str(exc).strip()
    return text or type(exc).__name__


class LineReader:
    """Splits a response body into text lines at ``\\n``, ``\\r\\n`` or ``\\r``, as SSE allows.

    Whole chunks are split at once and the lines queued, so a burst of events costs one read; bytes
    are decoded per complete line, so a multi-byte character split across reads is never broken.
    """

    __slots__ = ("_content", "_lines", "_pending", "_eof")

    def __init__(self, content: aiohttp.StreamReader) -> None:
        self._content = content
        self._lines: deque[str] = deque()
        self._pending = b""
        self._eof = False

    async def readline(self) -> str | None:
        """The next line without its ending, or None at the end of the body."""
        while not self._lines:
            if self._eof:
                return None
            await self._fill()
        return self._lines.popleft()

    async def _fill(self) -> None:
        chunk = await self._content.readany()
        if not chunk:
            self._eof = True
            tail = self._pending
            self._pending = b""
            if tail:
                text = tail.replace(b"\r\n", b"\n").replace(b"\r", b"\n").decode("utf-8", "replace")
                self._lines.extend(text.split("\n"))
                if tail.endswith(b"\r"):  # only a held-back CR can end the tail: it ends the last line
                    self._lines.pop()
            return
        buffer = self._pending + chunk if self._pending else chunk
        if b"\r" in buffer:
            # Hold back a trailing CR: it may be the first half of a CRLF split across reads.
            held = b"\r" if buffer.endswith(b"\r") else b""
            if held:
                buffer = buffer[:-1]
            buffer = buffer.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        else:
            held = b""
        end = buffer.rfind(b"\n")
        if end < 0:
            self._pending = buffer + held
            return
        self._pending = buffer[end + 1 :] + held
        self._lines.extend(buffer[:end].decode("utf-8", "replace").split("\n"))

    async def drain(self) -> None:
        """Read to the end of the body, discarding it."""
        self._lines.clear()
        while not self._eof:
            if not await self._content.readany():
                self._eof = True
