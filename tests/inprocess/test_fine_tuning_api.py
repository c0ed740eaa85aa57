"""The fine-tuning API in process, through the ``openai`` SDK with strict response validation.

Job workers are off here (``workers: 0``), so no run starts: what these tests check is everything that
happens before and around training — the line-by-line file checks, the 400s for an unknown model, an
unsupported method, out-of-range hyperparameters and a run over the memory cap, the resolved
hyperparameters, events, ownership between two tenants, and pause, resume and cancel of a queued job.
The trainer is the real ``inline::huggingface`` provider (its memory estimate reads the packaged
SmolLM2 GGUF's header). Real training and serving are in ``tests/integration/test_fine_tuning_train.py``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import openai
import pytest

from tests.inprocess.harness import InProcessServer, echo_config, serve_in_process

pytest.importorskip("gguf", reason="the train extra (gguf) reads the base model's header")

KEYS = {"alice": "sk-alice-ft", "bob": "sk-bob-ft"}
BASE = "smollm2-135m-instruct"


@pytest.fixture(scope="module")
async def app(echo_plugin: Path, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[InProcessServer]:
    keys = [
        {"sha256": hashlib.sha256(key.encode()).hexdigest(), "principal": name, "attributes": {}}
        for name, key in KEYS.items()
    ]
    config = echo_config(tmp_path_factory.mktemp("inprocess-ft"), apis=["inference", "models", "files", "fine_tuning"])
    config["providers"]["files"] = [{"provider_id": "localfs", "provider_type": "inline::localfs", "config": {}}]
    config["providers"]["fine_tuning"] = [
        {"provider_id": "huggingface", "provider_type": "inline::huggingface", "config": {}},
        {
            "provider_id": "capped",
            "provider_type": "inline::huggingface",
            "config": {"models": [{"name": "smollm2-capped", "packaged": BASE}], "memory_cap_mb": 700},
        },
    ]
    config["server"]["auth"] = {"providers": [{"type": "api_keys", "keys": keys}]}
    config["jobs"] = {"workers": 0, "reserved_workers": {}}
    async with serve_in_process(config) as server:
        yield server


def _sdk(app: InProcessServer, who: str = "alice", *, strict: bool = True) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(
        base_url=app.v1, api_key=KEYS[who], max_retries=0, http_client=app.http, _strict_response_validation=strict
    )


def _example(i: int) -> dict[str, Any]:
    return {
        "messages": [
            {"role": "user", "content": f"What is {i} plus {i}?"},
            {"role": "assistant", "content": f"{2 * i}."},
        ]
    }


async def _upload(client: openai.AsyncOpenAI, lines: list[Any], purpose: Any = "fine-tune") -> str:
    raw = b"".join((x if isinstance(x, bytes) else json.dumps(x).encode()) + b"\n" for x in lines)
    return (await client.files.create(file=("train.jsonl", raw), purpose=purpose)).id


async def test_bad_lines_are_all_listed_before_a_job_exists(app: InProcessServer) -> None:
    alice = _sdk(app)
    lines: list[Any] = [_example(1), b"{nope", {"messages": [{"role": "user", "content": "hi"}]}, _example(2)]
    lines.append({"messages": [{"role": "robot", "content": "x"}, {"role": "assistant", "content": "y"}]})
    file_id = await _upload(alice, lines)
    before = await alice.fine_tuning.jobs.list()
    with pytest.raises(openai.BadRequestError) as err:
        await alice.fine_tuning.jobs.create(model=BASE, training_file=file_id)
    body = err.value.body
    assert isinstance(body, dict) and body["param"] == "training_file" and body["code"] == "invalid_training_file"
    message = str(body["message"])
    assert "3 invalid line(s)" in message
    assert "line 2: not valid JSON" in message and "line 3:" in message and "line 5:" in message
    assert "line 1:" not in message and "line 4:" not in message
    after = await alice.fine_tuning.jobs.list()
    assert len(after.data) == len(before.data)


async def test_unknown_model_method_and_hyperparameters_are_400s(app: InProcessServer) -> None:
    alice = _sdk(app)
    file_id = await _upload(alice, [_example(i) for i in range(4)])
    with pytest.raises(openai.BadRequestError) as err:
        await alice.fine_tuning.jobs.create(model="gpt-9", training_file=file_id)
    assert err.value.body["param"] == "model" and BASE in err.value.body["message"]  # type: ignore[index]
    with pytest.raises(openai.BadRequestError) as err:
        await alice.fine_tuning.jobs.create(model=BASE, training_file=file_id, method={"type": "reinforcement"})  # type: ignore[arg-type,typeddict-item]
    assert err.value.body["code"] == "unsupported_method"  # type: ignore[index]
    with pytest.raises(openai.BadRequestError) as err:  # chat examples are not preference pairs
        await alice.fine_tuning.jobs.create(model=BASE, training_file=file_id, method={"type": "dpo"})
    assert err.value.body["code"] == "invalid_training_file"  # type: ignore[index]
    assert "for method 'dpo'" in err.value.body["message"] and "missing 'input'" in err.value.body["message"]  # type: ignore[index]
    for hyper in ({"n_epochs": 0}, {"n_epochs": 51}, {"batch_size": 1000}, {"learning_rate_multiplier": 1000}):
        method = {"type": "supervised", "supervised": {"hyperparameters": hyper}}
        with pytest.raises(openai.BadRequestError) as err:
            await alice.fine_tuning.jobs.create(model=BASE, training_file=file_id, method=method)  # type: ignore[arg-type]
        assert next(iter(hyper)) in str(err.value.body)
    batch_file = await _upload(alice, [_example(1)], purpose="batch")
    with pytest.raises(openai.BadRequestError) as err:
        await alice.fine_tuning.jobs.create(model=BASE, training_file=batch_file)
    assert "purpose 'fine-tune'" in err.value.body["message"]  # type: ignore[index]


async def test_a_run_over_the_memory_cap_is_refused(app: InProcessServer) -> None:
    alice = _sdk(app)
    file_id = await _upload(alice, [_example(i) for i in range(8)])
    with pytest.raises(openai.BadRequestError) as err:
        await alice.fine_tuning.jobs.create(model="smollm2-capped", training_file=file_id)
    assert err.value.body["code"] == "exceeds_memory_cap"  # type: ignore[index]
    assert "700 MB" in err.value.body["message"]  # type: ignore[index]


def _pair(i: int) -> dict[str, Any]:
    return {
        "input": {"messages": [{"role": "user", "content": f"What is {i} plus {i}?"}]},
        "preferred_output": [{"role": "assistant", "content": f"{2 * i}."}],
        "non_preferred_output": [{"role": "assistant", "content": f"{2 * i + 1}."}],
    }


async def test_a_dpo_job_is_accepted_with_beta_resolved(app: InProcessServer) -> None:
    alice = _sdk(app)
    file_id = await _upload(alice, [_pair(i) for i in range(3)])
    job = await alice.fine_tuning.jobs.create(
        model=BASE,
        training_file=file_id,
        method={"type": "dpo", "dpo": {"hyperparameters": {"n_epochs": 1}}},
    )
    assert job.status == "queued" and job.method is not None and job.method.type == "dpo"
    assert job.method.dpo is not None and job.method.dpo.hyperparameters is not None
    hyper = job.method.dpo.hyperparameters
    assert hyper.beta == 0.1 and hyper.n_epochs == 1 and hyper.batch_size == 3  # auto beta, auto batch
    for beta in (0, 2.5):
        with pytest.raises(openai.BadRequestError) as err:
            await alice.fine_tuning.jobs.create(
                model=BASE, training_file=file_id, method={"type": "dpo", "dpo": {"hyperparameters": {"beta": beta}}}
            )
        assert "beta" in str(err.value.body)


async def test_a_dpo_run_over_the_memory_cap_names_the_dpo_batch_size(app: InProcessServer) -> None:
    alice = _sdk(app)
    file_id = await _upload(alice, [_pair(i) for i in range(8)])
    with pytest.raises(openai.BadRequestError) as err:
        await alice.fine_tuning.jobs.create(model="smollm2-capped", training_file=file_id, method={"type": "dpo"})
    body = err.value.body
    assert isinstance(body, dict) and body["code"] == "exceeds_memory_cap"
    assert body["param"] == "method.dpo.hyperparameters.batch_size" and "2 answers" in body["message"]


async def test_create_resolves_hyperparameters_and_records_events(app: InProcessServer) -> None:
    alice = _sdk(app)
    file_id = await _upload(alice, [_example(i) for i in range(3)])
    valid_id = await _upload(alice, [_example(9)])
    job = await alice.fine_tuning.jobs.create(
        model=BASE,
        training_file=file_id,
        validation_file=valid_id,
        suffix="adder",
        seed=7,
        metadata={"team": "math"},
        method={"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 2}}},
    )
    assert job.status == "queued" and job.id.startswith("ftjob-") and job.seed == 7
    assert job.hyperparameters.n_epochs == 2 and job.hyperparameters.batch_size == 3  # auto: min(4, examples)
    assert job.method is not None and job.method.type == "supervised"
    assert job.metadata == {"team": "math"} and job.fine_tuned_model is None
    again = await alice.fine_tuning.jobs.retrieve(job.id)
    assert again.model_dump() == job.model_dump()
    events = await alice.fine_tuning.jobs.list_events(job.id)
    assert [e.message for e in events.data][-1].startswith("Created fine-tuning job")
    assert any("3 examples" in e.message for e in events.data)
    checkpoints = await alice.fine_tuning.jobs.checkpoints.list(job.id)
    assert checkpoints.data == []
    listed = await alice.fine_tuning.jobs.list(limit=100)
    assert job.id in [j.id for j in listed.data]


async def test_another_tenant_cannot_see_or_touch_a_job(app: InProcessServer) -> None:
    alice, bob = _sdk(app), _sdk(app, "bob")
    job = await alice.fine_tuning.jobs.create(model=BASE, training_file=await _upload(alice, [_example(1)]))
    with pytest.raises(openai.NotFoundError):
        await bob.fine_tuning.jobs.retrieve(job.id)
    with pytest.raises(openai.NotFoundError):
        await bob.fine_tuning.jobs.cancel(job.id)
    with pytest.raises(openai.NotFoundError):
        await bob.fine_tuning.jobs.list_events(job.id)
    assert job.id not in [j.id for j in (await bob.fine_tuning.jobs.list(limit=100)).data]
    with pytest.raises(openai.NotFoundError):  # her file is not his to train on either
        await bob.fine_tuning.jobs.create(model=BASE, training_file=job.training_file)


async def test_pause_resume_and_cancel_a_queued_job(app: InProcessServer) -> None:
    # A paused job's status is "paused", which OpenAI's API returns but the SDK's Literal does not list
    # yet: the SDK's default (non-strict) parsing passes it through, strict validation would refuse it.
    alice = _sdk(app, strict=False)
    job = await alice.fine_tuning.jobs.create(model=BASE, training_file=await _upload(alice, [_example(1)]))
    paused = await alice.fine_tuning.jobs.pause(job.id)
    assert paused.status == "paused"
    with pytest.raises(openai.NotFoundError):
        await alice.fine_tuning.jobs.resume(job.id + "x")
    resumed = await alice.fine_tuning.jobs.resume(job.id)
    assert resumed.status == "queued"
    with pytest.raises(openai.BadRequestError) as err:
        await alice.fine_tuning.jobs.resume(job.id)
    assert err.value.body["code"] == "job_not_paused"  # type: ignore[index]
    cancelled = await alice.fine_tuning.jobs.cancel(job.id)
    assert cancelled.status == "cancelled" and cancelled.finished_at is not None
    assert (await alice.fine_tuning.jobs.cancel(job.id)).status == "cancelled"
    with pytest.raises(openai.BadRequestError) as err:
        await alice.fine_tuning.jobs.pause(job.id)
    assert err.value.body["code"] == "job_not_pausable"  # type: ignore[index]
    messages = [e.message for e in (await alice.fine_tuning.jobs.list_events(job.id)).data]
    assert any("cancelled" in m for m in messages) and any("resumed" in m for m in messages)
