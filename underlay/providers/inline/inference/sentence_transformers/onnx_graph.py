"""Build an ONNX graph of a BERT sentence-embedding model straight from its safetensors weights.

Why build the graph by hand instead of calling ``torch.onnx.export``: the exporter needs torch (about
1.5 GB installed) and changes with every torch and transformers release, while the ONNX backend is
meant to run with ``onnxruntime``, ``onnx``, ``tokenizers`` and ``safetensors`` alone (about 220 MB).
A BERT encoder is a short, fixed recipe (embeddings, N x [self-attention, feed-forward], each followed
by a residual LayerNorm), so writing it with standard ONNX operators is small, reviewable and exact:
the vectors match sentence-transformers to a cosine of 1 - 1e-6.

The graph takes ``input_ids`` and ``attention_mask`` (int64, ``[batch, seq]``, right-padded) and
returns ``sentence_embedding`` (float32, ``[batch, hidden]``): pooling (mean over real tokens, or the
[CLS] token) and L2 normalisation are part of the graph, so Python only pads token ids.

Inside, the per-token work (every matrix product, GELU and LayerNorm: over 90% of the arithmetic)
runs on the real tokens only, packed into ``[tokens, hidden]`` rows; only the attention scores see
the padded ``[batch, seq]`` layout, and padding is masked out there as before. So padding costs
attention alone, query, key and value come out of one product, and onnxruntime folds each bias into
its matrix product (a Gemm on 2-D rows). Same arithmetic per token, so the same vectors.

Only what a sentence-transformers BERT directory holds is supported: ``model_type: bert``, absolute
positions, erf GELU, a Pooling module (mean or cls) and optionally Normalize. Anything else (Dense
layers, MPNet, RoBERTa, rotary positions) is reported by :func:`unsupported_reason` and the provider
uses the torch backend for it.

Everything here is synchronous and takes a second or two; callers run it on a worker thread.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:  # numpy and onnx are imported only when a graph is built
    import numpy as np
    import onnx

logger = logging.getLogger(__name__)

GRAPH_VERSION = 2
"""Bumped whenever the graph this module writes changes, so cached graphs are rebuilt."""

OPSET = 17  # LayerNormalization is a standard op from 17; onnxruntime >= 1.14 runs it.
_MASK_NEG = -1e9  # added to attention scores of padding; exp() of it is exactly 0 in float32

Pooling = Literal["mean", "cls"]


# --------------------------------------------------------------------------------------------------
# What a model directory says about itself


def _read_json(path: Path) -> dict[str, Any] | list[Any] | None:
    try:
        data: dict[str, Any] | list[Any] = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data


def module_types(model_dir: Path) -> list[str]:
    """The last component of each sentence-transformers module type (``Transformer``, ``Pooling``...).

    Names only, because the package path of a module class moved between sentence-transformers
    releases (``sentence_transformers.models.Pooling`` in old directories, deeper paths in new ones).
    """
    modules = _read_json(model_dir / "modules.json")
    if not isinstance(modules, list):
        return []
    return [str(m.get("type", "")).rsplit(".", 1)[-1] for m in modules if isinstance(m, dict)]


def pooling_mode(model_dir: Path) -> Pooling | None:
    """``mean`` or ``cls`` from ``1_Pooling/config.json`` (mean when the directory has no Pooling
    config, as sentence-transformers itself assumes); None for max or mixed pooling."""
    modules = _read_json(model_dir / "modules.json")
    pooling_path = "1_Pooling"
    if isinstance(modules, list):
        for m in modules:
            if isinstance(m, dict) and str(m.get("type", "")).endswith("Pooling"):
                pooling_path = str(m.get("path") or pooling_path)
    cfg = _read_json(model_dir / pooling_path / "config.json")
    if not isinstance(cfg, dict):
        return "mean"
    if "pooling_mode" in cfg:  # newer sentence-transformers writes a single string
        mode = str(cfg["pooling_mode"])
        return mode if mode in ("mean", "cls") else None  # type: ignore[return-value]
    flags = {k: bool(v) for k, v in cfg.items() if k.startswith("pooling_mode_") and v}
    if set(flags) == {"pooling_mode_mean_tokens"}:
        return "mean"
    if set(flags) == {"pooling_mode_cls_token"}:
        return "cls"
    return None


def unsupported_reason(model_dir: Path) -> str | None:
    """Why this directory cannot be built into a graph here, or None when it can."""
    config = _read_json(model_dir / "config.json")
    if not isinstance(config, dict):
        return f"no readable config.json in {model_dir}"
    if config.get("model_type") != "bert":
        return f"model_type '{config.get('model_type')}' is not 'bert'"
    if config.get("position_embedding_type", "absolute") != "absolute":
        return f"position_embedding_type '{config.get('position_embedding_type')}' is not 'absolute'"
    if config.get("hidden_act", "gelu") != "gelu":
        return f"hidden_act '{config.get('hidden_act')}' is not 'gelu'"
    if not (model_dir / "model.safetensors").is_file():
        return "no model.safetensors (pytorch_model.bin checkpoints need the torch backend)"
    if not (model_dir / "tokenizer.json").is_file():
        return "no tokenizer.json (a fast tokenizer file is needed without transformers)"
    extra = [t for t in module_types(model_dir) if t not in ("Transformer", "Pooling", "Normalize")]
    if extra:
        return f"modules {', '.join(extra)} are not supported (only Transformer, Pooling, Normalize)"
    if pooling_mode(model_dir) is None:
        return "only mean or cls pooling is supported"
    return None


# --------------------------------------------------------------------------------------------------
# The graph


class _GraphBuilder:
    """Accumulates nodes and initializers with unique names; keeps the recipe below readable."""

    def __init__(self) -> None:
        from onnx import helper, numpy_helper

        self._helper = helper
        self._numpy_helper = numpy_helper
        self.nodes: list[Any] = []
        self.initializers: list[Any] = []
        self._count = 0

    def const(self, name: str, value: np.ndarray) -> str:
        import numpy as np

        # np.ascontiguousarray would turn a 0-d scalar into shape (1,), changing Gather's output rank.
        array = value if value.flags.c_contiguous else np.ascontiguousarray(value)
        self.initializers.append(self._numpy_helper.from_array(array, name))
        return name

    def op(self, op_type: str, inputs: list[str], *, name: str | None = None, outputs: int = 1, **attrs: Any) -> Any:
        self._count += 1
        node_name = name or f"{op_type}_{self._count}"
        out = [f"{node_name}_out{i}" for i in range(outputs)]
        self.nodes.append(self._helper.make_node(op_type, inputs, out, name=node_name, **attrs))
        return out[0] if outputs == 1 else out


def build_graph(model_dir: Path) -> onnx.ModelProto:
    """The embedding graph for the BERT model in ``model_dir`` (see the module docstring)."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper
    from safetensors.numpy import load_file

    reason = unsupported_reason(model_dir)
    if reason:
        raise ValueError(f"cannot build an ONNX graph for {model_dir}: {reason}")
    config = _read_json(model_dir / "config.json")
    assert isinstance(config, dict)
    pooling = pooling_mode(model_dir)
    raw = load_file(str(model_dir / "model.safetensors"))
    # Checkpoints saved from BertForXxx carry a "bert." prefix; sentence-transformers' do not.
    weights = {k.removeprefix("bert."): v.astype(np.float32) for k, v in raw.items() if v.dtype.kind == "f"}

    def w(key: str) -> np.ndarray:
        try:
            return weights[key]
        except KeyError:
            raise ValueError(f"{model_dir}/model.safetensors has no tensor '{key}'") from None

    hidden = int(config["hidden_size"])
    heads = int(config["num_attention_heads"])
    layers = int(config["num_hidden_layers"])
    eps = float(config.get("layer_norm_eps", 1e-12))
    head_dim = hidden // heads
    g = _GraphBuilder()
    i64 = np.int64

    def linear(x: str, weight: np.ndarray, bias: np.ndarray, name: str) -> str:
        # On [tokens, in] rows onnxruntime fuses MatMul + Add into one Gemm (bias added in the kernel).
        mm = g.op("MatMul", [x, g.const(f"{name}.w", np.ascontiguousarray(weight))], name=name)
        return g.op("Add", [mm, g.const(f"{name}.b", bias)])

    def dense(x: str, prefix: str, name: str) -> str:
        # Weights are stored [out, in] (torch Linear); MatMul wants [in, out].
        return linear(x, w(f"{prefix}.weight").T, w(f"{prefix}.bias"), name)

    def layer_norm(x: str, prefix: str) -> str:
        return g.op(
            "LayerNormalization",
            [x, g.const(f"{prefix}.g", w(f"{prefix}.weight")), g.const(f"{prefix}.beta", w(f"{prefix}.bias"))],
            axis=-1,
            epsilon=eps,
        )

    # Packing. `real` lists the flat positions (row * seq + column) of real tokens, so every
    # per-token step below runs on [tokens, hidden] without padding; `unpack` maps each padded
    # position back to its token's row (padding maps to a neighbour: masked out of attention and
    # pooling, so its value never counts).
    flat = g.const("flat", np.array([-1], i64))
    flat_mask = g.op("Reshape", ["attention_mask", flat])
    real = g.op("Reshape", [g.op("NonZero", [flat_mask]), flat])
    zero_i, one_i = g.const("zero_i", np.array(0, i64)), g.const("one_i", np.array(1, i64))
    unpack = g.op("Max", [g.op("Sub", [g.op("CumSum", [flat_mask, zero_i]), one_i]), zero_i])
    seq_len = g.op(
        "Slice", [g.op("Shape", ["input_ids"]), g.const("c_1", np.array([1], i64)), g.const("c_2", np.array([2], i64))]
    )

    shapes = {
        width: g.op("Concat", [flat, seq_len, g.const(f"w_{width}", np.array([width], i64))], axis=0)
        for width in (hidden, 3 * hidden)
    }

    def padded(x: str, width: int) -> str:
        """[tokens, width] -> [batch, seq, width] (for attention and pooling)."""
        return g.op("Reshape", [g.op("Gather", [x, unpack]), shapes[width]])

    # Embeddings. Token types are always 0 for single sentences, so their row is folded into the
    # position table; a token's position is its column (inputs are right-padded).
    positions = w("embeddings.position_embeddings.weight") + w("embeddings.token_type_embeddings.weight")[0]
    pos = g.op("Gather", [g.const("pos_table", positions), g.op("Mod", [real, seq_len])])
    ids = g.op("Gather", [g.op("Reshape", ["input_ids", flat]), real])
    words = g.op("Gather", [g.const("word_table", w("embeddings.word_embeddings.weight")), ids])
    x = layer_norm(g.op("Add", [words, pos]), "embeddings.LayerNorm")

    mask = g.op("Cast", ["attention_mask"], to=TensorProto.FLOAT)
    # [batch, seq] -> [batch, 1, 1, seq]: 0 for real tokens, a huge negative for padding.
    not_mask = g.op("Sub", [g.const("one", np.array(1, np.float32)), mask])
    bias = g.op("Mul", [not_mask, g.const("neg", np.array(_MASK_NEG, np.float32))])
    bias = g.op("Unsqueeze", [bias, g.const("ax_1_2", np.array([1, 2], i64))])
    split_heads = g.const("shape_heads", np.array([0, 0, 3 * heads, head_dim], i64))
    merge_heads = g.const("shape_rows", np.array([-1, hidden], i64))
    scale = 1.0 / math.sqrt(head_dim)

    for i in range(layers):
        p = f"encoder.layer.{i}"
        a = f"{p}.attention.self"
        # Query, key and value in one product; the attention's 1/sqrt(head_dim) is folded into the
        # query columns for free.
        qkv_w = np.concatenate(
            [w(f"{a}.query.weight").T * scale, w(f"{a}.key.weight").T, w(f"{a}.value.weight").T], axis=1
        )
        qkv_b = np.concatenate([w(f"{a}.query.bias") * scale, w(f"{a}.key.bias"), w(f"{a}.value.bias")])
        qkv = padded(linear(x, qkv_w, qkv_b, f"L{i}.qkv"), 3 * hidden)
        # [batch, seq, 3 * heads, head_dim] -> [batch, 3 * heads, seq, head_dim] -> q, k, v per head
        q, k, v = g.op(
            "Split", [g.op("Transpose", [g.op("Reshape", [qkv, split_heads])], perm=[0, 2, 1, 3])], axis=1, outputs=3
        )
        scores = g.op("MatMul", [q, g.op("Transpose", [k], perm=[0, 1, 3, 2])])
        probs = g.op("Softmax", [g.op("Add", [scores, bias])], axis=-1)
        context = g.op("Transpose", [g.op("MatMul", [probs, v])], perm=[0, 2, 1, 3])
        context = g.op("Gather", [g.op("Reshape", [context, merge_heads]), real])  # back to [tokens, hidden]
        attn = dense(context, f"{p}.attention.output.dense", f"L{i}.attn_out")
        x = layer_norm(g.op("Add", [attn, x]), f"{p}.attention.output.LayerNorm")
        up = dense(x, f"{p}.intermediate.dense", f"L{i}.ffn_in")
        # Exact (erf) GELU, as BERT's "gelu"; onnxruntime fuses this pattern into one kernel.
        erf = g.op("Erf", [g.op("Div", [up, g.const(f"sqrt2_{i}", np.array(math.sqrt(2.0), np.float32))])])
        half_up = g.op("Mul", [up, g.const(f"half_{i}", np.array(0.5, np.float32))])
        gelu = g.op("Mul", [half_up, g.op("Add", [erf, g.const(f"one_{i}", np.array(1.0, np.float32))])])
        down = dense(gelu, f"{p}.output.dense", f"L{i}.ffn_out")
        x = layer_norm(g.op("Add", [down, x]), f"{p}.output.LayerNorm")

    out = padded(x, hidden)  # [batch, seq, hidden]
    if pooling == "cls":
        pooled = g.op("Gather", [out, g.const("c_first", np.array(0, i64))], axis=1)
    else:
        mask3 = g.op("Unsqueeze", [mask, g.const("ax_2", np.array([2], i64))])
        summed = g.op("ReduceSum", [g.op("Mul", [out, mask3]), g.const("ax_1", np.array([1], i64))], keepdims=0)
        count = g.op("ReduceSum", [mask3, g.const("ax_1b", np.array([1], i64))], keepdims=0)
        pooled = g.op("Div", [summed, g.op("Max", [count, g.const("min_count", np.array(1e-9, np.float32))])])
    # L2 normalisation, with the same 1e-12 floor as torch.nn.functional.normalize.
    norm = g.op("ReduceL2", [pooled], axes=[-1], keepdims=1)
    norm = g.op("Max", [norm, g.const("min_norm", np.array(1e-12, np.float32))])
    g.nodes.append(helper.make_node("Div", [pooled, norm], ["sentence_embedding"], name="normalize"))

    graph = helper.make_graph(
        g.nodes,
        "sentence_embedding",
        [
            helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "seq"]),
            helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "seq"]),
        ],
        [helper.make_tensor_value_info("sentence_embedding", TensorProto.FLOAT, ["batch", hidden])],
        initializer=g.initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="underlay")
    model.ir_version = min(model.ir_version, 8)  # readable by any onnxruntime that knows opset 17
    onnx.checker.check_model(model)
    return model


