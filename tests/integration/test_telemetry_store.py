"""The span store on real SQLite and PostgreSQL: batched writes, owner-filtered reads, retention.

Spans come from a real OpenTelemetry SDK tracer with the store's processor attached, so the rows are
exactly what a running server writes.
"""

from __future__ import annotations

import time
from contextlib import ExitStack

from tests.integration.storage.conftest import (  # noqa: F401 - fixtures used by name
    SqlFactory,
    pg_database,
    sql_backend,
    sql_factory,
)
from underlay.core.access import set_active_policy
from underlay.core.access.config import AccessPolicyConfig
from underlay.core.identity import Principal, principal_var
from underlay.core.storage.sqlstore import SqlStore, Where
from underlay.core.telemetry.config import RetentionConfig, TelemetryConfig
from underlay.core.telemetry.runtime import Telemetry
from underlay.core.telemetry.span_store import TABLE, SpanStore


async def _fresh_store(sql_factory: SqlFactory) -> SqlStore:  # noqa: F811
    """The backend's store with an empty span table (PostgreSQL's database lives for the whole session)."""
    store = await sql_factory()
    await SpanStore(store).initialize()
    await store.delete(TABLE, [Where.is_not_null("span_id")])
    return store


async def _telemetry(sql_factory: SqlFactory, **retention: object) -> Telemetry:  # noqa: F811
    store = await _fresh_store(sql_factory)
    telemetry = Telemetry(
        TelemetryConfig(flush_seconds=60, retention=RetentionConfig(**retention)),  # type: ignore[arg-type]
        store,
    )
    await telemetry.start()
    return telemetry


def _request(telemetry: Telemetry, route: str, status: int = 200, children: int = 2) -> str:
    """One traced 'request': a root span with nested children; returns the trace id."""
    tracer = telemetry.tracer
    with tracer.start_as_current_span(f"GET {route}", attributes={"underlay.layer": "route"}) as root:
        with ExitStack() as nested:  # each child inside the one before
            for depth in range(children):
                child = nested.enter_context(tracer.start_as_current_span(f"child {depth}"))
                child.set_attribute("depth", depth)
        root.set_attribute("http.route", route)
        root.set_attribute("http.response.status_code", status)
    return format(root.get_span_context().trace_id, "032x")


async def test_spans_are_written_in_one_flush_and_read_back(sql_factory: SqlFactory) -> None:  # noqa: F811
    telemetry = await _telemetry(sql_factory)
    try:
        assert telemetry.store is not None and telemetry.buffer is not None
        trace_ids = [_request(telemetry, "/v1/models") for _ in range(3)]
        assert await telemetry.store.sql.count(TABLE) == 0  # nothing written on the request path
        assert await telemetry.buffer.flush() == 9
        roots, has_more = await telemetry.store.list_roots(limit=2)
        assert has_more and [r.trace_id for r in roots] == trace_ids[::-1][:2]
        rest, has_more = await telemetry.store.list_roots(limit=2, after=roots[-1].span_id)
        assert not has_more and [r.trace_id for r in rest] == [trace_ids[0]]
        spans = await telemetry.store.trace_spans(trace_ids[0])
        assert [s.name for s in spans] == ["GET /v1/models", "child 0", "child 1"]
        assert spans[1].parent_span_id == spans[0].span_id and spans[2].parent_span_id == spans[1].span_id
        assert spans[0].is_root and not spans[1].is_root
        assert spans[2].attributes["depth"] == 1 and spans[0].route == "/v1/models"
    finally:
        await telemetry.stop()
        await telemetry.store.sql.close()  # type: ignore[union-attr]


