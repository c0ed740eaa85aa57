"""The fine-tuning API: train a model on a team's data as a durable job, then serve the result at once.

This is ``/v1/fine_tuning/jobs`` as OpenAI defines it (and as the ``openai`` SDK's
``client.fine_tuning.jobs`` speaks it): create a job from an uploaded JSONL file (purpose
``fine-tune``), follow it through its events and checkpoints, cancel, pause or resume it. When a job
succeeds its model, ``ft:<base>:<suffix>:<job>``, is listed by ``/v1/models`` and answers chat
completions like any other.

The second half of the module is the trainer's contract (:class:`Trainer`): what the router hands a
post-training provider (:class:`TrainingPlan`) and what the provider reports back while it runs
(:class:`TrainingReport`) and when it ends (:class:`TrainingOutcome`). A trainer never touches the
files API or the job table; the router does, so every trainer gets durable jobs, events, checkpoints as
files and serving without writing any of it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Literal, Protocol, runtime_checkable

from pydantic import Field, field_validator

from underlay.api.base import ApiModel
from underlay.api.pagination import blank_as_absent
from underlay.api.response_items import check_metadata
from underlay.api.routes import Handler, Route

__all__ = [
    "CheckpointMetrics",
    "CreateFineTuningJobRequest",
    "DpoHyperparameters",
    "DpoMethod",
    "FineTuningApi",
    "FineTuningJob",
    "FineTuningJobCheckpoint",
    "FineTuningJobCheckpointList",
    "FineTuningJobError",
    "FineTuningJobEvent",
    "FineTuningJobEventList",
    "FineTuningJobList",
    "FineTuningJobStatus",
    "Hyperparameters",
    "ListFineTuningJobsQuery",
    "ListPageQuery",
    "MAX_BATCH_SIZE",
    "MAX_EPOCHS",
    "MAX_LR_MULTIPLIER",
    "Method",
    "ROUTES",
    "SupervisedHyperparameters",
    "SupervisedMethod",
    "Trainer",
    "TrainingOutcome",
    "TrainingPlan",
    "TrainingReport",
    "UpstreamJob",
    "UpstreamTrainer",
]

FineTuningJobStatus = Literal["validating_files", "queued", "running", "paused", "succeeded", "failed", "cancelled"]

MAX_EPOCHS = 50
MAX_BATCH_SIZE = 256
MAX_LR_MULTIPLIER = 100.0
MIN_LR_MULTIPLIER = 1e-4


class SupervisedHyperparameters(ApiModel):
    """``"auto"`` lets the trainer choose (and the job then shows the value it chose)."""

    batch_size: Literal["auto"] | int | None = Field(default="auto", description=f"1 to {MAX_BATCH_SIZE}.")
    learning_rate_multiplier: Literal["auto"] | float | None = Field(
        default="auto",
        description=f"Scales the trainer's base learning rate; {MIN_LR_MULTIPLIER} to {MAX_LR_MULTIPLIER}.",
    )
    n_epochs: Literal["auto"] | int | None = Field(default="auto", description=f"1 to {MAX_EPOCHS}.")

    @field_validator("batch_size")
    @classmethod
    def _batch(cls, value: Any) -> Any:
        if isinstance(value, int) and not 1 <= value <= MAX_BATCH_SIZE:
            raise ValueError(f"batch_size must be 'auto' or an integer from 1 to {MAX_BATCH_SIZE}")
        return value

    @field_validator("n_epochs")
    @classmethod
    def _epochs(cls, value: Any) -> Any:
        if isinstance(value, int) and not 1 <= value <= MAX_EPOCHS:
            raise ValueError(f"n_epochs must be 'auto' or an integer from 1 to {MAX_EPOCHS}")
        return value

    @field_validator("learning_rate_multiplier")
    @classmethod
    def _lr(cls, value: Any) -> Any:
        if isinstance(value, int | float) and not MIN_LR_MULTIPLIER <= value <= MAX_LR_MULTIPLIER:
            raise ValueError(
                f"learning_rate_multiplier must be 'auto' or a number from {MIN_LR_MULTIPLIER} to {MAX_LR_MULTIPLIER}"
            )
        return value


class DpoHyperparameters(SupervisedHyperparameters):
    beta: Literal["auto"] | float | None = Field(default="auto", description="0 (exclusive) to 2.")

    @field_validator("beta")
    @classmethod
    def _beta(cls, value: Any) -> Any:
        if isinstance(value, int | float) and not 0 < value <= 2:
            raise ValueError("beta must be 'auto' or a number above 0 and at most 2")
        return value


Hyperparameters = SupervisedHyperparameters
"""The job's top-level ``hyperparameters`` (OpenAI's older place for them; ``method`` is the newer)."""


class SupervisedMethod(ApiModel):
    hyperparameters: SupervisedHyperparameters | None = None


class DpoMethod(ApiModel):
    hyperparameters: DpoHyperparameters | None = None


class Method(ApiModel):
    type: Literal["supervised", "dpo", "reinforcement"]
    supervised: SupervisedMethod | None = None
    dpo: DpoMethod | None = None


class FineTuningJobError(ApiModel):
    code: str
    message: str
    param: str | None = None


class FineTuningJob(ApiModel):
    """A job as OpenAI returns it; ``fine_tuned_model`` is set (and served) once it succeeded."""

    id: str
    object: Literal["fine_tuning.job"] = "fine_tuning.job"
    created_at: int
    error: FineTuningJobError | None = None
    fine_tuned_model: str | None = None
    finished_at: int | None = None
    hyperparameters: Hyperparameters = Field(default_factory=Hyperparameters)
    model: str
    organization_id: str = "org-underlay"
    result_files: list[str] = Field(default_factory=list)
    seed: int = 0
    status: FineTuningJobStatus
    trained_tokens: int | None = None
    training_file: str
    validation_file: str | None = None
    estimated_finish: int | None = None
    integrations: list[dict[str, Any]] | None = None
    metadata: dict[str, str] | None = None
    method: Method | None = None
    suffix: str | None = None
    user_provided_suffix: str | None = None


class CreateFineTuningJobRequest(ApiModel):
    """``POST /v1/fine_tuning/jobs``. Files are checked line by line before the job is accepted."""

    model: str = Field(min_length=1, max_length=256)
    training_file: str = Field(min_length=1, max_length=256)
    validation_file: str | None = Field(default=None, max_length=256)
    hyperparameters: SupervisedHyperparameters | None = None
    method: Method | None = None
    suffix: str | None = Field(
        default=None, min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$", description="Up to 64 of [A-Za-z0-9_-]."
    )
    seed: int | None = Field(default=None, ge=0, le=2_147_483_647)
    metadata: dict[str, str] | None = None
    integrations: list[dict[str, Any]] | None = Field(default=None, max_length=0, description="Not supported here.")

    _metadata = field_validator("metadata")(check_metadata)


class ListFineTuningJobsQuery(ApiModel):
    after: str | None = Field(default=None, max_length=256)
    limit: int = Field(default=20, ge=1, le=100)

    _blank = field_validator("after", mode="before")(blank_as_absent)


class ListPageQuery(ApiModel):
    """Events and checkpoints: newest first, ``after`` an item id."""

    after: str | None = Field(default=None, max_length=256)
    limit: int = Field(default=20, ge=1, le=1000)

    _blank = field_validator("after", mode="before")(blank_as_absent)


class FineTuningJobList(ApiModel):
    object: Literal["list"] = "list"
    data: list[FineTuningJob]
    has_more: bool = False


class FineTuningJobEvent(ApiModel):
    """A status change (``type: message``) or one training step's figures (``type: metrics``)."""

    id: str
    object: Literal["fine_tuning.job.event"] = "fine_tuning.job.event"
    created_at: int
    level: Literal["info", "warn", "error"] = "info"
    message: str
    data: dict[str, Any] | None = None
    type: Literal["message", "metrics"] = "message"


