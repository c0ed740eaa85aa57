"""The eval router: benchmarks (shipped and registered) and durable eval jobs over the shared run-row engine.

A job is stored ``queued`` and submitted as an ``eval.benchmark`` job in the ``bulk`` lane. The job
reads the benchmark's rows (from the package for a shipped benchmark, through the datasets router
otherwise, as the job's owner), builds each row's prompt, and hands rows, a candidate and one grader per
scoring function to :func:`underlay.core.eval_engine.run_rows`. That loop commits each finished row
(here: :class:`_Sink` into ``eval_job_rows``) before counting it, so a restarted job skips finished rows
and never samples or scores them again. At the end the per-function aggregates (with their confidence
intervals) are computed from the stored score rows, the per-row results are saved as a dataset when the
datasets API is on, and the job is marked completed.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from underlay.api.datasets import IterRowsQuery, RegisterDatasetRequest, RowsSource
from underlay.api.errors import ConflictError, InvalidRequestError, NotFoundError, UnderlayError
from underlay.api.eval import (
    TERMINAL,
    AgentCandidate,
    Benchmark,
    BenchmarkConfig,
    BenchmarkDeleted,
    BenchmarkList,
    EvalApi,
    EvalJob,
    EvalJobList,
    EvaluateResponse,
    EvaluateRowsRequest,
    JobCounts,
    JobError,
    JobProgress,
    ModelCandidate,
    RegisterBenchmarkRequest,
    RunEvalRequest,
)
from underlay.api.evals import CompletionsSamplingParams, ItemReferenceMessages, ResponsesSamplingParams
from underlay.api.pagination import ListQuery
from underlay.api.responses import CreateResponseRequest
from underlay.api.scoring import ScoringFnParams, ScoringResult
from underlay.core.eval_engine import (
    Candidate,
    ChatCandidate,
    Counts,
    GradeResult,
    Limits,
    ResponsesCandidate,
    RowError,
    RowInput,
    RowOutcome,
    run_row,
    run_rows,
)
from underlay.core.jobs import Job, JobCancelled, JobContext, JobRunner
from underlay.core.score_aggregates import aggregate
from underlay.core.stores.eval_jobs import EvalJobStore, JobRow
from underlay.eval_benchmarks import SHIPPED

if TYPE_CHECKING:
    from underlay.core.routers.datasets import DatasetsRouter
    from underlay.core.routers.inference import InferenceRouter
    from underlay.core.routers.responses import ResponsesRouter
    from underlay.core.routers.scoring import ScoringRouter

JOB_KIND = "eval.benchmark"
PROMPT_KEY = "eval_prompt"
"""Where a row's rendered prompt sits in the item the candidate reads (left out of stored results)."""
PAGE_ROWS = 500


def _now() -> int:
    return int(time.time())


def _shipped(benchmark_id: str) -> Benchmark | None:
    shipped = SHIPPED.get(benchmark_id)
    if shipped is None:
        return None
    return Benchmark(
        identifier=shipped.benchmark_id,
        dataset_id=shipped.dataset_id,
        scoring_functions=list(shipped.scoring_functions),
        metadata={
            "title": shipped.title,
            "purpose": shipped.purpose,
            "source": shipped.source,
            "licence": shipped.licence,
            "description": shipped.description,
        },
        shipped=True,
    )


def prompt_of(item: Mapping[str, Any], system_message: str | None) -> list[dict[str, Any]]:
    """A row's chat prompt: ``messages`` (messages-answer), ``chat_completion_input`` or ``input_query``."""
    messages: list[dict[str, Any]]
    if isinstance(item.get("messages"), list):
        messages = [dict(m) for m in item["messages"] if isinstance(m, dict)]
    elif isinstance(item.get("chat_completion_input"), list):
        messages = [dict(m) for m in item["chat_completion_input"] if isinstance(m, dict)]
    elif isinstance(item.get("input_query"), str):
        messages = [{"role": "user", "content": item["input_query"]}]
    else:
        raise RowError(
            "invalid_row", "the row has no messages, chat_completion_input or input_query to ask", retryable=False
        )
    if system_message:
        messages = [{"role": "system", "content": system_message}, *[m for m in messages if m.get("role") != "system"]]
    return messages


