"""Hybrid fusion: reciprocal-rank and weighted, deterministic ties, and which keyword hits vote."""

from __future__ import annotations

import pytest

from underlay.api.vector_io import Chunk, HybridOptions, ScoredChunk
from underlay.providers.utils.vector.fusion import (
    contains_all,
    fuse,
    min_max_normalise,
    query_terms,
    rank,
    rrf_scores,
    stem,
    weighted_scores,
)


def scored(*items: tuple[str, float]) -> list[ScoredChunk]:
    return [ScoredChunk(chunk=Chunk(chunk_id=cid, document_id="d", content=cid), score=s) for cid, s in items]


def texts(*items: tuple[str, str, float]) -> list[ScoredChunk]:
    """Hits with real text: ``(chunk_id, content, score)``."""
    return [ScoredChunk(chunk=Chunk(chunk_id=cid, document_id="d", content=text), score=s) for cid, text, s in items]


def test_rrf_formula() -> None:
    fused = rrf_scores([["a", "b", "c"], ["c", "a"]], rrf_k=60)
    assert fused["a"] == pytest.approx(1 / 61 + 1 / 62)
    assert fused["b"] == pytest.approx(1 / 62)
    assert fused["c"] == pytest.approx(1 / 63 + 1 / 61)
    assert [cid for cid, _ in rank(fused)] == ["a", "c", "b"]


def test_rrf_k_changes_weight_of_top_ranks() -> None:
    # With a small k the top rank dominates; with a large k appearing in both lists dominates.
    lists = [["x", "y"], ["z", "q", "r", "s", "t", "y"]]
    assert rank(rrf_scores(lists, rrf_k=1))[0][0] == "x"
    assert rank(rrf_scores(lists, rrf_k=1000))[0][0] == "y"


def test_rrf_counts_an_id_once_per_list() -> None:
    assert rrf_scores([["a", "a", "b"]], rrf_k=10) == {"a": pytest.approx(1 / 11), "b": pytest.approx(1 / 13)}


def test_rrf_rejects_bad_k() -> None:
    with pytest.raises(ValueError):
        rrf_scores([["a"]], rrf_k=0)


def test_ties_break_by_id() -> None:
    # b and a tie (each first in one list): a comes first, every time, whatever the input order.
    assert [cid for cid, _ in rank(rrf_scores([["b"], ["a"]]))] == ["a", "b"]
    assert [cid for cid, _ in rank(rrf_scores([["a"], ["b"]]))] == ["a", "b"]
    assert [cid for cid, _ in rank({"z": 1.0, "m": 1.0, "a": 0.5}, k=2)] == ["m", "z"]


def test_min_max_normalise() -> None:
    assert min_max_normalise({"a": 2.0, "b": 4.0, "c": 3.0}) == {"a": 0.0, "b": 1.0, "c": 0.5}
    assert min_max_normalise({"a": -7.0, "b": -7.0}) == {"a": 1.0, "b": 1.0}
    assert min_max_normalise({}) == {}


def test_weighted_scores() -> None:
    vector = {"a": 0.9, "b": 0.5, "c": 0.1}
    keyword = {"c": 12.0, "d": 2.0}
    fused = weighted_scores([(vector, 0.7), (keyword, 0.3)])
    assert fused["a"] == pytest.approx(0.7)
    assert fused["b"] == pytest.approx(0.7 * 0.5)
    assert fused["c"] == pytest.approx(0.0 + 0.3)  # last by vector, first by keyword
    assert fused["d"] == pytest.approx(0.0)  # last by keyword, absent from vector
    assert weighted_scores([(vector, 0.0), (keyword, 1.0)])["a"] == 0.0


def test_fuse_rrf_returns_chunks_with_fused_scores() -> None:
    vector = scored(("a", 0.9), ("b", 0.8), ("c", 0.1))
    keyword = scored(("c", 7.0), ("d", 3.0))
    got = fuse(vector, keyword, None, k=3)
    assert [r.chunk.chunk_id for r in got] == ["c", "a", "b"]
    assert got[0].score == pytest.approx(1 / 63 + 1 / 61)
    assert got[0].chunk.content == "c"
    assert fuse(vector, keyword, HybridOptions(), k=10)[-1].chunk.chunk_id == "d"


def test_fuse_weighted() -> None:
    vector = scored(("a", 0.9), ("b", 0.5), ("c", 0.1))
    keyword = scored(("c", 12.0), ("d", 2.0))
    options = HybridOptions(ranker="weighted", vector_weight=0.7, keyword_weight=0.3)
    got = fuse(vector, keyword, options, k=4)
    assert [(r.chunk.chunk_id, round(r.score, 6)) for r in got] == [("a", 0.7), ("b", 0.35), ("c", 0.3), ("d", 0.0)]
    # Keyword-only weighting ranks by keyword; ties (all vector-only chunks at 0) by id.
    options = HybridOptions(ranker="weighted", vector_weight=0.0, keyword_weight=1.0)
    assert [r.chunk.chunk_id for r in fuse(vector, keyword, options, k=5)] == ["c", "a", "b", "d"]


