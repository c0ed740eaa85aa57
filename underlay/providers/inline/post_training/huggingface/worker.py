"""The training process: ``python -m underlay.providers.inline.post_training.huggingface.worker SPEC.json``.

Why a separate process: a training step holds both cores for seconds and allocates gigabytes. In the
server's process it would stall every request (the GIL, the allocator) and a crash or an out-of-memory
kill would take the server down with it. Here the server only reads this process's output, and when
the run ends, fails or is cancelled, the operating system takes all its memory back.

The protocol is one JSON object per line on stdout: ``{"type": "report", ...}`` (a
:class:`~underlay.api.fine_tuning.TrainingReport`), then one ``{"type": "outcome", ...}`` or
``{"type": "error", "code", "message"}``. The parent steers it through the file ``control`` in the work
directory: ``pause`` (save a checkpoint, report ``paused``, exit) or ``cancel`` (exit now). Logs go to
stderr.

Steps are deterministic from the seed (each epoch's order is a shuffle seeded by ``seed + epoch``), so
a run resumed from a checkpoint at step *n* does exactly the steps a run that never stopped would have
done after *n*.

Two methods share that loop: ``supervised`` (cross-entropy on the assistant answers) and ``dpo``
(preference pairs, :mod:`.dpo`). A DPO step scores both answers of each pair with the policy (the model
with its adapter) and with the reference (the same model with the adapter switched off, computed once
per pair and kept, since it never changes), so it needs no second model in memory.
"""

from __future__ import annotations

import json
import math
import os
import random
import resource
import sys
import time
from pathlib import Path
from typing import Any

from underlay.providers.inline.post_training.huggingface.data import (
    IGNORE,
    PreferencePair,
    Tokenized,
    tokenize_example,
    tokenize_preference,
)

Item = Tokenized | PreferencePair
"""What one example of a run is: a labelled sequence (supervised) or a pair of them (dpo)."""


def emit(line_type: str, **fields: Any) -> None:
    sys.stdout.write(json.dumps({"type": line_type, **fields}) + "\n")
    sys.stdout.flush()


def control(work: Path) -> str:
    try:
        return (work / "control").read_text().strip()
    except OSError:
        return ""


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def share_gguf_name_maps() -> None:
    """Build ``gguf``'s tensor-name map once per (architecture, depth) instead of once per module.

    transformers' GGUF loader asks ``gguf.get_tensor_name_map`` again for every submodule it walks (about
    400 times for SmolLM2-135M) and each call rebuilds the same table: 10 to 15 s of a 25 to 35 s load on a
    busy 2-core machine. The table depends only on its two arguments and the loader only reads it, so
    memoising the function in this (training-only) process gives the same weights, sooner.
    """
    import functools

    import gguf

    if not hasattr(gguf.get_tensor_name_map, "cache_info"):
        gguf.get_tensor_name_map = functools.lru_cache(maxsize=None)(gguf.get_tensor_name_map)


