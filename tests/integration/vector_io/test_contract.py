"""The vector-io contract, run unchanged against every backend in ``conftest.BACKENDS``.

What a vector store promises its clients is asserted here once: upsert and delete semantics, exact
(or, for ANN backends, high-recall) cosine search, BM25 keyword search that no user text can break,
hybrid search that is exactly ``fusion.fuse`` of the two, filters that agree with the Python
reference evaluation and are applied before ranking, exclusion of documents still being ingested,
the errors a client sees, persistence, and safety under concurrent use.
"""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pytest

from tests.integration.vector_io.conftest import BackendUnderTest, Corpus
from underlay.api.errors import InvalidRequestError, NotFoundError
from underlay.api.vector_io import Chunk, ComparisonFilter, CompoundFilter, Filter, HybridOptions, ScoredChunk
from underlay.providers.utils.vector.base import hybrid_candidates
from underlay.providers.utils.vector.filters import matches
from underlay.providers.utils.vector.fusion import fuse

EVERYTHING = 4096  # a k larger than any index here (and the most any backend must accept)
COMMON_WORDS = "the of a and in to is"  # appears in nearly every sentence of the corpus


# ---------------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------------


def ids(results: list[ScoredChunk]) -> list[str]:
    return [r.chunk.chunk_id for r in results]


def scores(results: list[ScoredChunk]) -> list[float]:
    return [r.score for r in results]


def unit(matrix: np.ndarray) -> np.ndarray:
    return matrix / np.linalg.norm(matrix, axis=-1, keepdims=True)


def random_chunks(n: int, dimension: int, seed: int, *, prefix: str = "r", documents: int = 10) -> list[Chunk]:
    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((n, dimension))
    return [
        Chunk(
            chunk_id=f"{prefix}{i:05d}",
            document_id=f"{prefix}-doc{i % documents}",
            content=f"random chunk {i}",
            embedding=vectors[i].tolist(),
            attributes={"i": i, "parity": "even" if i % 2 == 0 else "odd"},
        )
        for i in range(n)
    ]


def exact_top_k(chunks: list[Chunk], query: list[float], k: int) -> tuple[list[str], list[float]]:
    """Exact cosine top-k by numpy, ties by chunk id: what an exact backend must return."""
    matrix = unit(np.array([c.embedding for c in chunks], dtype=np.float64))
    sims = matrix @ unit(np.array(query, dtype=np.float64))
    order = sorted(range(len(chunks)), key=lambda i: (-sims[i], chunks[i].chunk_id))[:k]
    return [chunks[i].chunk_id for i in order], [float(sims[i]) for i in order]


async def new_index(backend: BackendUnderTest, dimension: int) -> str:
    index_id = backend.new_index_id()
    await backend.provider.create_index(index_id, dimension)
    return index_id


async def corpus_index(backend: BackendUnderTest, corpus: Corpus) -> str:
    index_id = await new_index(backend, corpus.dimension)
    await backend.provider.insert_chunks(index_id, corpus.chunks)
    return index_id


async def everything(backend: BackendUnderTest, index_id: str, dimension: int) -> list[str]:
    """Every chunk id in the index, found through vector search with a huge k."""
    probe = [1.0] + [0.0] * (dimension - 1)
    return sorted(ids(await backend.provider.query(index_id, mode="vector", k=EVERYTHING, embedding=probe)))


def assert_vector_results(backend: BackendUnderTest, got: list[ScoredChunk], want_ids: list[str], want: list[float]):
    """Exact backends: same ids in the same order, scores equal. ANN backends: recall and true scores."""
    if backend.exact:
        assert ids(got) == want_ids
        assert scores(got) == pytest.approx(want, abs=1e-4)
    else:
        assert len(set(ids(got)) & set(want_ids)) / max(len(want_ids), 1) >= 0.95
        assert scores(got) == sorted(scores(got), reverse=True)


# ---------------------------------------------------------------------------------------------------
# insert, upsert, delete
# ---------------------------------------------------------------------------------------------------


async def test_vector_search_equals_exact_cosine(backend: BackendUnderTest) -> None:
    chunks = random_chunks(300, 32, seed=1)
    index_id = await new_index(backend, 32)
    await backend.provider.insert_chunks(index_id, chunks[:150])
    await backend.provider.insert_chunks(index_id, chunks[150:])
    rng = np.random.default_rng(2)
    recalls = []
    for _ in range(20):
        query = rng.standard_normal(32).tolist()
        want_ids, want = exact_top_k(chunks, query, 10)
        got = await backend.provider.query(index_id, mode="vector", k=10, embedding=query)
        assert len(got) == 10
        if backend.exact:
            assert_vector_results(backend, got, want_ids, want)
        recalls.append(len(set(ids(got)) & set(want_ids)) / 10)
        # Whatever the backend, a returned score is the true cosine similarity of that chunk.
        truth = {c.chunk_id: c for c in chunks}
        for item in got:
            true = exact_top_k([truth[item.chunk.chunk_id]], query, 1)[1][0]
            assert item.score == pytest.approx(true, abs=1e-4)
            assert item.chunk.embedding is None or len(item.chunk.embedding) == 32
    assert np.mean(recalls) >= 0.95


