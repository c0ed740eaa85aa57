"""The stack in this process, served on a free loopback port by a thread of its own.

Why a loopback server and not an in-memory transport:

- The sync ``openai`` client needs a sync transport, while the stack's resources (SQLite connections,
  the job runner, model threads) belong to the event loop that started them and must keep running
  between two calls of a sync client. A thread with its own event loop is needed either way.
- An in-memory ASGI transport buffers a streamed response until the handler finishes, so
  ``stream=True`` would arrive all at once; uvicorn streams each event as it is produced.
- Over a socket the app runs exactly as ``underlay run`` serves it (middleware, client address,
  errors), so an agent tried in process behaves the same against a server.

The cost is one loopback port (bound by us on ``127.0.0.1:0``, so there is no race for it) and the
loopback round trip: ``bench/sdk_in_process.py`` measured p50 2.4 ms per SDK call against 0.8 ms over
an in-memory transport, on two shared cores. TLS settings of the config are not applied: the
socket only accepts connections from this machine.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["InProcessServer"]

START_TIMEOUT_S = 900.0
"""Long enough for a stack that loads its models at start; a failure ends the wait at once."""


def _load(config: Any, env: Mapping[str, str] | None) -> Any:
    from underlay.core.config import RunConfig, load_run_config, parse_run_config

    if isinstance(config, RunConfig):
        return config.model_copy(deep=True)
    if isinstance(config, Mapping):
        return parse_run_config(dict(config), source="<in-process config>", env=env)
    if isinstance(config, str | Path):
        return load_run_config(str(config), env=env)
    raise TypeError(f"config: expected a distribution name, a YAML path or a run config, not {type(config).__name__}")


class InProcessServer:
    """One stack and the uvicorn server in front of it, on a daemon thread; :meth:`stop` ends both."""

    def __init__(self, config: Any) -> None:
        self.config = config
        # IPPROTO_TCP said outright: asyncio switches Nagle off (TCP_NODELAY) only on connections whose
        # socket says so, and a socket made with protocol 0 does not. With Nagle on, uvicorn's separate
        # writes of headers and body wait out the client's delayed ACK: about 44 ms per call, not 0.5 ms.
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind(("127.0.0.1", 0))
        self.port: int = self._socket.getsockname()[1]
        config.server.host = "127.0.0.1"
        config.server.port = self.port
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._server: Any = None
        self._thread = threading.Thread(target=self._run, name=f"underlay-in-process-{self.port}", daemon=True)

    @property
    def v1(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @classmethod
    def start(
        cls, config: Any, *, env: Mapping[str, str] | None = None, timeout: float = START_TIMEOUT_S
    ) -> InProcessServer:
        """Load ``config``, start the stack and serve it; returns once requests are answered.

        A config mistake raises its one-line ``ConfigError`` here, before any thread starts; a failure
        while the stack starts is raised here too, as it was raised there.
        """
        server = cls(_load(config, env))
        server._thread.start()
        if not server._ready.wait(timeout):
            server.stop()
            raise TimeoutError(f"the in-process Underlay stack did not start in {timeout:.0f}s")
        if server._error is not None:
            server._thread.join(30)
            raise server._error
        return server

    def _run(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:  # reported to the starting thread, or lost after a clean start
            if not self._ready.is_set():
                self._error = exc
        finally:
            self._socket.close()
            self._ready.set()

    async def _serve(self) -> None:
        import uvicorn

        from underlay.core.stack import Stack
        from underlay.server.app import create_app

        ready = self._ready

        class _Server(uvicorn.Server):
            async def startup(self, sockets: list[socket.socket] | None = None) -> None:
                await super().startup(sockets)
                if self.started:
                    ready.set()

        stack = Stack(self.config)
        try:
            await stack.start()
            app = create_app(self.config, stack)
            self._server = _Server(
                uvicorn.Config(
                    app,
                    log_level="warning",  # a library: uvicorn says nothing unless something is wrong
                    access_log=False,
                    timeout_graceful_shutdown=self.config.server.shutdown_grace_seconds,
                )
            )
            await self._server.serve(sockets=[self._socket])
        finally:
            await stack.stop()

    def stop(self, timeout: float = 60) -> None:
        """Stop serving (requests in flight finish first) and stop the stack; safe to call twice."""
        if self._server is not None:
            self._server.should_exit = True
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout)
