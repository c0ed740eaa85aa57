"""Batch throughput: lines/s of an embeddings batch and a chat batch vs the same requests one by one.

What it measures: a real server (``underlay run``) with the embedded models (MiniLM for embeddings,
SmolLM2 for chat). The same requests are sent twice, in alternating order: as a batch (uploaded JSONL,
timed from create to ``completed``, which includes validation and writing the output file), and
directly with the ``openai`` SDK at the batch's concurrency (``batches.concurrency``, 4 unless
``--concurrency`` says otherwise, requests in flight). The ratio says
what the durable path (a job, a stored record per line, the output file) costs over sending the
requests yourself; on the embedded models the model time dominates.

Run from the repository root: ``python bench/batches.py [--embed-lines N] [--chat-lines N] [--concurrency N]``.
Prints its figures and exits 0; nothing is promised yet (reported only).
"""

from __future__ import annotations

import argparse
import asyncio
import json
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
EMBED = "all-minilm-l6-v2"


def _config(state: Path, concurrency: int) -> dict[str, Any]:
    return {
        "state_dir": str(state),
        "apis": ["inference", "models", "files", "batches"],
        "providers": {
            "inference": [
                {
                    "provider_id": "llama-cpp",
                    "provider_type": "inline::llama-cpp",
                    "config": {"models": [{"name": CHAT, "packaged": CHAT, "n_ctx": 2048}]},
                },
                {
                    "provider_id": "sentence-transformers",
                    "provider_type": "inline::sentence-transformers",
                    "config": {"models": [{"name": EMBED, "packaged": EMBED}]},
                },
            ],
            "files": [{"provider_id": "localfs", "provider_type": "inline::localfs", "config": {}}],
        },
        "jobs": {"poll_seconds": 0.1},
        "batches": {"concurrency": concurrency},
    }


def _requests(kind: str, n: int) -> tuple[str, list[dict[str, Any]]]:
    if kind == "embeddings":
        bodies = [{"model": EMBED, "input": f"Sentence number {i} about a topic of its own."} for i in range(n)]
        return "/v1/embeddings", bodies
    bodies = [
        {"model": CHAT, "messages": [{"role": "user", "content": f"Name a colour ({i})."}], "max_tokens": 8}
        for i in range(n)
    ]
    return "/v1/chat/completions", bodies


async def _as_batch(client: openai.AsyncOpenAI, endpoint: str, bodies: list[dict[str, Any]]) -> float:
    lines = [{"custom_id": str(i), "method": "POST", "url": endpoint, "body": b} for i, b in enumerate(bodies)]
    data = "".join(json.dumps(line) + "\n" for line in lines).encode()
    source = await client.files.create(file=("bench.jsonl", data), purpose="batch")
    start = time.perf_counter()
    batch = await client.batches.create(input_file_id=source.id, endpoint=endpoint, completion_window="24h")  # type: ignore[arg-type]
    while batch.status not in ("completed", "failed", "cancelled", "expired"):
        await asyncio.sleep(0.05)
        batch = await client.batches.retrieve(batch.id)
    elapsed = time.perf_counter() - start
    counts = batch.request_counts
    if batch.status != "completed" or counts is None or counts.completed != len(bodies):
        print(f"  batch ended {batch.status} with {counts}; figures below are not comparable")
    return elapsed


async def _one_by_one(
    client: openai.AsyncOpenAI, endpoint: str, bodies: list[dict[str, Any]], concurrency: int = 4
) -> float:
    gate = asyncio.Semaphore(concurrency)

    async def send(body: dict[str, Any]) -> None:
        async with gate:
            if endpoint == "/v1/embeddings":
                await client.embeddings.create(**body)
            else:
                await client.chat.completions.create(**body)

    start = time.perf_counter()
    await asyncio.gather(*(send(b) for b in bodies))
    return time.perf_counter() - start


async def _measure(base: str, args: argparse.Namespace) -> None:
    client = openai.AsyncOpenAI(base_url=base, api_key="unused", max_retries=0, timeout=600)
    for kind, n in (("embeddings", args.embed_lines), ("chat", args.chat_lines)):
        endpoint, bodies = _requests(kind, n)
        await _one_by_one(client, endpoint, bodies[:4], args.concurrency)  # warm the model
        batch_s: list[float] = []
        direct_s: list[float] = []
        for round_ in range(args.rounds):
            order = ["batch", "direct"]
            for name in order if round_ % 2 == 0 else order[::-1]:
                if name == "batch":
                    seconds = await _as_batch(client, endpoint, bodies)
                else:
                    seconds = await _one_by_one(client, endpoint, bodies, args.concurrency)
                (batch_s if name == "batch" else direct_s).append(seconds)
        b, d = min(batch_s), min(direct_s)
        print(
            f"{kind:10s} {n} lines, concurrency {args.concurrency}: batch {n / b:7.2f} lines/s ({b:.2f} s), "
            f"one by one {n / d:7.2f} lines/s ({d:.2f} s), batch/direct {d / b:.2f}x (best of {args.rounds})"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--embed-lines", type=int, default=200)
    parser.add_argument("--chat-lines", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=4, help="batches.concurrency, and the direct sends'")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        config_path = work / "run.yaml"
        config_path.write_text(yaml.safe_dump(_config(work / "state", args.concurrency)))
        port = free_port()
        process = start_underlay(config_path, port, work / "server.log")
        try:
            wait_http(f"http://127.0.0.1:{port}/v1/health", process, timeout=300)
            asyncio.run(_measure(f"http://127.0.0.1:{port}/v1", args))
        finally:
            process.terminate()
            process.wait(30)


if __name__ == "__main__":
    main()
