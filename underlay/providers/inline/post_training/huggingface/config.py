"""Configuration of the ``inline::huggingface`` trainer."""

from __future__ import annotations

import os

from pydantic import BaseModel, ConfigDict, Field, model_validator


class BaseModelConfig(BaseModel):
    """A model jobs may start from: a packaged GGUF (``packaged``) or a local GGUF file (``path``)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200, description="What a job's `model` says.")
    packaged: str | None = None
    path: str | None = None

    @model_validator(mode="after")
    def _source(self) -> BaseModelConfig:
        if bool(self.packaged) == bool(self.path):
            raise ValueError(f"base model '{self.name}': set exactly one of 'packaged' or 'path'")
        return self


def _default_threads() -> int:
    """Half the cores: the other half keeps serving requests while a run trains (on 2 cores, 1 thread)."""
    return max(1, (os.cpu_count() or 2) // 2)


class HuggingFaceTrainerConfig(BaseModel):
    """LoRA settings, limits and where the base models come from.

    ``memory_cap_mb`` is what one run may use; a job whose estimate (weights in float32, activations
    for one batch at ``max_seq_len``, LoRA optimiser state) is over it is refused with a 400 before it
    starts. Examples longer than ``max_seq_len`` tokens are cut at it.
    """

    model_config = ConfigDict(extra="forbid")

    models: list[BaseModelConfig] = Field(
        default_factory=lambda: [BaseModelConfig(name="smollm2-135m-instruct", packaged="smollm2-135m-instruct")]
    )
    lora_rank: int = Field(default=8, ge=1, le=256)
    lora_alpha: int = Field(default=16, ge=1, le=1024)
    lora_dropout: float = Field(default=0.0, ge=0, lt=1)
    target_modules: list[str] = Field(default_factory=lambda: ["q_proj", "v_proj"], min_length=1)
    learning_rate: float = Field(default=2e-4, gt=0, le=1, description="The base rate a job's multiplier scales.")
    max_seq_len: int = Field(default=512, ge=16, le=32768)
    memory_cap_mb: int = Field(default=6144, ge=256)
    threads: int = Field(default_factory=_default_threads, ge=1, le=512)
    checkpoint_every: int = Field(default=0, ge=0, description="Steps between checkpoints (0: at each epoch's end).")
    cache_dir: str | None = Field(default=None, description="Where packaged models are assembled.")