async def test_results_carry_the_whole_chunk(backend: BackendUnderTest, corpus: Corpus) -> None:
    index_id = await corpus_index(backend, corpus)
    source = corpus.chunks[5]
    [hit] = await backend.provider.query(index_id, mode="vector", k=1, embedding=source.embedding)
    assert hit.chunk.chunk_id == source.chunk_id
    assert hit.chunk.document_id == source.document_id
    assert hit.chunk.content == source.content
    assert hit.chunk.attributes == source.attributes
    assert hit.chunk.metadata == source.metadata
    assert hit.score == pytest.approx(1.0, abs=1e-4)
    assert type(hit.chunk.attributes["published"]) is bool and type(hit.chunk.attributes["year"]) is int


async def test_semantic_search_on_real_text(backend: BackendUnderTest, corpus: Corpus) -> None:
    index_id = await corpus_index(backend, corpus)
    expected_document = {
        "How do I make bread at home?": "doc-bread",
        "What happens when a big star dies?": "doc-stars",
        "Running several tasks concurrently in Python": "doc-python",
        "Ancient engineering for moving water": "doc-rome",
        "Growing vegetables in the backyard": "doc-garden",
        "Saving money for retirement": "doc-money",
    }
    for query, document in expected_document.items():
        got = await backend.provider.query(index_id, mode="vector", k=3, embedding=corpus.embed(query))
        assert got[0].chunk.document_id == document, (query, [(r.chunk.content, r.score) for r in got])
        want_ids, want = exact_top_k(corpus.chunks, corpus.embed(query), 3)
        assert_vector_results(backend, got, want_ids, want)


async def test_upsert_replaces_by_chunk_id(backend: BackendUnderTest, corpus: Corpus) -> None:
    index_id = await corpus_index(backend, corpus)
    old = corpus.chunks[0]
    replacement = Chunk(
        chunk_id=old.chunk_id,
        document_id="doc-replaced",
        content="Quasars are powered by supermassive black holes.",
        embedding=corpus.chunks[5].embedding,  # now points where the neutron-star sentence does
        attributes={"topic": "replaced"},
    )
    await backend.provider.insert_chunks(index_id, [replacement])
    assert len(await everything(backend, index_id, corpus.dimension)) == len(corpus.chunks)
    got = await backend.provider.query(index_id, mode="vector", k=2, embedding=corpus.chunks[5].embedding)
    assert sorted(ids(got)) == sorted([old.chunk_id, corpus.chunks[5].chunk_id])
    hit = next(r for r in got if r.chunk.chunk_id == old.chunk_id)
    assert (hit.chunk.content, hit.chunk.document_id, hit.chunk.attributes) == (
        replacement.content,
        "doc-replaced",
        {"topic": "replaced"},
    )
    # The keyword index follows the upsert: the old words are gone, the new ones are found.
    assert old.chunk_id not in ids(await backend.provider.query(index_id, mode="keyword", k=50, query_text="knead"))
    assert ids(await backend.provider.query(index_id, mode="keyword", k=5, query_text="quasars")) == [old.chunk_id]
    # A batch repeating a chunk id keeps the last one.
    twice = [
        replacement.model_copy(update={"content": "first quokka"}),
        replacement.model_copy(update={"content": "second wombat"}),
    ]
    await backend.provider.insert_chunks(index_id, twice)
    assert ids(await backend.provider.query(index_id, mode="keyword", k=5, query_text="quokka")) == []
    assert ids(await backend.provider.query(index_id, mode="keyword", k=5, query_text="wombat")) == [old.chunk_id]


async def test_delete_document(backend: BackendUnderTest, corpus: Corpus) -> None:
    index_id = await corpus_index(backend, corpus)
    await backend.provider.delete_document(index_id, "doc-bread")
    remaining = await everything(backend, index_id, corpus.dimension)
    assert remaining == sorted(c.chunk_id for c in corpus.chunks if c.document_id != "doc-bread")
    got = await backend.provider.query(index_id, mode="keyword", k=50, query_text="sourdough dough loaf")
    assert all(r.chunk.document_id != "doc-bread" for r in got)
    await backend.provider.delete_document(index_id, "doc-bread")  # again: nothing to do, no error
    await backend.provider.delete_document(index_id, "never-existed")
    # Deleted ids can come back.
    await backend.provider.insert_chunks(index_id, [c for c in corpus.chunks if c.document_id == "doc-bread"])
    assert await everything(backend, index_id, corpus.dimension) == sorted(c.chunk_id for c in corpus.chunks)


