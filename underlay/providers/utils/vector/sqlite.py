"""A SQLite database driven from asyncio: a small pool of worker threads, one connection each.

Why threads and not aiosqlite: a vector query is several statements plus numpy work that must see
one consistent snapshot, and an upsert touches three tables that must change together. Running each
whole operation as one function on a worker thread gives it a private connection and a real
transaction, keeps the event loop free while SQLite (or numpy, or faiss, all of which release the
GIL) works, and lets reads run in parallel under WAL.

Writers in this process take a lock before ``BEGIN IMMEDIATE``, so they queue in Python instead of
spinning on SQLite's busy handler; writers in other processes are handled by WAL plus a generous
busy timeout, as in the storage layer.

The driver is ``pysqlite3`` when it is installed (a current SQLite that can load extensions, which
this machine's stdlib ``sqlite3`` cannot), else the stdlib module. Everything here except loading
sqlite-vec works on either.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar

from pydantic import ValidationInfo

T = TypeVar("T")

BUSY_TIMEOUT_S = 30.0
MEMORY = ":memory:"


def sqlite_driver(*, need_extensions: bool = False) -> ModuleType:
    """The DB-API module to use: pysqlite3 if importable, else stdlib ``sqlite3``.

    Raises RuntimeError with the fix when extensions are needed and neither can load them.
    """
    try:
        import pysqlite3.dbapi2 as driver  # type: ignore[import-not-found]

        return driver
    except ImportError:
        import sqlite3 as driver

    if need_extensions and not hasattr(driver.Connection, "enable_load_extension"):
        raise RuntimeError(
            "This Python's sqlite3 cannot load extensions (needed for sqlite-vec). "
            "Install an SQLite that can: pip install pysqlite3-binary"
        )
    return driver


Connection = Any  # a DB-API connection from whichever driver sqlite_driver() picked
Setup = Callable[[Connection], None]


class SqliteDatabase:
    """One SQLite file (or ``:memory:``) used from async code through a thread pool.

    ``setup`` runs once on every new connection (load extensions, create schema). An in-memory
    database is private to its connection, so it gets exactly one thread.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        threads: int = 4,
        setup: Setup | None = None,
        need_extensions: bool = False,
        name: str = "vector",
    ) -> None:
        self.path = str(path)
        self.in_memory = self.path == MEMORY
        self._driver = sqlite_driver(need_extensions=need_extensions)
        self._setup = setup
        self._local = threading.local()
        self._connections: list[Connection] = []
        self._connections_lock = threading.Lock()
        self._write_lock = threading.Lock()
        workers = 1 if self.in_memory else max(1, threads)
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=f"underlay-{name}")
        self._closed = False

    @property
    def driver(self) -> ModuleType:
        return self._driver

    async def open(self) -> None:
        """Open one connection now (creating the file's directory), so configuration errors surface early."""
        await self.run(lambda conn: None)

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(conn, *args)`` on a worker thread with that thread's connection."""
        if self._closed:
            raise RuntimeError(f"The SQLite database {self.path} is closed.")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, partial(self._call, fn, *args))

    def _call(self, fn: Callable[..., T], *args: Any) -> T:
        return fn(self._connection(), *args)

    def _connection(self) -> Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            if not self.in_memory:
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            conn = self._driver.connect(
                self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False
            )
            conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
            if not self.in_memory:
                conn.execute("PRAGMA journal_mode = WAL")
                conn.execute("PRAGMA synchronous = NORMAL")
            if self._setup is not None:
                self._setup(conn)
            self._local.conn = conn
            with self._connections_lock:
                self._connections.append(conn)
        return conn

    @contextmanager
    def writing(self, conn: Connection) -> Iterator[Connection]:
        """A write transaction (``BEGIN IMMEDIATE``), one writer at a time in this process."""
        with self._write_lock:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    @contextmanager
    def reading(self, conn: Connection) -> Iterator[Connection]:
        """A read transaction: every statement inside sees the same snapshot."""
        conn.execute("BEGIN")
        try:
            yield conn
        finally:
            conn.execute("COMMIT")

    async def close(self) -> None:
        """Finish running work, then close every connection."""
        if self._closed:
            return
        self._closed = True
        await asyncio.get_running_loop().run_in_executor(None, self._executor.shutdown, True)
        with self._connections_lock:
            for conn in self._connections:
                conn.close()
            self._connections.clear()


def state_path(value: str, info: ValidationInfo) -> str:
    """A config path with ``~`` expanded; a relative one resolves under the run config's state directory.

    The stack passes ``state_dir`` as validation context; without it (tests, direct use) a relative
    path stays relative to the working directory.
    """
    path = Path(os.path.expanduser(value))
    state_dir = (info.context or {}).get("state_dir")
    if not path.is_absolute() and state_dir:
        path = Path(state_dir) / path
    return str(path)


def quote_identifier(name: str) -> str:
    """A double-quoted SQL identifier (names come from ``sanitize_index_name`` but quote anyway)."""
    return '"' + name.replace('"', '""') + '"'
