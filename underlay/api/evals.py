"""The Evals API: OpenAI's ``/v1/evals`` (evals, runs, output items), as the ``openai`` SDK's ``client.evals``
speaks it.

OpenAI shut its hosted Evals down; code and datasets written against it run here by changing the base URL.
An **eval** fixes the shape of a row (``data_source_config``) and how a row is graded (``testing_criteria``).
A **run** feeds rows to it (``data_source``): rows from a JSONL file or inline, and optionally a candidate
that produces a ``sample`` for each row first (a chat model through ``/v1/chat/completions`` semantics, or a
Responses configuration, which is how a deployed agent ``agent/<name>`` is evaluated). Each row ends as an
**output item** holding the sample and every grader's result; the run counts passed, failed and errored rows.

Why the bounds and checks live here: a client reading this module learns what a request may say (how many
rows inline, how long a template) without reading server code, and the server refuses an oversized or
unsupported request before any work starts. Grader types the SDK knows but Underlay does not run
(``python``: it would execute client code on the server) are refused with a message saying what to use.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal, Protocol

from pydantic import ConfigDict, Field, field_validator, model_validator

from underlay.api.base import ApiModel
from underlay.api.pagination import ListPage, ListQuery
from underlay.api.response_items import check_metadata
from underlay.api.routes import Handler, Route

__all__ = [
    "GRADER_TYPES",
    "MAX_INLINE_ROWS",
    "MAX_ROWS",
    "MAX_SCHEMA_BYTES",
    "MAX_TEMPLATE_CHARS",
    "CompletionsRunDataSource",
    "CompletionsSamplingParams",
    "CreateEvalRequest",
    "CreateRunRequest",
    "CustomDataSourceConfig",
    "DataSourceConfigOut",
    "Eval",
    "EvalDeleted",
    "EvalError",
    "EvalList",
    "EvalListQuery",
    "EvalRun",
    "EvalRunDeleted",
    "EvalRunList",
    "EvalsApi",
    "FileContentRow",
    "FileContentSource",
    "FileIdSource",
    "GraderMessage",
    "ItemReferenceMessages",
    "JsonlRunDataSource",
    "LabelModelGrader",
    "LogsDataSourceConfig",
    "ModelUsage",
    "OutputItem",
    "OutputItemList",
    "OutputItemListQuery",
    "OutputItemResult",
    "OutputItemSample",
    "ResponsesRunDataSource",
    "ResponsesSamplingParams",
    "ROUTES",
    "RunDataSource",
    "RunListQuery",
    "RunProgress",
    "RunStatus",
    "ResultCounts",
    "SampleMessage",
    "SampleUsage",
    "ScoreModelGrader",
    "ScoreSamplingParams",
    "StoredCompletionsDataSourceConfig",
    "StoredCompletionsSource",
    "StringCheckGrader",
    "TemplateMessages",
    "TestingCriterion",
    "TestingCriteriaResult",
    "TextSimilarityGrader",
    "UpdateEvalRequest",
    "message_text",
]

MAX_TEMPLATE_CHARS = 20_000
"""One template string (a grader's input or reference, a message's content)."""
MAX_SCHEMA_BYTES = 65_536
"""An item schema, as JSON."""
MAX_INLINE_ROWS = 2_000
"""Rows a run may carry inline (``file_content``); larger data goes in a file."""
MAX_ROWS = 50_000
"""Rows of one run, from any source."""
MAX_MESSAGES = 64
MAX_CRITERIA = 32
NAME = Field(min_length=1, max_length=256)

GRADER_TYPES: tuple[str, ...] = ("string_check", "text_similarity", "label_model", "score_model")
"""The testing criteria Underlay runs (``python`` and ``multi`` are refused with a message)."""

Role = Literal["user", "assistant", "system", "developer"]
RunStatus = Literal["queued", "in_progress", "completed", "canceled", "failed"]
SimilarityMetric = Literal[
    "cosine",
    "fuzzy_match",
    "bleu",
    "gleu",
    "meteor",
    "rouge_1",
    "rouge_2",
    "rouge_3",
    "rouge_4",
    "rouge_5",
    "rouge_l",
]

_TEXT_PARTS = ("input_text", "output_text", "text")


def _json_size(value: Any) -> int:
    return len(json.dumps(value, default=str))


def message_text(content: Any) -> str:
    """The text of a message's content: a string, one text part, or a list of them (other parts refused)."""
    if isinstance(content, str):
        return content
    parts = content if isinstance(content, list) else [content]
    out: list[str] = []
    for part in parts:
        if isinstance(part, str):
            out.append(part)
        elif isinstance(part, dict) and part.get("type") in _TEXT_PARTS and isinstance(part.get("text"), str):
            out.append(part["text"])
        else:
            kind = part.get("type") if isinstance(part, dict) else type(part).__name__
            raise ValueError(
                f"content part of type {kind!r} is not supported here; use text (a string, or input_text or "
                "output_text parts)"
            )
    return "".join(out)


