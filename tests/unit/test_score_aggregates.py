"""Aggregates and their 95% intervals (underlay.core.score_aggregates), checked against values worked out
by hand or by an independent computation in the test."""

from __future__ import annotations

import math
import random
import statistics

import pytest

from underlay.api.errors import InvalidRequestError
from underlay.core.score_aggregates import Z95, aggregate, wilson


def _rows(scores: list[object]) -> tuple[list[dict[str, object]], list[dict[str, object]]]:
    return [{"score": s} for s in scores], [{} for _ in scores]


def test_wilson_matches_the_closed_form_and_stays_in_bounds() -> None:
    low, high = wilson(8, 10)
    # Wilson for p=0.8, n=10, z=1.96: centre (0.8 + z²/20) / (1 + z²/10), worked out independently here.
    z2 = Z95**2
    centre = (0.8 + z2 / 20) / (1 + z2 / 10)
    half = Z95 * math.sqrt(0.8 * 0.2 / 10 + z2 / 400) / (1 + z2 / 10)
    assert low == pytest.approx(centre - half) and high == pytest.approx(centre + half)
    assert round(low, 3) == 0.490 and round(high, 3) == 0.943  # the textbook figures for 8/10
    assert wilson(0, 20)[0] == 0.0 and 0 < wilson(0, 20)[1] < 0.2
    assert wilson(20, 20)[1] == 1.0 and 0.8 < wilson(20, 20)[0] < 1.0
    assert wilson(0, 0) == [0.0, 1.0]


def test_accuracy_average_median_and_errors() -> None:
    scores: list[object] = [1.0, 0.0, 1.0, 1.0, None, True, 0]
    rows, inputs = _rows(scores)
    out = aggregate(["accuracy", "average", "median"], rows, inputs)
    acc = out["accuracy"]
    assert acc["accuracy"] == pytest.approx(4 / 6) and acc["num_correct"] == 4 and acc["num_total"] == 6
    assert acc["num_errors"] == 1 and acc["ci_method"] == "wilson"
    assert acc["ci95"] == pytest.approx(wilson(4, 6))
    avg = out["average"]
    numbers = [1.0, 0.0, 1.0, 1.0, 1.0, 0.0]
    half = Z95 * statistics.stdev(numbers) / math.sqrt(6)
    assert avg["average"] == pytest.approx(4 / 6)
    assert avg["ci95"] == pytest.approx([4 / 6 - half, 4 / 6 + half])
    assert out["median"]["median"] == 1.0


def test_median_interval_brackets_the_true_median_of_a_large_sample() -> None:
    rng = random.Random(7)
    values = [rng.gauss(10, 3) for _ in range(2001)]
    rows, inputs = _rows(list(values))
    med = aggregate(["median"], rows, inputs)["median"]
    low, high = med["ci95"]
    assert low < med["median"] < high
    assert low < 10 < high  # the population median, which a 95% interval on 2001 draws should hold
    assert med["ci_method"] == "order_statistics"
    ranked = sorted(values)
    assert low in ranked and high in ranked  # order statistics, not interpolated values


def test_weighted_average_uses_score_row_then_input_row_weights() -> None:
    rows = [{"score": 1.0, "weight": 3}, {"score": 0.0}, {"score": 0.5}]
    inputs: list[dict[str, object]] = [{}, {"weight": 1}, {}]  # the third defaults to 1
    out = aggregate(["weighted_average"], rows, inputs)["weighted_average"]
    assert out["weighted_average"] == pytest.approx((3 * 1.0 + 0 + 0.5) / 5)
    assert out["effective_n"] == pytest.approx(25 / 11)
    low, high = out["ci95"]
    assert low < out["weighted_average"] < high


def test_categorical_count_counts_labels_with_an_interval_each() -> None:
    rows, inputs = _rows(["A", "B", "A", None, "C", "A"])
    out = aggregate(["categorical_count"], rows, inputs)["categorical_count"]
    assert out["categorical_count"] == {"A": 3, "B": 1, "C": 1}
    assert out["ci95"]["A"] == pytest.approx(wilson(3, 5)) and out["num_errors"] == 1


def test_non_numeric_scores_are_left_out_of_numeric_aggregates() -> None:
    rows, inputs = _rows(["yes", 1.0, 0.0, float("nan")])
    avg = aggregate(["average"], rows, inputs)["average"]
    assert avg["num_total"] == 2 and avg["average"] == 0.5


def test_unknown_aggregation_is_a_400() -> None:
    rows, inputs = _rows([1.0])
    with pytest.raises(InvalidRequestError, match="unknown aggregation function 'mode'"):
        aggregate(["mode"], rows, inputs)


def test_the_interval_covers_the_truth_about_95_percent_of_the_time() -> None:
    """Coverage of the accuracy interval over 400 simulated runs of 200 rows at p = 0.3."""
    rng = random.Random(11)
    covered = 0
    for _ in range(400):
        rows, inputs = _rows([1.0 if rng.random() < 0.3 else 0.0 for _ in range(200)])
        low, high = aggregate(["accuracy"], rows, inputs)["accuracy"]["ci95"]
        covered += low <= 0.3 <= high
    assert 0.91 <= covered / 400 <= 0.99
