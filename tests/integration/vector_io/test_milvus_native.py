"""remote::milvus with Milvus's own BM25 (``keyword: native``), against a real Milvus-protocol server.

The server here is Milvus Lite's gRPC server in its own process (``servers.MilvusServer``); no Milvus
standalone can run on this machine. Its BM25 ranks rows that are not yet flushed with statistics of
the filtered rows only, so the contract's "filtering keeps the unfiltered order" is not asserted
here (the contract suite runs remote::milvus with the FTS5 sidecar instead). Everything else about
native keyword search is: ranking by rarity, folding of case and accents, queries that cannot break,
filters and exclusion applied before the top-k, upserts and deletes reaching the keyword index, and
hybrid over native BM25.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.integration.vector_io.conftest import Corpus
from tests.integration.vector_io.servers import SERVERS
from underlay.api.vector_io import Chunk, ComparisonFilter, VectorIOProvider
from underlay.providers.utils.vector.filters import matches


@pytest.fixture
async def native(tmp_path: Path, corpus: Corpus) -> AsyncIterator[tuple[VectorIOProvider, str]]:
    from underlay.providers.vector_io.milvus import remote as milvus
    from underlay.providers.vector_io.milvus.store import LITE_GRPC_OPTIONS

    config = milvus.Config(
        uri=SERVERS.milvus().uri, keyword="native", grpc_options=LITE_GRPC_OPTIONS, flush_after_write=True
    )
    provider = await milvus.create_provider("milvus-native", config, {})
    await provider.initialize()
    index_id = f"vs_native_{tmp_path.name[-12:]}"
    await provider.create_index(index_id, corpus.dimension)
    await provider.insert_chunks(index_id, corpus.chunks)
    try:
        yield provider, index_id
    finally:
        await provider.delete_index(index_id)
        await provider.shutdown()


def ids(results: list) -> list[str]:
    return [r.chunk.chunk_id for r in results]


async def test_native_bm25_ranks_and_folds(native: tuple[VectorIOProvider, str], corpus: Corpus) -> None:
    provider, index_id = native
    got = await provider.query(index_id, mode="keyword", k=5, query_text="the sourdough")
    assert got[0].chunk.content.startswith("A sourdough starter")
    assert [r.score for r in got] == sorted((r.score for r in got), reverse=True) and all(r.score > 0 for r in got)
    got = await provider.query(index_id, mode="keyword", k=3, query_text="WIMBLEDÓN")
    assert ids(got)[:1] == [c.chunk_id for c in corpus.chunks if "Wimbledon" in c.content]
    got = await provider.query(index_id, mode="keyword", k=10, query_text='what\'s "C++"?')
    assert {c.chunk_id for c in corpus.chunks if "C++" in c.content} <= set(ids(got))
    for text in ("?!... --- ***", "xylophonist", "((((", "'; DROP TABLE chunks; --", "tab\tnew\nline\x00nul"):
        got = await provider.query(index_id, mode="keyword", k=5, query_text=text)
        assert [r.score for r in got] == sorted((r.score for r in got), reverse=True)
    assert await provider.query(index_id, mode="keyword", k=5, query_text="?!... --- ***") == []


async def test_native_bm25_filters_and_excludes_before_top_k(
    native: tuple[VectorIOProvider, str], corpus: Corpus
) -> None:
    provider, index_id = native
    flt = ComparisonFilter(type="ne", key="topic", value="cooking")
    allowed = {c.chunk_id for c in corpus.chunks if matches(flt, c.attributes) and "the" in c.content.lower().split()}
    got = await provider.query(index_id, mode="keyword", k=1000, query_text="the", filters=flt)
    assert set(ids(got)) == allowed
    got = await provider.query(index_id, mode="keyword", k=2, query_text="bread dough oven the", filters=flt)
    assert len(got) == 2 and all(r.chunk.attributes.get("topic") != "cooking" for r in got)
    got = await provider.query(
        index_id, mode="keyword", k=1000, query_text="bread dough oven curry the", exclude_documents=["doc-bread"]
    )
    assert got and "doc-bread" not in {r.chunk.document_id for r in got}
    got = await provider.query(
        index_id,
        mode="hybrid",
        k=5,
        embedding=corpus.embed("Saving money for retirement"),
        query_text="Rubicon",
    )
    assert any("Rubicon" in r.chunk.content for r in got)


async def test_native_bm25_follows_upserts_and_deletes(native: tuple[VectorIOProvider, str], corpus: Corpus) -> None:
    provider, index_id = native
    old = corpus.chunks[0]
    await provider.insert_chunks(
        index_id, [old.model_copy(update={"content": "Quasars are powered by supermassive black holes."})]
    )
    assert old.chunk_id not in ids(await provider.query(index_id, mode="keyword", k=50, query_text="knead"))
    assert ids(await provider.query(index_id, mode="keyword", k=5, query_text="quasars")) == [old.chunk_id]
    await provider.delete_document(index_id, old.document_id)
    assert await provider.query(index_id, mode="keyword", k=5, query_text="quasars") == []
    new = Chunk(chunk_id="rye", document_id="doc-rye", content="Rye bread is dense.", embedding=old.embedding)
    await provider.insert_chunks(index_id, [new])
    assert ids(await provider.query(index_id, mode="keyword", k=1, query_text="rye")) == ["rye"]
