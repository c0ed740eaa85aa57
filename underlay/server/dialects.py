"""Routes that speak another vendor's wire protocol (:class:`~underlay.api.routes.WireDialect`).

Why one outermost layer: an error on such a route may come from any layer (the body limit, auth,
quotas, validation, the router), and every one of them writes OpenAI's envelope. Rather than teach
each layer every dialect, this layer sits outside them all and, for a dialect's routes only:

- refuses a request whose headers the dialect rejects (``anthropic-version``), in the dialect's shape;
- hands the key from the dialect's key header (``x-api-key``) to the auth layer as the bearer token it
  reads, when no ``Authorization`` header came: the auth layer still decides, exactly as for a bearer;
- rewrites an error answer (JSON, status ≥ 400) from OpenAI's envelope into the dialect's body.

Successful answers and streams pass untouched (a stream's own errors are shaped in :mod:`sse`).
"""

from __future__ import annotations

import json
from typing import Any

from underlay.api.routes import WireDialect
from underlay.shared.redact import MAX_TEXT

_MAX_ERROR_BODY = 256 * 1024
"""An error body larger than this is not one of our envelopes: it passes as it is."""


def dialect_error(dialect: WireDialect, status: int, error_type: str, message: str) -> tuple[int, bytes]:
    """The dialect's status and JSON body for one of our errors."""
    if len(message) > MAX_TEXT:
        message = f"{message[:MAX_TEXT]}… [cut: {len(message)} characters in all]"
    new_status, body = dialect.error_body(status, error_type, message)
    return new_status, json.dumps(body).encode()


class DialectMiddleware:
    def __init__(self, app: Any, dialects: dict[str, WireDialect]) -> None:
        self.app = app
        self.dialects = dialects
        """Exact path → the dialect its routes speak."""

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        dialect = self.dialects.get(scope["path"]) if scope["type"] == "http" else None
        if dialect is None:
            await self.app(scope, receive, send)
            return
        headers: list[tuple[bytes, bytes]] = scope["headers"]
        if dialect.check_headers is not None:
            seen = {name.decode("latin-1"): value.decode("latin-1") for name, value in headers}
            problem = dialect.check_headers(seen)
            if problem is not None:
                status, body = dialect_error(dialect, 400, "invalid_request_error", problem)
                await _send_body(send, status, body, [])
                return
        if dialect.api_key_header is not None:
            scope = {**scope, "headers": _with_bearer(headers, dialect.api_key_header.encode())}
        await self.app(scope, receive, _ErrorReshaper(send, dialect))


def _with_bearer(headers: list[tuple[bytes, bytes]], key_header: bytes) -> list[tuple[bytes, bytes]]:
    """``headers`` plus ``Authorization: Bearer <key>`` when only the key header carries a credential."""
    key = None
    for name, value in headers:
        if name == b"authorization":
            return headers
        if name == key_header and key is None:
            key = value.strip()
    if not key:
        return headers
    return [*headers, (b"authorization", b"Bearer " + key)]


async def _send_body(send: Any, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    kept = [(k, v) for k, v in headers if k not in (b"content-length", b"content-type")]
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *kept],
        }
    )
    await send({"type": "http.response.body", "body": body})


class _ErrorReshaper:
    """The ``send`` of a dialect's route: holds back a JSON error answer and sends it reshaped."""

    def __init__(self, send: Any, dialect: WireDialect) -> None:
        self._send = send
        self._dialect = dialect
        self._start: dict[str, Any] | None = None
        self._body = b""

    async def __call__(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        if kind == "http.response.start":
            headers = message.get("headers", [])
            is_json = any(k.lower() == b"content-type" and v.startswith(b"application/json") for k, v in headers)
            if message["status"] >= 400 and is_json:
                self._start = message
                return
        elif kind == "http.response.body" and self._start is not None:
            self._body += message.get("body", b"")
            if len(self._body) > _MAX_ERROR_BODY:
                await self._flush_unchanged(message)
                return
            if not message.get("more_body", False):
                await self._flush()
            return
        await self._send(message)

    async def _flush_unchanged(self, last: dict[str, Any]) -> None:
        start, self._start = self._start, None
        await self._send(start)
        await self._send({**last, "body": self._body})

    async def _flush(self) -> None:
        start, self._start = self._start, None
        assert start is not None
        try:
            error = json.loads(self._body)["error"]
            error_type, text = str(error.get("type") or "api_error"), str(error.get("message") or "")
        except (ValueError, KeyError, TypeError, AttributeError):
            await self._send(start)
            await self._send({"type": "http.response.body", "body": self._body})
            return
        status, body = dialect_error(self._dialect, start["status"], error_type, text)
        await _send_body(self._send, status, body, list(start.get("headers", [])))
