"""Text similarity metrics for the ``text_similarity`` grader, each a score in 0..1.

Why our own small functions: each metric is a few lines over word n-grams, and the libraries that ship
them either download data at run time (NLTK's WordNet for METEOR) or pull large dependencies. What each
computes, so scores can be compared with other tools:

- ``fuzzy_match``: the character-level similarity ratio of :class:`difflib.SequenceMatcher` (2·matches / total).
- ``bleu``: sentence BLEU, geometric mean of modified n-gram precisions up to 4 (fewer for short texts),
  add-one smoothing for n > 1, times the brevity penalty.
- ``gleu``: Google-BLEU, min(precision, recall) over all 1..4-grams together.
- ``meteor``: METEOR with exact word matches only (no stems or synonyms): F-mean weighted 9:1 towards
  recall, times (1 − 0.5·(chunks/matches)³).
- ``rouge_1`` … ``rouge_5``: F1 of n-gram overlap; ``rouge_l``: F1 of the longest common subsequence.

Words are lower-cased runs of letters and digits.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from difflib import SequenceMatcher

WORD = re.compile(r"\w+", re.UNICODE)


def words(text: str) -> list[str]:
    return WORD.findall(text.lower())


def ngrams(tokens: list[str], n: int) -> Counter[tuple[str, ...]]:
    return Counter(tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))


def fuzzy_match(candidate: str, reference: str) -> float:
    if not candidate and not reference:
        return 1.0
    return SequenceMatcher(None, candidate, reference, autojunk=False).ratio()


def bleu(candidate: str, reference: str, max_n: int = 4) -> float:
    hyp, ref = words(candidate), words(reference)
    if not hyp or not ref:
        return 1.0 if hyp == ref else 0.0
    order = min(max_n, len(hyp), len(ref))
    logs = 0.0
    for n in range(1, order + 1):
        hyp_grams, ref_grams = ngrams(hyp, n), ngrams(ref, n)
        matched = sum(min(count, ref_grams[gram]) for gram, count in hyp_grams.items())
        total = sum(hyp_grams.values())
        if n == 1:
            if matched == 0:
                return 0.0
            precision = matched / total
        else:
            precision = (matched + 1) / (total + 1)
        logs += math.log(precision)
    brevity = 1.0 if len(hyp) > len(ref) else math.exp(1 - len(ref) / len(hyp))
    return brevity * math.exp(logs / order)


def gleu(candidate: str, reference: str, max_n: int = 4) -> float:
    hyp, ref = words(candidate), words(reference)
    hyp_grams: Counter[tuple[str, ...]] = Counter()
    ref_grams: Counter[tuple[str, ...]] = Counter()
    for n in range(1, max_n + 1):
        hyp_grams.update(ngrams(hyp, n))
        ref_grams.update(ngrams(ref, n))
    if not hyp_grams or not ref_grams:
        return 1.0 if hyp == ref else 0.0
    matched = sum((hyp_grams & ref_grams).values())
    return min(matched / sum(hyp_grams.values()), matched / sum(ref_grams.values()))


def meteor(candidate: str, reference: str) -> float:
    hyp, ref = words(candidate), words(reference)
    if not hyp or not ref:
        return 1.0 if hyp == ref else 0.0
    used: set[int] = set()
    alignment: list[tuple[int, int]] = []
    for i, word in enumerate(hyp):
        for j, other in enumerate(ref):
            if j not in used and other == word:
                used.add(j)
                alignment.append((i, j))
                break
    matches = len(alignment)
    if matches == 0:
        return 0.0
    precision, recall = matches / len(hyp), matches / len(ref)
    fmean = 10 * precision * recall / (recall + 9 * precision)
    chunks = 1
    for (i1, j1), (i2, j2) in zip(alignment, alignment[1:], strict=False):
        if not (i2 == i1 + 1 and j2 == j1 + 1):
            chunks += 1
    return fmean * (1 - 0.5 * (chunks / matches) ** 3)


def _f1(matched: int, hyp_total: int, ref_total: int) -> float:
    if matched == 0 or hyp_total == 0 or ref_total == 0:
        return 0.0
    precision, recall = matched / hyp_total, matched / ref_total
    return 2 * precision * recall / (precision + recall)


def rouge_n(candidate: str, reference: str, n: int) -> float:
    hyp_grams, ref_grams = ngrams(words(candidate), n), ngrams(words(reference), n)
    if not hyp_grams and not ref_grams:
        return 1.0 if words(candidate) == words(reference) else 0.0
    matched = sum((hyp_grams & ref_grams).values())
    return _f1(matched, sum(hyp_grams.values()), sum(ref_grams.values()))


def rouge_l(candidate: str, reference: str) -> float:
    hyp, ref = words(candidate), words(reference)
    if not hyp or not ref:
        return 1.0 if hyp == ref else 0.0
    previous = [0] * (len(ref) + 1)
    for word in hyp:
        current = [0]
        for j, other in enumerate(ref, start=1):
            current.append(previous[j - 1] + 1 if word == other else max(previous[j], current[j - 1]))
        previous = current
    return _f1(previous[-1], len(hyp), len(ref))


def cosine(a: list[float], b: list[float]) -> float:
    """Cosine similarity of two vectors, clipped to 0..1 (opposite directions score 0)."""
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    norm = math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b))
    return max(0.0, min(1.0, dot / norm)) if norm else 0.0


def text_score(metric: str, candidate: str, reference: str) -> float:
    """Every metric but ``cosine`` (which needs embeddings); :class:`ValueError` for an unknown one."""
    if metric == "fuzzy_match":
        return fuzzy_match(candidate, reference)
    if metric == "bleu":
        return bleu(candidate, reference)
    if metric == "gleu":
        return gleu(candidate, reference)
    if metric == "meteor":
        return meteor(candidate, reference)
    if metric == "rouge_l":
        return rouge_l(candidate, reference)
    if metric.startswith("rouge_") and metric[6:].isdigit():
        return rouge_n(candidate, reference, int(metric[6:]))
    raise ValueError(f"unknown text similarity metric {metric!r}")