def scoring_row(item: Mapping[str, Any], answer: str) -> dict[str, Any]:
    """What a scoring function sees: the row's own fields, ``input_query`` as text, and the answer."""
    fields = {k: v for k, v in item.items() if k != PROMPT_KEY}
    if "input_query" not in fields and isinstance(item.get("messages"), list):
        users = [m.get("content") for m in item["messages"] if isinstance(m, dict) and m.get("role") == "user"]
        fields["input_query"] = str(users[-1]) if users else ""
    fields["generated_answer"] = answer
    return fields


class ScoringGrader:
    """One scoring function as an engine grader: a row passes when its score reaches the threshold."""

    type = "scoring_function"

    def __init__(
        self, scoring: ScoringRouter, fn_id: str, params: ScoringFnParams | None, threshold: float
    ) -> None:  # fmt: skip
        self.scoring = scoring
        self.name = fn_id
        self.params = params
        self.threshold = threshold

    async def grade(self, row: RowInput) -> GradeResult:
        answer = str((row.sample or {}).get("output_text") or "")
        results = await self.scoring.score_rows([scoring_row(row.item, answer)], {self.name: self.params})
        score_row = results[self.name].score_rows[0]
        score = score_row.get("score")
        if score is None:  # the function (e.g. a judge) already retried; this row alone ends in error
            raise RowError("scoring_failed", str(score_row.get("error") or "no score")[:500], retryable=False)
        try:
            value = float(score)
        except (TypeError, ValueError):
            value = 0.0
        return GradeResult(self.name, self.type, value, value >= self.threshold, extra={"score_row": score_row})


class _Sink:
    """The engine's row sink for one job: rows in ``eval_job_rows``, live counts on the job."""

    def __init__(self, router: EvalRouter, job: EvalJob) -> None:
        self.router = router
        self.job = job

    async def done_rows(self) -> set[int]:
        return {r.row_index for r in await self.router.store.rows_of(self.job.job_id)}

    async def finished(self) -> Counts:
        counts = Counts()
        for row in await self.router.store.rows_of(self.job.job_id):
            counts.add(row.status, [(k, bool(v.get("passed"))) for k, v in row.record["scores"].items()])
        return counts

    async def record(self, outcome: RowOutcome) -> None:
        sample = outcome.sample
        record = {
            "input": {k: v for k, v in outcome.row.item.items() if k != PROMPT_KEY},
            "generated_answer": sample.output_text if sample else None,
            "usage": sample.usage if sample else {},
            "scores": {
                r.name: {**r.extra.get("score_row", {"score": r.score}), "passed": r.passed} for r in outcome.results
            },
            "error": outcome.error,
        }
        await self.router.store.record_row(self.job.job_id, outcome.row.index, outcome.status, record)

    async def progress(self, counts: Counts, rows_per_second: float) -> None:
        job = _counted(self.job, counts, rows_per_second)
        await self.router.store.save_job(job, only_if=("in_progress",))


def _counted(job: EvalJob, counts: Counts, rows_per_second: float | None = None) -> EvalJob:
    pace = job.progress.rows_per_second if rows_per_second is None else round(rows_per_second, 3)
    return job.model_copy(
        update={
            "progress": JobProgress(rows_done=counts.done, rows_total=counts.total, rows_per_second=pace),
            "result_counts": JobCounts(passed=counts.passed, failed=counts.failed, errored=counts.errored),
        }
    )


def _check_agent_request(candidate: AgentCandidate) -> None:
    """An agent candidate's Responses fields, checked as a Responses request once, when the job is made,
    so a bad tool or prompt reference is a 400 now rather than the same error on every row later."""
    fields = candidate.model_dump(exclude_none=True, exclude={"type", "sampling_params"})
    try:
        CreateResponseRequest.model_validate({**fields, "input": "check"})
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise InvalidRequestError(
            f"eval_candidate.{where}: {first['msg']}", param=f"benchmark_config.eval_candidate.{where}"
        ) from None


