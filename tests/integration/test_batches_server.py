"""Batches on a real server with the embedded models: a chat batch killed mid-way resumes without repeats.

The server runs SmolLM2 and MiniLM from the packaged weights. A chat batch is started, the server is
killed with SIGKILL once some lines have finished, and a new server on the same state resumes the job
when its lease runs out. The finished lines' records are read from the SQL store before the kill: the
final output file must carry exactly those records (same ``id`` and ``request_id``), which a re-run
line could not, and every ``custom_id`` exactly once. An embeddings batch on the restarted server checks
the vectors against a direct ``/v1/embeddings`` call.
"""

from __future__ import annotations

import json
import signal
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from tests.integration.harness import MINILM, SMOLLM2, local_config, start_server

T = TypeVar("T")
LINES = 10


def _config() -> dict[str, Any]:
    config = local_config(apis=["inference", "models", "files", "batches"])
    config["providers"]["files"] = [{"provider_id": "localfs", "provider_type": "inline::localfs", "config": {}}]
    config["jobs"] = {"lease_seconds": 2, "poll_seconds": 0.2}
    return config


def _wait(probe: Callable[[], T | None | bool], timeout: float, what: str) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value  # type: ignore[return-value]
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def _finished_records(state: Path, batch_id: str) -> dict[str, dict[str, Any]]:
    with sqlite3.connect(state / "sqlstore.db") as db:
        rows = db.execute("SELECT record FROM batch_lines WHERE batch_id = ?", (batch_id,)).fetchall()
    return {json.loads(r[0])["custom_id"]: json.loads(r[0]) for r in rows}


def _jsonl(lines: list[dict[str, Any]]) -> bytes:
    return b"".join(json.dumps(line).encode() + b"\n" for line in lines)


def test_killed_batch_resumes_without_repeating_lines(tmp_path: Path) -> None:
    config = _config()
    first = start_server(config, tmp_path, timeout=300)
    state = tmp_path / "state"
    try:
        client = first.openai(timeout=120)
        lines = [
            {
                "custom_id": f"chat-{i}",
                "method": "POST",
                "url": "/v1/chat/completions",
                "body": {
                    "model": SMOLLM2,
                    "messages": [{"role": "user", "content": f"Write one sentence about the number {i}."}],
                    "max_tokens": 24,
                },
            }
            for i in range(LINES)
        ]
        uploaded = client.files.create(file=("chat.jsonl", _jsonl(lines)), purpose="batch")
        batch = client.batches.create(
            input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
        _wait(
            lambda: (client.batches.retrieve(batch.id).request_counts or _Zero()).completed >= 2,
            timeout=300,
            what="two finished lines",
        )
    finally:
        first.stop(signal.SIGKILL)
    before = _finished_records(state, batch.id)
    assert 2 <= len(before) < LINES, f"{len(before)} lines finished before the kill; the test needs a mid-way kill"

    second = start_server(config, tmp_path, port=first.port, timeout=300)
    try:
        client = second.openai(timeout=120)
        done = _wait(
            lambda: (b := client.batches.retrieve(batch.id)).status in ("completed", "failed") and b,
            timeout=600,
            what="the resumed batch",
        )
        assert done.status == "completed", done.errors
        assert done.request_counts is not None and done.request_counts.completed == LINES
        output = [json.loads(line) for line in client.files.content(done.output_file_id).text.splitlines()]
        assert [line["custom_id"] for line in output] == [f"chat-{i}" for i in range(LINES)]
        by_id = {line["custom_id"]: line for line in output}
        for custom_id, record in before.items():
            assert by_id[custom_id] == record, f"{custom_id} was run again after the restart"
        assert all(line["response"]["body"]["choices"][0]["message"]["content"] for line in output)

        texts = ["a cat on a mat", "stock markets fell today"]
        embed_lines = [
            {"custom_id": f"e{i}", "method": "POST", "url": "/v1/embeddings", "body": {"model": MINILM, "input": t}}
            for i, t in enumerate(texts)
        ]
        uploaded = client.files.create(file=("embed.jsonl", _jsonl(embed_lines)), purpose="batch")
        embed = client.batches.create(input_file_id=uploaded.id, endpoint="/v1/embeddings", completion_window="24h")
        embed_done = _wait(
            lambda: (b := client.batches.retrieve(embed.id)).status in ("completed", "failed") and b,
            timeout=300,
            what="the embeddings batch",
        )
        assert embed_done.status == "completed"
        vectors = [json.loads(x) for x in client.files.content(embed_done.output_file_id).text.splitlines()]
        direct = client.embeddings.create(model=MINILM, input=texts[1]).data[0].embedding
        got = vectors[1]["response"]["body"]["data"][0]["embedding"]
        assert vectors[1]["custom_id"] == "e1" and max(abs(a - b) for a, b in zip(got, direct, strict=True)) < 1e-5
    finally:
        second.stop()


class _Zero:
    completed = 0
