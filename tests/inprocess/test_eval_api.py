"""The extended eval API in process: shipped and registered benchmarks, eval jobs, results, two tenants and
bad input.

The candidate is the echo plugin's model, which answers ``echo: <last user message>``; so a row whose
question is its own expected answer passes ``basic::subset_of`` and one whose answer differs fails. What
these tests check is the plumbing (rows read, prompts built, answers scored, results stored and
aggregated, owners kept apart); the embedded model on the shipped benchmarks runs in
``tests/integration/test_eval_server.py``.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.inprocess.harness import InProcessServer, echo_config, serve_in_process

KEYS = {"alice": ("sk-alice-eval", ["team-a"]), "bob": ("sk-bob-eval", ["team-b"])}
QA_ROWS = [
    {"input_query": "Paris", "expected_answer": "Paris"},
    {"input_query": "blue", "expected_answer": "blue"},
    {"input_query": "five", "expected_answer": "4"},
]


def _auth() -> dict[str, Any]:
    keys = [
        {"sha256": hashlib.sha256(key.encode()).hexdigest(), "principal": name, "attributes": {"teams": teams}}
        for name, (key, teams) in KEYS.items()
    ]
    return {"auth": {"providers": [{"type": "api_keys", "keys": keys}]}}


@pytest.fixture(scope="module")
async def app(echo_plugin: Path, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[InProcessServer]:
    config = echo_config(
        tmp_path_factory.mktemp("inprocess-eval"),
        apis=["inference", "models", "datasets", "scoring", "eval"],
        server=_auth(),
    )
    config["providers"]["datasets"] = [{"provider_id": "localfs", "provider_type": "inline::localfs"}]
    config["providers"]["scoring"] = [{"provider_id": "basic", "provider_type": "inline::basic"}]
    async with serve_in_process(config) as server:
        yield server


def _as(who: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {KEYS[who][0]}"}


def _ok(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()
    return data


def _error(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    return error


async def _dataset(app: InProcessServer, who: str, dataset_id: str, purpose: str, rows: list[dict[str, Any]]) -> None:
    body = {"dataset_id": dataset_id, "purpose": purpose, "source": {"type": "rows", "rows": rows}}
    _ok(await app.http.post("/v1beta/datasets", json=body, headers=_as(who)))


async def _wait(app: InProcessServer, who: str, benchmark_id: str, job_id: str) -> dict[str, Any]:
    for _ in range(400):
        job = _ok(await app.http.get(f"/v1alpha/eval/benchmarks/{benchmark_id}/jobs/{job_id}", headers=_as(who)))
        if job["status"] in ("completed", "failed", "cancelled"):
            return job
        await asyncio.sleep(0.05)
    raise AssertionError(f"job {job_id} did not finish: {job}")


ECHO = {"type": "model", "model": "echo/echo"}


async def test_shipped_benchmarks_are_listed_with_their_sources(app: InProcessServer) -> None:
    listed = _ok(await app.http.get("/v1alpha/eval/benchmarks", headers=_as("alice")))["data"]
    shipped = {b["identifier"]: b for b in listed if b["shipped"]}
    assert set(shipped) >= {"humaneval", "born-first", "evals-math"}
    assert shipped["humaneval"]["scoring_functions"] == ["basic::code_unit_tests"]
    for benchmark in shipped.values():
        assert benchmark["metadata"]["licence"].startswith("MIT")
        assert "PyPI" in benchmark["metadata"]["source"]
    error = _error(await app.http.delete("/v1alpha/eval/benchmarks/humaneval", headers=_as("alice")), 400)
    assert "ships with Underlay" in error["message"]
    _error(await app.http.get("/v1alpha/eval/benchmarks/nope", headers=_as("alice")), 404)


async def test_a_job_samples_scores_and_keeps_per_row_results(app: InProcessServer) -> None:
    await _dataset(app, "alice", "eval-qa-a", "eval/question-answer", QA_ROWS)
    body = {"benchmark_id": "qa-a", "dataset_id": "eval-qa-a", "scoring_functions": ["basic::subset_of"]}
    benchmark = _ok(await app.http.post("/v1alpha/eval/benchmarks", json=body, headers=_as("alice")))
    assert benchmark["metadata"]["purpose"] == "eval/question-answer" and not benchmark["shipped"]

    config = {"benchmark_config": {"eval_candidate": {**ECHO, "system_message": "Answer briefly."}}}
    job = _ok(await app.http.post("/v1alpha/eval/benchmarks/qa-a/jobs", json=config, headers=_as("alice")))
    assert job["status"] == "queued" and job["candidate"] == "echo/echo"
    done = await _wait(app, "alice", "qa-a", job["job_id"])
    assert done["status"] == "completed", done
    assert done["result_counts"] == {"passed": 2, "failed": 1, "errored": 0}
    assert done["progress"]["rows_done"] == done["progress"]["rows_total"] == 3

    result = _ok(await app.http.get(f"/v1alpha/eval/benchmarks/qa-a/jobs/{job['job_id']}/result", headers=_as("alice")))
    answers = [g["generated_answer"] for g in result["generations"]]
    assert answers == ["echo: Paris", "echo: blue", "echo: five"]
    scores = result["scores"]["basic::subset_of"]
    assert [r["score"] for r in scores["score_rows"]] == [1.0, 1.0, 0.0]
    accuracy = scores["aggregated_results"]["accuracy"]
    assert accuracy["accuracy"] == pytest.approx(2 / 3)
    low, high = accuracy["ci95"]
    assert 0 <= low < 2 / 3 < high <= 1

    # the per-row results are a dataset of their own
    saved = _ok(await app.http.get(f"/v1beta/datasetio/iterrows/{done['results_dataset_id']}", headers=_as("alice")))
    assert [r["scores"]["basic::subset_of"] for r in saved["data"]] == [1.0, 1.0, 0.0]

    listed = _ok(await app.http.get("/v1alpha/eval/benchmarks/qa-a/jobs", headers=_as("alice")))
    assert [j["job_id"] for j in listed["data"]] == [job["job_id"]]


async def test_num_examples_and_a_shipped_benchmark(app: InProcessServer) -> None:
    config = {"benchmark_config": {"eval_candidate": ECHO, "num_examples": 4}}
    job = _ok(await app.http.post("/v1alpha/eval/benchmarks/evals-math/jobs", json=config, headers=_as("bob")))
    done = await _wait(app, "bob", "evals-math", job["job_id"])
    assert done["status"] == "completed" and done["progress"]["rows_total"] == 4
    # echoing a word problem never contains its bracketed answer
    assert done["result_counts"] == {"passed": 0, "failed": 4, "errored": 0}


async def test_evaluate_rows_answers_at_once(app: InProcessServer) -> None:
    await _dataset(app, "alice", "eval-qa-sync", "eval/question-answer", QA_ROWS[:1])
    body = {"benchmark_id": "qa-sync", "dataset_id": "eval-qa-sync", "scoring_functions": ["basic::subset_of"]}
    _ok(await app.http.post("/v1alpha/eval/benchmarks", json=body, headers=_as("alice")))
    request = {
        "input_rows": [
            {"input_query": "yes", "expected_answer": "yes"},
            {"input_query": "no", "expected_answer": "yes"},
        ],
        "benchmark_config": {"eval_candidate": ECHO},
    }
    result = _ok(
        await app.http.post("/v1alpha/eval/benchmarks/qa-sync/evaluations", json=request, headers=_as("alice"))
    )
    assert [g["status"] for g in result["generations"]] == ["pass", "fail"]
    assert result["scores"]["basic::subset_of"]["aggregated_results"]["accuracy"]["accuracy"] == 0.5


async def test_rows_without_a_question_error_alone(app: InProcessServer) -> None:
    await _dataset(app, "alice", "eval-free", "free-form", [{"text": "x"}])
    await _dataset(app, "alice", "eval-mixed", "eval/messages-answer", [
        {"messages": [{"role": "user", "content": "ok"}], "expected_answer": "ok"},
        {"messages": [{"role": "user", "content": "no"}], "expected_answer": "yes"},
    ])  # fmt: skip
    body = {"benchmark_id": "mixed", "dataset_id": "eval-mixed", "scoring_functions": ["basic::subset_of"]}
    _ok(await app.http.post("/v1alpha/eval/benchmarks", json=body, headers=_as("alice")))
    job = _ok(
        await app.http.post(
            "/v1alpha/eval/benchmarks/mixed/jobs",
            json={"benchmark_config": {"eval_candidate": ECHO}},
            headers=_as("alice"),
        )
    )
    done = await _wait(app, "alice", "mixed", job["job_id"])
    assert done["result_counts"] == {"passed": 1, "failed": 1, "errored": 0}


async def test_bad_input(app: InProcessServer) -> None:
    await _dataset(app, "alice", "eval-wrong-purpose", "post-training/messages", [
        {"messages": [{"role": "user", "content": "hi"}]}
    ])  # fmt: skip
    wrong = {"benchmark_id": "wrong", "dataset_id": "eval-wrong-purpose", "scoring_functions": ["basic::subset_of"]}
    error = _error(await app.http.post("/v1alpha/eval/benchmarks", json=wrong, headers=_as("alice")), 400)
    assert error["code"] == "wrong_dataset_purpose" and "post-training/messages" in error["message"]

    await _dataset(app, "alice", "eval-ok", "eval/question-answer", QA_ROWS)
    unknown_fn = {"benchmark_id": "fn", "dataset_id": "eval-ok", "scoring_functions": ["basic::nope"]}
    error = _error(await app.http.post("/v1alpha/eval/benchmarks", json=unknown_fn, headers=_as("alice")), 400)
    assert "basic::nope" in error["message"] and error["param"] == "scoring_functions"

    missing = {"benchmark_id": "ds", "dataset_id": "no-such-dataset", "scoring_functions": ["basic::subset_of"]}
    assert (
        _error(await app.http.post("/v1alpha/eval/benchmarks", json=missing, headers=_as("alice")), 404)["param"]
        == "dataset_id"
    )

    taken = {"benchmark_id": "humaneval", "dataset_id": "eval-ok", "scoring_functions": ["basic::subset_of"]}
    _error(await app.http.post("/v1alpha/eval/benchmarks", json=taken, headers=_as("alice")), 409)

    bad_id = {"benchmark_id": "../etc", "dataset_id": "eval-ok", "scoring_functions": ["basic::subset_of"]}
    _error(await app.http.post("/v1alpha/eval/benchmarks", json=bad_id, headers=_as("alice")), 400)

    stray = {"benchmark_config": {"eval_candidate": ECHO, "scoring_params": {"basic::f1": None}}}
    error = _error(
        await app.http.post("/v1alpha/eval/benchmarks/evals-math/jobs", json=stray, headers=_as("alice")), 400
    )
    assert "basic::f1" in error["message"]
    no_candidate = {"benchmark_config": {"eval_candidate": {"type": "robot", "model": "x"}}}
    _error(
        await app.http.post("/v1alpha/eval/benchmarks/evals-math/jobs", json=no_candidate, headers=_as("alice")), 400
    )
    _error(
        await app.http.get("/v1alpha/eval/benchmarks/evals-math/jobs/evaljob_nope/result", headers=_as("alice")), 404
    )


async def test_tenants_see_only_their_own(app: InProcessServer) -> None:
    await _dataset(app, "alice", "eval-private", "eval/question-answer", QA_ROWS[:1])
    body = {"benchmark_id": "private", "dataset_id": "eval-private", "scoring_functions": ["basic::subset_of"]}
    _ok(await app.http.post("/v1alpha/eval/benchmarks", json=body, headers=_as("alice")))
    job = _ok(
        await app.http.post(
            "/v1alpha/eval/benchmarks/private/jobs",
            json={"benchmark_config": {"eval_candidate": ECHO}},
            headers=_as("alice"),
        )
    )
    await _wait(app, "alice", "private", job["job_id"])

    listed = _ok(await app.http.get("/v1alpha/eval/benchmarks", headers=_as("bob")))["data"]
    assert "private" not in {b["identifier"] for b in listed}
    _error(await app.http.get("/v1alpha/eval/benchmarks/private", headers=_as("bob")), 404)
    _error(await app.http.get(f"/v1alpha/eval/benchmarks/private/jobs/{job['job_id']}", headers=_as("bob")), 404)
    _error(await app.http.delete("/v1alpha/eval/benchmarks/private", headers=_as("bob")), 404)
    # bob cannot register over alice's dataset either
    over = {"benchmark_id": "bobs", "dataset_id": "eval-private", "scoring_functions": ["basic::subset_of"]}
    _error(await app.http.post("/v1alpha/eval/benchmarks", json=over, headers=_as("bob")), 404)

    deleted = _ok(await app.http.delete("/v1alpha/eval/benchmarks/private", headers=_as("alice")))
    assert deleted == {"id": "private", "object": "benchmark.deleted", "deleted": True}
    _error(await app.http.get(f"/v1alpha/eval/benchmarks/private/jobs/{job['job_id']}", headers=_as("alice")), 404)
