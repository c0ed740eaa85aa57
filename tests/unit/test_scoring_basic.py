"""The basic scoring functions (inline::basic) and their parsers, on rows whose answers are known."""

from __future__ import annotations

from typing import Any

import pytest

from underlay.api.errors import InvalidRequestError
from underlay.api.scoring import RegexParserParams, ScoringFunction
from underlay.providers.scoring.builtin.basic import FUNCTIONS, BasicConfig, BasicScoringProvider
from underlay.providers.scoring.builtin.text import (
    extract_math_answer,
    math_equal,
    normalise,
    parse_choice,
    token_f1,
)


@pytest.fixture(scope="module")
async def provider() -> BasicScoringProvider:
    built = BasicScoringProvider("basic", BasicConfig())
    await built.initialize()
    return built


async def _scores(provider: BasicScoringProvider, fn_id: str, rows: list[dict[str, Any]], **params: Any) -> list[Any]:
    function = next(f for f in FUNCTIONS if f.identifier == fn_id)
    given = function.params if not params else RegexParserParams(**params)
    return [r["score"] for r in await provider.score(function, given, rows)]


def _row(generated: Any, expected: Any) -> dict[str, Any]:
    return {"generated_answer": generated, "expected_answer": expected}


async def test_equality_normalised_and_subset(provider: BasicScoringProvider) -> None:
    rows = [_row("Paris", "Paris"), _row("paris.", "Paris"), _row("It is Paris", "Paris"), _row(4, "4")]
    assert await _scores(provider, "basic::equality", rows) == [1.0, 0.0, 0.0, 1.0]
    assert await _scores(provider, "basic::normalized_equality", rows) == [1.0, 1.0, 0.0, 1.0]
    assert await _scores(provider, "basic::subset_of", rows) == [1.0, 0.0, 1.0, 1.0]
    several = [_row("Lyon", ["Paris", "Lyon"])]
    assert await _scores(provider, "basic::equality", several) == [1.0]


def test_normalise_and_token_f1() -> None:
    assert normalise("The  Eiffel Tower!") == "eiffel tower"
    assert token_f1("the Eiffel tower in Paris", "Eiffel Tower") == pytest.approx(2 * 0.5 * 1.0 / 1.5)  # P 2/4, R 2/2
    assert token_f1("", "") == 1.0 and token_f1("x", "") == 0.0 and token_f1("cat", "dog") == 0.0


@pytest.mark.parametrize(
    ("text", "choice"),
    [
        ("The answer is (B).", "B"),
        ("Answer: C", "C"),
        ("The answer is a dog", None),  # a lower-case word is not a choice
        ("**D**. Because the others are wrong", "D"),
        ("I pick option A here", "A"),
        ("None of these fit", None),
    ],
)
def test_parse_choice(text: str, choice: str | None) -> None:
    assert parse_choice(text) == choice


async def test_multiple_choice_scores_against_letters_in_any_spelling(provider: BasicScoringProvider) -> None:
    rows = [_row("The answer is (B).", "B"), _row("Answer: C", "(C)"), _row("A. Paris", "B"), _row("unsure", "A")]
    assert await _scores(provider, "basic::regex_parser_multiple_choice_answer", rows) == [1.0, 1.0, 0.0, 0.0]


@pytest.mark.parametrize(
    ("solution", "answer"),
    [
        ("So x = 2 and therefore \\boxed{\\frac{3}{4}}.", "\\frac{3}{4}"),
        ("We get \\boxed{x^{2}+1} in the end", "x^{2}+1"),
        ("The final answer is 1,234.", "1,234."),
        ("First 3 apples, then 5 more: 8", "8"),
        ("no numbers here", None),
    ],
)
def test_extract_math_answer(solution: str, answer: str | None) -> None:
    assert extract_math_answer(solution) == answer


def test_math_equal() -> None:
    assert math_equal("\\frac{3}{4}", "0.75")
    assert math_equal("1,234.", "1234")
    assert math_equal("$5$", "5.0")
    assert math_equal("x^{2} + 1", "x^{2}+1")
    assert not math_equal("3/4", "0.7")


