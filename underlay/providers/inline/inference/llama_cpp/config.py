"""Configuration of the embedded llama.cpp provider (``inline::llama-cpp``)."""

from __future__ import annotations

import os
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

DEFAULT_CHAT_MODEL = "qwen2.5-coder-0.5b-instruct"


def _default_threads() -> int:
    return os.cpu_count() or 1


class LlamaCppModelConfig(BaseModel):
    """One GGUF model this provider serves.

    ``name`` is the provider's model id (what ``params.model`` arrives as). The weights come either
    from the packaged catalog (``packaged``, verified by sha256 and assembled on first use) or from any
    local GGUF (``path``). When neither is given and ``name`` is a catalog name, it is used as
    ``packaged``, so ``- name: qwen2.5-coder-0.5b-instruct`` is a complete entry.
    """

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)
    packaged: str | None = None
    path: str | None = None
    n_ctx: int = Field(default=4096, ge=256, description="Context length in tokens (prompt plus completion).")
    n_threads: int = Field(default_factory=_default_threads, ge=1)
    n_batch: int = Field(default=512, ge=16, description="Prompt tokens evaluated per llama.cpp batch.")
    extra_buffer_types: bool | None = Field(
        default=None,
        description=(
            "llama.cpp's extra weight layouts (repacked kernels, Intel AMX tiles). Default: on, except on "
            "CPUs that report AMX, where llama.cpp's AMX matmul has crashed the process; true forces them on."
        ),
    )
    chat_template: str | None = Field(
        default=None, description="Jinja chat template overriding the one in the GGUF metadata."
    )
    model_type: Literal["llm"] = "llm"
    temperature: float = Field(
        default=0.7, ge=0, le=2, description="Sampling temperature when a request does not set one."
    )
    top_k: int = Field(default=40, ge=0, description="Top-k cut applied when sampling (0 = off).")
    min_p: float = Field(default=0.05, ge=0, le=1, description="Min-p cut applied when sampling (0 = off).")

    @model_validator(mode="after")
    def _source(self) -> LlamaCppModelConfig:
        if self.packaged and self.path:
            raise ValueError(f"model '{self.name}': set either 'packaged' or 'path', not both")
        if not self.packaged and not self.path:
            from underlay.shared.packaged_models import list_packaged_models

            known = [m.name for m in list_packaged_models() if m.kind == "gguf"]
            if self.name not in known:
                raise ValueError(
                    f"model '{self.name}': set 'path' to a GGUF file or 'packaged' to one of {', '.join(known)}"
                )
            self.packaged = self.name
        return self


class LlamaCppConfig(BaseModel):
    """Provider-level settings.

    ``preload`` loads every model when the server starts (slower start, first request fast); by
    default a model loads on its first request, so start-up is instant and idle memory stays low.
    ``max_concurrent_per_model`` is how many requests one model serves at once: each concurrent
    slot is its own llama.cpp context (the weights are memory-mapped and shared, each slot adds its KV
    cache). Requests beyond that wait in arrival order; more than ``max_queued_per_model`` waiting
    are refused with 429 so an overloaded server says so instead of timing out.
    """

    model_config = ConfigDict(extra="forbid")

    models: list[LlamaCppModelConfig] = Field(default_factory=lambda: [LlamaCppModelConfig(name=DEFAULT_CHAT_MODEL)])
    preload: bool = False
    max_concurrent_per_model: int = Field(default=1, ge=1, le=16)
    max_queued_per_model: int = Field(default=64, ge=0)
    cache_dir: str | None = Field(
        default=None, description="Where packaged models are assembled (default: $UNDERLAY_MODELS_DIR)."
    )

    @model_validator(mode="after")
    def _unique(self) -> LlamaCppConfig:
        seen: set[str] = set()
        for m in self.models:
            if m.name in seen:
                raise ValueError(f"model name '{m.name}' appears twice in models")
            seen.add(m.name)
        return self

    def model(self, name: str) -> LlamaCppModelConfig | None:
        return next((m for m in self.models if m.name == name), None)
