"""Hybrid fusion: reciprocal-rank and weighted, with deterministic ties."""

from __future__ import annotations

import pytest

from underlay.api.vector_io import Chunk, HybridOptions, ScoredChunk
from underlay.providers.utils.vector.fusion import fuse, min_max_normalise, rank, rrf_scores, weighted_scores


def scored(*items: tuple[str, float]) -> list[ScoredChunk]:
    return [ScoredChunk(chunk=Chunk(chunk_id=cid, document_id="d", content=cid), score=s) for cid, s in items]


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
