"""Export a LoRA-tuned model back to GGUF, so the embedded llama.cpp provider serves it.

The approach: merge, but only where the adapter changed something. The base GGUF is copied as it is
(every metadata key, the tokenizer, and every tensor in its original quantisation, byte for byte),
except the tensors LoRA adapted: those are dequantised, get the adapter's delta ``scale · B·A`` added,
and are written in float32. The file stays close to the base's size, the untouched weights lose
nothing, and llama.cpp needs no adapter support at run time.

One subtlety: llama.cpp's converter stores the query and key projections of ``llama``-architecture
models with their rows permuted (it interleaves the two halves of each head for its rotary embedding),
and transformers undoes that when it loads a GGUF. The delta is computed in transformers' layout, so
before it is added to a GGUF ``attn_q``/``attn_k`` tensor its rows get the same permutation the
converter applied to the weight. (Other architectures, e.g. ``qwen2``, store them unpermuted.)
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

_TARGETS = {
    "q_proj": "attn_q",
    "k_proj": "attn_k",
    "v_proj": "attn_v",
    "o_proj": "attn_output",
    "gate_proj": "ffn_gate",
    "up_proj": "ffn_up",
    "down_proj": "ffn_down",
}
_LAYER = re.compile(r"layers\.(\d+)\.(?:self_attn|mlp)\.(\w+)$")
PERMUTED_ARCHITECTURES = ("llama",)


def permute_rows(weights: np.ndarray, heads: int) -> np.ndarray:
    """The converter's row order for a q/k projection of ``heads`` heads (rows = heads × head_dim)."""
    rows = weights.shape[0]
    half = rows // heads // 2
    return weights.reshape(heads, 2, half, *weights.shape[1:]).swapaxes(1, 2).reshape(weights.shape)


def lora_deltas(model: Any) -> dict[str, np.ndarray]:
    """``blk.N.<tensor>.weight`` → the adapter's delta for it, in transformers' row order (out × in)."""
    import torch

    deltas: dict[str, np.ndarray] = {}
    for name, module in model.named_modules():
        if not hasattr(module, "lora_A") or "default" not in getattr(module, "lora_A", {}):
            continue
        match = _LAYER.search(name)
        if match is None or match.group(2) not in _TARGETS:
            raise ValueError(f"no GGUF tensor for the adapted module {name}")
        with torch.no_grad():
            a = module.lora_A["default"].weight.float()
            b = module.lora_B["default"].weight.float()
            delta = (b @ a) * float(module.scaling["default"])
        deltas[f"blk.{match.group(1)}.{_TARGETS[match.group(2)]}.weight"] = delta.cpu().numpy()
    return deltas


def _field_value(field: Any) -> tuple[Any, Any, Any]:
    from gguf import GGUFValueType

    main = field.types[0]
    sub = field.types[-1] if main == GGUFValueType.ARRAY else None
    return field.contents(), main, sub


def export_merged_gguf(base: Path, model: Any, target: Path) -> dict[str, int]:
    """Write ``target``: ``base`` with the adapter of ``model`` (a PEFT model) merged in. Returns counts."""
    from gguf import GGMLQuantizationType, GGUFReader, GGUFWriter
    from gguf.quants import dequantize

    reader = GGUFReader(str(base))
    arch = str(reader.fields["general.architecture"].contents())
    heads = int(reader.fields[f"{arch}.attention.head_count"].contents())
    kv_field = reader.fields.get(f"{arch}.attention.head_count_kv")
    kv_heads = int(kv_field.contents()) if kv_field is not None else heads
    deltas = lora_deltas(model)
    missing = sorted(set(deltas) - {t.name for t in reader.tensors})
    if missing:
        raise ValueError(f"the base GGUF has no tensor {missing[0]} for the adapter")
    writer = GGUFWriter(str(target), arch)
    for name, field in reader.fields.items():
        if name.startswith("GGUF.") or name == "general.architecture":
            continue
        value, main, sub = _field_value(field)
        writer.add_key_value(name, value, main, sub_type=sub)
    merged = 0
    for tensor in reader.tensors:
        delta = deltas.get(tensor.name)
        if delta is None:
            writer.add_tensor(tensor.name, tensor.data, raw_dtype=GGMLQuantizationType(tensor.tensor_type))
            continue
        weights = dequantize(tensor.data, GGMLQuantizationType(tensor.tensor_type)).astype(np.float32)
        if weights.shape != delta.shape:
            raise ValueError(f"{tensor.name}: base {weights.shape} and adapter {delta.shape} differ")
        if arch in PERMUTED_ARCHITECTURES and ".attn_q." in tensor.name:
            delta = permute_rows(delta, heads)
        elif arch in PERMUTED_ARCHITECTURES and ".attn_k." in tensor.name:
            delta = permute_rows(delta, kv_heads)
        writer.add_tensor(tensor.name, np.ascontiguousarray(weights + delta, dtype=np.float32))
        merged += 1
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return {"tensors": len(reader.tensors), "merged": merged}


def verify_gguf(path: Path) -> None:
    """Load the file with llama.cpp and evaluate a few tokens; raise if it does not load or gives NaNs."""
    from underlay.providers.utils.llama_loader import load_llama

    llm = load_llama(model_path=str(path), n_ctx=128, n_threads=1, verbose=False)
    try:
        tokens = llm.tokenize(b"Hello", add_bos=True)
        llm.eval(tokens)
        logits = np.asarray(llm.scores[len(tokens) - 1])
        if not np.all(np.isfinite(logits)):
            raise ValueError(f"{path.name}: the exported model produces non-finite logits")
    finally:
        llm.close()
