"""Durable jobs: long work that survives restarts, runs on any worker and can be cancelled.

Why a job table instead of ``asyncio.create_task``: file ingestion, batches, background responses and
eval runs take minutes, and a task that lives only in memory dies with its process, leaving whatever
it was building half done with nobody responsible for it. Here every job is a row in the SQL store,
so the state of the work is always on disk:

- **Submit** inserts a ``queued`` row (kind, JSON payload, owner, ``max_attempts``).
- **Lanes**: every kind declares a lane when it is registered: ``interactive`` for work a person is
  waiting on (background responses), ``bulk`` for work that may take a while (ingestion, and the
  default for kinds to come), ``training`` for model training (only its reserved workers claim it).
  Lanes stop one kind of work from starving another; see *Fairness*.
- **Claim**: each process runs a :class:`JobRunner` with N shared worker tasks plus a few reserved to
  a lane. A worker takes the next queued job of a kind it has a handler for with
  :meth:`SqlStore.claim`, which is atomic across processes and replicas (``FOR UPDATE SKIP LOCKED`` on
  PostgreSQL, the write lock on SQLite), and marks it ``running`` with a **lease**: its own runner id
  and an expiry time.
- **Heartbeat**: while the handler runs, the worker renews the lease every third of its length and
  reads back the cancellation flag. A worker that loses its lease (it stalled so long that another
  runner re-queued the job) stops the handler, because someone else now owns the job.
- **Resume**: a process that dies (SIGKILL, OOM, power) stops renewing. Every runner sweeps for
  ``running`` jobs whose lease has expired, at start and then periodically, and puts them back in the
  queue, or, once ``attempts`` reached ``max_attempts``, fails them with a ``job_interrupted`` error.
  Handlers must therefore be idempotent: a resumed job starts again from the beginning (it can look
  at ``ctx.job.attempts`` and clean up what a previous attempt left).
- **Cancel**: :meth:`JobRunner.cancel` sets ``cancel_requested``. A queued job ends ``cancelled`` at
  once; a running one sees the flag at its next :meth:`JobContext.checkpoint` (immediately when it
  runs in the same process, within one heartbeat otherwise), which raises :class:`JobCancelled`.
- **End**: the handler's return value is stored as ``result`` (``succeeded``). A :class:`JobError`
  stores its code and message (``failed``), a :class:`RetryableJobError` re-queues the job with a
  delay while attempts remain, and any other exception is recorded as ``server_error``.
- **Defer**: a handler that waits on someone else's work (a batch run by a provider's own Batches API,
  polled for hours) raises :class:`JobDeferred`: the job goes back to the queue, not claimable for the
  given delay, and the attempt is not counted. So waiting holds no worker, and the job's next run is
  an ordinary claim: a restart in between changes nothing.

Each kind may register an ``on_failure`` hook, called whenever a job of that kind ends ``failed`` or
``cancelled`` by any path, including a give-up decided by another process's sweep. It is called
*before* the terminal status is written, so a crash in between means it runs again: hooks must be
idempotent. This is how the owner of the work (e.g. a vector-store file) learns that it will never
finish and is never left ``in_progress`` forever.

Fairness. A FIFO queue let one tenant's 50-file batch delay another's background response by minutes.
Two rules fix that, both enforced by the claim query itself so they hold across processes:

- *Between lanes*: a shared worker looks in the ``interactive`` lane first, and each runner also has
  ``reserved`` workers that only ever claim their lane, so bulk work can never occupy every worker.
- *Between owners, within a lane*: each job gets a ``fair_rank`` when it is submitted, start-time fair
  queueing style: one more than the owner's latest unfinished job in the lane, but never below the
  lane's current position (the lowest rank still queued). Claims take the lowest rank first, so a
  tenant with 50 queued jobs holds ranks n..n+49 and a newcomer's first job, at rank n, is next, and
  owners take turns. It costs two indexed look-ups at submit and nothing at claim.

While a handler runs, the current principal (:mod:`underlay.core.identity`) is the job's owner, so
the stores it calls filter by ownership exactly as they would in the owner's request.

Idle cost. Work queued in this process wakes the workers at once; work queued by another process
(a second server on the same PostgreSQL, a worker of a multi-worker server) and work whose
``available_at`` lies ahead (retries, deferrals) is found by polling. Each worker used to poll the
claim itself every ``poll_seconds``: on SQLite that is a write transaction per lane per worker, about
a dozen a second, and 1-3% of a core for a server doing nothing. Now idle workers wait on a signal and
one poller per runner looks instead, with one read for the lanes that have an idle worker: the
earliest queued job of their kinds. Due now: it wakes the workers, which claim. Due later: it sleeps
until then. Nothing: its wait doubles from ``poll_seconds`` up to ``poll_max_seconds``, and goes back
to ``poll_seconds`` at the next claim or local submit. So a job queued elsewhere is claimed within
``poll_max_seconds`` of an idle runner, and one due later within a moment of its time once the poller
has seen it (at once when this process deferred it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, Field

from underlay.api.errors import NotFoundError
from underlay.core.identity import Principal, current_principal, principal_var
from underlay.core.storage.sqlstore import OWNER_COLUMNS, ColumnDefinition, ColumnType, SqlStore, Where

log = logging.getLogger("underlay.jobs")

TABLE = "jobs"
JobStatus = Literal["queued", "running", "succeeded", "failed", "cancelled"]
TERMINAL: frozenset[str] = frozenset({"succeeded", "failed", "cancelled"})
UNFINISHED: tuple[str, ...] = ("queued", "running")

Lane = Literal["interactive", "bulk", "training"]
LANES: tuple[Lane, ...] = ("interactive", "bulk", "training")
"""Every lane, in the order a worker looks at them (the first is served first)."""
SHARED_LANES: tuple[Lane, ...] = ("interactive", "bulk")
"""The lanes shared workers claim. ``training`` is claimed only by its reserved workers: a run holds a
worker and gigabytes for minutes to hours, so how many run at once is exactly how many workers are
reserved for it (``jobs.reserved_workers.training``), never whatever shared worker happens to be idle."""
DEFAULT_LANE: Lane = "bulk"


class Job(BaseModel):
    """One row of the job table, as handlers and callers see it."""

    id: str
    kind: str
    status: JobStatus
    payload: dict[str, Any] = Field(default_factory=dict)
    progress: float = 0.0
    result: Any = None
    error: dict[str, Any] | None = None
    reference: str | None = None
    attempts: int = 0
    max_attempts: int = 3
    fair_rank: int = 0
    cancel_requested: bool = False
    lease_owner: str | None = None
    lease_expires_at: float | None = None
    available_at: float = 0.0
    created_at: int = 0
    started_at: int | None = None
    claimed_ns: int | None = None
    finished_at: int | None = None
    updated_at: int = 0
    owner_principal: str | None = None
    owner_attributes: dict[str, Any] | None = None

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Job:
        data = {k: v for k, v in row.items() if k in cls.model_fields and v is not None}
        data["cancel_requested"] = bool(row.get("cancel_requested"))
        return cls.model_validate(data)


class JobError(Exception):
    """A failure the handler understands: the job ends ``failed`` with this code and message."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class RetryableJobError(JobError):
    """A transient failure (an upstream down): re-queue after ``delay`` seconds while attempts remain."""

    def __init__(self, code: str, message: str, delay: float = 5.0) -> None:
        super().__init__(code, message)
        self.delay = delay