class GraderMessage(ApiModel):
    """One message of a template: a role and text content that may hold ``{{item.x}}`` / ``{{sample.x}}``."""

    model_config = ConfigDict(extra="forbid")

    role: Role
    content: str | dict[str, Any] | list[Any]
    type: Literal["message"] | None = None

    @field_validator("content")
    @classmethod
    def _text_only(cls, value: Any) -> Any:
        text = message_text(value)
        if len(text) > MAX_TEMPLATE_CHARS:
            raise ValueError(f"content is at most {MAX_TEMPLATE_CHARS} characters")
        return value

    @field_validator("role", mode="before")
    @classmethod
    def _role(cls, value: Any) -> Any:
        if value not in ("user", "assistant", "system", "developer"):
            raise ValueError(f"role {str(value)[:40]!r} is not one of user, assistant, system, developer")
        return value


# ---- testing criteria (graders) ---------------------------------------------------------------------


class StringCheckGrader(ApiModel):
    """Compares two rendered strings: ``eq``, ``ne``, ``like`` (contains), ``ilike`` (contains, any case)."""

    type: Literal["string_check"]
    name: str = NAME
    input: str = Field(max_length=MAX_TEMPLATE_CHARS)
    reference: str = Field(max_length=MAX_TEMPLATE_CHARS)
    operation: Literal["eq", "ne", "like", "ilike"]


class TextSimilarityGrader(ApiModel):
    """Scores the similarity of two rendered strings (0..1) and passes at ``pass_threshold``."""

    type: Literal["text_similarity"]
    name: str = NAME
    input: str = Field(max_length=MAX_TEMPLATE_CHARS)
    reference: str = Field(max_length=MAX_TEMPLATE_CHARS)
    evaluation_metric: SimilarityMetric
    pass_threshold: float = Field(ge=0, le=1)


class LabelModelGrader(ApiModel):
    """A judge model picks one of ``labels`` (structured output); the row passes on a ``passing_labels`` one."""

    type: Literal["label_model"]
    name: str = NAME
    model: str = Field(min_length=1, max_length=256)
    input: list[GraderMessage] = Field(min_length=1, max_length=MAX_MESSAGES)
    labels: list[Annotated[str, Field(min_length=1, max_length=128)]] = Field(min_length=1, max_length=64)
    passing_labels: list[Annotated[str, Field(min_length=1, max_length=128)]] = Field(min_length=1, max_length=64)

    @model_validator(mode="after")
    def _subset(self) -> LabelModelGrader:
        unknown = [label for label in self.passing_labels if label not in self.labels]
        if unknown:
            raise ValueError(f"passing_labels {unknown[:5]} are not among labels {self.labels[:20]}")
        return self


class ScoreSamplingParams(ApiModel):
    max_completions_tokens: int | None = Field(default=None, ge=1, le=4096)
    reasoning_effort: str | None = Field(default=None, max_length=32)
    seed: int | None = None
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)


class ScoreModelGrader(ApiModel):
    """A judge model gives a number in ``range`` (default 0..1); the row passes at ``pass_threshold``.

    Without ``pass_threshold`` a score passes from the middle of the range up.
    """

    type: Literal["score_model"]
    name: str = NAME
    model: str = Field(min_length=1, max_length=256)
    input: list[GraderMessage] = Field(min_length=1, max_length=MAX_MESSAGES)
    range: list[float] | None = Field(default=None, min_length=2, max_length=2)
    sampling_params: ScoreSamplingParams | None = None
    pass_threshold: float | None = None

    @model_validator(mode="after")
    def _range(self) -> ScoreModelGrader:
        low, high = self.range or (0.0, 1.0)
        if not low < high:
            raise ValueError("range must be [low, high] with low < high")
        return self


