"""The fine-tuning router: the OpenAI fine-tuning API over its store, the files API, the job system and a trainer.

Why the checks happen before a job exists: a run takes minutes to hours, and a client should learn
about a bad line, an unknown model or an impossible batch size from its ``create`` call, not from a
failed job an hour later. So ``create_job`` reads both files, checks every line
(:mod:`underlay.api.fine_tuning_data`), resolves the hyperparameters and asks the trainer whether the
run fits (memory) before it stores anything.

Why a run is a durable job in the ``training`` lane: it must survive a restart (it resumes from its
last checkpoint), it must not take the workers interactive and bulk work use, and cancel and pause must
reach it from any process. The trainer does the compute (in its own process, off the event loop); this
router turns what it reports into events, checkpoints (downloadable files) and, at the end, a served
model. Nothing is served until the trainer has written and verified the whole GGUF file, and a model
that cannot be served fails the job with that reason instead of leaving a half-registered name.

A trainer may also be an :class:`UpstreamTrainer` (``remote::openai``): a service elsewhere trains, and
the job's run follows it there (:mod:`underlay.core.routers.fine_tuning_upstream`). Such a job is checked
and stored the same way, keeps the ``auto`` hyperparameters the client sent for the upstream to resolve,
and has its cancel, pause and resume forwarded to the upstream from the client's request.
"""

from __future__ import annotations

import asyncio
import csv
import io
import logging
import secrets
import time
import zipfile
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any, Literal

from underlay.api.errors import InvalidRequestError, UnderlayError
from underlay.api.fine_tuning import (
    CheckpointMetrics,
    CreateFineTuningJobRequest,
    DpoHyperparameters,
    DpoMethod,
    FineTuningApi,
    FineTuningJob,
    FineTuningJobCheckpoint,
    FineTuningJobCheckpointList,
    FineTuningJobError,
    FineTuningJobEvent,
    FineTuningJobEventList,
    FineTuningJobList,
    Hyperparameters,
    ListFineTuningJobsQuery,
    ListPageQuery,
    Method,
    SupervisedHyperparameters,
    SupervisedMethod,
    Trainer,
    TrainingOutcome,
    TrainingPlan,
    TrainingReport,
    UpstreamTrainer,
)
from underlay.api.fine_tuning_data import MAX_FILE_BYTES, ParsedFile, check_file
from underlay.core.jobs import Job, JobCancelled, JobContext, JobError, JobRunner
from underlay.core.routers.files import FilesRouter
from underlay.core.routers.fine_tuning_upstream import UpstreamRuns, method_hyperparameters, requested_method
from underlay.core.serving import ModelServing
from underlay.core.stores.fine_tuning import FineTuningStore, new_job_id

log = logging.getLogger("underlay.fine_tuning")

JOB_KIND = "fine_tuning.run"
TERMINAL = ("succeeded", "failed", "cancelled")
AUTO_EPOCHS = 3
AUTO_BATCH_SIZE = 4
POLL_SECONDS = 2.0
"""How often a running job re-reads its row for a pause asked for in another process."""
SHOWN_ERRORS = 20
"""Bad lines quoted in a 400's message (the count says how many there were in all)."""


def _now() -> int:
    return int(time.time())


def _event_id() -> str:
    return f"ftevent-{secrets.token_hex(12)}"


def _model_name(base: str, suffix: str | None, job_id: str) -> str:
    return f"ft:{base}:{suffix or 'underlay'}:{job_id[-8:]}"


