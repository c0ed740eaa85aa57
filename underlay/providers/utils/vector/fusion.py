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

**Which keyword hits vote** (``keyword_match``). Keyword search ORs the query's words, so on a
question in plain words ("how wide is the console window") its top hits are chunks that share one
or two common words with it. Those are the weakest keyword evidence there is, and they are exactly
what embeddings already judge better; fused with equal say, they push good vector hits down. What
embeddings miss are identifiers, flags, codes and rare names, and there a chunk that contains every
word of the query is strong evidence. So by default (``"all"``) only keyword hits that contain every
content word of the query (:func:`query_terms`: stop-words dropped, light stemming) take part in the
fusion; the others are left to the vector side. A query whose words no chunk contains together
ranks as vector search does; a one-word query (a name, an error code) is unaffected. ``"any"``
fuses every keyword hit, the classic form. The rule has no tuned constant; the stop-word list is a
plain English one, and the check errs on the side of matching (see :func:`stem`).

Ties are broken by ``chunk_id`` ascending, so the same inputs always give the same order on every
backend. Every backend's ``hybrid`` mode is exactly :func:`fuse` applied to its own ``vector`` and
``keyword`` results for the same over-fetch size and query text (see ``base.hybrid_candidates``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import lru_cache

from underlay.api.vector_io import Chunk, HybridOptions, ScoredChunk
from underlay.providers.utils.vector.textfold import fold_text

# Words that say how a question is phrased, not what it is about. Kept short and English-only: a
# word missing here only makes the all-words rule stricter for queries that use it.
STOPWORDS = frozenset(
    """a about after all also an and any are as at be been before being but by can could did do does
    doing done for from get got had has have how i if in into is it its itself just me more most my
    no not of off on one only or other our out over own should so some such than that the their them
    then there these they this those through to too under up very was we were what when where which
    while who whom why will with would you your""".split()
)

# The same runs of letters and digits the keyword indexes treat as tokens ('_' and punctuation split).
_TOKEN = re.compile(r"[^\W_]+", re.UNICODE)
_SUFFIXES = ("ies", "ing", "ed", "es", "s", "e", "ly")
_MIN_STEM = 3


@lru_cache(maxsize=65536)
def stem(word: str) -> str:
    """A light suffix-stripping stem, so "decode", "decodes" and "decoding" compare equal.

    Suffixes are stripped repeatedly while at least three characters remain. It over-stems
    ("class" and "clash" meet at "cla"), which only ever makes two words match that FTS5's Porter
    stemmer would keep apart: the all-words rule then admits a hit it might have left out, never the
    other way round for the plural and verb forms the keyword indexes already fold together.
    """
    current = word
    while True:
        for suffix in _SUFFIXES:
            if current.endswith(suffix) and len(current) - len(suffix) >= _MIN_STEM:
                current = current[: -len(suffix)] + ("y" if suffix == "ies" else "")
                break
        else:
            return current


def _words(text: str) -> list[str]:
    return [match.group(0).lower() for match in _TOKEN.finditer(fold_text(text))]


def query_terms(text: str) -> frozenset[str]:
    """The stems of the query's content words; all its words when every one is a stop-word."""
    words = _words(text)
    content = [w for w in words if w not in STOPWORDS] or words
    return frozenset(stem(w) for w in content)


def contains_all(terms: frozenset[str], text: str) -> bool:
    """Whether ``text`` has a word with each of the stems in ``terms``."""
    if not terms:
        return False
    found = {stem(w) for w in set(_words(text))}
    return terms <= found


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


def voting_keyword_hits(
    keyword: Sequence[ScoredChunk], query_text: str | None, options: HybridOptions
) -> list[ScoredChunk]:
    """The keyword hits that take part in fusion: all of them for ``"any"`` or without query text,
    else those containing every content word of the query (in their order, scores untouched)."""
    if options.keyword_match == "any" or query_text is None:
        return list(keyword)
    terms = query_terms(query_text)
    return [item for item in keyword if contains_all(terms, item.chunk.content)]


def fuse(
    vector: Sequence[ScoredChunk],
    keyword: Sequence[ScoredChunk],
    options: HybridOptions | None,
    k: int,
    *,
    query_text: str | None = None,
) -> list[ScoredChunk]:
    """The hybrid result: the two result lists (each best first) fused per ``options``, top ``k``.

    ``query_text`` is the text the keyword search ran on; with it, ``keyword_match="all"`` (the
    default) keeps only keyword hits that contain every content word of it (see the module notes).
    """
    options = options or HybridOptions()
    keyword = voting_keyword_hits(keyword, query_text, options)
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