TestingCriterion = Annotated[
    StringCheckGrader | TextSimilarityGrader | LabelModelGrader | ScoreModelGrader, Field(discriminator="type")
]


# ---- data source configs (of an eval) ----------------------------------------------------------------


class CustomDataSourceConfig(ApiModel):
    """Rows are JSON objects matching ``item_schema``; ``include_sample_schema`` says runs will sample."""

    type: Literal["custom"]
    item_schema: dict[str, Any]
    include_sample_schema: bool = False

    @field_validator("item_schema")
    @classmethod
    def _bounded(cls, value: dict[str, Any]) -> dict[str, Any]:
        if _json_size(value) > MAX_SCHEMA_BYTES:
            raise ValueError(f"item_schema is over {MAX_SCHEMA_BYTES} bytes of JSON")
        return value


class LogsDataSourceConfig(ApiModel):
    """Rows are stored chat completions (``store: true``), selected by metadata at run time."""

    type: Literal["logs"]
    metadata: dict[str, Any] | None = None

    @field_validator("metadata")
    @classmethod
    def _bounded(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None and (len(value) > 16 or _json_size(value) > 8192):
            raise ValueError("metadata holds at most 16 keys and 8 KiB of JSON")
        return value


class StoredCompletionsDataSourceConfig(LogsDataSourceConfig):
    """The older name of ``logs``, kept because SDK code still sends it."""

    type: Literal["stored_completions"]  # type: ignore[assignment]


DataSourceConfig = Annotated[
    CustomDataSourceConfig | LogsDataSourceConfig | StoredCompletionsDataSourceConfig, Field(discriminator="type")
]


class DataSourceConfigOut(ApiModel):
    """The data source config as an eval reports it: its type and the JSON schema of a row (``item``, ``sample``)."""

    model_config = ConfigDict(populate_by_name=True, serialize_by_alias=True)

    type: Literal["custom", "logs", "stored_completions"]
    schema_: dict[str, Any] = Field(alias="schema")
    metadata: dict[str, Any] | None = None


def _check_criteria(value: Any) -> Any:
    """A clear message for grader types Underlay does not run, before the union's own error."""
    if not isinstance(value, list):
        return value
    for index, criterion in enumerate(value):
        kind = criterion.get("type") if isinstance(criterion, dict) else None
        if kind == "python":
            raise ValueError(
                f"testing_criteria[{index}]: python graders are not supported (Underlay does not run client "
                f"code on the server); use one of {', '.join(GRADER_TYPES)}"
            )
        if kind is not None and kind not in GRADER_TYPES:
            raise ValueError(
                f"testing_criteria[{index}]: unknown grader type {str(kind)[:40]!r}; "
                f"use one of {', '.join(GRADER_TYPES)}"
            )
    return value


class CreateEvalRequest(ApiModel):
    """``POST /v1/evals``."""

    data_source_config: DataSourceConfig
    testing_criteria: list[TestingCriterion] = Field(min_length=1, max_length=MAX_CRITERIA)
    name: str | None = Field(default=None, max_length=256)
    metadata: dict[str, str] | None = None

    _metadata = field_validator("metadata")(check_metadata)
    _criteria = field_validator("testing_criteria", mode="before")(_check_criteria)

    @field_validator("testing_criteria")
    @classmethod
    def _unique_names(cls, value: list[Any]) -> list[Any]:
        names = [c.name for c in value]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"testing criteria names must be unique; repeated: {twice[:5]}")
        return value


class UpdateEvalRequest(ApiModel):
    """``POST /v1/evals/{eval_id}``: rename, or replace the metadata."""

    name: str | None = Field(default=None, max_length=256)
    metadata: dict[str, str] | None = None

    _metadata = field_validator("metadata")(check_metadata)


