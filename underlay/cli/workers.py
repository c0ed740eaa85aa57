"""Several server processes behind one port (``server.workers > 1``).

Why a small supervisor of our own rather than uvicorn's ``workers=``: every worker must build its own
stack after it starts (database pools, the job runner and model runtimes do not survive a fork), a
worker that cannot start must stop the whole server with its one-line error instead of being
restarted in a loop, and the parent must stay trivial so that the orchestrator (Kubernetes, systemd)
is what restarts a failed server. Work never lives in one worker's memory: jobs are rows that any
worker of any replica claims, so losing a worker loses nothing.

The parent binds the socket once and hands it to each worker (spawned, not forked); the kernel spreads
connections across the processes accepting on it. SIGTERM or SIGINT to the parent is passed on once
to every worker, which drains its requests and stops its stack; the parent exits when they have.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import socket
import sys
import threading
import time
from multiprocessing.connection import wait
from typing import Any

_POLL_S = 0.5


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def serve_workers(source: str, overrides: dict[str, Any], config: Any) -> int:
    """Run ``config.server.workers`` worker processes until a signal or a worker's exit; the exit status."""
    from underlay.core.config import ConfigError

    count = config.server.workers
    try:
        sock = _bind(config.server.host, config.server.port)
    except OSError as exc:
        raise ConfigError(
            f"{config.source}: server.port: cannot listen on {config.server.host}:{config.server.port} ({exc}); "
            "choose a free port or stop the process using it"
        ) from None
    ctx = multiprocessing.get_context("spawn")
    parent = os.getpid()
    processes = [
        ctx.Process(
            target=worker_main,
            args=(source, overrides, sock, f" worker {n + 1}/{count}", parent),
            name=f"underlay-worker-{n + 1}",
        )
        for n in range(count)
    ]
    stop_requested: list[int] = []
    previous = {sig: signal.signal(sig, lambda signum, _: stop_requested.append(signum)) for sig in _STOP_SIGNALS}
    try:
        for process in processes:
            process.start()
        sock.close()  # the workers hold their own copies
        exit_code = 0
        while not stop_requested:
            ended = wait([p.sentinel for p in processes], timeout=_POLL_S)
            if ended:
                failed = next(p for p in processes if p.sentinel in ended)
                failed.join()
                # A worker never stops on its own while the server runs; a signal death reads as 1.
                exit_code = failed.exitcode if failed.exitcode and failed.exitcode > 0 else 1
                print(f"error: {failed.name} exited with status {failed.exitcode}; stopping", file=sys.stderr)
                break
        _stop(processes, config.server.shutdown_grace_seconds)
        return exit_code
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def _stop(processes: list[Any], grace_seconds: float) -> None:
    """SIGTERM each live worker once, wait for its graceful stop, and kill what outlives the grace."""
    for process in processes:
        if process.is_alive() and process.pid is not None:
            os.kill(process.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_seconds + 10
    for process in processes:
        process.join(max(0.0, deadline - time.monotonic()))
        if process.is_alive():
            process.kill()
            process.join(5)


def _exit_with_parent(parent: int) -> None:
    """Stop this worker gracefully when the parent is gone (SIGKILLed), so no worker is left orphaned."""
    while os.getppid() == parent:
        time.sleep(1)
    os.kill(os.getpid(), signal.SIGTERM)


def worker_main(source: str, overrides: dict[str, Any], sock: socket.socket, label: str, parent: int) -> None:
    """A worker process: load the config as the parent did, build its own stack and serve ``sock``."""
    from underlay.cli.main import _run_event_loop, _serve, load_config
    from underlay.core.config import ConfigError
    from underlay.core.storage.kvstore import StorageUnavailableError

    # Own process group: a terminal's Ctrl-C reaches the parent alone, which stops each worker once.
    os.setpgrp()
    threading.Thread(target=_exit_with_parent, args=(parent,), name="parent-watch", daemon=True).start()
    try:
        config = load_config(source, overrides)
        _run_event_loop(_serve(config, sockets=[sock], worker=label))
    except (ConfigError, StorageUnavailableError) as exc:
        print(f"error:{label}: {exc}", file=sys.stderr, flush=True)
        sys.exit(2)
    except KeyboardInterrupt:
        pass
