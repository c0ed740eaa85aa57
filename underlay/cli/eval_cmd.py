"""``underlay eval``: list benchmarks and run one against a model or an agent on a running server.

``eval run BENCHMARK --model M`` (or ``--agent NAME`` for a deployed agent) starts a durable eval job over
the HTTP API (``/v1alpha/eval``), shows a progress bar fed by the job's own progress (rows done, rows/s),
then prints a table of each scoring function's aggregates with their 95% confidence intervals, and writes
a per-row report (JSONL: the row, the answer, each score) when ``--report`` names a file. Ctrl-C cancels
the job on the server. Exit 0 when the job completed (and its pass rate reached ``--min-pass-rate``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

from underlay.cli.http_client import API_KEY_ENV, DEFAULT_URL, URL_ENV, CliError, Server, fail, table

POLL_SECONDS = 0.5


def add_eval_parser(subparsers: Any) -> None:
    """Register ``eval list|run`` on the main CLI's sub-command set."""
    evaluation = subparsers.add_parser(
        "eval",
        help="List benchmarks and run one against a model or an agent.",
        description="Benchmarks and eval jobs on a running Underlay server (the /v1alpha/eval API).",
    )
    evaluation.set_defaults(func=lambda _args: _usage(evaluation))
    actions = evaluation.add_subparsers(title="commands", metavar="COMMAND")

    def common(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--url", default=None, help=f"Server URL (default: ${URL_ENV}, else {DEFAULT_URL}).")
        parser.add_argument("--api-key", default=None, help=f"Bearer token (default: ${API_KEY_ENV}).")

    ls = actions.add_parser("list", help="List the benchmarks you can run (shipped and your own).")
    ls.add_argument("--json", action="store_true", help="Print JSON instead of a table.")
    common(ls)
    ls.set_defaults(func=cmd_list)

    run = actions.add_parser("run", help="Run a benchmark against a model or an agent and print its scores.")
    run.add_argument("benchmark", help="The benchmark id (see `underlay eval list`).")
    who = run.add_mutually_exclusive_group(required=True)
    who.add_argument("--model", help="A chat model id: answers each row through chat completions.")
    who.add_argument("--agent", help="A deployed agent (NAME or NAME@VERSION): answers through its own loop.")
    run.add_argument("--system", default=None, help="A system message for --model.")
    run.add_argument("--num-examples", type=int, default=None, help="Only the first N rows.")
    run.add_argument("--temperature", type=float, default=None)
    run.add_argument("--max-tokens", type=int, default=None)
    run.add_argument("--concurrency", type=int, default=None, help="Rows in flight at once (1-16).")
    run.add_argument("--report", type=Path, default=None, help="Write one JSON line per row here.")
    run.add_argument("--min-pass-rate", type=float, default=0.0, help="Exit 1 below this pass rate (0-1).")
    run.add_argument("--no-progress", action="store_true", help="No progress bar (for logs).")
    common(run)
    run.set_defaults(func=cmd_run)


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return 2


def cmd_list(args: argparse.Namespace) -> int:
    try:
        listed = Server(args).call("GET", "/v1alpha/eval/benchmarks")
    except CliError as exc:
        return fail(str(exc))
    data = [b for b in listed.get("data") or [] if isinstance(b, dict)]
    if args.json:
        print(json.dumps(data, indent=2))
        return 0
    rows = [
        [
            str(b.get("identifier")),
            "shipped" if b.get("shipped") else "yours",
            ", ".join(b.get("scoring_functions") or []),
            str((b.get("metadata") or {}).get("title") or b.get("dataset_id")),
        ]
        for b in data
    ]
    table(rows, ["ID", "KIND", "SCORING", "DATASET"])
    return 0


def _candidate(args: argparse.Namespace) -> dict[str, Any]:
    sampling = {
        k: v for k, v in {"temperature": args.temperature, "max_tokens": args.max_tokens}.items() if v is not None
    }
    if args.agent:
        return {"type": "agent", "model": f"agent/{args.agent}", "sampling_params": sampling}
    candidate: dict[str, Any] = {"type": "model", "model": args.model, "sampling_params": sampling}
    if args.system:
        candidate["system_message"] = args.system
    return candidate


def _progress(total: int, enabled: bool) -> Any:
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total or None, unit="row", file=sys.stderr, dynamic_ncols=True)


