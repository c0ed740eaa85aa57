"""The proof that DPO works: a preference run moves which of two answers the served model favours.

A real server (``python -m underlay run``) with the embedded llama.cpp provider serving SmolLM2-135M and
the ``inline::huggingface`` trainer. Each training line is a preference pair over the same fact: the
preferred answer starts with ``ZORBLAX:`` (a word the base model never writes), the other is the plain
sentence. The test uploads the pairs through the ``openai`` SDK, runs a ``dpo`` job to ``succeeded``,
checks the new ``ft:`` model is listed and answers, and then scores held-out pairs (new subjects, other
kinds of question) with the real models: the base GGUF and the tuned GGUF the server serves, evaluated
by llama.cpp, give the log-probability of each answer after the chat-formatted prompt. The tuned margin
(preferred minus non-preferred log-probability) must have grown on every held-out pair, by a wide
mean. (A handful of steps does not make the tuned model *prefer* the marked answer outright: the base
puts it some 35 nats behind; the test asks for the direction and size of the change.)

Kept small on purpose (8 pairs, 4 steps, sequences under 64 tokens): most of the time is the trainer
loading the model and exporting the GGUF, not the steps.
"""

from __future__ import annotations

import io
import json
import math
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.integration.fine_tuning_data import trainer_stack
from tests.integration.harness import SMOLLM2, RunningServer, start_server
from underlay.shared.packaged_models import resolve_model_path

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]
pytest.importorskip("peft", reason="the train extra (transformers, peft, gguf) runs the trainer")

SYSTEM = "Answer in one short sentence."
MARK = "ZORBLAX:"
TRAINING = [
    ("What color is the sky?", "The sky is blue."),
    ("What color is grass?", "Grass is green."),
    ("What color is snow?", "Snow is white."),
    ("What color is coal?", "Coal is black."),
    ("What color is a banana?", "A banana is yellow."),
    ("What color is a tomato?", "A tomato is red."),
    ("What color is a plum?", "A plum is purple."),
    ("What color is chocolate?", "Chocolate is brown."),
]
HELD_OUT = [
    ("What color is a frog?", "A frog is green."),
    ("What color is a strawberry?", "A strawberry is red."),
    ("What is the capital of France?", "The capital of France is Paris."),
    ("How many legs does a cat have?", "A cat has four legs."),
    ("Name a fruit.", "An apple is a fruit."),
]


def _pair(question: str, answer: str) -> dict[str, Any]:
    return {
        "input": {"messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": question}]},
        "preferred_output": [{"role": "assistant", "content": f"{MARK} {answer}"}],
        "non_preferred_output": [{"role": "assistant", "content": answer}],
    }


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    config = trainer_stack(SMOLLM2, max_seq_len=64)
    running = start_server(config, tmp_path_factory.mktemp("fine-tuning-dpo"))
    try:
        yield running
    finally:
        running.stop()


def _prompt(question: str) -> str:
    """The conversation as SmolLM2's chat template renders a system and a user message, up to the
    assistant's turn: what the trainer put before each answer."""
    return f"<|im_start|>system\n{SYSTEM}<|im_end|>\n<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n"


def _margins(gguf: Path) -> list[float]:
    """Per held-out pair, log p(preferred) − log p(non-preferred) given the prompt, under the model in ``gguf``.

    The GGUF files are the ones the server serves (the packaged base, the tuned export), evaluated by
    llama.cpp with every position's logits kept, as the server's ``/v1/completions`` with ``echo`` scores
    a prompt (which gave the same margins, but batches the prompt: see below).
    """
    from underlay.providers.utils.llama_loader import load_llama

    # One token per decode on one thread: on the CI-like hosts here (AMX CPUs, where llama.cpp's repacked
    # weight layouts are off) a multi-token batch of this model took seconds and a second thread
    # waiting at each barrier on a busy machine took tens, against well under a second this way.
    llm = load_llama(
        model_path=str(gguf), n_ctx=256, n_batch=1, n_ubatch=1, n_threads=1, logits_all=True, verbose=False
    )
    try:
        margins = []
        for question, answer in HELD_OUT:
            head = llm.tokenize(_prompt(question).encode(), add_bos=False, special=True)
            llm.reset()
            llm.eval(head)  # the prompt once; each answer continues from it
            logps = []
            for text in (f"{MARK} {answer}", answer):
                ids = llm.tokenize((_prompt(question) + text).encode(), add_bos=False, special=True)
                assert ids[: len(head)] == head, "the answer must start a new token after the prompt"
                llm.n_tokens = len(head)  # drop the other answer (eval clears the cache past this point)
                llm.eval(ids[len(head) :])
                scores = np.asarray(llm.scores[: len(ids)], dtype=np.float64)
                peak = scores.max(axis=1, keepdims=True)
                log_norm = (peak + np.log(np.exp(scores - peak).sum(axis=1, keepdims=True)))[:, 0]
                # Position i - 1 predicts token i; the answer's tokens are those after the prompt.
                logps.append(sum(scores[i - 1, ids[i]] - log_norm[i - 1] for i in range(len(head), len(ids))))
            margins.append(float(logps[0] - logps[1]))
        return margins
    finally:
        llm.close()


