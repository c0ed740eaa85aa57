"""The GGUF export: the base file copied exactly, the adapted tensors merged in llama.cpp's row order.

The base is the packaged SmolLM2-135M GGUF (a ``llama`` model, so q/k rows are permuted on disk). The
adapter comes from a small stand-in with PEFT's module layout (``lora_A``/``lora_B``/``scaling`` under
``model.layers.N.self_attn.q_proj``), so no transformers model has to load: what is checked is the
file this writes, read back with the ``gguf`` reader, and that llama.cpp loads it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

gguf = pytest.importorskip("gguf")
torch = pytest.importorskip("torch")

from underlay.providers.inline.post_training.huggingface.export import (  # noqa: E402
    export_merged_gguf,
    permute_rows,
    verify_gguf,
)
from underlay.shared.packaged_models import resolve_model_path  # noqa: E402


class _Lora(torch.nn.Module):  # type: ignore[misc]
    """The attributes of a PEFT LoRA layer the export reads."""

    def __init__(self, out_features: int, in_features: int, rank: int, seed: int) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.lora_A = torch.nn.ModuleDict({"default": torch.nn.Linear(in_features, rank, bias=False)})
        self.lora_B = torch.nn.ModuleDict({"default": torch.nn.Linear(rank, out_features, bias=False)})
        with torch.no_grad():
            self.lora_A["default"].weight.copy_(torch.randn(rank, in_features, generator=generator) * 0.1)
            self.lora_B["default"].weight.copy_(torch.randn(out_features, rank, generator=generator) * 0.1)
        self.scaling = {"default": 2.0}


def _adapter(layers: dict[int, dict[str, tuple[int, int]]]) -> Any:
    root = torch.nn.Module()
    root.model = torch.nn.Module()
    root.model.layers = torch.nn.ModuleList()
    for index in range(max(layers) + 1):
        layer = torch.nn.Module()
        layer.self_attn = torch.nn.Module()
        for name, (out_f, in_f) in layers.get(index, {}).items():
            setattr(layer.self_attn, name, _Lora(out_f, in_f, 4, seed=index * 10 + len(name)))
        root.model.layers.append(layer)
    return root


def _delta(module: Any) -> np.ndarray:
    a = module.lora_A["default"].weight.detach().numpy()
    b = module.lora_B["default"].weight.detach().numpy()
    return np.asarray(b @ a * module.scaling["default"], dtype=np.float32)


@pytest.mark.slow  # writes a 150 MB file and loads it with llama.cpp: seconds on a quiet machine
def test_export_merges_only_adapted_tensors_with_the_q_k_permutation(tmp_path: Path) -> None:
    from gguf import GGMLQuantizationType, GGUFReader
    from gguf.quants import dequantize

    base_path = Path(resolve_model_path("smollm2-135m-instruct"))
    model = _adapter({0: {"q_proj": (576, 576), "k_proj": (192, 576), "v_proj": (192, 576)}, 3: {"q_proj": (576, 576)}})
    target = tmp_path / "merged.gguf"
    counts = export_merged_gguf(base_path, model, target)
    assert counts["merged"] == 4

    base, merged = GGUFReader(str(base_path)), GGUFReader(str(target))
    base_fields = {k: f.contents() for k, f in base.fields.items() if not k.startswith("GGUF.")}
    merged_fields = {k: f.contents() for k, f in merged.fields.items() if not k.startswith("GGUF.")}
    assert merged_fields == base_fields  # every key, the tokenizer and the chat template included

    base_tensors = {t.name: t for t in base.tensors}
    merged_tensors = {t.name: t for t in merged.tensors}
    assert list(merged_tensors) == list(base_tensors)
    adapted = {
        "blk.0.attn_q.weight": (model.model.layers[0].self_attn.q_proj, 9),
        "blk.0.attn_k.weight": (model.model.layers[0].self_attn.k_proj, 3),
        "blk.0.attn_v.weight": (model.model.layers[0].self_attn.v_proj, None),
        "blk.3.attn_q.weight": (model.model.layers[3].self_attn.q_proj, 9),
    }
    for name, tensor in merged_tensors.items():
        original = base_tensors[name]
        if name not in adapted:
            assert tensor.tensor_type == original.tensor_type and np.array_equal(tensor.data, original.data), name
            continue
        assert tensor.tensor_type == GGMLQuantizationType.F32
        module, heads = adapted[name]
        delta = _delta(module) if heads is None else permute_rows(_delta(module), heads)
        weights = dequantize(original.data, GGMLQuantizationType(original.tensor_type))
        assert np.allclose(np.asarray(tensor.data), weights + delta, atol=1e-6), name
        if heads is not None:  # the permutation matters: unpermuted, the rows would be wrong
            assert not np.allclose(np.asarray(tensor.data), weights + _delta(module), atol=1e-3)

    verify_gguf(target)  # llama.cpp loads it and its logits are finite


def test_permute_rows_interleaves_each_heads_halves() -> None:
    # One head of 4 rows: rows [0, 1 | 2, 3] become [0, 2, 1, 3] (first-half and second-half rows alternate).
    rows = np.arange(8, dtype=np.float32).reshape(4, 2)
    assert permute_rows(rows, 1)[:, 0].tolist() == [0.0, 4.0, 2.0, 6.0]
    two_heads = np.arange(8, dtype=np.float32).reshape(8, 1)
    assert permute_rows(two_heads, 2)[:, 0].tolist() == [0.0, 2.0, 1.0, 3.0, 4.0, 6.0, 5.0, 7.0]


def test_an_adapter_the_base_has_no_tensor_for_is_refused(tmp_path: Path) -> None:
    base_path = Path(resolve_model_path("smollm2-135m-instruct"))
    model = _adapter({99: {"q_proj": (576, 576)}})
    with pytest.raises(ValueError, match="no tensor blk.99.attn_q.weight"):
        export_merged_gguf(base_path, model, tmp_path / "bad.gguf")
