"""The ``underlay`` command line: run a distribution, list providers and distributions, manage models.

Every expected failure prints one line to stderr and exits non-zero; no tracebacks for config mistakes.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import signal
import sys
from collections.abc import Sequence
from typing import Any

import underlay
from underlay.cli.agent_cmd import add_agent_parser
from underlay.cli.datasets_cmd import add_datasets_parser
from underlay.cli.eval_cmd import add_eval_parser
from underlay.cli.fine_tune_cmd import add_fine_tune_parser
from underlay.cli.models_cmd import add_models_parser


def _cmd_run(args: argparse.Namespace) -> int:
    from underlay.core.config import ConfigError
    from underlay.core.storage.kvstore import StorageUnavailableError

    overrides = {"host": args.host or None, "port": args.port}
    try:
        config = load_config(args.config, overrides)
        if config.server.workers > 1:
            from underlay.cli.workers import serve_workers

            return serve_workers(args.config, overrides, config)
        _run_event_loop(_serve(config))
    except (ConfigError, StorageUnavailableError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 0
    return 0


def load_config(source: str, overrides: dict[str, Any]) -> Any:
    """The run config with the command line's ``--host``/``--port`` applied (workers load it the same way)."""
    from underlay.core.config import load_run_config

    config = load_run_config(source)
    if overrides.get("host"):
        config.server.host = overrides["host"]
    if overrides.get("port") is not None:
        config.server.port = overrides["port"]
    return config


def _run_event_loop(main: Any) -> None:
    """Run on uvloop when it is installed (it ships with uvicorn[standard]): cheaper per request."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
    else:
        uvloop.run(main)


def _tune_gc() -> None:
    """Keep full collections off the request path, and switch the collector back on after start-up.

    Start-up runs with the collector off (see :func:`_serve`): importing and building the stack creates
    a few hundred thousand objects that almost all stay alive, so the hundreds of collections it used to
    trigger found next to nothing and cost about a tenth of a start's CPU. Everything alive now (modules,
    configs, routers) is moved out of the collector's view without a last full pass: that pass cost
    0.1-0.15 CPU seconds to free about 6,000 objects (a megabyte or so of start-up leftovers, which stay,
    as with the freeze-before-fork pattern the ``gc`` docs describe). Collections then run less often:
    with model runtimes loaded the heap is large, and a full pass over it stalled requests for a few
    hundred milliseconds.
    """
    gc.freeze()
    gc.set_threshold(10_000, 50, 100)
    gc.enable()


async def _serve(config: Any, sockets: list[Any] | None = None, worker: str = "") -> None:
    """Start the stack, then serve it; ``sockets`` (already bound) and ``worker`` come from a worker process."""
    gc.disable()  # until _tune_gc switches it back on once the app is built (here, when start-up fails)
    try:
        await _start_and_serve(config, sockets, worker)
    finally:
        gc.enable()


async def _start_and_serve(config: Any, sockets: list[Any] | None, worker: str) -> None:
    import uvicorn

    from underlay.core.stack import Stack
    from underlay.core.telemetry.logs import configure_logging
    from underlay.server.app import create_app
    from underlay.server.tls import uvicorn_ssl_options

    configure_logging(config)
    stack = Stack(config)
    try:
        await stack.start()
        app = create_app(config, stack)
        _tune_gc()
        server = uvicorn.Server(
            uvicorn.Config(
                app,
                host=config.server.host,
                port=config.server.port,
                log_level=config.server.log_level,
                timeout_graceful_shutdown=config.server.shutdown_grace_seconds,
                access_log=False,
                **uvicorn_ssl_options(config),
            )
        )
        scheme = "https" if config.server.tls is not None else "http"
        print(
            f"Underlay {underlay.__version__} ({config.distribution}){worker} on {scheme}://{config.server.host}:"
            f"{config.server.port}/v1",
            file=sys.stderr,
            flush=True,
        )
        # uvicorn re-raises the signal that stopped it once it has drained; a no-op handler makes that
        # re-raise harmless so a graceful stop exits 0 after the stack shuts down.
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: None)
        await server.serve(sockets=sockets)
    finally:
        await stack.stop()


def _cmd_providers(args: argparse.Namespace) -> int:
    from underlay.core.registry import available_providers

    rows = sorted(available_providers().values(), key=lambda s: (s.api, s.provider_type))
    if args.api:
        rows = [s for s in rows if s.api == args.api]
    header = ("API", "PROVIDER TYPE", "EXTRAS", "DESCRIPTION")
    table = [header] + [(s.api, s.provider_type, ",".join(s.extras) or "-", s.description) for s in rows]
    _print_table(table)
    return 0


def _cmd_distros(_: argparse.Namespace) -> int:
    from underlay.core.config import DISTRIBUTIONS_DIR, list_distributions

    table: list[tuple[str, ...]] = [("DISTRIBUTION", "DESCRIPTION")]
    for name in list_distributions():
        first = (DISTRIBUTIONS_DIR / f"{name}.yaml").read_text().splitlines()[0]
        table.append((name, first.lstrip("# ").strip()))
    _print_table(table)
    return 0


def _print_table(rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        cells = [str(c).ljust(w) for c, w in zip(row[:-1], widths, strict=True)] + [str(row[-1])]
        print("  ".join(cells).rstrip())


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="underlay", description="Underlay: open APIs for AI agents.")
    parser.add_argument("--version", action="version", version=f"underlay {underlay.__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="start the server")
    run.add_argument(
        "config",
        nargs="?",
        default=os.environ.get("UNDERLAY_DISTRO") or "local",
        help="a distribution name or a run-config YAML path (default: $UNDERLAY_DISTRO, else local)",
    )
    run.add_argument("--host", default=None, help="bind address (default from the config: 127.0.0.1)")
    run.add_argument("--port", type=int, default=None, help="port (default from the config: 8321)")
    run.set_defaults(func=_cmd_run)

    providers = sub.add_parser("providers", help="list provider types per API and the extras each needs")
    providers.add_argument("--api", default=None, help="only this API")
    providers.set_defaults(func=_cmd_providers)

    distros = sub.add_parser("distros", help="list the shipped distributions")
    distros.set_defaults(func=_cmd_distros)

    add_models_parser(sub)
    add_agent_parser(sub)
    add_datasets_parser(sub)
    add_fine_tune_parser(sub)
    add_eval_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
