"""The post-training router: the extended post-training API as a view over the fine-tuning router.

Why a view and not a second engine: a training run is a fine-tuning job whichever API asked for it, so
there is one job table, one trainer call, one durable run in the ``training`` lane, one place that
serves the tuned model, and a job is visible (and cancellable) through both APIs. What this router adds
is the part the fine-tuning API has no words for: reading a *dataset* of the Datasets API as the caller,
turning its rows into fine-tuning lines (:func:`underlay.api.post_training.prepare_rows`, which reuses
the fine-tuning line checks and reports problems by row), uploading them as a ``fine-tune`` file the job
reads (also on a restart), and translating names both ways: its request fields to the fine-tuning
request's, the fine-tuning router's ``param`` in an error back to this request's field, and a job to
this API's status words.

A client may name a job with its own ``job_uuid`` (kept in the job's metadata). Looking one up scans the
caller's own jobs, newest first; training jobs are few (each is minutes to hours of compute), so this
costs far less than a second table would to keep consistent. Two creates naming the same id on one
server take turns (a lock per caller and id spans the check and the create); across replicas sharing
one database the check is not atomic.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Literal

from underlay.api.datasets import DatasetsApi, IterRowsQuery
from underlay.api.errors import ConflictError, InvalidRequestError, NotFoundError, UnderlayError
from underlay.api.fine_tuning import (
    CreateFineTuningJobRequest,
    DpoHyperparameters,
    DpoMethod,
    FineTuningJob,
    ListFineTuningJobsQuery,
    ListPageQuery,
    Method,
    SupervisedHyperparameters,
    SupervisedMethod,
)
from underlay.api.fine_tuning_data import MAX_LINES
from underlay.api.post_training import (
    CancelPostTrainingJobRequest,
    DataFormat,
    PostTrainingApi,
    PostTrainingArtifacts,
    PostTrainingCheckpoint,
    PostTrainingCheckpointMetrics,
    PostTrainingJob,
    PostTrainingJobList,
    PostTrainingJobQuery,
    PostTrainingJobStatus,
    PostTrainingProgress,
    PostTrainingStatus,
    PreferenceOptimizeRequest,
    ResolvedHyperparameters,
    SupervisedFineTuneRequest,
    TrainingConfig,
    prepare_rows,
)
from underlay.core.identity import current_principal
from underlay.core.routers.files import FilesRouter
from underlay.core.routers.fine_tuning import FineTuningRouter

JOB_UUID_KEY = "post_training.job_uuid"
DATASET_KEY = "post_training.dataset_id"
VALIDATION_KEY = "post_training.validation_dataset_id"
SHOWN_PROBLEMS = 20
"""Bad rows quoted in a 400's message (the count says how many there were in all)."""
PAGE = 1000
SCAN_PAGE = 100

_STATUS: dict[str, PostTrainingStatus] = {
    "validating_files": "scheduled",
    "queued": "scheduled",
    "running": "in_progress",
    "paused": "paused",
    "succeeded": "completed",
    "failed": "failed",
    "cancelled": "cancelled",
}

_DATA = "training_config.data_config"


def _our_param(param: str | None, model_param: str) -> str | None:
    """The fine-tuning request's field named in an error → the field of this API's request."""
    if param is None:
        return None
    if param == "model":
        return model_param
    if param == "method.type":
        return "algorithm_config.type"
    if param == "training_file":
        return f"{_DATA}.dataset_id"
    if param == "validation_file":
        return f"{_DATA}.validation_dataset_id"
    for name, ours in (
        ("batch_size", f"{_DATA}.batch_size"),
        ("n_epochs", "training_config.n_epochs"),
        ("learning_rate_multiplier", "training_config.optimizer_config.learning_rate_multiplier"),
        ("beta", "algorithm_config.beta"),
    ):
        if param.endswith(name):
            return ours
    return param


