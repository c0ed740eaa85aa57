"""The standalone BM25 index that backends without full-text search keep beside their vectors."""

from __future__ import annotations

from pathlib import Path

import pytest

from underlay.api.vector_io import Chunk, ComparisonFilter
from underlay.providers.utils.vector.keyword import KeywordIndex, fts5_query

TEXTS = {
    "a": ("doc1", "The quick brown fox jumps over the lazy dog.", {"animal": "fox", "legs": 4}),
    "b": ("doc1", "A lazy afternoon in the garden with a cup of tea.", {"legs": 0}),
    "c": ("doc2", "Foxes are omnivores; the red fox is the most widespread.", {"animal": "fox", "legs": 4}),
    "d": ("doc3", "Octopuses have eight arms and three hearts.", {"animal": "octopus", "legs": 8}),
}


def chunks() -> list[Chunk]:
    return [
        Chunk(chunk_id=cid, document_id=doc, content=text, attributes=attrs, metadata={"n": i})
        for i, (cid, (doc, text, attrs)) in enumerate(TEXTS.items())
    ]


def test_fts5_query_quotes_every_term() -> None:
    assert fts5_query('what\'s "C++"?') == '"what" OR "s" OR "c"'
    assert fts5_query("AND or NEAR(x)") == '"and" OR "or" OR "near" OR "x"'
    assert fts5_query("snake_case Über") == '"snake" OR "case" OR "über"'
    assert fts5_query("?!  ...") is None
    assert fts5_query("") is None
    assert fts5_query(" ".join(f"w{i}" for i in range(500))).count(" OR ") == 63  # capped


@pytest.mark.parametrize("where", ["memory", "file"])
async def test_keyword_index(tmp_path: Path, where: str) -> None:
    path = ":memory:" if where == "memory" else str(tmp_path / "kw" / "keywords.db")
    index = await KeywordIndex(path).open()
    try:
        assert await index.search("vs_1", "fox", 5) == []  # never written: nothing, no error
        await index.upsert("vs_1", chunks())
        await index.upsert("vs_2", chunks()[:1])
        got = await index.search("vs_1", "the hearts", 5)
        assert got[0].chunk.chunk_id == "d" and got[0].score > 0
        assert got[0].chunk.attributes == {"animal": "octopus", "legs": 8} and got[0].chunk.metadata == {"n": 3}
        got = await index.search("vs_1", "lazy fox", 10, filters=ComparisonFilter(type="eq", key="legs", value=4))
        assert {r.chunk.chunk_id for r in got} == {"a", "c"}
        got = await index.search("vs_1", "lazy fox", 10, exclude_documents=["doc1"])
        assert [r.chunk.chunk_id for r in got] == ["c"]
        assert [r.chunk.chunk_id for r in await index.search("vs_2", "lazy", 10)] == ["a"]
        await index.upsert("vs_1", [Chunk(chunk_id="a", document_id="doc1", content="Now about wolves.")])
        assert "a" not in {r.chunk.chunk_id for r in await index.search("vs_1", "lazy", 10)}
        assert [r.chunk.chunk_id for r in await index.search("vs_1", "wolves", 10)] == ["a"]
        await index.delete_chunks("vs_1", ["d", "unknown"])
        assert await index.search("vs_1", "hearts", 10) == []
        await index.delete_document("vs_1", "doc1")
        assert [r.chunk.chunk_id for r in await index.search("vs_1", "fox lazy wolves", 10)] == ["c"]
        await index.delete_index("vs_1")
        assert await index.search("vs_1", "fox", 10) == []
        assert [r.chunk.chunk_id for r in await index.search("vs_2", "fox", 10)] == ["a"]
        for text in ('"', "NEAR(", "a:b", "*", "'; DROP TABLE x; --"):
            await index.search("vs_2", text, 3)
    finally:
        await index.close()
    if where == "file":
        reopened = await KeywordIndex(path).open()
        try:
            assert [r.chunk.chunk_id for r in await reopened.search("vs_2", "fox", 10)] == ["a"]
        finally:
            await reopened.close()
