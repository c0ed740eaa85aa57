"""The eval engine's pure parts: templates, text metrics, rule graders and the run loop's guarantees.

The run loop is driven here with a fault-injection grader (named as such) that fails a chosen number of
times: that is the only way to make a judge fail on demand. Everything else is the real code.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from underlay.api.evals import CreateEvalRequest, StringCheckGrader, TextSimilarityGrader
from underlay.core.eval_engine import (
    Counts,
    GradeResult,
    Limits,
    RowError,
    RowInput,
    RowOutcome,
    build_grader,
    metrics,
    run_rows,
)
from underlay.core.eval_engine.templates import TemplateError, references, render

FAST = Limits(concurrency=3, attempts=3, retry_delay=0.001, flush_seconds=0.0)


def test_render_dotted_references_and_json_values() -> None:
    ns = {"item": {"q": "2+2", "meta": {"tags": ["a", "b"]}, "n": 4}, "sample": {"output_text": "four"}}
    assert render("Q: {{item.q}} A: {{ sample.output_text }}", ns) == "Q: 2+2 A: four"
    assert render("{{item.meta.tags.1}} {{item.n}} {{item.meta}}", ns) == 'b 4 {"tags":["a","b"]}'
    assert references("x {{item.a}} {{sample.b.c}}") == ["item.a", "sample.b.c"]


def test_render_names_a_missing_reference() -> None:
    with pytest.raises(TemplateError, match=r"item\.answer.*no 'answer'"):
        render("{{item.answer}}", {"item": {"q": 1}, "sample": None})
    with pytest.raises(TemplateError, match="no 'sample' namespace"):
        render("{{sample.output_text}}", {"item": {}, "sample": None})


def test_metrics_on_known_pairs() -> None:
    same = "the cat sat on the mat"
    assert metrics.bleu(same, same) == pytest.approx(1.0)
    assert metrics.gleu(same, same) == pytest.approx(1.0)
    assert metrics.rouge_l(same, same) == pytest.approx(1.0)
    assert metrics.fuzzy_match("kitten", "sitting") == pytest.approx(2 * 4 / 13)
    # ROUGE-1: 3 of 4 words shared both ways → F1 0.75; ROUGE-2: bigrams "the cat" shared of 3 → 1/3
    assert metrics.rouge_n("the cat sat down", "the cat lay down", 1) == pytest.approx(0.75)
    assert metrics.rouge_n("the cat sat down", "the cat lay down", 2) == pytest.approx(1 / 3)
    # LCS of (a b c d) and (a c b d) is 3 → F1 0.75
    assert metrics.rouge_l("a b c d", "a c b d") == pytest.approx(0.75)
    assert metrics.bleu("completely different words", same) == 0.0
    # METEOR, exact matches: all 6 words matched in one chunk → Fmean 1, penalty 0.5·(1/6)³
    assert metrics.meteor(same, same) == pytest.approx(1 - 0.5 * (1 / 6) ** 3)
    assert metrics.cosine([1.0, 0.0], [1.0, 0.0]) == pytest.approx(1.0)
    assert metrics.cosine([1.0, 0.0], [0.0, 1.0]) == 0.0
    with pytest.raises(ValueError, match="unknown"):
        metrics.text_score("rouge_x", "a", "b")


async def test_string_check_operations() -> None:
    row = RowInput(0, {"ref": "Paris"}, {"output_text": "It is paris."})

    async def check(op: str) -> bool:
        spec = StringCheckGrader(
            type="string_check", name=op, input="{{sample.output_text}}", reference="{{item.ref}}", operation=op
        )  # type: ignore[arg-type]
        return (await build_grader(spec, chat=None, embed=None, metadata={}).grade(row)).passed

    assert [await check(op) for op in ("eq", "ne", "like", "ilike")] == [False, True, False, True]


async def test_text_similarity_threshold() -> None:
    spec = TextSimilarityGrader(
        type="text_similarity", name="sim", input="{{sample.output_text}}", reference="{{item.ref}}",
        evaluation_metric="rouge_1", pass_threshold=0.7,
    )  # fmt: skip
    grader = build_grader(spec, chat=None, embed=None, metadata={})
    good = await grader.grade(RowInput(0, {"ref": "the cat sat down"}, {"output_text": "the cat lay down"}))
    bad = await grader.grade(RowInput(0, {"ref": "the cat sat down"}, {"output_text": "a dog ran"}))
    assert (good.score, good.passed) == (0.75, True)
    assert (bad.score, bad.passed) == (0.0, False)


def test_contract_refuses_python_and_unknown_graders() -> None:
    base: dict[str, Any] = {"data_source_config": {"type": "custom", "item_schema": {"type": "object"}}}
    with pytest.raises(ValueError, match="python graders are not supported"):
        CreateEvalRequest.model_validate({**base, "testing_criteria": [{"type": "python", "name": "p", "source": "x"}]})
    with pytest.raises(ValueError, match="unknown grader type 'regex'"):
        CreateEvalRequest.model_validate({**base, "testing_criteria": [{"type": "regex", "name": "r"}]})
    label = {"type": "label_model", "name": "l", "model": "m", "input": [{"role": "user", "content": "x"}]}
    with pytest.raises(ValueError, match="passing_labels"):
        CreateEvalRequest.model_validate(
            {**base, "testing_criteria": [{**label, "labels": ["a"], "passing_labels": ["b"]}]}
        )


class FlakyGrader:
    """Fault injection: fails ``failures[row]`` times for a row, then passes (a judge that breaks mid-run)."""

    type = "flaky"

    def __init__(self, failures: dict[int, int]) -> None:
        self.name = "flaky"
        self.failures = dict(failures)
        self.calls: dict[int, int] = {}

    async def grade(self, row: RowInput) -> GradeResult:
        self.calls[row.index] = self.calls.get(row.index, 0) + 1
        if self.failures.get(row.index, 0) > 0:
            self.failures[row.index] -= 1
            raise RuntimeError(f"judge down for row {row.index} (fault injection)")
        return GradeResult(self.name, self.type, 1.0, True)


class MemorySink:
    def __init__(self, done: dict[int, str] | None = None) -> None:
        self.stored: dict[int, RowOutcome | str] = dict(done or {})
        self.paces: list[float] = []

    async def done_rows(self) -> set[int]:
        return set(self.stored)

    async def finished(self) -> Counts:
        counts = Counts()
        for value in self.stored.values():
            counts.add(value if isinstance(value, str) else value.status, [])
        return counts

    async def record(self, outcome: RowOutcome) -> None:
        self.stored.setdefault(outcome.row.index, outcome)

    async def progress(self, counts: Counts, rows_per_second: float) -> None:
        self.paces.append(rows_per_second)


async def _no_checkpoint(progress: float | None) -> None:
    return None


async def test_a_failing_judge_is_retried_then_fails_only_its_row() -> None:
    rows = [RowInput(i, {"i": i}) for i in range(6)]
    grader = FlakyGrader({1: 2, 4: 10})  # row 1 recovers on its third try; row 4 never does
    sink = MemorySink()
    counts = await run_rows(rows, candidate=None, graders=[grader], sink=sink, checkpoint=_no_checkpoint, limits=FAST)
    assert (counts.total, counts.passed, counts.errored) == (6, 5, 1)
    assert grader.calls[1] == 3 and grader.calls[4] == FAST.attempts
    errored = sink.stored[4]
    assert isinstance(errored, RowOutcome) and errored.status == "error"
    assert errored.error is not None and "row 4" in errored.error["message"] and "flaky" in errored.error["message"]
    assert sink.paces and sink.paces[-1] > 0


async def test_stored_rows_are_not_graded_again() -> None:
    rows = [RowInput(i, {"i": i}) for i in range(5)]
    grader = FlakyGrader({})
    sink = MemorySink({0: "pass", 2: "fail"})
    counts = await run_rows(rows, candidate=None, graders=[grader], sink=sink, checkpoint=_no_checkpoint, limits=FAST)
    assert sorted(grader.calls) == [1, 3, 4]
    assert (counts.total, counts.passed, counts.failed) == (5, 4, 1)


async def test_a_row_missing_a_reference_errors_without_retries() -> None:
    spec = StringCheckGrader(type="string_check", name="s", input="{{item.nope}}", reference="x", operation="eq")
    sink = MemorySink()
    counts = await run_rows(
        [RowInput(0, {"a": 1}), RowInput(1, {"nope": "x"})],
        candidate=None,
        graders=[build_grader(spec, chat=None, embed=None, metadata={})],
        sink=sink,
        checkpoint=_no_checkpoint,
        limits=FAST,
    )
    assert (counts.errored, counts.passed) == (1, 1)
    outcome = sink.stored[0]
    assert isinstance(outcome, RowOutcome) and outcome.error is not None
    assert outcome.error["code"] == "invalid_template_reference" and "item.nope" in outcome.error["message"]


async def test_concurrency_is_bounded() -> None:
    in_flight = 0
    peak = 0

    class Slow:
        name, type = "slow", "slow"

        async def grade(self, row: RowInput) -> GradeResult:
            nonlocal in_flight, peak
            in_flight += 1
            peak = max(peak, in_flight)
            await asyncio.sleep(0.01)
            in_flight -= 1
            return GradeResult("slow", "slow", 0.0, False)

    rows = [RowInput(i, {}) for i in range(12)]
    counts = await run_rows(
        rows, candidate=None, graders=[Slow()], sink=MemorySink(), checkpoint=_no_checkpoint, limits=FAST
    )
    assert counts.failed == 12 and peak == FAST.concurrency


def test_row_error_defaults_to_retryable() -> None:
    assert RowError("x", "y").retryable and not RowError("x", "y", retryable=False).retryable
