"""The evals router: OpenAI's Evals API over its store, the job system and the eval-run engine.

Why a run is a job: a run samples a model and asks judges for every row, which takes minutes to hours,
must survive a restart and must not hold a request open. Creating a run checks what can be checked at
once (the eval exists, the model-backed parts have their APIs, inline rows match the item schema, a file
exists), stores the run ``queued`` and submits an ``eval.run`` job in the ``bulk`` lane. The job reads the
rows (a file's rows are checked there; a bad one fails the run naming its row), then hands them to
:func:`underlay.core.eval_engine.run_rows`, which commits each row's output item before counting it, so
a resumed job (after ``kill -9``) grades only the rows that have none. The job runs as the run's owner and
every model call goes through the inference or responses router, so access control, quotas, guardrails
and telemetry apply to each row as to a live request.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING, Any

from underlay.api.errors import InvalidRequestError, UnderlayError
from underlay.api.evals import (
    MAX_ROWS,
    CompletionsRunDataSource,
    CreateEvalRequest,
    CreateRunRequest,
    CustomDataSourceConfig,
    DataSourceConfigOut,
    Eval,
    EvalDeleted,
    EvalError,
    EvalList,
    EvalListQuery,
    EvalRun,
    EvalRunDeleted,
    EvalRunList,
    EvalsApi,
    FileContentSource,
    FileIdSource,
    ItemReferenceMessages,
    LabelModelGrader,
    ModelUsage,
    OutputItem,
    OutputItemList,
    OutputItemListQuery,
    OutputItemSample,
    ResponsesRunDataSource,
    ResultCounts,
    RunListQuery,
    RunProgress,
    ScoreModelGrader,
    StoredCompletionsSource,
    StringCheckGrader,
    TemplateMessages,
    TestingCriteriaResult,
    TextSimilarityGrader,
    UpdateEvalRequest,
    message_text,
)
from underlay.api.inference import ChatCompletionListQuery, EmbeddingsRequest
from underlay.core.eval_engine import (
    Candidate,
    ChatCandidate,
    Counts,
    Grader,
    Limits,
    ResponsesCandidate,
    RowError,
    RowInput,
    RowOutcome,
    build_grader,
    run_rows,
)
from underlay.core.eval_engine.templates import references
from underlay.core.jobs import Job, JobCancelled, JobContext, JobRunner
from underlay.core.stores.evals import EvalStore, new_id

if TYPE_CHECKING:
    from jsonschema import Draft202012Validator  # type: ignore[import-untyped]

    from underlay.core.routers.files import FilesRouter
    from underlay.core.routers.inference import InferenceRouter
    from underlay.core.routers.responses import ResponsesRouter

JOB_KIND = "eval.run"
TERMINAL = ("completed", "failed", "canceled")
MAX_FILE_BYTES = 200_000_000
"""What a run's JSONL file may hold before reading stops."""

SAMPLE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "model": {"type": "string"},
        "choices": {"type": "array"},
        "output_text": {"type": "string"},
        "output_json": {"type": "object"},
        "output_tools": {"type": "array"},
    },
    "required": ["model", "output_text"],
}
LOGS_ITEM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "id": {"type": "string"},
        "model": {"type": "string"},
        "input": {"type": "array", "items": {"type": "object"}},
        "output": {"type": "string"},
        "metadata": {"type": "object"},
    },
    "required": ["input", "output"],
}


def _now() -> int:
    return int(time.time())


def _schema_of(config: Any) -> DataSourceConfigOut:
    """The JSON schema of a row as the eval reports it: ``item`` and, when runs sample, ``sample``."""
    if isinstance(config, CustomDataSourceConfig):
        properties: dict[str, Any] = {"item": config.item_schema}
        required = ["item"]
        if config.include_sample_schema:
            properties["sample"] = SAMPLE_SCHEMA
            required.append("sample")
        return DataSourceConfigOut(
            type="custom", schema={"type": "object", "properties": properties, "required": required}
        )
    schema = {
        "type": "object",
        "properties": {"item": LOGS_ITEM_SCHEMA, "sample": SAMPLE_SCHEMA},
        "required": ["item", "sample"],
    }
    return DataSourceConfigOut(type=config.type, schema=schema, metadata=config.metadata)


