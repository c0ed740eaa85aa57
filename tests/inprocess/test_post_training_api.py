"""The extended post-training API in process: datasets in, fine-tuning jobs out, nothing trained.

Job workers are off (``workers: 0``), so a job stays queued: what these tests check is the part this API
adds over the fine-tuning API — reading a registered dataset as the caller, converting its rows (chat
messages, instruct pairs, preference pairs) and naming every bad row before a job exists, mapping the
hyperparameters and refusing unknown or out-of-range ones with their ``param`` — and that the job it
creates *is* a fine-tuning job (listed, resolved and cancellable through ``/v1/fine_tuning/jobs``, and
the other way round). The trainer is the real ``inline::huggingface`` provider (its memory check reads
the packaged SmolLM2 GGUF's header). The artifacts test feeds the fine-tuning router the reports a
trainer sends (a metrics step and a saved checkpoint directory) instead of training.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import zipfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.inprocess.harness import InProcessServer, echo_config, serve_in_process
from underlay.api.fine_tuning import TrainingReport
from underlay.core.identity import Principal, principal_var

pytest.importorskip("gguf", reason="the train extra (gguf) reads the base model's header")

KEYS = {"alice": "sk-alice-pt", "bob": "sk-bob-pt"}
BASE = "smollm2-135m-instruct"
PT = "/v1alpha/post-training"


def _config(state_dir: Path, apis: list[str]) -> dict[str, Any]:
    keys = [
        {"sha256": hashlib.sha256(key.encode()).hexdigest(), "principal": name, "attributes": {}}
        for name, key in KEYS.items()
    ]
    config = echo_config(state_dir, apis=apis)
    config["providers"]["files"] = [{"provider_id": "localfs", "provider_type": "inline::localfs", "config": {}}]
    config["providers"]["datasets"] = [{"provider_id": "localfs-datasets", "provider_type": "inline::localfs"}]
    config["providers"]["fine_tuning"] = [
        {"provider_id": "huggingface", "provider_type": "inline::huggingface", "config": {"memory_cap_mb": 4096}}
    ]
    config["server"]["auth"] = {"providers": [{"type": "api_keys", "keys": keys}]}
    config["server"]["max_request_bytes"] = 1_048_576
    config["jobs"] = {"workers": 0, "reserved_workers": {}}
    return config


@pytest.fixture(scope="module")
async def app(echo_plugin: Path, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[InProcessServer]:
    apis = ["inference", "models", "files", "datasets", "fine_tuning", "post_training"]
    async with serve_in_process(_config(tmp_path_factory.mktemp("inprocess-pt"), apis)) as server:
        yield server


def _auth(who: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {KEYS[who]}"}


def _sdk(app: InProcessServer, who: str = "alice") -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=app.v1, api_key=KEYS[who], max_retries=0, http_client=app.http)


async def _dataset(app: InProcessServer, rows: list[Any], purpose: str = "free-form", who: str = "alice") -> str:
    body = {"purpose": purpose, "source": {"type": "rows", "rows": rows}}
    response = await app.http.post("/v1beta/datasets", json=body, headers=_auth(who))
    assert response.status_code == 200, response.text
    return str(response.json()["identifier"])


def _chat(i: int) -> dict[str, Any]:
    return {
        "messages": [
            {"role": "user", "content": f"What is {i} plus {i}?"},
            {"role": "assistant", "content": f"{2 * i}."},
        ]
    }


def _pair(i: int) -> dict[str, Any]:
    return {"prompt": f"What is {i} plus {i}?", "chosen": f"{2 * i}.", "rejected": f"{2 * i + 1}."}


def _sft(dataset_id: str, **extra: Any) -> dict[str, Any]:
    training = extra.pop("training_config", {})
    data = {"dataset_id": dataset_id, **training.pop("data_config", {})}
    return {"model": BASE, "training_config": {"data_config": data, **training}, **extra}


async def _post(app: InProcessServer, route: str, body: dict[str, Any], who: str = "alice") -> httpx.Response:
    return await app.http.post(f"{PT}/{route}", json=body, headers=_auth(who))


async def _get(app: InProcessServer, route: str, who: str = "alice", **params: Any) -> httpx.Response:
    return await app.http.get(f"{PT}/{route}", params=params, headers=_auth(who))


def _error(response: httpx.Response, status: int = 400) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert isinstance(error, dict)
    return error


async def _counts(app: InProcessServer) -> tuple[int, int]:
    """Alice's fine-tuning jobs and fine-tune files: a refused request must leave both as they were."""
    alice = _sdk(app)
    jobs = await alice.fine_tuning.jobs.list(limit=100)
    files = await alice.files.list(purpose="fine-tune")
    return len(jobs.data), len(files.data)


