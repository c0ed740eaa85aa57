"""Each store's own filter language gives the reference answers, on generated attributes and filters.

The contract suite checks a fixed list of filters on every backend; this throws a few hundred
generated ones (awkward keys, mixed types, ints vs floats, empty lists, nesting; the generator of the
filter unit tests) at the backends that translate filters into a store's own language: Qdrant
conditions, Chroma ``where`` documents, Milvus expressions (embedded stores, so it runs fast), and
PostgreSQL for pgvector. A vector search with a k above the index size must return exactly the
chunks the reference accepts.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.integration.vector_io.conftest import (
    BACKENDS,
    BackendFactory,
)
from tests.unit.test_vector_filters import random_attributes, random_filter
from underlay.api.vector_io import Chunk, VectorIOProvider
from underlay.providers.utils.vector.filters import matches

STORES = [name for name in ("qdrant", "chromadb", "milvus", "pgvector-exact") if name in BACKENDS]


@pytest.fixture(params=STORES)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[VectorIOProvider]:
    factory: BackendFactory = BACKENDS[request.param]
    provider = await factory(tmp_path)
    try:
        yield provider
    finally:
        await provider.shutdown()


async def test_generated_filters_agree_with_reference(store: VectorIOProvider) -> None:
    rng = random.Random(3)
    rows = [random_attributes(rng) for _ in range(150)]
    chunks = [
        Chunk(
            chunk_id=f"c{i:03d}",
            document_id=f"d{i % 7}",
            content=f"chunk {i}",
            embedding=[1.0, rng.random(), rng.random(), rng.random()],
            attributes=row,
        )
        for i, row in enumerate(rows)
    ]
    index_id = f"vs_pushdown_{rng.randrange(1 << 30)}"
    await store.create_index(index_id, 4)
    try:
        await store.insert_chunks(index_id, chunks)
        for _ in range(120):
            flt = random_filter(rng)
            want = {c.chunk_id for c in chunks if matches(flt, c.attributes)}
            got = await store.query(index_id, mode="vector", k=1000, embedding=[1.0, 0.5, 0.5, 0.5], filters=flt)
            assert {r.chunk.chunk_id for r in got} == want, flt.model_dump()
    finally:
        await store.delete_index(index_id)
