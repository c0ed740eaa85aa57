"""The batches router: the Batches API over its store, the files API and the job system.

Why a batch is a job: a batch can take hours, must survive a restart and must not hold a request open.
Creating one stores the batch (``validating``) and submits a ``batch.run`` job in the ``bulk`` lane; the
job checks every line before any work starts (a bad line fails the batch with its line number in
``errors.data``), then runs the lines with bounded concurrency and records each finished line in the
store at once. A resumed job reads those records and runs only the lines that have none, so a restart
never repeats or loses a finished line. The job runs as the batch's owner, and each line goes through
the router that serves the endpoint live (found in the route table by the line's ``url``), so access
control, model resolution and telemetry apply to it exactly as to a live request.

Native pass-through. When every line of a chat, completions or embeddings batch names a model of one
provider that has its own Batches API (a :class:`NativeBatchProvider` that says yes for the endpoint),
the job hands the whole batch to that upstream instead: it uploads the lines with each ``model``
rewritten to the provider's name for it (an upstream with no file upload gets them in its create call),
creates the upstream batch, and follows it. A line that needs Underlay itself (a guardrail, a stored
chat completion), a model of another provider, one the routing table does not know, or lines the
provider's batch format cannot carry, keep the batch here (it then runs inline, as before). The decision and
each upstream id are stored (``batch_upstreams``) before the call that needs them, so a restarted job
follows the same upstream batch and never submits twice; between polls the job is deferred
(:class:`JobDeferred`), holding no worker. Once the upstream batch ends, its output and error files
are copied into local files owned by the batch's creator, each line's ``model`` set back to the name
the client used.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError
from pydantic_core import to_jsonable_python

from underlay.api.batches import (
    MAX_CUSTOM_ID_CHARS,
    MAX_LINE_BYTES,
    MAX_LINES,
    NATIVE_BATCH_ENDPOINTS,
    Batch,
    BatchError,
    BatchErrors,
    BatchesApi,
    BatchList,
    BatchRequestCounts,
    BatchUsage,
    CreateBatchRequest,
    NativeBatchProvider,
)
from underlay.api.errors import (
    ConflictError,
    InvalidRequestError,
    RateLimitedError,
    ServiceUnavailableError,
    UnderlayError,
    UpstreamError,
    UpstreamTimeoutError,
)
from underlay.api.models import Model, ModelType
from underlay.api.pagination import ListQuery
from underlay.api.routes import Route
from underlay.core.jobs import Job, JobCancelled, JobContext, JobDeferred, JobError, JobRunner, RetryableJobError
from underlay.core.quotas.background import BackgroundCharger
from underlay.core.routers.files import FilesRouter
from underlay.core.stores.batches import BatchStore, UpstreamBatch, new_batch_id

log = logging.getLogger("underlay.batches")

JOB_KIND = "batch.run"
WINDOW_SECONDS = 24 * 3600
MAX_INPUT_BYTES = MAX_LINES * 2_000
"""What a batch's input file may hold before reading stops (lines average far less than a line's limit)."""
DEFAULT_CONCURRENCY = 4
"""Lines of one batch in flight at once: enough to overlap I/O, few enough that one batch cannot take a
provider's whole capacity from live traffic."""
TERMINAL = ("completed", "failed", "expired", "cancelled")
FLUSH_SECONDS = 0.25
"""How often a running batch writes its ``request_counts`` and progress: per line, they cost more
queries than the line itself on a fast endpoint. Each line's own record is still written at once."""
DEFAULT_POLL_SECONDS = 30.0
"""How often a native batch asks its upstream how it is doing (a batch takes minutes to hours)."""
POLL_GRACE_SECONDS = 3600
"""How long past the batch's window an upstream that cannot be reached is still polled before giving up."""
ModelResolver = Callable[[str], Awaitable[Model]]


@dataclass(frozen=True)
class Endpoint:
    """A batchable endpoint: the API that serves it and its live route (body model and handler)."""

    api: str
    route: Route


@dataclass(frozen=True)
class Line:
    number: int
    custom_id: str
    params: BaseModel
    body: dict[str, Any]
    """The request body as the client wrote it: what a native batch sends upstream (model renamed)."""


@dataclass(frozen=True)
class NativePlan:
    """A batch to pass through: the provider that runs it and, per model name a line uses, its own name."""

    provider_id: str
    models: dict[str, str]


def _now() -> int:
    return int(time.time())


def _first_error(exc: ValidationError) -> tuple[str, str]:
    """The first pydantic error as (field path, message), naming the field inside ``body``."""
    err = exc.errors()[0]
    path = ".".join(str(p) for p in err.get("loc", ()))
    return f"body.{path}" if path else "body", str(err.get("msg", "invalid value"))


def _expiry(job: Job) -> int | None:
    """The ``output_expires_after.seconds`` the batch was created with, if any."""
    seconds = job.payload.get("output_expires_after_seconds")
    return int(seconds) if isinstance(seconds, int) else None


def _count(usage: Mapping[str, Any], *names: str) -> int:
    return sum(value for name in names if isinstance(value := usage.get(name), int) and value > 0)