async def test_every_bad_row_is_named_before_a_job_exists(app: InProcessServer) -> None:
    rows: list[Any] = [
        _chat(1),
        {"messages": [{"role": "user", "content": "no answer"}]},
        {"text": "neither messages nor an instruct pair"},
        _chat(2),
        {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "x", "weight": 5}]},
    ]
    dataset_id = await _dataset(app, rows)
    before = await _counts(app)
    error = _error(await _post(app, "supervised-fine-tune", _sft(dataset_id)))
    assert error["param"] == "training_config.data_config.dataset_id" and error["code"] == "invalid_dataset_rows"
    message = str(error["message"])
    assert "3 row(s) that are not supervised examples" in message
    assert "row 2: messages needs at least one assistant message" in message
    assert "row 3: a supervised row needs 'messages'" in message
    assert "row 5: messages[1].weight must be 0 or 1" in message
    assert "row 1:" not in message and "row 4:" not in message
    assert await _counts(app) == before

    instruct = await _dataset(app, [{"input_query": "1 + 1?", "expected_answer": "2"}])
    body = _sft(instruct, training_config={"data_config": {"data_format": "dialog"}})
    error = _error(await _post(app, "supervised-fine-tune", body))
    assert "row 1: a dialog row needs 'messages'" in error["message"]

    empty = await _dataset(app, [])
    error = _error(await _post(app, "supervised-fine-tune", _sft(empty)))
    assert "no rows to train on" in error["message"]


async def test_unknown_and_out_of_range_values_are_400s_with_param(app: InProcessServer) -> None:
    dataset_id = await _dataset(app, [_chat(i) for i in range(4)], purpose="post-training/messages")
    before = await _counts(app)
    cases: list[tuple[dict[str, Any], str]] = [
        (_sft(dataset_id, model="gpt-9"), "model"),
        (_sft(dataset_id, training_config={"n_epochs": 0}), "training_config.n_epochs"),
        (_sft(dataset_id, training_config={"n_epochs": 51}), "training_config.n_epochs"),
        (
            _sft(dataset_id, training_config={"data_config": {"batch_size": 1000}}),
            "training_config.data_config.batch_size",
        ),
        (
            _sft(dataset_id, training_config={"optimizer_config": {"learning_rate_multiplier": 1000}}),
            "training_config.optimizer_config.learning_rate_multiplier",
        ),
        (_sft(dataset_id, training_config={"max_steps_per_epoch": 10}), "training_config.max_steps_per_epoch"),
        (_sft(dataset_id, training_config={"optimizer_config": {"lr": 1e-4}}), "training_config.optimizer_config.lr"),
        (
            _sft(dataset_id, training_config={"data_config": {"data_format": "chat"}}),
            "training_config.data_config.data_format",
        ),
        (_sft(dataset_id, algorithm_config={"type": "QAT"}), "algorithm_config.type"),
        (_sft(dataset_id, algorithm_config={"type": "LoRA", "rank": 16}), "algorithm_config.rank"),
        (_sft(dataset_id, algorithm_config={"alpha": 32}), "algorithm_config.alpha"),
        (_sft(dataset_id, hyperparam_search_config={"trials": 3}), "hyperparam_search_config"),
        (_sft(dataset_id, job_uuid="ftjob-mine"), "job_uuid"),
        (_sft(dataset_id, metadata={"post_training.job_uuid": "x"}), "metadata"),
        (_sft(dataset_id, surprise=True), "surprise"),
    ]
    for body, param in cases:
        error = _error(await _post(app, "supervised-fine-tune", body))
        assert error["param"] == param, (body, error)
    error = _error(await _post(app, "supervised-fine-tune", _sft(dataset_id, algorithm_config={"rank": 4})))
    assert error["code"] == "unsupported_parameter" and "lora_rank" in error["message"]

    # Neither the model nor the dataset's existence is taken on trust; both name their field.
    error = _error(await _post(app, "supervised-fine-tune", _sft("no-such-dataset")), 404)
    assert error["param"] == "training_config.data_config.dataset_id"
    bobs = await _dataset(app, [_chat(1)], who="bob")
    error = _error(await _post(app, "supervised-fine-tune", _sft(bobs)), 404)
    assert error["param"] == "training_config.data_config.dataset_id"
    error = _error(await _post(app, "supervised-fine-tune", _sft(dataset_id, model="gpt-9")))
    assert error["code"] == "model_not_available" and BASE in error["message"]

    # The fine-tuning router's own refusals come back in this request's words.
    huge_batch = _sft(dataset_id, training_config={"data_config": {"batch_size": 256}})
    error = _error(await _post(app, "supervised-fine-tune", huge_batch))  # over the 4096 MB cap
    assert error["code"] == "exceeds_memory_cap" and error["param"] == "training_config.data_config.batch_size"
    assert await _counts(app) == before  # nothing stored, and the converted file was taken back