# --------------------------------------------------------------------------------------------------
# The cache


def _cache_key(model_dir: Path) -> str:
    """Changes when the weights, the config or this module's recipe change; cheap (stats, no hashing
    of the 90 MB weights, which the packaged-model layer has already verified)."""
    digest = hashlib.sha256()
    digest.update(f"v{GRAPH_VERSION}|{model_dir.resolve()}".encode())
    for name in ("model.safetensors", "config.json", "modules.json", "1_Pooling/config.json"):
        path = model_dir / name
        with contextlib.suppress(OSError):
            stat = path.stat()
            digest.update(f"|{name}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return digest.hexdigest()[:16]


def _atomic_save(write: Any, target: Path) -> None:
    """Write via a temp file beside ``target`` then rename, so a reader (another worker process)
    never sees a half-written graph."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".partial")
    os.close(fd)
    try:
        write(tmp_name)
        os.chmod(tmp_name, 0o644)  # mkstemp makes it private; the cache may be shared by several users
        os.replace(tmp_name, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp_name)
        raise


def _weight_matmuls(model: onnx.ModelProto) -> list[str]:
    """Names of the MatMul nodes whose right operand is a weight (the ones int8 quantises)."""
    constants = {init.name for init in model.graph.initializer}
    return [n.name for n in model.graph.node if n.op_type == "MatMul" and n.input[1] in constants]


class _DropMessage(logging.Filter):
    def __init__(self, prefix: str) -> None:
        super().__init__()
        self.prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.prefix)


def ensure_graph(model_dir: Path, cache_root: Path, *, quantize: Literal["none", "int8"] = "none") -> Path:
    """The cached graph file for ``model_dir``, building it on first use.

    ``quantize="int8"`` additionally writes a dynamically quantised copy (int8 weights per output
    channel, activations quantised per batch at run time); it is about twice as fast on CPUs with
    VNNI but moves vectors (cosine about 0.99 to the float model), so it is opt-in.
    """
    try:
        return _ensure_graph(model_dir, cache_root, quantize)
    except OSError as exc:  # permission denied, read-only file system, disk full
        # A read-only home or models dir must not cost the fast backend: build per user in /tmp.
        fallback = Path(tempfile.gettempdir()) / f"underlay-models-{os.getuid() if hasattr(os, 'getuid') else 'user'}"
        logger.warning("cannot write ONNX graph under %s (%s); using %s", cache_root, exc, fallback)
        return _ensure_graph(model_dir, fallback, quantize)


def _ensure_graph(model_dir: Path, cache_root: Path, quantize: Literal["none", "int8"]) -> Path:
    import onnx

    key = _cache_key(model_dir)
    folder = cache_root / "onnx" / f"{model_dir.resolve().name}-{key}"
    fp32 = folder / "model.onnx"
    if not fp32.is_file():
        logger.info("building ONNX graph for %s into %s", model_dir, fp32)
        graph = build_graph(model_dir)
        _atomic_save(lambda tmp: onnx.save(graph, tmp), fp32)
    if quantize == "none":
        return fp32
    int8 = folder / "model.int8.onnx"
    if not int8.is_file():
        from onnxruntime.quantization import QuantType, quantize_dynamic

        logger.info("quantising %s to int8", fp32)
        nodes = _weight_matmuls(onnx.load(str(fp32)))
        # The quantiser logs advice about calibration pre-processing (which dynamic quantisation does
        # not need) on the root logger; keep it out of server logs.
        advice = _DropMessage("Please consider to run pre-processing")
        logging.getLogger().addFilter(advice)
        try:
            _atomic_save(
                lambda tmp: quantize_dynamic(
                    str(fp32), tmp, per_channel=True, weight_type=QuantType.QInt8, nodes_to_quantize=nodes
                ),
                int8,
            )
        finally:
            logging.getLogger().removeFilter(advice)
    return int8
