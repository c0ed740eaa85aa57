"""Fine-tuning jobs forwarded to ``remote::openai``, in process, against a loopback stand-in for OpenAI.

OpenAI cannot be reached from here, so both ``remote::openai`` providers (the trainer and the inference
provider that serves the tuned model) point at :mod:`tests.integration.wire_openai_finetune`, which speaks
OpenAI's Files and fine-tuning wire format and moves a job one step each time it is looked at. The
client is the ``openai`` SDK with strict response validation (except where a job is ``paused``, a status
the SDK does not list yet). Job workers run, with short polls, so a job goes from create to a served
model in well under a second. What is checked:

- a job's files are uploaded (purpose ``fine-tune``) and the upstream job is created with the job's
  method, suffix, seed and metadata; its events, checkpoints, resolved hyperparameters and result file
  come back; the tuned model is listed by ``/v1/models`` and answers chat completions;
- cancel, pause and resume reach the upstream from the client's request; an upstream that cannot be
  reached answers the client 503 naming the provider and leaves the job as it was;
- a failed upstream job fails the job with the upstream's code and message, the key removed; a create
  the upstream answers with 500 fails the job naming the provider; a trainer without a key answers 503;
- a server stopped while the upstream trains, and started again, follows the same upstream job, and a
  create whose answer never came is found upstream instead of repeated;
- the upstream key is in no response and no stored row.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import openai
import pytest

from tests.inprocess.harness import InProcessServer, serve_in_process
from tests.integration.wire_openai_finetune import API_KEY, BASE_MODEL, ORG, OpenAIFineTuneStandIn, uploaded
from tests.integration.wire_standins import Failure
from underlay.core.config import ConfigError

T = TypeVar("T")
ENDED = ("succeeded", "failed", "cancelled")
TRAINER = "openai-ft"


def _config(stand_in: OpenAIFineTuneStandIn, state_dir: Path, **trainer: Any) -> dict[str, Any]:
    upstream = {"base_url": stand_in.v1, "api_key": API_KEY, "max_retries": 0}
    return {
        "state_dir": str(state_dir),
        "apis": ["inference", "models", "files", "fine_tuning"],
        "providers": {
            "inference": [{"provider_id": "openai", "provider_type": "remote::openai", "config": upstream}],
            "files": [{"provider_id": "localfs", "provider_type": "inline::localfs", "config": {}}],
            "fine_tuning": [
                {
                    "provider_id": TRAINER,
                    "provider_type": "remote::openai",
                    "config": {**upstream, "models": [BASE_MODEL], "poll_seconds": 0.02, **trainer},
                },
                {
                    "provider_id": "keyless",
                    "provider_type": "remote::openai",
                    "config": {
                        "base_url": stand_in.v1,
                        "api_key_env": "UNDERLAY_TEST_UNSET_KEY",
                        "models": ["keyless-base"],
                        "inference_provider_id": None,
                    },
                },
            ],
        },
        "jobs": {"lease_seconds": 1, "poll_seconds": 0.02},
    }


@pytest.fixture(scope="module")
def stand_in() -> Iterator[OpenAIFineTuneStandIn]:
    server = OpenAIFineTuneStandIn().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
async def app(stand_in: OpenAIFineTuneStandIn, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Any]:
    state = tmp_path_factory.mktemp("ft-openai")
    async with serve_in_process(_config(stand_in, state)) as server:
        yield server, state


@pytest.fixture(autouse=True)
def _reset(stand_in: OpenAIFineTuneStandIn) -> Iterator[None]:
    yield
    stand_in.hold = False
    stand_in.fail_next = False
    stand_in.slow_create = 0.0
    stand_in.standin.failures.clear()


def _sdk(server: InProcessServer, *, strict: bool = True) -> openai.AsyncOpenAI:
    return server.openai(_strict_response_validation=strict)


async def _wait(probe: Callable[[], Awaitable[T | None | bool]], what: str, within: float = 20) -> T:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        value = await probe()
        if value:
            return value  # type: ignore[return-value]
        await asyncio.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


async def _status(client: openai.AsyncOpenAI, job_id: str, *wanted: str) -> Any:
    async def probe() -> Any:
        job = await client.fine_tuning.jobs.retrieve(job_id)
        return job if job.status in wanted else None

    return await _wait(probe, f"job {job_id} to be {' or '.join(wanted)}")


def _lines(tag: str, count: int = 3) -> bytes:
    examples = [
        {"messages": [{"role": "user", "content": f"{tag} question {i}"}, {"role": "assistant", "content": f"{i}."}]}
        for i in range(count)
    ]
    return b"".join(json.dumps(e).encode() + b"\n" for e in examples)


async def _upload(client: openai.AsyncOpenAI, data: bytes, name: str = "train.jsonl") -> str:
    return (await client.files.create(file=(name, data), purpose="fine-tune")).id


async def _running_upstream(
    client: openai.AsyncOpenAI, stand_in: OpenAIFineTuneStandIn, data: bytes, **create: Any
) -> tuple[Any, Any]:
    """A job created and seen running upstream (the caller set ``stand_in.hold``): (local job, upstream job)."""
    job = await client.fine_tuning.jobs.create(model=BASE_MODEL, training_file=await _upload(client, data), **create)
    await _status(client, job.id, "running")
    return job, stand_in.job_over(data)


def _assert_no_key(state: Path, *texts: str) -> None:
    for text in texts:
        assert API_KEY not in text
    for name, table in (("sqlstore.db", "fine_tuning_upstreams"), ("kvstore.db", None)):
        assert (state / name).is_file(), name
        with sqlite3.connect(state / name) as db:
            tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
            assert table is None or table in tables
            for each in tables:
                for row in db.execute(f"SELECT * FROM {each}").fetchall():  # noqa: S608 - names from the schema
                    assert API_KEY not in json.dumps(row, default=str), each


async def test_a_job_trains_upstream_and_its_model_is_served(app: Any, stand_in: OpenAIFineTuneStandIn) -> None:
    server, state = app
    client = _sdk(server)
    training, validation = _lines("served", 3), _lines("held-out", 1)
    method = {"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 2}}}
    job = await client.fine_tuning.jobs.create(
        model=BASE_MODEL,
        training_file=await _upload(client, training),
        validation_file=await _upload(client, validation, "valid.jsonl"),
        suffix="served",
        seed=7,
        metadata={"team": "search"},
        method=method,  # type: ignore[arg-type]
    )
    assert job.status == "queued" and job.hyperparameters.batch_size == "auto" and job.hyperparameters.n_epochs == 2
    done = await _status(client, job.id, *ENDED)
    assert done.status == "succeeded", done.error

    remote = stand_in.job_over(training)
    sent = remote.request
    assert sent["suffix"] == "served" and sent["seed"] == 7 and sent["metadata"] == {"team": "search"}
    assert sent["method"] == {
        "type": "supervised",
        "supervised": {
            "hyperparameters": {
                **method["supervised"]["hyperparameters"],
                "batch_size": "auto",
                "learning_rate_multiplier": "auto",
            }
        },
    }  # type: ignore[index]
    assert uploaded(stand_in, sent["validation_file"]) == [json.loads(line) for line in validation.splitlines()]
    assert {stand_in.files[sent[k]].purpose for k in ("training_file", "validation_file")} == {"fine-tune"}

    assert done.fine_tuned_model == remote.fine_tuned_model == f"ft:{BASE_MODEL}:{ORG}:served:{remote.id}"
    assert done.hyperparameters.batch_size == 1 and done.hyperparameters.n_epochs == 2  # what the upstream chose
    assert done.trained_tokens == 60 and done.finished_at is not None and done.error is None

    models = [m.id for m in (await client.models.list()).data]
    assert f"openai/{done.fine_tuned_model}" in models
    reply = await client.chat.completions.create(
        model=done.fine_tuned_model, messages=[{"role": "user", "content": "hi"}]
    )
    assert reply.choices[0].message.content == f"An answer from {done.fine_tuned_model}."

    events = (await client.fine_tuning.jobs.list_events(job.id, limit=100)).data
    metrics = [e for e in events if e.type == "metrics"]
    assert [e.data["step"] for e in reversed(metrics)] == [1, 2, 3, 4, 5, 6]  # type: ignore[index]
    messages = [e.message for e in reversed(events)]
    assert messages[0].startswith("Created fine-tuning job: ftjob-")  # ours, then the upstream's in order
    assert any(m.startswith(f"Sent to provider '{TRAINER}' as upstream job {remote.id}") for m in messages)
    assert messages.index(f"New fine-tuned model created: {done.fine_tuned_model}") < messages.index(
        "The job has successfully completed"
    )
    assert f"Tuned model listed as openai/{done.fine_tuned_model} on inference provider 'openai'" in messages

    checkpoints = (await client.fine_tuning.jobs.checkpoints.list(job.id)).data
    assert [c.step_number for c in checkpoints] == [6, 3]
    assert all(c.fine_tuning_job_id == job.id and c.id.startswith("ftckpt-") for c in checkpoints)
    assert checkpoints[0].fine_tuned_model_checkpoint.endswith(":ckpt-step-6")
    assert checkpoints[0].metrics.train_loss == pytest.approx(2.0 / 6, abs=1e-3)

    assert len(done.result_files) == 1
    csv = (await client.files.content(done.result_files[0])).text
    assert csv.splitlines()[0] == "step,train_loss" and len(csv.splitlines()) == 7
    bodies = [
        (await server.http.get(f"/v1/fine_tuning/jobs/{job.id}")).text,
        (await server.http.get(f"/v1/fine_tuning/jobs/{job.id}/events?limit=100")).text,
    ]
    _assert_no_key(state, *bodies)


async def test_cancel_is_forwarded_upstream(app: Any, stand_in: OpenAIFineTuneStandIn) -> None:
    server, _ = app
    client = _sdk(server)
    stand_in.hold = True
    job, remote = await _running_upstream(client, stand_in, _lines("cancelled"))
    cancels = stand_in.cancels
    cancelled = await client.fine_tuning.jobs.cancel(job.id)
    assert cancelled.status == "cancelled" and cancelled.finished_at is not None
    assert remote.status == "cancelled" and stand_in.cancels == cancels + 1
    assert (await client.fine_tuning.jobs.cancel(job.id)).status == "cancelled"  # nothing sent twice
    assert stand_in.cancels == cancels + 1
    messages = [e.message for e in (await client.fine_tuning.jobs.list_events(job.id, limit=100)).data]
    assert f"Cancel sent to provider '{TRAINER}' (upstream job {remote.id})" in messages


async def test_an_unreachable_upstream_is_a_503_and_the_job_is_unchanged(
    app: Any, stand_in: OpenAIFineTuneStandIn
) -> None:
    server, _ = app
    client = _sdk(server)
    stand_in.hold = True
    job, remote = await _running_upstream(client, stand_in, _lines("unreachable"))
    busy = {"error": {"message": "The engine is currently overloaded.", "type": "server_error", "code": None}}
    stand_in.standin.fail(f"/v1/fine_tuning/jobs/{remote.id}/cancel", Failure(503, busy))
    with pytest.raises(openai.InternalServerError) as err:
        await client.fine_tuning.jobs.cancel(job.id)
    assert err.value.status_code == 503
    body = err.value.body
    assert isinstance(body, dict) and body["message"].startswith(f"Provider '{TRAINER}': ")
    assert "overloaded" in body["message"]
    assert (await client.fine_tuning.jobs.retrieve(job.id)).status == "running" and remote.status == "running"
    assert (await client.fine_tuning.jobs.cancel(job.id)).status == "cancelled"  # asked again, it goes through
    assert remote.status == "cancelled"


async def test_pause_and_resume_are_forwarded(app: Any, stand_in: OpenAIFineTuneStandIn) -> None:
    server, _ = app
    client = _sdk(server, strict=False)  # "paused" is OpenAI's status, not yet in the SDK's Literal
    stand_in.hold = True
    job, remote = await _running_upstream(client, stand_in, _lines("paused"))
    paused = await client.fine_tuning.jobs.pause(job.id)
    assert paused.status == "paused" and remote.status == "paused" and stand_in.pauses >= 1
    stand_in.hold = False  # a paused upstream job does not move; the job stays paused
    await asyncio.sleep(0.2)
    assert (await client.fine_tuning.jobs.retrieve(job.id)).status == "paused"
    resumed = await client.fine_tuning.jobs.resume(job.id)
    assert resumed.status == "running" and stand_in.resumes >= 1
    done = await _status(client, job.id, *ENDED)
    assert done.status == "succeeded" and done.fine_tuned_model == remote.fine_tuned_model


async def test_a_failed_upstream_job_fails_the_job_with_its_message(app: Any, stand_in: OpenAIFineTuneStandIn) -> None:
    server, state = app
    client = _sdk(server)
    stand_in.fail_next = True  # its message quotes the key: the job's must not
    job = await client.fine_tuning.jobs.create(model=BASE_MODEL, training_file=await _upload(client, _lines("fails")))
    done = await _status(client, job.id, *ENDED)
    assert done.status == "failed" and done.finished_at is not None and done.fine_tuned_model is None
    assert done.error is not None and done.error.code == "invalid_training_file"
    assert done.error.param == "training_file"
    assert done.error.message.startswith(f"Provider '{TRAINER}': Training file has too few examples")
    assert done.error.message.endswith("(key ***).")
    events = (await client.fine_tuning.jobs.list_events(job.id, limit=100)).data
    assert events[0].level == "error" and "too few examples" in events[0].message
    _assert_no_key(state, done.error.message, *[e.message for e in events])


async def test_an_upstream_answering_500_to_create_fails_the_job_naming_the_provider(
    app: Any, stand_in: OpenAIFineTuneStandIn
) -> None:
    server, _ = app
    client = _sdk(server)
    creates = stand_in.creates
    broken = {"error": {"message": "The server had an error while processing your request.", "type": "server_error"}}
    stand_in.standin.fail("/v1/fine_tuning/jobs", *[Failure(500, broken) for _ in range(5)])
    job = await client.fine_tuning.jobs.create(model=BASE_MODEL, training_file=await _upload(client, _lines("500")))
    done = await _status(client, job.id, *ENDED)
    assert done.status == "failed" and stand_in.creates == creates
    assert done.error is not None and done.error.code == "upstream_unavailable"
    assert done.error.message.startswith(f"Provider '{TRAINER}': ") and "500" in done.error.message


async def test_a_trainer_without_a_key_is_a_503_before_any_job_exists(app: Any) -> None:
    server, _ = app
    client = _sdk(server)
    before = len((await client.fine_tuning.jobs.list(limit=100)).data)
    with pytest.raises(openai.InternalServerError) as err:
        await client.fine_tuning.jobs.create(model="keyless-base", training_file=await _upload(client, _lines("k")))
    assert err.value.status_code == 503
    body = err.value.body
    assert isinstance(body, dict) and body["code"] == "missing_provider_api_key"
    assert "Provider 'keyless'" in body["message"] and "UNDERLAY_TEST_UNSET_KEY" in body["message"]
    assert len((await client.fine_tuning.jobs.list(limit=100)).data) == before


async def test_a_restarted_server_follows_the_same_upstream_job(
    stand_in: OpenAIFineTuneStandIn, tmp_path: Path
) -> None:
    data = _lines("restart", 2)
    stand_in.hold = True
    async with serve_in_process(_config(stand_in, tmp_path)) as first:
        client = _sdk(first)
        job, remote = await _running_upstream(client, stand_in, data)
        creates = stand_in.creates
    stand_in.hold = False  # the upstream trains on while no server follows it
    async with serve_in_process(_config(stand_in, tmp_path)) as second:
        client = _sdk(second)
        done = await _status(client, job.id, *ENDED)
        assert done.status == "succeeded" and done.fine_tuned_model == remote.fine_tuned_model
        assert stand_in.creates == creates, "the restarted server created the upstream job again"
        events = (await client.fine_tuning.jobs.list_events(job.id, limit=100)).data
        steps = [e.data["step"] for e in reversed(events) if e.type == "metrics"]  # type: ignore[index]
        assert steps == list(range(1, remote.total_steps + 1)), "events were lost or copied twice"
        assert f"openai/{done.fine_tuned_model}" in [m.id for m in (await client.models.list()).data]


async def test_a_create_whose_answer_was_lost_is_found_not_repeated(
    stand_in: OpenAIFineTuneStandIn, tmp_path: Path
) -> None:
    stand_in.slow_create = 1.5  # the upstream makes the job, then answers after the client gave up
    data = _lines("lost-answer", 1)
    async with serve_in_process(_config(stand_in, tmp_path, timeout={"read": 0.5, "connect": 0.5})) as server:
        client = _sdk(server)
        creates = stand_in.creates
        job = await client.fine_tuning.jobs.create(model=BASE_MODEL, training_file=await _upload(client, data))
        done = await _status(client, job.id, *ENDED)
        assert done.status == "succeeded", done.error
        assert stand_in.creates == creates + 1
        assert done.fine_tuned_model == stand_in.job_over(data).fine_tuned_model


async def test_a_trainer_naming_a_missing_inference_provider_is_a_one_line_config_error(
    stand_in: OpenAIFineTuneStandIn, tmp_path: Path
) -> None:
    config = _config(stand_in, tmp_path, inference_provider_id="nowhere")
    with pytest.raises(ConfigError) as caught:
        async with serve_in_process(config):
            pass
    message = str(caught.value)
    assert "\n" not in message and f"providers.fine_tuning ({TRAINER})" in message
    assert "inference_provider_id 'nowhere'" in message and "inference_provider_id: null" in message
