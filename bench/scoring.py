"""Scoring throughput and judge agreement.

What it measures, all through the scoring router of a stack in this process (``Stack.scoring_router``,
the code ``POST /v1/scoring/score`` runs, aggregates and intervals included, without HTTP):

1. **Basic functions**: rows/s for ``basic::equality`` and the other row-only functions over 100,000
   rows (in calls of 10,000, the API's limit per call); BLEU and ROUGE over 10,000 rows. Target:
   exact match ≥ 20,000 rows/s.
2. **Judge throughput**: ``llm-as-judge::correctness`` on 16 question/answer rows (half right) with the
   embedded Qwen2.5-Coder 0.5B as the judge: rows/s and judge tokens/s (prompt and completion, from
   the score rows' ``judge_usage``). Bounded by the model; reported only.
3. **Judge agreement with people**: SimLex-999 (human similarity ratings 0-10 for 999 word pairs; see
   ``scripts/build_scoring_bench.py`` for its source, a pinned PyPI file). A seeded sample of pairs
   rated ≥ 7 ("similar", label 1) and ≤ 3 ("not similar", label 0), half each, judged by the embedded
   model through ``llm-as-judge::base`` with a yes/no template: accuracy and Cohen's kappa against the
   human labels. Beside it, ``embedding::similarity`` (MiniLM) on all 999 pairs: Spearman correlation
   with the human means, and accuracy/kappa on the same sample at the sample's median similarity.

Usage: ``python bench/scoring.py`` (about 5-10 minutes on 2 shared cores); ``--skip-models`` runs part 1
only; ``--pairs N`` changes the sample size (default 60), ``--judge-rows N`` the throughput rows (default 16).
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import os
import random
import tempfile
import time
from pathlib import Path
from typing import Any

from underlay.api.scoring import LLMAsJudgeParams, ScoringFnParams
from underlay.core.config import parse_run_config
from underlay.core.stack import Stack

DATA = Path(__file__).resolve().parent / "data" / "scoring_simlex.jsonl.gz"
JUDGE = "llama-cpp/qwen2.5-coder-0.5b-instruct"
EMBEDDER = "sentence-transformers/all-minilm-l6-v2"
CHUNK = 10_000
SEED = 20261207

SIMILAR_TEMPLATE = """Are these two English words close in meaning (synonyms or near-synonyms)?
Word 1: {generated_answer}
Word 2: {expected_answer}
Reply with exactly one line: "Score: 1" if they are close in meaning, "Score: 0" if they are not."""

QA = [
    ("What is the capital of France?", "Paris", "The capital of France is Paris."),
    ("How many legs does a spider have?", "8", "A spider has eight legs."),
    ("What gas do plants absorb?", "carbon dioxide", "Plants take in carbon dioxide."),
    ("Who wrote Hamlet?", "William Shakespeare", "Hamlet was written by Shakespeare."),
    ("What is 12 times 12?", "144", "12 x 12 = 144."),
    ("What is the largest planet?", "Jupiter", "Jupiter is the largest planet."),
    ("What is frozen water called?", "ice", "Frozen water is ice."),
    ("What colour is a ripe banana?", "yellow", "A ripe banana is yellow."),
    ("What is the capital of Japan?", "Tokyo", "The capital of Japan is Osaka."),
    ("How many days are in a week?", "7", "A week has five days."),
    ("What is the boiling point of water at sea level in Celsius?", "100", "Water boils at 50 degrees."),
    ("Who painted the Mona Lisa?", "Leonardo da Vinci", "The Mona Lisa was painted by Picasso."),
    ("What is 9 plus 10?", "19", "9 + 10 = 21."),
    ("What is the chemical symbol for gold?", "Au", "The symbol for gold is Ag."),
    ("Which ocean is the largest?", "Pacific", "The Atlantic is the largest ocean."),
    ("What is the square root of 81?", "9", "The square root of 81 is 8."),
]


def _stack_config(state: Path, models: bool) -> dict[str, Any]:
    scoring: list[dict[str, Any]] = [{"provider_id": "basic", "provider_type": "inline::basic"}]
    config: dict[str, Any] = {"state_dir": str(state), "apis": ["scoring"], "providers": {"scoring": scoring}}
    if models:
        config["apis"] = ["inference", "scoring"]
        config["providers"]["inference"] = [
            {
                "provider_id": "llama-cpp",
                "provider_type": "inline::llama-cpp",
                "config": {
                    "models": [{"name": "qwen2.5-coder-0.5b-instruct", "packaged": "qwen2.5-coder-0.5b-instruct"}]
                },
            },
            {
                "provider_id": "sentence-transformers",
                "provider_type": "inline::sentence-transformers",
                "config": {"models": [{"name": "all-minilm-l6-v2", "packaged": "all-minilm-l6-v2"}]},
            },
        ]
        scoring += [
            {
                "provider_id": "judge",
                "provider_type": "inline::llm-as-judge",
                # One call at a time: llama.cpp serves one request at a time, and a queued call's time
                # counts against its timeout, which on a loaded machine turns waiting into error rows.
                "config": {"default_judge_model": JUDGE, "max_concurrency": 1, "timeout_seconds": 900},
            },
            {
                "provider_id": "embedding",
                "provider_type": "inline::embedding-similarity",
                "config": {"default_embedding_model": EMBEDDER},
            },
        ]
    return config


async def _started(state: Path, models: bool) -> Stack:
    stack = Stack(parse_run_config(_stack_config(state, models), source="<bench>"))
    await stack.start()
    return stack


def _rows(n: int) -> list[dict[str, Any]]:
    rng = random.Random(SEED)
    words = ["paris", "blue", "42", "the cat sat", "Jupiter", "ice", "3/4", "The answer is (B)"]
    out = []
    for i in range(n):
        expected = words[i % len(words)]
        generated = expected if rng.random() < 0.6 else rng.choice(words) + " indeed"
        out.append({"generated_answer": generated, "expected_answer": expected})
    return out


async def _throughput(stack: Stack, fn_id: str, rows: list[dict[str, Any]]) -> tuple[float, float, dict[str, Any]]:
    """Rows per wall-clock second and per CPU second of this process (the second hardly moves with the
    machine's load, the first does), and the last call's aggregates."""
    router = stack.scoring_router
    assert router is not None
    start, cpu = time.perf_counter(), time.process_time()
    last: dict[str, Any] = {}
    for begin in range(0, len(rows), CHUNK):
        result = (await router.score_rows(rows[begin : begin + CHUNK], {fn_id: None}))[fn_id]
        last = result.aggregated_results
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    return len(rows) / wall, len(rows) / max(cpu, 1e-9), last


async def basic_section(state: Path) -> None:
    stack = await _started(state, models=False)
    try:
        big = _rows(100_000)
        print("1. Basic functions (in-process router, calls of 10,000 rows, aggregates included)")
        for fn_id in (
            "basic::equality",
            "basic::normalized_equality",
            "basic::subset_of",
            "basic::f1",
            "basic::regex_parser_multiple_choice_answer",
            "basic::regex_parser_math_response",
        ):
            await _throughput(stack, fn_id, big[:CHUNK])  # warm-up
            rate, per_cpu, aggregates = await _throughput(stack, fn_id, big)
            name, value = next(iter(aggregates.items()))
            target = (
                "  (target >= 20,000: " + ("pass" if rate >= 20_000 else "MISS") + ")"
                if fn_id == "basic::equality"
                else ""
            )
            print(
                f"   {fn_id:45s} {rate:>9,.0f} rows/s ({per_cpu:>9,.0f} per CPU-second) over {len(big):,} rows; "
                f"{name} {value[name]:.3f}{target}"
            )
        for fn_id in ("basic::bleu", "basic::rouge1", "basic::rouge_l"):
            rate, per_cpu, _ = await _throughput(stack, fn_id, big[:CHUNK])
            print(f"   {fn_id:45s} {rate:>9,.0f} rows/s ({per_cpu:>9,.0f} per CPU-second) over {CHUNK:,} rows")
    finally:
        await stack.stop()


def _kappa(judge: list[int], human: list[int]) -> tuple[float, float]:
    n = len(judge)
    agree = sum(1 for a, b in zip(judge, human, strict=True) if a == b) / n
    p_judge, p_human = sum(judge) / n, sum(human) / n
    expected = p_judge * p_human + (1 - p_judge) * (1 - p_human)
    return agree, (agree - expected) / (1 - expected) if expected < 1 else 0.0


def _ranks(values: list[float]) -> list[float]:
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def _spearman(a: list[float], b: list[float]) -> float:
    ra, rb = _ranks(a), _ranks(b)
    ma, mb = sum(ra) / len(ra), sum(rb) / len(rb)
    cov = sum((x - ma) * (y - mb) for x, y in zip(ra, rb, strict=True))
    var = (sum((x - ma) ** 2 for x in ra) * sum((y - mb) ** 2 for y in rb)) ** 0.5
    return cov / var


async def model_section(state: Path, pairs: int, judge_rows: int) -> None:
    started = time.perf_counter()
    stack = await _started(state, models=True)
    print(f"   (stack with Qwen 0.5B and MiniLM started in {time.perf_counter() - started:.1f} s)")
    router = stack.scoring_router
    assert router is not None
    try:
        half = judge_rows // 2
        chosen = QA[:half] + QA[8 : 8 + judge_rows - half]  # the first half right, the second wrong
        rows = [{"input_query": q, "expected_answer": e, "generated_answer": g} for q, e, g in chosen]
        await router.score_rows(rows[:1], {"llm-as-judge::correctness": None})  # warm-up
        start = time.perf_counter()
        result = (await router.score_rows(rows, {"llm-as-judge::correctness": None}))["llm-as-judge::correctness"]
        wall = time.perf_counter() - start
        prompt = sum(r.get("judge_usage", {}).get("prompt_tokens", 0) for r in result.score_rows)
        completion = sum(r.get("judge_usage", {}).get("completion_tokens", 0) for r in result.score_rows)
        truth = [1] * half + [0] * (len(rows) - half)
        right = sum(1 for r, t in zip(result.score_rows, truth, strict=True) if r["score"] == t)
        print(
            f"2. Judge throughput (llm-as-judge::correctness, Qwen2.5-Coder 0.5B, {len(rows)} rows, one call at a time)"
        )
        print(
            f"   {len(rows) / wall:.2f} rows/s; {(prompt + completion) / wall:.0f} judge tokens/s "
            f"({prompt / wall:.0f} prompt, {completion / wall:.1f} completion); {wall:.1f} s; "
            f"{right}/{len(rows)} verdicts right; {result.error_count} error rows; "
            f"verdicts {[r['score'] for r in result.score_rows]}"
        )

        data = [json.loads(line) for line in gzip.open(DATA, "rt")]
        rng = random.Random(SEED)
        similar = rng.sample([p for p in data if p["human"] >= 7], pairs // 2)
        unlike = rng.sample([p for p in data if p["human"] <= 3], pairs - pairs // 2)
        sample = similar + unlike
        human = [1] * len(similar) + [0] * len(unlike)
        judge_rows = [{"generated_answer": p["word1"], "expected_answer": p["word2"]} for p in sample]
        params: ScoringFnParams = LLMAsJudgeParams(
            prompt_template=SIMILAR_TEMPLATE,
            judge_score_regexes=[r"(?i)score\s*[:=]?\s*\**\s*([01])\b"],
            max_tokens=16,
        )
        start = time.perf_counter()
        judged = (await router.score_rows(judge_rows, {"llm-as-judge::base": params}))["llm-as-judge::base"]
        wall = time.perf_counter() - start
        kept = [(int(r["score"]), h) for r, h in zip(judged.score_rows, human, strict=True) if r["score"] in (0.0, 1.0)]
        accuracy, kappa = _kappa([k for k, _ in kept], [h for _, h in kept])
        print(f"3. Judge agreement with people: SimLex-999, {len(sample)} pairs (seed {SEED}; >=7 similar, <=3 not)")
        print(
            f"   Qwen 0.5B judge: accuracy {accuracy:.3f}, Cohen's kappa {kappa:.3f} over {len(kept)} judged pairs "
            f"({judged.error_count} without a parsable verdict); said 'similar' for {sum(k for k, _ in kept)}; "
            f"{wall:.1f} s"
        )
        all_rows = [{"generated_answer": p["word1"], "expected_answer": p["word2"]} for p in data]
        start = time.perf_counter()
        cosines = (await router.score_rows(all_rows, {"embedding::similarity": None}))["embedding::similarity"]
        wall = time.perf_counter() - start
        scores = [float(r["score"]) for r in cosines.score_rows]
        rho = _spearman(scores, [p["human"] for p in data])
        by_pair = {(p["word1"], p["word2"]): s for p, s in zip(data, scores, strict=True)}
        sample_scores = [by_pair[(p["word1"], p["word2"])] for p in sample]
        threshold = sorted(sample_scores)[len(sample_scores) // 2]
        accuracy, kappa = _kappa([int(s >= threshold) for s in sample_scores], human)
        print(
            f"   MiniLM embedding::similarity: Spearman {rho:.3f} with the human means over all 999 pairs "
            f"({len(data) / wall:.0f} rows/s); on the sample at its median cosine {threshold:.3f}: "
            f"accuracy {accuracy:.3f}, kappa {kappa:.3f}"
        )
    finally:
        await stack.stop()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--skip-models", action="store_true", help="basic functions only")
    parser.add_argument("--skip-basic", action="store_true", help="the model sections only")
    parser.add_argument("--pairs", type=int, default=60, help="SimLex pairs the judge sees")
    parser.add_argument("--judge-rows", type=int, default=16, choices=range(2, 17), metavar="2..16")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    print(f"load average before: {os.getloadavg()[0]:.2f}")
    with tempfile.TemporaryDirectory(prefix="bench-scoring-") as work:
        if not args.skip_basic:
            await basic_section(Path(work) / "basic")
        if not args.skip_models:
            await model_section(Path(work) / "models", args.pairs, args.judge_rows)
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    asyncio.run(main())