class FineTuningJobEventList(ApiModel):
    object: Literal["list"] = "list"
    data: list[FineTuningJobEvent]
    has_more: bool = False


class CheckpointMetrics(ApiModel):
    full_valid_loss: float | None = None
    full_valid_mean_token_accuracy: float | None = None
    step: float | None = None
    train_loss: float | None = None
    train_mean_token_accuracy: float | None = None
    valid_loss: float | None = None
    valid_mean_token_accuracy: float | None = None


class FineTuningJobCheckpoint(ApiModel):
    """A saved adapter; ``fine_tuned_model_checkpoint`` names it, ``file_id`` is its downloadable PEFT zip."""

    id: str
    object: Literal["fine_tuning.job.checkpoint"] = "fine_tuning.job.checkpoint"
    created_at: int
    fine_tuned_model_checkpoint: str
    fine_tuning_job_id: str
    metrics: CheckpointMetrics
    step_number: int
    file_id: str | None = None


class FineTuningJobCheckpointList(ApiModel):
    object: Literal["list"] = "list"
    data: list[FineTuningJobCheckpoint]
    first_id: str | None = None
    last_id: str | None = None
    has_more: bool = False


class FineTuningApi(Protocol):
    """The fine-tuning router: one method per route below, as the current principal."""

    async def create_job(self, params: CreateFineTuningJobRequest) -> FineTuningJob:
        """Check the model, method, hyperparameters and every line of the files; then queue the job."""
        ...

    async def list_jobs(self, query: ListFineTuningJobsQuery) -> FineTuningJobList: ...

    async def retrieve_job(self, fine_tuning_job_id: str) -> FineTuningJob: ...

    async def cancel_job(self, fine_tuning_job_id: str) -> FineTuningJob: ...

    async def pause_job(self, fine_tuning_job_id: str) -> FineTuningJob:
        """Stop at the next step after saving a checkpoint; :meth:`resume_job` continues from it."""
        ...

    async def resume_job(self, fine_tuning_job_id: str) -> FineTuningJob: ...

    async def list_events(self, fine_tuning_job_id: str, query: ListPageQuery) -> FineTuningJobEventList: ...

    async def list_checkpoints(self, fine_tuning_job_id: str, query: ListPageQuery) -> FineTuningJobCheckpointList: ...