async def test_math_response(provider: BasicScoringProvider) -> None:
    rows = [_row("Half of 3/2 is \\boxed{\\dfrac{3}{4}}", "0.75"), _row("The answer is 12", "13")]
    out = await provider.score(
        next(f for f in FUNCTIONS if f.identifier == "basic::regex_parser_math_response"), None, rows
    )
    assert [r["score"] for r in out] == [1.0, 0.0] and out[1]["parsed_answer"] == "12"


async def test_bleu_and_rouge_come_from_the_libraries(provider: BasicScoringProvider) -> None:
    import sacrebleu
    from rouge_score import rouge_scorer

    hyp, ref = "the cat sat on the mat today", "the cat sat on the mat"
    rows = [_row(hyp, ref), _row("completely unrelated words", ref), _row(ref, ref)]
    bleu = await _scores(provider, "basic::bleu", rows)
    assert bleu[0] == pytest.approx(sacrebleu.BLEU(effective_order=True).sentence_score(hyp, [ref]).score / 100)
    assert bleu[2] == pytest.approx(1.0) and bleu[1] < 0.1
    rouge_l = await _scores(provider, "basic::rouge_l", rows)
    expected = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True).score(ref, hyp)["rougeL"].fmeasure
    assert rouge_l[0] == pytest.approx(expected) and rouge_l[2] == pytest.approx(1.0) and rouge_l[1] == 0.0
    assert (await _scores(provider, "basic::rouge1", rows))[0] == pytest.approx(12 / 13)


async def test_user_regex_parser(provider: BasicScoringProvider) -> None:
    function = ScoringFunction(
        identifier="grade",
        provider_id="basic",
        provider_resource_id="grade",
        params=RegexParserParams(parsing_regexes=[r"Grade:\s*(\w+)"]),
        source="api",
    )
    rows = [_row("Reasoning... Grade: pass", "PASS"), _row("Grade: fail", "pass"), _row("nothing", "pass")]
    out = await provider.score(function, function.params, rows)
    assert [r["score"] for r in out] == [1.0, 0.0, 0.0]
    assert [r["parsed_answer"] for r in out] == ["pass", "fail", None]
    with pytest.raises(InvalidRequestError, match="needs params.parsing_regexes"):
        await provider.score(function, RegexParserParams(), rows)


async def test_regex_match_reads_each_rows_expected_answer_as_a_pattern(provider: BasicScoringProvider) -> None:
    rows = [
        _row("The secret is roasted Buckwheat flour.", r"(?i)buckwheat"),
        _row("It is rye.", r"(?i)buckwheat"),
        _row("Answer: 42", [r"\b41\b", r"\b42\b"]),  # several patterns: any may match
        _row("anything", "(unclosed"),
    ]
    function = next(f for f in FUNCTIONS if f.identifier == "basic::regex_match")
    out = await provider.score(function, function.params, rows)
    assert [r["score"] for r in out] == [1.0, 0.0, 1.0, 0.0]
    assert "not a valid regular expression" in out[3]["error"] and "error" not in out[1]


async def test_a_backtracking_pattern_costs_a_bounded_time_and_says_why(provider: BasicScoringProvider) -> None:
    """``(a|aa)+$`` on 60 a's and a b backtracks for hours with ``re`` (the test would hang until its
    timeout); here each search is cut off at ``SEARCH_TIMEOUT_S`` and the row says why."""
    slow = "a" * 60 + "b"
    function = next(f for f in FUNCTIONS if f.identifier == "basic::regex_match")
    out = await provider.score(function, function.params, [_row(slow, r"(a|aa)+$")])
    parser = ScoringFunction(
        identifier="slow",
        provider_id="basic",
        provider_resource_id="slow",
        params=RegexParserParams(parsing_regexes=[r"(a|aa)+$"]),
        source="api",
    )
    parsed = await provider.score(parser, parser.params, [_row(slow, "a")])
    assert out[0]["score"] == 0.0 and "took longer than" in out[0]["error"]
    assert parsed[0]["score"] == 0.0 and "simplify it" in parsed[0]["error"]
