"""SQLAlchemy's asyncio engine, the part the SQL store uses, without importing SQLAlchemy's ORM.

Why not ``sqlalchemy.ext.asyncio``: that package imports its ORM session (``AsyncSession``) and with
it the whole ORM, which cost every start about 80 ms of CPU and 8 MB of memory, and nothing here uses
an ORM session. What the store needs is small: an engine that hands out connections, transactions on
them, and statements run on them. Each method below does what the extension's ``AsyncEngine``,
``AsyncConnection`` and ``AsyncTransaction`` do for it: it runs the synchronous Core method in
SQLAlchemy's greenlet bridge (``greenlet_spawn``), inside which the asyncio driver (aiosqlite, asyncpg)
awaits its I/O. Results come back buffered, as the extension's ``execute`` returns them.

The engine itself is a plain :func:`sqlalchemy.create_engine` on an asyncio driver's URL: for
``sqlite+aiosqlite`` and ``postgresql+asyncpg`` that gives the same dialect and the same asyncio
connection pool as ``create_async_engine``. The store's contract tests run on both backends.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from types import TracebackType
from typing import Any, Concatenate, ParamSpec, TypeVar

from sqlalchemy import URL, create_engine
from sqlalchemy.engine import Connection, CursorResult, Dialect, Engine, Transaction
from sqlalchemy.sql.base import Executable
from sqlalchemy.util import greenlet_spawn

_T = TypeVar("_T")
_P = ParamSpec("_P")


def create_async_engine(url: URL, **kwargs: Any) -> AsyncEngine:
    """An engine on an asyncio driver's URL (``sqlite+aiosqlite``, ``postgresql+asyncpg``)."""
    engine = create_engine(url, **kwargs)
    if not engine.dialect.is_async:
        raise ValueError(f"{url.drivername} is not an asyncio driver; use e.g. sqlite+aiosqlite or postgresql+asyncpg")
    return AsyncEngine(engine)


async def _finish(cleanup: Coroutine[Any, Any, None]) -> None:
    """Run ``cleanup`` to its end even when the calling task is cancelled meanwhile, then re-raise that.

    Why: a connection whose close was cut short (its request's task cancelled by a client that went
    away) could otherwise go back to the pool later, in the background, after the pool was disposed of.
    """
    task = asyncio.ensure_future(cleanup)
    interrupted: asyncio.CancelledError | None = None
    while not task.done():
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError as exc:
            interrupted = exc  # the clean-up goes on in its own task: wait for it again
    task.result()  # the clean-up's own error, if it failed
    if interrupted is not None:
        raise interrupted


class AsyncEngine:
    """A Core :class:`Engine` on an asyncio driver; ``sync_engine`` takes SQLAlchemy event listeners."""

    def __init__(self, sync_engine: Engine) -> None:
        self.sync_engine = sync_engine

    @property
    def dialect(self) -> Dialect:
        return self.sync_engine.dialect

    def connect(self) -> AsyncConnection:
        """A connection from the pool, for ``async with``: it goes back to the pool on exit."""
        return AsyncConnection(self)

    async def dispose(self, close: bool = True) -> None:
        """Close the pool's checked-in connections (see :meth:`Engine.dispose`)."""
        await greenlet_spawn(self.sync_engine.dispose, close=close)


class AsyncConnection:
    """One pooled connection; each method runs its :class:`Connection` counterpart in the greenlet bridge."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self._sync: Connection | None = None

    @property
    def sync_connection(self) -> Connection:
        if self._sync is None:
            raise RuntimeError("The connection is not started; use it with 'async with engine.connect()'.")
        return self._sync

    @property
    def dialect(self) -> Dialect:
        return self.sync_connection.dialect

    async def __aenter__(self) -> AsyncConnection:
        self._sync = await greenlet_spawn(self.engine.sync_engine.connect)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await _finish(self.close())

    async def close(self) -> None:
        """Return the connection to the pool (rolling back a transaction still open)."""
        await greenlet_spawn(self.sync_connection.close)

    def begin(self) -> AsyncTransaction:
        """A transaction for ``async with``: committed on a clean exit, rolled back on an exception."""
        return AsyncTransaction(self)

    async def execution_options(self, **options: Any) -> AsyncConnection:
        """Set execution options on this connection (it is changed in place, as a Core connection is)."""
        await greenlet_spawn(self.sync_connection.execution_options, **options)
        return self

    async def execute(self, statement: Executable, parameters: Any = None) -> CursorResult[Any]:
        """Run ``statement``; the result is buffered, so reading it needs no further awaiting."""
        return await greenlet_spawn(self.sync_connection.execute, statement, parameters, _require_await=True)

    async def exec_driver_sql(self, statement: str, parameters: Any = None) -> CursorResult[Any]:
        """Run SQL text in the driver's own parameter style (one tuple, or a list of them for executemany)."""
        return await greenlet_spawn(self.sync_connection.exec_driver_sql, statement, parameters, _require_await=True)

    async def scalar(self, statement: Executable, parameters: Any = None) -> Any:
        """The first column of the first row ``statement`` returns (``None`` when none)."""
        return (await self.execute(statement, parameters)).scalar()

    async def run_sync(self, fn: Callable[Concatenate[Connection, _P], _T], *args: _P.args, **kwargs: _P.kwargs) -> _T:
        """Call ``fn(connection, *args)`` with the synchronous connection (e.g. to inspect or create tables)."""
        return await greenlet_spawn(fn, self.sync_connection, *args, _require_await=False, **kwargs)

    async def commit(self) -> None:
        await greenlet_spawn(self.sync_connection.commit)

    async def rollback(self) -> None:
        await greenlet_spawn(self.sync_connection.rollback)


class AsyncTransaction:
    """``async with connection.begin()``: the Core :class:`Transaction`'s own context manager, awaited."""

    def __init__(self, connection: AsyncConnection) -> None:
        self.connection = connection
        self._sync: Transaction | None = None

    async def __aenter__(self) -> AsyncTransaction:
        self._sync = await greenlet_spawn(self.connection.sync_connection.begin)
        self._sync.__enter__()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        assert self._sync is not None
        await greenlet_spawn(self._sync.__exit__, exc_type, exc, tb)