def _wait(server: Server, path: str, bar: Any) -> dict[str, Any]:
    while True:
        job = server.call("GET", path)
        progress = job.get("progress") or {}
        if bar is not None:
            if progress.get("rows_total") and bar.total != progress["rows_total"]:
                bar.total = progress["rows_total"]
            bar.n = int(progress.get("rows_done") or 0)
            counts = job.get("result_counts") or {}
            bar.set_postfix(
                passed=counts.get("passed", 0), failed=counts.get("failed", 0), errors=counts.get("errored", 0),
                rate=f"{progress.get('rows_per_second', 0):.2f}/s", refresh=False,
            )  # fmt: skip
            bar.refresh()
        if job.get("status") in ("completed", "failed", "cancelled"):
            return job
        time.sleep(POLL_SECONDS)


def _report(path: Path, result: dict[str, Any]) -> None:
    scores = result.get("scores") or {}
    with path.open("w", encoding="utf-8") as out:
        for index, generation in enumerate(result.get("generations") or []):
            row = dict(generation)
            row["scores"] = {fn: (r.get("score_rows") or [{}] * (index + 1))[index] for fn, r in scores.items()}
            out.write(json.dumps(row, ensure_ascii=False) + "\n")


def _interval(aggregate: dict[str, Any], name: str) -> str:
    value = aggregate.get(name)
    ci = aggregate.get("ci95")
    shown = f"{value:.3f}" if isinstance(value, int | float) else str(value)
    if isinstance(ci, list) and len(ci) == 2 and all(isinstance(x, int | float) for x in ci):
        shown += f"  [{ci[0]:.3f}, {ci[1]:.3f}]"
    return shown


def cmd_run(args: argparse.Namespace) -> int:
    if args.num_examples is not None and args.num_examples < 1:
        return fail("--num-examples takes a positive number")
    if not 0 <= args.min_pass_rate <= 1:
        return fail("--min-pass-rate takes 0 to 1")
    config: dict[str, Any] = {"eval_candidate": _candidate(args)}
    if args.num_examples is not None:
        config["num_examples"] = args.num_examples
    if args.concurrency is not None:
        config["concurrency"] = args.concurrency
    base = f"/v1alpha/eval/benchmarks/{quote(args.benchmark, safe='')}"
    server: Server | None = None
    job: dict[str, Any] = {}
    bar = None
    try:
        server = Server(args)
        job = server.call("POST", f"{base}/jobs", json={"benchmark_config": config})
        print(f"job {job['job_id']}: {args.benchmark} with {job['candidate']}", file=sys.stderr)
        bar = _progress(args.num_examples or 0, not args.no_progress)
        started = time.monotonic()
        job = _wait(server, f"{base}/jobs/{job['job_id']}", bar)
        if bar is not None:
            bar.close()
        elapsed = time.monotonic() - started
        if job["status"] != "completed":
            error = job.get("error") or {}
            return fail(f"job {job['job_id']} {job['status']}: {error.get('message', '')}".strip(": "))
        result = server.call("GET", f"{base}/jobs/{job['job_id']}/result")
    except KeyboardInterrupt:
        if bar is not None:
            bar.close()
        if server is not None and job.get("job_id"):
            try:
                server.call("DELETE", f"{base}/jobs/{job['job_id']}")
                print(f"job {job['job_id']} cancelled", file=sys.stderr)
            except CliError:
                pass
        return 130
    except CliError as exc:
        if bar is not None:
            bar.close()
        return fail(str(exc))

    counts = job.get("result_counts") or {}
    done = sum(int(counts.get(k, 0)) for k in ("passed", "failed", "errored"))
    rate = int(counts.get("passed", 0)) / done if done else 0.0
    rows = []
    for fn, scored in (result.get("scores") or {}).items():
        for name, aggregate in (scored.get("aggregated_results") or {}).items():
            rows.append([fn, name, _interval(aggregate, name), str(scored.get("error_count", 0))])
    table(rows, ["SCORING FUNCTION", "AGGREGATE", "VALUE  [95% CI]", "ERRORS"])
    print(
        f"rows {done}: passed {counts.get('passed', 0)}, failed {counts.get('failed', 0)}, "
        f"errors {counts.get('errored', 0)}; pass rate {rate:.1%}; {elapsed:.1f}s "
        f"({job.get('progress', {}).get('rows_per_second', 0):.2f} rows/s)"
    )
    if job.get("results_dataset_id"):
        print(f"per-row results: dataset {job['results_dataset_id']}")
    if args.report is not None:
        _report(args.report, result)
        print(f"report: {args.report}")
    return 0 if rate >= args.min_pass_rate else 1
