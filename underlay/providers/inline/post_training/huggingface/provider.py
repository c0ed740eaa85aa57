"""The ``inline::huggingface`` trainer: LoRA fine-tuning (supervised or DPO) in a child process.

The server side of it is small on purpose: resolve the base model's GGUF, estimate whether the run
fits the memory cap, write the run's spec, start :mod:`.worker` and relay what it prints. The event
loop only ever waits on the child's stdout, so interactive requests are served as usual while a run
trains, and cancelling (or losing the job's lease) ends the child, whose memory the OS takes back.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Literal

from underlay.api.errors import InvalidRequestError, ServiceUnavailableError, UpstreamError
from underlay.api.fine_tuning import TrainingOutcome, TrainingPlan, TrainingReport
from underlay.api.fine_tuning_data import message_text
from underlay.providers.inline.post_training.huggingface.config import BaseModelConfig, HuggingFaceTrainerConfig

log = logging.getLogger(__name__)

PROVIDER_TYPE = "inline::huggingface"
OVERHEAD_MB = 600
"""Python, torch and the tokenizer before any weights (measured: about 550 MB)."""
GRACE_SECONDS = 5.0


class ModelShape:
    """What the memory estimate needs from a GGUF header: parameters, width, depth, vocabulary."""

    def __init__(self, path: Path) -> None:
        from gguf import GGUFReader

        reader = GGUFReader(str(path))
        arch = str(reader.fields["general.architecture"].contents())
        self.parameters = sum(int(t.n_elements) for t in reader.tensors)
        self.hidden = int(reader.fields[f"{arch}.embedding_length"].contents())
        self.layers = int(reader.fields[f"{arch}.block_count"].contents())
        tokens = reader.fields.get("tokenizer.ggml.tokens")
        self.vocab = len(tokens.data) if tokens is not None else 32_000


class HuggingFaceTrainer:
    def __init__(self, provider_id: str, config: HuggingFaceTrainerConfig) -> None:
        self.provider_id = provider_id
        self.config = config
        self._shapes: dict[str, ModelShape] = {}
        self._paths: dict[str, Path] = {}
        self.missing: list[str] = []

    async def initialize(self) -> None:
        """Starts without the training packages (the local distribution lists this trainer for everyone);
        a job then gets a 503 naming the extra to install, before anything is stored."""
        import importlib.util

        missing = [name for name in ("torch", "transformers", "peft", "gguf") if importlib.util.find_spec(name) is None]
        self.missing = missing

    def _require_packages(self) -> None:
        if self.missing:
            raise ServiceUnavailableError(
                self.provider_id,
                f"{PROVIDER_TYPE} needs {', '.join(self.missing)}: pip install 'underlay[train]'",
                code="trainer_unavailable",
            )

    async def shutdown(self) -> None:
        return None

    async def health(self) -> dict[str, Any]:
        return {"status": "OK", "models": self.base_models()}

    def base_models(self) -> list[str]:
        return [m.name for m in self.config.models]

    def methods(self) -> list[str]:
        return ["supervised", "dpo"]

    # -- checks ------------------------------------------------------------------------------------

    def _model(self, name: str) -> BaseModelConfig:
        for model in self.config.models:
            if model.name == name:
                return model
        raise InvalidRequestError(f"Trainer '{self.provider_id}' has no base model '{name}'.", param="model")

    def _gguf(self, name: str) -> Path:
        """The base model's GGUF file (a packaged model is assembled on first use)."""
        if name in self._paths:
            return self._paths[name]
        model = self._model(name)
        if model.packaged:
            from underlay.shared.packaged_models import resolve_model_path

            path = Path(resolve_model_path(model.packaged, cache_dir=self.config.cache_dir))
        else:
            path = Path(os.path.expanduser(model.path or ""))
        if not path.is_file():
            raise ServiceUnavailableError(self.provider_id, f"base model '{name}': no GGUF file at {path}")
        self._paths[name] = path
        return path

    def estimate_mb(self, plan: TrainingPlan) -> tuple[float, int]:
        """(megabytes one run needs, the sequence length it was estimated for).

        A DPO batch of ``batch_size`` pairs is ``2 × batch_size`` sequences through the model with
        gradients, and before it the reference pass (the same model, adapter off, no gradients) over the
        same sequences, whose logits are one more vocabulary-sized row per token at its peak.
        """
        shape = self._shapes.get(plan.base_model)
        if shape is None:
            shape = self._shapes[plan.base_model] = ModelShape(self._gguf(plan.base_model))
        longest = max((_chars(example) for example in plan.training), default=0)
        seq = min(self.config.max_seq_len, longest // 3 + 64)
        dpo = plan.method == "dpo"
        sequences = plan.batch_size * (2 if dpo else 1)
        weights = shape.parameters * 4  # float32 copy of the dequantised base
        adapter = shape.layers * len(self.config.target_modules) * 2 * shape.hidden * self.config.lora_rank * 16
        # Per token: each layer keeps ~34 hidden-sized activations for backward; the logits and their
        # gradient take three vocabulary-sized rows (four with DPO's reference logits).
        per_token = shape.layers * shape.hidden * 34 + shape.vocab * (4 if dpo else 3)
        activations = sequences * seq * per_token * 4
        return (weights + adapter + activations) / 2**20 + OVERHEAD_MB, seq

    async def check(self, plan: TrainingPlan) -> None:
        self._require_packages()
        needed, seq = await asyncio.to_thread(self.estimate_mb, plan)
        if needed > self.config.memory_cap_mb:
            what = (
                f"batch {plan.batch_size} pairs × 2 answers × {seq} tokens"
                if plan.method == "dpo"
                else f"batch {plan.batch_size} × {seq} tokens"
            )
            raise InvalidRequestError(
                f"This run needs about {needed:.0f} MB ({what} on {plan.base_model}), over this trainer's "
                f"memory cap of {self.config.memory_cap_mb} MB; use a smaller batch_size or shorter examples.",
                param=f"method.{plan.method}.hyperparameters.batch_size",
                code="exceeds_memory_cap",
            )

    # -- training ------------------------------------------------------------------------------------

    def _prepare(self, plan: TrainingPlan) -> tuple[Path, Path]:
        """The work directory with the run's spec and a fresh control file; (spec, log) paths."""
        work = Path(plan.work_dir)
        work.mkdir(parents=True, exist_ok=True)
        spec_path = work / "spec.json"
        spec_path.write_text(json.dumps(self._spec(plan)))
        (work / "control").write_text("run")
        return spec_path, work / "train.log"

    def _spec(self, plan: TrainingPlan) -> dict[str, Any]:
        c = self.config
        return {
            "plan": plan.model_dump(mode="json"),
            "gguf_path": str(self._gguf(plan.base_model)),
            "lora_rank": c.lora_rank,
            "lora_alpha": c.lora_alpha,
            "lora_dropout": c.lora_dropout,
            "target_modules": c.target_modules,
            "learning_rate": c.learning_rate,
            "max_seq_len": c.max_seq_len,
            "threads": c.threads,
            "checkpoint_every": c.checkpoint_every,
        }

    async def train(
        self,
        plan: TrainingPlan,
        report: Callable[[TrainingReport], Awaitable[None]],
        should_stop: Callable[[], Literal["run", "pause", "cancel"]],
    ) -> TrainingOutcome:
        work = Path(plan.work_dir)
        spec_path, log_path = await asyncio.to_thread(self._prepare, plan)
        log_file = await asyncio.to_thread(open, log_path, "ab")
        try:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "underlay.providers.inline.post_training.huggingface.worker",
                str(spec_path),
                stdout=asyncio.subprocess.PIPE,
                stderr=log_file,
                limit=16 * 2**20,
                # PASSIVE: OpenMP threads sleep instead of spinning while they wait; on a busy machine a
                # spinning team took 5x longer per step (measured: 170 s against 33 s on a loaded 2-core box).
                env={
                    **os.environ,
                    "OMP_WAIT_POLICY": "PASSIVE",
                    "TQDM_DISABLE": "1",
                    "HF_HUB_OFFLINE": "1",
                    "TRANSFORMERS_OFFLINE": "1",
                },
            )
        finally:
            log_file.close()
        outcome: TrainingOutcome | None = None
        error: dict[str, Any] | None = None
        asked = "run"
        try:
            assert process.stdout is not None
            while True:
                line = await process.stdout.readline()
                if not line:
                    break
                try:
                    message = json.loads(line)
                except ValueError:
                    continue
                kind = message.pop("type", None)
                if kind == "report":
                    await report(TrainingReport.model_validate(message))
                elif kind == "outcome":
                    outcome = TrainingOutcome.model_validate(message)
                elif kind == "error":
                    error = message
                wanted = should_stop()
                if wanted != asked and wanted in ("pause", "cancel"):
                    await asyncio.to_thread((work / "control").write_text, wanted)
                    asked = wanted
                    if wanted == "cancel":
                        break
            if asked != "cancel":
                await process.wait()
        finally:
            await _end(process)
        if asked == "cancel" or (error is not None and error.get("code") == "cancelled"):
            return TrainingOutcome(status="cancelled")
        if outcome is not None:
            return outcome
        if error is not None:
            code = str(error.get("code") or "training_failed")
            text = str(error.get("message") or "training failed")
            if code == "no_trainable_tokens":
                raise InvalidRequestError(text, param="training_file", code=code)
            raise UpstreamError(self.provider_id, f"training failed: {text}", code=code)
        raise UpstreamError(
            self.provider_id,
            f"the training process ended with exit code {process.returncode} and no result"
            f"{' (killed: out of memory?)' if process.returncode in (-9, 137) else ''}; last log lines: "
            f"{_tail(log_path)}",
            code="training_process_died",
        )


def _chars(example: dict[str, Any]) -> int:
    """An example's size in characters: a chat's messages, or a preference's prompt plus its longer answer."""

    def size(messages: list[dict[str, Any]]) -> int:
        return sum(len(message_text(m.get("content"))) + len(json.dumps(m.get("tool_calls") or "")) for m in messages)

    if "input" in example:
        answers = [size(example.get(key) or []) for key in ("preferred_output", "non_preferred_output")]
        return size((example.get("input") or {}).get("messages") or []) + max(answers)
    return size(example.get("messages") or [])


async def _end(process: asyncio.subprocess.Process) -> None:
    """Stop the child if it still runs: terminate, then kill after a grace period."""
    if process.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        process.terminate()
    try:
        await asyncio.wait_for(process.wait(), GRACE_SECONDS)
    except (TimeoutError, asyncio.CancelledError):
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        with contextlib.suppress(Exception):
            await process.wait()


def _tail(path: Path, lines: int = 5) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return "(no log)"
    return " | ".join(line.strip()[:300] for line in text[-lines:]) or "(empty log)"