async def test_indexes_are_independent_and_ids_are_sanitized(backend: BackendUnderTest, corpus: Corpus) -> None:
    # Ids that differ only in case or punctuation must not share tables or collections.
    first, second = "vs_Odd-Name.1/é\"'", "vs_odd_name_1__'"
    for index_id in (first, second):
        await backend.provider.create_index(index_id, corpus.dimension)
    try:
        await backend.provider.insert_chunks(first, corpus.chunks[:3])
        await backend.provider.insert_chunks(second, corpus.chunks[3:5])
        assert await everything(backend, first, corpus.dimension) == sorted(c.chunk_id for c in corpus.chunks[:3])
        assert await everything(backend, second, corpus.dimension) == sorted(c.chunk_id for c in corpus.chunks[3:5])
    finally:
        await backend.provider.delete_index(first)
        await backend.provider.delete_index(second)


# ---------------------------------------------------------------------------------------------------
# keyword search
# ---------------------------------------------------------------------------------------------------


async def test_keyword_rare_term_ranks_first(backend: BackendUnderTest, corpus: Corpus) -> None:
    index_id = await corpus_index(backend, corpus)
    got = await backend.provider.query(index_id, mode="keyword", k=5, query_text="the sourdough")
    assert got[0].chunk.content.startswith("A sourdough starter")
    assert scores(got) == sorted(scores(got), reverse=True)
    assert all(s > 0 for s in scores(got))
    # More matching terms rank higher than fewer.
    got = await backend.provider.query(index_id, mode="keyword", k=5, query_text="penalty kick foul")
    assert got[0].chunk.document_id == "doc-football" and "penalty kick" in got[0].chunk.content
    # Case and accents do not matter.
    got = await backend.provider.query(index_id, mode="keyword", k=3, query_text="WIMBLEDÓN")
    assert ids(got)[:1] == [c.chunk_id for c in corpus.chunks if "Wimbledon" in c.content]


# Query text that would break a backend passing it to its own query syntax unescaped.
HOSTILE_KEYWORD_QUERIES = [
    'what\'s "C++"?',
    "C++",
    'unbalanced "quote',
    "AND OR NOT",
    "NEAR(a b, 3)",
    "col:umn ^start *star* -minus +plus",
    "((((",
    "'; DROP TABLE chunks; --",
    "tab\tnew\nline\x00nul",
    "🚀 émoji ünïcode 中文",
    "a" * 5000,
]


async def test_keyword_queries_never_break(backend: BackendUnderTest, corpus: Corpus) -> None:
    """Every hostile query on one index (they only read); a query that raises fails with its text."""
    index_id = await corpus_index(backend, corpus)
    for text in HOSTILE_KEYWORD_QUERIES:
        try:
            got = await backend.provider.query(index_id, mode="keyword", k=5, query_text=text)
        except Exception as exc:
            raise AssertionError(f"keyword query {text[:40]!r} raised {exc!r}") from exc
        assert scores(got) == sorted(scores(got), reverse=True), text[:40]
        if "C++" in text:
            assert {c.chunk_id for c in corpus.chunks if "C++" in c.content} <= set(ids(got)), text


async def test_keyword_query_without_terms_finds_nothing(backend: BackendUnderTest, corpus: Corpus) -> None:
    index_id = await corpus_index(backend, corpus)
    assert await backend.provider.query(index_id, mode="keyword", k=5, query_text="?!... --- ***") == []
    assert await backend.provider.query(index_id, mode="keyword", k=5, query_text="xylophonist") == []


# ---------------------------------------------------------------------------------------------------
# hybrid search
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "options",
    [
        None,
        HybridOptions(),
        HybridOptions(ranker="rrf", rrf_k=1),
        HybridOptions(ranker="weighted", vector_weight=0.7, keyword_weight=0.3),
        HybridOptions(ranker="weighted", vector_weight=0.0, keyword_weight=1.0),
    ],
    ids=["default", "rrf", "rrf-k1", "weighted", "keyword-only-weight"],
)
async def test_hybrid_is_fusion_of_vector_and_keyword(
    backend: BackendUnderTest, corpus: Corpus, options: HybridOptions | None
) -> None:
    index_id = await corpus_index(backend, corpus)
    for query in ("How do I make bread at home?", "Keeping database tables consistent", "Who won the football game?"):
        for k in (1, 5):
            n = hybrid_candidates(k)
            embedding = corpus.embed(query)
            vector = await backend.provider.query(index_id, mode="vector", k=n, embedding=embedding)
            keyword = await backend.provider.query(index_id, mode="keyword", k=n, query_text=query)
            got = await backend.provider.query(
                index_id, mode="hybrid", k=k, embedding=embedding, query_text=query, hybrid=options
            )
            want = fuse(vector, keyword, options, k, query_text=query)
            assert ids(got) == ids(want)
            assert scores(got) == pytest.approx(scores(want))
            assert len(got) == min(k, len(set(ids(vector)) | set(ids(keyword))))


