"""The batches router: the Batches API over its store, the files API and the job system.

Why a batch is a job: a batch can take hours, must survive a restart and must not hold a request open.
Creating one stores the batch (``validating``) and submits a ``batch.run`` job in the ``bulk`` lane; the
job checks every line before any work starts (a bad line fails the batch with its line number in
``errors.data``), then runs the lines with bounded concurrency and records each finished line in the
store at once. A resumed job reads those records and runs only the lines that have none, so a restart
never repeats or loses a finished line. The job runs as the batch's owner, and each line goes through
the router that serves the endpoint live (found in the route table by the line's ``url``), so access
control, model resolution and telemetry apply to it exactly as to a live request.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError
from pydantic_core import to_jsonable_python

from underlay.api.batches import (
    MAX_CUSTOM_ID_CHARS,
    MAX_LINE_BYTES,
    MAX_LINES,
    Batch,
    BatchError,
    BatchErrors,
    BatchesApi,
    BatchList,
    BatchRequestCounts,
    CreateBatchRequest,
)
from underlay.api.errors import InvalidRequestError, UnderlayError
from underlay.api.pagination import ListQuery
from underlay.api.routes import Route
from underlay.core.jobs import Job, JobCancelled, JobContext, JobError, JobRunner
from underlay.core.routers.files import FilesRouter
from underlay.core.stores.batches import BatchStore, new_batch_id

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


def _now() -> int:
    return int(time.time())


def _first_error(exc: ValidationError) -> tuple[str, str]:
    """The first pydantic error as (field path, message), naming the field inside ``body``."""
    err = exc.errors()[0]
    path = ".".join(str(p) for p in err.get("loc", ()))
    return f"body.{path}" if path else "body", str(err.get("msg", "invalid value"))


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
    ) -> None:
        self.store = store
        self.files = files
        self.jobs = jobs
        self.endpoints = endpoints
        self.routers = routers
        self.concurrency = max(1, concurrency)

    async def initialize(self) -> None:
        await self.store.initialize()
        await self.jobs.initialize()
        self.jobs.register(JOB_KIND, self.run, on_failure=self.on_failure, max_attempts=5, lane="bulk")

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
        await self.jobs.submit(JOB_KIND, {"batch_id": batch.id}, reference=batch.id, job_id=job_id)
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
        lines, errors = await self._read_lines(batch)
        batch, _ = await self.store.get(batch_id)  # a cancel may have landed while the lines were read
        if errors:
            failed = batch.model_copy(
                update={"status": "failed", "failed_at": _now(), "errors": BatchErrors(data=errors[:1000])}
            )
            await self.store.save(failed, unless=TERMINAL)
            return {"batch_id": batch_id, "status": "failed"}
        done = await self.store.finished_lines(batch_id)
        if batch.status == "validating":
            batch = batch.model_copy(update={"status": "in_progress", "in_progress_at": _now()})
        batch = self._counted(batch, len(lines), done)
        await self.store.save(batch, unless=(*TERMINAL, "cancelling"))
        try:
            await self._run_lines(ctx, batch, [ln for ln in lines if ln.number not in done], done)
        except JobCancelled:
            current, _ = await self.store.get(batch_id)
            await self._end_cancelled(current)
            raise
        batch, _ = await self.store.get(batch_id)
        if batch.status == "cancelling":
            await self._end_cancelled(batch)
            return {"batch_id": batch_id, "status": "cancelled"}
        expired = self._expired(batch)
        batch = batch.model_copy(update={"status": "finalizing", "finalizing_at": _now()})
        await self.store.save(batch, unless=(*TERMINAL, "cancelling"))
        batch = await self._write_files(batch, len(lines))
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
        if batch.status == "cancelling":
            await self._end_cancelled(batch)
            return
        message = (job.error or {}).get("message") or "the batch's job ended before the batch finished"
        failed = batch.model_copy(
            update={
                "status": "failed",
                "failed_at": _now(),
                "errors": BatchErrors(data=[BatchError(code="batch_failed", message=str(message))]),
            }
        )
        await self.store.save(failed, unless=TERMINAL)

    async def _end_cancelled(self, batch: Batch) -> Batch:
        """Write the finished lines' files and mark the batch ``cancelled``."""
        done = await self.store.finished_lines(batch.id)
        total = batch.request_counts.total
        batch = await self._write_files(self._counted(batch, total, done), total)
        batch = batch.model_copy(update={"status": "cancelled", "cancelled_at": _now()})
        await self.store.save(batch, unless=TERMINAL)
        return batch

    @staticmethod
    def _counted(batch: Batch, total: int, done: Mapping[int, tuple[bool, dict[str, Any]]]) -> Batch:
        ok = sum(1 for good, _ in done.values() if good)
        counts = BatchRequestCounts(total=total, completed=ok, failed=len(done) - ok)
        return batch.model_copy(update={"request_counts": counts})

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
            if len(lines) + len(errors) >= MAX_LINES:
                bad(number, "too_many_requests", f"A batch holds at most {MAX_LINES} requests.")
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
            lines.append(Line(number, custom_id, params))
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

    async def _write_files(self, batch: Batch, total: int) -> Batch:
        """The output (succeeded lines) and error (failed lines) files, in line order, once each."""
        if batch.output_file_id or batch.error_file_id:
            return batch
        done = await self.store.finished_lines(batch.id)
        good = [record for number, (ok, record) in sorted(done.items()) if ok]
        bad = [record for number, (ok, record) in sorted(done.items()) if not ok]
        update: dict[str, Any] = {}
        if good:
            update["output_file_id"] = (await self._file(f"{batch.id}_output.jsonl", good)).id
        if bad:
            update["error_file_id"] = (await self._file(f"{batch.id}_error.jsonl", bad)).id
        return self._counted(batch.model_copy(update=update), total, done)

    async def _file(self, name: str, records: list[dict[str, Any]]) -> Any:
        async def chunks() -> AsyncIterator[bytes]:
            for record in records:
                yield json.dumps(record, separators=(",", ":")).encode() + b"\n"

        return await self.files.create_file(name, "batch_output", chunks())
