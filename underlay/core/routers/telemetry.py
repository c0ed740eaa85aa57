"""The telemetry router: traces and spans from the SQL store, the caller's own only.

Reads first write out whatever spans are still buffered, so a client that asks about the request it
just made finds it (the writer otherwise runs every ``telemetry.flush_seconds``).
"""

from __future__ import annotations

from underlay.api.errors import NotFoundError, UnderlayError
from underlay.api.telemetry import (
    Span,
    SpanList,
    SpanTree,
    SpanTreeQuery,
    TelemetryApi,
    Trace,
    TraceList,
    TraceListQuery,
)
from underlay.core.telemetry.runtime import Telemetry
from underlay.core.telemetry.span_store import SpanStore, StoredSpan

_MAX_TREE_SPANS = 10_000


class TraceStorageOffError(UnderlayError):
    status_code = 503
    error_type = "service_unavailable"


def span_model(row: StoredSpan) -> Span:
    return Span(
        span_id=row.span_id,
        trace_id=row.trace_id,
        parent_span_id=row.parent_span_id,
        name=row.name or "",
        kind=row.kind or "internal",
        layer=row.layer,
        start_time_ns=row.start_ns,
        end_time_ns=row.end_ns,
        duration_ms=row.duration_ms,
        status=row.status or "unset",
        status_message=row.status_message,
        attributes=row.attributes or {},
        events=row.events or [],
    )


def trace_model(row: StoredSpan) -> Trace:
    return Trace(
        id=row.trace_id,
        root_span_id=row.span_id,
        name=row.name or "",
        route=row.route,
        http_status=row.http_status,
        status=row.status or "unset",
        request_id=row.request_id,
        principal=row.owner_principal,
        model=row.model,
        start_time_ns=row.start_ns,
        end_time_ns=row.end_ns,
        duration_ms=row.duration_ms,
    )


class TelemetryRouter(TelemetryApi):
    def __init__(self, telemetry: Telemetry | None) -> None:
        self.telemetry = telemetry

    async def _store(self) -> SpanStore:
        store = self.telemetry.store if self.telemetry is not None else None
        if self.telemetry is None or store is None:
            raise TraceStorageOffError(
                "Traces are not stored on this server; set telemetry.enabled: true and telemetry.store_spans: true "
                "in the run config.",
                code="trace_storage_off",
            )
        await self.telemetry.flush()
        return store

    async def list_traces(self, query: TraceListQuery) -> TraceList:
        store = await self._store()
        after_span: str | None = None
        if query.after is not None:
            cursor = await store.root_of(query.after)
            if cursor is None:
                raise NotFoundError("Trace", query.after, hint="Pass an id from a previous page.", param="after")
            after_span = cursor.span_id
        rows, has_more = await store.list_roots(
            since_ns=int(query.start_time * 1e9) if query.start_time is not None else None,
            until_ns=int(query.end_time * 1e9) if query.end_time is not None else None,
            principal=query.principal,
            route=query.route,
            model=query.model,
            status=query.status,
            http_status=query.http_status,
            limit=query.limit,
            after=after_span,
            order=query.order,
        )
        data = [trace_model(r) for r in rows]
        return TraceList(
            data=data,
            first_id=data[0].id if data else None,
            last_id=data[-1].id if data else None,
            has_more=has_more,
        )

    async def get_trace(self, trace_id: str) -> Trace:
        store = await self._store()
        row = await store.root_of(trace_id)
        if row is None:
            raise NotFoundError("Trace", trace_id, hint="List traces with GET /v1/telemetry/traces.", param="trace_id")
        return trace_model(row)

    async def get_trace_spans(self, trace_id: str) -> SpanList:
        store = await self._store()
        rows = await store.trace_spans(trace_id)
        if not rows:
            raise NotFoundError("Trace", trace_id, hint="List traces with GET /v1/telemetry/traces.", param="trace_id")
        return SpanList(data=[span_model(r) for r in rows])

    async def get_span_tree(self, span_id: str, query: SpanTreeQuery | None = None) -> SpanTree:
        store = await self._store()
        row = await store.span(span_id)
        if row is None:
            raise NotFoundError("Span", span_id, param="span_id")
        rows = await store.trace_spans(row.trace_id, limit=_MAX_TREE_SPANS)
        children: dict[str | None, list[StoredSpan]] = {}
        for r in rows:
            children.setdefault(r.parent_span_id, []).append(r)
        max_depth = query.max_depth if query is not None else None

        def build(node: StoredSpan, depth: int) -> SpanTree:
            below = [] if max_depth is not None and depth >= max_depth else children.get(node.span_id, [])
            return SpanTree(span=span_model(node), children=[build(c, depth + 1) for c in below])

        return build(row, 0)