async def test_hybrid_finds_what_only_keywords_find(backend: BackendUnderTest, corpus: Corpus) -> None:
    index_id = await corpus_index(backend, corpus)
    # "Rubicon" is a rare exact term; the embedding of an unrelated question will not find it.
    got = await backend.provider.query(
        index_id, mode="hybrid", k=5, embedding=corpus.embed("Saving money for retirement"), query_text="Rubicon"
    )
    assert any("Rubicon" in r.chunk.content for r in got)


# ---------------------------------------------------------------------------------------------------
# filters
# ---------------------------------------------------------------------------------------------------


def cmp(op: str, key: str, value: Any) -> ComparisonFilter:
    return ComparisonFilter(type=op, key=key, value=value)


def both(*filters: Filter) -> CompoundFilter:
    return CompoundFilter(type="and", filters=list(filters))


def either(*filters: Filter) -> CompoundFilter:
    return CompoundFilter(type="or", filters=list(filters))


FILTERS: dict[str, Filter] = {
    "eq-string": cmp("eq", "topic", "cooking"),
    "ne-string": cmp("ne", "topic", "cooking"),
    "gt-string": cmp("gt", "topic", "history"),
    "lte-string": cmp("lte", "topic", "databases"),
    "in-string": cmp("in", "topic", ["music", "finance", "nope"]),
    "nin-string": cmp("nin", "topic", ["music", "finance"]),
    "eq-int": cmp("eq", "year", 2021),
    "ne-int": cmp("ne", "year", 2021),
    "gt-int": cmp("gt", "year", 2018),
    "gte-int": cmp("gte", "year", 2018),
    "lt-int": cmp("lt", "year", 2010),
    "lte-int": cmp("lte", "year", 2010),
    "eq-float": cmp("eq", "rating", 4.5),
    "eq-int-vs-float": cmp("eq", "rating", 4),  # 4 == 4.0
    "gt-float": cmp("gt", "rating", 4.4),
    "lte-float-missing": cmp("lte", "rating", 3.9),  # chunks without a rating never match
    "in-numbers-mixed": cmp("in", "year", [2019, 2021.0, "2016"]),  # the string never matches
    "eq-bool": cmp("eq", "published", True),
    "ne-bool": cmp("ne", "published", True),  # false or missing
    "eq-false": cmp("eq", "published", False),
    "in-bool": cmp("in", "published", [False]),
    "nin-bool": cmp("nin", "published", [True]),
    "gt-bool": cmp("gt", "published", False),
    "bool-is-not-number": cmp("eq", "published", 1),
    "number-is-not-string": cmp("eq", "year", "2021"),
    "ordering-mixed-types": cmp("gt", "year", "1000"),
    "missing-eq": cmp("eq", "label", "faq"),
    "missing-ne": cmp("ne", "label", "faq"),
    "missing-nin": cmp("nin", "label", ["faq"]),
    "unknown-key-eq": cmp("eq", "nope", "x"),
    "unknown-key-ne": cmp("ne", "nope", "x"),
    "in-empty": cmp("in", "topic", []),
    "nin-empty": cmp("nin", "topic", []),
    "and": both(cmp("eq", "topic", "programming"), cmp("gte", "year", 2016)),
    "or": either(cmp("eq", "topic", "music"), cmp("lt", "rating", 3.5)),
    "nested": either(
        both(cmp("eq", "topic", "cooking"), cmp("eq", "published", True)),
        both(cmp("in", "topic", ["astronomy", "history"]), either(cmp("gt", "rating", 4.4), cmp("lt", "year", 2000))),
    ),
    "nested-negations": both(
        cmp("ne", "topic", "sports"), either(cmp("nin", "year", [2019, 2021]), cmp("ne", "published", True))
    ),
    "and-empty": both(),
    "or-empty": either(),
}


