"""The extended post-training API (``/v1alpha/post-training``): train on a registered dataset.

This is the same training as the OpenAI-shaped fine-tuning API (:mod:`underlay.api.fine_tuning`), asked
for in the vocabulary of the Llama Stack family of servers: a *supervised fine-tune* or a *preference
optimization* (DPO) of a base model on a dataset of the Datasets API, then a job to follow by its
``job_uuid`` (status, cancel, artifacts). Nothing here trains: the router turns a dataset's rows into a
fine-tuning file, checks every row with the fine-tuning API's own line checks
(:func:`underlay.api.fine_tuning_data.check_file`) and creates an ordinary fine-tuning job, so the job,
its trainer, its durable run in the ``training`` lane and its served model are the fine-tuning API's.
A job made here is listed by ``/v1/fine_tuning/jobs`` too, and one made there is visible here.

Why the row formats live in the contract: a dataset is registered long before anyone trains on it, and
what its rows must look like for this API (:func:`training_line`) is a promise a client should be able
to read, the same way :func:`underlay.api.datasets.check_row` states each dataset purpose's schema.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from pydantic import ConfigDict, Field, field_validator

from underlay.api.base import ApiModel
from underlay.api.fine_tuning import MAX_BATCH_SIZE, MAX_EPOCHS, MAX_LR_MULTIPLIER, ListFineTuningJobsQuery
from underlay.api.fine_tuning_data import MAX_REPORTED_ERRORS, check_file
from underlay.api.response_items import check_metadata
from underlay.api.routes import Handler, Route

__all__ = [
    "CancelPostTrainingJobRequest",
    "DataConfig",
    "DataFormat",
    "DpoAlgorithmConfig",
    "JOB_UUID_PATTERN",
    "LoraAlgorithmConfig",
    "OptimizerConfig",
    "PostTrainingApi",
    "PostTrainingArtifacts",
    "PostTrainingCheckpoint",
    "PostTrainingCheckpointMetrics",
    "PostTrainingJob",
    "PostTrainingJobList",
    "PostTrainingJobQuery",
    "PostTrainingJobStatus",
    "PostTrainingProgress",
    "PostTrainingStatus",
    "PreferenceOptimizeRequest",
    "PreparedRows",
    "ROUTES",
    "ResolvedHyperparameters",
    "RowProblem",
    "SupervisedFineTuneRequest",
    "TrainingConfig",
    "prepare_rows",
    "training_line",
]

PostTrainingStatus = Literal["scheduled", "in_progress", "paused", "completed", "failed", "cancelled"]
DataFormat = Literal["dialog", "instruct"]
JOB_UUID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$"
MIN_LR_MULTIPLIER = 1e-4  # the fine-tuning API's own lower bound

_EMPTY_ONLY = "Accepted for clients of the same API family; this server has no use for it, so it must be empty."


# ---------------------------------------------------------------------------------------------------
# Requests
# ---------------------------------------------------------------------------------------------------


class DataConfig(ApiModel):
    """Which registered datasets to train (and validate) on, and how many rows make one batch."""

    model_config = ConfigDict(extra="forbid")

    dataset_id: str = Field(min_length=1, max_length=128, description="A dataset of the Datasets API you can read.")
    validation_dataset_id: str | None = Field(default=None, min_length=1, max_length=128)
    batch_size: int | None = Field(default=None, ge=1, le=MAX_BATCH_SIZE, description="Left out: the trainer's choice.")
    data_format: DataFormat | None = Field(
        default=None,
        description="Supervised rows only. 'dialog': rows hold 'messages'; 'instruct': rows hold 'input_query' and "
        "'expected_answer'. Left out: read from each row.",
    )


class OptimizerConfig(ApiModel):
    """The learning rate, as a factor on the trainer's own base rate (trainers differ in the right base)."""

    model_config = ConfigDict(extra="forbid")

    learning_rate_multiplier: float | None = Field(
        default=None, ge=MIN_LR_MULTIPLIER, le=MAX_LR_MULTIPLIER, description="Left out: 1 (the trainer's base rate)."
    )


class TrainingConfig(ApiModel):
    model_config = ConfigDict(extra="forbid")

    data_config: DataConfig
    n_epochs: int | None = Field(default=None, ge=1, le=MAX_EPOCHS, description="Left out: the trainer's choice.")
    optimizer_config: OptimizerConfig | None = None


