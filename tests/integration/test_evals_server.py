"""The Evals API on a real server with the embedded models, through the openai SDK (strict validation).

SmolLM2 is the candidate (fast real tokens) and Qwen 0.5B the label judge (its answers are constrained
to the labels by the response format). Every model call a run makes carries its run id and row number as
metadata, and the server stores every chat completion (``inference.store_chat_completions``), so the
``chat_completions`` table is an independent count of how often each row was sampled and judged.

The resume test kills the server with SIGKILL mid-run, reads the finished output items from the SQL
store, restarts on the same state, and checks that the run completes, that the finished items come back
unchanged (same ids: a re-graded row would have a new one) and that no finished row was sampled again.
"""

from __future__ import annotations

import json
import signal
import sqlite3
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from tests.integration.harness import QWEN, SMOLLM2, RunningServer, local_config, start_server
from tests.integration.resume import model_calls, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore:The Evals API is deprecated:DeprecationWarning")]
SCHEMA = {
    "type": "object",
    "properties": {"question": {"type": "string"}, "answer": {"type": "string"}},
    "required": ["question", "answer"],
}
MENTIONS = {
    "type": "string_check",
    "name": "mentions",
    "input": "{{sample.output_text}}",
    "reference": "{{item.answer}}",
    "operation": "ilike",
}
PROMPT = {
    "type": "template",
    "template": [
        {"role": "system", "content": "Answer in one short sentence."},
        {"role": "user", "content": "{{item.question}}"},
    ],
}


def _config(lease_seconds: float) -> dict[str, Any]:
    config = local_config(apis=["inference", "models", "files", "conversations", "responses", "evals"])
    config["providers"]["files"] = [{"provider_id": "localfs", "provider_type": "inline::localfs", "config": {}}]
    config["providers"]["responses"] = [{"provider_id": "builtin", "provider_type": "inline::builtin", "config": {}}]
    config["inference"] = {"store_chat_completions": True}
    config["jobs"] = {"lease_seconds": lease_seconds, "poll_seconds": 0.2}
    return config


def _settled(client: openai.OpenAI, eval_id: str, run_id: str, timeout: float) -> Any:
    return wait_for(
        lambda: (
            (r := client.evals.runs.retrieve(run_id, eval_id=eval_id)).status in ("completed", "failed", "canceled")
            and r
        ),
        timeout,
        f"run {run_id}",
    )


def _model_calls(state: Path, run_id: str) -> Counter[tuple[str, str]]:
    """(row, grader or "sample") → how many chat completions the run made for it, from the SQL store."""
    return model_calls(state, job_key="eval_run_id", job_id=run_id, row_key="datasource_item_id")


def _done(counts: Any) -> int:
    return int(counts.passed + counts.failed + counts.errored)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    # A long lease: a model loading on a loaded machine must not look like a dead worker here.
    running = start_server(_config(lease_seconds=60), tmp_path_factory.mktemp("evals"), timeout=300)
    yield running
    running.stop()