def _usage(done: Iterable[tuple[bool, dict[str, Any]]]) -> BatchUsage | None:
    """The sum of the succeeded lines' ``usage``, in the Responses shape OpenAI's batch object uses.

    Chat and completions name their tokens ``prompt_tokens``/``completion_tokens``, Responses
    ``input_tokens``/``output_tokens``; an embeddings line has only prompt tokens and a moderations
    line no usage at all. ``None`` while no finished line reported any.
    """
    seen = False
    input_tokens = output_tokens = cached = reasoning = 0
    for ok, record in done:
        response = record.get("response") if ok else None
        body = response.get("body") if isinstance(response, dict) else None
        usage = body.get("usage") if isinstance(body, dict) else None
        if not isinstance(usage, dict):
            continue
        seen = True
        input_tokens += _count(usage, "prompt_tokens", "input_tokens")
        output_tokens += _count(usage, "completion_tokens", "output_tokens")
        for key, field in (("prompt_tokens_details", "cached_tokens"), ("input_tokens_details", "cached_tokens")):
            details = usage.get(key)
            cached += _count(details, field) if isinstance(details, dict) else 0
        for key in ("completion_tokens_details", "output_tokens_details"):
            details = usage.get(key)
            reasoning += _count(details, "reasoning_tokens") if isinstance(details, dict) else 0
    if not seen:
        return None
    return BatchUsage.model_validate(
        {
            "input_tokens": input_tokens,
            "input_tokens_details": {"cached_tokens": cached},
            "output_tokens": output_tokens,
            "output_tokens_details": {"reasoning_tokens": reasoning},
            "total_tokens": input_tokens + output_tokens,
        }
    )


