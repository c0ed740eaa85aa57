"""``client.telemetry``: read back the traces this server recorded (``traces`` and ``spans``).

Trace lists are cursor pages in OpenAI's shape, so ``for trace in client.telemetry.traces.list():``
walks every page (``after`` the last id), as ``client.files.list()`` does.
"""

from __future__ import annotations

from typing import Literal

from openai import Omit, omit
from openai._base_client import AsyncPaginator
from openai._compat import cached_property
from openai._resource import AsyncAPIResource, SyncAPIResource
from typing_extensions import Unpack

from underlay.api.telemetry import Span, SpanTree, SpanTreeQuery, TelemetryApi, Trace, TraceListQuery
from underlay.client._wire import (
    AsyncCursorPage,
    AsyncPage,
    RequestOptions,
    SyncCursorPage,
    SyncPage,
    options_of,
    parsed,
    query_of,
    route_path,
    sends,
)

__all__ = ["AsyncSpans", "AsyncTelemetry", "AsyncTraces", "Spans", "Telemetry", "Traces"]

Status = Literal["ok", "error", "unset"]


class Traces(SyncAPIResource):
    """Traces (one per request or background job), newest first unless ``order="asc"``."""

    @sends(TraceListQuery)
    def list(
        self,
        *,
        after: str | None | Omit = omit,
        limit: int | Omit = omit,
        order: Literal["asc", "desc"] | Omit = omit,
        start_time: float | None | Omit = omit,
        end_time: float | None | Omit = omit,
        principal: str | None | Omit = omit,
        route: str | None | Omit = omit,
        model: str | None | Omit = omit,
        status: Status | None | Omit = omit,
        http_status: int | None | Omit = omit,
        **options: Unpack[RequestOptions],
    ) -> SyncCursorPage[Trace]:
        _, path = route_path(TelemetryApi.list_traces)
        query = query_of(
            after=after,
            limit=limit,
            order=order,
            start_time=start_time,
            end_time=end_time,
            principal=principal,
            route=route,
            model=model,
            status=status,
            http_status=http_status,
        )
        return self._get_api_list(path, page=SyncCursorPage[Trace], model=Trace, options=options_of(options, query))

    def retrieve(self, trace_id: str, **options: Unpack[RequestOptions]) -> Trace:
        _, path = route_path(TelemetryApi.get_trace, trace_id=trace_id)
        return self._get(path, options=options_of(options), cast_to=parsed(Trace))

    def spans(self, trace_id: str, **options: Unpack[RequestOptions]) -> SyncPage[Span]:
        """Every span of the trace, in start order."""
        _, path = route_path(TelemetryApi.get_trace_spans, trace_id=trace_id)
        return self._get_api_list(path, page=SyncPage[Span], model=Span, options=options_of(options))


class AsyncTraces(AsyncAPIResource):
    """The async twin of :class:`Traces`."""

    @sends(TraceListQuery)
    def list(
        self,
        *,
        after: str | None | Omit = omit,
        limit: int | Omit = omit,
        order: Literal["asc", "desc"] | Omit = omit,
        start_time: float | None | Omit = omit,
        end_time: float | None | Omit = omit,
        principal: str | None | Omit = omit,
        route: str | None | Omit = omit,
        model: str | None | Omit = omit,
        status: Status | None | Omit = omit,
        http_status: int | None | Omit = omit,
        **options: Unpack[RequestOptions],
    ) -> AsyncPaginator[Trace, AsyncCursorPage[Trace]]:
        _, path = route_path(TelemetryApi.list_traces)
        query = query_of(
            after=after,
            limit=limit,
            order=order,
            start_time=start_time,
            end_time=end_time,
            principal=principal,
            route=route,
            model=model,
            status=status,
            http_status=http_status,
        )
        return self._get_api_list(path, page=AsyncCursorPage[Trace], model=Trace, options=options_of(options, query))

    async def retrieve(self, trace_id: str, **options: Unpack[RequestOptions]) -> Trace:
        _, path = route_path(TelemetryApi.get_trace, trace_id=trace_id)
        return await self._get(path, options=options_of(options), cast_to=parsed(Trace))

    def spans(self, trace_id: str, **options: Unpack[RequestOptions]) -> AsyncPaginator[Span, AsyncPage[Span]]:
        """Every span of the trace, in start order."""
        _, path = route_path(TelemetryApi.get_trace_spans, trace_id=trace_id)
        return self._get_api_list(path, page=AsyncPage[Span], model=Span, options=options_of(options))


class Spans(SyncAPIResource):
    @sends(SpanTreeQuery)
    def tree(self, span_id: str, *, max_depth: int | None | Omit = omit, **options: Unpack[RequestOptions]) -> SpanTree:
        """The span with its descendants nested under ``children`` (``max_depth`` levels, all by default)."""
        _, path = route_path(TelemetryApi.get_span_tree, span_id=span_id)
        opts = options_of(options, query_of(max_depth=max_depth))
        return self._get(path, options=opts, cast_to=parsed(SpanTree))


class AsyncSpans(AsyncAPIResource):
    @sends(SpanTreeQuery)
    async def tree(
        self, span_id: str, *, max_depth: int | None | Omit = omit, **options: Unpack[RequestOptions]
    ) -> SpanTree:
        """The span with its descendants nested under ``children`` (``max_depth`` levels, all by default)."""
        _, path = route_path(TelemetryApi.get_span_tree, span_id=span_id)
        opts = options_of(options, query_of(max_depth=max_depth))
        return await self._get(path, options=opts, cast_to=parsed(SpanTree))


class Telemetry(SyncAPIResource):
    """``traces`` and ``spans``."""

    @cached_property
    def traces(self) -> Traces:
        return Traces(self._client)

    @cached_property
    def spans(self) -> Spans:
        return Spans(self._client)


class AsyncTelemetry(AsyncAPIResource):
    """The async twin of :class:`Telemetry`."""

    @cached_property
    def traces(self) -> AsyncTraces:
        return AsyncTraces(self._client)

    @cached_property
    def spans(self) -> AsyncSpans:
        return AsyncSpans(self._client)