class Eval(ApiModel):
    id: str
    object: Literal["eval"] = "eval"
    created_at: int
    name: str
    data_source_config: DataSourceConfigOut
    testing_criteria: list[TestingCriterion]
    metadata: dict[str, str] | None = None


EvalList = ListPage[Eval]


class EvalListQuery(ListQuery):
    order_by: Literal["created_at", "updated_at"] = "created_at"
    order: Literal["asc", "desc"] = "asc"


class EvalDeleted(ApiModel):
    object: Literal["eval.deleted"] = "eval.deleted"
    deleted: bool = True
    eval_id: str


# ---- run data sources ---------------------------------------------------------------------------------


class FileContentRow(ApiModel):
    item: dict[str, Any]
    sample: dict[str, Any] | None = None


class FileContentSource(ApiModel):
    """Rows inline in the request."""

    type: Literal["file_content"]
    content: list[FileContentRow] = Field(min_length=1, max_length=MAX_INLINE_ROWS)

    @field_validator("content")
    @classmethod
    def _bounded(cls, value: list[FileContentRow]) -> list[FileContentRow]:
        if _json_size([r.model_dump() for r in value]) > 16_000_000:
            raise ValueError("inline content is over 16 MB of JSON; upload a JSONL file and use file_id")
        return value


class FileIdSource(ApiModel):
    """Rows in an uploaded JSONL file: one ``{"item": {...}, "sample": {...}}`` object per line."""

    type: Literal["file_id"]
    id: str = Field(min_length=1, max_length=256)


class StoredCompletionsSource(ApiModel):
    """Rows from stored chat completions (``store: true``), filtered like ``GET /v1/chat/completions``."""

    type: Literal["stored_completions"]
    created_after: int | None = None
    created_before: int | None = None
    limit: int | None = Field(default=None, ge=1, le=MAX_ROWS)
    metadata: dict[str, str] | None = None
    model: str | None = Field(default=None, max_length=256)

    _metadata = field_validator("metadata")(check_metadata)


class TemplateMessages(ApiModel):
    """The candidate's prompt: messages rendered per row (``{{item.x}}``)."""

    type: Literal["template"]
    template: list[GraderMessage] = Field(min_length=1, max_length=MAX_MESSAGES)


class ItemReferenceMessages(ApiModel):
    """The candidate's prompt is a list of messages inside each row (e.g. ``item.messages``)."""

    type: Literal["item_reference"]
    item_reference: str = Field(min_length=1, max_length=256)


InputMessages = Annotated[TemplateMessages | ItemReferenceMessages, Field(discriminator="type")]


class CompletionsSamplingParams(ApiModel):
    max_completion_tokens: int | None = Field(default=None, ge=1, le=32_768)
    reasoning_effort: str | None = Field(default=None, max_length=32)
    response_format: dict[str, Any] | None = None
    seed: int | None = None
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    tools: list[dict[str, Any]] | None = Field(default=None, max_length=64)

    @field_validator("response_format", "tools")
    @classmethod
    def _bounded(cls, value: Any) -> Any:
        if value is not None and _json_size(value) > MAX_SCHEMA_BYTES:
            raise ValueError(f"is over {MAX_SCHEMA_BYTES} bytes of JSON")
        return value


class ResponsesSamplingParams(ApiModel):
    max_completion_tokens: int | None = Field(default=None, ge=1, le=32_768)
    reasoning_effort: str | None = Field(default=None, max_length=32)
    seed: int | None = None
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    text: dict[str, Any] | None = None
    tools: list[dict[str, Any]] | None = Field(default=None, max_length=64)

    @field_validator("text", "tools")
    @classmethod
    def _bounded(cls, value: Any) -> Any:
        if value is not None and _json_size(value) > MAX_SCHEMA_BYTES:
            raise ValueError(f"is over {MAX_SCHEMA_BYTES} bytes of JSON")
        return value


RowSource = Annotated[FileContentSource | FileIdSource, Field(discriminator="type")]


class JsonlRunDataSource(ApiModel):
    """Rows as given (each may carry its own ``sample``); nothing is sampled."""

    type: Literal["jsonl"]
    source: RowSource