class JobDeferred(Exception):
    """Come back in ``delay`` seconds: re-queue the job without counting the attempt (see *Defer*)."""

    def __init__(self, delay: float) -> None:
        super().__init__(f"deferred for {delay}s")
        self.delay = max(0.0, delay)


class JobCancelled(Exception):
    """Raised by :meth:`JobContext.checkpoint` when cancellation was requested."""


class _LeaseLost(Exception):
    """The heartbeat found the job no longer ours (another runner re-queued or took it)."""


Handler = Callable[["JobContext"], Awaitable[Any]]


class _Beacon:
    """Wakes every task waiting on it; a firing between a task's look and its wait is never lost.

    Each waiter takes a :meth:`ticket` *before* it looks (claims, queries) and waits on that ticket
    afterwards; :meth:`fire` sets the current ticket and hands out a fresh one. A single shared
    ``asyncio.Event`` that waiters clear loses a firing that lands between one waiter's look and its
    ``clear()``: that job then waited for the next poll.
    """

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def ticket(self) -> asyncio.Event:
        return self._event

    def fire(self) -> None:
        event, self._event = self._event, asyncio.Event()
        event.set()


async def _run_handler(handler: Handler, ctx: JobContext) -> Any:
    """A coroutine around the handler, so any awaitable it returns can run as a named task."""
    return await handler(ctx)