async def test_filters_by_route_status_and_time(sql_factory: SqlFactory) -> None:  # noqa: F811
    telemetry = await _telemetry(sql_factory)
    store = telemetry.store
    assert store is not None
    try:
        ok = _request(telemetry, "/v1/chat/completions", 200)
        middle = time.time_ns()
        missing = _request(telemetry, "/v1/files", 404)
        await telemetry.flush()
        rows, _ = await store.list_roots(route="/v1/files")
        assert [r.trace_id for r in rows] == [missing]
        rows, _ = await store.list_roots(http_status=200)
        assert [r.trace_id for r in rows] == [ok]
        rows, _ = await store.list_roots(until_ns=middle)
        assert [r.trace_id for r in rows] == [ok]
        rows, _ = await store.list_roots(since_ns=middle, order="asc")
        assert [r.trace_id for r in rows] == [missing]
    finally:
        await telemetry.stop()
        await store.sql.close()


async def test_rows_belong_to_the_principal_that_made_them(sql_factory: SqlFactory) -> None:  # noqa: F811
    telemetry = await _telemetry(sql_factory)
    store = telemetry.store
    assert store is not None
    try:
        token = principal_var.set(Principal("alice", {"teams": ["a"]}))
        try:
            alice_trace = _request(telemetry, "/v1/models")
        finally:
            principal_var.reset(token)
        bob = principal_var.set(Principal("bob"))
        try:
            bob_trace = _request(telemetry, "/v1/models")
            await telemetry.flush()
            rows, _ = await store.list_roots()
            assert [r.trace_id for r in rows] == [bob_trace]
            assert await store.root_of(alice_trace) is None and await store.trace_spans(alice_trace) == []
            assert (await store.list_roots(principal="alice"))[0] == []
        finally:
            principal_var.reset(bob)
        token = principal_var.set(Principal("alice"))
        try:
            root = await store.root_of(alice_trace)
            assert root is not None and root.owner_attributes == {"teams": ["a"]}
        finally:
            principal_var.reset(token)
    finally:
        await telemetry.stop()
        await store.sql.close()


async def test_retention_removes_old_and_excess_spans(sql_factory: SqlFactory) -> None:  # noqa: F811
    telemetry = await _telemetry(sql_factory, max_age_seconds=60, max_spans=4)
    store = telemetry.store
    assert store is not None
    try:
        traces = [_request(telemetry, "/v1/models", children=1) for _ in range(3)]  # 6 spans
        await telemetry.flush()
        assert await store.prune() == 2  # the oldest trace goes: 4 spans remain
        assert await store.trace_spans(traces[0]) == []
        assert len(await store.trace_spans(traces[2])) == 2
        assert await store.prune(now_ns=time.time_ns() + 61 * 10**9) == 4  # all older than a minute by then
        assert await store.sql.count(TABLE) == 0
    finally:
        await telemetry.stop()
        await store.sql.close()


async def test_a_full_buffer_drops_and_counts(sql_factory: SqlFactory) -> None:  # noqa: F811
    store = await _fresh_store(sql_factory)
    telemetry = Telemetry(TelemetryConfig(flush_seconds=60, max_buffered_spans=3), store)
    await telemetry.start()
    try:
        _request(telemetry, "/v1/models", children=4)  # 5 spans, room for 3
        assert telemetry.buffer is not None and telemetry.buffer.dropped == 2
        assert await telemetry.buffer.flush() == 3
    finally:
        await telemetry.stop()
        await store.close()


async def test_unsampled_requests_store_nothing(sql_factory: SqlFactory) -> None:  # noqa: F811
    store = await _fresh_store(sql_factory)
    telemetry = Telemetry(TelemetryConfig(flush_seconds=60, sample_rate=0.0), store)
    await telemetry.start()
    try:
        _request(telemetry, "/v1/models")
        assert await telemetry.buffer.flush() == 0  # type: ignore[union-attr]
    finally:
        await telemetry.stop()
        await store.close()