# ---- the trainer's contract -------------------------------------------------------------------------


class TrainingPlan(ApiModel):
    """Everything a trainer needs for one run, resolved by the router (no ``auto`` left)."""

    job_id: str
    base_model: str
    method: Literal["supervised", "dpo"]
    training: list[dict[str, Any]]
    """The parsed lines of the training file (each a chat example: ``messages``, maybe ``tools``)."""
    validation: list[dict[str, Any]] = Field(default_factory=list)
    n_epochs: int
    batch_size: int
    learning_rate_multiplier: float
    seed: int
    work_dir: str
    """A directory the trainer owns for this job: checkpoints and exports go here."""
    resume_from: str | None = None
    """A checkpoint directory a previous run of this job saved (pause, crash): continue from it."""
    beta: float | None = None


class TrainingReport(ApiModel):
    """What a trainer says while it runs: a step's metrics, a saved checkpoint, or a message."""

    kind: Literal["message", "metrics", "checkpoint"]
    message: str = ""
    step: int = 0
    total_steps: int = 0
    metrics: dict[str, float] = Field(default_factory=dict)
    checkpoint_dir: str | None = None


class TrainingOutcome(ApiModel):
    """The end of a run: the exports the router publishes (adapter as a file, GGUF to serve)."""

    status: Literal["succeeded", "paused", "cancelled"]
    trained_tokens: int = 0
    steps: int = 0
    adapter_dir: str | None = None
    """The final adapter in the PEFT format (``adapter_config.json`` + ``adapter_model.safetensors``)."""
    gguf_path: str | None = None
    """A GGUF file llama.cpp loads as the tuned model, already verified by the trainer; ``None`` if none."""
    metrics: dict[str, float] = Field(default_factory=dict)


class Trainer(Protocol):
    """A post-training provider (``inline::huggingface``, ...)."""

    provider_id: str

    async def initialize(self) -> None: ...

    async def shutdown(self) -> None: ...

    def base_models(self) -> list[str]:
        """The base model names this trainer can start from (what a job's ``model`` may say)."""
        ...

    def methods(self) -> list[str]:
        """The methods it implements (``supervised``, ``dpo``)."""
        ...

    async def check(self, plan: TrainingPlan) -> None:
        """Refuse a plan that cannot run here (memory cap, sequence length) with an ``InvalidRequestError``."""
        ...

    async def train(
        self,
        plan: TrainingPlan,
        report: Callable[[TrainingReport], Awaitable[None]],
        should_stop: Callable[[], Literal["run", "pause", "cancel"]],
    ) -> TrainingOutcome:
        """Run ``plan``; call ``report`` as it goes; between steps ask ``should_stop`` and honour it.

        On ``pause`` it saves a checkpoint and returns ``status='paused'``; on ``cancel`` it stops at once and
        returns ``status='cancelled'``; an exception ``report`` raises ends the run (the trainer cleans up
        and lets it through); any failure is raised as an ``UnderlayError``.
        """
        ...


# ---- a trainer whose upstream service runs the job ----------------------------------------------------


class UpstreamJob(ApiModel):
    """A job as the service that runs it reports it (OpenAI's ``fine_tuning.job``): what Underlay mirrors.

    ``status`` is the upstream's own word, kept open: one this contract does not list yet is followed as
    a job still running until the upstream says it ended.
    """

    id: str
    status: str
    model: str | None = None
    fine_tuned_model: str | None = None
    error: FineTuningJobError | None = None
    finished_at: int | None = None
    estimated_finish: int | None = None
    trained_tokens: int | None = None
    training_file: str | None = None
    result_files: list[str] = Field(default_factory=list)
    hyperparameters: dict[str, Any] | None = None
    method: dict[str, Any] | None = None
    seed: int | None = None