FailureHook = Callable[[Job], Awaitable[None]]


@dataclass
class _Kind:
    handler: Handler
    on_failure: FailureHook | None
    max_attempts: int
    lane: Lane


@dataclass
class JobContext:
    """What a running handler gets: its job, progress reporting and the cancellation checkpoint."""

    job: Job
    runner: JobRunner
    cancel_event: asyncio.Event = field(default_factory=asyncio.Event)
    lease_lost: bool = False

    @property
    def cancelled(self) -> bool:
        return self.cancel_event.is_set()

    async def checkpoint(self, progress: float | None = None) -> None:
        """Record progress (0..1) and stop here if the job was cancelled; call it between steps."""
        if self.lease_lost:
            raise _LeaseLost(self.job.id)
        if self.cancel_event.is_set():
            raise JobCancelled(self.job.id)
        if progress is not None:
            self.job.progress = max(0.0, min(1.0, progress))
            await self.runner.sql.update(
                self.runner.table,
                {"progress": self.job.progress, "updated_at": int(time.time())},
                {"id": self.job.id, "lease_owner": self.runner.runner_id},
            )


class JobRunner:
    """Claims and runs jobs of the kinds registered with it; one per process.

    ``workers`` is how many shared worker tasks run jobs of any lane (interactive first);
    ``reserved`` adds, per lane, workers that only claim that lane (none when ``workers`` is 0, which
    makes a submit-and-cancel-only runner). ``lease_seconds`` bounds how long a job
    of a dead process stays ``running`` before another runner resumes it; ``poll_seconds`` is how
    soon an idle runner first looks again for work submitted by other processes (work submitted in
    this process wakes it at once), and the look backs off, doubling, to ``poll_max_seconds`` while
    it finds nothing (see *Idle cost*). ``table`` names the job table (one per deployment; tests
    isolate with it).
    """

    def __init__(
        self,
        sql: SqlStore,
        *,
        workers: int = 2,
        reserved: Mapping[str, int] | Mapping[Lane, int] | None = None,
        lease_seconds: float = 30.0,
        poll_seconds: float = 0.5,
        poll_max_seconds: float = 5.0,
        runner_id: str | None = None,
        table: str = TABLE,
    ) -> None:
        self.sql = sql
        self.table = table
        self.workers = max(0, workers)
        unknown = sorted(set(reserved or {}) - set(LANES))
        if unknown:
            raise ValueError(f"Unknown job lane(s) {unknown} in reserved workers; lanes are {list(LANES)}.")
        self.reserved: dict[str, int] = {lane: max(0, n) for lane, n in (reserved or {}).items()}
        self.lease_seconds = max(1.0, lease_seconds)
        self.poll_seconds = poll_seconds
        self.poll_max_seconds = max(poll_seconds, poll_max_seconds)
        self.runner_id = runner_id or f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        self._kinds: dict[str, _Kind] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._running: dict[str, JobContext] = {}
        self._wake = _Beacon()
        """Fired when there may be work to claim: a local submit, a sweep that re-queued, the poller."""
        self._poke = _Beacon()
        """Fired when the poller should work its wait out again: stop, activity, a nearer due time."""
        self._idle: Counter[str] = Counter()
        """Per lane, how many workers that claim it wait for work (what the poller looks for)."""
        self._poll_interval = poll_seconds
        self._next_due: float | None = None
        """The earliest ``available_at`` of a queued job still ahead, as far as this runner knows."""
        self._due_noted = 0
        self._stopping = False
        self._stopped = asyncio.Event()
        """Set by :meth:`stop` (never cleared by workers, unlike ``_wake``): the sweeper waits on it."""
        self._initialized = False

    # ---- setup ------------------------------------------------------------------------------------

    async def initialize(self) -> None:
        """Create the job table (idempotent); :meth:`submit` works from here on, before :meth:`start`."""
        if self._initialized:
            return
        await self.sql.create_table(
            self.table,
            {
                "id": ColumnDefinition(type=ColumnType.STRING, primary_key=True, nullable=False),
                "kind": ColumnDefinition(type=ColumnType.STRING, index=True),
                "status": ColumnDefinition(type=ColumnType.STRING, index=True),
                "reference": ColumnDefinition(type=ColumnType.STRING, index=True),
                "payload": ColumnType.JSON,
                "progress": ColumnType.FLOAT,
                "result": ColumnType.JSON,
                "error": ColumnType.JSON,
                "attempts": ColumnType.INTEGER,
                "max_attempts": ColumnType.INTEGER,
                "fair_rank": ColumnDefinition(type=ColumnType.INTEGER, index=True),
                "cancel_requested": ColumnType.BOOLEAN,
                "lease_owner": ColumnType.STRING,
                "lease_expires_at": ColumnDefinition(type=ColumnType.FLOAT, index=True),
                "available_at": ColumnType.FLOAT,
                "created_at": ColumnType.TIMESTAMP,
                "created_ns": ColumnDefinition(type=ColumnType.INTEGER, index=True),
                "started_at": ColumnType.TIMESTAMP,
                "claimed_ns": ColumnType.INTEGER,
                "finished_at": ColumnType.TIMESTAMP,
                "updated_at": ColumnType.TIMESTAMP,
                **OWNER_COLUMNS,
            },
        )
        self._initialized = True

    def register(
        self,
        kind: str,
        handler: Handler,
        *,
        on_failure: FailureHook | None = None,
        max_attempts: int = 3,
        lane: Lane = DEFAULT_LANE,
    ) -> None:
        """Run jobs of ``kind`` with ``handler`` in ``lane``; see the module docstring for the hook's contract."""
        if lane not in LANES:
            raise ValueError(f"Unknown job lane '{lane}' for kind '{kind}'; lanes are {list(LANES)}.")
        self._kinds[kind] = _Kind(handler, on_failure, max(1, max_attempts), lane)

    @property
    def kinds(self) -> list[str]:
        return sorted(self._kinds)

    def lane_of(self, kind: str) -> Lane:
        """The lane ``kind`` was registered in (a kind this process does not run counts as bulk)."""
        registered = self._kinds.get(kind)
        return registered.lane if registered is not None else DEFAULT_LANE

    def _lane_kinds(self, lane: str) -> list[str]:
        return [name for name, registered in self._kinds.items() if registered.lane == lane]

    async def start(self) -> None:
        """Sweep expired leases (a previous process may have died) and start the workers."""
        await self.initialize()
        if self._tasks:
            return
        self._stopping = False
        self._stopped.clear()
        await self._rank_unranked()
        await self.reap_expired()
        for index in range(self.workers):
            self._tasks.append(asyncio.create_task(self._worker(index, SHARED_LANES), name=f"job-worker-{index}"))
        if self.workers:
            for lane in LANES:
                for index in range(self.reserved.get(lane, 0)):
                    task = asyncio.create_task(self._worker(index, (lane,)), name=f"job-worker-{lane}-{index}")
                    self._tasks.append(task)
        if self.workers:
            self._tasks.append(asyncio.create_task(self._poller(), name="job-poller"))
        self._tasks.append(asyncio.create_task(self._sweeper(), name="job-sweeper"))

    async def stop(self, grace_seconds: float = 5.0) -> None:
        """Stop claiming, give running handlers ``grace_seconds`` then cancel them.

        A job interrupted here keeps its ``running`` row with a lease that simply expires, so the next
        runner resumes it: stopping is the same as dying, only tidier.
        """
        self._stopping = True
        self._wake.fire()
        self._poke.fire()
        self._stopped.set()
        if not self._tasks:
            return
        _, pending = await asyncio.wait(self._tasks, timeout=grace_seconds)
        for task in pending:
            task.cancel()
        for task in pending:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks = []

    # ---- the public API -------------------------------------------------------------------------------

    async def submit(
        self,
        kind: str,
        payload: Mapping[str, Any] | None = None,
        *,
        reference: str | None = None,
        max_attempts: int | None = None,
        owner: Principal | None = None,
        job_id: str | None = None,
    ) -> Job:
        """Queue a job; the owner defaults to the current principal. Returns the queued job."""
        await self.initialize()
        principal = owner or current_principal()
        registered = self._kinds.get(kind)
        fair_rank = await self._next_rank(kind, principal.id)
        now_s = time.time()
        row = {
            "id": job_id or f"job_{secrets.token_hex(12)}",
            "kind": kind,
            "status": "queued",
            "reference": reference,
            "payload": dict(payload or {}),
            "progress": 0.0,
            "attempts": 0,
            "max_attempts": max_attempts or (registered.max_attempts if registered else 3),
            "fair_rank": fair_rank,
            "cancel_requested": False,
            "available_at": now_s,
            "created_at": int(now_s),
            "created_ns": time.time_ns(),
            "updated_at": int(now_s),
            "owner_principal": principal.id,
            "owner_attributes": principal.attributes,
        }
        await self.sql.insert(self.table, row)
        self._work_queued()
        return Job.from_row(row)

    async def get(self, job_id: str) -> Job:
        row = await self.sql.fetch_one(self.table, {"id": job_id})
        if row is None:
            raise NotFoundError("Job", job_id)
        return Job.from_row(row)

    async def find(self, reference: str, statuses: list[str] | None = None) -> list[Job]:
        """Jobs about ``reference`` (oldest first), optionally only those in ``statuses``."""
        where: list[Any] = [Where.eq("reference", reference)]
        if statuses:
            where.append(Where.in_("status", statuses))
        rows = await self.sql.fetch_all(self.table, where, order_by=[("created_ns", "asc")])
        return [Job.from_row(r) for r in rows]

    async def cancel(self, job_id: str) -> Job:
        """Request cancellation; a queued job ends now, a running one at its next checkpoint."""
        now_s = int(time.time())
        await self.sql.update(
            self.table,
            {"cancel_requested": True, "updated_at": now_s},
            [Where.eq("id", job_id), Where.in_("status", ["queued", "running"])],
        )
        running_here = self._running.get(job_id)
        if running_here is not None:
            running_here.cancel_event.set()
        job = await self.get(job_id)
        if job.status == "queued":
            await self._end_unsuccessfully(job, "cancelled", None, expect_status="queued")
            job = await self.get(job_id)
        return job

    async def wait(self, job_id: str, within: float = 60.0, poll: float = 0.05) -> Job:
        """Poll until the job is terminal (tests and synchronous callers)."""
        deadline = time.monotonic() + within
        while True:
            job = await self.get(job_id)
            if job.status in TERMINAL or time.monotonic() > deadline:
                return job
            await asyncio.sleep(poll)

    # ---- fairness ---------------------------------------------------------------------------------------

    async def _next_rank(self, kind: str, owner: str) -> int:
        """The ``fair_rank`` of a new job: after the owner's own unfinished jobs, never behind the lane.

        Start-time fair queueing with ranks as virtual time: the lane's clock is the lowest rank still
        queued (or, with nothing queued, the highest one running), so a newcomer starts level with the
        head of the queue instead of at 0, and an owner who waited keeps its place. Two submits racing
        may get the same rank; ``created_ns`` breaks the tie.
        """
        lane = self.lane_of(kind)
        kinds = sorted({*self._lane_kinds(lane), kind})
        in_lane = Where.in_("kind", kinds)
        own = await self.sql.fetch_one(
            self.table,
            [in_lane, Where.in_("status", list(UNFINISHED)), Where.eq("owner_principal", owner)],
            order_by=[("fair_rank", "desc")],
        )
        head = await self.sql.fetch_one(
            self.table, [in_lane, Where.eq("status", "queued")], order_by=[("fair_rank", "asc")]
        )
        if head is None:
            head = await self.sql.fetch_one(
                self.table, [in_lane, Where.eq("status", "running")], order_by=[("fair_rank", "desc")]
            )
        after_own = int(own.get("fair_rank") or 0) + 1 if own is not None else 0
        lane_clock = int(head.get("fair_rank") or 0) if head is not None else 0
        return max(after_own, lane_clock)

    async def _rank_unranked(self) -> None:
        """Give rows written before ranks existed rank 0, so every backend orders them alike."""
        await self.sql.update(
            self.table, {"fair_rank": 0}, [Where.in_("status", list(UNFINISHED)), Where.is_null("fair_rank")]
        )

    # ---- claiming and running ----------------------------------------------------------------------

    async def claim_one(self, lanes: tuple[str, ...] = LANES) -> Job | None:
        """Claim the next runnable job of a registered kind, or ``None``; the caller must run it.

        Lanes are tried in ``lanes`` order; within a lane the lowest ``fair_rank`` goes first, then the
        oldest.
        """
        for lane in lanes:
            kinds = self._lane_kinds(lane)
            if not kinds:
                continue
            job = await self._claim_in(kinds)
            if job is not None:
                return job
        return None

    async def _claim_in(self, kinds: list[str]) -> Job | None:
        now_s = time.time()
        row = await self.sql.claim(
            self.table,
            [
                Where.eq("status", "queued"),
                Where.in_("kind", kinds),
                Where.lte("available_at", now_s),
            ],
            {
                "status": "running",
                "lease_owner": self.runner_id,
                "lease_expires_at": now_s + self.lease_seconds,
                "started_at": int(now_s),
                "claimed_ns": time.time_ns(),
                "updated_at": int(now_s),
            },
            order_by=[("fair_rank", "asc"), ("created_ns", "asc")],
        )
        if row is None:
            return None
        attempts = int(row.get("attempts") or 0) + 1
        await self.sql.update(self.table, {"attempts": attempts}, {"id": row["id"], "lease_owner": self.runner_id})
        row["attempts"] = attempts
        return Job.from_row(row)

    async def run_claimed(self, job: Job) -> None:
        """Run a job this runner claimed, with heartbeat, and record how it ended."""
        kind = self._kinds[job.kind]
        ctx = JobContext(job=job, runner=self)
        if job.cancel_requested:
            ctx.cancel_event.set()
        self._running[job.id] = ctx
        token = principal_var.set(Principal(job.owner_principal or "anonymous", job.owner_attributes or {}))
        work = asyncio.create_task(_run_handler(kind.handler, ctx), name=f"job-{job.id}")
        heartbeat = asyncio.create_task(self._heartbeat(ctx, work), name=f"job-heartbeat-{job.id}")
        try:
            try:
                result = await work
            except asyncio.CancelledError:
                if ctx.lease_lost:
                    raise _LeaseLost(job.id) from None
                raise
            await self._finish(job, "succeeded", result=result)
        except _LeaseLost:
            log.warning("job %s: lease lost; another runner owns it now", job.id)
        except JobCancelled:
            await self._end_unsuccessfully(job, "cancelled", None)
        except JobDeferred as exc:
            now_s = time.time()
            changed = await self.sql.update(
                self.table,
                {
                    "status": "queued",
                    "lease_owner": None,
                    "lease_expires_at": None,
                    "available_at": now_s + exc.delay,
                    "attempts": max(0, job.attempts - 1),
                    "updated_at": int(now_s),
                },
                {"id": job.id, "lease_owner": self.runner_id},
            )
            if changed:
                self._note_due(now_s + exc.delay)
        except RetryableJobError as exc:
            if job.attempts < job.max_attempts and not self._stopping:
                available_at = time.time() + exc.delay
                changed = await self.sql.update(
                    self.table,
                    {
                        "status": "queued",
                        "lease_owner": None,
                        "lease_expires_at": None,
                        "available_at": available_at,
                        "error": {"code": exc.code, "message": exc.message},
                        "updated_at": int(time.time()),
                    },
                    {"id": job.id, "lease_owner": self.runner_id},
                )
                if changed:
                    self._note_due(available_at)
            else:
                await self._end_unsuccessfully(job, "failed", {"code": exc.code, "message": exc.message})
        except JobError as exc:
            await self._end_unsuccessfully(job, "failed", {"code": exc.code, "message": exc.message})
        except asyncio.CancelledError:
            raise  # runner stopping: the lease expires and another runner resumes the job
        except Exception as exc:
            log.exception("job %s (%s) failed", job.id, job.kind)
            await self._end_unsuccessfully(
                job, "failed", {"code": "server_error", "message": f"{type(exc).__name__}: {exc}"}
            )
        finally:
            heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await heartbeat
            self._running.pop(job.id, None)
            principal_var.reset(token)

    async def _heartbeat(self, ctx: JobContext, work: asyncio.Task[Any]) -> None:
        """Renew the lease and read the cancel flag; stop the handler at once if the lease is lost."""
        interval = self.lease_seconds / 3
        while True:
            await asyncio.sleep(interval)
            try:
                renewed = await self.sql.update(
                    self.table,
                    {"lease_expires_at": time.time() + self.lease_seconds, "updated_at": int(time.time())},
                    {"id": ctx.job.id, "lease_owner": self.runner_id, "status": "running"},
                )
                if not renewed:
                    ctx.lease_lost = True
                    work.cancel()
                    return
                row = await self.sql.fetch_one(self.table, {"id": ctx.job.id})
                if row is not None and row.get("cancel_requested"):
                    ctx.cancel_event.set()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a storage hiccup: try again next beat, the lease has slack
                log.warning("job %s: heartbeat failed: %s", ctx.job.id, exc)

    async def _finish(self, job: Job, status: str, *, result: Any = None, error: dict[str, Any] | None = None) -> bool:
        now_s = int(time.time())
        values: dict[str, Any] = {
            "status": status,
            "finished_at": now_s,
            "updated_at": now_s,
            "lease_owner": None,
            "lease_expires_at": None,
            "error": error,
        }
        if status == "succeeded":
            values["progress"] = 1.0
            values["result"] = result
        changed = await self.sql.update(self.table, values, {"id": job.id, "lease_owner": self.runner_id})
        return bool(changed)

    async def _end_unsuccessfully(
        self,
        job: Job,
        status: Literal["failed", "cancelled"],
        error: dict[str, Any] | None,
        *,
        expect_status: str | None = None,
        expect_lease: tuple[str | None, float | None] | None = None,
    ) -> None:
        """Run the kind's failure hook, then write the terminal status (conditionally).

        Without ``expect_*`` the job must still be leased by this runner; the sweeper and ``cancel``
        pass the state they observed instead, so a concurrent change wins and nothing is overwritten.
        """
        kind = self._kinds.get(job.kind)
        final = job.model_copy(update={"status": status, "error": error})
        if kind is not None and kind.on_failure is not None:
            token = principal_var.set(Principal(job.owner_principal or "anonymous", job.owner_attributes or {}))
            try:
                await kind.on_failure(final)
            except Exception:
                log.exception("job %s: on_failure hook raised", job.id)
            finally:
                principal_var.reset(token)
        now_s = int(time.time())
        where: dict[str, Any] = {"id": job.id}
        if expect_status is not None:
            where["status"] = expect_status
        elif expect_lease is not None:
            where.update(status="running", lease_owner=expect_lease[0], lease_expires_at=expect_lease[1])
        else:
            where["lease_owner"] = self.runner_id
        await self.sql.update(
            self.table,
            {
                "status": status,
                "error": error,
                "finished_at": now_s,
                "updated_at": now_s,
                "lease_owner": None,
                "lease_expires_at": None,
            },
            where,
        )

    async def reap_expired(self) -> int:
        """Re-queue (or give up on) ``running`` jobs whose lease expired; returns how many were handled.

        Only kinds registered here are touched, so the failure hook of the kind can always run.
        """
        if not self._kinds:
            return 0
        now_s = time.time()
        rows = await self.sql.fetch_all(
            self.table,
            [
                Where.eq("status", "running"),
                Where.in_("kind", list(self._kinds)),
                Where.lt("lease_expires_at", now_s),
            ],
        )
        handled = 0
        for row in rows:
            job = Job.from_row(row)
            lease = (row.get("lease_owner"), row.get("lease_expires_at"))
            if job.cancel_requested:
                await self._end_unsuccessfully(job, "cancelled", None, expect_lease=lease)
            elif job.attempts >= job.max_attempts:
                message = (
                    f"The job was interrupted {job.attempts} time(s) (its server stopped while it ran) "
                    "and was given up; submit it again."
                )
                log.warning("job %s (%s): giving up after %d attempts", job.id, job.kind, job.attempts)
                await self._end_unsuccessfully(
                    job, "failed", {"code": "job_interrupted", "message": message}, expect_lease=lease
                )
            else:
                log.info("job %s (%s): lease expired, resuming (attempt %d)", job.id, job.kind, job.attempts + 1)
                await self.sql.update(
                    self.table,
                    {
                        "status": "queued",
                        "lease_owner": None,
                        "lease_expires_at": None,
                        "available_at": now_s,
                        "updated_at": int(now_s),
                    },
                    {"id": job.id, "status": "running", "lease_owner": lease[0], "lease_expires_at": lease[1]},
                )
                self._work_queued()
            handled += 1
        return handled

    async def _worker(self, index: int, lanes: tuple[str, ...]) -> None:
        while not self._stopping:
            wake = self._wake.ticket()  # before the claim: a submit during it must not be missed
            failed = False
            try:
                job = await self.claim_one(lanes)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("job worker %d: claim failed: %s", index, exc)
                job, failed = None, True
            if job is None:
                # Idle: wait to be woken (a local submit, a sweep, the poller); after a failed claim
                # try again on our own too, as the store may be back before the poller looks.
                await self._wait_idle(wake, lanes, self.poll_seconds if failed else None)
                continue
            self._active()
            try:
                await self.run_claimed(job)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # storage failed while recording the end; the lease will expire
                log.warning("job worker %d: job %s: %s", index, job.id, exc)

    async def _wait_idle(self, wake: asyncio.Event, lanes: tuple[str, ...], retry_after: float | None) -> None:
        self._idle.update(lanes)
        if self._next_due is not None:
            self._poke.fire()  # the poller skipped a due time while no worker of its lane was idle
        try:
            if retry_after is None:
                await wake.wait()
            else:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), retry_after)
        finally:
            self._idle.subtract(lanes)

    # ---- idle polling (see *Idle cost* in the module docstring) -------------------------------------

    def _work_queued(self) -> None:
        """Work was queued (or re-queued) in this process: wake the workers, and poll eagerly again."""
        self._wake.fire()
        self._active()

    def _active(self) -> None:
        """A claim or a local submit: the poller's wait goes back to ``poll_seconds``."""
        if self._poll_interval > self.poll_seconds:
            self._poll_interval = self.poll_seconds
            self._poke.fire()

    def _note_due(self, available_at: float) -> None:
        """This runner re-queued a job for later: the poller looks again when it is due."""
        self._due_noted += 1
        if self._next_due is None or available_at < self._next_due:
            self._next_due = available_at
            self._poke.fire()

    def _idle_lanes(self) -> list[str]:
        return [lane for lane in LANES if self._idle[lane] > 0]

    async def _poller(self) -> None:
        """Find work this process did not queue itself, for the workers that wait; one per runner."""
        while not self._stopping:
            poked = self._poke.ticket()
            delay = self._poll_interval
            if self._next_due is not None and self._idle_lanes():
                delay = min(delay, max(0.0, self._next_due - time.time()))
            try:
                await asyncio.wait_for(poked.wait(), delay)
                continue  # stopping, activity or a nearer due time: work the wait out again
            except TimeoutError:
                pass
            lanes = self._idle_lanes()
            found = False
            if lanes:
                try:
                    found = await self._look(lanes)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    log.warning("job poll failed: %s", exc)
            if found:
                self._poll_interval = self.poll_seconds
                self._wake.fire()
            else:
                self._poll_interval = min(self._poll_interval * 2, self.poll_max_seconds)

    async def _look(self, lanes: list[str]) -> bool:
        """Whether a queued job of ``lanes`` is claimable now; also learns when the next one is due.

        One read, no lock: the earliest ``available_at`` among queued jobs of the lanes' kinds.
        """
        kinds = [kind for lane in lanes for kind in self._lane_kinds(lane)]
        noted = self._due_noted
        row = None
        if kinds:
            row = await self.sql.fetch_one(
                self.table,
                [Where.eq("status", "queued"), Where.in_("kind", kinds)],
                order_by=[("available_at", "asc")],
            )
        at = float(row.get("available_at") or 0.0) if row is not None else None
        claimable = at is not None and at <= time.time()
        known = [] if at is None or claimable else [at]
        if self._due_noted != noted and self._next_due is not None:
            known.append(self._next_due)  # noted while we read: the read may not have seen it
        self._next_due = min(known, default=None)
        return claimable

    async def _sweeper(self) -> None:
        interval = max(0.5, self.lease_seconds / 2)
        while not self._stopping:
            # Wakes at once on stop: a plain sleep held every stop for its whole grace period.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopped.wait(), interval)
            if self._stopping:
                return
            try:
                await self.reap_expired()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("job sweep failed: %s", exc)