async def _filter_disagreements(backend: BackendUnderTest, corpus: Corpus, index_id: str, name: str) -> list[str]:
    """How one filter's results differ from the reference evaluation (empty when they agree)."""
    flt = FILTERS[name]
    allowed = {c.chunk_id for c in corpus.chunks if matches(flt, c.attributes)}
    embedding = corpus.embed("How do I make bread at home?")
    wrong: list[str] = []

    # Vector: everything that matches, and the filtered top-3 is the unfiltered ranking filtered
    # (a backend that filters after a top-k cut would return fewer or different chunks).
    got = await backend.provider.query(index_id, mode="vector", k=EVERYTHING, embedding=embedding, filters=flt)
    if set(ids(got)) != allowed:
        wrong.append(f"vector, all: got {sorted(ids(got))}, want {sorted(allowed)}")
    ranking, _ = exact_top_k(corpus.chunks, embedding, EVERYTHING)
    got = await backend.provider.query(index_id, mode="vector", k=3, embedding=embedding, filters=flt)
    if ids(got) != [cid for cid in ranking if cid in allowed][:3]:
        wrong.append(f"vector, top 3: got {ids(got)}")
    if not all(matches(flt, r.chunk.attributes) for r in got):
        wrong.append("vector, top 3: a result does not match the filter")

    # Keyword: BM25 statistics do not depend on the filter, so filtering keeps the unfiltered order.
    unfiltered = await backend.provider.query(index_id, mode="keyword", k=EVERYTHING, query_text=COMMON_WORDS)
    expected = [cid for cid in ids(unfiltered) if cid in allowed]
    got = await backend.provider.query(index_id, mode="keyword", k=EVERYTHING, query_text=COMMON_WORDS, filters=flt)
    if ids(got) != expected:
        wrong.append(f"keyword, all: got {ids(got)}, want {expected}")
    got = await backend.provider.query(index_id, mode="keyword", k=2, query_text=COMMON_WORDS, filters=flt)
    if ids(got) != expected[:2]:
        wrong.append(f"keyword, top 2: got {ids(got)}, want {expected[:2]}")

    # Hybrid applies the filter to both sides.
    got = await backend.provider.query(
        index_id, mode="hybrid", k=EVERYTHING, embedding=embedding, query_text=COMMON_WORDS, filters=flt
    )
    if set(ids(got)) != allowed:
        wrong.append(f"hybrid, all: got {sorted(ids(got))}, want {sorted(allowed)}")
    return [f"{name}: {problem}" for problem in wrong]


async def test_filters_agree_with_reference(backend: BackendUnderTest, corpus: Corpus) -> None:
    """Every filter in FILTERS, on one index per backend: the queries only read, so one build serves all
    of them (a fresh index per filter cost a backend open and a corpus insert each, minutes in all); the
    failure lists every filter that disagrees, by name."""
    index_id = await corpus_index(backend, corpus)
    wrong: list[str] = []
    for name in FILTERS:
        wrong += await _filter_disagreements(backend, corpus, index_id, name)
    assert not wrong, "\n".join(wrong)


async def test_filter_on_large_index_is_pushed_down(backend: BackendUnderTest) -> None:
    """A selective filter over many random vectors still returns a full, correct top-k."""
    chunks = random_chunks(600, 16, seed=7)
    index_id = await new_index(backend, 16)
    await backend.provider.insert_chunks(index_id, chunks)
    query = np.random.default_rng(8).standard_normal(16).tolist()
    for flt in (
        both(cmp("eq", "parity", "odd"), cmp("lt", "i", 120)),  # 60 of 600
        cmp("eq", "parity", "odd"),  # 300 of 600
    ):
        allowed = [c for c in chunks if matches(flt, c.attributes)]
        got = await backend.provider.query(index_id, mode="vector", k=10, embedding=query, filters=flt)
        want_ids, want = exact_top_k(allowed, query, 10)
        assert_vector_results(backend, got, want_ids, want)
        assert all(matches(flt, r.chunk.attributes) for r in got)
        got = await backend.provider.query(
            index_id, mode="vector", k=10, embedding=query, filters=flt, exclude_documents=["r-doc1", "r-doc3"]
        )
        want_ids, want = exact_top_k([c for c in allowed if c.document_id not in ("r-doc1", "r-doc3")], query, 10)
        assert_vector_results(backend, got, want_ids, want)


async def test_invalid_filters_are_rejected(backend: BackendUnderTest, corpus: Corpus) -> None:
    index_id = await corpus_index(backend, corpus)
    embedding = corpus.chunks[0].embedding
    for bad in (cmp("eq", "topic", ["a", "b"]), cmp("in", "topic", "cooking"), both(cmp("gt", "year", [1]))):
        with pytest.raises(InvalidRequestError) as err:
            await backend.provider.query(index_id, mode="vector", k=3, embedding=embedding, filters=bad)
        assert err.value.param is not None and err.value.param.startswith("filters")


# ---------------------------------------------------------------------------------------------------
# exclusion, sizes, errors
# ---------------------------------------------------------------------------------------------------


async def test_exclude_documents(backend: BackendUnderTest, corpus: Corpus) -> None:
    index_id = await corpus_index(backend, corpus)
    hidden = ["doc-bread", "doc-curry"]
    embedding = corpus.embed("How do I make bread at home?")
    for mode in ("vector", "keyword", "hybrid"):
        kwargs: dict[str, Any] = {"embedding": embedding, "query_text": "bread dough oven curry the"}
        got = await backend.provider.query(index_id, mode=mode, k=EVERYTHING, exclude_documents=hidden, **kwargs)
        assert got and not {r.chunk.document_id for r in got} & set(hidden), mode
    # With a filter too, and a top-k that the hidden documents would otherwise have filled.
    got = await backend.provider.query(
        index_id,
        mode="vector",
        k=3,
        embedding=embedding,
        exclude_documents=hidden,
        filters=cmp("eq", "topic", "cooking"),
    )
    assert got == []
    got = await backend.provider.query(
        index_id, mode="vector", k=3, embedding=embedding, exclude_documents=["doc-bread"]
    )
    ranking, _ = exact_top_k([c for c in corpus.chunks if c.document_id != "doc-bread"], embedding, 3)
    assert ids(got) == ranking
    # Excluding unknown documents changes nothing.
    everything_ids = ids(await backend.provider.query(index_id, mode="vector", k=EVERYTHING, embedding=embedding))
    got = await backend.provider.query(
        index_id, mode="vector", k=EVERYTHING, embedding=embedding, exclude_documents=["nope"]
    )
    assert ids(got) == everything_ids


