"""Hybrid search: fusing a vector ranking and a keyword ranking into one.

The two rankings have incomparable scores (cosine similarity in [-1, 1], unbounded BM25), so they
are fused either by rank alone or after rescaling:

- **RRF** (reciprocal-rank fusion, the default): a chunk at 1-based rank ``r`` in a list earns
  ``1 / (rrf_k + r)``; its fused score is the sum over the lists it appears in. Rank-only fusion
  needs no tuning and is robust to score scales, which is why it is the default. The weights in
  :class:`HybridOptions` do not apply to it.
- **Weighted**: each list's scores are min-max normalised to [0, 1] (a list whose scores are all
  equal normalises to 1.0: its members are equally the best it has), then the fused score is
  ``vector_weight * v + keyword_weight * w``, where a chunk missing from a list contributes 0 for it.

Ties are broken by ``chunk_id`` ascending, so the same inputs always give the same order on every
backend. Every backend's ``hybrid`` mode is exactly :func:`fuse` applied to its own ``vector`` and
``keyword`` results for the same over-fetch size (see ``base.hybrid_candidates``).
"""

from __future__ import annotations

from collections.abc import Sequence

from underlay.api.vector_io import Chunk, HybridOptions, ScoredChunk


def rrf_scores(rankings: Sequence[Sequence[str]], rrf_k: int = 60) -> dict[str, float]:
    """Reciprocal-rank fusion of ranked id lists (best first); ids repeated in one list count once."""
    if rrf_k < 1:
        raise ValueError("rrf_k must be at least 1")
    fused: dict[str, float] = {}
    for ranking in rankings:
        seen: set[str] = set()
        for rank, chunk_id in enumerate(ranking, start=1):
            if chunk_id in seen:
                continue
            seen.add(chunk_id)
            fused[chunk_id] = fused.get(chunk_id, 0.0) + 1.0 / (rrf_k + rank)
    return fused


def min_max_normalise(scores: dict[str, float]) -> dict[str, float]:
    """Scores rescaled to [0, 1]; all-equal scores become 1.0."""
    if not scores:
        return {}
    low, high = min(scores.values()), max(scores.values())
    if high == low:
        return dict.fromkeys(scores, 1.0)
    span = high - low
    return {key: (value - low) / span for key, value in scores.items()}


def weighted_scores(scored: Sequence[tuple[dict[str, float], float]]) -> dict[str, float]:
    """Weighted sum of min-max normalised score maps, given as ``(scores, weight)`` pairs."""
    fused: dict[str, float] = {}
    for scores, weight in scored:
        for chunk_id, value in min_max_normalise(scores).items():
            fused[chunk_id] = fused.get(chunk_id, 0.0) + weight * value
    return fused


def rank(scores: dict[str, float], k: int | None = None) -> list[tuple[str, float]]:
    """``(id, score)`` best first, ties by id ascending, cut to ``k`` when given."""
    ordered = sorted(scores.items(), key=lambda item: (-item[1], item[0]))
    return ordered if k is None else ordered[:k]


def _best_score_map(results: Sequence[ScoredChunk]) -> dict[str, float]:
    scores: dict[str, float] = {}
    for item in results:
        cid = item.chunk.chunk_id
        if cid not in scores or item.score > scores[cid]:
            scores[cid] = item.score
    return scores


def fuse(
    vector: Sequence[ScoredChunk],
    keyword: Sequence[ScoredChunk],
    options: HybridOptions | None,
    k: int,
) -> list[ScoredChunk]:
    """The hybrid result: the two result lists (each best first) fused per ``options``, top ``k``."""
    options = options or HybridOptions()
    chunks: dict[str, Chunk] = {}
    for item in [*vector, *keyword]:
        chunks.setdefault(item.chunk.chunk_id, item.chunk)
    if options.ranker == "rrf":
        ids = [[item.chunk.chunk_id for item in results] for results in (vector, keyword)]
        fused = rrf_scores(ids, options.rrf_k)
    else:
        fused = weighted_scores(
            [
                (_best_score_map(vector), options.vector_weight),
                (_best_score_map(keyword), options.keyword_weight),
            ]
        )
    return [ScoredChunk(chunk=chunks[cid], score=score) for cid, score in rank(fused, k)]
