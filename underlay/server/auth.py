"""Installs the auth layer on the ASGI app (see create_app for the order of layers).

A pure-ASGI middleware (no BaseHTTPMiddleware task per request) so the principal it sets in
``principal_var`` is seen by the endpoint, its streams, the stores and the jobs it enqueues, and so
the added cost is one header scan plus the provider's own work.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from fastapi import FastAPI

from underlay.api.errors import ServiceUnavailableError, UnauthenticatedError, UnderlayError
from underlay.core.auth.authenticator import Authenticator
from underlay.core.auth.base import AuthRequest
from underlay.core.config import RunConfig
from underlay.core.identity import principal_var
from underlay.server import console
from underlay.server.middleware import send_envelope

log = logging.getLogger("underlay.auth")


class AuthMiddleware:
    def __init__(self, app: Any, authenticator: Authenticator, public_paths: list[str], realm: str) -> None:
        self.app = app
        self.authenticator = authenticator
        self._exact = frozenset(p for p in public_paths if not p.endswith("*"))
        self._prefixes = tuple(p[:-1] for p in public_paths if p.endswith("*"))
        self._challenge = f'Bearer realm="{realm}"'
        self._warming: asyncio.Task[None] | None = None

    def _is_public(self, scope: dict[str, Any]) -> bool:
        path = scope["path"]
        if path in self._exact or (self._prefixes and path.startswith(self._prefixes)):
            return True
        if scope.get("method") == "OPTIONS":  # a CORS preflight carries no credentials by design
            names = {name for name, _ in scope["headers"]}
            return b"origin" in names and b"access-control-request-method" in names
        return False

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        kind = scope["type"]
        if kind == "lifespan":
            await self.app(scope, receive, self._lifespan_send(send))
            return
        if kind not in ("http", "websocket") or self._is_public(scope):
            await self.app(scope, receive, send)
            return
        try:
            principal = await self.authenticator.authenticate(AuthRequest.from_headers(scope["headers"]))
        except Exception as exc:
            if not isinstance(exc, UnderlayError):  # a provider bug must not become a traceback for the client
                log.exception("auth: provider failure on %s", scope["path"])
                exc = UnderlayError("Authentication failed on the server; see its log.")
            self._log(scope, exc)
            if kind == "websocket":  # closing before accept refuses the handshake
                await send({"type": "websocket.close", "code": 1008, "reason": exc.error_type})
            else:
                await self._send_error(send, exc)
            return
        scope.setdefault("state", {})["principal"] = principal
        token = principal_var.set(principal)
        try:
            await self.app(scope, receive, send)
        finally:
            principal_var.reset(token)

    def _lifespan_send(self, send: Any) -> Any:
        """Fetch what providers can fetch ahead (JWKS) once the app is up; close their clients at shutdown."""

        async def wrapped(message: dict[str, Any]) -> None:
            if message["type"] == "lifespan.startup.complete":
                self._warming = asyncio.create_task(self.authenticator.warm())
            elif message["type"] in ("lifespan.shutdown.complete", "lifespan.shutdown.failed"):
                if self._warming is not None:
                    self._warming.cancel()
                await self.authenticator.aclose()
            await send(message)

        return wrapped

    def _log(self, scope: dict[str, Any], exc: UnderlayError) -> None:
        """One line per refusal: the code for a 401 (frequent, and the client got the details), the
        message for a 503 (it names the identity provider that is down). Neither ever holds the token."""
        if isinstance(exc, ServiceUnavailableError):
            log.warning("auth: %s refused (503): %s", scope["path"], exc.message)
        else:
            log.info("auth: %s %s refused (%d %s)", scope.get("method", "WS"), scope["path"], exc.status_code, exc.code)

    async def _send_error(self, send: Any, exc: UnderlayError) -> None:
        headers: list[tuple[bytes, bytes]] = []
        if isinstance(exc, UnauthenticatedError):
            challenge = self._challenge
            if exc.code == "invalid_token":
                challenge += ', error="invalid_token"'
            headers.append((b"www-authenticate", challenge.encode()))
        elif isinstance(exc, ServiceUnavailableError):
            headers.append((b"retry-after", b"5"))
        await send_envelope(send, exc, headers)


def install(app: FastAPI, config: RunConfig) -> None:
    """Add this layer's middleware and routes to ``app`` when the run config asks for them."""
    auth = config.server.auth
    if auth is None:
        return
    app.add_middleware(
        AuthMiddleware,  # type: ignore[arg-type]
        authenticator=Authenticator(auth),
        public_paths=[*auth.public_paths, *console.public_paths(config)],  # the console's login page
        realm=auth.realm,
    )