class LoraAlgorithmConfig(ApiModel):
    """Supervised training trains a LoRA adapter. Its rank and alpha are the trainer's (its provider config);
    a request may restate neither, since no trainer here takes them per job."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["LoRA"] = "LoRA"
    rank: int | None = Field(default=None, description="Not settable per job here: see the trainer's lora_rank.")
    alpha: int | None = Field(default=None, description="Not settable per job here: see the trainer's lora_alpha.")


class DpoAlgorithmConfig(ApiModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["DPO"] = "DPO"
    beta: float | None = Field(
        default=None, gt=0, le=2, description="How far the tuned model may move from the base; left out: 0.1."
    )


class _CreateCommon(ApiModel):
    model_config = ConfigDict(extra="forbid")

    job_uuid: str | None = Field(
        default=None,
        pattern=JOB_UUID_PATTERN,
        description="Your own id for the job (unique among your jobs); status, cancel and artifacts accept it. "
        "Left out: the fine-tuning job's id is the job_uuid.",
    )
    training_config: TrainingConfig
    suffix: str | None = Field(default=None, min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")
    seed: int | None = Field(default=None, ge=0, le=2_147_483_647)
    metadata: dict[str, str] | None = Field(
        default=None, description="Up to 13 keys (the job adds its own, post_training.*)."
    )
    hyperparam_search_config: dict[str, Any] | None = Field(default=None, max_length=0, description=_EMPTY_ONLY)
    logger_config: dict[str, Any] | None = Field(default=None, max_length=0, description=_EMPTY_ONLY)

    @field_validator("metadata")
    @classmethod
    def _metadata(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        if value is None:
            return None
        if len(value) > 13:
            raise ValueError(
                "at most 13 metadata keys are allowed (the job records its datasets and job_uuid in 3 more)"
            )
        if any(key.startswith("post_training.") for key in value):
            raise ValueError("keys starting with 'post_training.' are the job's own")
        return check_metadata(value)


class SupervisedFineTuneRequest(_CreateCommon):
    """``POST /v1alpha/post-training/supervised-fine-tune``: rows of chat ``messages`` (or instruct pairs)."""

    model: str = Field(min_length=1, max_length=256, description="A base model of a configured trainer.")
    algorithm_config: LoraAlgorithmConfig | None = None


class PreferenceOptimizeRequest(_CreateCommon):
    """``POST /v1alpha/post-training/preference-optimize``: DPO on rows of preference pairs."""

    finetuned_model: str = Field(
        min_length=1, max_length=256, description="The model to start from: a base model of a configured trainer."
    )
    algorithm_config: DpoAlgorithmConfig | None = None


class PostTrainingJobQuery(ApiModel):
    job_uuid: str = Field(min_length=1, max_length=128, description="The job_uuid a create call returned.")


class CancelPostTrainingJobRequest(ApiModel):
    model_config = ConfigDict(extra="forbid")

    job_uuid: str = Field(min_length=1, max_length=128)


# ---------------------------------------------------------------------------------------------------
# Responses
# ---------------------------------------------------------------------------------------------------


class _JobFields(ApiModel):
    job_uuid: str
    fine_tuning_job_id: str
    status: PostTrainingStatus
    algorithm: Literal["supervised", "dpo"]
    model: str
    dataset_id: str | None = None
    """``None`` for a job created through the fine-tuning API from a file."""
    validation_dataset_id: str | None = None
    fine_tuned_model: str | None = None
    """The served model's id (``ft:<base>:<suffix>:<job>``), once the job completed."""
    scheduled_at: int
    completed_at: int | None = None
    error: str | None = None


class PostTrainingJob(_JobFields):
    """A training job seen through this API; ``fine_tuning_job_id`` is the same job in ``/v1/fine_tuning/jobs``."""

    object: Literal["post_training.job"] = "post_training.job"


class PostTrainingJobList(ApiModel):
    object: Literal["list"] = "list"
    data: list[PostTrainingJob]
    has_more: bool = False


class ResolvedHyperparameters(ApiModel):
    """What the run uses, with every default filled in."""

    n_epochs: int | None = None
    batch_size: int | None = None
    learning_rate_multiplier: float | None = None
    beta: float | None = None


class PostTrainingProgress(ApiModel):
    """The last optimiser step the trainer reported."""

    step: int
    total_steps: int
    train_loss: float | None = None


class PostTrainingCheckpointMetrics(ApiModel):
    train_loss: float | None = None
    validation_loss: float | None = None


class PostTrainingCheckpoint(ApiModel):
    """A saved adapter. ``file_id`` is a Files API file (a zip of the PEFT adapter); ``path`` is where to get it."""

    identifier: str
    """The checkpoint's name (``ft:...:ckpt-step-N``)."""
    checkpoint_id: str
    created_at: int
    step: int
    post_training_job_id: str
    file_id: str | None = None
    path: str | None = None
    """``/v1/files/<file_id>/content``: the zip's download path on this server."""
    training_metrics: PostTrainingCheckpointMetrics = Field(default_factory=PostTrainingCheckpointMetrics)


