"""Vector-store rows are owned: another principal can neither see, page from, change nor delete them."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from underlay.api.errors import InvalidRequestError, NotFoundError
from underlay.core.identity import Principal, principal_var
from underlay.core.storage.sqlstore import sqlstore_from_config
from underlay.core.stores.vector_stores import VectorStoreRows


@contextmanager
def acting_as(name: str) -> Iterator[None]:
    token = principal_var.set(Principal(name, {"team": name}))
    try:
        yield
    finally:
        principal_var.reset(token)


@pytest.fixture
async def rows(tmp_path: Path) -> AsyncIterator[VectorStoreRows]:
    sql = await sqlstore_from_config({"type": "sqlite", "path": str(tmp_path / "state.db")})
    store = VectorStoreRows(sql)
    await store.initialize()
    yield store
    await sql.close()


async def test_rows_are_invisible_to_other_principals(rows: VectorStoreRows) -> None:
    now = int(time.time())
    with acting_as("alice"):
        await rows.insert_store(
            {"id": "vs_a", "created_at": now, "created_ns": time.time_ns(), "name": "mine", "provider_id": "p",
             "embedding_model": "m", "embedding_dimension": 3}
        )  # fmt: skip
        await rows.upsert_file(
            {"vector_store_id": "vs_a", "file_id": "file-1", "created_at": now, "created_ns": time.time_ns(),
             "status": "completed", "usage_bytes": 10, "attributes": {}}
        )  # fmt: skip
        await rows.put_chunk_part("vs_a", "file-1", 0, "job_1", [{"chunk_id": "c", "content": "x", "embedding": ""}])
        assert (await rows.get_store("vs_a")).owner_principal == "alice"
        assert (await rows.get_store("vs_a")).owner_attributes == {"team": "alice"}

    with acting_as("bob"):
        assert await rows.find_store("vs_a") is None
        with pytest.raises(NotFoundError):
            await rows.get_store("vs_a")
        assert (await rows.page_stores(limit=10, order="desc", after=None, before=None))[0] == []
        with pytest.raises(InvalidRequestError):  # cannot even page from alice's id
            await rows.page_stores(limit=10, order="desc", after="vs_a", before=None)
        assert await rows.find_file("vs_a", "file-1") is None
        assert await rows.files_of("vs_a") == []
        assert (await rows.file_stats(["vs_a"]))["vs_a"].total == 0
        assert await rows.chunk_parts("vs_a", "file-1") == []
        assert await rows.update_store("vs_a", {"name": "stolen"}) == 0
        assert await rows.update_file("vs_a", "file-1", {"status": "failed"}) == 0
        assert await rows.delete_file("vs_a", "file-1") == 0
        await rows.delete_store("vs_a")

    with acting_as("alice"):
        store = await rows.get_store("vs_a")
        assert store.name == "mine"
        stats = (await rows.file_stats(["vs_a"]))["vs_a"]
        assert (stats.completed, stats.usage_bytes) == (1, 10)
        assert len(await rows.chunk_parts("vs_a", "file-1")) == 1