async def test_a_supervised_job_is_a_fine_tuning_job(app: InProcessServer) -> None:
    alice = _sdk(app)
    instruct = [{"input_query": f"What is {i} + {i}?", "expected_answer": str(2 * i)} for i in range(3)]
    train_id = await _dataset(app, instruct, purpose="eval/question-answer")
    valid_id = await _dataset(app, [_chat(9)], purpose="post-training/messages")
    body = _sft(
        train_id,
        job_uuid="adder-run-1",
        suffix="adder",
        seed=5,
        metadata={"team": "math"},
        training_config={
            "n_epochs": 2,
            "data_config": {"validation_dataset_id": valid_id, "batch_size": 2},  # each read by its shape
            "optimizer_config": {"learning_rate_multiplier": 0.5},
        },
        algorithm_config={"type": "LoRA"},
        hyperparam_search_config={},
        logger_config={},
    )
    response = await _post(app, "supervised-fine-tune", body)
    assert response.status_code == 200, response.text
    created = response.json()
    assert created["job_uuid"] == "adder-run-1" and created["status"] == "scheduled"
    assert created["algorithm"] == "supervised" and created["dataset_id"] == train_id
    job_id = created["fine_tuning_job_id"]
    assert job_id.startswith("ftjob-")

    # The same job through the OpenAI fine-tuning API, its file holding the converted rows.
    job = await alice.fine_tuning.jobs.retrieve(job_id)
    assert job.status == "queued" and job.seed == 5 and job.user_provided_suffix == "adder"
    assert job.method is not None and job.method.supervised is not None
    hyper = job.method.supervised.hyperparameters
    assert hyper is not None and (hyper.n_epochs, hyper.batch_size, hyper.learning_rate_multiplier) == (2, 2, 0.5)
    assert job.metadata is not None and job.metadata["team"] == "math"
    lines = [json.loads(x) for x in (await alice.files.content(job.training_file)).content.splitlines()]
    assert lines[1] == {
        "messages": [{"role": "user", "content": "What is 1 + 1?"}, {"role": "assistant", "content": "2"}]
    }
    assert job.validation_file is not None
    assert json.loads((await alice.files.content(job.validation_file)).content) == _chat(9)

    # Status, by the client's job_uuid and by the job's own id.
    for key in ("adder-run-1", job_id):
        status = (await _get(app, "job/status", job_uuid=key)).json()
        assert status["job_uuid"] == "adder-run-1" and status["fine_tuning_job_id"] == job_id
        assert status["hyperparameters"] == {
            "n_epochs": 2,
            "batch_size": 2,
            "learning_rate_multiplier": 0.5,
            "beta": None,
        }
        assert status["status"] == "scheduled" and status["progress"] is None and status["checkpoints"] == []
    listed = (await _get(app, "jobs", limit=100)).json()
    assert "adder-run-1" in [j["job_uuid"] for j in listed["data"]]
    error = _error(await _post(app, "supervised-fine-tune", body), 409)
    assert error["param"] == "job_uuid" and job_id in error["message"]

    # Another tenant sees none of it.
    assert _error(await _get(app, "job/status", who="bob", job_uuid="adder-run-1"), 404)["param"] == "job_uuid"
    assert _error(await _get(app, "job/artifacts", who="bob", job_uuid=job_id), 404)["param"] == "job_uuid"
    assert _error(await _post(app, "job/cancel", {"job_uuid": job_id}, who="bob"), 404)["param"] == "job_uuid"
    assert "adder-run-1" not in [j["job_uuid"] for j in (await _get(app, "jobs", who="bob", limit=100)).json()["data"]]

    # Cancel here, seen there; cancelling a cancelled job again is not an error.
    cancelled = (await _post(app, "job/cancel", {"job_uuid": "adder-run-1"})).json()
    assert cancelled["status"] == "cancelled" and cancelled["completed_at"] is not None
    assert (await alice.fine_tuning.jobs.retrieve(job_id)).status == "cancelled"
    assert (await _post(app, "job/cancel", {"job_uuid": job_id})).json()["status"] == "cancelled"
    assert _error(await _get(app, "job/status", job_uuid="no-such-run"), 404)["param"] == "job_uuid"


