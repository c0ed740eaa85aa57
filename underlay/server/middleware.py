"""Pure-ASGI middleware: request ids, per-request provider data, and the request body size limit.

Pure ASGI (not BaseHTTPMiddleware) so context variables set here reach the endpoint and its streams,
and so the hot path costs a few attribute lookups, not an extra task.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Sequence
from typing import Any

from underlay.api.context import PROVIDER_DATA_HEADER, provider_data_var, request_id_var
from underlay.api.errors import InvalidRequestError, PayloadTooLargeError, UnderlayError

_PROVIDER_DATA = PROVIDER_DATA_HEADER.lower().encode()


async def send_envelope(send: Any, exc: UnderlayError, headers: Sequence[tuple[bytes, bytes]] = ()) -> None:
    """Answer from a middleware layer: the error's envelope, its own headers, then ``headers``.

    The layers inside the request context (auth, route policy, quotas) use it too; the request-context
    layer adds ``x-request-id`` to whatever they send.
    """
    body = json.dumps(exc.to_envelope()).encode()
    await send(
        {
            "type": "http.response.start",
            "status": exc.status_code,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *((k.lower().encode(), v.encode()) for k, v in (exc.headers or {}).items()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def _send_error(send: Any, exc: UnderlayError, request_id: str) -> None:
    await send_envelope(send, exc, [(b"x-request-id", request_id.encode())])


class RequestContextMiddleware:
    def __init__(
        self,
        app: Any,
        max_request_bytes: int,
        route_limits: dict[tuple[str, str], tuple[int, str]] | None = None,
    ) -> None:
        self.app = app
        self.max_request_bytes = max_request_bytes
        # (method, exact path) -> (limit, the run-config setting that sets it), e.g. file uploads.
        self.route_limits = route_limits or {}

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = "req_" + secrets.token_hex(8)
        provider_data: dict[str, Any] | None = None
        limit, setting = self.max_request_bytes, "server.max_request_bytes"
        if self.route_limits:
            limit, setting = self.route_limits.get((scope["method"], scope["path"]), (limit, setting))
        for name, value in scope["headers"]:
            if name == b"content-length":
                if value.isdigit() and int(value) > limit:
                    await _send_error(send, _too_large(limit, setting), request_id)
                    return
            elif name == _PROVIDER_DATA:
                try:
                    provider_data = json.loads(value)
                    if not isinstance(provider_data, dict):
                        raise ValueError("not an object")
                except ValueError:
                    await _send_error(
                        send,
                        InvalidRequestError(
                            f"Header {PROVIDER_DATA_HEADER} must be a JSON object, e.g. "
                            '{"openai_api_key": "sk-..."}.',
                            param=PROVIDER_DATA_HEADER,
                        ),
                        request_id,
                    )
                    return
        request_id_var.set(request_id)
        provider_data_var.set(provider_data)
        received = 0

        async def counting_receive() -> dict[str, Any]:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise _too_large(limit, setting)
            return message

        async def send_with_id(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), (b"x-request-id", request_id.encode())]
            await send(message)

        await self.app(scope, counting_receive, send_with_id)


def _too_large(limit: int, setting: str = "server.max_request_bytes") -> PayloadTooLargeError:
    return PayloadTooLargeError(
        f"The request body is larger than the server's limit of {limit} bytes ({setting} in the run config).",
        code="request_too_large",
    )