class PostTrainingJobStatus(_JobFields):
    """``GET /v1alpha/post-training/job/status``: the job, its resolved settings, progress and checkpoints."""

    object: Literal["post_training.job.status"] = "post_training.job.status"
    hyperparameters: ResolvedHyperparameters = Field(default_factory=ResolvedHyperparameters)
    progress: PostTrainingProgress | None = None
    checkpoints: list[PostTrainingCheckpoint] = Field(default_factory=list)


class PostTrainingArtifacts(ApiModel):
    """``GET /v1alpha/post-training/job/artifacts``: what a job produced, newest checkpoint first."""

    object: Literal["post_training.job.artifacts"] = "post_training.job.artifacts"
    job_uuid: str
    fine_tuning_job_id: str
    status: PostTrainingStatus
    fine_tuned_model: str | None = None
    """The served model's id; use it as ``model`` in chat completions or Responses."""
    checkpoints: list[PostTrainingCheckpoint] = Field(default_factory=list)
    result_files: list[str] = Field(default_factory=list)
    """Files API ids: the final adapter (PEFT zip) and the per-step metrics (CSV)."""


# ---------------------------------------------------------------------------------------------------
# Rows → fine-tuning lines
# ---------------------------------------------------------------------------------------------------


def _assistant(value: Any) -> Any:
    """A preference answer as the one-message list the fine-tuning format wants (odd shapes pass through
    unchanged, for the line checks to name)."""
    if isinstance(value, str):
        return [{"role": "assistant", "content": value}]
    if isinstance(value, dict):
        return [value]
    if isinstance(value, list) and len(value) > 1:
        return value[-1:]  # a whole conversation: the answer is its last message
    return value


def training_line(
    row: Any, method: Literal["supervised", "dpo"], data_format: DataFormat | None = None
) -> tuple[dict[str, Any] | None, str | None]:
    """One dataset row as a fine-tuning line, or the reason it cannot be one: ``(line, None)`` or ``(None, why)``.

    Supervised rows: ``{"messages": [...], "tools"?}`` (dialog; an ``expected_answer`` string next to the
    messages is appended as the assistant's turn, so ``eval/messages-answer`` datasets train too) or
    ``{"input_query", "expected_answer"}`` (instruct: one user turn and the answer). Preference rows:
    ``{"prompt", "chosen", "rejected"}`` (each a string or messages) or the fine-tuning API's own
    ``{"input": {"messages"}, "preferred_output", "non_preferred_output"}``. Only the shape is looked at
    here; the contents are checked by :func:`underlay.api.fine_tuning_data.check_file`.
    """
    if not isinstance(row, dict):
        return None, f"must be a JSON object, not {type(row).__name__}"
    if method == "dpo":
        if "input" in row:
            return {k: row[k] for k in ("input", "preferred_output", "non_preferred_output") if k in row}, None
        if "prompt" not in row or "chosen" not in row or "rejected" not in row:
            return None, (
                "a preference row needs 'prompt', 'chosen' and 'rejected' "
                "(or 'input', 'preferred_output' and 'non_preferred_output')"
            )
        prompt = row["prompt"]
        messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt
        source: dict[str, Any] = {"messages": messages}
        if row.get("tools") is not None:
            source["tools"] = row["tools"]
        return {
            "input": source,
            "preferred_output": _assistant(row["chosen"]),
            "non_preferred_output": _assistant(row["rejected"]),
        }, None
    dialog = data_format == "dialog" or (data_format is None and "messages" in row)
    if dialog:
        if "messages" not in row:
            return None, "a dialog row needs 'messages'"
        messages = row["messages"]
        answer = row.get("expected_answer")
        if isinstance(answer, str) and isinstance(messages, list):
            messages = [*messages, {"role": "assistant", "content": answer}]
        line: dict[str, Any] = {"messages": messages}
        if row.get("tools") is not None:
            line["tools"] = row["tools"]
        return line, None
    if data_format is None and "input_query" not in row:
        return None, "a supervised row needs 'messages' (dialog) or 'input_query' and 'expected_answer' (instruct)"
    question, answer = row.get("input_query"), row.get("expected_answer")
    if not isinstance(question, str) or not isinstance(answer, str):
        return None, "an instruct row needs 'input_query' and 'expected_answer' strings"
    return {"messages": [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]}, None


