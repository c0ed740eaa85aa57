"""A training run whose server is killed with SIGKILL resumes from its last checkpoint on the next server.

A real server trains SmolLM2-135M with the ``inline::huggingface`` trainer, saving a checkpoint every
``EVERY`` steps, on a file-backed SQLite state directory with a short job lease. Once a checkpoint is
listed, the server is killed with SIGKILL (its trainer process, whose output pipe is gone, ends at its
next report). A new server on the same state and port claims the job when the lease runs out and
continues it. Then: the job succeeds and its tuned model is listed; the second attempt says it started
from the checkpoint, and its first step is the one after that checkpoint (the steps before it are not
trained again); every step of the plan has a metrics event, and the result CSV has one row per step
event.
"""

from __future__ import annotations

import json
import re
import signal
import time
from pathlib import Path

import pytest

from tests.integration.fine_tuning_data import trainer_stack, training_examples
from tests.integration.harness import SMOLLM2, start_server
from tests.integration.resume import wait_for

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]  # two model loads and a short run on 2 cores
pytest.importorskip("peft", reason="the train extra (transformers, peft, gguf) runs the trainer")

EXAMPLES, BATCH, EVERY = 16, 2, 2  # 8 steps, a checkpoint every 2
STEPS = EXAMPLES // BATCH


def _config() -> dict[str, object]:
    config = trainer_stack(SMOLLM2, max_seq_len=128)
    trainer = config["providers"]["fine_tuning"][0]["config"]  # type: ignore[index]
    trainer["checkpoint_every"] = EVERY
    config["jobs"] = {"lease_seconds": 3}  # the next server claims the orphaned run soon after the kill
    return config


def test_a_killed_training_run_resumes_from_its_checkpoint(tmp_path: Path) -> None:
    config = _config()
    first = start_server(config, tmp_path)
    try:
        client = first.openai(timeout=120)
        raw = "".join(json.dumps(example) + "\n" for example in training_examples(EXAMPLES)).encode()
        training = client.files.create(file=("zorblax.jsonl", raw), purpose="fine-tune")
        job = client.fine_tuning.jobs.create(
            model=SMOLLM2,
            training_file=training.id,
            suffix="resumed",
            seed=3,
            method={"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 1, "batch_size": BATCH}}},
        )
        checkpoint = wait_for(
            lambda: client.fine_tuning.jobs.checkpoints.list(job.id).data,
            timeout=900,
            what="the first checkpoint",
            interval=0.5,
        )[0]
        assert client.fine_tuning.jobs.retrieve(job.id).status == "running"
    finally:
        first.stop(signal.SIGKILL)
    assert first.process.returncode == -signal.SIGKILL
    saved_at = checkpoint.step_number
    assert saved_at % EVERY == 0 and saved_at < STEPS, f"checkpoint at {saved_at}: the kill came too late to test"

    second = start_server(config, tmp_path, port=first.port)
    try:
        client = second.openai(timeout=120)
        deadline = time.monotonic() + 900
        while (job := client.fine_tuning.jobs.retrieve(job.id)).status not in ("succeeded", "failed", "cancelled"):
            assert time.monotonic() < deadline, f"the resumed run did not finish: {job.status}"
            time.sleep(1)
        events = list(reversed(client.fine_tuning.jobs.list_events(job.id, limit=500).data))  # oldest first
        assert job.status == "succeeded", (job.error, [e.message for e in events], second.log()[-3000:])
        assert job.fine_tuned_model in [m.id for m in client.models.list().data]

        # The second attempt began at the checkpoint it found, the newest one the first attempt left.
        starts = [e for e in events if e.message.startswith("Fine-tuning job started")]
        assert len(starts) == 2 and "attempt 1" in starts[0].message, [e.message for e in starts]
        resumed = re.search(r"from checkpoint step (\d+) \(attempt 2\)", starts[1].message)
        assert resumed is not None, starts[1].message
        resumed_at = int(resumed.group(1))
        assert resumed_at >= saved_at and resumed_at % EVERY == 0

        # Steps after the resume start right after the checkpoint; every step of the plan was reported.
        later = events[events.index(starts[1]) :]
        steps_after = [e.data["step"] for e in later if e.type == "metrics" and e.data]
        assert steps_after == list(range(resumed_at + 1, STEPS + 1)), steps_after
        every_step = {e.data["step"] for e in events if e.type == "metrics" and e.data}
        assert every_step == set(range(1, STEPS + 1))
        rows = client.files.content(job.result_files[-1]).text.splitlines()
        assert len(rows) == 1 + sum(e.type == "metrics" for e in events)
    finally:
        second.stop()
