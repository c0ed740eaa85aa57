"""The shipped benchmarks' scores for the embedded chat model, with their 95% intervals and run time.

What it measures: a real server (``underlay run``) with the embedded Qwen2.5-Coder 0.5B (or ``--model``),
and one eval job per shipped benchmark (``humaneval``, ``born-first``, ``evals-math``) through the eval
API, as a user would run them: each row answered by chat completions (greedy, a bounded answer length),
scored by the benchmark's function (HumanEval's unit tests in the sandbox, the evals registry's Match
and Includes), the aggregate with its Wilson interval, rows per second and wall time. ``--limit N`` runs
the first N rows of each (default: all rows: 164 + 122 + 35).

Run from the repository root: ``python bench/eval_benchmarks.py [--limit N] [--model M] [--concurrency C]``.
Prints its figures and exits 0; the scores describe a 0.5B model on CPU, not a target.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import free_port, start_underlay, wait_http  # noqa: E402

QWEN = "qwen2.5-coder-0.5b-instruct"
MAX_TOKENS = {"humaneval": 384, "born-first": 8, "evals-math": 256}


def _config(state: Path, model: str) -> dict[str, Any]:
    return {
        "state_dir": str(state),
        "apis": ["inference", "models", "datasets", "scoring", "eval"],
        "providers": {
            "inference": [
                {
                    "provider_id": "llama-cpp",
                    "provider_type": "inline::llama-cpp",
                    "config": {"models": [{"name": model, "packaged": model, "n_ctx": 4096}]},
                }
            ],
            "datasets": [{"provider_id": "localfs", "provider_type": "inline::localfs"}],
            "scoring": [{"provider_id": "basic", "provider_type": "inline::basic"}],
        },
    }


def run_benchmark(http: httpx.Client, base: str, benchmark: str, args: argparse.Namespace) -> dict[str, Any]:
    config: dict[str, Any] = {
        "eval_candidate": {
            "type": "model",
            "model": args.model,
            "sampling_params": {"temperature": 0, "max_tokens": MAX_TOKENS[benchmark]},
        },
        "concurrency": args.concurrency,
    }
    if args.limit:
        config["num_examples"] = args.limit
    started = time.monotonic()
    job = http.post(f"{base}/{benchmark}/jobs", json={"benchmark_config": config}).json()
    while job["status"] not in ("completed", "failed", "cancelled"):
        time.sleep(1.0)
        job = http.get(f"{base}/{benchmark}/jobs/{job['job_id']}").json()
    elapsed = time.monotonic() - started
    if job["status"] != "completed":
        return {"benchmark": benchmark, "status": job["status"], "error": job.get("error"), "seconds": elapsed}
    result = http.get(f"{base}/{benchmark}/jobs/{job['job_id']}/result").json()
    (function, scored), *_ = result["scores"].items()
    accuracy = scored["aggregated_results"].get("accuracy") or {}
    return {
        "benchmark": benchmark,
        "status": "completed",
        "function": function,
        "rows": job["progress"]["rows_done"],
        "accuracy": accuracy.get("accuracy", 0.0),
        "ci95": accuracy.get("ci95", [0.0, 0.0]),
        "errors": job["result_counts"]["errored"],
        "seconds": elapsed,
        "rows_per_second": job["progress"]["rows_per_second"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=0, help="first N rows of each benchmark (0: all)")
    parser.add_argument("--model", default=QWEN, help="a packaged chat model")
    parser.add_argument("--concurrency", type=int, default=2, help="rows in flight per job")
    parser.add_argument("--only", action="append", default=[], help="run only this benchmark (repeatable)")
    args = parser.parse_args()
    benchmarks = args.only or ["evals-math", "born-first", "humaneval"]

    with tempfile.TemporaryDirectory(prefix="bench-eval-") as tmp:
        state = Path(tmp)
        config_path = state / "run.yaml"
        config_path.write_text(yaml.safe_dump(_config(state / "state", args.model)))
        port = free_port()
        server = start_underlay(config_path, port, state / "server.log")
        try:
            wait_http(f"http://127.0.0.1:{port}/v1/health", server, timeout=300)
            http = httpx.Client(timeout=600)
            base = f"http://127.0.0.1:{port}/v1alpha/eval/benchmarks"
            print(f"model {args.model}, concurrency {args.concurrency}, limit {args.limit or 'all'}")
            print(f"{'benchmark':<12} {'function':<24} {'rows':>5} {'accuracy':>9} {'95% CI':>17} {'err':>4}"
                  f" {'seconds':>8} {'rows/s':>7}")  # fmt: skip
            for benchmark in benchmarks:
                r = run_benchmark(http, base, benchmark, args)
                if r["status"] != "completed":
                    print(f"{benchmark:<12} {r['status']}: {r.get('error')}")
                    continue
                ci = f"[{r['ci95'][0]:.3f}, {r['ci95'][1]:.3f}]"
                print(
                    f"{benchmark:<12} {r['function']:<24} {r['rows']:>5} {r['accuracy']:>9.3f} {ci:>17} "
                    f"{r['errors']:>4} {r['seconds']:>8.1f} {r['rows_per_second']:>7.3f}"
                )
        finally:
            server.terminate()
            server.wait(30)


if __name__ == "__main__":
    main()
