"""Installs the quotas layer: every request but the exempt paths is counted against its subject's budgets.

Pure ASGI, like the other layers, so the usage ledger set here is the one the router fills in while the
endpoint (and its stream) runs. Refusals are sent here, in the OpenAI envelope, with ``Retry-After`` and
the ``x-ratelimit-*`` headers; admitted responses carry the same headers.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from fastapi import FastAPI

from underlay.api.context import request_id_var
from underlay.api.errors import UnderlayError
from underlay.core.config import RunConfig
from underlay.core.identity import ANONYMOUS, current_principal
from underlay.core.quotas.config import QuotaConfig
from underlay.core.quotas.counters import Counters, KVCounters, QuotaBackendError, RedisCounters
from underlay.core.quotas.limiter import QuotaLimiter, Subject
from underlay.core.quotas.usage import UsageLedger, ledger_var
from underlay.server import console
from underlay.server.middleware import send_envelope

log = logging.getLogger("underlay.quotas")

_WARN_EVERY_S = 30.0


class QuotaBackendUnavailableError(UnderlayError):
    status_code = 503
    error_type = "service_unavailable"


def subject_for(scope: dict[str, Any]) -> Subject:
    """The authenticated principal, or the client address when the request is anonymous (auth off)."""
    principal = current_principal()
    if principal.id != ANONYMOUS.id:
        return Subject.principal(principal.id, dict(principal.attributes))
    client = scope.get("client")
    return Subject.client(client[0] if client else "unknown")


class QuotaMiddleware:
    def __init__(self, app: Any, config: QuotaConfig, also_exempt: frozenset[str] = frozenset()) -> None:
        self.app = app
        self.config = config
        self.exempt = frozenset(config.exempt_paths) | also_exempt
        self._limiter: QuotaLimiter | None = None
        self._redis = RedisCounters(config.url) if config.backend == "redis" else None
        self._last_warning = 0.0

    def _get_limiter(self, scope: dict[str, Any]) -> QuotaLimiter:
        if self._limiter is None:
            counters: Counters = self._redis or KVCounters(scope["app"].state.stack.kvstore)
            self._limiter = QuotaLimiter(self.config, counters)
        return self._limiter

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(scope, receive, send)
            return
        if scope["type"] != "http" or scope["path"] in self.exempt or scope["method"] == "OPTIONS":
            await self.app(scope, receive, send)
            return
        limiter = self._get_limiter(scope)
        subject = subject_for(scope)
        try:
            decision = await limiter.admit(subject)
        except QuotaBackendError as exc:
            await self._backend_failed(exc, scope, receive, send)
            return
        headers = decision.headers()
        if decision.refused:
            await send_envelope(send, decision.error(), headers)
            return

        async def send_with_headers(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *headers]
            await send(message)

        ledger = UsageLedger()
        token = ledger_var.set(ledger)
        try:
            await self.app(scope, receive, send_with_headers)
        finally:
            ledger_var.reset(token)
            if ledger.tokens:
                try:
                    await limiter.charge(subject, ledger.tokens)
                except QuotaBackendError as exc:
                    self._warn(f"could not charge {ledger.tokens} tokens to {subject.label}: {exc}")

    async def _backend_failed(self, exc: QuotaBackendError, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if self.config.on_backend_error == "allow":
            self._warn(f"quota counters unreachable, letting requests through unmetered: {exc}")
            await self.app(scope, receive, send)
            return
        self._warn(f"quota counters unreachable, refusing requests: {exc}")
        error = QuotaBackendUnavailableError(
            f"Rate limits cannot be checked: {exc.where} is unreachable ({exc.detail}). "
            "Retry shortly; the operator can restore it or set server.quotas.on_backend_error: allow.",
            code="quota_backend_unavailable",
        )
        await send_envelope(send, error, [(b"retry-after", b"5")])

    def _warn(self, message: str) -> None:
        now = time.monotonic()
        if now - self._last_warning >= _WARN_EVERY_S:
            self._last_warning = now
            log.warning("%s (request %s)", message, request_id_var.get())

    async def _lifespan(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        """Check Redis once the server starts (a warning, not a failure) and close it on shutdown."""

        async def lifespan_receive() -> dict[str, Any]:
            message: dict[str, Any] = await receive()
            if message["type"] == "lifespan.shutdown" and self._redis is not None:
                await self._redis.close()
            return message

        async def lifespan_send(message: dict[str, Any]) -> None:
            if message["type"] == "lifespan.startup.complete" and self._redis is not None:
                try:
                    await self._redis.ping()
                except QuotaBackendError as exc:
                    log.warning("quotas: %s; requests will be %s until it is back", exc, self._fail_mode())
            await send(message)

        await self.app(scope, lifespan_receive, lifespan_send)

    def _fail_mode(self) -> str:
        return "let through unmetered" if self.config.on_backend_error == "allow" else "refused with 503"


def install(app: FastAPI, config: RunConfig) -> None:
    """Add the quota middleware when ``server.quotas`` is configured."""
    if config.server.quotas is not None:
        # The console's own files are exempt as /docs is: a page load is not an API call.
        also_exempt = frozenset(console.served_paths(config))
        app.add_middleware(QuotaMiddleware, config=config.server.quotas, also_exempt=also_exempt)
