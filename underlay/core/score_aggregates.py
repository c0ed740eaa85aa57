"""Aggregates of score rows, each with a 95% confidence interval.

Why the router computes these and not the providers: every function, built-in or registered, gets the
same five aggregations with the same interval methods, and a provider only has to produce score rows.

The interval methods, chosen so that none needs resampling (100,000 rows aggregate in milliseconds):

- ``accuracy`` and each label of ``categorical_count``: a proportion; the **Wilson score interval**,
  which stays inside [0, 1] and behaves at 0% and 100%, unlike the normal approximation.
- ``average``: the **normal interval** mean ± 1.96·s/√n (s the sample standard deviation).
- ``weighted_average``: the normal interval with Kish's effective sample size n_eff = (Σw)²/Σw².
- ``median``: the **distribution-free order-statistic interval**: the sorted scores at ranks
  n/2 ± 1.96·√n/2, which holds for any distribution of scores.

Rows whose score is ``None`` (a failed row) are left out and counted in ``num_errors``; non-numeric
scores are left out of the numeric aggregations.
"""

from __future__ import annotations

import math
import statistics
from collections import Counter
from collections.abc import Sequence
from typing import Any

from underlay.api.errors import InvalidRequestError

Z95 = 1.959963984540054
"""The standard normal quantile for a two-sided 95% interval."""


def _number(score: Any) -> float | None:
    if isinstance(score, bool):
        return 1.0 if score else 0.0
    if isinstance(score, int | float) and math.isfinite(score):
        return float(score)
    return None


def wilson(successes: float, total: int) -> list[float]:
    """The Wilson score interval for a proportion ``successes / total`` (``[0, 1]`` for no data)."""
    if total <= 0:
        return [0.0, 1.0]
    p = successes / total
    z2 = Z95 * Z95
    centre = (p + z2 / (2 * total)) / (1 + z2 / total)
    half = Z95 * math.sqrt(max(p * (1 - p) / total + z2 / (4 * total * total), 0.0)) / (1 + z2 / total)
    return [max(0.0, centre - half), min(1.0, centre + half)]


def _normal(mean: float, sd: float, n: float) -> list[float]:
    if n <= 1:
        return [mean, mean]
    half = Z95 * sd / math.sqrt(n)
    return [mean - half, mean + half]


def accuracy(scores: Sequence[float]) -> dict[str, Any]:
    """Scores read as correctness (1 right, 0 wrong; a fraction counts as part right)."""
    correct = math.fsum(scores)
    total = len(scores)
    value = correct / total if total else 0.0
    return {
        "accuracy": value,
        "num_correct": correct,
        "num_total": total,
        "ci95": wilson(correct, total),
        "ci_method": "wilson",
    }


def average(scores: Sequence[float]) -> dict[str, Any]:
    n = len(scores)
    mean = math.fsum(scores) / n if n else 0.0
    sd = statistics.stdev(scores, mean) if n > 1 else 0.0
    return {"average": mean, "num_total": n, "ci95": _normal(mean, sd, n), "ci_method": "normal"}


def median(scores: Sequence[float]) -> dict[str, Any]:
    n = len(scores)
    if not n:
        return {"median": 0.0, "num_total": 0, "ci95": [0.0, 0.0], "ci_method": "order_statistics"}
    ordered = sorted(scores)
    half = Z95 * math.sqrt(n) / 2
    low = max(0, math.floor(n / 2 - half) - 1)  # 1-based ranks to 0-based indices
    high = min(n - 1, math.ceil(n / 2 + half) - 1)
    return {
        "median": statistics.median(ordered),
        "num_total": n,
        "ci95": [ordered[low], ordered[high]],
        "ci_method": "order_statistics",
    }


def weighted_average(scores: Sequence[float], weights: Sequence[float]) -> dict[str, Any]:
    total_w = math.fsum(weights)
    if total_w <= 0:
        return {"weighted_average": 0.0, "num_total": len(scores), "ci95": [0.0, 0.0], "ci_method": "normal_kish"}
    mean = math.fsum(w * s for s, w in zip(scores, weights, strict=True)) / total_w
    variance = math.fsum(w * (s - mean) ** 2 for s, w in zip(scores, weights, strict=True)) / total_w
    n_eff = total_w * total_w / math.fsum(w * w for w in weights)
    sd = math.sqrt(variance * n_eff / (n_eff - 1)) if n_eff > 1 else 0.0
    return {
        "weighted_average": mean,
        "num_total": len(scores),
        "effective_n": n_eff,
        "ci95": _normal(mean, sd, n_eff),
        "ci_method": "normal_kish",
    }


def categorical_count(labels: Sequence[str]) -> dict[str, Any]:
    counts = Counter(labels)
    total = len(labels)
    return {
        "categorical_count": dict(counts),
        "num_total": total,
        "ci95": {label: wilson(count, total) for label, count in counts.items()},
        "ci_method": "wilson",
    }


def _weight(score_row: dict[str, Any], input_row: dict[str, Any]) -> float | None:
    weight = _number(score_row.get("weight", input_row.get("weight", 1.0)))
    return weight if weight is not None and weight >= 0 else None


def aggregate(
    names: Sequence[str], score_rows: Sequence[dict[str, Any]], input_rows: Sequence[dict[str, Any]]
) -> dict[str, dict[str, Any]]:
    """Each aggregation in ``names`` over ``score_rows`` (``input_rows`` give ``weight`` when the score row
    has none). A row with ``score: None`` is an error row and is left out of every aggregation."""
    scored = [(r, i) for r, i in zip(score_rows, input_rows, strict=True) if r.get("score") is not None]
    errors = len(score_rows) - len(scored)
    out: dict[str, dict[str, Any]] = {}
    numbers: list[float] | None = None
    for name in dict.fromkeys(names):
        if name == "categorical_count":
            result = categorical_count([str(r["score"]) for r, _ in scored])
        elif name == "weighted_average":
            pairs = [(_number(r["score"]), _weight(r, i)) for r, i in scored]
            kept = [(s, w) for s, w in pairs if s is not None and w is not None]
            result = weighted_average([s for s, _ in kept], [w for _, w in kept])
        else:
            if numbers is None:
                numbers = [n for n in (_number(r["score"]) for r, _ in scored) if n is not None]
            if name == "accuracy":
                result = accuracy(numbers)
            elif name == "average":
                result = average(numbers)
            elif name == "median":
                result = median(numbers)
            else:  # the contract's Literal keeps this out of requests; code in this process may still pass one
                raise InvalidRequestError(f"unknown aggregation function '{name}'", param="aggregation_functions")
        result["num_errors"] = errors
        out[name] = result
    return out
