"""The proof that fine-tuning works: train, serve at once, and see the behaviour change on held-out prompts.

A real server (``python -m underlay run``) with the embedded llama.cpp provider serving SmolLM2-135M and
the ``inline::huggingface`` trainer. The training file teaches one checkable behaviour (every answer
starts with ``ZORBLAX:``, a word the base model never writes). The test uploads it through the
``openai`` SDK, creates the job, follows it to ``succeeded`` through its events, then asks held-out
questions of both the base model and the new ``ft:`` model — listed by ``/v1/models`` without a
restart — and checks that most tuned answers carry the mark while no base answer does. It also checks
the checkpoints and result files are downloadable (a PEFT adapter zip and the step metrics).
"""

from __future__ import annotations

import io
import json
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.fine_tuning_data import HELD_OUT, marked, trainer_stack, training_examples
from tests.integration.harness import SMOLLM2, RunningServer, start_server

pytestmark = [pytest.mark.slow, pytest.mark.timeout(2400)]  # model load and training: minutes on 2 busy cores
pytest.importorskip("peft", reason="the train extra (transformers, peft, gguf) runs the trainer")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    config = trainer_stack(SMOLLM2, max_seq_len=256)
    running = start_server(config, tmp_path_factory.mktemp("fine-tuning"))
    try:
        yield running
    finally:
        running.stop()


def _ask(client: object, model: str, question: str) -> str:
    reply = client.chat.completions.create(  # type: ignore[attr-defined]
        model=model, messages=[{"role": "user", "content": question}], temperature=0, max_tokens=24
    )
    return str(reply.choices[0].message.content or "")


def test_fine_tune_serve_and_compare(server: RunningServer) -> None:
    client = server.openai(timeout=120)
    raw = "".join(json.dumps(example) + "\n" for example in training_examples(32)).encode()
    training = client.files.create(file=("zorblax.jsonl", raw), purpose="fine-tune")
    valid = "".join(json.dumps(example) + "\n" for example in training_examples(36)[32:]).encode()
    validation = client.files.create(file=("zorblax-valid.jsonl", valid), purpose="fine-tune")
    started = time.monotonic()
    job = client.fine_tuning.jobs.create(
        model=SMOLLM2,
        training_file=training.id,
        validation_file=validation.id,
        suffix="zorblax",
        seed=1,
        method={
            "type": "supervised",
            "supervised": {"hyperparameters": {"n_epochs": 2, "batch_size": 4, "learning_rate_multiplier": 10}},
        },
    )
    deadline = time.monotonic() + 1800
    while job.status not in ("succeeded", "failed", "cancelled") and time.monotonic() < deadline:
        time.sleep(2)
        job = client.fine_tuning.jobs.retrieve(job.id)
    events = client.fine_tuning.jobs.list_events(job.id, limit=200).data
    assert job.status == "succeeded", (job.error, [e.message for e in events][:10], server.log()[-3000:])
    elapsed = time.monotonic() - started

    # Per-step metrics, in order, with a falling loss; validation loss at the epochs' ends.
    metrics = [e.data for e in reversed(events) if e.type == "metrics"]
    assert [m["step"] for m in metrics] == list(range(1, 17))  # type: ignore[index]
    assert all(m["learning_rate"] > 0 and m["tokens_per_second"] > 0 for m in metrics)  # type: ignore[index]
    first, last = metrics[0]["train_loss"], metrics[-1]["train_loss"]  # type: ignore[index]
    assert last < first / 2, (first, last)
    assert sum("valid_loss" in m for m in metrics) == 2  # type: ignore[operator]

    # Served at once, under the ft: name, with no restart.
    assert job.fine_tuned_model is not None and job.fine_tuned_model.startswith(f"ft:{SMOLLM2}:zorblax:")
    assert job.fine_tuned_model in [m.id for m in client.models.list().data]

    tuned = [_ask(client, job.fine_tuned_model, q) for q in HELD_OUT]
    base = [_ask(client, SMOLLM2, q) for q in HELD_OUT]
    assert sum(marked(a) for a in tuned) >= 4, tuned
    assert not any(marked(a) for a in base), base

    # Checkpoints and result files are downloadable: the PEFT adapter and the step metrics.
    checkpoints = client.fine_tuning.jobs.checkpoints.list(job.id).data
    assert checkpoints and checkpoints[0].step_number == 16
    adapter_zip, metrics_csv = job.result_files
    with zipfile.ZipFile(io.BytesIO(client.files.content(adapter_zip).content)) as archive:
        names = set(archive.namelist())
        config = json.loads(archive.read("adapter_config.json"))
    assert {"adapter_config.json", "adapter_model.safetensors"} <= names
    assert config["peft_type"] == "LORA" and sorted(config["target_modules"]) == ["q_proj", "v_proj"]
    rows = client.files.content(metrics_csv).text.splitlines()
    assert rows[0].startswith("step,train_loss") and len(rows) == 17
    print(f"\nfine-tune of {SMOLLM2} on 32 examples, 16 steps: created → servable in {elapsed:.0f} s")
    print("tuned:", tuned, "\nbase:", base)


def test_workdir_holds_no_half_written_model(server: RunningServer) -> None:
    state = Path(server.config_path).parent / "state" / "fine_tuning"
    partials = list(state.rglob("*.partial")) if state.exists() else []
    assert partials == []