async def test_k_larger_than_index_and_empty_index(backend: BackendUnderTest, corpus: Corpus) -> None:
    index_id = await new_index(backend, corpus.dimension)
    embedding = corpus.chunks[0].embedding
    for mode in ("vector", "keyword", "hybrid"):
        assert await backend.provider.query(index_id, mode=mode, k=10, embedding=embedding, query_text="bread") == []
    await backend.provider.insert_chunks(index_id, corpus.chunks[:4])
    got = await backend.provider.query(index_id, mode="vector", k=EVERYTHING, embedding=embedding)
    assert sorted(ids(got)) == sorted(c.chunk_id for c in corpus.chunks[:4])
    got = await backend.provider.query(index_id, mode="hybrid", k=EVERYTHING, embedding=embedding, query_text="dough")
    assert sorted(ids(got)) == sorted(c.chunk_id for c in corpus.chunks[:4])
    await backend.provider.insert_chunks(index_id, [])  # an empty batch is fine


async def test_unknown_index_is_not_found(backend: BackendUnderTest, corpus: Corpus) -> None:
    missing = backend.new_index_id()
    embedding = corpus.chunks[0].embedding
    for mode in ("vector", "keyword", "hybrid"):
        with pytest.raises(NotFoundError) as err:
            await backend.provider.query(missing, mode=mode, k=3, embedding=embedding, query_text="bread")
        assert err.value.kind == "Vector store index" and err.value.identifier == missing
    with pytest.raises(NotFoundError):
        await backend.provider.insert_chunks(missing, corpus.chunks[:1])
    with pytest.raises(NotFoundError):
        await backend.provider.delete_document(missing, "doc-bread")
    with pytest.raises(NotFoundError):
        await backend.provider.delete_index(missing)


async def test_invalid_requests_name_the_param(backend: BackendUnderTest, corpus: Corpus) -> None:
    index_id = await corpus_index(backend, corpus)
    provider = backend.provider
    cases: list[tuple[dict[str, Any], str]] = [
        ({"mode": "vector", "k": 3, "embedding": [0.1] * (corpus.dimension - 1)}, "embedding"),
        ({"mode": "hybrid", "k": 3, "embedding": [0.1] * 7, "query_text": "bread"}, "embedding"),
        ({"mode": "vector", "k": 3}, "embedding"),
        ({"mode": "vector", "k": 3, "query_text": "bread"}, "embedding"),
        ({"mode": "hybrid", "k": 3, "query_text": "bread"}, "embedding"),
        ({"mode": "keyword", "k": 3}, "query_text"),
        ({"mode": "keyword", "k": 3, "query_text": "   "}, "query_text"),
        ({"mode": "hybrid", "k": 3, "embedding": corpus.chunks[0].embedding}, "query_text"),
        ({"mode": "vector", "k": 0, "embedding": corpus.chunks[0].embedding}, "k"),
        ({"mode": "semantic", "k": 3, "embedding": corpus.chunks[0].embedding}, "mode"),
        ({"mode": "vector", "k": 3, "embedding": [float("nan")] * corpus.dimension}, "embedding"),
        ({"mode": "vector", "k": 3, "embedding": [0.0] * corpus.dimension}, "embedding"),
    ]
    for kwargs, param in cases:
        with pytest.raises(InvalidRequestError) as err:
            await provider.query(index_id, **kwargs)
        assert err.value.param == param, kwargs
    # Insertion: the embedding is required and must fit the index.
    good = corpus.chunks[0]
    for bad in (good.model_copy(update={"embedding": None}), good.model_copy(update={"embedding": [1.0, 2.0]})):
        with pytest.raises(InvalidRequestError) as err:
            await provider.insert_chunks(index_id, [corpus.chunks[1], bad])
        assert err.value.param == "chunks[1].embedding"
    # A rejected batch changes nothing.
    assert len(await everything(backend, index_id, corpus.dimension)) == len(corpus.chunks)
    with pytest.raises(InvalidRequestError) as err:
        await provider.create_index(backend.new_index_id(), 0)
    assert err.value.param == "dimension"


async def test_create_index_is_idempotent(backend: BackendUnderTest, corpus: Corpus) -> None:
    index_id = await corpus_index(backend, corpus)
    await backend.provider.create_index(index_id, corpus.dimension)  # same dimension: nothing happens
    assert len(await everything(backend, index_id, corpus.dimension)) == len(corpus.chunks)


