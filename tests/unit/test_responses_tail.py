"""A background response's live stream ends with its terminal event, whatever order the job writes in.

The job stores the final response row a moment before it appends the terminal event to the log. A reader
that looks in between used to see "final" and stop, so the client's stream ended on
``response.output_item.done`` with no ``response.completed`` (seen once in CI). These tests drive the
reader over a real SQLite store and write the two halves in that order, with a pause between.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from underlay.core.storage.sqlstore import sqlstore_from_config
from underlay.core.stores.responses import ResponseStore
from underlay.providers.inline.responses.config import BuiltinResponsesConfig
from underlay.providers.inline.responses.provider import BuiltinResponsesProvider

RESPONSE_ID = "resp_tailtest"


def _event(kind: str, n: int) -> dict[str, Any]:
    return {"type": kind, "sequence_number": n}


async def _provider_with(status: str) -> tuple[BuiltinResponsesProvider, ResponseStore]:
    sql = await sqlstore_from_config({"type": "sqlite", "path": ":memory:"})
    store = ResponseStore(sql)
    await store.initialize()
    response = {"id": RESPONSE_ID, "status": status, "background": True, "model": "m", "created_at": 0}
    await store.put(response)
    await store.append_events(RESPONSE_ID, [_event("response.created", 0), _event("response.queued", 1)])
    provider = BuiltinResponsesProvider("builtin", BuiltinResponsesConfig(), {})
    provider.store = store
    return provider, store


async def _collect(events: AsyncIterator[Any]) -> list[str]:
    return [e.type async for e in events]


async def test_a_reader_that_sees_the_final_row_first_still_gets_the_terminal_event() -> None:
    provider, store = await _provider_with("in_progress")
    await store.append_events(RESPONSE_ID, [_event("response.output_item.done", 2)])
    reader = asyncio.create_task(_collect(provider._tail(RESPONSE_ID, -1)))
    await asyncio.sleep(0.1)
    await store.update(RESPONSE_ID, {"id": RESPONSE_ID, "status": "completed"})  # the row first...
    await asyncio.sleep(0.7)  # ...the reader polls in between...
    assert not reader.done(), "the stream ended before its terminal event was written"
    await store.append_events(RESPONSE_ID, [_event("response.completed", 3)])  # ...then the event
    provider._wake(RESPONSE_ID)
    types = await asyncio.wait_for(reader, timeout=5)
    assert types == ["response.created", "response.queued", "response.output_item.done", "response.completed"]


async def test_a_cancelled_response_ends_the_stream_without_a_terminal_event() -> None:
    provider, store = await _provider_with("in_progress")
    reader = asyncio.create_task(_collect(provider._tail(RESPONSE_ID, -1)))
    await asyncio.sleep(0.1)
    await store.append_events(RESPONSE_ID, [_event("response.in_progress", 2)])
    await store.update(RESPONSE_ID, {"id": RESPONSE_ID, "status": "cancelled"})
    provider._wake(RESPONSE_ID)
    assert await asyncio.wait_for(reader, timeout=5) == ["response.created", "response.queued", "response.in_progress"]


async def test_a_final_row_whose_writer_died_ends_the_stream_after_a_bounded_wait(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("underlay.providers.inline.responses.provider._TERMINAL_EVENT_GRACE_S", 0.2)
    provider, _ = await _provider_with("completed")
    types = await asyncio.wait_for(_collect(provider._tail(RESPONSE_ID, -1)), timeout=5)
    assert types == ["response.created", "response.queued"]