@runtime_checkable
class UpstreamTrainer(Protocol):
    """A post-training provider whose upstream service trains (``remote::openai``: OpenAI or a clone of its API).

    The router keeps such a job as durable as a local run: it uploads the job's files with
    :meth:`upload_upstream_file`, stores each upstream id before the next call, follows the upstream job on
    the job system (one :meth:`retrieve_upstream_job` every ``poll_seconds``, holding no worker in between,
    so a restarted server picks the same upstream job up again), copies its events and checkpoints into the
    job's own, forwards cancel, pause and resume, and when the upstream job succeeds lists its
    ``fine_tuned_model`` on the inference provider :meth:`serving_provider` names. Every method raises typed
    errors naming the provider, and no text from the upstream carries the provider's credentials.
    """

    provider_id: str
    poll_seconds: float
    """How long the router waits between two looks at a running upstream job."""

    async def initialize(self) -> None: ...

    async def shutdown(self) -> None: ...

    def base_models(self) -> list[str]:
        """The base models a job may name (the upstream's own names)."""
        ...

    def methods(self) -> list[str]: ...

    async def check(self, plan: TrainingPlan) -> None:
        """Refuse a job that cannot be sent (no credentials: 503) before anything is stored."""
        ...

    def serving_provider(self) -> str | None:
        """The inference provider that serves this upstream's tuned models, or ``None`` to list none."""
        ...

    async def upload_upstream_file(self, filename: str, content: bytes) -> str:
        """Upload a JSONL file with purpose ``fine-tune``; the upstream's file id."""
        ...

    async def create_upstream_job(self, request: CreateFineTuningJobRequest) -> UpstreamJob:
        """Create the job; ``request`` names upstream file ids. Not retried: a create that timed out may
        have succeeded, so the router looks it up with :meth:`find_upstream_job` before trying again."""
        ...

    async def find_upstream_job(self, training_file: str) -> UpstreamJob | None:
        """The upstream job created over the uploaded ``training_file``, if one was."""
        ...

    async def retrieve_upstream_job(self, upstream_id: str) -> UpstreamJob: ...

    async def cancel_upstream_job(self, upstream_id: str) -> UpstreamJob: ...

    async def pause_upstream_job(self, upstream_id: str) -> UpstreamJob: ...

    async def resume_upstream_job(self, upstream_id: str) -> UpstreamJob: ...

    async def list_upstream_events(self, upstream_id: str, after: str | None, limit: int) -> FineTuningJobEventList:
        """One page of the upstream job's events, newest first (``after``: the last id of the page before)."""
        ...

    async def list_upstream_checkpoints(self, upstream_id: str) -> list[FineTuningJobCheckpoint]:
        """The upstream job's checkpoints, newest first (``file_id`` unset; ``fine_tuning_job_id`` upstream's)."""
        ...

    async def read_upstream_file(self, file_id: str) -> tuple[str, bytes]:
        """A result file of the upstream job: (its file name, its bytes)."""
        ...


def _route(method: str, path: str, handler: Handler, summary: str, **kwargs: Any) -> Route:
    return Route(method, path, handler, summary=summary, tags=("fine-tuning",), **kwargs)


_JOB = "/v1/fine_tuning/jobs/{fine_tuning_job_id}"
ROUTES: list[Route] = [
    _route(
        "POST",
        "/v1/fine_tuning/jobs",
        FineTuningApi.create_job,
        "Create a fine-tuning job",
        body=CreateFineTuningJobRequest,
        response=FineTuningJob,
    ),
    _route(
        "GET",
        "/v1/fine_tuning/jobs",
        FineTuningApi.list_jobs,
        "List fine-tuning jobs",
        query=ListFineTuningJobsQuery,
        response=FineTuningJobList,
    ),
    _route("GET", _JOB, FineTuningApi.retrieve_job, "Retrieve a fine-tuning job", response=FineTuningJob),
    _route("POST", f"{_JOB}/cancel", FineTuningApi.cancel_job, "Cancel a fine-tuning job", response=FineTuningJob),
    _route("POST", f"{_JOB}/pause", FineTuningApi.pause_job, "Pause a fine-tuning job", response=FineTuningJob),
    _route("POST", f"{_JOB}/resume", FineTuningApi.resume_job, "Resume a fine-tuning job", response=FineTuningJob),
    _route(
        "GET",
        f"{_JOB}/events",
        FineTuningApi.list_events,
        "List a fine-tuning job's events",
        query=ListPageQuery,
        response=FineTuningJobEventList,
    ),
    _route(
        "GET",
        f"{_JOB}/checkpoints",
        FineTuningApi.list_checkpoints,
        "List a fine-tuning job's checkpoints",
        query=ListPageQuery,
        response=FineTuningJobCheckpointList,
    ),
]