class PostTrainingRouter(PostTrainingApi):
    def __init__(self, fine_tuning: FineTuningRouter, files: FilesRouter, datasets: DatasetsApi | None) -> None:
        self.fine_tuning = fine_tuning
        self.files = files
        self.datasets = datasets
        self._naming: dict[tuple[str, str], tuple[asyncio.Lock, int]] = {}
        """Per caller and ``job_uuid``: a lock held from the uniqueness check until the job exists, and how
        many requests hold or wait for it (the entry goes when the last one leaves)."""

    # -- routes -------------------------------------------------------------------------------------

    async def supervised_fine_tune(self, params: SupervisedFineTuneRequest) -> PostTrainingJob:
        lora = params.algorithm_config
        if lora is not None:
            for name, setting in (("rank", "lora_rank"), ("alpha", "lora_alpha")):
                if getattr(lora, name) is not None:
                    raise InvalidRequestError(
                        f"LoRA {name} is not set per job on this server: each trainer uses the {setting} of its "
                        f"provider config. Leave algorithm_config.{name} out.",
                        param=f"algorithm_config.{name}",
                        code="unsupported_parameter",
                    )
        return await self._create("supervised", params.model, "model", params, beta=None)

    async def preference_optimize(self, params: PreferenceOptimizeRequest) -> PostTrainingJob:
        if params.training_config.data_config.data_format is not None:
            raise InvalidRequestError(
                "data_format describes supervised rows; preference rows are read by their own shape. Leave it out.",
                param=f"{_DATA}.data_format",
            )
        beta = params.algorithm_config.beta if params.algorithm_config is not None else None
        return await self._create("dpo", params.finetuned_model, "finetuned_model", params, beta=beta)

    async def list_jobs(self, query: ListFineTuningJobsQuery) -> PostTrainingJobList:
        page = await self.fine_tuning.list_jobs(query)
        return PostTrainingJobList(data=[self._job(job) for job in page.data], has_more=page.has_more)

    async def job_status(self, query: PostTrainingJobQuery) -> PostTrainingJobStatus:
        return await self._status(await self._find(query.job_uuid))

    async def cancel_job(self, params: CancelPostTrainingJobRequest) -> PostTrainingJobStatus:
        job = await self._find(params.job_uuid)
        try:
            job = await self.fine_tuning.cancel_job(job.id)
        except UnderlayError as exc:
            exc.param = "job_uuid" if exc.param else None
            raise
        return await self._status(job)

    async def job_artifacts(self, query: PostTrainingJobQuery) -> PostTrainingArtifacts:
        job = await self._find(query.job_uuid)
        view = self._job(job)
        return PostTrainingArtifacts(
            job_uuid=view.job_uuid,
            fine_tuning_job_id=job.id,
            status=view.status,
            fine_tuned_model=job.fine_tuned_model,
            checkpoints=await self._checkpoints(job),
            result_files=list(job.result_files),
        )

    # -- creating a job -----------------------------------------------------------------------------

    async def _create(
        self,
        kind: Literal["supervised", "dpo"],
        model: str,
        model_param: str,
        params: SupervisedFineTuneRequest | PreferenceOptimizeRequest,
        *,
        beta: float | None,
    ) -> PostTrainingJob:
        self._check_method(kind, model, model_param)
        if params.job_uuid is None:
            return await self._create_job(kind, model, model_param, params, beta=beta)
        key = (current_principal().id, params.job_uuid)
        lock, users = self._naming.get(key, (asyncio.Lock(), 0))
        self._naming[key] = (lock, users + 1)
        try:
            async with lock:
                await self._check_new_uuid(params.job_uuid)
                return await self._create_job(kind, model, model_param, params, beta=beta)
        finally:
            lock, users = self._naming[key]
            if users == 1:
                del self._naming[key]
            else:
                self._naming[key] = (lock, users - 1)

    async def _create_job(
        self,
        kind: Literal["supervised", "dpo"],
        model: str,
        model_param: str,
        params: SupervisedFineTuneRequest | PreferenceOptimizeRequest,
        *,
        beta: float | None,
    ) -> PostTrainingJob:
        config = params.training_config
        data = config.data_config
        training = await self._file(data.dataset_id, kind, data.data_format, f"{_DATA}.dataset_id")
        uploaded = [training]
        try:
            validation = None
            if data.validation_dataset_id is not None:
                validation = await self._file(
                    data.validation_dataset_id, kind, data.data_format, f"{_DATA}.validation_dataset_id"
                )
                uploaded.append(validation)
            request = CreateFineTuningJobRequest(
                model=model,
                training_file=training,
                validation_file=validation,
                method=self._method(kind, config, beta),
                suffix=params.suffix,
                seed=params.seed,
                metadata=self._metadata(params),
            )
            job = await self.fine_tuning.create_job(request)
        except UnderlayError as exc:
            await self._discard(uploaded)
            exc.param = _our_param(exc.param, model_param)
            raise
        except BaseException:
            await self._discard(uploaded)
            raise
        return self._job(job)

    def _check_method(self, kind: Literal["supervised", "dpo"], model: str, model_param: str) -> None:
        """The fine-tuning router checks this too; checking first saves reading a dataset for a sure 400."""
        trainers = self.fine_tuning.trainers
        for provider_id, trainer in trainers.items():
            if model in trainer.base_models():
                if kind not in trainer.methods():
                    raise InvalidRequestError(
                        f"Method '{kind}' is not supported by trainer '{provider_id}' (it implements: "
                        f"{', '.join(trainer.methods()) or 'nothing'}); "
                        + (
                            "use supervised-fine-tune."
                            if kind == "dpo"
                            else "use a base model of a trainer that implements it."
                        ),
                        param="algorithm_config.type",
                        code="unsupported_method",
                    )
                return
        known = sorted({name for trainer in trainers.values() for name in trainer.base_models()})
        raise InvalidRequestError(
            f"Model '{model}' cannot be trained here; base models: {', '.join(known) or 'none configured'}.",
            param=model_param,
            code="model_not_available",
        )

    async def _check_new_uuid(self, job_uuid: str) -> None:
        if job_uuid.startswith("ftjob-"):
            raise InvalidRequestError(
                "job_uuid may not start with 'ftjob-' (the server's own job ids do); choose another id.",
                param="job_uuid",
            )
        async for job in self._jobs():
            if (job.metadata or {}).get(JOB_UUID_KEY) == job_uuid:
                raise ConflictError(
                    f"You already have a job with job_uuid '{job_uuid}' ({job.id}); choose another id.",
                    param="job_uuid",
                    code="job_uuid_taken",
                )

    async def _rows(self, dataset_id: str, param: str) -> list[object]:
        """Every row of the caller's dataset (404 if it is not theirs), in order."""
        if self.datasets is None:
            raise InvalidRequestError(
                "This server does not run the datasets API, so there is no dataset to train on; add 'datasets' "
                "to apis (or train from a file with /v1/fine_tuning/jobs).",
                param=param,
            )
        try:
            dataset = await self.datasets.get_dataset(dataset_id)
        except UnderlayError as exc:
            exc.param = param
            raise
        if dataset.row_count > MAX_LINES:
            raise InvalidRequestError(
                f"Dataset '{dataset_id}' has {dataset.row_count} rows; a training run takes at most {MAX_LINES}.",
                param=param,
            )
        rows: list[object] = []
        start: int | None = 0
        while start is not None:
            page = await self.datasets.iterrows(dataset_id, IterRowsQuery(start_index=start, limit=PAGE))
            rows.extend(page.data)
            start = page.next_start_index
            if len(rows) > MAX_LINES:
                raise InvalidRequestError(
                    f"Dataset '{dataset_id}' has over {MAX_LINES} rows; a training run takes at most {MAX_LINES}.",
                    param=param,
                )
        return rows

    async def _file(
        self, dataset_id: str, kind: Literal["supervised", "dpo"], data_format: DataFormat | None, param: str
    ) -> str:
        """The dataset's rows, checked, as a ``fine-tune`` file of the caller's; its id."""
        prepared = prepare_rows(await self._rows(dataset_id, param), kind, data_format)
        if prepared.problems:
            shown = "; ".join(str(p) for p in prepared.problems[:SHOWN_PROBLEMS])
            more = prepared.bad_rows - min(len(prepared.problems), SHOWN_PROBLEMS)
            tail = f"; and {more} more bad row(s)" if more > 0 else ""
            what = "preference pairs (DPO)" if kind == "dpo" else "supervised examples"
            raise InvalidRequestError(
                f"Dataset '{dataset_id}' has {prepared.bad_rows} row(s) that are not {what}: {shown}{tail}",
                param=param,
                code="invalid_dataset_rows",
            )
        file = await self.files.create_file(f"post-training-{dataset_id}.jsonl", "fine-tune", _once(prepared.data))
        return file.id

    async def _discard(self, file_ids: list[str]) -> None:
        for file_id in file_ids:
            try:
                await self.files.delete_file(file_id)
            except UnderlayError:
                pass  # the caller's own file, left behind: the job's error is what they need to see

    @staticmethod
    def _method(kind: Literal["supervised", "dpo"], config: TrainingConfig, beta: float | None) -> Method:
        optimizer = config.optimizer_config
        multiplier = optimizer.learning_rate_multiplier if optimizer is not None else None
        values = {
            "n_epochs": config.n_epochs if config.n_epochs is not None else "auto",
            "batch_size": config.data_config.batch_size if config.data_config.batch_size is not None else "auto",
            "learning_rate_multiplier": multiplier if multiplier is not None else "auto",
        }
        if kind == "dpo":
            dpo = DpoHyperparameters.model_validate({**values, "beta": beta if beta is not None else "auto"})
            return Method(type="dpo", dpo=DpoMethod(hyperparameters=dpo))
        plain = SupervisedHyperparameters.model_validate(values)
        return Method(type="supervised", supervised=SupervisedMethod(hyperparameters=plain))

    @staticmethod
    def _metadata(params: SupervisedFineTuneRequest | PreferenceOptimizeRequest) -> dict[str, str]:
        data = params.training_config.data_config
        metadata = dict(params.metadata or {})
        metadata[DATASET_KEY] = data.dataset_id
        if data.validation_dataset_id is not None:
            metadata[VALIDATION_KEY] = data.validation_dataset_id
        if params.job_uuid is not None:
            metadata[JOB_UUID_KEY] = params.job_uuid
        return metadata

    # -- reading jobs -------------------------------------------------------------------------------

    async def _jobs(self) -> AsyncIterator[FineTuningJob]:
        """The caller's jobs, newest first."""
        after: str | None = None
        while True:
            page = await self.fine_tuning.list_jobs(ListFineTuningJobsQuery(after=after, limit=SCAN_PAGE))
            for job in page.data:
                yield job
            if not page.has_more or not page.data:
                return
            after = page.data[-1].id

    async def _find(self, job_uuid: str) -> FineTuningJob:
        if job_uuid.startswith("ftjob-"):
            try:
                return await self.fine_tuning.retrieve_job(job_uuid)
            except NotFoundError:
                raise NotFoundError("Post-training job", job_uuid, param="job_uuid") from None
        async for job in self._jobs():
            if (job.metadata or {}).get(JOB_UUID_KEY) == job_uuid:
                return job
        raise NotFoundError("Post-training job", job_uuid, param="job_uuid")

    @staticmethod
    def _job(job: FineTuningJob) -> PostTrainingJob:
        return PostTrainingJob.model_validate(PostTrainingRouter._fields(job))

    @staticmethod
    def _fields(job: FineTuningJob) -> dict[str, object]:
        metadata = job.metadata or {}
        return {
            "job_uuid": metadata.get(JOB_UUID_KEY) or job.id,
            "fine_tuning_job_id": job.id,
            "status": _STATUS.get(job.status, "scheduled"),
            "algorithm": "dpo" if job.method is not None and job.method.type == "dpo" else "supervised",
            "model": job.model,
            "dataset_id": metadata.get(DATASET_KEY),
            "validation_dataset_id": metadata.get(VALIDATION_KEY),
            "fine_tuned_model": job.fine_tuned_model,
            "scheduled_at": job.created_at,
            "completed_at": job.finished_at,
            "error": job.error.message if job.error is not None else None,
        }

    @staticmethod
    def _hyperparameters(job: FineTuningJob) -> ResolvedHyperparameters:
        method = job.method
        given: SupervisedHyperparameters | None = job.hyperparameters
        beta: float | None = None
        if method is not None and method.type == "dpo" and method.dpo is not None and method.dpo.hyperparameters:
            given = method.dpo.hyperparameters
            beta = method.dpo.hyperparameters.beta if isinstance(method.dpo.hyperparameters.beta, float) else None
        elif method is not None and method.supervised is not None and method.supervised.hyperparameters:
            given = method.supervised.hyperparameters

        def number(value: object) -> float | None:
            return float(value) if isinstance(value, int | float) else None

        epochs = number(given.n_epochs) if given is not None else None
        batch = number(given.batch_size) if given is not None else None
        return ResolvedHyperparameters(
            n_epochs=int(epochs) if epochs is not None else None,
            batch_size=int(batch) if batch is not None else None,
            learning_rate_multiplier=number(given.learning_rate_multiplier) if given is not None else None,
            beta=beta,
        )

    async def _progress(self, job: FineTuningJob) -> PostTrainingProgress | None:
        events = await self.fine_tuning.list_events(job.id, ListPageQuery(limit=50))
        for event in events.data:  # newest first: the last step reported
            data = event.data or {}
            if event.type == "metrics" and isinstance(data.get("step"), int):
                loss = data.get("train_loss")
                return PostTrainingProgress(
                    step=int(data["step"]),
                    total_steps=int(data.get("total_steps") or 0),
                    train_loss=float(loss) if isinstance(loss, int | float) else None,
                )
        return None

    async def _checkpoints(self, job: FineTuningJob) -> list[PostTrainingCheckpoint]:
        page = await self.fine_tuning.list_checkpoints(job.id, ListPageQuery(limit=1000))
        return [
            PostTrainingCheckpoint(
                identifier=c.fine_tuned_model_checkpoint,
                checkpoint_id=c.id,
                created_at=c.created_at,
                step=c.step_number,
                post_training_job_id=job.id,
                file_id=c.file_id,
                path=f"/v1/files/{c.file_id}/content" if c.file_id else None,
                training_metrics=PostTrainingCheckpointMetrics(
                    train_loss=c.metrics.train_loss, validation_loss=c.metrics.valid_loss
                ),
            )
            for c in page.data
        ]

    async def _status(self, job: FineTuningJob) -> PostTrainingJobStatus:
        return PostTrainingJobStatus.model_validate(
            {
                **self._fields(job),
                "hyperparameters": self._hyperparameters(job),
                "progress": await self._progress(job),
                "checkpoints": await self._checkpoints(job),
            }
        )


async def _once(data: bytes) -> AsyncIterator[bytes]:
    yield data
