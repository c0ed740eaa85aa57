"""The run loop: rows through a candidate and graders, each row's result committed before it counts.

:func:`run_rows` is what a durable eval job calls. It asks its :class:`RowSink` which rows already have a
stored result (a resumed job after ``kill -9``) and runs only the others, at most ``concurrency`` at once.
A row's outcome is handed to the sink (which commits it) *before* the row is counted, so a crash between
the two can only redo a row whose result was never stored, and a stored row is never sampled or graded
again. A failing sampler or grader is retried ``attempts`` times with a short back-off; after that only
that row ends ``error`` (with the last error's code and message) and the run goes on. Between rows the
loop calls ``checkpoint`` (the job's cancellation point and progress record) and, every ``flush_seconds``,
reports live counts and rows per second to the sink.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from underlay.api.errors import UnderlayError
from underlay.core.eval_engine.candidates import Candidate, Sample, preset_sample
from underlay.core.eval_engine.graders import Grader, GradeResult, RowError, RowInput

RowStatus = Literal["pass", "fail", "error"]
Checkpoint = Callable[[float | None], Awaitable[None]]


@dataclass
class RowOutcome:
    """One finished row: its sample (if any), each grader's result, and its status."""

    row: RowInput
    status: RowStatus
    sample: Sample | None
    results: list[GradeResult]
    error: dict[str, str] | None = None


@dataclass
class Counts:
    """Rows finished so far, overall and per grader (``criteria``: name → [passed, failed])."""

    total: int = 0
    passed: int = 0
    failed: int = 0
    errored: int = 0
    criteria: dict[str, list[int]] = field(default_factory=dict)

    @property
    def done(self) -> int:
        return self.passed + self.failed + self.errored

    def add(self, status: str, results: Sequence[tuple[str, bool]]) -> None:
        if status == "pass":
            self.passed += 1
        elif status == "fail":
            self.failed += 1
        else:
            self.errored += 1
        for name, ok in results:
            tally = self.criteria.setdefault(name, [0, 0])
            tally[0 if ok else 1] += 1


class RowSink(Protocol):
    """Where a run keeps its rows: what is done already, each new outcome, and live progress."""

    async def finished(self) -> Counts:
        """Counts of the rows already stored, with ``done_rows`` filled (see :meth:`done_rows`)."""
        ...

    async def done_rows(self) -> set[int]:
        """Indexes of rows whose outcome is stored; these are skipped."""
        ...

    async def record(self, outcome: RowOutcome) -> None:
        """Commit one row's outcome (idempotent: a row recorded twice keeps its first record)."""
        ...

    async def progress(self, counts: Counts, rows_per_second: float) -> None: ...


@dataclass(frozen=True)
class Limits:
    concurrency: int = 4
    """Rows of one run in flight at once."""
    attempts: int = 3
    """Tries of a failing sampler or grader per row before the row ends ``error``."""
    retry_delay: float = 0.5
    """Seconds before the second try; doubled for each further one."""
    flush_seconds: float = 0.5
    """How often live counts and pace are written (each row's own record is written at once)."""


async def _with_retries(call: Callable[[], Awaitable[Any]], limits: Limits) -> Any:
    delay = limits.retry_delay
    for attempt in range(1, limits.attempts + 1):
        try:
            return await call()
        except RowError as exc:
            if not exc.retryable or attempt == limits.attempts:
                raise
        except UnderlayError as exc:
            if exc.status_code < 500 and exc.status_code != 429:  # the request itself is wrong: no retry
                raise RowError(exc.code or "invalid_request", exc.message, retryable=False) from None
            if attempt == limits.attempts:
                raise RowError(exc.code or "upstream_error", exc.message) from None
        except (asyncio.CancelledError, KeyboardInterrupt):
            raise
        except Exception as exc:  # an unexpected failure of one call: retried, then only this row errors
            if attempt == limits.attempts:
                raise RowError("server_error", f"{type(exc).__name__}: {exc}"[:500]) from None
        await asyncio.sleep(delay)
        delay *= 2
    raise AssertionError("unreachable")


async def run_row(row: RowInput, candidate: Candidate | None, graders: Sequence[Grader], limits: Limits) -> RowOutcome:
    """Sample (or take the row's own sample), then run every grader; failures end only this row."""
    sample: Sample | None = None
    try:
        sample = await _with_retries(lambda: candidate.sample(row), limits) if candidate else preset_sample(row)
    except RowError as exc:
        return RowOutcome(row, "error", None, [], {"code": exc.code, "message": exc.message[:1000]})
    graded = RowInput(row.index, row.item, sample.namespace() if sample else None, row.tags)
    results: list[GradeResult] = []
    error: dict[str, str] | None = None
    for grader in graders:
        try:
            results.append(await _with_retries(lambda g=grader: g.grade(graded), limits))  # type: ignore[misc]
        except RowError as exc:
            error = {"code": exc.code, "message": f"grader '{grader.name}': {exc.message}"[:1000]}
    if error is not None:
        status: RowStatus = "error"
    else:
        status = "pass" if all(r.passed for r in results) else "fail"
    return RowOutcome(row, status, sample, results, error)


async def run_rows(
    rows: Sequence[RowInput],
    *,
    candidate: Candidate | None,
    graders: Sequence[Grader],
    sink: RowSink,
    checkpoint: Checkpoint,
    limits: Limits = Limits(),
) -> Counts:
    """Run every row without a stored outcome; returns the counts over all rows (stored and new)."""
    done = await sink.done_rows()
    counts = await sink.finished()
    counts.total = len(rows)
    todo = iter([row for row in rows if row.index not in done])
    lock = asyncio.Lock()
    started = time.monotonic()
    finished_here = 0
    flushed_at = started

    async def worker() -> None:
        nonlocal finished_here, flushed_at
        while True:
            await checkpoint(None)  # raises here if the run was cancelled
            async with lock:
                row = next(todo, None)
            if row is None:
                return
            outcome = await run_row(row, candidate, graders, limits)
            await sink.record(outcome)  # committed before it is counted
            async with lock:
                counts.add(outcome.status, [(r.name, r.passed) for r in outcome.results])
                finished_here += 1
                if time.monotonic() - flushed_at < limits.flush_seconds:
                    continue
                flushed_at = time.monotonic()
                pace = finished_here / max(1e-6, flushed_at - started)
                await sink.progress(counts, pace)
            await checkpoint(counts.done / max(1, counts.total))

    workers = max(1, min(limits.concurrency, len(rows) - len(done)))
    results = await asyncio.gather(*(worker() for _ in range(workers)), return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result
    pace = finished_here / max(1e-6, time.monotonic() - started)
    await sink.progress(counts, pace)
    return counts
