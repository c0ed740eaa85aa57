"""The same client code gets the same answers whichever backend holds the vector store.

One function loads the corpus and asks the same questions; it runs on sqlite-vec (the local default)
and on another backend, and the answers are compared: identical vector rankings with equal cosine
scores, the same best keyword hit for distinctive words (BM25 implementations differ in tokenizing
and stemming, so only clear winners are compared), and the same hybrid winner.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.integration.vector_io.conftest import BACKENDS, QUERIES, Corpus
from underlay.api.vector_io import ComparisonFilter, VectorIOProvider

OTHERS = [name for name in ("pgvector", "pgvector-exact", "qdrant", "chromadb", "milvus") if name in BACKENDS]
KEYWORD_QUERIES = ["sourdough starter", "Rubicon", "penalty kick", "compost earthworms", "violin strings", "RAII"]


async def ask(provider: VectorIOProvider, corpus: Corpus) -> dict[str, Any]:
    """Load the corpus into a fresh index and ask every kind of question; the client code under test."""
    index_id = f"vs_cross_{id(provider)}"
    await provider.create_index(index_id, corpus.dimension)
    try:
        await provider.insert_chunks(index_id, corpus.chunks)
        answers: dict[str, Any] = {}
        for query in QUERIES:
            embedding = corpus.embed(query)
            hits = await provider.query(index_id, mode="vector", k=5, embedding=embedding)
            answers[f"vector:{query}"] = [(h.chunk.chunk_id, h.score) for h in hits]
            hits = await provider.query(
                index_id,
                mode="vector",
                k=3,
                embedding=embedding,
                filters=ComparisonFilter(type="gte", key="year", value=2018),
            )
            answers[f"filtered:{query}"] = [(h.chunk.chunk_id, h.score) for h in hits]
        for text in KEYWORD_QUERIES:
            hits = await provider.query(index_id, mode="keyword", k=3, query_text=text)
            answers[f"keyword:{text}"] = hits[0].chunk.chunk_id if hits else None
            hits = await provider.query(
                index_id, mode="hybrid", k=3, embedding=corpus.embed(QUERIES[0]), query_text=text
            )
            answers[f"hybrid-has:{text}"] = answers[f"keyword:{text}"] in {h.chunk.chunk_id for h in hits}
        return answers
    finally:
        await provider.delete_index(index_id)


@pytest.mark.parametrize("other", OTHERS)
async def test_same_answers_as_sqlite_vec(other: str, corpus: Corpus, tmp_path: Path) -> None:
    reference_provider = await BACKENDS["sqlite-vec"](tmp_path / "sqlite-vec")
    other_provider = await BACKENDS[other](tmp_path / other)
    try:
        reference = await ask(reference_provider, corpus)
        answers = await ask(other_provider, corpus)
    finally:
        await reference_provider.shutdown()
        await other_provider.shutdown()
    assert answers.keys() == reference.keys()
    for key, want in reference.items():
        got = answers[key]
        if key.startswith(("vector:", "filtered:")):
            assert [cid for cid, _ in got] == [cid for cid, _ in want], key
            assert [s for _, s in got] == pytest.approx([s for _, s in want], abs=1e-4), key
        else:
            assert got == want, key
    assert all(reference[f"hybrid-has:{text}"] for text in KEYWORD_QUERIES)
