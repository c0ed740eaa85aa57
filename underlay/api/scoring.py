"""The Scoring API: scoring functions (a resource), ``score`` over rows and ``score-batch`` over a dataset.

The shapes follow Llama Stack's scoring API, so clients and eval code written for it read naturally
here: a *scoring function* has an ``identifier``, the ``provider_id`` that computes it, a
``return_type`` and typed ``params`` (``llm_as_judge``, ``regex_parser`` or ``basic``; Underlay adds
``embedding`` and ``rag`` for the embedding-similarity and RAG-metric functions). ``POST
/v1/scoring/score`` takes ``input_rows`` and ``{function id: params or null}`` and answers, per
function, one score row per input row plus aggregates.

Why rows are open dicts: a dataset's columns are the user's (``input_query``, ``generated_answer``,
``expected_answer``, ``context`` are the conventional ones), and a score row carries what its function
found (``score``, the judge's feedback, a parsed answer, an ``error``). Both are bounded here instead:
rows per call, bytes per row, functions per call, regex and template sizes.

Why every aggregate carries an interval: a mean over twenty rows is not a mean over twenty thousand; a
client comparing two runs needs to know whether a difference is noise. ``ci_method`` names the method
(Wilson for proportions, normal for means, distribution-free order statistics for the median).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Annotated, Any, Literal, Protocol

from pydantic import Field, field_validator, model_validator

from underlay.api.base import ApiModel
from underlay.api.routes import Handler, Route

__all__ = [
    "AGGREGATION_FUNCTIONS",
    "AggregationFunction",
    "BasicParams",
    "DeletedScoringFunction",
    "EmbeddingParams",
    "LLMAsJudgeParams",
    "MAX_FUNCTIONS_PER_CALL",
    "MAX_ROWS_PER_CALL",
    "MAX_ROW_BYTES",
    "ROUTES",
    "RagParams",
    "RegexParserParams",
    "RegisterScoringFunctionRequest",
    "ReturnType",
    "ScoreBatchRequest",
    "ScoreBatchResponse",
    "ScoreRequest",
    "ScoreResponse",
    "ScoringApi",
    "ScoringFnParams",
    "ScoringFunction",
    "ScoringFunctionList",
    "ScoringProvider",
    "ScoringResult",
    "TEMPLATE_FIELDS",
    "check_rows",
]

MAX_ROWS_PER_CALL = 10_000
"""Rows in one ``score`` call; larger sets go through ``score-batch`` or several calls."""
MAX_ROW_BYTES = 65_536
"""One row as JSON: a question, an answer, a reference and some retrieved context, not a corpus."""
MAX_FUNCTIONS_PER_CALL = 20
MAX_REGEXES = 20
MAX_REGEX_CHARS = 1_000
MAX_TEMPLATE_CHARS = 20_000

AggregationFunction = Literal["accuracy", "average", "median", "categorical_count", "weighted_average"]
AGGREGATION_FUNCTIONS: tuple[str, ...] = ("accuracy", "average", "median", "categorical_count", "weighted_average")

TEMPLATE_FIELDS: tuple[str, ...] = ("input_query", "generated_answer", "expected_answer", "context")
"""The row fields a judge template may name as ``{field}``."""

_ID = r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}$"
_Model = Annotated[str, Field(min_length=1, max_length=256)]
_Aggregations = Annotated[list[AggregationFunction], Field(default_factory=list, max_length=5)]


def _check_regexes(values: list[str]) -> list[str]:
    for value in values:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"{value[:80]!r} is not a valid regular expression ({exc})") from None
    return values


_Regexes = Annotated[
    list[Annotated[str, Field(min_length=1, max_length=MAX_REGEX_CHARS)]], Field(max_length=MAX_REGEXES)
]


class ReturnType(ApiModel):
    """What a score is: a ``number`` (0..1 or a grade), a ``boolean`` or a ``string`` (a label)."""

    type: Literal["number", "boolean", "string"] = "number"


class BasicParams(ApiModel):
    """A built-in function computed from the row alone (equality, F1, BLEU ...)."""

    type: Literal["basic"] = "basic"
    aggregation_functions: _Aggregations


class RegexParserParams(ApiModel):
    """Parse the answer out of ``generated_answer`` with the first regex that matches (its group 1) and
    compare it with ``expected_answer``."""

    type: Literal["regex_parser"] = "regex_parser"
    parsing_regexes: _Regexes = Field(default_factory=list)
    aggregation_functions: _Aggregations

    _regexes = field_validator("parsing_regexes")(_check_regexes)


class LLMAsJudgeParams(ApiModel):
    """Ask ``judge_model`` with ``prompt_template`` filled from the row; the first of
    ``judge_score_regexes`` that matches its answer gives the score (group 1)."""

    type: Literal["llm_as_judge"] = "llm_as_judge"
    judge_model: _Model | None = Field(default=None, description="Any chat model of GET /v1/models.")
    prompt_template: str | None = Field(
        default=None,
        max_length=MAX_TEMPLATE_CHARS,
        description="Text with {input_query}, {generated_answer}, {expected_answer} and {context} fields.",
    )
    judge_score_regexes: _Regexes = Field(default_factory=list)
    max_tokens: int | None = Field(
        default=None, ge=1, le=4096, description="The judge's answer length; the provider's setting when left out."
    )
    aggregation_functions: _Aggregations

    _regexes = field_validator("judge_score_regexes")(_check_regexes)

    @field_validator("prompt_template")
    @classmethod
    def _fields_known(cls, value: str | None) -> str | None:
        if value is None:
            return value
        for name in re.findall(r"\{(\w+)\}", value):
            if name not in TEMPLATE_FIELDS:
                raise ValueError(f"unknown template field {{{name}}}; use {', '.join(TEMPLATE_FIELDS)}")
        return value


class EmbeddingParams(ApiModel):
    """Cosine similarity of the embeddings of ``generated_answer`` and ``expected_answer``."""

    type: Literal["embedding"] = "embedding"
    embedding_model: _Model | None = Field(default=None, description="An embedding model of GET /v1/models.")
    aggregation_functions: _Aggregations


class RagParams(ApiModel):
    """RAG metrics: a judge model for claims and verdicts, an embedding model for relevance."""

    type: Literal["rag"] = "rag"
    judge_model: _Model | None = None
    embedding_model: _Model | None = None
    aggregation_functions: _Aggregations


ScoringFnParams = Annotated[
    LLMAsJudgeParams | RegexParserParams | BasicParams | EmbeddingParams | RagParams, Field(discriminator="type")
]


class ScoringFunction(ApiModel):
    """A scoring function as listed: a provider's built-in or one a user registered."""

    identifier: str
    type: Literal["scoring_function"] = "scoring_function"
    provider_id: str
    provider_resource_id: str
    description: str = ""
    return_type: ReturnType = Field(default_factory=ReturnType)
    params: ScoringFnParams | None = None
    required_columns: list[str] = Field(default_factory=list, description="Row fields every row must have.")
    source: Literal["provider", "api"] = "provider"
    created_at: int | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)


