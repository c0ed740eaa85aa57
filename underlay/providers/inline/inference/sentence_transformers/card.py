"""What a sentence-transformers directory says about its output, read from its small JSON files.

Why: model listing (``GET /v1/models``) and request validation (``dimensions``) need the vector size
and the input limit, and must not pay for loading weights (nor importing torch) to learn them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class ModelCard:
    """``dimension``: size of the vectors the model returns; ``max_seq_length``: word pieces it reads
    per input (special tokens included). Either is None when the directory does not say."""

    dimension: int | None
    max_seq_length: int | None


def _json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def read_card(model_dir: Path) -> ModelCard:
    """The card of a local sentence-transformers (or plain Hugging Face) model directory."""
    config = _json(model_dir / "config.json") or {}
    modules = _json(model_dir / "modules.json")
    dimension: int | None = None
    if isinstance(modules, list):
        for module in modules:
            if not isinstance(module, dict):
                continue
            kind = str(module.get("type", "")).rsplit(".", 1)[-1]
            sub = _json(model_dir / str(module.get("path", "")) / "config.json") or {}
            if kind == "Pooling":
                width = sub.get("word_embedding_dimension") or sub.get("embedding_dimension")
                modes = sum(1 for k, v in sub.items() if k.startswith("pooling_mode_") and v is True) or 1
                if width:
                    dimension = int(width) * modes
            elif kind == "Dense" and sub.get("out_features"):
                dimension = int(sub["out_features"])  # a Dense after pooling sets the final size
    if dimension is None and config.get("hidden_size"):
        dimension = int(config["hidden_size"])

    max_seq: int | None = None
    st_config = _json(model_dir / "sentence_bert_config.json") or {}
    if st_config.get("max_seq_length"):
        max_seq = int(st_config["max_seq_length"])
    else:
        limits = [config.get("max_position_embeddings")]
        tok = _json(model_dir / "tokenizer_config.json") or {}
        limits.append(tok.get("model_max_length"))
        usable = [int(v) for v in limits if isinstance(v, int | float) and 0 < v < 1_000_000]
        max_seq = min(usable) if usable else None
    return ModelCard(dimension=dimension, max_seq_length=max_seq)
