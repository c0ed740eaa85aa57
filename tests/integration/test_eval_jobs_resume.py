"""An eval job (``/v1alpha/eval/benchmarks/{id}/jobs``) killed with SIGKILL mid-way resumes without re-scoring.

A real ``underlay run`` server on a file-backed SQLite state directory runs a registered benchmark over
a dataset of ``ROWS`` questions, one row at a time. The candidate is the external echo provider's
``echo-slow`` model (no weights; it answers in ``delay_seconds`` per word, so each row takes a moment
and the job is still running when the server is killed). The server stores every chat completion with
the metadata the job stamps on it (job id, row number), so the ``chat_completions`` table counts how
often each row was sampled, independently of the job's own bookkeeping (:mod:`tests.integration.resume`,
shared with the OpenAI Evals kill test).

Once some rows are stored, the server is killed with SIGKILL; the stored rows and the call counts are
read from the SQL store; a new server on the same state and port resumes the job when its lease runs
out. Then: the job completes with every row scored exactly once (one stored row per row number, no
duplicates, results and the results dataset listing each row once), the rows stored before the kill come
back unchanged and were not sampled again, and at most the one row in flight at the kill was sampled twice.
"""

from __future__ import annotations

import json
import signal
import sqlite3
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

from tests.integration.harness import RunningServer, start_server
from tests.integration.resume import model_calls, wait_for

ROWS = 12
DELAY_SECONDS = 0.05  # per answer word; an answer here has 6 words, so a row takes about 0.3 s
BENCHMARK = "resume-qa"


def _config() -> dict[str, Any]:
    echo = {"provider_id": "echo", "provider_type": "remote::echo-test", "config": {"delay_seconds": DELAY_SECONDS}}
    return {
        "apis": ["inference", "models", "datasets", "scoring", "eval"],
        "providers": {
            "inference": [echo],
            "datasets": [{"provider_id": "localfs", "provider_type": "inline::localfs", "config": {}}],
            "scoring": [{"provider_id": "basic", "provider_type": "inline::basic", "config": {}}],
        },
        "inference": {"store_chat_completions": True},
        "jobs": {"lease_seconds": 2, "poll_seconds": 0.2},  # a short lease: the restarted server resumes soon
    }


def _dataset_rows() -> list[dict[str, Any]]:
    """Even rows pass ``basic::subset_of`` (the echoed question holds the answer), odd rows fail."""
    return [
        {"input_query": f"item {i} of the list", "expected_answer": f"item {i}" if i % 2 == 0 else "absent"}
        for i in range(ROWS)
    ]


def _call(server: RunningServer, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    response = httpx.request(method, f"{server.base_url}{path}", json=body, timeout=30)
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()
    return data


def _stored_rows(state: Path, job_id: str) -> list[tuple[int, str, dict[str, Any]]]:
    with sqlite3.connect(state / "sqlstore.db") as db:
        rows = db.execute(
            "SELECT row_index, status, record FROM eval_job_rows WHERE job_id = ? ORDER BY row_index", (job_id,)
        ).fetchall()
    return [(int(index), str(status), json.loads(record)) for index, status, record in rows]


def _calls(state: Path, job_id: str) -> Counter[str]:
    """Row number → chat completions the job made for it (eval jobs only sample; scoring here is lexical)."""
    counted = model_calls(state, job_key="eval_job_id", job_id=job_id, row_key="row_index")
    assert {kind for _, kind in counted} <= {"sample"}
    return Counter({row: n for (row, _), n in counted.items()})


def test_killed_eval_job_resumes_without_rescoring(tmp_path: Path, external_provider_path: Path) -> None:
    config = _config()
    first = start_server(config, tmp_path, extra_pythonpath=[external_provider_path])
    state = tmp_path / "state"
    try:
        dataset = {"dataset_id": "resume-rows", "purpose": "eval/question-answer"}
        _call(first, "POST", "/v1beta/datasets", {**dataset, "source": {"type": "rows", "rows": _dataset_rows()}})
        body = {"benchmark_id": BENCHMARK, "dataset_id": "resume-rows", "scoring_functions": ["basic::subset_of"]}
        _call(first, "POST", "/v1alpha/eval/benchmarks", body)
        candidate = {"type": "model", "model": "echo/echo-slow"}
        job = _call(
            first,
            "POST",
            f"/v1alpha/eval/benchmarks/{BENCHMARK}/jobs",
            {"benchmark_config": {"eval_candidate": candidate, "concurrency": 1}},
        )
        job_id = job["job_id"]
        wait_for(lambda: len(_stored_rows(state, job_id)) >= 3, timeout=60, what="three stored rows", interval=0.05)
    finally:
        first.stop(signal.SIGKILL)
    assert first.process.returncode == -signal.SIGKILL

    before = {index: (status, record) for index, status, record in _stored_rows(state, job_id)}
    assert 3 <= len(before) < ROWS, f"{len(before)} rows finished before the kill; the test needs a mid-way kill"
    calls_before = _calls(state, job_id)
    assert all(calls_before[str(i)] == 1 for i in before)
    with sqlite3.connect(state / "sqlstore.db") as db:
        (status_at_kill,) = db.execute("SELECT status FROM eval_jobs WHERE id = ?", (job_id,)).fetchone()
    assert status_at_kill == "in_progress"

    second = start_server(config, tmp_path, port=first.port, extra_pythonpath=[external_provider_path])
    try:
        path = f"/v1alpha/eval/benchmarks/{BENCHMARK}/jobs/{job_id}"
        done = wait_for(
            lambda: (j := _call(second, "GET", path))["status"] in ("completed", "failed", "cancelled") and j,
            timeout=90,
            what="the resumed job",
        )
        assert done["status"] == "completed", done
        assert done["progress"]["rows_done"] == done["progress"]["rows_total"] == ROWS
        assert done["result_counts"] == {"passed": ROWS // 2, "failed": ROWS // 2, "errored": 0}

        # every row stored exactly once, and the rows stored before the kill untouched
        stored = _stored_rows(state, job_id)
        assert [index for index, _, _ in stored] == list(range(ROWS))
        for index, (status, record) in before.items():
            assert (stored[index][1], stored[index][2]) == (status, record), f"row {index} was re-scored"
        for index, status, record in stored:
            assert status == ("pass" if index % 2 == 0 else "fail")
            assert record["generated_answer"] == f"echo: item {index} of the list"

        # no finished row sampled again; at most the one row in flight at the kill sampled twice
        calls = _calls(state, job_id)
        assert set(calls) == {str(i) for i in range(ROWS)}
        for index in before:
            assert calls[str(index)] == 1, f"row {index} finished before the kill and was sampled again"
        twice = [row for row, n in calls.items() if n > 1]
        assert len(twice) <= 1 and all(calls[row] == 2 for row in twice), calls

        result = _call(second, "GET", f"{path}/result")
        assert [g["row_index"] for g in result["generations"]] == list(range(ROWS))
        score_rows = result["scores"]["basic::subset_of"]["score_rows"]
        assert [r["score"] for r in score_rows] == [1.0 if i % 2 == 0 else 0.0 for i in range(ROWS)]
        saved = _call(second, "GET", f"/v1beta/datasetio/iterrows/{done['results_dataset_id']}")
        assert sorted(r["row_index"] for r in saved["data"]) == list(range(ROWS))
    finally:
        second.stop()
