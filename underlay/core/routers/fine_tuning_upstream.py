"""Fine-tuning jobs that an upstream service trains (``remote::openai``): submit, follow, mirror, forward.

Why the same job rows and the same job kind as a local run: a client sees one fine-tuning API whoever
trains. The job is created, checked and listed exactly as a local one; only what its run does differs.
Here a run does no compute, it follows someone else's:

1. **Submit.** Upload the training (and validation) file to the upstream's Files API, then create the
   upstream job with the job's method, hyperparameters, suffix, seed and metadata. Each upstream id is
   stored (``fine_tuning_upstreams``) before the call that needs it, and ``create_attempted`` before the
   create, so a run that dies in the middle looks the upstream job up by its training file instead of
   creating a second one.
2. **Follow.** Each run asks the upstream once, copies the events and checkpoints it has not copied yet,
   mirrors the status (and the hyperparameters the upstream chose for ``auto``), and then defers itself
   for the provider's ``poll_seconds`` (:class:`JobDeferred`): waiting holds no worker, and the next look
   is an ordinary claim of the job, by this server or by one started after it died.
3. **End.** A succeeded upstream job's result files are copied into files of the job's owner and its
   ``fine_tuned_model`` is listed on the inference provider the trainer names (``provider/name``, with
   the bare name as an alias), so ``/v1/models`` shows it and chat completions reach it. A failed one
   fails the job with the upstream's code and message (the provider removed its credentials from it).
   An upstream pause ends the run with the job ``paused``; resume starts a new run that picks the same
   upstream job up again.

Cancel, pause and resume are forwarded from the client's own request, not from a later poll: the client
learns from its call whether the upstream took it, and when the upstream cannot be reached it gets the
provider's 502, 503 or 504 with the job unchanged, so trying again is safe.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Literal

from pydantic import ValidationError

from underlay.api.errors import (
    RateLimitedError,
    ServiceUnavailableError,
    UnderlayError,
    UpstreamError,
    UpstreamTimeoutError,
)
from underlay.api.fine_tuning import (
    CreateFineTuningJobRequest,
    FineTuningJob,
    FineTuningJobError,
    FineTuningJobEvent,
    FineTuningJobStatus,
    Hyperparameters,
    Method,
    SupervisedHyperparameters,
    SupervisedMethod,
    UpstreamJob,
    UpstreamTrainer,
)
from underlay.core.jobs import JobContext, JobDeferred, JobError, RetryableJobError
from underlay.core.routers.files import FilesRouter
from underlay.core.serving import ModelServing
from underlay.core.stores.fine_tuning import FineTuningStore, JobRow, UpstreamRun

log = logging.getLogger("underlay.fine_tuning")

TERMINAL = ("succeeded", "failed", "cancelled")
FOLLOWED: tuple[FineTuningJobStatus, ...] = ("validating_files", "queued", "running")
"""Upstream statuses a job takes on as they are while the upstream trains."""
EVENT_PAGE = 100
EVENT_PAGES = 20
"""Pages of upstream events read per look: an upstream's metrics events come one per step, so a job
followed again after a long gap copies at most this many pages of the newest."""
GIVE_UP_SECONDS = 24 * 3600
"""How long an upstream that cannot be reached is asked again before the job fails with why."""

Reader = Callable[[str, str], Awaitable[bytes]]
"""Reads one of the owner's files for a job (file id, the request field that named it)."""


def _now() -> int:
    return int(time.time())


def _local_id(prefix: str, job_id: str, upstream_id: str) -> str:
    """An id for a copied event or checkpoint: the same for the same upstream item, unique per job."""
    return f"{prefix}-{hashlib.sha256(f'{job_id}:{upstream_id}'.encode()).hexdigest()[:24]}"


def transient(exc: UnderlayError) -> bool:
    """An upstream failure worth asking again about later (unreachable, busy, timed out, a 5xx)."""
    if isinstance(exc, ServiceUnavailableError | UpstreamTimeoutError | RateLimitedError):
        return True
    return isinstance(exc, UpstreamError) and exc.code not in (
        "upstream_auth_failed",
        "upstream_job_missing",
        "upstream_not_found",
        "result_too_large",
    )