@dataclass(frozen=True)
class RowProblem:
    row: int
    """1-based, as the Datasets API numbers rows (``iterrows`` index + 1)."""
    message: str

    def __str__(self) -> str:
        return f"row {self.row}: {self.message}" if self.row else self.message


@dataclass
class PreparedRows:
    """A dataset's rows as a fine-tuning file, and every row that cannot be part of one."""

    data: bytes = b""
    examples: int = 0
    problems: list[RowProblem] = field(default_factory=list)
    bad_rows: int = 0


def prepare_rows(
    rows: list[Any], method: Literal["supervised", "dpo"], data_format: DataFormat | None = None
) -> PreparedRows:
    """Convert every row (:func:`training_line`), then check the lines as a fine-tuning file would be; the
    problems of both steps are reported by row number, in order."""
    lines: list[bytes] = []
    row_of_line: list[int] = []
    problems: list[RowProblem] = []
    for number, row in enumerate(rows, start=1):
        line, problem = training_line(row, method, data_format)
        if line is None:
            problems.append(RowProblem(number, problem or "cannot be converted"))
            continue
        lines.append(json.dumps(line, ensure_ascii=False, separators=(",", ":"), default=str).encode())
        row_of_line.append(number)
    data = b"\n".join(lines) + b"\n" if lines else b""
    bad = len(problems)
    examples = 0
    if lines:
        parsed = check_file(data, method)
        examples = len(parsed.examples)
        bad += parsed.bad_lines
        for error in parsed.errors:
            row = row_of_line[error.line - 1] if 1 <= error.line <= len(row_of_line) else 0
            problems.append(RowProblem(row, error.message))
    elif not rows:
        problems.append(RowProblem(0, "the dataset has no rows to train on"))
        bad = 1
    problems.sort(key=lambda p: p.row)
    return PreparedRows(data=data, examples=examples, problems=problems[:MAX_REPORTED_ERRORS], bad_rows=bad)


# ---------------------------------------------------------------------------------------------------
# The router's contract and the routes
# ---------------------------------------------------------------------------------------------------


class PostTrainingApi(Protocol):
    """The post-training router, as the current principal: a view over the fine-tuning API's jobs."""

    async def supervised_fine_tune(self, params: SupervisedFineTuneRequest) -> PostTrainingJob:
        """Read and check every row of the datasets, then create the fine-tuning job."""
        ...

    async def preference_optimize(self, params: PreferenceOptimizeRequest) -> PostTrainingJob: ...

    async def list_jobs(self, query: ListFineTuningJobsQuery) -> PostTrainingJobList: ...

    async def job_status(self, query: PostTrainingJobQuery) -> PostTrainingJobStatus: ...

    async def cancel_job(self, params: CancelPostTrainingJobRequest) -> PostTrainingJobStatus: ...

    async def job_artifacts(self, query: PostTrainingJobQuery) -> PostTrainingArtifacts: ...


def _route(method: str, path: str, handler: Handler, summary: str, **kwargs: Any) -> Route:
    return Route(method, path, handler, summary=summary, tags=("post-training",), **kwargs)


ROUTES: list[Route] = [
    _route(
        "POST",
        "/post-training/supervised-fine-tune",
        PostTrainingApi.supervised_fine_tune,
        "Fine-tune a model on a dataset of conversations",
        body=SupervisedFineTuneRequest,
        response=PostTrainingJob,
    ),
    _route(
        "POST",
        "/post-training/preference-optimize",
        PostTrainingApi.preference_optimize,
        "Preference-optimize (DPO) a model on a dataset of preference pairs",
        body=PreferenceOptimizeRequest,
        response=PostTrainingJob,
    ),
    _route(
        "GET",
        "/post-training/jobs",
        PostTrainingApi.list_jobs,
        "List post-training jobs",
        query=ListFineTuningJobsQuery,
        response=PostTrainingJobList,
    ),
    _route(
        "GET",
        "/post-training/job/status",
        PostTrainingApi.job_status,
        "Get a post-training job's status, progress and checkpoints",
        query=PostTrainingJobQuery,
        response=PostTrainingJobStatus,
    ),
    _route(
        "POST",
        "/post-training/job/cancel",
        PostTrainingApi.cancel_job,
        "Cancel a post-training job",
        body=CancelPostTrainingJobRequest,
        response=PostTrainingJobStatus,
    ),
    _route(
        "GET",
        "/post-training/job/artifacts",
        PostTrainingApi.job_artifacts,
        "List a post-training job's checkpoints and served model",
        query=PostTrainingJobQuery,
        response=PostTrainingArtifacts,
    ),
]