class BatchesRouter(BatchesApi):
    def __init__(
        self,
        store: BatchStore,
        files: FilesRouter,
        jobs: JobRunner,
        endpoints: Mapping[str, Endpoint],
        routers: Callable[[str], object | None],
        *,
        concurrency: int = DEFAULT_CONCURRENCY,
        max_lines: int = MAX_LINES,
        charger: BackgroundCharger | None = None,
        native: Mapping[str, NativeBatchProvider] | None = None,
        resolve_model: ModelResolver | None = None,
        chat_needs_underlay: bool = False,
        poll_seconds: float = DEFAULT_POLL_SECONDS,
    ) -> None:
        """``native``: the inference providers (by id) with their own Batches API; ``resolve_model``: the
        routing table's look-up, as the batch's owner; ``chat_needs_underlay``: chat lines must run here
        (default guardrails, or every chat completion stored); ``poll_seconds``: a native batch's poll."""
        self.store = store
        self.files = files
        self.jobs = jobs
        self.endpoints = endpoints
        self.routers = routers
        self.concurrency = max(1, concurrency)
        self.max_lines = max(1, min(max_lines, MAX_LINES))
        self.charger = charger
        self.native = dict(native or {})
        self.resolve_model = resolve_model
        self.chat_needs_underlay = chat_needs_underlay
        self.poll_seconds = max(0.01, poll_seconds)

    async def initialize(self) -> None:
        await self.store.initialize()
        await self.jobs.initialize()
        self.jobs.register(JOB_KIND, self.run, on_failure=self.on_failure, max_attempts=5, lane="bulk")

    async def shutdown(self) -> None:
        if self.charger is not None:
            await self.charger.close()

    # -- routes -------------------------------------------------------------------------------------

    async def create_batch(self, params: CreateBatchRequest) -> Batch:
        if params.endpoint not in self.endpoints:
            raise InvalidRequestError(
                f"This server does not serve {params.endpoint} (the API behind it is not in the run config's "
                "apis), so it cannot batch it.",
                param="endpoint",
            )
        source = await self.files.get_file(params.input_file_id)  # the caller's file, or 404
        if source.purpose != "batch":
            raise InvalidRequestError(
                f"File '{source.id}' was uploaded with purpose '{source.purpose}'; a batch's input file needs "
                "purpose 'batch'.",
                param="input_file_id",
            )
        now = _now()
        batch = Batch(
            id=new_batch_id(),
            endpoint=params.endpoint,
            input_file_id=source.id,
            completion_window=params.completion_window,
            status="validating",
            created_at=now,
            expires_at=now + WINDOW_SECONDS,
            metadata=params.metadata,
        )
        # The job's id is stored with the batch before the job exists: a worker may finish the job before
        # this call returns, and nothing written here afterwards may overwrite what it wrote.
        job_id = f"job_{secrets.token_hex(12)}"
        await self.store.create(batch, job_id)
        payload: dict[str, Any] = {"batch_id": batch.id}
        if params.output_expires_after is not None:
            # Not part of OpenAI's batch object, so it travels with the job that writes the files.
            payload["output_expires_after_seconds"] = params.output_expires_after.seconds
        await self.jobs.submit(JOB_KIND, payload, reference=batch.id, job_id=job_id)
        return batch

    async def retrieve_batch(self, batch_id: str) -> Batch:
        batch, _ = await self.store.get(batch_id)
        return batch

    async def list_batches(self, query: ListQuery) -> BatchList:
        batches, has_more = await self.store.page(after=query.after, limit=query.limit, order=query.order)
        return BatchList(
            data=batches,
            first_id=batches[0].id if batches else None,
            last_id=batches[-1].id if batches else None,
            has_more=has_more,
        )

    async def cancel_batch(self, batch_id: str) -> Batch:
        batch, job_id = await self.store.get(batch_id, "update")
        if batch.status in TERMINAL or batch.status == "cancelling":
            if batch.status != "cancelling" and batch.status != "cancelled":
                raise InvalidRequestError(
                    f"Batch '{batch_id}' is already {batch.status}; only an unfinished batch can be cancelled.",
                    param="batch_id",
                    code="batch_not_cancellable",
                )
            return batch
        batch = batch.model_copy(update={"status": "cancelling", "cancelling_at": _now()})
        await self.store.save(batch, unless=TERMINAL)
        upstream = await self.store.upstream(batch_id)
        if upstream is not None:  # a native batch: its job ends it once the upstream says it stopped
            await self._cancel_upstream(upstream)
            batch, _ = await self.store.get(batch_id)
            return batch
        if job_id is not None:
            job = await self.jobs.cancel(job_id)
            if job.status == "cancelled":  # it never started: nothing will finish it but us
                batch = await self._end_cancelled(batch)
        batch, _ = await self.store.get(batch_id)
        return batch

    # -- the job -------------------------------------------------------------------------------------

    async def run(self, ctx: JobContext) -> dict[str, Any]:
        """Check every line, run the unfinished ones, write the output files; resumable at any point."""
        batch_id = str(ctx.job.payload["batch_id"])
        batch, _ = await self.store.get(batch_id)
        if batch.status in TERMINAL:
            return {"batch_id": batch_id, "status": batch.status}
        upstream = await self.store.upstream(batch_id)
        if upstream is not None:
            return await self._run_native(ctx, batch, upstream, None)
        lines, errors = await self._read_lines(batch)
        batch, _ = await self.store.get(batch_id)  # a cancel may have landed while the lines were read
        if errors:
            failed = batch.model_copy(
                update={"status": "failed", "failed_at": _now(), "errors": BatchErrors(data=errors[:1000])}
            )
            await self.store.save(failed, unless=TERMINAL)
            return {"batch_id": batch_id, "status": "failed"}
        models = {line.body.get("model") for line in lines}
        if len(models) == 1 and isinstance(only := next(iter(models)), str):
            batch = batch.model_copy(update={"model": only})  # as OpenAI reports it: the one model asked for
        done = await self.store.finished_lines(batch_id)
        plan = None if done else await self._native_plan(batch, lines)
        if plan is not None:
            try:
                await ctx.checkpoint()  # a cancel that came while the lines were read: nothing was sent yet
            except JobCancelled:
                current, _ = await self.store.get(batch_id)
                await self._end_cancelled(current, _expiry(ctx.job))
                raise
            upstream = UpstreamBatch(provider_id=plan.provider_id, models=plan.models)
            await self.store.save_upstream(batch_id, upstream)  # from here on the batch is native, for good
            counted = batch.model_copy(update={"request_counts": BatchRequestCounts(total=len(lines))})
            await self.store.save(counted, unless=(*TERMINAL, "cancelling"))
            return await self._run_native(ctx, batch, upstream, lines)
        if batch.status == "validating":
            batch = batch.model_copy(update={"status": "in_progress", "in_progress_at": _now()})
        batch = self._counted(batch, len(lines), done)
        await self.store.save(batch, unless=(*TERMINAL, "cancelling"))
        try:
            await self._run_lines(ctx, batch, [ln for ln in lines if ln.number not in done], done)
        except JobCancelled:
            current, _ = await self.store.get(batch_id)
            await self._end_cancelled(current, _expiry(ctx.job))
            raise
        batch, _ = await self.store.get(batch_id)
        if batch.status == "cancelling":
            await self._end_cancelled(batch, _expiry(ctx.job))
            return {"batch_id": batch_id, "status": "cancelled"}
        expired = self._expired(batch)
        batch = batch.model_copy(update={"status": "finalizing", "finalizing_at": _now()})
        await self.store.save(batch, unless=(*TERMINAL, "cancelling"))
        batch = await self._write_files(batch, len(lines), _expiry(ctx.job))
        end = "expired" if expired else "completed"
        batch = batch.model_copy(update={"status": end, f"{end}_at": _now()})
        await self.store.save(batch, unless=TERMINAL)
        return {"batch_id": batch_id, "status": end}

    @staticmethod
    def _expired(batch: Batch) -> bool:
        return batch.expires_at is not None and _now() > batch.expires_at

    async def on_failure(self, job: Job) -> None:
        """The job ended without finishing the batch (gave up, or cancelled while queued): say so on the batch."""
        batch_id = str(job.payload.get("batch_id", ""))
        try:
            batch, _ = await self.store.get(batch_id)
        except UnderlayError:
            return
        if batch.status in TERMINAL:
            return
        upstream = await self.store.upstream(batch_id)
        if upstream is not None and upstream.batch_id is not None:
            await self._cancel_upstream(upstream)  # nobody follows it any more: do not leave it running
        if batch.status == "cancelling":
            await self._end_cancelled(batch, _expiry(job))
            return
        error = job.error or {}
        message = error.get("message") or "the batch's job ended before the batch finished"
        code = str(error.get("code") or "")
        failed = batch.model_copy(
            update={
                "status": "failed",
                "failed_at": _now(),
                "errors": BatchErrors(
                    data=[
                        BatchError(code=code if code.startswith("upstream_") else "batch_failed", message=str(message))
                    ]
                ),
            }
        )
        await self.store.save(failed, unless=TERMINAL)

    async def _end_cancelled(self, batch: Batch, expires_after: int | None = None) -> Batch:
        """Write the finished lines' files and mark the batch ``cancelled``."""
        done = await self.store.finished_lines(batch.id)
        total = batch.request_counts.total
        batch = await self._write_files(self._counted(batch, total, done), total, expires_after)
        batch = batch.model_copy(update={"status": "cancelled", "cancelled_at": _now()})
        await self.store.save(batch, unless=TERMINAL)
        return batch

    @staticmethod
    def _counted(batch: Batch, total: int, done: Mapping[int, tuple[bool, dict[str, Any]]]) -> Batch:
        ok = sum(1 for good, _ in done.values() if good)
        counts = BatchRequestCounts(total=total, completed=ok, failed=len(done) - ok)
        return batch.model_copy(update={"request_counts": counts, "usage": _usage(done.values())})

    async def _read_lines(self, batch: Batch) -> tuple[list[Line], list[BatchError]]:
        """Parse and check every line; errors name their 1-based line number."""
        endpoint = self.endpoints.get(batch.endpoint)
        if endpoint is None:
            return [], [BatchError(code="invalid_endpoint", message=f"{batch.endpoint} is not served here")]
        body_model = endpoint.route.body
        assert body_model is not None  # every batchable route takes a body
        raw = await self._input_bytes(batch.input_file_id)
        if raw is None:
            return [], [
                BatchError(
                    code="file_too_large",
                    param="input_file_id",
                    message=f"The input file is over {MAX_INPUT_BYTES} bytes; split it into several batches.",
                )
            ]
        lines: list[Line] = []
        errors: list[BatchError] = []
        seen: set[str] = set()

        def bad(number: int, code: str, message: str, param: str | None = None) -> None:
            errors.append(BatchError(code=code, line=number, message=message, param=param))

        number = 0
        for number, text in enumerate(raw.split(b"\n"), start=1):
            if not text.strip():
                continue
            if len(lines) + len(errors) >= self.max_lines:
                bad(number, "too_many_requests", f"A batch holds at most {self.max_lines} requests on this server.")
                break
            if len(text) > MAX_LINE_BYTES:
                bad(number, "line_too_large", f"The line is over {MAX_LINE_BYTES} bytes.")
                continue
            try:
                item = json.loads(text)
            except (ValueError, UnicodeDecodeError):
                bad(number, "invalid_json_line", "The line is not valid JSON; each line must be one JSON object.")
                continue
            if not isinstance(item, dict):
                bad(number, "invalid_json_line", "The line must be a JSON object with custom_id, method, url and body.")
                continue
            custom_id = item.get("custom_id")
            if not isinstance(custom_id, str) or not custom_id or len(custom_id) > MAX_CUSTOM_ID_CHARS:
                bad(
                    number,
                    "invalid_custom_id",
                    f"custom_id must be a string of 1 to {MAX_CUSTOM_ID_CHARS} characters.",
                    "custom_id",
                )
                continue
            if custom_id in seen:
                bad(
                    number,
                    "duplicate_custom_id",
                    f"custom_id {custom_id[:64]!r} is used by an earlier line.",
                    "custom_id",
                )
                continue
            seen.add(custom_id)
            if item.get("method") != "POST":
                bad(number, "invalid_method", 'method must be "POST".', "method")
                continue
            if item.get("url") != batch.endpoint:
                url = str(item.get("url"))[:100]
                bad(
                    number,
                    "mismatched_endpoint",
                    f"url {url!r} differs from the batch's endpoint {batch.endpoint}.",
                    "url",
                )
                continue
            body = item.get("body")
            if not isinstance(body, dict):
                bad(number, "invalid_body", "body must be a JSON object (the request body).", "body")
                continue
            if body.get("stream"):
                bad(number, "invalid_body", "A batched request cannot stream; remove stream.", "body.stream")
                continue
            try:
                params = body_model.model_validate(body)
            except ValidationError as exc:
                field, message = _first_error(exc)
                bad(number, "invalid_body", f"{field}: {message}", field)
                continue
            lines.append(Line(number, custom_id, params, body))
        if not lines and not errors:
            bad(max(number, 1), "empty_file", "The input file has no requests.")
        return lines, errors

    async def _input_bytes(self, file_id: str) -> bytes | None:
        chunks: list[bytes] = []
        size = 0
        async for chunk in await self.files.open_content(file_id):
            size += len(chunk)
            if size > MAX_INPUT_BYTES:
                return None
            chunks.append(chunk)
        return b"".join(chunks)

    async def _run_lines(
        self, ctx: JobContext, batch: Batch, todo: list[Line], done: Mapping[int, tuple[bool, dict[str, Any]]]
    ) -> None:
        """Run ``todo`` with at most ``concurrency`` in flight, checking for cancellation between lines.

        The counts are kept here (started from the stored lines) and written every ``FLUSH_SECONDS``,
        so a line costs the same whether it is the first or the 50,000th; the final counts are recounted
        from the stored records. Once the window has passed, the lines not yet started are recorded as
        expired instead of run.
        """
        endpoint = self.endpoints[batch.endpoint]
        queue = iter(todo)
        total = batch.request_counts.total or 1
        ok_count = sum(1 for good, _ in done.values() if good)
        failed_count = len(done) - ok_count
        lock = asyncio.Lock()

        flushed_at = time.monotonic()

        async def worker() -> None:
            nonlocal ok_count, failed_count, flushed_at
            while True:
                await ctx.checkpoint()  # a cancel sets the job's flag: raises here, between lines
                async with lock:
                    line = next(queue, None)
                if line is None:
                    return
                if self._expired(batch):
                    ok, record = False, self._expired_record(line)
                else:
                    ok, record = await self._call(endpoint, line)
                await self.store.record_line(batch.id, line.number, ok, record)
                async with lock:
                    ok_count += ok
                    failed_count += not ok
                    if time.monotonic() - flushed_at < FLUSH_SECONDS:
                        continue
                    flushed_at = time.monotonic()
                    counts = BatchRequestCounts(total=total, completed=ok_count, failed=failed_count)
                    latest, _ = await self.store.get(batch.id)
                    # Never over a cancel that landed since the read (it ends the batch with fresh counts).
                    await self.store.save(
                        latest.model_copy(update={"request_counts": counts}), unless=(*TERMINAL, "cancelling")
                    )
                await ctx.checkpoint((ok_count + failed_count) / total)

        workers = min(self.concurrency, len(todo))
        results = await asyncio.gather(*(worker() for _ in range(workers)), return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result

    @staticmethod
    def _expired_record(line: Line) -> dict[str, Any]:
        """OpenAI's line for a request the window ran out on: no response, an ``error``."""
        return {
            "id": f"batch_req_{secrets.token_hex(16)}",
            "custom_id": line.custom_id,
            "response": None,
            "error": {
                "code": "batch_expired",
                "message": "The batch's completion window ended before this request ran.",
            },
        }

    async def _call(self, endpoint: Endpoint, line: Line) -> tuple[bool, dict[str, Any]]:
        """One line through the live router; its output record in OpenAI's line format."""
        request_id = f"req_{secrets.token_hex(16)}"
        router = self.routers(endpoint.api)
        status = 200
        try:
            if router is None:
                raise InvalidRequestError(f"The {endpoint.api} API is off on this server.")
            handler = getattr(router, endpoint.route.handler.__name__)
            if self.charger is None:
                result = await handler(params=line.params)
            else:  # the line's tokens count against the owner's budget, as the same request sent live
                async with self.charger.metering():
                    result = await handler(params=line.params)
            if hasattr(result, "__aiter__") and not isinstance(result, BaseModel | dict | list):
                raise InvalidRequestError("A batched request cannot stream; remove stream.", param="body.stream")
            body: Any = to_jsonable_python(result, by_alias=True)
        except UnderlayError as exc:
            status = exc.status_code
            body = exc.to_envelope()
        except (JobCancelled, asyncio.CancelledError, JobError):
            raise
        except Exception as exc:  # an unexpected failure of one line must not lose the others
            status = 500
            body = {
                "error": {
                    "message": f"{type(exc).__name__}: {exc}"[:500],
                    "type": "server_error",
                    "param": None,
                    "code": None,
                }
            }
        record = {
            "id": f"batch_req_{secrets.token_hex(16)}",
            "custom_id": line.custom_id,
            "response": {"status_code": status, "request_id": request_id, "body": body},
            "error": None,
        }
        return status < 400, record

    async def _write_files(self, batch: Batch, total: int, expires_after: int | None = None) -> Batch:
        """The output (succeeded lines) and error (failed lines) files, in line order, once each."""
        if batch.output_file_id or batch.error_file_id:
            return batch
        done = await self.store.finished_lines(batch.id)
        good = [record for number, (ok, record) in sorted(done.items()) if ok]
        bad = [record for number, (ok, record) in sorted(done.items()) if not ok]
        update: dict[str, Any] = {}
        if good:
            update["output_file_id"] = (await self._file(f"{batch.id}_output.jsonl", good, expires_after)).id
        if bad:
            update["error_file_id"] = (await self._file(f"{batch.id}_error.jsonl", bad, expires_after)).id
        return self._counted(batch.model_copy(update=update), total, done)

    async def _file(self, name: str, records: list[dict[str, Any]], expires_after: int | None) -> Any:
        async def chunks() -> AsyncIterator[bytes]:
            for record in records:
                yield json.dumps(record, separators=(",", ":")).encode() + b"\n"

        return await self.files.create_file(name, "batch_output", chunks(), expires_after_seconds=expires_after)

    # -- native pass-through ------------------------------------------------------------------------

    async def _native_plan(self, batch: Batch, lines: list[Line]) -> NativePlan | None:
        """Whether the batch goes to a provider's own Batches API, and with which model names; else ``None``.

        The rule: the endpoint is one an upstream can batch, every line's model resolves (as the batch's
        owner) to a model of the right type on one and the same provider, that provider has a native
        Batches API and says yes for the endpoint now, and no line needs Underlay itself (a chat line
        with guardrails or ``store``, or any chat line when default guardrails or storing every chat
        completion are configured), and the provider accepts the lines as one upstream batch (its format
        can carry each of them). Anything else runs inline, where each line gets its own answer.
        """
        if not self.native or self.resolve_model is None or batch.endpoint not in NATIVE_BATCH_ENDPOINTS:
            return None
        chat = batch.endpoint == "/v1/chat/completions"
        if chat and self.chat_needs_underlay:
            return None
        expected = ModelType.embedding if batch.endpoint == "/v1/embeddings" else ModelType.llm
        models: dict[str, str] = {}
        provider_id: str | None = None
        for line in lines:
            if chat and ("guardrails" in line.body or line.body.get("store")):
                return None
            name = line.body.get("model")
            if not isinstance(name, str):
                return None
            if name in models:
                continue
            try:
                model = await self.resolve_model(name)
            except UnderlayError:  # unknown or hidden: inline answers that line with its 404
                return None
            if model.model_type != expected or model.provider_id not in self.native:
                return None
            if provider_id is not None and model.provider_id != provider_id:
                return None  # a batch mixing providers runs here: one upstream batch per batch
            provider_id = model.provider_id
            models[name] = model.provider_resource_id
        if provider_id is None or not self.native[provider_id].native_batches_for(batch.endpoint):
            return None
        requests = [(line.custom_id, {**line.body, "model": models[str(line.body["model"])]}) for line in lines]
        if not self.native[provider_id].native_batch_accepts(batch.endpoint, requests):
            return None  # lines the upstream's batch format cannot carry: inline answers each
        return NativePlan(provider_id, models)

    async def _run_native(
        self, ctx: JobContext, batch: Batch, upstream: UpstreamBatch, lines: list[Line] | None
    ) -> dict[str, Any]:
        """One run of a native batch's job: submit it if that is not done, then poll once (and defer)."""
        provider = self.native.get(upstream.provider_id)
        if provider is None:
            message = (
                f"The batch was passed to provider '{upstream.provider_id}', which this server no longer has; "
                f"restore that provider to collect upstream batch {upstream.batch_id or '(not created)'}."
            )
            return await self._fail(batch, "native_provider_missing", message)
        if upstream.batch_id is None:
            batch, _ = await self.store.get(batch.id)
            if batch.status == "cancelling":  # nothing runs upstream yet: end it here
                await self._end_cancelled(batch, _expiry(ctx.job))
                return {"batch_id": batch.id, "status": "cancelled"}
            try:
                await self._submit_native(provider, batch, upstream, lines)
            except UnderlayError as exc:
                if _transient(exc):  # retried by the job system, then failed with this message
                    raise RetryableJobError("upstream_unavailable", exc.message, delay=self.poll_seconds) from None
                return await self._fail(batch, exc.code or "upstream_error", exc.message)
        return await self._poll_native(ctx, provider, batch.id, upstream)

    async def _submit_native(
        self, provider: NativeBatchProvider, batch: Batch, upstream: UpstreamBatch, lines: list[Line] | None
    ) -> None:
        """Upload the input and create the upstream batch, storing each id before the next call.

        A create that may have reached the upstream (``create_attempted``) is looked up by its input file
        before any new create, so a crash or timeout in the middle never makes a second upstream batch.
        The input is rendered again from the checked lines after a restart (the create call of an upstream
        with no file upload carries it).
        """
        if lines is None:
            lines, errors = await self._read_lines(batch)
            if errors:
                message = "The input file changed after it was checked; create the batch again."
                raise JobError("batch_failed", message)
        content = _native_input(batch.endpoint, lines, upstream.models)
        if upstream.input_file_id is None:
            upstream.input_file_id = await provider.upload_native_batch_input(f"{batch.id}.jsonl", content)
            await self.store.save_upstream(batch.id, upstream)
        created = None
        if upstream.create_attempted:
            created = await provider.find_native_batch(upstream.input_file_id)
        if created is None:
            latest, _ = await self.store.get(batch.id)
            if latest.status == "cancelling":
                return  # the poll ends it: no upstream batch, nothing to cancel
            upstream.create_attempted = True
            await self.store.save_upstream(batch.id, upstream)
            created = await provider.create_native_batch(
                upstream.input_file_id, batch.endpoint, batch.completion_window, batch.metadata, content
            )
        upstream.batch_id = created.id
        await self.store.save_upstream(batch.id, upstream)
        log.info("batch %s: passed to provider %s as upstream batch %s", batch.id, upstream.provider_id, created.id)

    async def _poll_native(
        self, ctx: JobContext, provider: NativeBatchProvider, batch_id: str, upstream: UpstreamBatch
    ) -> dict[str, Any]:
        """Ask the upstream once; mirror its progress, finish the batch if it ended, else defer the job."""
        batch, _ = await self.store.get(batch_id)
        if batch.status in TERMINAL:
            return {"batch_id": batch_id, "status": batch.status}
        if upstream.batch_id is None:  # cancelled before the create
            await self._end_cancelled(batch, _expiry(ctx.job))
            return {"batch_id": batch_id, "status": "cancelled"}
        if batch.status == "cancelling" and not upstream.cancel_sent:
            if await self._cancel_upstream(upstream):
                upstream.cancel_sent = True
                await self.store.save_upstream(batch_id, upstream)
        try:
            remote = await provider.retrieve_native_batch(upstream.batch_id)
        except UnderlayError as exc:
            now = _now()
            past_window = batch.expires_at is not None and now > batch.expires_at + POLL_GRACE_SECONDS
            if not _transient(exc) or past_window:
                message = f"{exc.message} (while following upstream batch {upstream.batch_id})"
                return await self._fail(batch, exc.code or "upstream_error", message)
            log.warning("batch %s: polling upstream batch %s failed: %s", batch_id, upstream.batch_id, exc.message)
            if upstream.failing_since is None:
                upstream.failing_since = now
                await self.store.save_upstream(batch_id, upstream)
            raise JobDeferred(self.poll_seconds) from None
        if upstream.failing_since is not None:
            upstream.failing_since = None
            await self.store.save_upstream(batch_id, upstream)
        if remote.status in TERMINAL:
            return await self._finish_native(ctx, provider, batch, upstream, remote)
        update: dict[str, Any] = {"usage": remote.usage or batch.usage}
        if remote.request_counts.total:
            update["request_counts"] = remote.request_counts
        guard: tuple[str, ...] = TERMINAL
        if batch.status != "cancelling":
            guard = (*TERMINAL, "cancelling")  # never over a cancel that landed since the read
            if remote.status != batch.status:
                update["status"] = remote.status
                stamp = f"{remote.status}_at"
                if stamp in Batch.model_fields and getattr(batch, stamp) is None:
                    update[stamp] = _now()
        await self.store.save(batch.model_copy(update=update), unless=guard)
        raise JobDeferred(self.poll_seconds)

    async def _finish_native(
        self, ctx: JobContext, provider: NativeBatchProvider, batch: Batch, upstream: UpstreamBatch, remote: Batch
    ) -> dict[str, Any]:
        """The upstream batch ended: copy its files here (names mapped back) and end the local batch alike."""
        pid = upstream.provider_id
        if remote.status == "failed":
            reported = remote.errors.data if remote.errors is not None else []
            errors = [
                BatchError(
                    code=e.code or "upstream_batch_failed",
                    line=e.line,
                    param=e.param,
                    message=f"Provider '{pid}': {e.message or 'the upstream failed the batch'}",
                )
                for e in reported[:1000]
            ] or [
                BatchError(
                    code="upstream_batch_failed",
                    message=f"Provider '{pid}' failed upstream batch {remote.id} without saying why.",
                )
            ]
            update = {"status": "failed", "failed_at": _now(), "errors": BatchErrors(data=errors)}
            if remote.request_counts.total:
                update["request_counts"] = remote.request_counts
            await self.store.save(batch.model_copy(update=update), unless=TERMINAL)
            return {"batch_id": batch.id, "status": "failed"}
        if batch.status not in ("cancelling", "finalizing"):
            batch = batch.model_copy(update={"status": "finalizing", "finalizing_at": _now()})
            await self.store.save(batch, unless=(*TERMINAL, "cancelling"))
        try:
            batch = await self._copy_native_files(provider, batch, remote, _expiry(ctx.job), pid)
        except UnderlayError as exc:
            if _transient(exc):
                log.warning("batch %s: reading upstream files failed: %s", batch.id, exc.message)
                raise JobDeferred(self.poll_seconds) from None
            return await self._fail(batch, exc.code or "upstream_error", exc.message)
        if remote.request_counts.total:
            batch = batch.model_copy(update={"request_counts": remote.request_counts})
        if remote.usage is not None:
            batch = batch.model_copy(update={"usage": remote.usage})
        if self.charger is not None and batch.usage is not None and not upstream.charged:
            upstream.charged = True  # at most once, even if the job dies right after
            await self.store.save_upstream(batch.id, upstream)
            await self.charger.charge(batch.usage.total_tokens)
        end = remote.status
        batch = batch.model_copy(update={"status": end, f"{end}_at": _now()})
        await self.store.save(batch, unless=TERMINAL)
        return {"batch_id": batch.id, "status": end}

    async def _copy_native_files(
        self, provider: NativeBatchProvider, batch: Batch, remote: Batch, expires_after: int | None, provider_id: str
    ) -> Batch:
        """The upstream output and error files as local files of the batch's owner, in the upstream's order.

        Each line keeps its ``custom_id``; the ``model`` in a response body becomes the name that line's
        request used (the upstream names its own model, often a dated snapshot), and an error line's
        message names the provider (``provider_id``), as an inline line's does. ``usage`` is summed from
        the copied lines, for an upstream whose batch object does not report it.
        """
        if batch.output_file_id or batch.error_file_id:
            return batch  # copied by an earlier run of the job
        names = await self._client_models(batch)
        seen: list[tuple[bool, dict[str, Any]]] = []
        update: dict[str, Any] = {}
        for kind, file_id in (("output", remote.output_file_id), ("error", remote.error_file_id)):
            if not file_id:
                continue
            source: str = file_id

            async def chunks(source: str = source, ok: bool = kind == "output") -> AsyncIterator[bytes]:
                async for record in provider.read_native_batch_file(source):
                    _name_back(record, names)
                    if not ok:
                        _name_provider(record, provider_id)
                    seen.append((ok, {"response": _usage_only(record)}))
                    yield json.dumps(record, separators=(",", ":")).encode() + b"\n"

            stored = await self.files.create_file(
                f"{batch.id}_{kind}.jsonl", "batch_output", chunks(), expires_after_seconds=expires_after
            )
            update[f"{kind}_file_id"] = stored.id
        usage = _usage(seen)
        if usage is not None:
            update["usage"] = usage
        return batch.model_copy(update=update)

    async def _client_models(self, batch: Batch) -> dict[str, str]:
        """custom_id → the model name its line used (empty if the input file is gone: names stay upstream's)."""
        try:
            lines, _ = await self._read_lines(batch)
        except UnderlayError:
            return {}
        return {line.custom_id: name for line in lines if isinstance(name := line.body.get("model"), str)}

    async def _cancel_upstream(self, upstream: UpstreamBatch) -> bool:
        """Ask the upstream to cancel; ``True`` once it took the request (or the batch is ending anyway)."""
        provider = self.native.get(upstream.provider_id)
        if provider is None or upstream.batch_id is None:
            return False
        try:
            await provider.cancel_native_batch(upstream.batch_id)
        except (InvalidRequestError, ConflictError):
            return True  # already ending upstream: the next poll says how
        except UnderlayError as exc:
            log.warning("cancelling upstream batch %s failed (asked again later): %s", upstream.batch_id, exc.message)
            return False
        return True

    async def _fail(self, batch: Batch, code: str, message: str) -> dict[str, Any]:
        error = BatchError(code=code, message=message)
        failed = batch.model_copy(update={"status": "failed", "failed_at": _now(), "errors": BatchErrors(data=[error])})
        await self.store.save(failed, unless=TERMINAL)
        return {"batch_id": batch.id, "status": "failed"}


def _transient(exc: UnderlayError) -> bool:
    """An upstream failure worth asking again about later (unreachable, busy, timed out, 5xx)."""
    if isinstance(exc, ServiceUnavailableError | UpstreamTimeoutError | RateLimitedError):
        return True
    return isinstance(exc, UpstreamError) and exc.code != "upstream_auth_failed"


def _native_input(endpoint: str, lines: list[Line], models: Mapping[str, str]) -> bytes:
    """The JSONL sent upstream: each line as the client wrote it, its ``model`` renamed to the provider's."""
    out = bytearray()
    for line in lines:
        body = dict(line.body)
        name = body.get("model")
        if isinstance(name, str):
            body["model"] = models.get(name, name)
        item = {"custom_id": line.custom_id, "method": "POST", "url": endpoint, "body": body}
        out += json.dumps(item, separators=(",", ":")).encode() + b"\n"
    return bytes(out)


def _name_back(record: dict[str, Any], names: Mapping[str, str]) -> None:
    """Set the response body's ``model`` to the name the line's request used (in place)."""
    name = names.get(str(record.get("custom_id")))
    response = record.get("response")
    body = response.get("body") if isinstance(response, dict) else None
    if name is not None and isinstance(body, dict) and "model" in body:
        body["model"] = name


def _name_provider(record: dict[str, Any], provider_id: str) -> None:
    """Start an error line's messages with the provider's name (in place), unless they already say it."""
    response = record.get("response")
    body = response.get("body") if isinstance(response, dict) else None
    for holder in (body.get("error") if isinstance(body, dict) else None, record.get("error")):
        if isinstance(holder, dict) and isinstance(message := holder.get("message"), str):
            if not message.startswith(f"Provider '{provider_id}'"):
                holder["message"] = f"Provider '{provider_id}': {message}"


def _usage_only(record: Mapping[str, Any]) -> dict[str, Any]:
    """Just what :func:`_usage` reads of a line (its body's ``usage``), so a copied file is not held whole."""
    response = record.get("response")
    body = response.get("body") if isinstance(response, dict) else None
    return {"body": {"usage": body.get("usage")}} if isinstance(body, dict) else {}