# ---------------------------------------------------------------------------------------------------
# lifecycle, persistence, concurrency
# ---------------------------------------------------------------------------------------------------


async def test_delete_index(backend: BackendUnderTest, corpus: Corpus) -> None:
    index_id = await corpus_index(backend, corpus)
    await backend.provider.delete_index(index_id)
    with pytest.raises(NotFoundError):
        await backend.provider.query(index_id, mode="vector", k=3, embedding=corpus.chunks[0].embedding)
    with pytest.raises(NotFoundError):
        await backend.provider.query(index_id, mode="keyword", k=3, query_text="bread")
    # The id can be used again, starting empty, even with another dimension.
    await backend.provider.create_index(index_id, 8)
    assert await backend.provider.query(index_id, mode="vector", k=3, embedding=[1.0] * 8) == []
    await backend.provider.delete_index(index_id)


async def test_persistence_across_reopen(backend: BackendUnderTest, corpus: Corpus) -> None:
    if not backend.persistent:
        pytest.skip(f"{backend.name} does not keep data across a reopen (declared persistent=False)")
    index_id = await corpus_index(backend, corpus)
    await backend.provider.delete_document(index_id, "doc-tennis")
    deleted = await new_index(backend, 4)
    await backend.provider.delete_index(deleted)
    embedding = corpus.embed("Who won the football game?")
    requests: list[dict[str, Any]] = [
        {"mode": "vector", "k": 5, "embedding": embedding},
        {"mode": "keyword", "k": 5, "query_text": "penalty match score"},
        {"mode": "hybrid", "k": 5, "embedding": embedding, "query_text": "penalty match score"},
        {"mode": "vector", "k": 5, "embedding": embedding, "filters": cmp("eq", "topic", "sports")},
    ]

    async def run_all() -> list[list[tuple[str, float]]]:
        results = []
        for request in requests:
            got = await backend.provider.query(index_id, **request)
            results.append([(r.chunk.chunk_id, round(r.score, 5)) for r in got])
        return results

    before = await run_all()
    await backend.reopen()
    assert await run_all() == before
    assert len(await everything(backend, index_id, corpus.dimension)) == len(corpus.chunks) - 2
    with pytest.raises(NotFoundError):
        await backend.provider.query(deleted, mode="vector", k=1, embedding=[1.0, 0, 0, 0])
    # Still writable after the reopen, and the writes survive another one.
    await backend.provider.insert_chunks(index_id, [c for c in corpus.chunks if c.document_id == "doc-tennis"])
    await backend.reopen()
    assert len(await everything(backend, index_id, corpus.dimension)) == len(corpus.chunks)


async def test_two_instances_share_one_store(backend: BackendUnderTest, corpus: Corpus) -> None:
    """Two providers on one store (two workers): each sees the other's writes on its next query."""
    if not backend.shared:
        pytest.skip(f"{backend.name} cannot be opened twice at once (declared shared=False)")
    index_id = await corpus_index(backend, corpus)
    first = backend.provider
    embedding = corpus.embed("How do I make bread at home?")
    other = await backend.factory(backend.path)
    try:
        # Both have searched (so an in-memory copy is loaded in each) before the writes below.
        for provider in (first, other):
            got = await provider.query(index_id, mode="vector", k=3, embedding=embedding)
            assert got[0].chunk.document_id == "doc-bread"
        await first.delete_document(index_id, "doc-bread")
        for mode in ("vector", "keyword", "hybrid"):
            got = await other.query(index_id, mode=mode, k=EVERYTHING, embedding=embedding, query_text="dough bread")
            assert "doc-bread" not in {r.chunk.document_id for r in got}, mode
        new = Chunk(chunk_id="new", document_id="doc-new", content="Rye bread is dense.", embedding=embedding)
        await other.insert_chunks(index_id, [new])
        got = await first.query(index_id, mode="vector", k=1, embedding=embedding)
        assert ids(got) == ["new"]
        assert ids(await first.query(index_id, mode="keyword", k=1, query_text="rye")) == ["new"]
        await other.delete_index(index_id)
        with pytest.raises(NotFoundError):
            await first.query(index_id, mode="vector", k=1, embedding=embedding)
        # Re-created by one with another dimension: the other takes it as it now is.
        await first.create_index(index_id, 3)
        await first.insert_chunks(index_id, [new.model_copy(update={"embedding": [0.0, 1.0, 0.0]})])
        got = await other.query(index_id, mode="vector", k=EVERYTHING, embedding=[0.0, 2.0, 0.1])
        assert ids(got) == ["new"]
        await other.insert_chunks(index_id, [new.model_copy(update={"chunk_id": "x", "embedding": [1.0, 0, 0]})])
        with pytest.raises(InvalidRequestError):
            await other.query(index_id, mode="vector", k=1, embedding=embedding)
    finally:
        await other.shutdown()


