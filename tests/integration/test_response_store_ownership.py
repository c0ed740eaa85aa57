"""Stored responses and their event logs are owned: another principal can neither read, page, nor delete them."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from underlay.api.errors import InvalidRequestError, NotFoundError
from underlay.core.identity import Principal, principal_var
from underlay.core.storage.sqlstore import sqlstore_from_config
from underlay.core.stores.responses import ResponseStore


@contextmanager
def acting_as(name: str) -> Iterator[None]:
    token = principal_var.set(Principal(name, {"team": name}))
    try:
        yield
    finally:
        principal_var.reset(token)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[ResponseStore]:
    sql = await sqlstore_from_config({"type": "sqlite", "path": str(tmp_path / "state.db")})
    responses = ResponseStore(sql)
    await responses.initialize()
    yield responses
    await sql.close()


async def test_responses_are_invisible_to_other_principals(store: ResponseStore) -> None:
    with acting_as("alice"):
        await store.put({"id": "resp_a", "model": "m", "status": "completed", "output": []}, input_items=[{"id": "i"}])
        await store.append_events("resp_a", [{"type": "response.created", "sequence_number": 0}])
        assert (await store.get("resp_a")).owner_principal == "alice"
    with acting_as("bob"):
        assert await store.find("resp_a") is None
        with pytest.raises(NotFoundError):
            await store.get("resp_a")
        with pytest.raises(NotFoundError):
            await store.delete("resp_a")
        assert await store.events_after("resp_a", -1) == []
        assert await store.last_sequence_number("resp_a") == -1
        assert (await store.page(after=None, limit=10, order="desc", model=None))[0] == []
        with pytest.raises(InvalidRequestError):
            await store.page(after="resp_a", limit=10, order="desc", model=None)
        await store.update("resp_a", {"id": "resp_a", "status": "failed"})  # touches nothing
    with acting_as("alice"):
        assert (await store.get("resp_a")).status == "completed"
        assert [e["sequence_number"] for e in await store.events_after("resp_a", -1)] == [0]
        await store.delete("resp_a")
        assert await store.find("resp_a") is None
