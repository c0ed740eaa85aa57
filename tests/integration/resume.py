"""Helpers for the kill-and-resume tests of durable row jobs (OpenAI Evals runs, ``/v1alpha/eval`` jobs).

A row job stamps every model call it makes with the run's id and the row's number as chat-completion
``metadata``; a server with ``inference.store_chat_completions`` keeps every completion in the SQL store.
So :func:`model_calls` reads, from the state directory a server left behind (killed or not), how often
each row was sampled and judged: an independent count that a re-run row cannot hide from.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")


def wait_for(probe: Callable[[], T | None | bool], timeout: float, what: str, interval: float = 0.3) -> T:
    """Call ``probe`` until it returns something truthy, and return that; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value  # type: ignore[return-value]
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}")


def model_calls(state: Path, *, job_key: str, job_id: str, row_key: str) -> Counter[tuple[str, str]]:
    """(row, grader or "sample") → how many chat completions the job made for it, from the SQL store.

    ``job_key``/``row_key`` name the metadata fields the job stamps on its calls (``eval_run_id`` and
    ``datasource_item_id`` for an Evals run, ``eval_job_id`` and ``row_index`` for an eval job).
    """
    with sqlite3.connect(state / "sqlstore.db") as db:
        rows = db.execute("SELECT metadata FROM chat_completions").fetchall()
    calls: Counter[tuple[str, str]] = Counter()
    for (raw,) in rows:
        meta = json.loads(raw or "{}")
        if meta.get(job_key) == job_id:
            calls[(str(meta[row_key]), str(meta.get("grader", "sample")))] += 1
    return calls
