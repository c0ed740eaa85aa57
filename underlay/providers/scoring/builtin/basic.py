"""``inline::basic``: scoring functions computed from the row alone, and users' regex-parser functions.

Why BLEU and ROUGE come from libraries: their tokenisation and smoothing rules are what make figures
comparable with published ones (``sacrebleu``'s ``13a`` tokeniser, Google's ``rouge-score`` with the
Porter stemmer). Equality, F1 and the parsers are a few lines each and must be fast, so they are ours.
The slow metrics run in a worker thread so a big call never stalls the event loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, ConfigDict

from underlay.api.errors import InvalidRequestError
from underlay.api.scoring import (
    AggregationFunction,
    BasicParams,
    RegexParserParams,
    ReturnType,
    ScoringFnParams,
    ScoringFunction,
)
from underlay.providers.scoring.builtin.code_tests import extract_code, run_unit_tests
from underlay.providers.scoring.builtin.patterns import PatternError, compile_pattern, first_group, search
from underlay.providers.scoring.builtin.text import (
    CHOICE_REGEXES,
    as_text,
    expected_choice,
    extract_math_answer,
    math_equal,
    normalise,
    parse_choice,
    references,
    token_f1,
)

_ANSWERS = ["generated_answer", "expected_answer"]
CODE_RUNS_AT_ONCE = 2
"""Unit-test subprocesses of one provider running at once (each is a Python interpreter)."""


class BasicConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _function(fn_id: str, description: str, params: ScoringFnParams, kind: str = "number") -> ScoringFunction:
    return ScoringFunction(
        identifier=fn_id,
        provider_id="",
        provider_resource_id=fn_id,
        description=description,
        return_type=ReturnType(type=kind),  # type: ignore[arg-type]
        params=params,
        required_columns=list(_ANSWERS),
    )


def _basic(*aggregations: AggregationFunction) -> BasicParams:
    return BasicParams(aggregation_functions=list(aggregations))


FUNCTIONS: list[ScoringFunction] = [
    _function("basic::equality", "1 when generated_answer equals expected_answer exactly, else 0.", _basic("accuracy")),
    _function(
        "basic::normalized_equality",
        "Equality after lower-casing and dropping punctuation, articles and extra spaces.",
        _basic("accuracy"),
    ),
    _function("basic::subset_of", "1 when expected_answer occurs inside generated_answer.", _basic("accuracy")),
    _function(
        "basic::regex_match",
        "1 when expected_answer, read as a regular expression, matches anywhere in generated_answer "
        "(start it with (?i) to ignore case); a pattern that is invalid or too slow scores 0 with its error.",
        _basic("accuracy"),
    ),
    _function(
        "basic::starts_with",
        "1 when generated_answer, leading spaces dropped, starts with expected_answer (OpenAI evals' Match).",
        _basic("accuracy"),
    ),
    _function(
        "basic::code_unit_tests",
        "1 when the Python code in generated_answer passes the row's unit tests (columns prompt, test, "
        "entry_point, as in HumanEval), run in a sandboxed subprocess with a time limit; pass@1.",
        _basic("accuracy"),
    ).model_copy(update={"required_columns": ["generated_answer", "prompt", "test", "entry_point"]}),
    _function(
        "basic::regex_parser_multiple_choice_answer",
        "The choice letter (A-J) parsed from generated_answer, compared with expected_answer.",
        RegexParserParams(parsing_regexes=[p.pattern for p in CHOICE_REGEXES], aggregation_functions=["accuracy"]),
    ),
    _function(
        "basic::regex_parser_math_response",
        "The final answer (last \\boxed{}, 'the answer is', or last number) compared with expected_answer "
        "as a number or a normalised expression.",
        _basic("accuracy"),
    ),
    _function("basic::f1", "Token-overlap F1 of normalised answer and reference.", _basic("average")),
    _function(
        "basic::bleu", "Sentence BLEU (sacrebleu, 0-1) of the answer against the reference(s).", _basic("average")
    ),
    _function(
        "basic::rouge1", "ROUGE-1 F-measure (rouge-score, stemmed) against the best reference.", _basic("average")
    ),
    _function(
        "basic::rouge_l", "ROUGE-L F-measure (rouge-score, stemmed) against the best reference.", _basic("average")
    ),
]


def _pairs(rows: list[dict[str, Any]]) -> list[tuple[str, list[str]]]:
    return [(as_text(r["generated_answer"]), references(r["expected_answer"])) for r in rows]


def _equality(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for row in rows:
        generated, expected = row["generated_answer"], row["expected_answer"]
        if isinstance(expected, list):
            hit = as_text(generated) in [as_text(e) for e in expected]
        else:
            hit = generated == expected or as_text(generated) == as_text(expected)
        out.append({"score": 1.0 if hit else 0.0})
    return out


def _per_pair(metric: Callable[[str, str], float]) -> Callable[[list[dict[str, Any]]], list[dict[str, Any]]]:
    def score(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        out = []
        for row in rows:
            generated, expected = as_text(row["generated_answer"]), row["expected_answer"]
            if isinstance(expected, list):  # several references: the best one counts
                value = max((metric(generated, as_text(e)) for e in expected), default=metric(generated, ""))
            else:
                value = metric(generated, as_text(expected))
            out.append({"score": value})
        return out

    return score


def _starts_with(generated: str, expected: str) -> float:
    return 1.0 if generated.lstrip().startswith(expected) else 0.0


async def _code_rows(rows: list[dict[str, Any]], limit: asyncio.Semaphore) -> list[dict[str, Any]]:
    """Each row's answer against its tests; a few subprocesses at once (each is a whole interpreter)."""

    async def one(row: dict[str, Any]) -> dict[str, Any]:
        prompt, entry = as_text(row["prompt"]), as_text(row["entry_point"])
        if not entry.isidentifier():
            return {"score": None, "error": "entry_point must be a Python identifier"}
        async with limit:
            run = await run_unit_tests(
                extract_code(as_text(row["generated_answer"]), prompt, entry), as_text(row["test"]), entry
            )
        return {"score": 1.0 if run.passed else 0.0, "detail": run.detail}

    return list(await asyncio.gather(*(one(row) for row in rows)))


