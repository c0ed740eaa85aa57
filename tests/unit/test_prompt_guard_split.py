"""The prompt-guard held-out split does not leak: no test prompt is a near-duplicate of a training one.

Why this test exists: the first split clustered near-duplicates with MinHash LSH tuned for Jaccard
around 0.6, and 156 of its 797 test prompts overlapped a training prompt at word 5-gram Jaccard >= 0.3
(template variants), which flattered the published recall. The check is recomputed here from what
ships, with its own shingling, not by calling ``scripts/train_prompt_guard.py``: the test prompts in
full (``bench/data/prompt_guard_heldout.jsonl.gz``) and the split manifest
(``bench/data/prompt_guard_split.json.gz``: per training / validation prompt, its shingle count and the
hashes of its shingles that also occur in a test prompt, which is all an intersection can hold).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import re
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from underlay.providers.inline.safety.prompt_guard.classifier import METRICS_FILE

DATA = Path(__file__).resolve().parents[2] / "bench" / "data"
LEAK = 0.3


def _shingles(text: str) -> set[str]:
    words = re.findall(r"\w+", text.lower())
    return {
        hashlib.blake2b(" ".join(words[i : i + 5]).encode(), digest_size=8).hexdigest()
        for i in range(max(1, len(words) - 4))
    }


def _heldout() -> list[dict[str, Any]]:
    lines = gzip.decompress((DATA / "prompt_guard_heldout.jsonl.gz").read_bytes()).decode().splitlines()
    return [json.loads(line) for line in lines if line]


def _manifest() -> dict[str, Any]:
    return json.loads(gzip.decompress((DATA / "prompt_guard_split.json.gz").read_bytes()))


def _worst(test_sets: list[set[str]], rows: list[dict[str, Any]]) -> tuple[float, int]:
    """The highest Jaccard of any test prompt with any row, and how many test prompts reach ``LEAK``."""
    index: dict[str, list[int]] = defaultdict(list)
    for j, row in enumerate(rows):
        for h in row["shared"]:
            index[h].append(j)
    worst, leaking = 0.0, 0
    for shingles in test_sets:
        common = Counter(j for h in shingles for j in index.get(h, ()))
        best = max((c / (len(shingles) + rows[j]["n"] - c) for j, c in common.items()), default=0.0)
        worst = max(worst, best)
        leaking += best >= LEAK
    return worst, leaking


def test_the_manifest_describes_the_shipped_split() -> None:
    heldout, manifest = _heldout(), _manifest()
    split = json.loads(METRICS_FILE.read_text())["split"]
    assert manifest["leak_jaccard"] == LEAK
    assert manifest["test"] == len(heldout) == sum(split["test"].values())
    assert len(manifest["train"]) == sum(split["train"].values())
    assert len(manifest["validation"]) == sum(split["validation"].values())
    in_test = set().union(*(_shingles(r["text"]) for r in heldout))
    for part in ("train", "validation"):
        for row in manifest[part]:
            # every stored hash is a test shingle by our own hashing, so the two shinglings agree
            assert set(row["shared"]) <= in_test and len(row["shared"]) <= row["n"]


def test_no_test_prompt_is_within_jaccard_0_3_of_a_training_or_validation_prompt() -> None:
    test_sets = [_shingles(r["text"]) for r in _heldout()]
    manifest = _manifest()
    for part in ("train", "validation"):
        worst, leaking = _worst(test_sets, manifest[part])
        assert leaking == 0, f"{leaking} test prompts overlap a {part} prompt at Jaccard >= {LEAK} (max {worst:.2f})"
    assert json.loads(METRICS_FILE.read_text())["leak_check"]["test_vs_train"] == 0


def test_the_check_finds_a_planted_near_duplicate() -> None:
    """The check is not vacuous: a training row that is a test prompt with a few words changed leaks."""
    heldout = _heldout()
    text = next(r["text"] for r in heldout if len(r["text"].split()) > 60)
    variant = _shingles(text.replace(" the ", " a ", 3))
    test_sets = [_shingles(r["text"]) for r in heldout]
    in_test = set().union(*test_sets)
    planted = {"label": "jailbreak", "n": len(variant), "shared": sorted(variant & in_test)}
    worst, leaking = _worst(test_sets, [*_manifest()["train"], planted])
    assert leaking >= 1 and worst >= 0.5
