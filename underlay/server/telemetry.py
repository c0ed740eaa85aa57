"""Installs the telemetry layer on the ASGI app (see create_app for the order of layers).

The layer opens the route span every router and provider span nests under, counts requests and
times them (streams to their last byte), and serves the Prometheus text at ``telemetry.metrics_path``.
It sits outside auth and quotas, so refused requests (401, 429) are traced and counted too.
Pure ASGI, like the other layers, so the span's context reaches the endpoint and its streams.
"""

from __future__ import annotations

import time
from typing import Any

from fastapi import FastAPI, Request, Response
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from underlay.api.context import request_id_var
from underlay.core.config import RunConfig
from underlay.core.identity import current_principal, principal_var
from underlay.core.telemetry.runtime import TRACER_KEY
from underlay.server import console
from underlay.shared.redact import record_error

_PROPAGATOR = TraceContextTextMapPropagator()
_TRACEPARENT = b"traceparent"
UNMATCHED = "<unmatched>"
"""The route label of requests no route matched, so stray paths cannot blow up metric cardinality."""

MAX_TRACED_PATH = 512
"""Characters of a request path kept in its span's name and ``url.path``: a client can send a path of
tens of kilobytes (an id that long), which would otherwise be stored with every trace of it."""


class TelemetryMiddleware:
    def __init__(self, app: Any, owner: FastAPI, untraced_paths: frozenset[str]) -> None:
        self.app = app
        self.owner = owner  # the FastAPI app, whose state holds the running stack
        self.untraced_paths = untraced_paths

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        stack = getattr(self.owner.state, "stack", None)
        telemetry = getattr(stack, "telemetry", None)
        if telemetry is None:
            await self.app(scope, receive, send)
            return
        method = scope["method"]
        path = scope["path"]
        traced = path not in self.untraced_paths
        shown = path if len(path) <= MAX_TRACED_PATH else path[:MAX_TRACED_PATH] + "…"
        status = 500
        span: Any = None
        token: Any = None
        if traced:
            parent = None
            for name, value in scope["headers"]:
                if name == _TRACEPARENT:  # continue the caller's trace
                    parent = _PROPAGATOR.extract({"traceparent": value.decode("latin-1")})
                    break
            parent = otel_context.set_value(TRACER_KEY, telemetry.tracer, parent)
            span = telemetry.tracer.start_span(
                f"{method} {shown}",
                context=parent,
                kind=SpanKind.SERVER,
                attributes={
                    "underlay.layer": "route",
                    "http.request.method": method,
                    "url.path": shown,
                    "underlay.request_id": request_id_var.get() or "",
                },
            )
            token = otel_context.attach(trace.set_span_in_context(span, parent))
        trace_header: list[tuple[bytes, bytes]] = []
        if span is not None and span.is_recording():
            trace_header = [(b"x-trace-id", format(span.get_span_context().trace_id, "032x").encode())]

        async def send_traced(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                if trace_header:
                    message["headers"] = [*message.get("headers", []), *trace_header]
            await send(message)

        started = time.perf_counter()
        error: BaseException | None = None
        try:
            await self.app(scope, receive, send_traced)
        except BaseException as exc:
            error = exc
            raise
        finally:
            elapsed = time.perf_counter() - started
            matched = scope.get("route")
            route = getattr(matched, "path", None) or UNMATCHED
            labels = {"http.route": route, "http.request.method": method, "http.response.status_code": status}
            telemetry.metrics.requests.add(1, labels)
            telemetry.metrics.request_duration.record(elapsed, labels)
            if span is not None:
                # The auth layer (inside this one) leaves the principal in the scope's state; the span's
                # row is owned by it, so the caller finds its own traces.
                principal = (scope.get("state") or {}).get("principal") or current_principal()
                if span.is_recording():
                    span.update_name(f"{method} {route}")
                    span.set_attributes(
                        {"http.route": route, "http.response.status_code": status, "enduser.id": principal.id}
                    )
                    if error is not None:
                        record_error(span, error)
                    if error is not None or status >= 400:
                        span.set_status(Status(StatusCode.ERROR, f"HTTP {status}"))
                    else:
                        span.set_status(Status(StatusCode.OK))
                owner = principal_var.set(principal)
                try:
                    span.end()
                finally:
                    principal_var.reset(owner)
                otel_context.detach(token)


def install(app: FastAPI, config: RunConfig) -> None:
    """Add this layer's middleware and routes to ``app`` when the run config asks for them."""
    settings = config.telemetry
    if not settings.enabled:
        return
    untraced = {"/v1/health", *console.served_paths(config)}  # page loads are not API calls
    if settings.metrics_path is not None:
        untraced.add(settings.metrics_path)

        @app.get(settings.metrics_path, tags=["platform"], include_in_schema=False)
        async def metrics(request: Request) -> Response:
            telemetry = getattr(request.app.state.stack, "telemetry", None)
            body = telemetry.metrics.prometheus_text() if telemetry is not None else b""
            return Response(body, media_type="text/plain; version=0.0.4; charset=utf-8")

    app.add_middleware(TelemetryMiddleware, owner=app, untraced_paths=frozenset(untraced))