async def test_a_fine_tuning_job_shows_here_with_its_artifacts(app: InProcessServer, tmp_path: Path) -> None:
    alice = _sdk(app)
    raw = b"".join(json.dumps(_chat(i)).encode() + b"\n" for i in range(2))
    file_id = (await alice.files.create(file=("train.jsonl", raw), purpose="fine-tune")).id
    job = await alice.fine_tuning.jobs.create(model=BASE, training_file=file_id, suffix="direct")
    status = (await _get(app, "job/status", job_uuid=job.id)).json()
    assert status["job_uuid"] == job.id and status["dataset_id"] is None and status["algorithm"] == "supervised"

    # What a trainer reports while it runs (one step's metrics, a saved adapter directory), fed to the
    # fine-tuning router as the job's owner, as the job runner does.
    adapter = tmp_path / "checkpoint-3"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text('{"r": 8}')
    (adapter / "adapter_model.safetensors").write_bytes(b"\0" * 64)
    fine_tuning = app.app.state.stack.fine_tuning_router
    token = principal_var.set(Principal(id="alice", attributes={}))
    try:
        await fine_tuning._on_report(
            job.id, TrainingReport(kind="metrics", step=3, total_steps=6, metrics={"train_loss": 1.25})
        )
        await fine_tuning._on_report(
            job.id,
            TrainingReport(kind="checkpoint", step=3, checkpoint_dir=str(adapter), metrics={"train_loss": 1.25}),
        )
    finally:
        principal_var.reset(token)

    status = (await _get(app, "job/status", job_uuid=job.id)).json()
    assert status["progress"] == {"step": 3, "total_steps": 6, "train_loss": 1.25}
    artifacts = (await _get(app, "job/artifacts", job_uuid=job.id)).json()
    assert artifacts["fine_tuned_model"] is None and artifacts["status"] == "scheduled"
    (checkpoint,) = artifacts["checkpoints"]
    assert status["checkpoints"] == [checkpoint]
    assert checkpoint["step"] == 3 and checkpoint["training_metrics"]["train_loss"] == 1.25
    assert checkpoint["identifier"].startswith(f"ft:{BASE}:direct:") and checkpoint["identifier"].endswith(
        "ckpt-step-3"
    )
    assert checkpoint["path"] == f"/v1/files/{checkpoint['file_id']}/content"
    content = await app.http.get(checkpoint["path"], headers=_auth("alice"))
    with zipfile.ZipFile(io.BytesIO(content.content)) as archive:
        assert sorted(archive.namelist()) == ["adapter_config.json", "adapter_model.safetensors"]
    assert (await alice.fine_tuning.jobs.checkpoints.list(job.id)).data[0].file_id == checkpoint["file_id"]