def _templates_of(criterion: Any) -> list[tuple[str, str]]:
    """(field, template) pairs of a criterion, for the namespace check at create time."""
    if isinstance(criterion, StringCheckGrader | TextSimilarityGrader):
        return [("input", criterion.input), ("reference", criterion.reference)]
    if isinstance(criterion, LabelModelGrader | ScoreModelGrader):
        out: list[tuple[str, str]] = []
        for index, message in enumerate(criterion.input):
            out.append((f"input[{index}].content", message_text(message.content)))
        return out
    return []


def _item_error(validator: Draft202012Validator, item: Any) -> str | None:
    """The first way ``item`` breaks the eval's item schema, naming the field; ``None`` when it matches."""
    error = next(iter(sorted(validator.iter_errors(item), key=lambda e: list(e.path))), None)
    if error is None:
        return None
    where = ".".join(str(p) for p in error.absolute_path)
    return f"{('item.' + where) if where else 'item'}: {error.message[:300]}"


class _Sink:
    """The engine's :class:`RowSink` for one run: output items in the store, live counts on the run."""

    def __init__(self, router: EvalsRouter, run: EvalRun) -> None:
        self.router = router
        self.store = router.store
        self.run = run

    async def done_rows(self) -> set[int]:
        return await self.store.done_rows(self.run.eval_id, self.run.id)

    async def finished(self) -> Counts:
        counts = Counts()
        for item in await self.store.items_of(self.run.eval_id, self.run.id):
            counts.add(item.status, [(r.name, r.passed) for r in item.results])
        return counts

    async def record(self, outcome: RowOutcome) -> None:
        sample = OutputItemSample()
        if outcome.sample is not None:
            sample = OutputItemSample.model_validate(outcome.sample.record())
        if outcome.error is not None:
            sample = sample.model_copy(update={"error": EvalError(**outcome.error)})
        item = OutputItem(
            id=new_id("outputitem"),
            created_at=_now(),
            eval_id=self.run.eval_id,
            run_id=self.run.id,
            status=outcome.status,
            datasource_item_id=outcome.row.index,
            datasource_item=outcome.row.item,
            results=[r.to_json() for r in outcome.results],  # type: ignore[misc]
            sample=sample,
        )
        await self.store.record_item(item)

    async def progress(self, counts: Counts, rows_per_second: float) -> None:
        run = self.router.counted(self.run, counts, rows_per_second)
        await self.store.save_run(run, only_if=("in_progress",))