class FineTuningRouter(FineTuningApi):
    def __init__(
        self,
        store: FineTuningStore,
        files: FilesRouter,
        jobs: JobRunner,
        trainers: Mapping[str, Trainer | UpstreamTrainer],
        work_root: Path,
        serving: ModelServing | None,
    ) -> None:
        self.store = store
        self.files = files
        self.jobs = jobs
        self.trainers = trainers
        self.work_root = work_root
        self.serving = serving
        self.upstream = UpstreamRuns(store, files, serving, self._read)

    async def initialize(self) -> None:
        await self.store.initialize()
        await self.jobs.initialize()
        self.jobs.register(JOB_KIND, self.run, on_failure=self.on_failure, max_attempts=3, lane="training")
        if self.serving is not None:
            for row in await self.store.served():  # tuned models stay served across restarts
                exists = row.served_path is not None and await asyncio.to_thread(Path(row.served_path).is_file)
                if row.job.fine_tuned_model and row.served_path and exists:
                    try:
                        await self.serving.serve(row.job.fine_tuned_model, row.served_path, self._model_meta(row.job))
                    except UnderlayError as exc:
                        log.warning("could not serve %s again: %s", row.job.fine_tuned_model, exc.message)

    # -- routes -------------------------------------------------------------------------------------

    async def create_job(self, params: CreateFineTuningJobRequest) -> FineTuningJob:
        method_type = params.method.type if params.method is not None else "supervised"
        trainer_id, trainer = self._trainer_for(params.model)
        if method_type not in trainer.methods():
            raise InvalidRequestError(
                f"Method '{method_type}' is not supported by trainer '{trainer_id}'; "
                f"use one of: {', '.join(trainer.methods())}.",
                param="method.type",
                code="unsupported_method",
            )
        method_kind: Literal["supervised", "dpo"] = "dpo" if method_type == "dpo" else "supervised"
        training = await self._checked_file(params.training_file, method_kind, "training_file")
        if params.validation_file:
            await self._checked_file(params.validation_file, method_kind, "validation_file")
        hyper = self._hyperparameters(params, len(training.examples))
        job_id = new_job_id()
        seed = params.seed if params.seed is not None else secrets.randbelow(2**31)
        job = FineTuningJob(
            id=job_id,
            created_at=_now(),
            model=params.model,
            status="queued",
            training_file=params.training_file,
            validation_file=params.validation_file,
            hyperparameters=Hyperparameters.model_validate(
                hyper.model_dump(include={"batch_size", "n_epochs", "learning_rate_multiplier"})
            ),
            method=self._method(method_kind, hyper),
            seed=seed,
            metadata=params.metadata,
            suffix=params.suffix,
            user_provided_suffix=params.suffix,
        )
        await trainer.check(self._plan(job, training, None))  # memory and length caps: a 400 before anything is stored
        if isinstance(trainer, UpstreamTrainer):  # the upstream resolves ``auto`` itself; the job shows its choice
            method = requested_method(params)
            job = job.model_copy(update={"method": method, "hyperparameters": method_hyperparameters(method)})
        run_id = f"job_{secrets.token_hex(12)}"
        await self.store.create(job, run_id, trainer_id)
        await self._event(job.id, f"Created fine-tuning job: {job.id}")
        await self._event(
            job.id, f"Validated training file: {params.training_file} ({len(training.examples)} examples)"
        )
        await self.jobs.submit(JOB_KIND, {"fine_tuning_job_id": job.id}, reference=job.id, job_id=run_id)
        return job

    async def list_jobs(self, query: ListFineTuningJobsQuery) -> FineTuningJobList:
        jobs, has_more = await self.store.page(after=query.after, limit=query.limit)
        return FineTuningJobList(data=jobs, has_more=has_more)

    async def retrieve_job(self, fine_tuning_job_id: str) -> FineTuningJob:
        return (await self.store.get(fine_tuning_job_id)).job

    async def cancel_job(self, fine_tuning_job_id: str) -> FineTuningJob:
        row = await self.store.get(fine_tuning_job_id, "update")
        job = row.job
        if job.status == "cancelled":
            return job
        if job.status in TERMINAL:
            raise InvalidRequestError(
                f"Fine-tuning job '{job.id}' already {job.status}; only an unfinished job can be cancelled.",
                param="fine_tuning_job_id",
                code="job_not_cancellable",
            )
        upstream = self._upstream_trainer(row.provider_id)
        if upstream is not None:  # the upstream first: if it cannot be reached, nothing changes here
            await self.upstream.cancel(upstream, job.id)
        job = job.model_copy(update={"status": "cancelled", "finished_at": _now()})
        await self.store.save(job, unless=TERMINAL)
        await self._event(job.id, "Fine-tuning job cancelled")
        if row.run_id is not None:
            await self.jobs.cancel(row.run_id)  # a running trainer stops at its next step
        return (await self.store.get(fine_tuning_job_id)).job

    async def pause_job(self, fine_tuning_job_id: str) -> FineTuningJob:
        row = await self.store.get(fine_tuning_job_id, "update")
        job = row.job
        if job.status == "paused":
            return job
        if job.status not in ("queued", "running", "validating_files"):
            raise InvalidRequestError(
                f"Fine-tuning job '{job.id}' is {job.status}; only a queued or running job can be paused.",
                param="fine_tuning_job_id",
                code="job_not_pausable",
            )
        upstream = self._upstream_trainer(row.provider_id)
        if upstream is not None:
            paused = await self.upstream.pause(upstream, row)
            if paused is not None:
                return paused  # not upstream yet: paused here, as a local job that has not started
        if job.status == "queued" and row.run_id is not None:
            # Paused first, so the run (if it starts meanwhile) and the cancelled job's hook both leave it so;
            # a resume continues from the last checkpoint, if there is one.
            job = job.model_copy(update={"status": "paused"})
            await self.store.save(job, unless=TERMINAL, pause_requested=False)
            await self.jobs.cancel(row.run_id)
            await self._event(job.id, "Fine-tuning job paused before it started")
            return (await self.store.get(fine_tuning_job_id)).job
        await self.store.save(job, unless=TERMINAL, pause_requested=True)
        await self._event(job.id, "Pause requested: the job saves a checkpoint and stops at its next step")
        return (await self.store.get(fine_tuning_job_id)).job

    async def resume_job(self, fine_tuning_job_id: str) -> FineTuningJob:
        row = await self.store.get(fine_tuning_job_id, "update")
        job = row.job
        if job.status != "paused":
            raise InvalidRequestError(
                f"Fine-tuning job '{job.id}' is {job.status}; only a paused job can be resumed.",
                param="fine_tuning_job_id",
                code="job_not_paused",
            )
        run_id = f"job_{secrets.token_hex(12)}"
        upstream = self._upstream_trainer(row.provider_id)
        status = await self.upstream.resume(upstream, row) if upstream is not None else "queued"
        job = job.model_copy(update={"status": status})
        await self.store.save(job, unless=TERMINAL, pause_requested=False, run_id=run_id)
        await self._event(job.id, "Fine-tuning job resumed; it continues from its last checkpoint")
        await self.jobs.submit(JOB_KIND, {"fine_tuning_job_id": job.id}, reference=job.id, job_id=run_id)
        return job

    async def list_events(self, fine_tuning_job_id: str, query: ListPageQuery) -> FineTuningJobEventList:
        await self.store.get(fine_tuning_job_id)  # 404 for a job the caller cannot see
        events, has_more = await self.store.events(fine_tuning_job_id, after=query.after, limit=query.limit)
        return FineTuningJobEventList(data=events, has_more=has_more)

    async def list_checkpoints(self, fine_tuning_job_id: str, query: ListPageQuery) -> FineTuningJobCheckpointList:
        await self.store.get(fine_tuning_job_id)
        rows, has_more = await self.store.checkpoints(fine_tuning_job_id, after=query.after, limit=query.limit)
        data = [r.checkpoint for r in rows]
        return FineTuningJobCheckpointList(
            data=data,
            first_id=data[0].id if data else None,
            last_id=data[-1].id if data else None,
            has_more=has_more,
        )

    # -- checks ----------------------------------------------------------------------------------------

    def _upstream_trainer(self, provider_id: str) -> UpstreamTrainer | None:
        trainer = self.trainers.get(provider_id)
        return trainer if isinstance(trainer, UpstreamTrainer) else None

    def _trainer_for(self, model: str) -> tuple[str, Trainer | UpstreamTrainer]:
        for provider_id, trainer in self.trainers.items():
            if model in trainer.base_models():
                return provider_id, trainer
        known = sorted({m for t in self.trainers.values() for m in t.base_models()})
        raise InvalidRequestError(
            f"Model '{model}' cannot be fine-tuned here; base models: {', '.join(known) or 'none configured'}.",
            param="model",
            code="model_not_available",
        )

    async def _read(self, file_id: str, param: str) -> bytes:
        source = await self.files.get_file(file_id)  # the caller's file, or 404
        if source.purpose != "fine-tune":
            raise InvalidRequestError(
                f"File '{source.id}' was uploaded with purpose '{source.purpose}'; fine-tuning files need "
                "purpose 'fine-tune'.",
                param=param,
            )
        chunks: list[bytes] = []
        size = 0
        async for chunk in await self.files.open_content(file_id):
            size += len(chunk)
            if size > MAX_FILE_BYTES:
                raise InvalidRequestError(f"File '{file_id}' is over {MAX_FILE_BYTES} bytes.", param=param)
            chunks.append(chunk)
        return b"".join(chunks)

    async def _checked_file(self, file_id: str, method: Literal["supervised", "dpo"], param: str) -> ParsedFile:
        parsed = check_file(await self._read(file_id, param), method)
        if parsed.bad_lines:
            shown = "; ".join(str(e) for e in parsed.errors[:SHOWN_ERRORS])
            more = parsed.bad_lines - min(len(parsed.errors), SHOWN_ERRORS)
            tail = f"; and {more} more bad line(s)" if more > 0 else ""
            raise InvalidRequestError(
                f"{param} '{file_id}' has {parsed.bad_lines} invalid line(s) for method '{method}': {shown}{tail}",
                param=param,
                code="invalid_training_file" if param == "training_file" else "invalid_validation_file",
            )
        return parsed

    @staticmethod
    def _hyperparameters(params: CreateFineTuningJobRequest, examples: int) -> DpoHyperparameters:
        """The run's values: the method's, else the top-level ones, with ``auto`` resolved."""
        given: SupervisedHyperparameters | None = params.hyperparameters
        method = params.method
        if method is not None and method.type == "dpo" and method.dpo is not None and method.dpo.hyperparameters:
            given = method.dpo.hyperparameters
        elif method is not None and method.supervised is not None and method.supervised.hyperparameters:
            given = method.supervised.hyperparameters
        values = given.model_dump() if given is not None else {}

        def pick(key: str, auto: Any) -> Any:
            value = values.get(key)
            return auto if value in (None, "auto") else value

        return DpoHyperparameters(
            n_epochs=pick("n_epochs", AUTO_EPOCHS),
            batch_size=pick("batch_size", min(AUTO_BATCH_SIZE, max(1, examples))),
            learning_rate_multiplier=float(pick("learning_rate_multiplier", 1.0)),
            beta=pick("beta", 0.1) if method is not None and method.type == "dpo" else None,
        )

    @staticmethod
    def _method(kind: Literal["supervised", "dpo"], hyper: DpoHyperparameters) -> Method:
        if kind == "dpo":
            return Method(type="dpo", dpo=DpoMethod(hyperparameters=hyper))
        plain = SupervisedHyperparameters.model_validate(hyper.model_dump(exclude={"beta"}))
        return Method(type="supervised", supervised=SupervisedMethod(hyperparameters=plain))

    def _plan(self, job: FineTuningJob, training: ParsedFile, validation: ParsedFile | None) -> TrainingPlan:
        method = job.method or Method(type="supervised")
        dpo = method.type == "dpo" and method.dpo is not None and method.dpo.hyperparameters is not None
        hyper = method.dpo.hyperparameters if dpo and method.dpo else None
        values = hyper or (method.supervised.hyperparameters if method.supervised else None) or job.hyperparameters
        return TrainingPlan(
            job_id=job.id,
            base_model=job.model,
            method="dpo" if method.type == "dpo" else "supervised",
            training=training.examples,
            validation=validation.examples if validation is not None else [],
            n_epochs=int(values.n_epochs or AUTO_EPOCHS),
            batch_size=int(values.batch_size or AUTO_BATCH_SIZE),
            learning_rate_multiplier=float(values.learning_rate_multiplier or 1.0),
            seed=job.seed,
            work_dir=str(self.work_root / job.id),
            beta=float(hyper.beta) if hyper is not None and isinstance(hyper.beta, int | float) else None,
        )

    # -- the job -------------------------------------------------------------------------------------

    async def run(self, ctx: JobContext) -> dict[str, Any]:
        """Train (from the last checkpoint, if any), then publish the adapter and serve the model."""
        job_id = str(ctx.job.payload["fine_tuning_job_id"])
        row = await self.store.get(job_id)
        trainer = self.trainers.get(row.provider_id)
        if isinstance(trainer, UpstreamTrainer):
            if row.run_id is not None and row.run_id != ctx.job.id:  # a resume started another run
                return {"fine_tuning_job_id": job_id, "status": row.job.status, "superseded": True}
            return await self.upstream.run(ctx, row, trainer)
        if row.job.status in (*TERMINAL, "paused"):
            return {"fine_tuning_job_id": job_id, "status": row.job.status}
        if trainer is None:
            raise JobError("trainer_unavailable", f"Trainer '{row.provider_id}' is not configured on this server.")
        try:
            training = await self._checked_file(row.job.training_file, self._kind(row.job), "training_file")
            validation = None
            if row.job.validation_file:
                validation = await self._checked_file(row.job.validation_file, self._kind(row.job), "validation_file")
        except UnderlayError as exc:
            raise JobError("invalid_file", exc.message) from None
        plan = self._plan(row.job, training, validation)
        checkpoints, _ = await self.store.checkpoints(job_id, limit=1)
        latest = checkpoints[0].directory if checkpoints else None
        if latest is not None and await asyncio.to_thread(Path(latest).is_dir):
            plan = plan.model_copy(update={"resume_from": latest})
        job = row.job.model_copy(update={"status": "running"})
        if not await self.store.save(job, unless=(*TERMINAL, "paused")):
            return {"fine_tuning_job_id": job_id, "status": "cancelled"}
        resumed = f" from checkpoint step {checkpoints[0].checkpoint.step_number}" if plan.resume_from else ""
        await self._event(job_id, f"Fine-tuning job started{resumed} (attempt {ctx.job.attempts})")

        asked: list[Literal["run", "pause", "cancel"]] = ["run"]
        polled = [time.monotonic()]

        async def report(item: TrainingReport) -> None:
            await self._on_report(job_id, item)
            try:
                await ctx.checkpoint(item.step / item.total_steps if item.total_steps else None)
            except JobCancelled:  # not raised through the trainer: the provider boundary would map it to a 502
                asked[0] = "cancel"
                return
            if time.monotonic() - polled[0] >= POLL_SECONDS:
                polled[0] = time.monotonic()
                current = await self.store.get(job_id)
                if current.job.status == "cancelled":
                    asked[0] = "cancel"
                elif current.pause_requested:
                    asked[0] = "pause"

        def should_stop() -> Literal["run", "pause", "cancel"]:
            return "cancel" if ctx.cancelled else asked[0]

        try:
            outcome = await trainer.train(plan, report, should_stop)
        except JobCancelled:
            await self._end_cancelled(job_id)
            raise
        except UnderlayError as exc:
            raise JobError(exc.code or "training_failed", exc.message) from None
        if outcome.status == "cancelled" or should_stop() == "cancel":
            await self._end_cancelled(job_id)
            raise JobCancelled(ctx.job.id)
        if outcome.status == "paused":
            current = (await self.store.get(job_id)).job
            paused = current.model_copy(update={"status": "paused", "trained_tokens": outcome.trained_tokens})
            await self.store.save(paused, unless=TERMINAL, pause_requested=False)
            await self._event(job_id, f"Fine-tuning job paused at step {outcome.steps}")
            return {"fine_tuning_job_id": job_id, "status": "paused"}
        return await self._publish(job_id, outcome)

    @staticmethod
    def _kind(job: FineTuningJob) -> Literal["supervised", "dpo"]:
        return "dpo" if job.method is not None and job.method.type == "dpo" else "supervised"

    async def _on_report(self, job_id: str, item: TrainingReport) -> None:
        if item.kind == "metrics":
            parts = [f"{k}={v:.4g}" for k, v in item.metrics.items()]
            await self._event(
                job_id,
                f"Step {item.step}/{item.total_steps}: {', '.join(parts)}",
                data={"step": item.step, "total_steps": item.total_steps, **item.metrics},
                kind="metrics",
            )
        elif item.kind == "checkpoint" and item.checkpoint_dir:
            await self._checkpoint(job_id, item)
        elif item.message:
            await self._event(job_id, item.message)

    async def _checkpoint(self, job_id: str, item: TrainingReport) -> None:
        """A saved adapter: its PEFT files zipped into a downloadable file, and a checkpoint row."""
        job = (await self.store.get(job_id)).job
        directory = Path(item.checkpoint_dir or "")
        file = await self._zip_file(f"{job_id}-step-{item.step}.zip", directory)
        name = _model_name(job.model, job.suffix, job_id) + f":ckpt-step-{item.step}"
        metrics = CheckpointMetrics(
            step=float(item.step),
            train_loss=item.metrics.get("train_loss"),
            valid_loss=item.metrics.get("valid_loss"),
            full_valid_loss=item.metrics.get("valid_loss"),
        )
        checkpoint = FineTuningJobCheckpoint(
            id=f"ftckpt-{secrets.token_hex(12)}",
            created_at=_now(),
            fine_tuned_model_checkpoint=name,
            fine_tuning_job_id=job_id,
            metrics=metrics,
            step_number=item.step,
            file_id=file.id,
        )
        await self.store.add_checkpoint(checkpoint, str(directory))
        await self._event(job_id, f"Checkpoint saved at step {item.step} (file {file.id})", data={"file_id": file.id})

    async def _zip_file(self, name: str, directory: Path) -> Any:
        def build() -> bytes:
            buffer = io.BytesIO()
            with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
                for path in sorted(directory.rglob("*")):
                    if path.is_file() and not path.name.startswith("."):
                        archive.write(path, path.relative_to(directory).as_posix())
            return buffer.getvalue()

        data = await asyncio.to_thread(build)
        return await self.files.create_file(name, "fine-tune-results", _once(data))

    async def _publish(self, job_id: str, outcome: TrainingOutcome) -> dict[str, Any]:
        """Result files, then the served model, then ``succeeded``: in that order, so a failure leaves nothing
        half-done (a model is never listed for a job that did not succeed)."""
        job = (await self.store.get(job_id)).job
        result_files: list[str] = []
        if outcome.adapter_dir:
            adapter = await self._zip_file(f"{job_id}-adapter-peft.zip", Path(outcome.adapter_dir))
            result_files.append(adapter.id)
        metrics = await self._metrics_csv(job_id)
        result_files.append(
            (await self.files.create_file(f"{job_id}-step_metrics.csv", "fine-tune-results", _once(metrics))).id
        )
        name = _model_name(job.model, job.suffix, job_id)
        served_path: str | None = None
        if outcome.gguf_path:
            if self.serving is None:
                raise JobError("serving_unavailable", "No inference provider here can serve a tuned model.")
            try:
                await self.serving.serve(name, outcome.gguf_path, self._model_meta(job))
            except UnderlayError as exc:
                raise JobError("serving_failed", f"The tuned model could not be served: {exc.message}") from None
            served_path = outcome.gguf_path
        done = job.model_copy(
            update={
                "status": "succeeded",
                "finished_at": _now(),
                "fine_tuned_model": name if served_path else None,
                "result_files": result_files,
                "trained_tokens": outcome.trained_tokens,
            }
        )
        if not await self.store.save(done, unless=TERMINAL, served_path=served_path):
            if served_path and self.serving is not None:  # cancelled meanwhile: take the model back
                await self.serving.unserve(name)
            return {"fine_tuning_job_id": job_id, "status": "cancelled"}
        if served_path:
            await self._event(job_id, f"New fine-tuned model created: {name}", data={"model": name})
        await self._event(job_id, "The job has successfully completed", data=dict(outcome.metrics) or None)
        return {"fine_tuning_job_id": job_id, "status": "succeeded", "fine_tuned_model": name}

    async def _metrics_csv(self, job_id: str) -> bytes:
        events, _ = await self.store.events(job_id, after=None, limit=100_000)
        rows = [e.data for e in reversed(events) if e.type == "metrics" and e.data]
        columns = ["step", "train_loss", "valid_loss", "learning_rate", "tokens_per_second"]
        # A method's own figures (DPO's reward accuracy and margin) follow the common ones, in first-seen order.
        for data in rows:
            columns += [k for k, v in data.items() if k not in columns and isinstance(v, int | float | str)]
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        for data in rows:
            writer.writerow(data)
        return out.getvalue().encode()

    @staticmethod
    def _model_meta(job: FineTuningJob) -> dict[str, Any]:
        return {"base_model": job.model, "fine_tuning_job": job.id, "owned_by": "fine-tuning"}

    async def _end_cancelled(self, job_id: str) -> None:
        job = (await self.store.get(job_id)).job
        if job.status not in (*TERMINAL, "paused"):  # a pause stops the run the same way; it stays paused
            await self.store.save(
                job.model_copy(update={"status": "cancelled", "finished_at": _now()}), unless=(*TERMINAL, "paused")
            )

    async def on_failure(self, job: Job) -> None:
        """The run ended without success (an error, given up after restarts, cancelled): say so on the job."""
        job_id = str(job.payload.get("fine_tuning_job_id", ""))
        try:
            row = await self.store.get(job_id)
        except UnderlayError:
            return
        if row.job.status in TERMINAL or row.job.status == "paused" or row.run_id != job.id:
            return
        if job.status == "cancelled":
            await self._end_cancelled(job_id)
            return
        error = job.error or {}
        message = str(error.get("message") or "the training run ended before it finished")
        failed = row.job.model_copy(
            update={
                "status": "failed",
                "finished_at": _now(),
                "error": FineTuningJobError(code=str(error.get("code") or "training_failed"), message=message[:2000]),
            }
        )
        await self.store.save(failed, unless=TERMINAL)
        await self._event(job_id, f"Fine-tuning job failed: {message[:500]}", level="error")

    async def _event(
        self,
        job_id: str,
        message: str,
        *,
        data: dict[str, Any] | None = None,
        kind: Literal["message", "metrics"] = "message",
        level: Literal["info", "warn", "error"] = "info",
    ) -> None:
        event = FineTuningJobEvent(
            id=_event_id(), created_at=_now(), message=message, data=data, type=kind, level=level
        )
        await self.store.add_event(job_id, event)


async def _once(data: bytes) -> AsyncIterator[bytes]:
    yield data
