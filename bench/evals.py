"""Eval-run throughput: rows/s of a rule-graded run (the engine's own cost) and of a sampled run.

What it measures: a real server (``underlay run``) with SmolLM2. Two runs of the OpenAI Evals API,
timed from ``runs.create`` to ``completed``:

- ``jsonl``: N rows that carry their own sample, graded by ``string_check`` and ``text_similarity``
  (rouge_l). No model is called, so this is what the durable path costs per row: the job, one stored
  output item per row, the live counts.
- ``completions``: M rows, each sampled from SmolLM2 (16 tokens) and graded by ``string_check``; here
  the model dominates. The same prompts sent directly with the ``openai`` SDK at the run's concurrency
  (4 in flight) give the baseline.

The run's own ``progress.rows_per_second`` is printed next to the wall-clock figure.

Run from the repository root: ``python bench/evals.py [--rows N] [--sampled M]``.
Prints its figures and exits 0; nothing is promised yet (reported only).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import openai
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import free_port, start_underlay, wait_http  # noqa: E402

CHAT = "smollm2-135m-instruct"
CONCURRENCY = 4  # underlay.core.eval_engine.Limits.concurrency
CHECK = {"type": "string_check", "name": "eq", "input": "{{sample.output_text}}", "reference": "{{item.a}}"}
SCHEMA = {"type": "object", "properties": {"q": {"type": "string"}, "a": {"type": "string"}}, "required": ["q", "a"]}


def _config(state: Path) -> dict[str, Any]:
    return {
        "state_dir": str(state),
        "apis": ["inference", "models", "evals"],
        "providers": {
            "inference": [
                {
                    "provider_id": "llama-cpp",
                    "provider_type": "inline::llama-cpp",
                    "config": {"models": [{"name": CHAT, "packaged": CHAT, "n_ctx": 2048}]},
                }
            ]
        },
        "jobs": {"poll_seconds": 0.1},
    }


def _timed_run(client: openai.OpenAI, eval_id: str, data_source: dict[str, Any]) -> tuple[float, Any]:
    started = time.perf_counter()
    run = client.evals.runs.create(eval_id, data_source=data_source)  # type: ignore[arg-type]
    while run.status in ("queued", "in_progress"):
        time.sleep(0.05)
        run = client.evals.runs.retrieve(run.id, eval_id=eval_id)
    return time.perf_counter() - started, run


async def _direct(base_url: str, prompts: list[str]) -> float:
    client = openai.AsyncOpenAI(base_url=base_url, api_key="unused")
    gate = asyncio.Semaphore(CONCURRENCY)

    async def one(prompt: str) -> None:
        async with gate:
            await client.chat.completions.create(
                model=CHAT, messages=[{"role": "user", "content": prompt}], max_tokens=16, temperature=0
            )

    started = time.perf_counter()
    await asyncio.gather(*(one(p) for p in prompts))
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=500)
    parser.add_argument("--sampled", type=int, default=16)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "run.yaml"
        config.write_text(yaml.safe_dump(_config(Path(tmp) / "state")))
        port = free_port()
        process = start_underlay(config, port, Path(tmp) / "server.log")
        try:
            base = f"http://127.0.0.1:{port}/v1"
            wait_http(f"{base}/health", process, timeout=300)
            client = openai.OpenAI(base_url=base, api_key="unused", timeout=600)
            rules = client.evals.create(
                data_source_config={"type": "custom", "item_schema": SCHEMA},
                testing_criteria=[
                    {**CHECK, "operation": "eq"},
                    {
                        **CHECK,
                        "name": "rouge",
                        "type": "text_similarity",
                        "evaluation_metric": "rouge_l",
                        "pass_threshold": 0.5,
                    },
                ],  # type: ignore[list-item]
            )
            rows = [
                {"item": {"q": f"q{i}", "a": f"answer number {i}"}, "sample": {"output_text": f"answer number {i % 7}"}}
                for i in range(args.rows)
            ]
            seconds, run = _timed_run(
                client, rules.id, {"type": "jsonl", "source": {"type": "file_content", "content": rows}}
            )
            pace = (run.model_extra or {}).get("progress", {}).get("rows_per_second")
            print(f"jsonl run, {args.rows} rows, 2 rule graders: {seconds:.2f} s, {args.rows / seconds:.0f} rows/s "
                  f"(run's own progress.rows_per_second: {pace}); status {run.status}")  # fmt: skip

            prompts = [f"Say the number {i}." for i in range(args.sampled)]
            sampled = client.evals.create(
                data_source_config={"type": "custom", "item_schema": SCHEMA},
                testing_criteria=[{**CHECK, "name": "has", "operation": "ilike"}],  # type: ignore[list-item]
            )
            direct = asyncio.run(_direct(base, prompts))
            seconds, run = _timed_run(
                client,
                sampled.id,
                {
                    "type": "completions",
                    "model": CHAT,
                    "input_messages": {"type": "template", "template": [{"role": "user", "content": "{{item.q}}"}]},
                    "sampling_params": {"max_completion_tokens": 16, "temperature": 0},
                    "source": {
                        "type": "file_content",
                        "content": [{"item": {"q": p, "a": str(i)}} for i, p in enumerate(prompts)],
                    },
                },
            )
            print(f"completions run, {args.sampled} rows sampled from {CHAT}: {seconds:.2f} s, "
                  f"{args.sampled / seconds:.2f} rows/s; the same prompts sent directly: {direct:.2f} s "
                  f"({args.sampled / direct:.2f}/s); status {run.status}")  # fmt: skip
        finally:
            process.terminate()
            process.wait(timeout=30)


if __name__ == "__main__":
    main()