class EvalsRouter(EvalsApi):
    def __init__(
        self,
        store: EvalStore,
        jobs: JobRunner,
        *,
        inference: InferenceRouter | None,
        responses: ResponsesRouter | None = None,
        files: FilesRouter | None = None,
        limits: Limits | None = None,
    ) -> None:
        self.store = store
        self.jobs = jobs
        self.inference = inference
        self.responses = responses
        self.files = files
        self.limits = limits or Limits()

    async def initialize(self) -> None:
        await self.store.initialize()
        await self.jobs.initialize()
        # Attempts are cheap (finished rows are never redone), so a run outlasts many restarts or lost leases.
        self.jobs.register(JOB_KIND, self.run_job, on_failure=self.on_failure, max_attempts=8, lane="bulk")

    # -- evals ----------------------------------------------------------------------------------------

    async def create_eval(self, params: CreateEvalRequest) -> Eval:
        config = params.data_source_config
        if isinstance(config, CustomDataSourceConfig):
            from jsonschema import Draft202012Validator  # on first use: about 30 ms of every start otherwise
            from jsonschema.exceptions import SchemaError  # type: ignore[import-untyped]

            try:
                Draft202012Validator.check_schema(config.item_schema)
            except SchemaError as exc:
                raise InvalidRequestError(
                    f"item_schema is not a valid JSON Schema: {exc.message[:300]}",
                    param="data_source_config.item_schema",
                ) from None
        for index, criterion in enumerate(params.testing_criteria):
            for field, template in _templates_of(criterion):
                for ref in references(template):
                    if ref.split(".")[0] not in ("item", "sample"):
                        raise InvalidRequestError(
                            f"{{{{{ref}}}}} refers to '{ref.split('.')[0]}'; "
                            "templates may refer to item.* and sample.*",
                            param=f"testing_criteria[{index}].{field}",
                        )
            if isinstance(criterion, LabelModelGrader | ScoreModelGrader) and self.inference is None:
                raise InvalidRequestError(
                    f"grader '{criterion.name}' asks a model, and the inference API is off on this server",
                    param=f"testing_criteria[{index}]",
                )
        eval_id = new_id("eval")
        evaluation = Eval(
            id=eval_id,
            created_at=_now(),
            name=params.name or eval_id,
            data_source_config=_schema_of(config),
            testing_criteria=params.testing_criteria,
            metadata=params.metadata,
        )
        await self.store.create_eval(evaluation)
        return evaluation

    async def retrieve_eval(self, eval_id: str) -> Eval:
        return await self.store.get_eval(eval_id)

    async def update_eval(self, eval_id: str, params: UpdateEvalRequest) -> Eval:
        evaluation = await self.store.get_eval(eval_id, "update")
        update: dict[str, Any] = {}
        if params.name is not None:
            update["name"] = params.name
        if "metadata" in params.model_fields_set:
            update["metadata"] = params.metadata
        evaluation = evaluation.model_copy(update=update)
        await self.store.save_eval(evaluation)
        return evaluation

    async def list_evals(self, query: EvalListQuery) -> EvalList:
        evals, has_more = await self.store.page_evals(
            after=query.after, limit=query.limit, order=query.order, order_by=query.order_by
        )
        return EvalList(
            data=evals,
            first_id=evals[0].id if evals else None,
            last_id=evals[-1].id if evals else None,
            has_more=has_more,
        )

    async def delete_eval(self, eval_id: str) -> EvalDeleted:
        await self.store.get_eval(eval_id, "delete")
        for run, job_id in await self.store.runs_of(eval_id):
            if job_id is not None and run.status not in TERMINAL:
                await self.jobs.cancel(job_id)
        await self.store.delete_eval(eval_id)
        return EvalDeleted(eval_id=eval_id)

    # -- runs -----------------------------------------------------------------------------------------

    async def create_run(self, eval_id: str, params: CreateRunRequest) -> EvalRun:
        evaluation = await self.store.get_eval(eval_id, "update")
        source = params.data_source
        if isinstance(source, CompletionsRunDataSource | ResponsesRunDataSource):
            if not source.model:
                raise InvalidRequestError(
                    f"a {source.type} run samples a model for each row; set data_source.model",
                    param="data_source.model",
                )
            if source.input_messages is None:
                raise InvalidRequestError(
                    f"a {source.type} run needs data_source.input_messages (a template, or an item_reference)",
                    param="data_source.input_messages",
                )
            needed = self.inference if source.type == "completions" else self.responses
            if needed is None:
                api = "inference" if source.type == "completions" else "responses"
                raise InvalidRequestError(
                    f"the {api} API is off on this server, so a {source.type} run cannot sample",
                    param="data_source.type",
                )
            self._check_message_refs(source.input_messages)
        if isinstance(source.source, StoredCompletionsSource) and self.inference is None:
            raise InvalidRequestError(
                "stored completions need the inference API, which is off", param="data_source.source"
            )
        if isinstance(source.source, FileIdSource):
            if self.files is None:
                raise InvalidRequestError(
                    "the files API is off on this server; give the rows inline", param="data_source.source"
                )
            await self.files.get_file(source.source.id)  # the caller's file, or 404
        if isinstance(source.source, FileContentSource):
            problem = self._check_rows(
                evaluation, [(r.item, f"data_source.source.content[{i}]") for i, r in enumerate(source.source.content)]
            )
            if problem is not None:
                where, message = problem
                raise InvalidRequestError(f"{where}.{message}", param=where)
        run_id = new_id("evalrun")
        run = EvalRun(
            id=run_id,
            eval_id=eval_id,
            name=params.name or run_id,
            model=getattr(source, "model", None) or "",
            status="queued",
            created_at=_now(),
            data_source=source,
            metadata=params.metadata,
            report_url=f"/v1/evals/{eval_id}/runs/{run_id}/output_items",
            per_testing_criteria_results=[
                TestingCriteriaResult(testing_criteria=c.name) for c in evaluation.testing_criteria
            ],
        )
        job_id = new_id("job")
        # The run names its job before the job exists: a worker may finish it before this call returns.
        await self.store.create_run(run, job_id)
        await self.jobs.submit(JOB_KIND, {"eval_id": eval_id, "run_id": run_id}, reference=run_id, job_id=job_id)
        return run

    @staticmethod
    def _check_message_refs(messages: TemplateMessages | ItemReferenceMessages) -> None:
        if isinstance(messages, ItemReferenceMessages):
            if not messages.item_reference.startswith("item."):
                raise InvalidRequestError(
                    "item_reference must name a field of the row, like 'item.messages'",
                    param="data_source.input_messages.item_reference",
                )
            return
        for index, message in enumerate(messages.template):
            for ref in references(message_text(message.content)):
                if not ref.startswith("item."):
                    raise InvalidRequestError(
                        f"{{{{{ref}}}}}: the candidate's prompt may refer to item.* only "
                        "(the sample does not exist yet)",
                        param=f"data_source.input_messages.template[{index}].content",
                    )

    @staticmethod
    def _check_rows(evaluation: Eval, rows: Sequence[tuple[Any, str]]) -> tuple[str, str] | None:
        """(where, message) for the first row that breaks the item schema, else ``None``."""
        if evaluation.data_source_config.type != "custom":
            return None
        from jsonschema import Draft202012Validator  # first use, not start (about 30 ms of every start)

        schema = evaluation.data_source_config.schema_.get("properties", {}).get("item", {})
        validator = Draft202012Validator(schema)
        for item, where in rows:
            message = _item_error(validator, item)
            if message is not None:
                return where, message
        return None

    async def retrieve_run(self, eval_id: str, run_id: str) -> EvalRun:
        run, _ = await self.store.get_run(eval_id, run_id)
        return run

    async def list_runs(self, eval_id: str, query: RunListQuery) -> EvalRunList:
        await self.store.get_eval(eval_id)
        runs, has_more = await self.store.page_runs(
            eval_id, after=query.after, limit=query.limit, order=query.order, status=query.status
        )
        return EvalRunList(
            data=runs, first_id=runs[0].id if runs else None, last_id=runs[-1].id if runs else None, has_more=has_more
        )

    async def cancel_run(self, eval_id: str, run_id: str) -> EvalRun:
        run, job_id = await self.store.get_run(eval_id, run_id, "update")
        if run.status in TERMINAL:
            if run.status == "canceled":
                return run
            raise InvalidRequestError(
                f"Run '{run_id}' is already {run.status}; only a queued or running run can be canceled.",
                param="run_id",
                code="run_not_cancelable",
            )
        canceled = run.model_copy(update={"status": "canceled"})
        await self.store.save_run(canceled, only_if=("queued", "in_progress"))
        if job_id is not None:
            await self.jobs.cancel(job_id)
        run, _ = await self.store.get_run(eval_id, run_id)
        return run

    async def delete_run(self, eval_id: str, run_id: str) -> EvalRunDeleted:
        run, job_id = await self.store.get_run(eval_id, run_id, "delete")
        if job_id is not None and run.status not in TERMINAL:
            await self.jobs.cancel(job_id)
        await self.store.delete_run(eval_id, run_id)
        return EvalRunDeleted(run_id=run_id)

    async def list_output_items(self, eval_id: str, run_id: str, query: OutputItemListQuery) -> OutputItemList:
        await self.store.get_run(eval_id, run_id)
        items, has_more = await self.store.page_items(
            eval_id, run_id, after=query.after, limit=query.limit, order=query.order, status=query.status
        )
        return OutputItemList(
            data=items,
            first_id=items[0].id if items else None,
            last_id=items[-1].id if items else None,
            has_more=has_more,
        )

    async def retrieve_output_item(self, eval_id: str, run_id: str, output_item_id: str) -> OutputItem:
        return await self.store.get_item(eval_id, run_id, output_item_id)

    # -- the job --------------------------------------------------------------------------------------

    @staticmethod
    def counted(run: EvalRun, counts: Counts, rows_per_second: float | None = None) -> EvalRun:
        """``run`` with ``counts`` written into its result counts, per-criterion results and progress."""
        per = [
            TestingCriteriaResult(
                testing_criteria=r.testing_criteria,
                passed=counts.criteria.get(r.testing_criteria, [0, 0])[0],
                failed=counts.criteria.get(r.testing_criteria, [0, 0])[1],
            )
            for r in run.per_testing_criteria_results
        ]
        pace = run.progress.rows_per_second if rows_per_second is None else round(rows_per_second, 3)
        return run.model_copy(
            update={
                "result_counts": ResultCounts(
                    total=counts.total, passed=counts.passed, failed=counts.failed, errored=counts.errored
                ),
                "per_testing_criteria_results": per,
                "progress": RunProgress(rows_done=counts.done, rows_total=counts.total, rows_per_second=pace),
            }
        )

    async def run_job(self, ctx: JobContext) -> dict[str, Any]:
        """Read the rows, run the unfinished ones through the engine, write the final counts; resumable."""
        eval_id, run_id = str(ctx.job.payload["eval_id"]), str(ctx.job.payload["run_id"])
        evaluation = await self.store.get_eval(eval_id)
        run, _ = await self.store.get_run(eval_id, run_id)
        if run.status in TERMINAL:
            return {"run_id": run_id, "status": run.status}
        tags = {"eval_id": eval_id, "eval_run_id": run_id}
        try:
            rows = await self._rows(evaluation, run, tags)
        except RowError as exc:
            await self._fail(run, exc.code, exc.message)
            return {"run_id": run_id, "status": "failed"}
        run, _ = await self.store.get_run(eval_id, run_id)
        if run.status == "queued":
            run = run.model_copy(update={"status": "in_progress"})
            if not await self.store.save_run(run, only_if=("queued",)):
                return {"run_id": run_id, "status": "canceled"}
        graders = [self._grader(c, tags) for c in evaluation.testing_criteria]
        sink = _Sink(self, run)
        try:
            await run_rows(
                rows,
                candidate=self._candidate(run),
                graders=graders,
                sink=sink,
                checkpoint=ctx.checkpoint,
                limits=self.limits,
            )
        except JobCancelled:
            await self._end_canceled(run)
            raise
        current, _ = await self.store.get_run(eval_id, run_id)  # with the pace the last progress write recorded
        final = await self._totals(current, len(rows))
        final = final.model_copy(update={"status": "completed"})
        await self.store.save_run(final, only_if=("in_progress",))
        return {"run_id": run_id, "status": "completed", "rows": len(rows)}

    async def _totals(self, run: EvalRun, total: int) -> EvalRun:
        """The run with counts and per-model usage recounted from its stored output items."""
        items = await self.store.items_of(run.eval_id, run.id)
        recount = Counts(total=total)
        usage: dict[str, ModelUsage] = {}

        def add_usage(model: str, tokens: dict[str, Any]) -> None:
            if not model:
                return
            entry = usage.setdefault(model, ModelUsage(model_name=model))
            entry.invocation_count += 1
            for key in ("prompt_tokens", "completion_tokens", "total_tokens", "cached_tokens"):
                setattr(entry, key, getattr(entry, key) + int(tokens.get(key) or 0))

        for item in items:
            recount.add(item.status, [(r.name, r.passed) for r in item.results])
            if item.sample.model and item.sample.output:
                add_usage(item.sample.model, item.sample.usage.model_dump())
            for result in item.results:
                if result.sample:
                    add_usage(str(result.sample.get("model") or ""), dict(result.sample.get("usage") or {}))
        return self.counted(run, recount).model_copy(update={"per_model_usage": list(usage.values())})

    async def _end_canceled(self, run: EvalRun) -> None:
        current, _ = await self.store.get_run(run.eval_id, run.id)
        final = await self._totals(current, current.result_counts.total or current.progress.rows_total)
        await self.store.save_run(
            final.model_copy(update={"status": "canceled"}), only_if=("queued", "in_progress", "canceled")
        )

    async def _fail(self, run: EvalRun, code: str, message: str) -> None:
        failed = run.model_copy(update={"status": "failed", "error": EvalError(code=code, message=message[:2000])})
        await self.store.save_run(failed, only_if=("queued", "in_progress"))

    async def on_failure(self, job: Job) -> None:
        """The job ended without finishing the run (gave up, or canceled while queued): say so on the run."""
        eval_id, run_id = str(job.payload.get("eval_id", "")), str(job.payload.get("run_id", ""))
        try:
            run, _ = await self.store.get_run(eval_id, run_id)
        except UnderlayError:
            return
        if run.status in ("completed", "failed"):
            return
        if job.status == "cancelled" or run.status == "canceled":
            await self._end_canceled(run)
            return
        error = job.error or {}
        await self._fail(
            run, str(error.get("code") or "run_failed"), str(error.get("message") or "the run's job ended early")
        )

    def _grader(self, criterion: Any, tags: dict[str, str]) -> Grader:
        chat = self.inference.openai_chat_completion if self.inference is not None else None
        return build_grader(
            criterion, chat=chat, embed=self._embed if self.inference is not None else None, metadata=tags
        )

    async def _embed(self, texts: list[str]) -> list[list[float]]:
        """Embeddings for ``cosine``: the first embedding model the server serves."""
        assert self.inference is not None
        models = [m for m in await self.inference.models.list() if m.model_type.value == "embedding"]
        if not models:
            raise RowError(
                "no_embedding_model", "cosine similarity needs an embedding model; none is served", retryable=False
            )
        reply = await self.inference.openai_embeddings(EmbeddingsRequest(model=models[0].identifier, input=texts))
        return [list(d.embedding) for d in reply.data]  # type: ignore[arg-type]

    def _candidate(self, run: EvalRun) -> Candidate | None:
        source = run.data_source
        if isinstance(source, CompletionsRunDataSource) and self.inference is not None:
            return ChatCandidate(
                self.inference.openai_chat_completion, source.model or "", source.input_messages, source.sampling_params
            )
        if isinstance(source, ResponsesRunDataSource) and self.responses is not None:
            return ResponsesCandidate(
                self.responses.create_response, source.model or "", source.input_messages, source.sampling_params
            )
        return None

    async def _rows(self, evaluation: Eval, run: EvalRun, tags: dict[str, str]) -> list[RowInput]:
        """Every row of the run, checked against the item schema; a bad one is a :class:`RowError` naming it."""
        source = run.data_source.source
        raw: list[tuple[dict[str, Any], dict[str, Any] | None, str]] = []
        if isinstance(source, FileContentSource):
            raw = [(r.item, r.sample, f"row {i}") for i, r in enumerate(source.content)]
        elif isinstance(source, FileIdSource):
            raw = await self._file_rows(source.id)
        elif isinstance(source, StoredCompletionsSource):
            raw = await self._stored_rows(source)
        if not raw:
            raise RowError("empty_data_source", "the run's data source has no rows")
        problem = self._check_rows(evaluation, [(item, where) for item, _, where in raw])
        if problem is not None:
            raise RowError("invalid_item", f"{problem[0]} does not match the eval's item schema: {problem[1]}")
        return [
            RowInput(index, item, sample, {**tags, "datasource_item_id": str(index)})
            for index, (item, sample, _) in enumerate(raw)
        ]

    async def _file_rows(self, file_id: str) -> list[tuple[dict[str, Any], dict[str, Any] | None, str]]:
        assert self.files is not None
        try:
            stream: AsyncIterator[bytes] = await self.files.open_content(file_id)
        except UnderlayError as exc:
            raise RowError("file_unavailable", f"file '{file_id}': {exc.message}") from None
        chunks: list[bytes] = []
        size = 0
        async for chunk in stream:
            size += len(chunk)
            if size > MAX_FILE_BYTES:
                raise RowError("file_too_large", f"file '{file_id}' is over {MAX_FILE_BYTES} bytes; split the data")
            chunks.append(chunk)
        rows: list[tuple[dict[str, Any], dict[str, Any] | None, str]] = []
        for number, line in enumerate(b"".join(chunks).split(b"\n"), start=1):
            if not line.strip():
                continue
            if len(rows) >= MAX_ROWS:
                raise RowError("too_many_rows", f"a run holds at most {MAX_ROWS} rows; file '{file_id}' has more")
            where = f"row {len(rows)} (line {number} of {file_id})"
            try:
                value = json.loads(line)
            except (ValueError, UnicodeDecodeError):
                raise RowError(
                    "invalid_jsonl", f"{where} is not valid JSON; each line must be one JSON object"
                ) from None
            if not isinstance(value, dict):
                raise RowError("invalid_jsonl", f'{where} must be a JSON object ({{"item": {{...}}}})')
            given_item, given_sample = value.get("item"), value.get("sample")
            item: dict[str, Any] = given_item if isinstance(given_item, dict) else value
            sample: dict[str, Any] | None = given_sample if isinstance(given_sample, dict) else None
            rows.append((item, sample, where))
        return rows

    async def _stored_rows(
        self, source: StoredCompletionsSource
    ) -> list[tuple[dict[str, Any], dict[str, Any] | None, str]]:
        assert self.inference is not None
        limit = source.limit or MAX_ROWS
        rows: list[tuple[dict[str, Any], dict[str, Any] | None, str]] = []
        after: str | None = None
        while len(rows) < limit:
            query = ChatCompletionListQuery(
                after=after, limit=100, order="asc", model=source.model, metadata=source.metadata
            )
            page = await self.inference.list_chat_completions(query)
            for stored in page["data"]:
                created = int(stored.created)
                if source.created_after is not None and created < source.created_after:
                    continue
                if source.created_before is not None and created >= source.created_before:
                    continue
                text = stored.choices[0].message.content or "" if stored.choices else ""
                item = {
                    "id": stored.id,
                    "model": stored.model,
                    "input": stored.input_messages,
                    "output": text,
                    "metadata": stored.metadata or {},
                }
                rows.append(
                    (
                        item,
                        {"output_text": text, "model": stored.model},
                        f"row {len(rows)} (chat completion {stored.id})",
                    )
                )
                if len(rows) >= limit:
                    break
            if not page.get("has_more") or not page["data"]:
                break
            after = page["data"][-1].id
        return rows
