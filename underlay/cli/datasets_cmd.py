"""``underlay datasets``: upload, list, show and delete datasets on a running server, over its HTTP API.

``upload FILE --purpose P`` sends the file to the Files API and registers it as a dataset (the server
parses JSONL, CSV or Parquet and checks every row against the purpose); a bad row comes back as the
server's one-line error naming the row and field. Every command prints one line on stderr and exits 1
on failure, so scripts can rely on the exit code; ``--json`` prints the server's objects as they are.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any
from urllib.parse import quote

from underlay.api.datasets import PURPOSES
from underlay.cli.http_client import API_KEY_ENV, DEFAULT_URL, URL_ENV, CliError
from underlay.cli.http_client import Server as _Server
from underlay.cli.http_client import fail as _fail
from underlay.cli.http_client import table as _table


def add_datasets_parser(subparsers: Any) -> None:
    """Register ``datasets upload|list|show|delete`` on the main CLI's sub-command set."""
    datasets = subparsers.add_parser(
        "datasets",
        help="Upload, list, show and delete datasets on a running server.",
        description="Datasets on a running Underlay server (the /v1beta/datasets API).",
    )
    datasets.set_defaults(func=lambda _args: _usage(datasets))
    actions = datasets.add_subparsers(title="commands", metavar="COMMAND")

    def common(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--url", default=None, help=f"Server URL (default: ${URL_ENV}, else {DEFAULT_URL}).")
        parser.add_argument("--api-key", default=None, help=f"Bearer token (default: ${API_KEY_ENV}).")
        parser.add_argument("--json", action="store_true", help="Print JSON instead of a table.")

    upload = actions.add_parser("upload", help="Upload a JSONL, CSV or Parquet file and register it as a dataset.")
    upload.add_argument("file", help="The file (.jsonl, .csv or .parquet).")
    upload.add_argument("--purpose", required=True, choices=PURPOSES, help="What the rows are for.")
    upload.add_argument("--id", dest="dataset_id", default=None, help="The dataset id (default: a generated ds_...).")
    upload.add_argument("--provider", default=None, help="The datasets provider (default: the server's first).")
    upload.add_argument(
        "--metadata", action="append", default=[], metavar="KEY=VALUE", help="Metadata to attach (repeatable)."
    )
    common(upload)
    upload.set_defaults(func=cmd_upload)

    ls = actions.add_parser("list", help="List your datasets.")
    ls.add_argument("--limit", type=int, default=100, help="At most this many (1-100).")
    common(ls)
    ls.set_defaults(func=cmd_list)

    show = actions.add_parser("show", help="Show a dataset and its first rows.")
    show.add_argument("dataset_id")
    show.add_argument("--rows", type=int, default=5, help="How many rows to print (0-1000; default 5).")
    common(show)
    show.set_defaults(func=cmd_show)

    delete = actions.add_parser("delete", help="Delete a dataset and its rows.")
    delete.add_argument("dataset_id")
    common(delete)
    delete.set_defaults(func=cmd_delete)


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return 2


def _run(args: argparse.Namespace, body: Any) -> int:
    try:
        return int(body(_Server(args)))
    except CliError as exc:
        return _fail(str(exc))


def _metadata(pairs: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise CliError(f"--metadata takes KEY=VALUE, not {pair!r}")
        out[key] = value
    return out


def cmd_upload(args: argparse.Namespace) -> int:
    path = Path(args.file)
    if not path.is_file():
        return _fail(f"{path}: no such file")

    def body(server: _Server) -> int:
        metadata = _metadata(args.metadata)
        with path.open("rb") as handle:
            uploaded = server.call(
                "POST", "/v1/files", files={"file": (path.name, handle)}, data={"purpose": "user_data"}
            )
        request: dict[str, Any] = {"purpose": args.purpose, "source": {"type": "uri", "uri": uploaded["id"]}}
        for key, value in (("dataset_id", args.dataset_id), ("provider_id", args.provider)):
            if value:
                request[key] = value
        if metadata:
            request["metadata"] = metadata
        try:
            dataset = server.call("POST", "/v1beta/datasets", json=request)
        finally:  # the rows are in the dataset now (or refused): the uploaded copy is not needed either way
            try:
                server.call("DELETE", f"/v1/files/{uploaded['id']}")
            except CliError:
                pass
        if args.json:
            print(json.dumps(dataset, indent=2))
        else:
            print(f"{dataset['identifier']}  {dataset['purpose']}  {dataset['row_count']} rows")
        return 0

    return _run(args, body)


def cmd_list(args: argparse.Namespace) -> int:
    def body(server: _Server) -> int:
        listed = server.call("GET", "/v1beta/datasets", params={"limit": max(1, min(args.limit, 100))})
        data = listed.get("data") or []
        if args.json:
            print(json.dumps(data, indent=2))
            return 0
        rows = [
            [str(d.get("identifier")), str(d.get("purpose")), str(d.get("row_count")), str(d.get("provider_id"))]
            for d in data
            if isinstance(d, dict)
        ]
        _table(rows, ["ID", "PURPOSE", "ROWS", "PROVIDER"])
        return 0

    return _run(args, body)


def cmd_show(args: argparse.Namespace) -> int:
    if not 0 <= args.rows <= 1000:
        return _fail("--rows takes 0 to 1000")

    def body(server: _Server) -> int:
        dataset = server.call("GET", f"/v1beta/datasets/{quote(args.dataset_id, safe='')}")
        rows: list[Any] = []
        if args.rows:
            page = server.call(
                "GET", f"/v1beta/datasetio/iterrows/{quote(args.dataset_id, safe='')}", params={"limit": args.rows}
            )
            rows = list(page.get("data") or [])
        if args.json:
            print(json.dumps({"dataset": dataset, "rows": rows}, indent=2))
            return 0
        for key in ("identifier", "purpose", "row_count", "provider_id", "source", "metadata"):
            value = dataset.get(key)
            print(f"{key}: {json.dumps(value) if isinstance(value, dict | list) else value}")
        for index, row in enumerate(rows):
            print(f"[{index}] {json.dumps(row, ensure_ascii=False)}")
        return 0

    return _run(args, body)


def cmd_delete(args: argparse.Namespace) -> int:
    def body(server: _Server) -> int:
        server.call("DELETE", f"/v1beta/datasets/{quote(args.dataset_id, safe='')}")
        print(f"deleted {args.dataset_id}")
        return 0

    return _run(args, body)