class CompletionsRunDataSource(ApiModel):
    """Each row is sampled from a chat model (``model``) with the rendered ``input_messages``."""

    type: Literal["completions"]
    source: Annotated[FileContentSource | FileIdSource | StoredCompletionsSource, Field(discriminator="type")]
    input_messages: InputMessages | None = None
    model: str | None = Field(default=None, max_length=256)
    sampling_params: CompletionsSamplingParams | None = None


class ResponsesRunDataSource(ApiModel):
    """Each row is sampled through the Responses API: ``model`` (``agent/<name>`` for a deployed agent),
    the rendered ``input_messages`` (system/developer ones become the instructions) and ``sampling_params``
    (tools, text format)."""

    type: Literal["responses"]
    source: RowSource
    input_messages: InputMessages | None = None
    model: str | None = Field(default=None, max_length=256)
    sampling_params: ResponsesSamplingParams | None = None


RunDataSource = Annotated[
    JsonlRunDataSource | CompletionsRunDataSource | ResponsesRunDataSource, Field(discriminator="type")
]


class CreateRunRequest(ApiModel):
    """``POST /v1/evals/{eval_id}/runs``."""

    data_source: RunDataSource
    name: str | None = Field(default=None, max_length=256)
    metadata: dict[str, str] | None = None

    _metadata = field_validator("metadata")(check_metadata)

    @field_validator("data_source", mode="before")
    @classmethod
    def _known_source(cls, value: Any) -> Any:
        kind = (
            value.get("source", {}).get("type")
            if isinstance(value, dict) and isinstance(value.get("source"), dict)
            else None
        )
        if isinstance(value, dict) and value.get("type") == "responses" and kind == "responses":
            raise ValueError(
                "a responses run's source cannot be 'responses' (stored responses) here yet; give the rows "
                "as file_content or file_id and let the run sample them"
            )
        return value


class EvalError(ApiModel):
    """Why a run failed (``code`` and ``message`` are empty strings while it has not)."""

    code: str = ""
    message: str = ""


class ResultCounts(ApiModel):
    total: int = 0
    passed: int = 0
    failed: int = 0
    errored: int = 0


class TestingCriteriaResult(ApiModel):
    __test__ = False  # not a pytest class, whatever imports it

    testing_criteria: str
    passed: int = 0
    failed: int = 0


class ModelUsage(ApiModel):
    model_name: str
    invocation_count: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    cached_tokens: int = 0


class RunProgress(ApiModel):
    """Underlay's addition to a run: rows finished of all, and the pace of the current attempt."""

    rows_done: int = 0
    rows_total: int = 0
    rows_per_second: float = 0.0


class EvalRun(ApiModel):
    id: str
    object: Literal["eval.run"] = "eval.run"
    eval_id: str
    name: str
    model: str = ""
    status: RunStatus
    created_at: int
    data_source: RunDataSource
    error: EvalError = Field(default_factory=EvalError)
    metadata: dict[str, str] | None = None
    per_model_usage: list[ModelUsage] = Field(default_factory=list)
    per_testing_criteria_results: list[TestingCriteriaResult] = Field(default_factory=list)
    report_url: str = ""
    result_counts: ResultCounts = Field(default_factory=ResultCounts)
    progress: RunProgress = Field(default_factory=RunProgress)


EvalRunList = ListPage[EvalRun]


class RunListQuery(ListQuery):
    order: Literal["asc", "desc"] = "asc"
    status: RunStatus | None = None


class EvalRunDeleted(ApiModel):
    object: Literal["eval.run.deleted"] = "eval.run.deleted"
    deleted: bool = True
    run_id: str


class OutputItemResult(ApiModel):
    """One grader's verdict on a row; ``sample`` holds a judge's own output, when it had one."""

    model_config = ConfigDict(extra="allow")

    name: str
    type: str
    score: float
    passed: bool
    sample: dict[str, Any] | None = None


class SampleUsage(ApiModel):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    cached_tokens: int = 0


class SampleMessage(ApiModel):
    role: str
    content: str


class OutputItemSample(ApiModel):
    """What the candidate was asked and answered for this row (empty when the run did not sample)."""

    input: list[SampleMessage] = Field(default_factory=list)
    output: list[SampleMessage] = Field(default_factory=list)
    model: str = ""
    finish_reason: str = ""
    usage: SampleUsage = Field(default_factory=SampleUsage)
    error: EvalError = Field(default_factory=EvalError)
    temperature: float = 1.0
    top_p: float = 1.0
    max_completion_tokens: int = 0
    seed: int = 0


