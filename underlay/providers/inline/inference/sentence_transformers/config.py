"""Configuration of the embedded embeddings provider (``inline::sentence-transformers``).

Importing this module is cheap (pydantic only): run configs are validated without touching torch,
onnxruntime or the weights.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

DEFAULT_EMBEDDING_MODEL = "all-minilm-l6-v2"


class SentenceTransformersModelConfig(BaseModel):
    """One embedding model this provider serves.

    ``name`` is the provider's model id (what ``params.model`` arrives as). Weights come from the
    packaged catalog (``packaged``, sha256-verified, never from a hub) or from a local
    sentence-transformers directory (``path``). With neither, ``name`` is used as the packaged name,
    so ``- name: all-minilm-l6-v2`` is a complete entry.
    """

    model_config = ConfigDict(extra="forbid")

    name: str = Field(default=DEFAULT_EMBEDDING_MODEL, min_length=1)
    packaged: str | None = None
    path: str | None = None
    backend: Literal["auto", "torch", "onnx"] = Field(
        default="auto",
        description=(
            "'onnx' runs a graph built once from the safetensors weights on onnxruntime (about 1.5x "
            "faster on CPU, same vectors, no torch needed); 'torch' runs sentence-transformers; "
            "'auto' takes onnx when onnxruntime and onnx are installed and the architecture is "
            "supported (BERT with mean or cls pooling), torch otherwise."
        ),
    )
    quantize: Literal["none", "int8"] = Field(
        default="none",
        description=(
            "onnx only: 'int8' quantises the weight matrices (about 2x faster on CPUs with VNNI) at the "
            "price of vectors that drift (cosine about 0.99 to the float model). Off by default because "
            "an index built with one setting should be queried with the same one."
        ),
    )
    batch_size: int = Field(default=32, ge=1, le=1024, description="Most inputs per forward pass.")
    max_batch_tokens: int | None = Field(
        default=None,
        ge=16,
        description=(
            "Most padded tokens per forward pass. Inputs are sorted by length and cut into passes of at "
            "most this many tokens, so short sentences are not padded to the longest one: on CPU this "
            "is worth 2x on real text. Default: 256 for onnx (whose graph pays padding in attention "
            "only, and where larger passes re-read the weights less often), 128 for torch."
        ),
    )
    max_threads: int | None = Field(
        default=None,
        ge=1,
        description=(
            "onnx: forward passes run in parallel on this many threads (default: CPU count, at most 8). "
            "torch: torch.set_num_threads(), which is process-wide (default: torch's own choice)."
        ),
    )
    max_seq_length: int | None = Field(
        default=None, ge=8, description="Word pieces per input, at most the model's own limit (256 for MiniLM)."
    )
    truncate_inputs: bool = Field(
        default=True,
        description=(
            "Inputs longer than max_seq_length are cut to it, as sentence-transformers does; false "
            "refuses them with a 400 naming the input instead."
        ),
    )
    truncate_dimensions: bool = Field(
        default=False,
        description=(
            "Accept 'dimensions' below the native size by cutting and re-normalising vectors. Only "
            "meaningful for Matryoshka-trained models; all-MiniLM-L6-v2 is not, so it is off."
        ),
    )
    embedding_dimension: int | None = Field(
        default=None,
        ge=1,
        description="Native vector size, for listing without loading weights (read from "
        "the catalog or the model directory when unset).",
    )
    max_inputs: int = Field(default=2048, ge=1, description="Most inputs in one request (OpenAI's limit).")

    @model_validator(mode="after")
    def _check(self) -> SentenceTransformersModelConfig:
        if self.packaged and self.path:
            raise ValueError(f"model '{self.name}': set either 'packaged' or 'path', not both")
        if not self.packaged and not self.path:
            self.packaged = self.name
        if self.packaged:
            from underlay.shared.packaged_models import list_packaged_models

            known = [m.name for m in list_packaged_models() if m.kind == "sentence-transformers"]
            if self.packaged not in known:
                raise ValueError(
                    f"model '{self.name}': packaged model '{self.packaged}' is not an embedding model in the "
                    f"catalog ({', '.join(known)}); set 'path' to a sentence-transformers directory instead"
                )
        if self.quantize != "none" and self.backend == "torch":
            raise ValueError(f"model '{self.name}': quantize '{self.quantize}' needs backend 'onnx' or 'auto'")
        return self


class SentenceTransformersConfig(BaseModel):
    """Provider-level settings.

    Models load on their first request by default, so server start is instant and an idle server
    holds no weights (and has not imported torch or onnxruntime); ``preload`` loads them during
    start-up instead, so a missing or broken model fails the start loudly and the first request is
    fast. ``cache_dir`` is where ONNX graphs are written once (default ``$UNDERLAY_MODELS_DIR`` or
    ``~/.cache/underlay/models``) and where packaged models keep their verification markers.
    """

    model_config = ConfigDict(extra="forbid")

    models: list[SentenceTransformersModelConfig] = Field(
        default_factory=lambda: [SentenceTransformersModelConfig(name=DEFAULT_EMBEDDING_MODEL)]
    )
    preload: bool = False
    cache_dir: str | None = None

    @model_validator(mode="after")
    def _unique(self) -> SentenceTransformersConfig:
        seen: set[str] = set()
        for m in self.models:
            if m.name in seen:
                raise ValueError(f"model name '{m.name}' appears twice in models")
            seen.add(m.name)
        return self

    def model(self, name: str) -> SentenceTransformersModelConfig | None:
        return next((m for m in self.models if m.name == name), None)
