"""The Telemetry API: read the traces this server recorded (Underlay's own extension, not OpenAI's).

A *trace* is one request (or one background job) seen end to end; its *spans* are the timed steps
inside it: the HTTP route, the router call, the provider call, the upstream HTTP or tool call. A
caller sees only the traces of its own requests. Times are nanoseconds since the Unix epoch, as in
OpenTelemetry, plus a duration in milliseconds.
"""

from __future__ import annotations

from typing import Any, Literal, Protocol

from pydantic import ConfigDict, Field

from underlay.api.base import ApiModel
from underlay.api.pagination import ListQuery
from underlay.api.routes import Handler, Route

__all__ = [
    "ROUTES",
    "Span",
    "SpanList",
    "SpanTree",
    "SpanTreeQuery",
    "TelemetryApi",
    "Trace",
    "TraceList",
    "TraceListQuery",
]


class Span(ApiModel):
    object: Literal["telemetry.span"] = "telemetry.span"
    span_id: str
    trace_id: str
    parent_span_id: str | None = None
    name: str
    kind: str = Field(description="server, client or internal.")
    layer: str | None = Field(default=None, description="route, router, provider or upstream.")
    start_time_ns: int
    end_time_ns: int | None = None
    duration_ms: float | None = None
    status: Literal["ok", "error", "unset"] = "unset"
    status_message: str | None = None
    attributes: dict[str, Any] = Field(default_factory=dict)
    events: list[dict[str, Any]] = Field(default_factory=list)


class Trace(ApiModel):
    """A trace summarised by its root span (the HTTP route, for requests)."""

    object: Literal["telemetry.trace"] = "telemetry.trace"
    id: str = Field(description="The trace id (32 hex digits).")
    root_span_id: str
    name: str
    route: str | None = None
    http_status: int | None = None
    status: Literal["ok", "error", "unset"] = "unset"
    request_id: str | None = None
    principal: str | None = None
    model: str | None = Field(
        default=None, description="The model the request named (gen_ai.request.model of its outermost router call)."
    )
    start_time_ns: int
    end_time_ns: int | None = None
    duration_ms: float | None = None


class TraceList(ApiModel):
    object: Literal["list"] = "list"
    data: list[Trace]
    first_id: str | None = None
    last_id: str | None = None
    has_more: bool = False


class SpanList(ApiModel):
    object: Literal["list"] = "list"
    data: list[Span]


class SpanTree(ApiModel):
    """A span with its descendants nested under ``children``, in start order."""

    span: Span
    children: list[SpanTree] = Field(default_factory=list)


class TraceListQuery(ListQuery):
    model_config = ConfigDict(extra="forbid")

    start_time: float | None = Field(default=None, ge=0, description="Traces that began at or after (epoch s).")
    end_time: float | None = Field(default=None, ge=0, description="Traces that began at or before (epoch s).")
    principal: str | None = Field(default=None, description="Only this principal's traces.")
    route: str | None = Field(default=None, description="Route template, e.g. /v1/chat/completions.")
    model: str | None = Field(default=None, description="Only traces of requests that named this model.")
    status: Literal["ok", "error", "unset"] | None = Field(default=None, description="error: HTTP 4xx/5xx.")
    http_status: int | None = Field(default=None, ge=100, le=599)


class SpanTreeQuery(ApiModel):
    model_config = ConfigDict(extra="forbid")

    max_depth: int | None = Field(default=None, ge=0, le=100, description="Levels below the span to include.")


class TelemetryApi(Protocol):
    """What the telemetry router serves: one method per route in ``ROUTES``.

    The route table names these methods, so a missing or misspelled handler fails the type check;
    :class:`underlay.core.routers.telemetry.TelemetryRouter` implements it.
    """

    async def list_traces(self, query: TraceListQuery) -> TraceList: ...

    async def get_trace(self, trace_id: str) -> Trace: ...

    async def get_trace_spans(self, trace_id: str) -> SpanList: ...

    async def get_span_tree(self, span_id: str, query: SpanTreeQuery | None = None) -> SpanTree: ...


def _route(method: str, path: str, handler: Handler, summary: str, **kwargs: Any) -> Route:
    return Route(method, path, handler, summary=summary, tags=("telemetry",), **kwargs)


ROUTES: list[Route] = [
    _route(
        "GET", "/v1/telemetry/traces", TelemetryApi.list_traces, "List traces", query=TraceListQuery, response=TraceList
    ),
    _route("GET", "/v1/telemetry/traces/{trace_id}", TelemetryApi.get_trace, "Retrieve a trace", response=Trace),
    _route(
        "GET",
        "/v1/telemetry/traces/{trace_id}/spans",
        TelemetryApi.get_trace_spans,
        "A trace's spans",
        response=SpanList,
    ),
    _route(
        "GET",
        "/v1/telemetry/spans/{span_id}/tree",
        TelemetryApi.get_span_tree,
        "A span and its descendants",
        query=SpanTreeQuery,
        response=SpanTree,
    ),
]
