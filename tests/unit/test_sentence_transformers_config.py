"""Pure logic of the embedded embeddings provider: config, pass planning, model cards, refusals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from underlay.api.errors import InvalidRequestError
from underlay.providers.inline.inference.sentence_transformers.backends import plan_passes
from underlay.providers.inline.inference.sentence_transformers.card import read_card
from underlay.providers.inline.inference.sentence_transformers.config import (
    SentenceTransformersConfig,
    SentenceTransformersModelConfig,
)
from underlay.providers.inline.inference.sentence_transformers.onnx_graph import pooling_mode, unsupported_reason
from underlay.providers.inline.inference.sentence_transformers.provider import _texts, dimensions_error


def test_config_defaults_to_the_packaged_minilm() -> None:
    config = SentenceTransformersConfig()
    [model] = config.models
    assert (model.name, model.packaged, model.path, model.backend) == (
        "all-minilm-l6-v2",
        "all-minilm-l6-v2",
        None,
        "auto",
    )
    assert model.batch_size == 32 and model.truncate_inputs and not model.truncate_dimensions
    assert not config.preload


def test_config_errors_name_the_fix() -> None:
    with pytest.raises(ValidationError, match="either 'packaged' or 'path'"):
        SentenceTransformersModelConfig(name="m", packaged="all-minilm-l6-v2", path="/x")
    with pytest.raises(ValidationError, match="not an embedding model in the catalog"):
        SentenceTransformersModelConfig(name="qwen2.5-coder-0.5b-instruct")
    with pytest.raises(ValidationError, match="needs backend 'onnx'"):
        SentenceTransformersModelConfig(backend="torch", quantize="int8")
    with pytest.raises(ValidationError, match="appears twice"):
        SentenceTransformersConfig(models=[{"name": "all-minilm-l6-v2"}, {"name": "all-minilm-l6-v2"}])
    with pytest.raises(ValidationError):
        SentenceTransformersModelConfig(batch_sise=3)  # type: ignore[call-arg]  # typos are errors
    assert SentenceTransformersModelConfig(name="mine", path="/models/mine").packaged is None


def test_passes_are_sorted_and_bounded() -> None:
    lengths = [30, 5, 5, 120, 6, 7, 31, 8, 300]
    passes = plan_passes(lengths, batch_size=3, max_tokens=64)
    assert sorted(i for p in passes for i in p) == list(range(len(lengths)))
    flat = [lengths[i] for p in passes for i in p]
    assert flat == sorted(lengths)
    for p in passes:
        assert len(p) <= 3
        assert len(p) == 1 or len(p) * max(lengths[i] for i in p) <= 64
    assert [300] in [[lengths[i] for i in p] for p in passes]  # longer than the budget: alone
    assert plan_passes([], 32, 128) == []
    assert plan_passes([10] * 40, 32, 100_000) == [list(range(32)), list(range(32, 40))]


def test_passes_are_spread_over_workers() -> None:
    # One pass's worth of inputs is halved until every worker has one; the largest pass goes first.
    assert plan_passes([10] * 8, 32, 1000, min_passes=2) == [[0, 1, 2, 3], [4, 5, 6, 7]]
    # [0..5] -> [0, 1, 2] (3 x 5 padded tokens) and [3, 4, 5] (3 x 40): the wider one is split next.
    assert plan_passes([5, 5, 5, 5, 40, 40], 32, 1000, min_passes=3) == [[0, 1, 2], [3], [4, 5]]
    assert plan_passes([10, 12], 32, 1000, min_passes=4) == [[0], [1]]  # never more passes than inputs
    assert plan_passes([10] * 6, 32, 30, min_passes=2) == [[0, 1, 2], [3, 4, 5]]  # already enough


def _write(path: Path, data: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


def test_card_reads_dimension_and_limit_without_weights(tmp_path: Path) -> None:
    _write(tmp_path / "config.json", {"model_type": "bert", "hidden_size": 768, "max_position_embeddings": 512})
    assert read_card(tmp_path).dimension == 768 and read_card(tmp_path).max_seq_length == 512
    _write(tmp_path / "sentence_bert_config.json", {"max_seq_length": 128})
    _write(
        tmp_path / "modules.json",
        [
            {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
            {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
            {"idx": 2, "name": "2", "path": "2_Dense", "type": "sentence_transformers.models.Dense"},
        ],
    )
    _write(tmp_path / "1_Pooling" / "config.json", {"word_embedding_dimension": 768, "pooling_mode_mean_tokens": True})
    _write(tmp_path / "2_Dense" / "config.json", {"in_features": 768, "out_features": 256})
    card = read_card(tmp_path)
    assert (card.dimension, card.max_seq_length) == (256, 128)
    (tmp_path / "model.safetensors").write_bytes(b"")
    (tmp_path / "tokenizer.json").write_text("{}")
    assert "Dense" in (unsupported_reason(tmp_path) or "")  # the ONNX builder leaves it to torch


def test_pooling_modes_old_and_new_layouts(tmp_path: Path) -> None:
    _write(tmp_path / "1_Pooling" / "config.json", {"pooling_mode_cls_token": True, "pooling_mode_mean_tokens": False})
    assert pooling_mode(tmp_path) == "cls"
    _write(tmp_path / "1_Pooling" / "config.json", {"embedding_dimension": 32, "pooling_mode": "mean"})
    assert pooling_mode(tmp_path) == "mean"
    _write(tmp_path / "1_Pooling" / "config.json", {"pooling_mode_max_tokens": True})
    assert pooling_mode(tmp_path) is None


def test_dimensions_rules() -> None:
    model = SentenceTransformersModelConfig()
    assert dimensions_error(384, 384, model) is None
    small = dimensions_error(128, 384, model)
    assert small is not None and small.param == "dimensions" and "Matryoshka" in small.message
    assert dimensions_error(512, 384, model) is not None
    lenient = SentenceTransformersModelConfig(truncate_dimensions=True)
    assert dimensions_error(128, 384, lenient) is None and dimensions_error(512, 384, lenient) is not None


def test_inputs_are_text() -> None:
    assert _texts("hi", "m") == ["hi"]
    assert _texts(["a", "b"], "m") == ["a", "b"]
    for bad in ([1, 2, 3], [[1, 2]], ["a", ""]):
        with pytest.raises(InvalidRequestError) as info:
            _texts(bad, "m")  # type: ignore[arg-type]
        assert info.value.param == "input"
