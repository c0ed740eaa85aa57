"""Sharing loaded models between concurrent requests without blocking the event loop.

Each configured model gets a :class:`ModelPool`: up to ``max_concurrent`` *slots*, each an
:class:`~.engine.Engine` with its own single-thread executor. A request acquires a slot (waiting in
arrival order when all are busy), runs one *job* on the slot's thread, and gives the slot back when
that thread is done, not when the request's coroutine ends. That ordering is what keeps a
non-thread-safe ``Llama`` safe: a client that disconnects mid-stream cancels the job, but the next
request only gets the slot once the worker has really stopped touching it.

Slots are created on demand, so a model that is never used is never loaded, and a second slot
(another KV cache) only appears under real concurrency.

A job talks back through :class:`JobHandle`: events it emits are posted to an ``asyncio.Queue`` with
``call_soon_threadsafe``, so streaming consumers ``await`` tokens while the loop stays free.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import threading
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from underlay.api.errors import RateLimitedError

if TYPE_CHECKING:
    from underlay.providers.inline.inference.llama_cpp.engine import Engine

logger = logging.getLogger(__name__)

R = TypeVar("R")
Emit = Callable[[Any], None]
Job = Callable[["Engine", Emit, threading.Event], R]

_DONE = object()


class _Slot:
    """One engine plus the only thread allowed to use it."""

    def __init__(self, name: str, index: int) -> None:
        self.executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"llama-{name}-{index}")
        self.engine: Engine | None = None


class JobHandle(Generic[R]):
    """A running job: its events as an async iterator, its result, and a way to stop it."""

    def __init__(self, future: asyncio.Future[R], queue: asyncio.Queue[Any], cancel: threading.Event) -> None:
        self._future = future
        self._queue = queue
        self._cancel = cancel

    def cancel(self) -> None:
        """Ask the job to stop before its next token (idempotent; the slot frees once it has)."""
        self._cancel.set()

    async def events(self) -> AsyncIterator[Any]:
        """Events in the order the job emitted them; ends when the job ends (its error is not raised
        here; await :meth:`result` for that)."""
        while True:
            item = await self._queue.get()
            if item is _DONE:
                return
            yield item

    async def next_event(self) -> Any:
        """The next event, or ``None`` once the job has finished."""
        item = await self._queue.get()
        if item is _DONE:
            self._queue.put_nowait(_DONE)
            return None
        return item

    async def result(self) -> R:
        """The job's return value (or its exception). Cancelling the awaiting task cancels the job."""
        try:
            return await asyncio.shield(self._future)
        except asyncio.CancelledError:
            self.cancel()
            raise


class ModelPool:
    """The slots of one model and the queue in front of them."""

    def __init__(
        self,
        name: str,
        loader: Callable[[], Engine],
        *,
        max_concurrent: int = 1,
        max_queued: int = 64,
    ) -> None:
        self.name = name
        self._loader = loader
        self._max_queued = max_queued
        self._sem = asyncio.Semaphore(max_concurrent)
        self._max_concurrent = max_concurrent
        self._idle: list[_Slot] = []
        self._slots: list[_Slot] = []
        self._waiting = 0
        self._closed = False
        self._running: set[threading.Event] = set()

    @property
    def loaded(self) -> bool:
        return any(s.engine is not None for s in self._slots)

    @property
    def busy(self) -> int:
        return len(self._running)

    @property
    def waiting(self) -> int:
        return self._waiting

    async def _acquire(self) -> _Slot:
        if self._sem.locked() and self._waiting >= self._max_queued:
            raise RateLimitedError(
                f"Model '{self.name}' is busy: {self._waiting} requests are already waiting. Retry shortly.",
                code="model_busy",
                headers={"Retry-After": "2"},
            )
        self._waiting += 1
        try:
            await self._sem.acquire()
        finally:
            self._waiting -= 1
        if self._idle:
            return self._idle.pop()
        slot = _Slot(self.name, len(self._slots))
        self._slots.append(slot)
        return slot

    def _release(self, slot: _Slot) -> None:
        if slot.engine is None:
            # Loading failed: drop the slot so the next request tries afresh.
            self._slots.remove(slot)
            slot.executor.shutdown(wait=False)
        else:
            self._idle.append(slot)
        self._sem.release()

    @staticmethod
    def _run_on_slot(slot: _Slot, loader: Callable[[], Engine], job: Job[R], emit: Emit, cancel: threading.Event) -> R:
        if slot.engine is None:
            slot.engine = loader()
        return job(slot.engine, emit, cancel)

    async def submit(self, job: Job[R]) -> JobHandle[R]:
        """Queue ``job`` for a slot of this model; returns once the job has started on one."""
        if self._closed:
            raise RuntimeError(f"model pool '{self.name}' is shut down")
        slot = await self._acquire()
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Any] = asyncio.Queue()
        cancel = threading.Event()

        def emit(event: Any) -> None:
            with contextlib.suppress(RuntimeError):  # the loop is gone (shutdown): nobody listens
                loop.call_soon_threadsafe(queue.put_nowait, event)

        self._running.add(cancel)
        try:
            future = loop.run_in_executor(slot.executor, self._run_on_slot, slot, self._loader, job, emit, cancel)
        except BaseException:
            self._running.discard(cancel)
            self._release(slot)
            raise

        def done(_: asyncio.Future[Any]) -> None:
            self._running.discard(cancel)
            self._release(slot)
            queue.put_nowait(_DONE)

        future.add_done_callback(done)
        return JobHandle(future, queue, cancel)

    async def warm(self) -> None:
        """Load one slot now (``preload``) instead of on the first request."""
        handle = await self.submit(lambda engine, emit, cancel: None)
        await handle.result()

    async def close(self) -> None:
        """Stop running jobs, wait for their threads, and free every engine."""
        self._closed = True
        for cancel in list(self._running):
            cancel.set()
        loop = asyncio.get_running_loop()
        for slot in list(self._slots):
            await loop.run_in_executor(None, slot.executor.shutdown, True)
            if slot.engine is not None:
                slot.engine.close()
                slot.engine = None
        self._slots.clear()
        self._idle.clear()