def _normalised_equal(generated: str, expected: str) -> float:
    return 1.0 if normalise(generated) == normalise(expected) else 0.0


def _subset(generated: str, expected: str) -> float:
    return 1.0 if expected in generated else 0.0


def _choice(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for generated, refs in _pairs(rows):
        parsed = parse_choice(generated)
        hit = parsed is not None and parsed in {expected_choice(r) for r in refs}
        out.append({"score": 1.0 if hit else 0.0, "parsed_answer": parsed})
    return out


def _math(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for generated, refs in _pairs(rows):
        parsed = extract_math_answer(generated)
        hit = parsed is not None and any(math_equal(parsed, r) for r in refs)
        out.append({"score": 1.0 if hit else 0.0, "parsed_answer": parsed})
    return out


def _regex(patterns: list[str]) -> Callable[[list[dict[str, Any]]], list[dict[str, Any]]]:
    compiled = [compile_pattern(p) for p in patterns]

    def parse(text: str) -> str | None:
        for pattern in compiled:
            found = first_group(pattern, text)
            if found is not None:
                return found
        return None

    def score(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for generated, refs in _pairs(rows):
            try:
                parsed = parse(generated)
            except PatternError as exc:
                out.append({"score": 0.0, "parsed_answer": None, "error": str(exc)})
                continue
            wanted = {r.strip().casefold() for r in refs}
            hit = parsed is not None and parsed.strip().strip(".").casefold() in wanted
            out.append({"score": 1.0 if hit else 0.0, "parsed_answer": parsed})
        return out

    return score


def _regex_match(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each row's expected_answer is the pattern (any of several, when a list); a row whose pattern is
    invalid or too slow scores 0 and says why, rather than failing the other rows."""
    out: list[dict[str, Any]] = []
    for generated, refs in _pairs(rows):
        errors: list[str] = []
        hit = False
        for ref in refs:
            try:
                hit = search(compile_pattern(ref), generated) is not None
            except PatternError as exc:
                errors.append(str(exc))
            if hit:
                break
        row: dict[str, Any] = {"score": 1.0 if hit else 0.0}
        if errors and not hit:
            row["error"] = errors[0]
        out.append(row)
    return out


class _Slow:
    """BLEU and ROUGE, built once (the ROUGE scorer holds its tokeniser and stemmer)."""

    def __init__(self) -> None:
        import sacrebleu
        from rouge_score import rouge_scorer

        self.bleu = sacrebleu.BLEU(effective_order=True)
        self.rouge = rouge_scorer.RougeScorer(["rouge1", "rougeL"], use_stemmer=True)

    def bleu_rows(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [{"score": self.bleu.sentence_score(g, refs).score / 100.0} for g, refs in _pairs(rows)]

    def rouge_rows(self, key: str, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [{"score": max(self.rouge.score(ref, g)[key].fmeasure for ref in refs)} for g, refs in _pairs(rows)]


class BasicScoringProvider:
    user_params_types: tuple[str, ...] = ("regex_parser",)

    def __init__(self, provider_id: str, config: BasicConfig) -> None:
        self.provider_id = provider_id
        self.config = config
        self._slow: _Slow | None = None
        self._slow_lock = asyncio.Lock()
        self._sandboxes = asyncio.Semaphore(CODE_RUNS_AT_ONCE)
        self._fast: dict[str, Callable[[list[dict[str, Any]]], list[dict[str, Any]]]] = {
            "basic::equality": _equality,
            "basic::normalized_equality": _per_pair(_normalised_equal),
            "basic::subset_of": _per_pair(_subset),
            "basic::starts_with": _per_pair(_starts_with),
            "basic::regex_match": _regex_match,
            "basic::regex_parser_math_response": _math,
            "basic::f1": _per_pair(token_f1),
        }

    async def initialize(self) -> None:
        # BLEU and ROUGE wait for the first call that needs them: rouge-score imports nltk, which pulls in
        # scipy, scikit-learn and pandas (about two CPU seconds and 60 MB on every start otherwise).
        return None

    async def _slow_metrics(self) -> _Slow:
        """BLEU and ROUGE, built (in a thread: importing them takes seconds) by the first call that needs them."""
        async with self._slow_lock:
            if self._slow is None:
                self._slow = await asyncio.to_thread(_Slow)
            return self._slow

    async def shutdown(self) -> None:
        return None

    async def health(self) -> dict[str, Any]:
        return {"status": "ok"}

    async def list_functions(self) -> list[ScoringFunction]:
        return [f.model_copy(update={"provider_id": self.provider_id}) for f in FUNCTIONS]

    async def score(
        self, function: ScoringFunction, params: ScoringFnParams | None, rows: list[dict[str, Any]]
    ) -> list[dict[str, Any]]:
        name = function.provider_resource_id if function.source == "provider" else "regex_parser"
        fast = self._fast.get(name)
        if fast is not None:
            return fast(rows)
        if name in ("regex_parser", "basic::regex_parser_multiple_choice_answer"):
            regexes = params.parsing_regexes if isinstance(params, RegexParserParams) else []
            if name == "basic::regex_parser_multiple_choice_answer" and (
                not regexes or regexes == [p.pattern for p in CHOICE_REGEXES]
            ):
                return _choice(rows)
            if not regexes:
                raise InvalidRequestError(
                    f"Scoring function '{function.identifier}' needs params.parsing_regexes.",
                    param=f"scoring_functions.{function.identifier}.parsing_regexes",
                )
            return _regex(regexes)(rows)
        if name == "basic::code_unit_tests":
            return await _code_rows(rows, self._sandboxes)
        slow = await self._slow_metrics()
        if name == "basic::bleu":
            return await asyncio.to_thread(slow.bleu_rows, rows)
        if name in ("basic::rouge1", "basic::rouge_l"):
            return await asyncio.to_thread(slow.rouge_rows, "rouge1" if name == "basic::rouge1" else "rougeL", rows)
        raise InvalidRequestError(f"Provider '{self.provider_id}' has no scoring function '{name}'.")


async def create_provider(provider_id: str, config: BasicConfig, deps: dict[str, Any]) -> BasicScoringProvider:
    return BasicScoringProvider(provider_id, config)