def test_fuse_edge_cases() -> None:
    assert fuse([], [], None, k=5) == []
    only = scored(("x", 0.3))
    assert [r.chunk.chunk_id for r in fuse(only, [], None, k=5)] == ["x"]
    weighted = fuse([], only, HybridOptions(ranker="weighted"), k=5)
    assert weighted[0].score == pytest.approx(0.5)  # a single score normalises to 1.0, times weight 0.5
    assert len(fuse(scored(*[(f"v{i}", 1 - i / 100) for i in range(50)]), [], None, k=7)) == 7


def test_stem_folds_plural_and_verb_forms() -> None:
    assert stem("decode") == stem("decodes") == stem("decoding") == stem("decoded")
    assert stem("copies") == stem("copy")
    assert stem("folder") == stem("folders")
    assert stem("ok") == "ok" and stem("use") == "use"  # too short to strip
    assert stem("path") != stem("patch")


def test_query_terms_drop_stopwords_and_fold() -> None:
    assert query_terms("How wide is the console window?") == {stem("wide"), stem("console"), stem("window")}
    assert query_terms("dirs_exist_ok") == {"dir", "exist", "ok"}  # '_' splits, as in the keyword index
    assert query_terms("Wimbledón") == query_terms("WIMBLEDON")
    assert query_terms("what is it") == {"what", "is", "it"}  # only stop-words: keep them all
    assert query_terms("?!") == frozenset()


def test_contains_all() -> None:
    terms = query_terms("decode base32hex strings")
    assert contains_all(terms, "b32hexdecode: Decode the Base32hex encoded string s.")  # 'strings' ~ 'string'
    assert not contains_all(terms, "Decode a Base64 encoded string.")
    assert not contains_all(frozenset(), "anything")


def test_only_keyword_hits_with_every_word_vote_by_default() -> None:
    vector = texts(("v1", "remove a directory tree recursively", 0.8), ("v2", "copy a file", 0.6))
    keyword = texts(
        ("k-some", "delete this folder", 9.0),  # shares one word: no vote
        ("k-all", "delete the folder and all of its contents", 5.0),  # every content word: votes
        ("v2", "copy a file", 1.0),  # in both lists, but has no query word: its keyword vote is dropped
    )
    query = "delete a folder and all its contents"
    got = fuse(vector, keyword, None, k=10, query_text=query)
    assert [r.chunk.chunk_id for r in got] == ["k-all", "v1", "v2"]
    assert got[0].score == pytest.approx(1 / 61) and got[1].score == pytest.approx(1 / 61)  # tie: id order
    # "any" (or no query text) fuses every keyword hit, as classic RRF does.
    every = fuse(vector, keyword, HybridOptions(keyword_match="any"), k=10, query_text=query)
    assert [r.chunk.chunk_id for r in every] == ["v2", "k-some", "v1", "k-all"]
    assert [r.chunk.chunk_id for r in fuse(vector, keyword, None, k=10)] == [r.chunk.chunk_id for r in every]


def test_paraphrase_without_full_match_ranks_as_vector() -> None:
    vector = texts(("a", "shutil.get_terminal_size", 0.9), ("b", "os.get_terminal_size", 0.7), ("c", "x", 0.1))
    keyword = texts(("w", "window of the console", 8.0), ("c", "how wide", 3.0))
    got = fuse(vector, keyword, None, k=3, query_text="how wide is the console window")
    assert [r.chunk.chunk_id for r in got] == ["a", "b", "c"]
    weighted = fuse(vector, keyword, HybridOptions(ranker="weighted"), k=3, query_text="how wide is the console window")
    assert [r.chunk.chunk_id for r in weighted] == ["a", "b", "c"]
    assert [r.score for r in weighted] == pytest.approx([0.5, 0.5 * 0.75, 0.0])


def test_a_rare_term_only_keyword_search_finds_still_surfaces() -> None:
    vector = texts(*[(f"v{i}", "money and savings", 1 - i / 10) for i in range(8)], ("r", "crossed the Rubicon", -0.1))
    keyword = texts(("r", "crossed the Rubicon", 4.2))
    got = fuse(vector, keyword, None, k=3, query_text="Rubicon")
    assert "r" in [r.chunk.chunk_id for r in got]


def test_filtered_keyword_hits_keep_their_order_and_scores() -> None:
    # Weighted fusion normalises over the voting hits only: the best full match scores 1.0 on its side.
    keyword = texts(("x", "alpha beta", 9.0), ("y", "alpha", 8.0), ("z", "beta alpha gamma", 2.0))
    got = fuse([], keyword, HybridOptions(ranker="weighted", keyword_weight=1.0), k=5, query_text="alpha beta")
    assert [(r.chunk.chunk_id, r.score) for r in got] == [("x", 1.0), ("z", 0.0)]