async def test_a_root_span_takes_the_principal_its_children_saw(sql_factory: SqlFactory) -> None:  # noqa: F811
    """The route span starts before authentication; its trace must still belong to the caller."""
    telemetry = await _telemetry(sql_factory)
    store = telemetry.store
    assert store is not None
    try:
        with telemetry.tracer.start_as_current_span("GET /v1/models") as root:
            token = principal_var.set(Principal("carol"))
            try:
                with telemetry.tracer.start_as_current_span("router models.list"):
                    pass
            finally:
                principal_var.reset(token)
            assert await telemetry.buffer.flush() == 1  # type: ignore[union-attr] # the child, before the root
        await telemetry.flush()
        trace_id = format(root.get_span_context().trace_id, "032x")
        assert await store.root_of(trace_id) is None  # the anonymous caller does not see it
        token = principal_var.set(Principal("carol"))
        try:
            found = await store.root_of(trace_id)
            assert found is not None and found.owner_principal == "carol"
        finally:
            principal_var.reset(token)
    finally:
        await telemetry.stop()
        await store.sql.close()


async def test_an_access_rule_can_let_an_operator_read_every_trace(sql_factory: SqlFactory) -> None:  # noqa: F811
    telemetry = await _telemetry(sql_factory)
    store = telemetry.store
    assert store is not None
    rules = [
        {"effect": "permit", "actions": ["read"], "principals": ["ops"]},
        {"effect": "permit", "when": ["user is owner"]},
    ]
    set_active_policy(AccessPolicyConfig.model_validate({"rules": rules}))
    try:
        traces = {}
        for name in ("alice", "bob"):
            token = principal_var.set(Principal(name))
            try:
                traces[name] = _request(telemetry, "/v1/models")
            finally:
                principal_var.reset(token)
        await telemetry.flush()
        token = principal_var.set(Principal("ops"))
        try:
            everything, _ = await store.list_roots()
            assert {r.trace_id for r in everything} == set(traces.values())
            alices, _ = await store.list_roots(principal="alice")
            assert [r.trace_id for r in alices] == [traces["alice"]]
        finally:
            principal_var.reset(token)
        token = principal_var.set(Principal("bob"))
        try:
            assert [r.trace_id for r in (await store.list_roots())[0]] == [traces["bob"]]
        finally:
            principal_var.reset(token)
    finally:
        set_active_policy(None)
        await telemetry.stop()
        await store.sql.close()


async def test_a_flush_larger_than_one_batch_writes_every_span(sql_factory: SqlFactory) -> None:  # noqa: F811
    telemetry = await _telemetry(sql_factory)
    store = telemetry.store
    assert store is not None and telemetry.buffer is not None
    try:
        traces = [_request(telemetry, "/v1/embeddings", children=4) for _ in range(250)]  # 1250 spans
        assert await telemetry.buffer.flush() == 1250
        assert await store.sql.count(TABLE) == 1250 and telemetry.buffer.dropped == 0
        spans = await store.trace_spans(traces[-1])
        assert [s.name for s in spans] == ["GET /v1/embeddings", *[f"child {d}" for d in range(4)]]
        assert spans[0].kind == "internal" and spans[0].status == "unset" and spans[0].events is None
    finally:
        await telemetry.stop()
        await store.sql.close()


async def test_a_batch_the_database_refuses_is_dropped_whole_and_counted(sql_factory: SqlFactory) -> None:  # noqa: F811
    """A span already stored (here: the same span ended twice) fails its whole batch, never half of it."""
    telemetry = await _telemetry(sql_factory)
    store = telemetry.store
    buffer = telemetry.buffer
    assert store is not None and buffer is not None
    try:
        with telemetry.tracer.start_as_current_span("GET /v1/models") as root:
            with telemetry.tracer.start_as_current_span("router models.list") as child:
                pass
        assert await buffer.flush() == 2
        buffer.on_end(child)  # a duplicate primary key in the next batch
        _request(telemetry, "/v1/files", children=1)
        assert await buffer.flush() == 0
        assert buffer.dropped == 3
        trace_id = format(root.get_span_context().trace_id, "032x")
        assert await store.sql.count(TABLE) == 2 and len(await store.trace_spans(trace_id)) == 2
    finally:
        await telemetry.stop()
        await store.sql.close()
