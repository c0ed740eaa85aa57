"""Local inference: tokens/s and time to first token through Underlay vs llama.cpp directly.

Same GGUF model (the packaged Qwen2.5-Coder 0.5B by default), same context size, threads and
sampling (greedy), same prompts. "Direct" drives llama-cpp-python in this process; "Underlay" drives
``/v1/completions`` with streaming on a real server running ``inline::llama-cpp``. The two never run
at the same time. Targets: at least 95% of direct tokens/s; at most 15 ms added time to first token.

    python bench/local_inference.py [--model qwen2.5-coder-0.5b-instruct] [--tokens 128] [--runs 3]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import free_port, start_underlay, wait_http  # noqa: E402

# Code to continue: a coder model keeps writing, so every run yields enough tokens to time decoding.
PROMPTS = [
    'import math\n\n\ndef is_prime(n: int) -> bool:\n    """Return True when n is prime."""\n',
    'class LRUCache:\n    """An LRU cache."""\n\n    def __init__(self, capacity):\n',
    'def merge_sort(items: list[int]) -> list[int]:\n    """Sort items with merge sort."""\n',
    "import sqlite3\n\n\ndef create_schema(conn: sqlite3.Connection) -> None:\n",
    'def parse_csv_line(line: str) -> list[str]:\n    """Split one CSV line, honouring quotes."""\n',
]
N_CTX = 4096


def _figures(start: float, first: float | None, last: float | None, count: int) -> tuple[float, float]:
    """(time to first token, decode tokens/s); a run too short to time decoding gives nan."""
    if first is None or last is None or count < 2 or last <= first:
        return (first - start if first else float("nan"), float("nan"))
    return first - start, (count - 1) / (last - first)


def direct_runs(model_path: str, prompts: list[str], tokens: int, threads: int) -> list[tuple[float, float]]:
    from underlay.providers.utils.llama_loader import load_llama

    llm = load_llama(model_path=model_path, n_ctx=N_CTX, n_threads=threads, verbose=False)  # as the server loads
    out = []
    for prompt in prompts:
        llm.reset()
        start = time.perf_counter()
        first = last = None
        count = 0
        for _ in llm.create_completion(prompt, max_tokens=tokens, temperature=0, stream=True):
            now = time.perf_counter()
            first = first or now
            last = now
            count += 1
        out.append(_figures(start, first, last, count))
    del llm
    gc.collect()
    return out


def underlay_runs(url: str, model: str, prompts: list[str], tokens: int) -> list[tuple[float, float]]:
    out = []
    with httpx.Client(timeout=300) as client:
        for prompt in prompts:
            body = {"model": model, "prompt": prompt, "max_tokens": tokens, "temperature": 0, "stream": True}
            start = time.perf_counter()
            first = last = None
            count = 0
            with client.stream("POST", f"{url}/v1/completions", json=body) as response:
                response.raise_for_status()
                for line in response.iter_lines():
                    if not line.startswith("data: ") or line == "data: [DONE]":
                        continue
                    chunk = json.loads(line[6:])
                    if chunk.get("choices") and chunk["choices"][0].get("text"):
                        now = time.perf_counter()
                        first = first or now
                        last = now
                        count += 1
            out.append(_figures(start, first, last, count))
    return out


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="qwen2.5-coder-0.5b-instruct")
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    from underlay.shared.packaged_models import resolve_model_path

    path = str(resolve_model_path(args.model))
    threads = os.cpu_count() or 2
    prompts = (PROMPTS * 3)[: args.runs + 1]  # the first of each side is a warm-up

    direct = direct_runs(path, prompts, args.tokens, threads)[1:]

    workdir = Path(tempfile.mkdtemp(prefix="underlay-localinf-"))
    config = {
        "state_dir": str(workdir / "state"),
        "apis": ["inference", "models"],
        "providers": {
            "inference": [
                {
                    "provider_id": "llama-cpp",
                    "provider_type": "inline::llama-cpp",
                    "config": {"models": [{"name": args.model, "path": path, "n_ctx": N_CTX, "n_threads": threads}]},
                }
            ]
        },
        "server": {"log_level": "warning"},
    }
    (workdir / "run.yaml").write_text(yaml.safe_dump(config))
    port = free_port()
    server = start_underlay(workdir / "run.yaml", port, workdir / "server.log")
    try:
        wait_http(f"http://127.0.0.1:{port}/v1/health", server)
        through = underlay_runs(f"http://127.0.0.1:{port}", args.model, prompts, args.tokens)[1:]
    finally:
        server.terminate()
        server.wait(30)

    def summary(rows: list[tuple[float, float]]) -> tuple[float, float]:
        timed = [r for r in rows if r[1] == r[1]]  # drop nan (runs too short to time)
        if not timed:
            raise SystemExit("no run produced enough tokens to time; try another --model or more --tokens")
        return statistics.median(r[0] for r in timed) * 1000, statistics.median(r[1] for r in timed)

    d_ttft, d_tps = summary(direct)
    u_ttft, u_tps = summary(through)
    print(f"model {args.model}, {args.tokens} tokens, {threads} threads, {len(direct)} runs each (medians)")
    print(f"{'path':<10}{'TTFT ms':>10}{'tokens/s':>10}")
    print(f"{'direct':<10}{d_ttft:>10.1f}{d_tps:>10.1f}")
    print(f"{'underlay':<10}{u_ttft:>10.1f}{u_tps:>10.1f}")
    ratio, added = u_tps / d_tps, u_ttft - d_ttft
    print(
        f"tokens/s ratio {ratio:.3f} (target >= 0.95: {'PASS' if ratio >= 0.95 else 'MISS'}); "
        f"added TTFT {added:.1f} ms (target <= 15 ms: {'PASS' if added <= 15 else 'MISS'})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