class ScoringFunctionList(ApiModel):
    data: list[ScoringFunction]


class DeletedScoringFunction(ApiModel):
    id: str
    object: Literal["scoring_function.deleted"] = "scoring_function.deleted"
    deleted: bool = True


class RegisterScoringFunctionRequest(ApiModel):
    """``POST /v1/scoring-functions``: a judge (prompt and score regexes) or a regex parser of your own."""

    scoring_fn_id: str = Field(pattern=_ID, description="The id to score with; not one of the built-ins.")
    description: str = Field(default="", max_length=1_000)
    return_type: ReturnType = Field(default_factory=ReturnType)
    params: Annotated[LLMAsJudgeParams | RegexParserParams, Field(discriminator="type")]
    provider_id: str | None = Field(default=None, max_length=128, description="Which scoring provider runs it.")
    provider_scoring_fn_id: str | None = Field(default=None, max_length=128)
    metadata: dict[str, str] = Field(default_factory=dict, max_length=16)

    @model_validator(mode="after")
    def _complete(self) -> RegisterScoringFunctionRequest:
        params = self.params
        if isinstance(params, RegexParserParams) and not params.parsing_regexes:
            raise ValueError("params.parsing_regexes needs at least one regular expression")
        if isinstance(params, LLMAsJudgeParams):
            if not params.prompt_template:
                raise ValueError("params.prompt_template is required for an llm_as_judge function")
            if not params.judge_score_regexes:
                raise ValueError("params.judge_score_regexes needs at least one regex whose group 1 is the score")
        return self


