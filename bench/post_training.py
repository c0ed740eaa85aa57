"""Fine-tuning figures: training tokens/s and steps/s, peak memory, create → servable time, held-out score.

What it measures: a real server (``underlay run``) with the embedded llama.cpp provider and the
``inline::huggingface`` trainer. It uploads N generated examples that teach one checkable behaviour
(every answer starts with ``ZORBLAX:``; ``tests/integration/fine_tuning_data.py``), creates a LoRA SFT
job (one epoch by default, as the issue's target), follows it to ``succeeded`` and reports:

- training tokens/s and steps/s (from the job's per-step metrics events: mean over the steps),
- the training process's peak RSS (the trainer's ``train.log`` line) and the server's RSS,
- seconds from ``create`` to the tuned model answering a chat completion (load, train, export, serve),
- the held-out score: the share of unseen questions answered with the mark, base vs tuned.

Run from the repository root: ``python bench/post_training.py [--examples 500] [--epochs 1]
[--model smollm2-135m-instruct]``. Prints its figures and exits 0 (nothing is promised yet; the issue's
target is 500 examples, one epoch, under 10 minutes on 2 quiet cores).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import openai
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import free_port, rss_mb, start_underlay, wait_http  # noqa: E402
from tests.integration.fine_tuning_data import HELD_OUT, marked, trainer_stack, training_examples  # noqa: E402


def _config(state: Path, model: str) -> dict[str, Any]:
    return {"state_dir": str(state), **trainer_stack(model, max_seq_len=256, trainer_models=True)}


def _score(client: openai.OpenAI, model: str) -> float:
    hits = 0
    for question in HELD_OUT:
        reply = client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": question}], temperature=0, max_tokens=24
        )
        hits += marked(reply.choices[0].message.content or "")
    return hits / len(HELD_OUT)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=500)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--lr-multiplier", type=float, default=5.0)
    parser.add_argument("--model", default="smollm2-135m-instruct")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-ft-") as tmp:
        root = Path(tmp)
        config_path = root / "run.yaml"
        config_path.write_text(yaml.safe_dump(_config(root / "state", args.model)))
        port = free_port()
        server = start_underlay(config_path, port, root / "server.log")
        try:
            wait_http(f"http://127.0.0.1:{port}/v1/health", server, timeout=600)
            client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", timeout=600)
            data = "".join(json.dumps(e) + "\n" for e in training_examples(args.examples)).encode()
            training = client.files.create(file=("bench.jsonl", data), purpose="fine-tune")
            base_score = _score(client, args.model)
            started = time.monotonic()
            job = client.fine_tuning.jobs.create(
                model=args.model,
                training_file=training.id,
                seed=1,
                method={
                    "type": "supervised",
                    "supervised": {
                        "hyperparameters": {
                            "n_epochs": args.epochs,
                            "batch_size": args.batch_size,
                            "learning_rate_multiplier": args.lr_multiplier,
                        }
                    },
                },
            )
            server_rss = 0.0
            while job.status not in ("succeeded", "failed", "cancelled"):
                time.sleep(2)
                server_rss = max(server_rss, rss_mb(server.pid))
                job = client.fine_tuning.jobs.retrieve(job.id)
            if job.status != "succeeded" or not job.fine_tuned_model:
                print(f"job {job.status}: {job.error}")
                return 0
            client.chat.completions.create(
                model=job.fine_tuned_model, messages=[{"role": "user", "content": "hi"}], max_tokens=1
            )
            servable = time.monotonic() - started
            tuned_score = _score(client, job.fine_tuned_model)
            events = client.fine_tuning.jobs.list_events(job.id, limit=1000).data
            steps = [e.data for e in events if e.type == "metrics" and isinstance(e.data, dict)]
            tps = statistics.mean(float(s["tokens_per_second"]) for s in steps)
            step_s = statistics.mean(float(s["step_seconds"]) for s in steps)
            done = next((e.data for e in events if e.message == "The job has successfully completed"), None)
            peak = f"{done['peak_rss_mb']:.0f} MB" if isinstance(done, dict) and "peak_rss_mb" in done else "n/a"
            print(f"model {args.model}: {args.examples} examples, {args.epochs} epoch(s), batch {args.batch_size}")
            print(f"steps {len(steps)}  trained tokens {job.trained_tokens}")
            print(f"training: {tps:.0f} tokens/s, {1 / step_s:.3f} steps/s ({step_s:.2f} s/step)")
            print(f"create -> servable: {servable:.0f} s")
            print(f"server peak RSS while training: {server_rss:.0f} MB; trainer process peak RSS: {peak}")
            print(f"held-out marked answers: base {base_score:.0%}, tuned {tuned_score:.0%}")
        finally:
            server.terminate()
            server.wait(30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
