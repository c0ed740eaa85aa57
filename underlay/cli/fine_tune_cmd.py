"""``underlay fine-tune``: create, list, show, follow and cancel fine-tuning jobs on a running server.

``create FILE --model M`` uploads the JSONL file (purpose ``fine-tune``), creates the job and, with
``--follow``, shows a live progress line (step, loss, tokens/s, ETA) until the job ends, then the
tuned model's name. A file the server rejects comes back as one line listing the bad lines. Every
command prints one line on stderr and exits 1 on failure; ``--json`` prints the server's objects.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from underlay.cli.http_client import API_KEY_ENV, DEFAULT_URL, URL_ENV, CliError, Server, fail, table

TERMINAL = ("succeeded", "failed", "cancelled")
POLL_SECONDS = 2.0


def add_fine_tune_parser(subparsers: Any) -> None:
    """Register ``fine-tune create|list|show|events|cancel`` on the main CLI's sub-command set."""
    parser = subparsers.add_parser(
        "fine-tune",
        help="Create, list, show, follow and cancel fine-tuning jobs on a running server.",
        description="Fine-tuning jobs on a running Underlay server (the /v1/fine_tuning/jobs API).",
    )
    parser.set_defaults(func=lambda _args: _usage(parser))
    actions = parser.add_subparsers(title="commands", metavar="COMMAND")

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--url", default=None, help=f"Server URL (default: ${URL_ENV}, else {DEFAULT_URL}).")
        p.add_argument("--api-key", default=None, help=f"Bearer token (default: ${API_KEY_ENV}).")
        p.add_argument("--json", action="store_true", help="Print JSON instead of text.")

    create = actions.add_parser("create", help="Upload a JSONL training file and start a job.")
    create.add_argument("file", help="Training examples, one JSON object per line (chat format).")
    create.add_argument("--model", required=True, help="The base model (as the server's trainer names it).")
    create.add_argument("--validation-file", default=None, help="Held-out examples for validation loss.")
    create.add_argument("--suffix", default=None, help="Part of the tuned model's name (A-Z, a-z, 0-9, _ and -).")
    create.add_argument("--epochs", type=int, default=None, help="Epochs (default: the server's choice).")
    create.add_argument("--batch-size", type=int, default=None, help="Examples per step (default: auto).")
    create.add_argument("--lr-multiplier", type=float, default=None, help="Scales the base learning rate.")
    create.add_argument("--seed", type=int, default=None, help="Seed for a reproducible run.")
    create.add_argument("--follow", action="store_true", help="Show progress until the job ends.")
    common(create)
    create.set_defaults(func=cmd_create)

    ls = actions.add_parser("list", help="List your fine-tuning jobs.")
    ls.add_argument("--limit", type=int, default=20, help="At most this many (1-100).")
    common(ls)
    ls.set_defaults(func=cmd_list)

    show = actions.add_parser("show", help="Show a job (and follow it with --follow).")
    show.add_argument("job_id")
    show.add_argument("--follow", action="store_true", help="Show progress until the job ends.")
    common(show)
    show.set_defaults(func=cmd_show)

    events = actions.add_parser("events", help="A job's events, oldest first.")
    events.add_argument("job_id")
    events.add_argument("--limit", type=int, default=100, help="The newest this many (1-1000).")
    common(events)
    events.set_defaults(func=cmd_events)

    cancel = actions.add_parser("cancel", help="Cancel a job.")
    cancel.add_argument("job_id")
    common(cancel)
    cancel.set_defaults(func=cmd_cancel)


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return 2


def _run(args: argparse.Namespace, body: Any) -> int:
    try:
        return int(body(Server(args)))
    except CliError as exc:
        return fail(str(exc))
    except KeyboardInterrupt:
        return fail("interrupted (the job goes on; `underlay fine-tune cancel JOB` stops it)")


def _upload(server: Server, path: str) -> str:
    file = Path(path)
    if not file.is_file():
        raise CliError(f"no file {path}")
    with file.open("rb") as handle:
        uploaded = server.call("POST", "/v1/files", data={"purpose": "fine-tune"}, files={"file": (file.name, handle)})
    return str(uploaded["id"])


def cmd_create(args: argparse.Namespace) -> int:
    def body(server: Server) -> int:
        hyper = {
            key: value
            for key, value in (
                ("n_epochs", args.epochs),
                ("batch_size", args.batch_size),
                ("learning_rate_multiplier", args.lr_multiplier),
            )
            if value is not None
        }
        request: dict[str, Any] = {
            "model": args.model,
            "training_file": _upload(server, args.file),
            "method": {"type": "supervised", "supervised": {"hyperparameters": hyper}},
        }
        if args.validation_file:
            request["validation_file"] = _upload(server, args.validation_file)
        for key, value in (("suffix", args.suffix), ("seed", args.seed)):
            if value is not None:
                request[key] = value
        job = server.call("POST", "/v1/fine_tuning/jobs", json=request)
        _print_job(job, args.json)
        return _follow(server, job, args.json) if args.follow else 0

    return _run(args, body)