async def test_concurrent_inserts_and_queries(backend: BackendUnderTest, corpus: Corpus) -> None:
    index_id = await new_index(backend, corpus.dimension)
    await backend.provider.insert_chunks(index_id, corpus.chunks[:6])
    extra = random_chunks(20 * 5, corpus.dimension, seed=11, prefix="c", documents=20)
    embedding = corpus.embed("How do I make bread at home?")

    async def insert(i: int) -> None:
        await backend.provider.insert_chunks(index_id, extra[i * 5 : (i + 1) * 5])

    async def search(i: int) -> list[ScoredChunk]:
        mode = ("vector", "keyword", "hybrid")[i % 3]
        return await backend.provider.query(index_id, mode=mode, k=5, embedding=embedding, query_text="dough bread")

    outcomes = await asyncio.gather(*[insert(i) for i in range(20)], *[search(i) for i in range(20)])
    for results in outcomes[20:]:
        assert results and scores(results) == sorted(scores(results), reverse=True)
    want = sorted([c.chunk_id for c in corpus.chunks[:6]] + [c.chunk_id for c in extra])
    assert await everything(backend, index_id, corpus.dimension) == want
    # Concurrent upserts of the same ids and document deletes leave a consistent index.
    await asyncio.gather(
        *[backend.provider.insert_chunks(index_id, extra[:10]) for _ in range(5)],
        *[backend.provider.delete_document(index_id, f"c-doc{d}") for d in range(10, 20)],
    )
    want = sorted([c.chunk_id for c in corpus.chunks[:6]] + [c.chunk_id for c in extra if int(c.document_id[5:]) < 10])
    assert await everything(backend, index_id, corpus.dimension) == want
    got = await backend.provider.query(index_id, mode="vector", k=1, embedding=extra[3].embedding)
    assert ids(got) == [extra[3].chunk_id]


async def test_heavy_churn_keeps_search_correct(backend: BackendUnderTest) -> None:
    """Most of an index deleted and part of it rewritten: in-memory tombstones, compaction and
    graph rebuilds (where a backend has them) must leave search equal to exact search on what is left."""
    chunks = random_chunks(3000, 16, seed=31, documents=30)
    index_id = await new_index(backend, 16)
    query = np.random.default_rng(32).standard_normal(16).tolist()
    await backend.provider.insert_chunks(index_id, chunks[:1500])
    await backend.provider.query(index_id, mode="vector", k=10, embedding=query)  # searched before the churn
    await backend.provider.insert_chunks(index_id, chunks[1500:])
    for document in range(20):
        await backend.provider.delete_document(index_id, f"r-doc{document}")
    moved = [c.model_copy(update={"embedding": list(reversed(c.embedding or []))}) for c in chunks[20:30]]
    await backend.provider.insert_chunks(index_id, moved)  # ids of documents 20-29 get new vectors
    live = {c.chunk_id: c for c in chunks if int(c.document_id[5:]) >= 20}
    live.update({c.chunk_id: c for c in moved})
    assert await everything(backend, index_id, 16) == sorted(live)
    for seed in range(5):
        probe = np.random.default_rng(100 + seed).standard_normal(16).tolist()
        want_ids, want = exact_top_k(list(live.values()), probe, 10)
        got = await backend.provider.query(index_id, mode="vector", k=10, embedding=probe)
        assert_vector_results(backend, got, want_ids, want)
    if backend.persistent:
        await backend.reopen()
        want_ids, want = exact_top_k(list(live.values()), query, 10)
        got = await backend.provider.query(index_id, mode="vector", k=10, embedding=query)
        assert_vector_results(backend, got, want_ids, want)


async def test_approximate_backends_reach_recall(backend: BackendUnderTest) -> None:
    """recall@10 >= 0.95 against exact search on embedding-like (low-rank, clustered) vectors."""
    rng = np.random.default_rng(21)
    basis = rng.standard_normal((12, 48))
    points = rng.standard_normal((1500, 12)) @ basis + 0.3 * rng.standard_normal((1500, 48))
    chunks = [
        Chunk(chunk_id=f"p{i:05d}", document_id=f"d{i % 30}", content="point", embedding=points[i].tolist())
        for i in range(len(points))
    ]
    index_id = await new_index(backend, 48)
    for start in range(0, len(chunks), 500):
        await backend.provider.insert_chunks(index_id, chunks[start : start + 500])
    queries = rng.standard_normal((30, 12)) @ basis + 0.3 * rng.standard_normal((30, 48))
    recalls = []
    for query in queries:
        want_ids, want = exact_top_k(chunks, query.tolist(), 10)
        got = await backend.provider.query(index_id, mode="vector", k=10, embedding=query.tolist())
        recalls.append(len(set(ids(got)) & set(want_ids)) / 10)
        if backend.exact:
            assert_vector_results(backend, got, want_ids, want)
    assert np.mean(recalls) >= 0.95