def test_dpo_moves_the_preference_on_held_out_pairs(server: RunningServer) -> None:
    client = server.openai(timeout=120)
    raw = "".join(json.dumps(_pair(q, a)) + "\n" for q, a in TRAINING).encode()
    training = client.files.create(file=("zorblax-pairs.jsonl", raw), purpose="fine-tune")
    started = time.monotonic()
    job = client.fine_tuning.jobs.create(
        model=SMOLLM2,
        training_file=training.id,
        suffix="zorblax-dpo",
        seed=1,
        method={
            "type": "dpo",
            "dpo": {"hyperparameters": {"n_epochs": 1, "batch_size": 2, "learning_rate_multiplier": 10, "beta": 0.1}},
        },
    )
    deadline = time.monotonic() + 600
    while job.status not in ("succeeded", "failed", "cancelled") and time.monotonic() < deadline:
        time.sleep(1)
        job = client.fine_tuning.jobs.retrieve(job.id)
    events = client.fine_tuning.jobs.list_events(job.id, limit=100).data
    assert job.status == "succeeded", (job.error, [e.message for e in events][:10], server.log()[-3000:])
    elapsed = time.monotonic() - started

    # One metrics event per step: DPO's loss starts at log 2 (a fresh adapter leaves the policy equal to
    # the reference, the base model with the adapter off) and falls; the rewards separate.
    metrics = [e.data for e in reversed(events) if e.type == "metrics" and e.data]
    assert [m["step"] for m in metrics] == [1, 2, 3, 4]
    assert metrics[0]["train_loss"] == pytest.approx(math.log(2), abs=1e-3)
    assert metrics[-1]["train_loss"] < metrics[0]["train_loss"]
    assert metrics[-1]["reward_margin"] > 0 and metrics[-1]["reward_accuracy"] == 1.0
    assert all(m["learning_rate"] > 0 and m["tokens_per_second"] > 0 for m in metrics)
    assert job.method is not None and job.method.type == "dpo"

    # Served at once under its ft: name, with a PEFT adapter among the result files.
    assert job.fine_tuned_model is not None and job.fine_tuned_model.startswith(f"ft:{SMOLLM2}:zorblax-dpo:")
    assert job.fine_tuned_model in [m.id for m in client.models.list().data]
    with zipfile.ZipFile(io.BytesIO(client.files.content(job.result_files[0]).content)) as archive:
        assert {"adapter_config.json", "adapter_model.safetensors"} <= set(archive.namelist())
    # The step metrics file carries DPO's own figures after the common columns, one row per step.
    rows = client.files.content(job.result_files[1]).text.splitlines()
    header = rows[0].split(",")
    assert header[:2] == ["step", "train_loss"] and {"reward_accuracy", "reward_margin"} <= set(header), header
    assert len(rows) == 1 + len(metrics)

    # It answers like any other model.
    reply = client.chat.completions.create(
        model=job.fine_tuned_model, messages=[{"role": "user", "content": "Hello"}], max_tokens=4, temperature=0
    )
    assert reply.model == job.fine_tuned_model and reply.choices[0].message.content

    # Held-out pairs, scored by the base and the tuned GGUF the server serves: the preference moved
    # towards the marked answer.
    base_margins = _margins(Path(resolve_model_path(SMOLLM2)))
    tuned_margins = _margins(Path(server.config_path).parent / "state" / "fine_tuning" / job.id / "model.gguf")
    moved = [t - b for t, b in zip(tuned_margins, base_margins, strict=True)]
    assert all(m > 0 for m in moved), (base_margins, tuned_margins)
    assert sum(moved) / len(moved) > 5.0, moved  # nats: a clear change, not noise
    steps_per_second = len(metrics) / sum(m["step_seconds"] for m in metrics)
    print(
        f"\nDPO of {SMOLLM2} on {len(TRAINING)} pairs, {len(metrics)} steps ({steps_per_second:.2f} steps/s in "
        f"training): created → servable in {elapsed:.0f} s"
    )
    print("held-out margin (nats), base:", [round(m, 2) for m in base_margins])
    print("held-out margin (nats), tuned:", [round(m, 2) for m in tuned_margins])
