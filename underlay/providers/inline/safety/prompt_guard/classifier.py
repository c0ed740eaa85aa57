"""The prompt-guard classifier: hashed n-gram features and a three-class softmax regression.

Why this model: no packaged transformer classifier for prompt attacks exists offline, and a linear
model over hashed n-grams is small (the shipped weights are about a megabyte), needs only numpy and
scores a long jailbreak prompt in a few milliseconds. Attack prompts carry strong lexical signals
("ignore the previous instructions", "DAN mode", "stay in character") that n-grams pick up well.

The same :func:`featurize` runs in ``scripts/train_prompt_guard.py`` and at serving time, so the
features cannot drift between training and inference. Hashing uses CRC-32, which is stable across
processes and Python versions (the built-in ``hash`` is salted per process).
"""

from __future__ import annotations

import json
import re
import zlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

LABELS: tuple[str, ...] = ("benign", "injection", "jailbreak")
"""Class order of the weight matrix's columns."""

DIM_BITS = 18
"""2**18 hashed buckets: collisions stay rare for the ~10^5 distinct n-grams of the training data."""

MAX_CHARS = 20_000
"""Only the first 20,000 characters are read: jailbreak templates are long but rarely longer."""

ARTEFACT_DIR = Path(__file__).resolve().parent
MODEL_FILE = ARTEFACT_DIR / "model.npz"
METRICS_FILE = ARTEFACT_DIR / "metrics.json"

_TOKEN = re.compile(r"\w+|[^\w\s]")
_SPACE = re.compile(r"\s+")


def _bucket(gram: str, mask: int) -> int:
    return zlib.crc32(gram.encode("utf-8")) & mask


def featurize(text: str, dim_bits: int = DIM_BITS) -> tuple[np.ndarray, np.ndarray]:
    """Sparse features of ``text``: (bucket indices, values), L2-normalised log term frequencies.

    Three families, prefixed so they hash apart: word unigrams, word bigrams and character 4-grams
    inside each padded word (spelling variants such as ``ign0re`` still share most 4-grams). A bias
    bucket is always present, so no text has an empty row.
    """
    mask = (1 << dim_bits) - 1
    lowered = _SPACE.sub(" ", text[:MAX_CHARS].lower()).strip()
    tokens = _TOKEN.findall(lowered)
    counts: Counter[int] = Counter()
    counts[_bucket("\x00bias", mask)] += 1
    for token in tokens:
        counts[_bucket("w:" + token, mask)] += 1
    for left, right in zip(tokens, tokens[1:], strict=False):
        counts[_bucket("b:" + left + " " + right, mask)] += 1
    for token in tokens:
        padded = f" {token} "
        for i in range(len(padded) - 3):
            counts[_bucket("c:" + padded[i : i + 4], mask)] += 1
    indices = np.fromiter(counts.keys(), dtype=np.int64, count=len(counts))
    values = np.log1p(np.fromiter(counts.values(), dtype=np.float64, count=len(counts)))
    values /= np.linalg.norm(values)
    return indices, values


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


@dataclass(frozen=True)
class Prediction:
    """Class probabilities for one text; ``attack`` is P(injection) + P(jailbreak)."""

    probabilities: dict[str, float]

    @property
    def attack(self) -> float:
        return 1.0 - self.probabilities["benign"]

    @property
    def category(self) -> str:
        """The more likely attack class (what a violation reports), whatever the threshold."""
        return max(("injection", "jailbreak"), key=lambda c: self.probabilities[c])


class PromptGuardModel:
    """The trained weights plus the threshold chosen on validation data (see ``metrics.json``)."""

    def __init__(self, weights: np.ndarray, bias: np.ndarray, threshold: float, dim_bits: int) -> None:
        self.weights = weights.astype(np.float32)
        self.bias = bias.astype(np.float32)
        self.threshold = threshold
        self.dim_bits = dim_bits

    @classmethod
    def load(cls, path: Path = MODEL_FILE) -> PromptGuardModel:
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(str(data["meta"]))
            if tuple(meta["labels"]) != LABELS:
                raise ValueError(f"{path}: labels {meta['labels']} do not match {LABELS}")
            return cls(data["weights"], data["bias"], float(meta["threshold"]), int(meta["dim_bits"]))

    def predict(self, text: str) -> Prediction:
        indices, values = featurize(text, self.dim_bits)
        logits = values @ self.weights[indices] + self.bias
        probs = softmax(logits.astype(np.float64))
        return Prediction({label: float(p) for label, p in zip(LABELS, probs, strict=True)})