class Run:
    def __init__(self, spec: dict[str, Any]) -> None:
        import torch

        self.spec = spec
        self.plan = spec["plan"]
        self.work = Path(self.plan["work_dir"])
        self.work.mkdir(parents=True, exist_ok=True)
        torch.set_num_threads(int(spec["threads"]))
        torch.manual_seed(int(self.plan["seed"]))
        self.torch = torch

    # -- setup -------------------------------------------------------------------------------------

    def load(self) -> None:
        from peft import LoraConfig, get_peft_model
        from transformers import AutoModelForCausalLM, AutoTokenizer

        gguf = Path(self.spec["gguf_path"])
        started = time.monotonic()
        share_gguf_name_maps()
        self.tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        base = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=self.torch.float32)
        lora = LoraConfig(
            r=int(self.spec["lora_rank"]),
            lora_alpha=int(self.spec["lora_alpha"]),
            lora_dropout=float(self.spec["lora_dropout"]),
            target_modules=list(self.spec["target_modules"]),
            task_type="CAUSAL_LM",
        )
        self.model = get_peft_model(base, lora)
        trainable = sum(p.numel() for p in self.model.parameters() if p.requires_grad)
        total = sum(p.numel() for p in self.model.parameters())
        emit(
            "report",
            kind="message",
            message=f"Loaded {self.plan['base_model']} in {time.monotonic() - started:.0f} s: {total / 1e6:.1f} M "
            f"parameters, {trainable / 1e6:.2f} M trainable (LoRA r={lora.r} on {', '.join(lora.target_modules)})",
        )

    @property
    def dpo(self) -> bool:
        return self.plan.get("method") == "dpo"

    def tokenize(self, examples: list[dict[str, Any]]) -> list[Item]:
        """The examples the run learns from: those with a token left to score after cutting at the length."""
        max_len = int(self.spec["max_seq_len"])
        if self.dpo:
            pairs = [tokenize_preference(self.tokenizer, example, max_len) for example in examples]
            return [p for p in pairs if p is not None]
        out = [tokenize_example(self.tokenizer, example, max_len) for example in examples]
        return [t for t in out if t.trained]

    # -- steps -------------------------------------------------------------------------------------

    def batch_tensors(self, items: list[Tokenized]) -> tuple[Any, Any, Any, int]:
        torch = self.torch
        width = max(len(t.input_ids) for t in items)
        pad = int(self.tokenizer.pad_token_id)
        ids = torch.full((len(items), width), pad, dtype=torch.long)
        labels = torch.full((len(items), width), IGNORE, dtype=torch.long)
        mask = torch.zeros((len(items), width), dtype=torch.long)
        for row, item in enumerate(items):
            n = len(item.input_ids)
            ids[row, :n] = torch.tensor(item.input_ids)
            labels[row, :n] = torch.tensor(item.labels)
            mask[row, :n] = 1
        return ids, labels, mask, int(mask.sum())

    def loss_of(self, items: list[Tokenized]) -> tuple[Any, int]:
        ids, labels, mask, tokens = self.batch_tensors(items)
        out = self.model(input_ids=ids, attention_mask=mask, labels=labels)
        return out.loss, tokens

    def validation_loss(self, items: list[Tokenized], batch_size: int) -> float | None:
        if not items:
            return None
        self.model.eval()
        total, count = 0.0, 0
        with self.torch.no_grad():
            for start in range(0, len(items), batch_size):
                chunk = items[start : start + batch_size]
                loss, _ = self.loss_of(chunk)
                weight = sum(t.trained for t in chunk)
                total += float(loss) * weight
                count += weight
        self.model.train()
        return total / max(1, count)

    # -- dpo ---------------------------------------------------------------------------------------

    def pair_logps(self, pairs: list[PreferencePair]) -> tuple[Any, Any, int]:
        """The current model's summed answer log-probabilities: (chosen, rejected, tokens), one forward pass
        over the ``2 × len(pairs)`` sequences (chosen rows first)."""
        from underlay.providers.inline.post_training.huggingface.dpo import sequence_logps

        sequences = [p.chosen for p in pairs] + [p.rejected for p in pairs]
        ids, labels, mask, tokens = self.batch_tensors(sequences)
        logits = self.model(input_ids=ids, attention_mask=mask).logits
        logps = sequence_logps(logits, labels)
        return logps[: len(pairs)], logps[len(pairs) :], tokens

    def reference(self, pairs: list[PreferencePair]) -> tuple[Any, Any]:
        """The reference's log-probabilities for ``pairs``: the base model (adapter off), computed for the
        pairs that have none yet and kept on them (the reference never changes during a run)."""
        missing = [p for p in pairs if p.reference is None]
        if missing:
            was_training = self.model.training
            self.model.eval()
            with self.torch.no_grad(), self.model.disable_adapter():
                chosen, rejected, _ = self.pair_logps(missing)
            if was_training:
                self.model.train()
            for pair, c, r in zip(missing, chosen.tolist(), rejected.tolist(), strict=True):
                pair.reference = (c, r)
        values = self.torch.tensor([p.reference for p in pairs], dtype=self.torch.float32)
        return values[:, 0], values[:, 1]

    def dpo_terms(self, pairs: list[PreferencePair]) -> tuple[Any, int]:
        from underlay.providers.inline.post_training.huggingface.dpo import dpo_loss

        ref_chosen, ref_rejected = self.reference(pairs)
        chosen, rejected, tokens = self.pair_logps(pairs)
        return dpo_loss(chosen, rejected, ref_chosen, ref_rejected, float(self.plan.get("beta") or 0.1)), tokens

    def dpo_validation(self, pairs: list[PreferencePair], batch_size: int) -> dict[str, float]:
        """Mean DPO loss and reward accuracy over the validation pairs (no gradients)."""
        if not pairs:
            return {}
        self.model.eval()
        loss, correct = 0.0, 0.0
        with self.torch.no_grad():
            for start in range(0, len(pairs), batch_size):
                chunk = pairs[start : start + batch_size]
                terms, _ = self.dpo_terms(chunk)
                loss += float(terms.loss) * len(chunk)
                correct += terms.accuracy * len(chunk)
        self.model.train()
        return {"valid_loss": loss / len(pairs), "valid_reward_accuracy": correct / len(pairs)}

    def step_loss(self, items: list[Any]) -> tuple[Any, int, dict[str, float]]:
        """One batch's loss to backpropagate, the tokens it covered and the method's own figures."""
        if not self.dpo:
            loss, tokens = self.loss_of(items)
            return loss, tokens, {}
        terms, tokens = self.dpo_terms(items)
        extra = {
            "reward_accuracy": terms.accuracy,
            "reward_margin": terms.margin,
            "chosen_reward": float(terms.chosen_rewards.mean()),
            "rejected_reward": float(terms.rejected_rewards.mean()),
        }
        return terms.loss, tokens, extra

    def validate(self, items: list[Any], batch_size: int) -> dict[str, float]:
        if self.dpo:
            return self.dpo_validation(items, batch_size)
        valid = self.validation_loss(items, batch_size)
        return {} if valid is None else {"valid_loss": valid}

    def save_checkpoint(self, step: int, optimizer: Any) -> Path:
        directory = self.work / "checkpoints" / f"step-{step:06d}"
        partial = directory.with_name(directory.name + ".partial")
        partial.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(str(partial))
        self.torch.save(optimizer.state_dict(), partial / "optimizer.pt")
        state = {"step": step, "seed": self.plan["seed"], "method": self.plan.get("method", "supervised")}
        (partial / "trainer_state.json").write_text(json.dumps(state))
        if directory.exists():
            import shutil

            shutil.rmtree(directory)
        partial.rename(directory)  # whole or absent: a kill mid-save leaves only a .partial
        return directory

    def resume(self, optimizer: Any) -> int:
        source = self.plan.get("resume_from")
        if not source:
            return 0
        from peft import set_peft_model_state_dict
        from safetensors.torch import load_file

        directory = Path(source)
        set_peft_model_state_dict(self.model, load_file(str(directory / "adapter_model.safetensors")))
        optimizer.load_state_dict(self.torch.load(directory / "optimizer.pt", weights_only=True))
        step = int(json.loads((directory / "trainer_state.json").read_text())["step"])
        emit("report", kind="message", message=f"Resumed from the checkpoint at step {step}")
        return step

    def train(self) -> None:
        torch = self.torch
        plan = self.plan
        train_items = self.tokenize(plan["training"])
        valid_items = self.tokenize(plan.get("validation") or [])
        if not train_items:
            what = "preference pair has both answers" if self.dpo else "example has an assistant answer"
            emit(
                "error",
                code="no_trainable_tokens",
                message=f"No {what} left to learn from within max_seq_len={self.spec['max_seq_len']} tokens.",
            )
            return
        batch_size = max(1, min(int(plan["batch_size"]), len(train_items)))
        per_epoch = math.ceil(len(train_items) / batch_size)
        total_steps = per_epoch * int(plan["n_epochs"])
        every = int(self.spec["checkpoint_every"]) or per_epoch
        lr = float(self.spec["learning_rate"]) * float(plan["learning_rate_multiplier"])
        params = [p for p in self.model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
        warmup = max(1, min(10, total_steps // 10))

        def rate(step: int) -> float:
            if step < warmup:
                return lr * (step + 1) / warmup
            return lr * max(0.05, 1 - (step - warmup) / max(1, total_steps - warmup))

        step = self.resume(optimizer)
        self.model.train()
        trained_tokens = 0
        last_loss = float("nan")
        orders: dict[int, list[int]] = {}
        while step < total_steps:
            command = control(self.work)
            if command == "cancel":
                emit("error", code="cancelled", message="cancelled")
                return
            if command == "pause":
                directory = self.save_checkpoint(step, optimizer)
                emit(
                    "report",
                    kind="checkpoint",
                    step=step,
                    total_steps=total_steps,
                    checkpoint_dir=str(directory),
                    metrics={"train_loss": last_loss} if not math.isnan(last_loss) else {},
                )
                emit("outcome", status="paused", steps=step, trained_tokens=trained_tokens)
                return
            epoch, index = divmod(step, per_epoch)
            if epoch not in orders:
                order = list(range(len(train_items)))
                random.Random(int(plan["seed"]) + epoch).shuffle(order)
                orders[epoch] = order
            batch = [train_items[i] for i in orders[epoch][index * batch_size : (index + 1) * batch_size]]
            for group in optimizer.param_groups:
                group["lr"] = rate(step)
            started = time.monotonic()
            loss, tokens, extra = self.step_loss(batch)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            elapsed = time.monotonic() - started
            step += 1
            trained_tokens += tokens
            last_loss = float(loss.detach())
            metrics = {
                "train_loss": last_loss,
                "learning_rate": rate(step - 1),
                "tokens_per_second": tokens / max(elapsed, 1e-6),
                "step_seconds": elapsed,
                **extra,
            }
            end_of_epoch = step % per_epoch == 0 or step == total_steps
            if end_of_epoch and valid_items:
                metrics.update(self.validate(valid_items, batch_size))
            emit("report", kind="metrics", step=step, total_steps=total_steps, metrics=metrics)
            if step % every == 0 and step < total_steps:
                directory = self.save_checkpoint(step, optimizer)
                emit(
                    "report",
                    kind="checkpoint",
                    step=step,
                    total_steps=total_steps,
                    checkpoint_dir=str(directory),
                    metrics={k: v for k, v in metrics.items() if k in ("train_loss", "valid_loss")},
                )
        self.finish(step, total_steps, trained_tokens, last_loss, optimizer)

    def finish(self, step: int, total_steps: int, trained_tokens: int, last_loss: float, optimizer: Any) -> None:
        from underlay.providers.inline.post_training.huggingface.export import export_merged_gguf, verify_gguf

        directory = self.save_checkpoint(step, optimizer)
        emit(
            "report",
            kind="checkpoint",
            step=step,
            total_steps=total_steps,
            checkpoint_dir=str(directory),
            metrics={"train_loss": last_loss},
        )
        adapter = self.work / "adapter"
        self.model.save_pretrained(str(adapter))
        emit("report", kind="message", message="Exporting the tuned model to GGUF")
        target = self.work / "model.gguf"
        partial = self.work / "model.gguf.partial"
        export_merged_gguf(Path(self.spec["gguf_path"]), self.model, partial)
        verify_gguf(partial)
        partial.rename(target)  # only a verified, complete file gets the name the server serves
        emit(
            "outcome",
            status="succeeded",
            steps=step,
            trained_tokens=trained_tokens,
            adapter_dir=str(adapter),
            gguf_path=str(target),
            metrics={"peak_rss_mb": peak_rss_mb(), "train_loss": last_loss},
        )


def main() -> int:
    spec = json.loads(Path(sys.argv[1]).read_text())
    try:
        run = Run(spec)
        run.load()
        run.train()
    except MemoryError:
        emit("error", code="out_of_memory", message=f"The run ran out of memory (peak RSS {peak_rss_mb():.0f} MB).")
    except OSError as exc:
        emit("error", code="io_error", message=f"{type(exc).__name__}: {exc}")
    except Exception as exc:  # reported on the protocol, so the job fails with this reason
        emit("error", code="training_failed", message=f"{type(exc).__name__}: {exc}"[:2000])
        raise
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.exit(main())