async def test_preference_optimize_reads_preference_pairs(app: InProcessServer) -> None:
    trainer = app.app.state.stack.providers["fine_tuning"]["huggingface"]
    dataset_id = await _dataset(app, [_pair(i) for i in range(3)])
    body: dict[str, Any] = {
        "finetuned_model": BASE,
        "training_config": {"n_epochs": 1, "data_config": {"dataset_id": dataset_id}},
        "algorithm_config": {"type": "DPO", "beta": 0.3},
    }
    for beta in (0, 2.5):
        bad = {**body, "algorithm_config": {"beta": beta}}
        assert _error(await _post(app, "preference-optimize", bad))["param"] == "algorithm_config.beta"
    bad = {**body, "training_config": {"data_config": {"dataset_id": dataset_id, "data_format": "dialog"}}}
    assert _error(await _post(app, "preference-optimize", bad))["param"] == "training_config.data_config.data_format"

    if "dpo" not in trainer.methods():
        error = _error(await _post(app, "preference-optimize", body))
        assert error["code"] == "unsupported_method" and error["param"] == "algorithm_config.type"
        return

    rows: list[Any] = [_pair(1), {"prompt": "2 + 2?", "chosen": "4", "rejected": "4"}, {"prompt": "only a prompt"}]
    bad_id = await _dataset(app, rows)
    bad = {**body, "training_config": {"data_config": {"dataset_id": bad_id}}}
    error = _error(await _post(app, "preference-optimize", bad))
    assert error["code"] == "invalid_dataset_rows" and "2 row(s) that are not preference pairs" in error["message"]
    assert "row 2: preferred_output and non_preferred_output are the same" in error["message"]
    assert "row 3: a preference row needs 'prompt', 'chosen' and 'rejected'" in error["message"]

    response = await _post(app, "preference-optimize", body)
    assert response.status_code == 200, response.text
    created = response.json()
    assert created["algorithm"] == "dpo" and created["model"] == BASE
    status = (await _get(app, "job/status", job_uuid=created["job_uuid"])).json()
    assert status["hyperparameters"]["beta"] == 0.3 and status["hyperparameters"]["n_epochs"] == 1
    job = await _sdk(app).fine_tuning.jobs.retrieve(created["fine_tuning_job_id"])
    assert job.method is not None and job.method.type == "dpo"
    line = json.loads((await _sdk(app).files.content(job.training_file)).content.splitlines()[0])
    assert line == {
        "input": {"messages": [{"role": "user", "content": "What is 0 plus 0?"}]},
        "preferred_output": [{"role": "assistant", "content": "0."}],
        "non_preferred_output": [{"role": "assistant", "content": "1."}],
    }


async def test_without_the_datasets_api_the_error_says_so(echo_plugin: Path, tmp_path: Path) -> None:
    apis = ["inference", "models", "files", "fine_tuning", "post_training"]
    config = _config(tmp_path, apis)
    del config["providers"]["datasets"]
    async with serve_in_process(config) as server:
        error = _error(await _post(server, "supervised-fine-tune", _sft("anything")))
        assert error["param"] == "training_config.data_config.dataset_id"
        assert "does not run the datasets API" in error["message"]
        assert (await _get(server, "jobs")).json() == {"object": "list", "data": [], "has_more": False}


async def test_simultaneous_creates_with_one_job_uuid_make_one_job(app: InProcessServer) -> None:
    """The uniqueness check and the create take turns per caller and id: one job, the rest are 409s."""
    train_id = await _dataset(app, [_chat(i) for i in range(2)], purpose="post-training/messages")
    body = _sft(train_id, job_uuid="same-name")
    answers = await asyncio.gather(*(_post(app, "supervised-fine-tune", body) for _ in range(4)))
    assert sorted(a.status_code for a in answers) == [200, 409, 409, 409], [a.text for a in answers]
    listed = (await _get(app, "jobs", limit=100)).json()["data"]
    assert [j["job_uuid"] for j in listed].count("same-name") == 1
    # Another tenant may use the same name: ids are per caller.
    bob_train = await _dataset(app, [_chat(1)], purpose="post-training/messages", who="bob")
    assert (
        await _post(app, "supervised-fine-tune", _sft(bob_train, job_uuid="same-name"), who="bob")
    ).status_code == 200