def _row_size(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return check_rows(rows)


def check_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Refuse a row bigger than :data:`MAX_ROW_BYTES` as JSON, naming its index."""
    for index, row in enumerate(rows):
        size = len(json.dumps(row, ensure_ascii=False, default=str))
        if size > MAX_ROW_BYTES:
            raise ValueError(f"row {index} is {size} bytes as JSON; the limit is {MAX_ROW_BYTES}")
    return rows


_Functions = Annotated[
    dict[Annotated[str, Field(max_length=256)], ScoringFnParams | None],
    Field(min_length=1, max_length=MAX_FUNCTIONS_PER_CALL),
]


class ScoreRequest(ApiModel):
    """``POST /v1/scoring/score``: rows and the functions to run on each, with params to override theirs."""

    input_rows: list[dict[str, Any]] = Field(min_length=1, max_length=MAX_ROWS_PER_CALL)
    scoring_functions: _Functions

    _rows = field_validator("input_rows")(_row_size)


class ScoringResult(ApiModel):
    """One function's answer: a score row per input row (in order) and its aggregates.

    A score row has ``score`` (``None`` when the row failed, with ``error`` saying why) and whatever the
    function adds. Each aggregate is ``{<name>: value, ..., "ci95": [low, high], "ci_method": ...}``.
    """

    score_rows: list[dict[str, Any]]
    aggregated_results: dict[str, dict[str, Any]] = Field(default_factory=dict)
    error_count: int = Field(default=0, description="Rows whose score could not be computed (left out of aggregates).")


class ScoreResponse(ApiModel):
    results: dict[str, ScoringResult]


class ScoreBatchRequest(ApiModel):
    """``POST /v1/scoring/score-batch``: every row of a registered dataset."""

    dataset_id: str = Field(min_length=1, max_length=256)
    scoring_functions: _Functions
    save_results_dataset: bool = False


class ScoreBatchResponse(ApiModel):
    dataset_id: str | None = Field(default=None, description="The saved results dataset, when asked for.")
    results: dict[str, ScoringResult]


class ScoringApi(Protocol):
    """The scoring router: one method per route, plus :meth:`score_rows` for code in this process."""

    async def list_scoring_functions(self) -> ScoringFunctionList:
        """The providers' built-ins and the functions the caller may read."""
        ...

    async def get_scoring_function(self, scoring_fn_id: str) -> ScoringFunction: ...

    async def register_scoring_function(self, params: RegisterScoringFunctionRequest) -> ScoringFunction: ...

    async def unregister_scoring_function(self, scoring_fn_id: str) -> DeletedScoringFunction: ...

    async def score(self, params: ScoreRequest) -> ScoreResponse: ...

    async def score_batch(self, params: ScoreBatchRequest) -> ScoreBatchResponse: ...

    async def score_rows(
        self, rows: list[dict[str, Any]], functions: Mapping[str, ScoringFnParams | None]
    ) -> dict[str, ScoringResult]:
        """Score ``rows`` with each function as the current principal (what the eval engine calls).

        No row-count bound here (the caller chunks as it likes); the row checks of :class:`ScoreRequest`
        still apply through the functions' required columns.
        """
        ...


class ScoringProvider(Protocol):
    """What a scoring provider does: offer built-in functions, and score rows with one function.

    ``user_params_types`` names the ``params`` types of user-registered functions it can run
    (``llm_as_judge``, ``regex_parser``); the router sends such a function to a provider that accepts it.
    ``score`` returns one dict per row, in order, each with ``score``; a row that could not be scored
    has ``score: None`` and ``error`` instead of raising, so one bad row never fails the call.
    """

    provider_id: str
    user_params_types: tuple[str, ...]

    async def initialize(self) -> None: ...

    async def shutdown(self) -> None: ...

    async def list_functions(self) -> list[ScoringFunction]: ...

    async def score(
        self, function: ScoringFunction, params: ScoringFnParams | None, rows: list[dict[str, Any]]
    ) -> list[dict[str, Any]]: ...


def _route(method: str, path: str, handler: Handler, summary: str, **kwargs: Any) -> Route:
    return Route(method, path, handler, summary=summary, tags=("scoring",), **kwargs)


ROUTES: list[Route] = [
    _route(
        "GET",
        "/v1/scoring-functions",
        ScoringApi.list_scoring_functions,
        "List scoring functions",
        response=ScoringFunctionList,
    ),
    _route(
        "GET",
        "/v1/scoring-functions/{scoring_fn_id}",
        ScoringApi.get_scoring_function,
        "Retrieve a scoring function",
        response=ScoringFunction,
    ),
    _route(
        "POST",
        "/v1/scoring-functions",
        ScoringApi.register_scoring_function,
        "Register a scoring function",
        body=RegisterScoringFunctionRequest,
        response=ScoringFunction,
    ),
    _route(
        "DELETE",
        "/v1/scoring-functions/{scoring_fn_id}",
        ScoringApi.unregister_scoring_function,
        "Unregister a scoring function",
        response=DeletedScoringFunction,
    ),
    _route("POST", "/v1/scoring/score", ScoringApi.score, "Score rows", body=ScoreRequest, response=ScoreResponse),
    _route(
        "POST",
        "/v1/scoring/score-batch",
        ScoringApi.score_batch,
        "Score every row of a dataset",
        body=ScoreBatchRequest,
        response=ScoreBatchResponse,
    ),
]