def test_completions_run_with_a_label_judge(server: RunningServer) -> None:
    client = server.openai(timeout=300, _strict_response_validation=True)
    judge = {
        "type": "label_model",
        "name": "judge",
        "model": QWEN,
        "input": [
            {"role": "system", "content": "You grade answers. Say 'correct' when the answer is right."},
            {"role": "user", "content": "Question: {{item.question}}\nAnswer: {{sample.output_text}}"},
        ],
        "labels": ["correct", "incorrect"],
        "passing_labels": ["correct"],
    }
    evaluation = client.evals.create(
        name="capitals",
        data_source_config={"type": "custom", "item_schema": SCHEMA, "include_sample_schema": True},
        testing_criteria=[MENTIONS, judge],  # type: ignore[list-item]
    )
    rows = [
        {"item": {"question": "What is the capital of France?", "answer": "Paris"}},
        {"item": {"question": "What is the capital of Italy?", "answer": "Rome"}},
        {"item": {"question": "What colour is the sky on a clear day?", "answer": "blue"}},
    ]
    run = client.evals.runs.create(
        evaluation.id,
        data_source={
            "type": "completions",
            "model": SMOLLM2,
            "input_messages": PROMPT,  # type: ignore[typeddict-item]
            "sampling_params": {"max_completion_tokens": 32, "temperature": 0},
            "source": {"type": "file_content", "content": rows},
        },
    )
    done = _settled(client, evaluation.id, run.id, timeout=600)
    assert done.status == "completed", done.error
    counts = done.result_counts
    assert counts.total == 3 and counts.errored == 0 and counts.passed + counts.failed == 3
    assert {u.run_model_name for u in done.per_model_usage} == {SMOLLM2, QWEN}
    items = list(client.evals.runs.output_items.list(run.id, eval_id=evaluation.id, limit=2))
    assert [i.datasource_item_id for i in items] == [0, 1, 2]
    for item in items:
        assert item.sample.model == SMOLLM2 and item.sample.output[0].content
        verdict = next(r for r in item.results if r.name == "judge")
        label = verdict.model_extra.get("label") if verdict.model_extra else None
        assert label in ("correct", "incorrect") and verdict.passed == (label == "correct")
    calls = _model_calls(Path(server.config_path).parent / "state", run.id)
    assert calls == Counter({(str(i), kind): 1 for i in range(3) for kind in ("sample", "judge")})


@pytest.mark.timeout(1800)  # two server starts and six sampled rows; minutes on a loaded 2-core machine
def test_killed_run_resumes_without_regrading(tmp_path: Path) -> None:
    rows = [{"item": {"question": f"Write one sentence about the number {i}.", "answer": str(i)}} for i in range(6)]
    config = _config(lease_seconds=5)  # a short lease: the restarted server resumes the run soon
    first = start_server(config, tmp_path, timeout=300)
    state = tmp_path / "state"
    try:
        client = first.openai(timeout=120, _strict_response_validation=True)
        evaluation = client.evals.create(
            data_source_config={"type": "custom", "item_schema": SCHEMA},
            testing_criteria=[MENTIONS],  # type: ignore[list-item]
        )
        run = client.evals.runs.create(
            evaluation.id,
            data_source={
                "type": "completions",
                "model": SMOLLM2,
                "input_messages": PROMPT,  # type: ignore[typeddict-item]
                "sampling_params": {"max_completion_tokens": 24, "temperature": 0},
                "source": {"type": "file_content", "content": rows},
            },
        )
        wait_for(
            lambda: _done(client.evals.runs.retrieve(run.id, eval_id=evaluation.id).result_counts) >= 2,
            timeout=300,
            what="two finished rows",
        )
    finally:
        first.stop(signal.SIGKILL)
    with sqlite3.connect(state / "sqlstore.db") as db:
        stored = db.execute("SELECT row_index, item FROM eval_output_items WHERE run_id = ?", (run.id,)).fetchall()
    before = {int(index): json.loads(item) for index, item in stored}
    assert 2 <= len(before) < len(rows), f"{len(before)} rows finished before the kill; the test needs a mid-run kill"

    calls_before = _model_calls(state, run.id)
    second = start_server(config, tmp_path, port=first.port, timeout=300)
    try:
        client = second.openai(timeout=120, _strict_response_validation=True)
        done = _settled(client, evaluation.id, run.id, timeout=600)
        assert done.status == "completed", done.error
        assert done.result_counts.total == len(rows) and done.result_counts.errored == 0
        items = {i.datasource_item_id: i for i in client.evals.runs.output_items.list(run.id, eval_id=evaluation.id)}
        assert sorted(items) == list(range(len(rows)))
        for index, record in before.items():
            assert items[index].model_dump(mode="json", exclude_unset=True)["id"] == record["id"], (
                f"row {index} was graded again"
            )
            assert items[index].sample.output[0].content == record["sample"]["output"][0]["content"]
        calls = _model_calls(state, run.id)
        for index in before:  # no model call for a finished row after the restart
            key = (str(index), "sample")
            assert calls[key] == calls_before[key] >= 1, f"finished row {index} was sampled again after the restart"
        assert all(calls[(str(i), "sample")] >= 1 for i in range(len(rows)))
    finally:
        second.stop()