def requested_method(params: CreateFineTuningJobRequest) -> Method:
    """The method as the client asked for it, ``auto`` left for the upstream to choose (it reports what it chose)."""
    method = params.method
    if method is None:
        hyper = params.hyperparameters or SupervisedHyperparameters()
        return Method(type="supervised", supervised=SupervisedMethod(hyperparameters=hyper))
    if method.type == "supervised" and method.supervised is None and params.hyperparameters is not None:
        return Method(type="supervised", supervised=SupervisedMethod(hyperparameters=params.hyperparameters))
    return method


def method_hyperparameters(method: Method) -> Hyperparameters:
    """The job's top-level ``hyperparameters``: the method's, without the ones only DPO has."""
    chosen: SupervisedHyperparameters | None = None
    if method.type == "dpo" and method.dpo is not None:
        chosen = method.dpo.hyperparameters
    if chosen is None and method.supervised is not None:
        chosen = method.supervised.hyperparameters
    if chosen is None:
        return Hyperparameters()
    return Hyperparameters.model_validate(
        chosen.model_dump(include={"batch_size", "n_epochs", "learning_rate_multiplier"})
    )


async def _once(data: bytes) -> AsyncIterator[bytes]:
    yield data


class UpstreamRuns:
    """The run, and the forwarded cancel, pause and resume, of jobs an :class:`UpstreamTrainer` trains."""

    def __init__(self, store: FineTuningStore, files: FilesRouter, serving: ModelServing | None, read: Reader) -> None:
        self.store = store
        self.files = files
        self.serving = serving
        self.read = read

    # -- forwarded from the client's request ----------------------------------------------------------

    async def cancel(self, trainer: UpstreamTrainer, job_id: str) -> None:
        """Ask the upstream to cancel (before the job is marked cancelled here); errors reach the client."""
        state = await self.store.upstream(job_id)
        if state is None or state.job_id is None or state.cancel_sent:
            return  # not upstream yet: the run sees the cancel before it creates anything
        await trainer.cancel_upstream_job(state.job_id)
        state.cancel_sent = True
        await self.store.save_upstream(job_id, state)
        await self.event(job_id, f"Cancel sent to provider '{trainer.provider_id}' (upstream job {state.job_id})")

    async def pause(self, trainer: UpstreamTrainer, row: JobRow) -> FineTuningJob | None:
        """Pause the upstream job; ``None`` when it has none yet (the job is then paused here)."""
        state = await self.store.upstream(row.job.id)
        if state is None or state.job_id is None:
            return None
        await trainer.pause_upstream_job(state.job_id)
        paused = row.job.model_copy(update={"status": "paused"})
        await self.store.save(paused, unless=TERMINAL, pause_requested=False)
        await self.event(
            row.job.id, f"Paused at provider '{trainer.provider_id}' (upstream job {state.job_id}); resume continues it"
        )
        return (await self.store.get(row.job.id)).job

    async def resume(self, trainer: UpstreamTrainer, row: JobRow) -> FineTuningJobStatus:
        """Resume the upstream job if it has one; the status the job takes until its run looks again."""
        state = await self.store.upstream(row.job.id)
        if state is None or state.job_id is None:
            return "queued"
        remote = await trainer.resume_upstream_job(state.job_id)
        await self.event(row.job.id, f"Resumed at provider '{trainer.provider_id}' (upstream job {state.job_id})")
        return _followed(remote.status) or "running"

    # -- the run --------------------------------------------------------------------------------------

    async def run(self, ctx: JobContext, row: JobRow, trainer: UpstreamTrainer) -> dict[str, Any]:
        """One look: submit the job if that is not done, then follow it once and defer (or end)."""
        job_id = row.job.id
        state = await self.store.upstream(job_id) or UpstreamRun(provider_id=trainer.provider_id)
        if row.job.status in TERMINAL:
            if row.job.status == "cancelled":
                await self._cancel_quietly(trainer, job_id, state)
            return {"fine_tuning_job_id": job_id, "status": row.job.status}
        if row.job.status == "paused":
            return {"fine_tuning_job_id": job_id, "status": "paused"}  # resume submits a new run
        if state.job_id is None:
            await self._submit(trainer, row, state)
            latest = (await self.store.get(job_id)).job
            if latest.status == "cancelled":  # cancelled while the create was on its way
                await self._cancel_quietly(trainer, job_id, state)
                return {"fine_tuning_job_id": job_id, "status": "cancelled"}
            if latest.status == "paused":
                await self._pause_quietly(trainer, job_id, state)
        return await self._follow(trainer, job_id, state)

    async def _submit(self, trainer: UpstreamTrainer, row: JobRow, state: UpstreamRun) -> None:
        """Upload the files and create the upstream job, storing each id before the next call."""
        job = row.job
        pid = trainer.provider_id
        try:
            if state.training_file is None:
                content = await self._read(job.training_file, "training_file")
                state.training_file = await trainer.upload_upstream_file(f"{job.id}-training.jsonl", content)
                await self.store.save_upstream(job.id, state)
            if job.validation_file and state.validation_file is None:
                content = await self._read(job.validation_file, "validation_file")
                state.validation_file = await trainer.upload_upstream_file(f"{job.id}-validation.jsonl", content)
                await self.store.save_upstream(job.id, state)
            created: UpstreamJob | None = None
            if state.create_attempted:
                created = await trainer.find_upstream_job(state.training_file)
            if created is None:
                state.create_attempted = True
                await self.store.save_upstream(job.id, state)
                request = CreateFineTuningJobRequest(
                    model=job.model,
                    training_file=state.training_file,
                    validation_file=state.validation_file,
                    method=job.method,
                    suffix=job.suffix,
                    seed=job.seed,
                    metadata=job.metadata,
                )
                created = await trainer.create_upstream_job(request)
        except UnderlayError as exc:
            if transient(exc):  # the job system tries again (a few times) before it fails the job with this
                raise RetryableJobError(exc.code or "upstream_unavailable", exc.message, trainer.poll_seconds) from None
            raise JobError(exc.code or "upstream_error", exc.message) from None
        state.job_id = created.id
        await self.store.save_upstream(job.id, state)
        log.info("fine-tuning job %s: sent to provider %s as upstream job %s", job.id, pid, created.id)
        files = state.training_file + (f" and {state.validation_file}" if state.validation_file else "")
        await self.event(job.id, f"Sent to provider '{pid}' as upstream job {created.id} (files {files})")
        await self._mirror(job.id, created)

    async def _read(self, file_id: str, param: str) -> bytes:
        try:
            return await self.read(file_id, param)
        except UnderlayError as exc:
            raise JobError("invalid_file", exc.message) from None

    async def _follow(self, trainer: UpstreamTrainer, job_id: str, state: UpstreamRun) -> dict[str, Any]:
        """Ask the upstream once; copy what is new; end the job if the upstream job ended, else defer."""
        assert state.job_id is not None
        try:
            remote = await trainer.retrieve_upstream_job(state.job_id)
            await self._copy_events(trainer, job_id, state)
            await self._copy_checkpoints(trainer, job_id, state.job_id)
        except UnderlayError as exc:
            now = _now()
            gave_up = state.failing_since is not None and now - state.failing_since > GIVE_UP_SECONDS
            # A refused key is worth waiting on here (the job runs upstream meanwhile; an operator may fix it).
            retry = transient(exc) or exc.code == "upstream_auth_failed"
            if not retry or gave_up:
                return await self._fail(
                    job_id, exc.code or "upstream_error", f"{exc.message} (following upstream job {state.job_id})"
                )
            log.warning("fine-tuning job %s: following upstream job %s failed: %s", job_id, state.job_id, exc.message)
            if state.failing_since is None:
                state.failing_since = now
                await self.store.save_upstream(job_id, state)
            raise JobDeferred(trainer.poll_seconds) from None
        if state.failing_since is not None:
            state.failing_since = None
            await self.store.save_upstream(job_id, state)
        if remote.status == "succeeded":
            return await self._succeed(trainer, job_id, state, remote)
        if remote.status == "failed":
            error = remote.error
            message = (
                error.message if error is not None and error.message else "the upstream job failed without saying why"
            )
            code = error.code if error is not None and error.code else "upstream_job_failed"
            param = error.param if error is not None else None
            return await self._fail(
                job_id, code, f"Provider '{trainer.provider_id}': {message}", param, remote.finished_at
            )
        if remote.status == "cancelled":
            job = (await self.store.get(job_id)).job
            ended = job.model_copy(update={"status": "cancelled", "finished_at": remote.finished_at or _now()})
            if await self.store.save(ended, unless=TERMINAL):
                await self.event(
                    job_id, f"The upstream job {remote.id} was cancelled at provider '{trainer.provider_id}'"
                )
            return {"fine_tuning_job_id": job_id, "status": "cancelled"}
        if remote.status == "paused":
            job = (await self.store.get(job_id)).job
            if job.status != "paused":
                await self.store.save(job.model_copy(update={"status": "paused"}), unless=TERMINAL)
                await self.event(job_id, f"The upstream job {remote.id} is paused; resume continues it")
            await self._mirror(job_id, remote)
            return {"fine_tuning_job_id": job_id, "status": "paused"}
        await self._mirror(job_id, remote)
        raise JobDeferred(trainer.poll_seconds)

    async def _mirror(self, job_id: str, remote: UpstreamJob) -> None:
        """Take on the upstream's status and what it resolved (``auto`` hyperparameters, tokens, finish time)."""
        job = (await self.store.get(job_id)).job
        update: dict[str, Any] = {}
        status = _followed(remote.status)
        if status is not None and status != job.status and job.status != "paused":
            update["status"] = status
        if remote.trained_tokens is not None:
            update["trained_tokens"] = remote.trained_tokens
        if remote.estimated_finish is not None:
            update["estimated_finish"] = remote.estimated_finish
        if remote.seed is not None and remote.seed != job.seed:
            update["seed"] = remote.seed
        try:
            if remote.hyperparameters:
                hyper = Hyperparameters.model_validate(remote.hyperparameters)
                if hyper != job.hyperparameters:
                    update["hyperparameters"] = hyper
            if remote.method:
                method = Method.model_validate(remote.method)
                if method != job.method:
                    update["method"] = method
        except ValidationError:
            pass  # values this contract cannot hold: the job keeps those it was created with
        if update:
            await self.store.save(job.model_copy(update=update), unless=(*TERMINAL, "paused"))

    async def _copy_events(self, trainer: UpstreamTrainer, job_id: str, state: UpstreamRun) -> None:
        """The upstream events newer than the last one copied, added oldest first."""
        assert state.job_id is not None
        fresh: list[FineTuningJobEvent] = []
        after: str | None = None
        for _ in range(EVENT_PAGES):
            page = await trainer.list_upstream_events(state.job_id, after, EVENT_PAGE)
            seen_last = False
            for event in page.data:
                if event.id == state.last_event_id:
                    seen_last = True
                    break
                fresh.append(event)
            if seen_last or not page.has_more or not page.data:
                break
            after = page.data[-1].id
        if not fresh:
            return
        for event in reversed(fresh):
            await self.store.copy_event(job_id, event.model_copy(update={"id": _local_id("ftevent", job_id, event.id)}))
        state.last_event_id = fresh[0].id
        await self.store.save_upstream(job_id, state)

    async def _copy_checkpoints(self, trainer: UpstreamTrainer, job_id: str, upstream_id: str) -> None:
        remote = await trainer.list_upstream_checkpoints(upstream_id)
        if not remote:
            return
        rows, _ = await self.store.checkpoints(job_id)
        have = {r.checkpoint.id for r in rows}
        for checkpoint in reversed(remote):
            local_id = _local_id("ftckpt", job_id, checkpoint.id)
            if local_id in have:
                continue
            copied = checkpoint.model_copy(update={"id": local_id, "fine_tuning_job_id": job_id, "file_id": None})
            await self.store.add_checkpoint(copied, "")

    async def _succeed(
        self, trainer: UpstreamTrainer, job_id: str, state: UpstreamRun, remote: UpstreamJob
    ) -> dict[str, Any]:
        """Result files copied here, the tuned model listed, then ``succeeded`` (so a listed name is never
        missing from a succeeded job, nor a succeeded job's name from the models)."""
        pid = trainer.provider_id
        result_files: list[str] = []
        for upstream_file in remote.result_files:
            local = state.result_files.get(upstream_file)
            if local is None:
                try:
                    name, content = await trainer.read_upstream_file(upstream_file)
                except UnderlayError as exc:
                    if transient(exc):
                        raise JobDeferred(trainer.poll_seconds) from None
                    await self.event(job_id, f"Result file {upstream_file} not copied: {exc.message}", level="warn")
                    continue
                stored = await self.files.create_file(f"{job_id}-{name}", "fine-tune-results", _once(content))
                local = state.result_files[upstream_file] = stored.id
                await self.store.save_upstream(job_id, state)
            result_files.append(local)
        listed = remote.fine_tuned_model
        serving_id = trainer.serving_provider()
        if remote.fine_tuned_model and serving_id is not None and self.serving is not None:
            meta = {"base_model": remote.model, "fine_tuning_job": job_id, "owned_by": "fine-tuning", "trainer": pid}
            try:
                model = await self.serving.list_upstream(serving_id, remote.fine_tuned_model, meta)
            except UnderlayError as exc:
                await self.event(
                    job_id, f"The tuned model {remote.fine_tuned_model} is not listed here: {exc.message}", level="warn"
                )
            else:
                listed = remote.fine_tuned_model if remote.fine_tuned_model in model.aliases else model.identifier
                await self.event(
                    job_id,
                    f"Tuned model listed as {model.identifier} on inference provider '{serving_id}'",
                    data={"model": listed},
                )
        job = (await self.store.get(job_id)).job
        done = job.model_copy(
            update={
                "status": "succeeded",
                "finished_at": remote.finished_at or _now(),
                "fine_tuned_model": listed,
                "result_files": result_files,
                "trained_tokens": remote.trained_tokens if remote.trained_tokens is not None else job.trained_tokens,
            }
        )
        if not await self.store.save(done, unless=TERMINAL):
            return {"fine_tuning_job_id": job_id, "status": job.status}
        return {"fine_tuning_job_id": job_id, "status": "succeeded", "fine_tuned_model": listed}

    async def _fail(
        self, job_id: str, code: str, message: str, param: str | None = None, finished_at: int | None = None
    ) -> dict[str, Any]:
        job = (await self.store.get(job_id)).job
        error = FineTuningJobError(code=code, message=message[:2000], param=param)
        failed = job.model_copy(update={"status": "failed", "finished_at": finished_at or _now(), "error": error})
        if await self.store.save(failed, unless=TERMINAL):
            await self.event(job_id, f"Fine-tuning job failed: {message[:500]}", level="error")
        return {"fine_tuning_job_id": job_id, "status": "failed"}

    async def _cancel_quietly(self, trainer: UpstreamTrainer, job_id: str, state: UpstreamRun) -> None:
        """A cancel the request could not forward (the upstream job did not exist yet): sent from the run."""
        if state.job_id is None or state.cancel_sent:
            return
        try:
            await trainer.cancel_upstream_job(state.job_id)
        except UnderlayError as exc:
            log.warning("fine-tuning job %s: cancelling upstream job %s failed: %s", job_id, state.job_id, exc.message)
            return
        state.cancel_sent = True
        await self.store.save_upstream(job_id, state)
        await self.event(job_id, f"Cancel sent to provider '{trainer.provider_id}' (upstream job {state.job_id})")

    async def _pause_quietly(self, trainer: UpstreamTrainer, job_id: str, state: UpstreamRun) -> None:
        assert state.job_id is not None
        try:
            await trainer.pause_upstream_job(state.job_id)
        except UnderlayError as exc:
            log.warning("fine-tuning job %s: pausing upstream job %s failed: %s", job_id, state.job_id, exc.message)

    async def event(
        self,
        job_id: str,
        message: str,
        *,
        data: dict[str, Any] | None = None,
        level: Literal["info", "warn", "error"] = "info",
    ) -> None:
        event = FineTuningJobEvent(
            id=f"ftevent-{secrets.token_hex(12)}", created_at=_now(), message=message, data=data, level=level
        )
        await self.store.add_event(job_id, event)


def _followed(status: str) -> FineTuningJobStatus | None:
    for known in FOLLOWED:
        if status == known:
            return known
    return None
