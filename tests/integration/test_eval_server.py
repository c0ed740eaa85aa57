"""The eval API on a real server with the embedded models: shipped benchmarks, the CLI, and an agent.

- ``underlay eval run`` on the shipped ``evals-math`` benchmark with Qwen 0.5B: the progress bar's job
  completes, the table and a per-row report come back.
- The shipped HumanEval rows answered by Qwen 0.5B and graded by running their unit tests in the sandbox.
- The flagship loop: a document goes into a vector store, ``/v1/synthetic-data-generation/generate``
  writes an eval set from it, a benchmark is registered over that dataset, and an eval job measures a
  ``file_search`` agent (a Responses configuration with tools) on it, end to end.

Token budgets are small (two shared cores); what is checked is that every row is answered and scored and
the results add up, not a 0.5B model's quality (the figures are in ``bench/eval_benchmarks.py``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.harness import QWEN, RunningServer, local_config, start_server
from underlay.cli.main import main

pytestmark = pytest.mark.slow

DOC = (
    "The Orrin Valley railway opened in 1898 and runs 46 kilometres from Dunmere to Caskill. Its steam "
    "locomotive, the Grey Heron, was built in Leeds. The line closes every January for track repairs."
)


def _config() -> dict[str, Any]:
    config = local_config()
    config["apis"] = [
        "inference", "models", "files", "vector_io", "vector_stores", "conversations", "responses",
        "datasets", "synthetic_data_generation", "scoring", "eval",
    ]  # fmt: skip
    config["providers"].update(
        {
            "files": [{"provider_id": "localfs", "provider_type": "inline::localfs", "config": {"root": "files"}}],
            "vector_io": [
                {"provider_id": "sqlite-vec", "provider_type": "inline::sqlite-vec", "config": {"db_path": "v.db"}}
            ],
            "responses": [{"provider_id": "builtin", "provider_type": "inline::builtin", "config": {}}],
            "datasets": [{"provider_id": "localfs-datasets", "provider_type": "inline::localfs", "config": {}}],
            "scoring": [{"provider_id": "basic", "provider_type": "inline::basic", "config": {}}],
        }
    )
    return config


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    running = start_server(_config(), tmp_path_factory.mktemp("eval"), timeout=300)
    yield running
    running.stop()


def _call(server: RunningServer, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    response = httpx.request(method, f"{server.base_url}{path}", json=body, timeout=600)
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()
    return data


def _finished(server: RunningServer, benchmark: str, job_id: str, timeout: float = 600) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = _call(server, "GET", f"/v1alpha/eval/benchmarks/{benchmark}/jobs/{job_id}")
        if job["status"] in ("completed", "failed", "cancelled"):
            return job
        time.sleep(0.5)
    raise AssertionError(f"job {job_id} did not finish in {timeout}s")


def test_cli_runs_a_shipped_benchmark(
    server: RunningServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    report = tmp_path / "report.jsonl"
    argv = ["eval", "run", "evals-math", "--model", QWEN, "--num-examples", "2", "--max-tokens", "64"]
    argv += ["--temperature", "0", "--report", str(report), "--no-progress", "--url", server.base_url]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "basic::subset_of" in out and "accuracy" in out and "rows 2:" in out
    lines = [json.loads(line) for line in report.read_text().splitlines()]
    assert len(lines) == 2
    assert all(line["generated_answer"] and line["scores"]["basic::subset_of"]["score"] in (0.0, 1.0) for line in lines)

    assert main(["eval", "list", "--url", server.base_url]) == 0
    assert "humaneval" in capsys.readouterr().out
    assert main(["eval", "run", "no-such-benchmark", "--model", QWEN, "--url", server.base_url]) == 1
    assert "no-such-benchmark" in capsys.readouterr().err


def test_humaneval_answers_run_against_their_unit_tests(server: RunningServer) -> None:
    config = {
        "eval_candidate": {"type": "model", "model": QWEN, "sampling_params": {"temperature": 0, "max_tokens": 160}},
        "num_examples": 2,
        "concurrency": 2,
    }
    job = _call(server, "POST", "/v1alpha/eval/benchmarks/humaneval/jobs", {"benchmark_config": config})
    done = _finished(server, "humaneval", job["job_id"])
    assert done["status"] == "completed", done
    assert done["result_counts"]["errored"] == 0 and done["progress"]["rows_done"] == 2
    result = _call(server, "GET", f"/v1alpha/eval/benchmarks/humaneval/jobs/{job['job_id']}/result")
    rows = result["scores"]["basic::code_unit_tests"]["score_rows"]
    assert len(rows) == 2
    for row in rows:
        # every answer really ran: it passed, failed an assertion or raised, never "not scored"
        assert row["score"] in (0.0, 1.0) and (row["detail"] == "passed" or row["detail"].startswith("failed"))
    assert sum(r["score"] for r in rows) == done["result_counts"]["passed"]


def test_generated_eval_set_measures_a_file_search_agent(server: RunningServer) -> None:
    client = server.openai(timeout=600)
    file_id = client.files.create(file=("railway.txt", DOC.encode()), purpose="assistants").id
    store = client.vector_stores.create(name="railway", file_ids=[file_id])
    deadline = time.monotonic() + 180
    while client.vector_stores.retrieve(store.id).status != "completed":
        assert time.monotonic() < deadline, "ingestion did not finish"
        time.sleep(0.5)

    generated = _call(
        server,
        "POST",
        "/v1/synthetic-data-generation/generate",
        {
            "model": QWEN, "vector_store_id": store.id, "max_sources": 1, "pairs_per_source": 2,
            "seed": 5, "temperature": 0, "dataset_id": "railway-eval",
        },
    )  # fmt: skip
    kept = generated["statistics"]["kept"]
    assert kept >= 1

    _call(
        server,
        "POST",
        "/v1alpha/eval/benchmarks",
        {"benchmark_id": "railway", "dataset_id": "railway-eval", "scoring_functions": ["basic::f1"]},
    )
    agent = {
        "type": "agent",
        "model": QWEN,
        "instructions": "Answer in one short sentence from the search results.",
        "tools": [{"type": "file_search", "vector_store_ids": [store.id], "max_num_results": 2}],
        "tool_choice": {"type": "file_search"},
        "sampling_params": {"temperature": 0, "max_tokens": 120},
    }
    job = _call(
        server,
        "POST",
        "/v1alpha/eval/benchmarks/railway/jobs",
        {"benchmark_config": {"eval_candidate": agent, "pass_threshold": 0.3}},
    )
    done = _finished(server, "railway", job["job_id"])
    assert done["status"] == "completed", done
    assert done["progress"]["rows_done"] == kept and done["result_counts"]["errored"] == 0
    result = _call(server, "GET", f"/v1alpha/eval/benchmarks/railway/jobs/{job['job_id']}/result")
    assert all(g["generated_answer"] for g in result["generations"])
    f1 = result["scores"]["basic::f1"]
    assert len(f1["score_rows"]) == kept and all(0.0 <= r["score"] <= 1.0 for r in f1["score_rows"])
    average = f1["aggregated_results"]["average"]
    assert average["ci95"][0] <= average["average"] <= average["ci95"][1]
    # the results are a dataset too, one row per question
    saved = _call(server, "GET", f"/v1beta/datasetio/iterrows/{done['results_dataset_id']}")
    assert len(saved["data"]) == kept