class OutputItem(ApiModel):
    id: str
    object: Literal["eval.run.output_item"] = "eval.run.output_item"
    created_at: int
    eval_id: str
    run_id: str
    status: Literal["pass", "fail", "error"]
    datasource_item_id: int
    datasource_item: dict[str, Any]
    results: list[OutputItemResult]
    sample: OutputItemSample


OutputItemList = ListPage[OutputItem]


class OutputItemListQuery(ListQuery):
    order: Literal["asc", "desc"] = "asc"
    status: Literal["pass", "fail", "error"] | None = None


class EvalsApi(Protocol):
    """The evals router: one method per route below, as the current principal."""

    async def create_eval(self, params: CreateEvalRequest) -> Eval: ...

    async def retrieve_eval(self, eval_id: str) -> Eval: ...

    async def update_eval(self, eval_id: str, params: UpdateEvalRequest) -> Eval: ...

    async def list_evals(self, query: EvalListQuery) -> EvalList: ...

    async def delete_eval(self, eval_id: str) -> EvalDeleted:
        """Cancels its unfinished runs and deletes them with their output items."""
        ...

    async def create_run(self, eval_id: str, params: CreateRunRequest) -> EvalRun:
        """Queue a run (a durable job); inline rows are checked against the item schema first."""
        ...

    async def retrieve_run(self, eval_id: str, run_id: str) -> EvalRun: ...

    async def list_runs(self, eval_id: str, query: RunListQuery) -> EvalRunList: ...

    async def cancel_run(self, eval_id: str, run_id: str) -> EvalRun: ...

    async def delete_run(self, eval_id: str, run_id: str) -> EvalRunDeleted: ...

    async def list_output_items(self, eval_id: str, run_id: str, query: OutputItemListQuery) -> OutputItemList: ...

    async def retrieve_output_item(self, eval_id: str, run_id: str, output_item_id: str) -> OutputItem: ...


def _route(method: str, path: str, handler: Handler, summary: str, **kwargs: Any) -> Route:
    return Route(method, path, handler, summary=summary, tags=("evals",), **kwargs)


_RUN = "/v1/evals/{eval_id}/runs/{run_id}"

ROUTES: list[Route] = [
    _route("POST", "/v1/evals", EvalsApi.create_eval, "Create an eval", body=CreateEvalRequest, response=Eval),
    _route("GET", "/v1/evals", EvalsApi.list_evals, "List evals", query=EvalListQuery, response=EvalList),
    _route("GET", "/v1/evals/{eval_id}", EvalsApi.retrieve_eval, "Retrieve an eval", response=Eval),
    _route(
        "POST", "/v1/evals/{eval_id}", EvalsApi.update_eval, "Update an eval", body=UpdateEvalRequest, response=Eval
    ),
    _route("DELETE", "/v1/evals/{eval_id}", EvalsApi.delete_eval, "Delete an eval", response=EvalDeleted),
    _route(
        "POST", "/v1/evals/{eval_id}/runs", EvalsApi.create_run, "Create a run", body=CreateRunRequest, response=EvalRun
    ),
    _route(
        "GET", "/v1/evals/{eval_id}/runs", EvalsApi.list_runs, "List runs", query=RunListQuery, response=EvalRunList
    ),
    _route("GET", _RUN, EvalsApi.retrieve_run, "Retrieve a run", response=EvalRun),
    _route("POST", f"{_RUN}/cancel", EvalsApi.cancel_run, "Cancel a run", response=EvalRun),
    _route("DELETE", _RUN, EvalsApi.delete_run, "Delete a run", response=EvalRunDeleted),
    _route(
        "GET",
        f"{_RUN}/output_items",
        EvalsApi.list_output_items,
        "List a run's output items",
        query=OutputItemListQuery,
        response=OutputItemList,
    ),
    _route(
        "GET",
        f"{_RUN}/output_items/{{output_item_id}}",
        EvalsApi.retrieve_output_item,
        "Retrieve an output item",
        response=OutputItem,
    ),
]