def cmd_list(args: argparse.Namespace) -> int:
    def body(server: Server) -> int:
        page = server.call("GET", "/v1/fine_tuning/jobs", params={"limit": args.limit})
        if args.json:
            print(json.dumps(page, indent=2))
            return 0
        rows = [
            [j["id"], j["status"], j["model"], j.get("fine_tuned_model") or "-", _when(j.get("created_at"))]
            for j in page["data"]
        ]
        table(rows, ["ID", "STATUS", "BASE", "TUNED MODEL", "CREATED"])
        return 0

    return _run(args, body)


def cmd_show(args: argparse.Namespace) -> int:
    def body(server: Server) -> int:
        job = server.call("GET", f"/v1/fine_tuning/jobs/{args.job_id}")
        _print_job(job, args.json)
        return _follow(server, job, args.json) if args.follow else 0

    return _run(args, body)


def cmd_events(args: argparse.Namespace) -> int:
    def body(server: Server) -> int:
        page = server.call("GET", f"/v1/fine_tuning/jobs/{args.job_id}/events", params={"limit": args.limit})
        if args.json:
            print(json.dumps(page, indent=2))
            return 0
        for event in reversed(page["data"]):
            print(f"{_when(event['created_at'])}  {event['level']:<5}  {event['message']}")
        return 0

    return _run(args, body)


def cmd_cancel(args: argparse.Namespace) -> int:
    def body(server: Server) -> int:
        _print_job(server.call("POST", f"/v1/fine_tuning/jobs/{args.job_id}/cancel"), args.json)
        return 0

    return _run(args, body)


def _when(stamp: Any) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(int(stamp))) if stamp else "-"


def _print_job(job: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(job, indent=2))
        return
    hyper = job.get("hyperparameters") or {}
    print(
        f"{job['id']}  {job['status']}  base={job['model']}  epochs={hyper.get('n_epochs')}  "
        f"batch={hyper.get('batch_size')}  lr_x={hyper.get('learning_rate_multiplier')}"
    )
    if job.get("fine_tuned_model"):
        print(f"model: {job['fine_tuned_model']}")
    if job.get("error"):
        print(f"error: {job['error'].get('message')}")


def progress_line(metrics: dict[str, Any], eta_seconds: float | None) -> str:
    """``step 12/40 [#######.................] loss 1.234  312 tok/s  ETA 1m05s`` from a metrics event's data."""
    step, total = int(metrics.get("step", 0)), max(1, int(metrics.get("total_steps", 0)))
    width = 24
    filled = min(width, int(width * step / total))
    parts = [f"step {step}/{total} [{'#' * filled}{'.' * (width - filled)}]"]
    loss = metrics.get("train_loss")
    if isinstance(loss, int | float):
        parts.append(f"loss {loss:.3f}")
    speed = metrics.get("tokens_per_second")
    if isinstance(speed, int | float):
        parts.append(f"{speed:.0f} tok/s")
    if eta_seconds is not None:
        parts.append(f"ETA {int(eta_seconds) // 60}m{int(eta_seconds) % 60:02d}s")
    return "  ".join(parts)


def _follow(server: Server, job: dict[str, Any], as_json: bool) -> int:
    """Poll until the job ends, drawing one progress line (on a terminal) from its newest metrics event.

    The ETA is the pace seen since following began (steps done meanwhile) times the steps left."""
    tty = sys.stderr.isatty() and not as_json
    seen: tuple[float, int] | None = None
    while job["status"] not in TERMINAL:
        time.sleep(POLL_SECONDS)
        job = server.call("GET", f"/v1/fine_tuning/jobs/{job['id']}")
        events = server.call("GET", f"/v1/fine_tuning/jobs/{job['id']}/events", params={"limit": 20})
        latest = next((e for e in events["data"] if e.get("type") == "metrics" and e.get("data")), None)
        if latest is None or not tty:
            continue
        data = latest["data"]
        step, total = int(data.get("step", 0)), int(data.get("total_steps", 0))
        if seen is None:
            seen = (time.time(), step)
        elapsed, done = time.time() - seen[0], step - seen[1]
        eta = elapsed / done * (total - step) if done > 0 else None
        print(f"\r{progress_line(data, eta)}\033[K", end="", file=sys.stderr, flush=True)
    if tty:
        print(file=sys.stderr)
    _print_job(job, as_json)
    return 0 if job["status"] == "succeeded" else 1
