"""The Evals API in process, through the ``openai`` SDK with strict response validation.

The echo plugin answers chat with the last user message, which makes samples predictable: a candidate
prompted with ``{{item.question}}`` answers the question back, and a label judge whose user message is
``{"label": "..."}`` answers that JSON, so the judge's parse path runs for real. What these tests check is
the API: shapes, counts, pagination, the data sources (inline, file, completions, responses), cancel,
delete, ownership between two tenants, and that bad input is a 400 naming its field or row. The embedded
model as candidate and judge, and a run surviving ``kill -9``, are in tests/integration/test_evals_server.py.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import openai
import pytest

from tests.inprocess.harness import InProcessServer, echo_config, serve_in_process

pytestmark = pytest.mark.filterwarnings("ignore:The Evals API is deprecated:DeprecationWarning")
KEYS = {"alice": "sk-alice-evals", "bob": "sk-bob-evals"}
SCHEMA = {
    "type": "object",
    "properties": {"question": {"type": "string"}, "expected": {"type": "string"}},
    "required": ["question", "expected"],
}
EXACT = {
    "type": "string_check",
    "name": "exact",
    "input": "{{sample.output_text}}",
    "reference": "{{item.expected}}",
    "operation": "eq",
}


@pytest.fixture(scope="module")
async def app(echo_plugin: Path, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[InProcessServer]:
    keys = [
        {"sha256": hashlib.sha256(key.encode()).hexdigest(), "principal": name, "attributes": {}}
        for name, key in KEYS.items()
    ]
    config = echo_config(
        tmp_path_factory.mktemp("inprocess-evals"), apis=["inference", "models", "files", "responses", "evals"]
    )
    config["providers"]["inference"][0]["config"] = {"prefix": ""}  # the answer is the last user message, as is
    config["providers"]["files"] = [{"provider_id": "localfs", "provider_type": "inline::localfs", "config": {}}]
    config["providers"]["responses"] = [{"provider_id": "builtin", "provider_type": "inline::builtin"}]
    config["server"]["auth"] = {"providers": [{"type": "api_keys", "keys": keys}]}
    config["server"]["max_request_bytes"] = 4_000_000  # the cancel test sends 1,500 rows inline
    config["jobs"] = {"poll_seconds": 0.05}
    async with serve_in_process(config) as server:
        yield server


def _sdk(app: InProcessServer, who: str = "alice") -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(
        base_url=app.v1, api_key=KEYS[who], max_retries=0, http_client=app.http, _strict_response_validation=True
    )


async def _settled(client: openai.AsyncOpenAI, eval_id: str, run_id: str) -> Any:
    for _ in range(600):
        run = await client.evals.runs.retrieve(run_id, eval_id=eval_id)
        if run.status in ("completed", "failed", "canceled"):
            return run
        await asyncio.sleep(0.05)
    raise AssertionError(f"run {run_id} still {run.status}")


async def _eval(client: openai.AsyncOpenAI, *criteria: dict[str, Any], name: str = "qa") -> Any:
    return await client.evals.create(
        name=name,
        data_source_config={"type": "custom", "item_schema": SCHEMA, "include_sample_schema": True},
        testing_criteria=list(criteria or [EXACT]),  # type: ignore[arg-type]
    )


ROWS = [
    {"item": {"question": "blue", "expected": "blue"}, "sample": {"output_text": "blue"}},
    {"item": {"question": "red", "expected": "red"}, "sample": {"output_text": "green"}},
    {"item": {"question": "sky", "expected": "sky"}, "sample": {"output_text": "sky"}},
]


async def test_eval_lifecycle_and_inline_jsonl_run(app: InProcessServer) -> None:
    client = _sdk(app)
    label = {
        "type": "label_model",
        "name": "judge",
        "model": "echo",
        "input": [{"role": "user", "content": '{"label": "{{sample.output_text}}"}'}],
        "labels": ["blue", "green", "sky"],
        "passing_labels": ["blue", "sky"],
    }
    similar = {
        "type": "text_similarity",
        "name": "similar",
        "input": "{{sample.output_text}}",
        "reference": "{{item.expected}}",
        "evaluation_metric": "fuzzy_match",
        "pass_threshold": 0.9,
    }
    created = await _eval(client, EXACT, label, similar)
    assert created.object == "eval" and created.name == "qa"
    assert created.data_source_config.type == "custom"
    assert created.data_source_config.schema_["required"] == ["item", "sample"]
    assert [c.type for c in created.testing_criteria] == ["string_check", "label_model", "text_similarity"]
    assert (await client.evals.retrieve(created.id)).id == created.id

    updated = await client.evals.update(created.id, name="qa v2", metadata={"team": "search"})
    assert (updated.name, updated.metadata) == ("qa v2", {"team": "search"})

    run = await client.evals.runs.create(
        created.id, name="inline", data_source={"type": "jsonl", "source": {"type": "file_content", "content": ROWS}}
    )
    assert run.object == "eval.run" and run.status in ("queued", "in_progress", "completed")
    done = await _settled(client, created.id, run.id)
    assert done.status == "completed", done.error
    assert (done.result_counts.total, done.result_counts.passed, done.result_counts.failed) == (3, 2, 1)
    assert done.result_counts.errored == 0
    per = {r.testing_criteria: (r.passed, r.failed) for r in done.per_testing_criteria_results}
    assert per == {"exact": (2, 1), "judge": (2, 1), "similar": (2, 1)}
    assert any(u.run_model_name == "echo" and u.invocation_count == 3 for u in done.per_model_usage)
    progress = (done.model_extra or {})["progress"]
    assert progress["rows_done"] == progress["rows_total"] == 3 and progress["rows_per_second"] > 0

    items = [item async for item in client.evals.runs.output_items.list(done.id, eval_id=created.id, limit=2)]
    assert [i.datasource_item_id for i in items] == [0, 1, 2]
    assert [i.status for i in items] == ["pass", "fail", "pass"]
    judge = next(r for r in items[1].results if r.name == "judge")
    assert judge.passed is False and judge.sample is not None and judge.sample["model"] == "echo"
    first_page = await client.evals.runs.output_items.list(done.id, eval_id=created.id, limit=2)
    assert len(first_page.data) == 2 and first_page.has_more
    failed = await client.evals.runs.output_items.list(done.id, eval_id=created.id, status="fail")
    assert [i.datasource_item["question"] for i in failed.data] == ["red"]
    one = await client.evals.runs.output_items.retrieve(items[2].id, eval_id=created.id, run_id=done.id)
    assert one.datasource_item == ROWS[2]["item"]


async def test_completions_run_samples_the_model(app: InProcessServer) -> None:
    client = _sdk(app)
    evaluation = await _eval(client)
    run = await client.evals.runs.create(
        evaluation.id,
        data_source={
            "type": "completions",
            "model": "echo",
            "input_messages": {
                "type": "template",
                "template": [
                    {"role": "system", "content": "Repeat the word."},
                    {"role": "user", "content": "{{item.question}}"},
                ],
            },
            "sampling_params": {"max_completion_tokens": 16, "temperature": 0},
            "source": {
                "type": "file_content",
                "content": [
                    {"item": {"question": "alpha", "expected": "alpha"}},
                    {"item": {"question": "beta", "expected": "gamma"}},
                ],
            },
        },
    )
    assert run.model == "echo"
    done = await _settled(client, evaluation.id, run.id)
    assert (done.status, done.result_counts.passed, done.result_counts.failed) == ("completed", 1, 1)
    items = (await client.evals.runs.output_items.list(done.id, eval_id=evaluation.id)).data
    assert items[1].sample.output[0].content == "beta"
    assert [m.role for m in items[1].sample.input] == ["system", "user"]
    assert items[1].sample.model == "echo" and items[1].sample.max_completion_tokens == 16


async def test_responses_run_and_item_reference(app: InProcessServer) -> None:
    client = _sdk(app)
    evaluation = await client.evals.create(
        data_source_config={
            "type": "custom",
            "item_schema": {
                "type": "object",
                "properties": {"messages": {"type": "array"}, "expected": {"type": "string"}},
            },
        },
        testing_criteria=[{**EXACT, "operation": "like"}],  # type: ignore[list-item]
    )
    run = await client.evals.runs.create(
        evaluation.id,
        data_source={
            "type": "responses",
            "model": "echo",
            "input_messages": {"type": "item_reference", "item_reference": "item.messages"},
            "source": {
                "type": "file_content",
                "content": [{"item": {"messages": [{"role": "user", "content": "hello there"}], "expected": "there"}}],
            },
        },
    )
    done = await _settled(client, evaluation.id, run.id)
    assert (done.status, done.result_counts.passed) == ("completed", 1), done.error


async def test_file_rows_and_a_row_that_breaks_the_schema(app: InProcessServer) -> None:
    client = _sdk(app)
    evaluation = await _eval(client)
    good = b"".join(json.dumps(r).encode() + b"\n" for r in ROWS)
    uploaded = await client.files.create(file=("rows.jsonl", good), purpose="user_data")
    run = await client.evals.runs.create(
        evaluation.id, data_source={"type": "jsonl", "source": {"type": "file_id", "id": uploaded.id}}
    )
    done = await _settled(client, evaluation.id, run.id)
    assert (done.status, done.result_counts.passed, done.result_counts.failed) == ("completed", 2, 1)

    bad = good + json.dumps({"item": {"question": "no expected"}}).encode() + b"\n"
    uploaded = await client.files.create(file=("bad.jsonl", bad), purpose="user_data")
    run = await client.evals.runs.create(
        evaluation.id, data_source={"type": "jsonl", "source": {"type": "file_id", "id": uploaded.id}}
    )
    failed = await _settled(client, evaluation.id, run.id)
    assert failed.status == "failed" and failed.error.code == "invalid_item"
    assert f"row 3 (line 4 of {uploaded.id})" in failed.error.message and "'expected'" in failed.error.message


async def test_bad_input_is_a_400_naming_the_problem(app: InProcessServer) -> None:
    client = _sdk(app)
    custom = {"type": "custom", "item_schema": SCHEMA}
    cases: list[tuple[dict[str, Any], list[dict[str, Any]], str]] = [
        (custom, [{"type": "regex", "name": "r"}], "unknown grader type 'regex'"),
        (custom, [{"type": "python", "name": "p", "source": "1"}], "python graders are not supported"),
        ({"type": "custom", "item_schema": {"type": "nope"}}, [EXACT], "not a valid JSON Schema"),
        (custom, [{**EXACT, "input": "{{output.text}}"}], "item.* and sample.*"),
    ]
    for config, criteria, message in cases:
        with pytest.raises(openai.BadRequestError) as caught:
            await client.evals.create(data_source_config=config, testing_criteria=criteria)  # type: ignore[arg-type]
        assert message in caught.value.message, caught.value.message

    evaluation = await _eval(client)
    rows = [{"item": {"question": "q", "expected": "e"}}, {"item": {"question": 3, "expected": "e"}}]
    with pytest.raises(openai.BadRequestError) as caught:
        await client.evals.runs.create(
            evaluation.id, data_source={"type": "jsonl", "source": {"type": "file_content", "content": rows}}
        )
    assert "data_source.source.content[1].item.question" in caught.value.message
    with pytest.raises(openai.BadRequestError) as caught:
        await client.evals.runs.create(
            evaluation.id,
            data_source={"type": "completions", "source": {"type": "file_content", "content": rows[:1]}},
        )
    assert "data_source.model" in caught.value.message
    with pytest.raises(openai.NotFoundError):
        await client.evals.runs.create(
            "eval_missing", data_source={"type": "jsonl", "source": {"type": "file_content", "content": rows[:1]}}
        )


async def test_cancel_delete_and_owners(app: InProcessServer) -> None:
    alice, bob = _sdk(app), _sdk(app, "bob")
    evaluation = await _eval(alice)
    many = [
        {"item": {"question": f"q{i}", "expected": f"q{i}"}, "sample": {"output_text": f"q{i}"}} for i in range(1500)
    ]
    run = await alice.evals.runs.create(
        evaluation.id, data_source={"type": "jsonl", "source": {"type": "file_content", "content": many}}
    )
    canceled = await alice.evals.runs.cancel(run.id, eval_id=evaluation.id)
    assert canceled.status == "canceled"
    final = await _settled(alice, evaluation.id, run.id)
    await asyncio.sleep(0.3)  # a job that was mid-row writes its last counts; the status must stay canceled
    final = await alice.evals.runs.retrieve(run.id, eval_id=evaluation.id)
    assert final.status == "canceled" and final.result_counts.passed < 1500
    runs = await alice.evals.runs.list(evaluation.id, status="canceled")
    assert [r.id for r in runs.data] == [run.id]

    with pytest.raises(openai.NotFoundError):
        await bob.evals.retrieve(evaluation.id)
    with pytest.raises(openai.NotFoundError):
        await bob.evals.runs.retrieve(run.id, eval_id=evaluation.id)
    assert evaluation.id not in [e.id async for e in bob.evals.list()]

    deleted_run = await alice.evals.runs.delete(run.id, eval_id=evaluation.id)
    assert (deleted_run.deleted, deleted_run.run_id) == (True, run.id)
    with pytest.raises(openai.NotFoundError):
        await alice.evals.runs.retrieve(run.id, eval_id=evaluation.id)
    deleted = await alice.evals.delete(evaluation.id)
    assert (deleted.deleted, deleted.eval_id, deleted.object) == (True, evaluation.id, "eval.deleted")
    with pytest.raises(openai.NotFoundError):
        await alice.evals.retrieve(evaluation.id)


async def test_list_evals_pages(app: InProcessServer) -> None:
    client = _sdk(app, "bob")
    made = [(await _eval(client, name=f"page-{i}")).id for i in range(3)]
    page = await client.evals.list(limit=2, order="asc")
    assert page.has_more and len(page.data) == 2
    seen = [e.id async for e in client.evals.list(limit=2, order="asc")]
    assert [i for i in seen if i in made] == made
