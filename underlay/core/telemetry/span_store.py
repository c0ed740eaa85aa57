"""Finished spans in the SQL store: written in batches off the request path, read by the telemetry API.

Why a buffer and a background writer: a request must not wait on a database write to be traced.
``on_end`` only appends the finished span and its principal to a bounded deque (under a microsecond);
a task turns them into rows and writes them every ``flush_seconds`` in one transaction. Past ``max_buffered_spans`` new
spans are dropped and counted rather than letting memory grow while the database is slow.

Rows are user-owned like every other store's: each records the principal of the request that made
it, and reads filter by the access policy (resource type ``trace``; by default, the caller's own) in
the query.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from underlay.core.access import rows_where
from underlay.core.identity import ANONYMOUS, Principal, current_principal
from underlay.core.storage.sqlstore import OWNER_COLUMNS, ColumnDefinition, ColumnType, SqlStore, Where
from underlay.core.telemetry.config import RetentionConfig

log = logging.getLogger("underlay.telemetry")

TABLE = "telemetry_spans"
RESOURCE_TYPE = "trace"
"""The access-policy resource type of stored spans (a rule may let an operator read every trace)."""

_COLUMNS: dict[str, ColumnType | ColumnDefinition] = {
    "span_id": ColumnDefinition(type=ColumnType.STRING, primary_key=True, nullable=False),
    "trace_id": ColumnDefinition(type=ColumnType.STRING, index=True, nullable=False),
    "parent_span_id": ColumnDefinition(type=ColumnType.STRING, index=True),
    "name": ColumnType.STRING,
    "kind": ColumnType.STRING,
    "layer": ColumnType.STRING,
    "start_ns": ColumnDefinition(type=ColumnType.INTEGER, index=True, nullable=False),
    "end_ns": ColumnType.INTEGER,
    "duration_ms": ColumnType.FLOAT,
    "status": ColumnType.STRING,
    "status_message": ColumnType.TEXT,
    "attributes": ColumnType.JSON,
    "events": ColumnType.JSON,
    "is_root": ColumnDefinition(type=ColumnType.BOOLEAN, index=True),
    "route": ColumnDefinition(type=ColumnType.STRING, index=True),
    "http_status": ColumnDefinition(type=ColumnType.INTEGER, index=True),
    "request_id": ColumnType.STRING,
    # The model a span's call named; on a root span, the model of the request's outermost router call.
    "model": ColumnDefinition(type=ColumnType.STRING, index=True),
    **OWNER_COLUMNS,
}

_STATUS = {0: "unset", 1: "ok", 2: "error"}
_KINDS: dict[Any, str] = {}
"""SpanKind → its lower-case name, filled on first sight (the enum has five members)."""


@dataclass(frozen=True, slots=True)
class StoredSpan:
    """One ``telemetry_spans`` row as read back: the columns as stored (``None`` where empty).

    Reads build these once, so the telemetry router uses attributes rather than column names; the
    defaults the API shows for empty columns are the router's to choose.
    """

    span_id: str
    trace_id: str
    parent_span_id: str | None
    name: str | None
    kind: str | None
    layer: str | None
    start_ns: int
    end_ns: int | None
    duration_ms: float | None
    status: Literal["ok", "error", "unset"] | None  # span_row writes only these
    status_message: str | None
    attributes: dict[str, Any] | None
    events: list[dict[str, Any]] | None
    is_root: bool
    route: str | None
    http_status: int | None
    request_id: str | None
    model: str | None
    owner_principal: str | None
    owner_attributes: dict[str, Any] | None

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> StoredSpan:
        return cls(
            span_id=row["span_id"],
            trace_id=row["trace_id"],
            parent_span_id=row["parent_span_id"],
            name=row["name"],
            kind=row["kind"],
            layer=row["layer"],
            start_ns=row["start_ns"],
            end_ns=row["end_ns"],
            duration_ms=row["duration_ms"],
            status=row["status"],
            status_message=row["status_message"],
            attributes=row["attributes"],
            events=row["events"],
            is_root=bool(row["is_root"]),
            route=row["route"],
            http_status=row["http_status"],
            request_id=row["request_id"],
            model=row["model"],
            owner_principal=row["owner_principal"],
            owner_attributes=row["owner_attributes"],
        )


def span_row(span: Any, principal: Principal) -> dict[str, Any]:
    """A finished OpenTelemetry ``ReadableSpan`` as a table row owned by ``principal``.

    Why so plain: the writer runs this for every span in the server's process, so it is built from
    dict lookups and one pass over the attributes, with no validation models in between.
    """
    context = span.context
    parent = span.parent
    raw = span.attributes
    # Tuples (OpenTelemetry's sequence values) become lists, the shape JSON gives back.
    attributes = {k: list(v) if type(v) is tuple else v for k, v in raw.items()} if raw else {}
    start, end = span.start_time or 0, span.end_time or 0
    status = span.status
    kind = span.kind
    kind_name = _KINDS.get(kind)
    if kind_name is None:
        kind_name = _KINDS[kind] = kind.name.lower()
    events = span.events
    return {
        "span_id": format(context.span_id, "016x"),
        "trace_id": format(context.trace_id, "032x"),
        "parent_span_id": format(parent.span_id, "016x") if parent is not None else None,
        "name": span.name,
        "kind": kind_name,
        "layer": attributes.get("underlay.layer"),
        "start_ns": start,
        "end_ns": end,
        "duration_ms": (end - start) / 1e6 if end else None,
        "status": _STATUS.get(status.status_code.value, "unset"),
        "status_message": status.description,
        "attributes": attributes,
        "events": [{"name": e.name, "time_ns": e.timestamp, "attributes": dict(e.attributes or {})} for e in events]
        if events
        else None,
        # A local root: no parent, or a parent from another process (a traceparent header).
        "is_root": parent is None or bool(parent.is_remote),
        "route": attributes.get("http.route"),
        "http_status": attributes.get("http.response.status_code"),
        "request_id": attributes.get("underlay.request_id"),
        "model": attributes.get("gen_ai.request.model"),
        "owner_principal": principal.id,
        "owner_attributes": principal.attributes,
    }


class SpanStore:
    """The ``telemetry_spans`` table: batched writes, owner-filtered reads, retention."""

    def __init__(self, sqlstore: SqlStore, retention: RetentionConfig | None = None) -> None:
        self.sql = sqlstore
        self.retention = retention or RetentionConfig()

    async def initialize(self) -> None:
        await self.sql.create_table(TABLE, _COLUMNS)

    async def write(self, rows: Sequence[dict[str, Any]]) -> None:
        """Store ``rows`` in one transaction and one executemany (all or none)."""
        await self.sql.insert_many(TABLE, rows)

    # -- reads (always the current principal's rows) ---------------------------------------------

    def _owned(self) -> list[Any]:
        """The rows the access policy lets the caller read (resource type ``trace``); by default its own."""
        return rows_where(RESOURCE_TYPE, "read", id_column="trace_id")

    async def list_roots(
        self,
        *,
        since_ns: int | None = None,
        until_ns: int | None = None,
        principal: str | None = None,
        route: str | None = None,
        model: str | None = None,
        status: str | None = None,
        http_status: int | None = None,
        limit: int = 20,
        after: str | None = None,
        order: Literal["asc", "desc"] = "desc",
    ) -> tuple[list[StoredSpan], bool]:
        where = [*self._owned(), Where.eq("is_root", True)]
        if since_ns is not None:
            where.append(Where.gte("start_ns", since_ns))
        if until_ns is not None:
            where.append(Where.lte("start_ns", until_ns))
        if principal is not None:
            where.append(Where.eq("owner_principal", principal))
        if route is not None:
            where.append(Where.eq("route", route))
        if model is not None:
            where.append(Where.eq("model", model))
        if status is not None:
            where.append(Where.eq("status", status))
        if http_status is not None:
            where.append(Where.eq("http_status", http_status))
        page = await self.sql.fetch_page(
            TABLE, where, order_column="start_ns", order=order, limit=limit, after_id=after, id_column="span_id"
        )
        return [StoredSpan.from_row(r) for r in page.rows], page.has_more

    async def root_of(self, trace_id: str) -> StoredSpan | None:
        row = await self.sql.fetch_one(
            TABLE, [*self._owned(), Where.eq("trace_id", trace_id), Where.eq("is_root", True)]
        )
        return None if row is None else StoredSpan.from_row(row)

    async def trace_spans(self, trace_id: str, limit: int | None = None) -> list[StoredSpan]:
        rows = await self.sql.fetch_all(
            TABLE, [*self._owned(), Where.eq("trace_id", trace_id)], order_by=[("start_ns", "asc")], limit=limit
        )
        return [StoredSpan.from_row(r) for r in rows]

    async def span(self, span_id: str) -> StoredSpan | None:
        row = await self.sql.fetch_one(TABLE, [*self._owned(), Where.eq("span_id", span_id)])
        return None if row is None else StoredSpan.from_row(row)

    # -- retention -------------------------------------------------------------------------------

    async def prune(self, now_ns: int | None = None) -> int:
        """Delete spans older than ``max_age_seconds`` and the oldest beyond ``max_spans``; returns the count."""
        removed = 0
        now_ns = now_ns or time.time_ns()
        if self.retention.max_age_seconds is not None:
            cutoff = now_ns - int(self.retention.max_age_seconds * 1e9)
            removed += await self.sql.delete(TABLE, [Where.lt("start_ns", cutoff)])
        if self.retention.max_spans is not None:
            excess = await self.sql.count(TABLE) - self.retention.max_spans
            if excess > 0:
                oldest = await self.sql.fetch_all(TABLE, order_by=[("start_ns", "asc")], limit=excess)
                removed += await self.sql.delete(TABLE, [Where.lte("start_ns", oldest[-1]["start_ns"])])
        return removed


class SpanBuffer:
    """The OpenTelemetry span processor that queues rows, plus the task that writes them."""

    def __init__(self, store: SpanStore, flush_seconds: float = 1.0, max_buffered: int = 20_000) -> None:
        self.store = store
        self.flush_seconds = flush_seconds
        self.max_buffered = max_buffered
        self.dropped = 0
        self._spans: deque[tuple[Any, Principal]] = deque()
        self._owners: dict[str, tuple[str, Any]] = {}
        """trace id → the principal its inner spans saw, until the trace's root span ends."""
        self._models: dict[str, str] = {}
        """trace id → the model its latest-ending router span named (the outermost call), until the root ends."""
        self._task: asyncio.Task[None] | None = None
        self._last_prune = 0.0

    # SpanProcessor interface (called by the SDK; on_end runs where the span ends, usually a request).
    def on_start(self, span: Any, parent_context: Any = None) -> None:
        return None

    def _on_ending(self, span: Any) -> None:
        return None

    def on_end(self, span: Any) -> None:
        # Only a tuple append here: the row is built when the buffer is written, after the response.
        if len(self._spans) >= self.max_buffered:
            self.dropped += 1
            return
        self._spans.append((span, current_principal()))

    def shutdown(self) -> None:
        return None

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True

    # The writer.
    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="underlay-span-writer")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.flush()

    async def flush(self) -> int:
        """Write everything buffered now; returns how many rows were written."""
        written = 0
        while self._spans:
            batch = [self._spans.popleft() for _ in range(min(len(self._spans), 1000))]
            rows = self._rows(batch)
            try:
                await self.store.write(rows)
                written += len(rows)
            except Exception as exc:
                self.dropped += len(rows)
                log.warning("could not store %d spans: %s", len(rows), exc)
        return written

    def _rows(self, batch: list[tuple[Any, Principal]]) -> list[dict[str, Any]]:
        """Rows in the order spans ended, a trace's root span owned by whom its inner spans saw.

        The route span starts before authentication runs (it times the 401s too), so the principal it
        sees may be anonymous while the router spans inside it, which end first, know who called. The
        root also takes the model of the router span that ended last before it: inner calls end first,
        so that is the outermost call, the one the request named (not a file search's embedding model).
        """
        rows = []
        for span, principal in batch:
            try:
                row = span_row(span, principal)
            except Exception:  # a span that will not convert must never stop the others
                log.debug("span %s could not be stored", getattr(span, "name", "?"), exc_info=True)
                continue
            trace_id = row["trace_id"]
            if not row["is_root"]:
                if principal.id != ANONYMOUS.id and trace_id not in self._owners:
                    if len(self._owners) >= self.max_buffered:  # roots that never ended (killed tasks)
                        self._owners.clear()
                    self._owners[trace_id] = (principal.id, principal.attributes)
                if row["model"] is not None and row["layer"] == "router":
                    if trace_id not in self._models and len(self._models) >= self.max_buffered:
                        self._models.clear()
                    self._models[trace_id] = row["model"]
            else:
                model = self._models.pop(trace_id, None)
                if row["model"] is None:
                    row["model"] = model
                owner = self._owners.pop(trace_id, None)
                if owner is not None and principal.id == ANONYMOUS.id:
                    row["owner_principal"], row["owner_attributes"] = owner
            rows.append(row)
        return rows

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.flush_seconds)
            await self.flush()
            now = time.monotonic()
            if now - self._last_prune >= self.store.retention.sweep_seconds:
                self._last_prune = now
                try:
                    removed = await self.store.prune()
                    if removed:
                        log.info("telemetry retention removed %d spans", removed)
                except Exception as exc:
                    log.warning("telemetry retention sweep failed: %s", exc)