class EvalRouter(EvalApi):
    def __init__(
        self,
        store: EvalJobStore,
        jobs: JobRunner,
        scoring: ScoringRouter,
        *,
        inference: InferenceRouter | None,
        responses: ResponsesRouter | None = None,
        datasets: DatasetsRouter | None = None,
        limits: Limits | None = None,
    ) -> None:
        self.store = store
        self.jobs = jobs
        self.scoring = scoring
        self.inference = inference
        self.responses = responses
        self.datasets = datasets
        self.limits = limits or Limits()

    async def initialize(self) -> None:
        await self.store.initialize()
        await self.jobs.initialize()
        self.jobs.register(JOB_KIND, self.run_job, on_failure=self.on_failure, max_attempts=5, lane="bulk")

    # -- benchmarks -----------------------------------------------------------------------------------

    async def register_benchmark(self, params: RegisterBenchmarkRequest) -> Benchmark:
        if params.benchmark_id in SHIPPED or await self.store.find_benchmark(params.benchmark_id):
            raise ConflictError(
                f"A benchmark '{params.benchmark_id}' already exists; choose another benchmark_id",
                param="benchmark_id",
            )
        if self.datasets is None:
            raise InvalidRequestError(
                "Registering a benchmark needs the datasets API; add 'datasets' to the run config's apis",
                param="dataset_id",
            )
        try:
            dataset = await self.datasets.get_dataset(params.dataset_id)
        except NotFoundError as exc:
            exc.param = "dataset_id"
            raise
        if not dataset.purpose.startswith("eval/"):
            raise InvalidRequestError(
                f"Dataset '{dataset.identifier}' has purpose '{dataset.purpose}'; a benchmark needs an eval dataset "
                "(purpose eval/question-answer or eval/messages-answer)",
                param="dataset_id",
                code="wrong_dataset_purpose",
            )
        for fn_id in params.scoring_functions:
            try:
                await self.scoring.get_scoring_function(fn_id)
            except NotFoundError:
                raise InvalidRequestError(
                    f"No scoring function '{fn_id}'; list them with GET /v1/scoring-functions",
                    param="scoring_functions",
                ) from None
        benchmark = Benchmark(
            identifier=params.benchmark_id,
            dataset_id=params.dataset_id,
            scoring_functions=params.scoring_functions,
            metadata={"purpose": dataset.purpose, **(params.metadata or {})},
            created_at=_now(),
        )
        await self.store.create_benchmark(benchmark)
        return benchmark

    async def list_benchmarks(self) -> BenchmarkList:
        shipped = [b for b in (_shipped(i) for i in SHIPPED) if b is not None]
        return BenchmarkList(data=[*shipped, *await self.store.list_benchmarks()])

    async def get_benchmark(self, benchmark_id: str) -> Benchmark:
        return _shipped(benchmark_id) or await self.store.get_benchmark(benchmark_id)

    async def unregister_benchmark(self, benchmark_id: str) -> BenchmarkDeleted:
        if benchmark_id in SHIPPED:
            raise InvalidRequestError(
                f"Benchmark '{benchmark_id}' ships with Underlay and cannot be deleted", param="benchmark_id"
            )
        await self.store.get_benchmark(benchmark_id, "delete")
        for job in await self.store.jobs_of(benchmark_id):
            if job.status not in TERMINAL:
                await self.jobs.cancel(job.job_id)
            await self.store.delete_job(job.job_id)
        await self.store.delete_benchmark(benchmark_id)
        return BenchmarkDeleted(id=benchmark_id)

    # -- jobs -----------------------------------------------------------------------------------------

    async def _check_functions(self, benchmark: Benchmark, config: BenchmarkConfig) -> None:
        for fn_id in config.scoring_params:
            if fn_id not in benchmark.scoring_functions:
                raise InvalidRequestError(
                    f"scoring_params names '{fn_id}', which benchmark '{benchmark.identifier}' does not use "
                    f"(it uses {', '.join(benchmark.scoring_functions)})",
                    param="benchmark_config.scoring_params",
                )
        if isinstance(config.eval_candidate, AgentCandidate) and self.responses is None:
            raise InvalidRequestError(
                "An agent candidate runs through the Responses API; add 'responses' to the run config's apis",
                param="benchmark_config.eval_candidate",
            )
        if isinstance(config.eval_candidate, ModelCandidate) and self.inference is None:
            raise InvalidRequestError("A model candidate needs the inference API", param="benchmark_config")
        if isinstance(config.eval_candidate, AgentCandidate):
            _check_agent_request(config.eval_candidate)

    async def run_eval(self, benchmark_id: str, params: RunEvalRequest) -> EvalJob:
        benchmark = await self.get_benchmark(benchmark_id)
        config = params.benchmark_config
        await self._check_functions(benchmark, config)
        job_id = f"evaljob_{secrets.token_hex(12)}"
        job = EvalJob(
            job_id=job_id,
            benchmark_id=benchmark_id,
            status="queued",
            created_at=_now(),
            candidate=config.eval_candidate.model,
        )
        await self.store.create_job(job, config.model_dump(mode="json"))
        await self.jobs.submit(
            JOB_KIND, {"benchmark_id": benchmark_id, "job_id": job_id}, reference=job_id, job_id=job_id
        )
        return job

    async def list_jobs(self, benchmark_id: str, query: ListQuery) -> EvalJobList:
        await self.get_benchmark(benchmark_id)
        jobs, has_more = await self.store.page_jobs(
            benchmark_id, after=query.after, limit=query.limit, order=query.order
        )
        return EvalJobList(
            data=jobs,
            first_id=jobs[0].job_id if jobs else None,
            last_id=jobs[-1].job_id if jobs else None,
            has_more=has_more,
        )

    async def job_status(self, benchmark_id: str, job_id: str) -> EvalJob:
        job, _ = await self.store.get_job(benchmark_id, job_id)
        return job

    async def job_cancel(self, benchmark_id: str, job_id: str) -> EvalJob:
        job, _ = await self.store.get_job(benchmark_id, job_id, "update")
        if job.status in TERMINAL:
            return job
        await self.jobs.cancel(job_id)
        await self._end(job_id, benchmark_id, "cancelled")
        job, _ = await self.store.get_job(benchmark_id, job_id)
        return job

    async def job_result(self, benchmark_id: str, job_id: str) -> EvaluateResponse:
        job, config = await self.store.get_job(benchmark_id, job_id)
        if job.status != "completed":
            raise ConflictError(
                f"Eval job '{job_id}' is {job.status}; its result is ready once it has completed", param="job_id"
            )
        benchmark = await self.get_benchmark(benchmark_id)
        rows = await self.store.rows_of(job_id)
        return await self._response(benchmark, BenchmarkConfig.model_validate(config), rows)

    async def evaluate_rows(self, benchmark_id: str, params: EvaluateRowsRequest) -> EvaluateResponse:
        """A few rows now, in this request: the same candidate, graders and per-row results as a job."""
        benchmark = await self.get_benchmark(benchmark_id)
        functions = params.scoring_functions or benchmark.scoring_functions
        benchmark = benchmark.model_copy(update={"scoring_functions": functions})
        config = params.benchmark_config
        await self._check_functions(benchmark, config)
        candidate, graders = await self._plan(benchmark, config)
        rows = [
            self._row_input(i, row, config, {"benchmark_id": benchmark_id}) for i, row in enumerate(params.input_rows)
        ]
        records = []
        for row in rows:
            outcome = await run_row(row, candidate, graders, self.limits)
            records.append(
                JobRow(
                    row.index,
                    outcome.status,
                    {
                        "input": {k: v for k, v in row.item.items() if k != PROMPT_KEY},
                        "generated_answer": outcome.sample.output_text if outcome.sample else None,
                        "scores": {
                            r.name: {**r.extra.get("score_row", {"score": r.score}), "passed": r.passed}
                            for r in outcome.results
                        },
                        "error": outcome.error,
                    },
                )
            )
        return await self._response(benchmark, config, records)

    # -- the job --------------------------------------------------------------------------------------

    def _row_input(self, index: int, row: dict[str, Any], config: BenchmarkConfig, tags: dict[str, str]) -> RowInput:
        candidate = config.eval_candidate
        system = candidate.system_message if isinstance(candidate, ModelCandidate) else None
        try:
            prompt = prompt_of(row, system)
        except RowError:
            prompt = []  # the candidate reports it for this row alone
        return RowInput(index, {**row, PROMPT_KEY: prompt}, None, {**tags, "row_index": str(index)})

    async def _plan(self, benchmark: Benchmark, config: BenchmarkConfig) -> tuple[Candidate, list[ScoringGrader]]:
        graders = [
            ScoringGrader(self.scoring, fn_id, config.scoring_params.get(fn_id), config.pass_threshold)
            for fn_id in benchmark.scoring_functions
        ]
        return self._candidate(config), graders

    def _candidate(self, config: BenchmarkConfig) -> Candidate:
        candidate = config.eval_candidate
        messages = ItemReferenceMessages(type="item_reference", item_reference=f"item.{PROMPT_KEY}")
        p = candidate.sampling_params
        if isinstance(candidate, ModelCandidate):
            if self.inference is None:
                raise InvalidRequestError("A model candidate needs the inference API", param="benchmark_config")
            sampling = CompletionsSamplingParams(
                temperature=p.temperature, top_p=p.top_p, seed=p.seed, max_completion_tokens=p.max_tokens
            )
            return ChatCandidate(self.inference.openai_chat_completion, candidate.model, messages, sampling)
        if self.responses is None:
            raise InvalidRequestError("An agent candidate needs the responses API", param="benchmark_config")
        responses = self.responses
        extra: dict[str, Any] = {}
        for key in ("tool_choice", "prompt", "guardrails", "max_infer_iters"):
            if getattr(candidate, key) is not None:
                extra[key] = getattr(candidate, key)
        instructions = candidate.instructions

        async def create(request: Any) -> Any:
            update = dict(extra)
            if instructions and not request.instructions:
                update["instructions"] = instructions
            body = request.model_dump(exclude_none=True)
            body.update(update)
            return await responses.create_response(type(request).model_validate(body))

        sampling_r = ResponsesSamplingParams(
            temperature=p.temperature,
            top_p=p.top_p,
            seed=p.seed,
            max_completion_tokens=p.max_tokens,
            tools=candidate.tools,
        )
        return ResponsesCandidate(create, candidate.model, messages, sampling_r)

    async def _rows(self, benchmark: Benchmark, limit: int | None) -> list[dict[str, Any]]:
        cap = limit or 10**9
        shipped = SHIPPED.get(benchmark.identifier) if benchmark.shipped else None
        rows: list[dict[str, Any]] = []
        if shipped is not None:
            for row in shipped.rows():
                if len(rows) >= cap:
                    break
                rows.append(row)
            return rows
        if self.datasets is None:
            raise RowError("datasets_unavailable", "the datasets API is not enabled on this server", retryable=False)
        start: int | None = 0
        while start is not None and len(rows) < cap:
            page = await self.datasets.iterrows(
                benchmark.dataset_id, IterRowsQuery(start_index=start, limit=min(PAGE_ROWS, cap - len(rows)))
            )
            rows.extend(page.data)
            start = page.next_start_index
        return rows[:cap]

    async def run_job(self, ctx: JobContext) -> dict[str, Any]:
        """Run the unfinished rows through the engine, then aggregate and save the results; resumable."""
        benchmark_id, job_id = str(ctx.job.payload["benchmark_id"]), str(ctx.job.payload["job_id"])
        job, raw_config = await self.store.get_job(benchmark_id, job_id)
        if job.status in TERMINAL:
            return {"job_id": job_id, "status": job.status}
        config = BenchmarkConfig.model_validate(raw_config)
        try:
            benchmark = await self.get_benchmark(benchmark_id)
            rows = await self._rows(benchmark, config.num_examples)
            if not rows:
                raise RowError("empty_benchmark", f"benchmark '{benchmark_id}' has no rows", retryable=False)
            candidate, graders = await self._plan(benchmark, config)
        except (RowError, UnderlayError) as exc:
            code = getattr(exc, "code", None) or "invalid_benchmark"
            await self._fail(job, str(code), getattr(exc, "message", str(exc)))
            return {"job_id": job_id, "status": "failed"}
        if job.status == "queued":
            job = job.model_copy(update={"status": "in_progress", "started_at": _now()})
            if not await self.store.save_job(job, only_if=("queued",)):
                return {"job_id": job_id, "status": "cancelled"}
        tags = {"benchmark_id": benchmark_id, "eval_job_id": job_id}
        inputs = [self._row_input(i, row, config, tags) for i, row in enumerate(rows)]
        limits = self.limits
        if config.concurrency is not None:
            limits = Limits(
                concurrency=config.concurrency,
                attempts=limits.attempts,
                retry_delay=limits.retry_delay,
                flush_seconds=limits.flush_seconds,
            )
        try:
            counts = await run_rows(
                inputs,
                candidate=candidate,
                graders=graders,
                sink=_Sink(self, job),
                checkpoint=ctx.checkpoint,
                limits=limits,
            )
        except JobCancelled:
            await self._end(job_id, benchmark_id, "cancelled")
            raise
        stored = await self.store.rows_of(job_id)
        job, _ = await self.store.get_job(benchmark_id, job_id)
        results_id = await self._save_results(job_id, stored)
        final = _counted(job, counts).model_copy(
            update={"status": "completed", "completed_at": _now(), "results_dataset_id": results_id}
        )
        await self.store.save_job(final, only_if=("in_progress",))
        return {"job_id": job_id, "status": "completed", "rows": len(rows)}

    async def _save_results(self, job_id: str, stored: list[JobRow]) -> str | None:
        """The per-row results as a free-form dataset (``<job id>-results``), when the datasets API is on."""
        if self.datasets is None or not stored:
            return None
        dataset_id = f"{job_id}-results"
        rows = [
            {
                "row_index": r.row_index,
                "status": r.status,
                "generated_answer": r.record.get("generated_answer"),
                "scores": {k: v.get("score") for k, v in r.record["scores"].items()},
                "error": r.record.get("error"),
                "input": r.record.get("input"),
            }
            for r in stored
        ]
        try:
            await self.datasets.get_dataset(dataset_id)
            return dataset_id  # saved by an earlier attempt of this job
        except NotFoundError:
            pass
        request = RegisterDatasetRequest(
            purpose="free-form", source=RowsSource(type="rows", rows=rows), dataset_id=dataset_id,
            metadata={"eval_job_id": job_id},
        )  # fmt: skip
        await self.datasets.register_dataset(request)
        return dataset_id

    async def _response(self, benchmark: Benchmark, config: BenchmarkConfig, stored: list[JobRow]) -> EvaluateResponse:
        generations = [
            {
                "row_index": r.row_index,
                "status": r.status,
                "generated_answer": r.record.get("generated_answer"),
                **({"error": r.record["error"]} if r.record.get("error") else {}),
            }
            for r in stored
        ]
        inputs = [r.record.get("input") or {} for r in stored]
        scores: dict[str, ScoringResult] = {}
        for fn_id in benchmark.scoring_functions:
            score_rows = [dict(r.record["scores"].get(fn_id) or {"score": None}) for r in stored]
            params = config.scoring_params.get(fn_id)
            if params is None:
                try:
                    params = (await self.scoring.get_scoring_function(fn_id)).params
                except UnderlayError:
                    params = None
            names = list(getattr(params, "aggregation_functions", None) or ["average"])
            scores[fn_id] = ScoringResult(
                score_rows=score_rows,
                aggregated_results=aggregate(names, score_rows, inputs),
                error_count=sum(1 for s in score_rows if s.get("score") is None),
            )
        return EvaluateResponse(generations=generations, scores=scores)

    async def _fail(self, job: EvalJob, code: str, message: str) -> None:
        failed = job.model_copy(
            update={"status": "failed", "completed_at": _now(), "error": JobError(code=code, message=message[:2000])}
        )
        await self.store.save_job(failed, only_if=("queued", "in_progress"))

    async def _end(self, job_id: str, benchmark_id: str, status: str) -> None:
        job, _ = await self.store.get_job(benchmark_id, job_id)
        sink = _Sink(self, job)
        counts = await sink.finished()
        counts.total = job.progress.rows_total
        ended = _counted(job, counts).model_copy(update={"status": status, "completed_at": _now()})
        await self.store.save_job(ended, only_if=("queued", "in_progress"))

    async def on_failure(self, job: Job) -> None:
        """The job ended without finishing (gave up, or cancelled while queued): say so on the eval job."""
        benchmark_id, job_id = str(job.payload.get("benchmark_id", "")), str(job.payload.get("job_id", ""))
        try:
            current, _ = await self.store.get_job(benchmark_id, job_id)
        except UnderlayError:
            return
        if current.status in TERMINAL:
            return
        if job.status == "cancelled":
            await self._end(job_id, benchmark_id, "cancelled")
            return
        error = job.error or {}
        await self._fail(current, str(error.get("code") or "job_failed"), str(error.get("message") or "the job failed"))
