"""Retrieval quality of vector store search: nDCG@10 and recall@10 for vector, keyword and hybrid modes.

What it measures: a real Underlay server (embedded all-MiniLM-L6-v2, Files on local disk, sqlite-vec,
Vector Stores) is given 293 documents, the docstrings of the Python standard library built by
``bench/data/stdlib_docs.py``, uploaded with the ``openai`` SDK and attached to one vector store
(static chunks of 200 tokens overlapping by 50). The 80 hand-written queries of
``bench/data/retrieval_queries.json`` (40 that need exact terms: identifiers, flags, rare words;
40 paraphrases that avoid the answer's wording) are searched in each mode through
``POST /v1/vector_stores/{id}/search``. Results are chunks; a document ranks where its best chunk
ranks, and the first 10 distinct documents are scored against the graded judgments (2: answers it,
1: a sibling that partly does). ``bench/data/README.md`` explains how the corpus and the judgments
were made.

The judged queries are split once into a tuning half and a held-out half (``split_queries``: seed
``SPLIT_SEED``, stratified so each half has 20 exact and 20 paraphrase queries). Fusion settings may
only be chosen by looking at the tuning half; every mode prints both halves, and the held-out half is
the figure to quote.

Target: hybrid with the default options (RRF with k = 60, fusing only the keyword hits that contain
every content word of the query: ``keyword_match: all``, see ``underlay/providers/utils/vector/fusion.py``)
has a higher mean nDCG@10 than vector alone and than keyword alone, on the held-out half and on all
queries. The other variants (every keyword hit fused, as before; RRF k 10/100; weighted fusion) are
printed for information; they are not used to pick the verdict.

    python bench/retrieval_quality.py [--quick] [--chunk-tokens 200] [--overlap 50]

``--quick`` skips the variants. Exits 0 whatever the figures. Vector and keyword figures repeat
exactly from run to run; hybrid ones can move by about 0.005, because fused scores often tie (ranks 1 and 3
score the same as ranks 3 and 1) and ties are broken by chunk id, which holds the run's random file id.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import re
import shutil
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from statistics import mean
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE / "data"))
from _vector_stores import machine_line, start, wait_batch  # noqa: E402
from stdlib_docs import build_corpus, digest  # noqa: E402

QUERIES = HERE / "data" / "retrieval_queries.json"
K = 10
FETCH = 50  # chunks asked for, so that 10 distinct documents are nearly always there
SPLIT_SEED = 20251125  # fixed before any fusion setting was compared; never re-drawn
STOPWORDS = set(
    "a an the of to and or in on at for by with is are be it its that this what how do does from into as which "
    "who can my your some every each one all".split()
)


def load_queries(doc_ids: set[str]) -> tuple[list[dict[str, Any]], list[str]]:
    """The judged queries, with judgments of documents this Python lacks dropped (and reported)."""
    queries, missing = [], []
    for q in json.loads(QUERIES.read_text())["queries"]:
        relevant = {d: g for d, g in q["relevant"].items() if d in doc_ids}
        missing += [f"{q['id']}:{d}" for d in q["relevant"] if d not in doc_ids]
        if relevant:
            queries.append({**q, "relevant": relevant})
    return queries, missing


def split_queries(queries: list[dict[str, Any]], seed: int = SPLIT_SEED) -> set[str]:
    """The ids of the tuning half: per kind, the query ids sorted, shuffled with ``seed``, first half."""
    tuning: set[str] = set()
    for kind in sorted({q["kind"] for q in queries}):
        ids = sorted(q["id"] for q in queries if q["kind"] == kind)
        random.Random(seed).shuffle(ids)
        tuning.update(ids[: len(ids) // 2])
    return tuning


def ndcg(ranked: list[str], relevant: dict[str, int], k: int = K) -> float:
    dcg = sum((2 ** relevant.get(d, 0) - 1) / math.log2(i + 2) for i, d in enumerate(ranked[:k]))
    ideal = sorted(relevant.values(), reverse=True)[:k]
    idcg = sum((2**g - 1) / math.log2(i + 2) for i, g in enumerate(ideal))
    return dcg / idcg if idcg else 0.0


def recall(ranked: list[str], relevant: dict[str, int], k: int = K) -> float:
    return len(set(ranked[:k]) & set(relevant)) / len(relevant)


def lexical_overlap(query: str, text: str) -> float:
    """Share of the query's content words (lower-cased, stopwords dropped) that occur in ``text``."""

    def words(s: str) -> set[str]:
        return {w for w in re.findall(r"[a-z0-9]+", s.lower()) if w not in STOPWORDS}

    q = words(query)
    return len(q & words(text)) / len(q) if q else 0.0


def search_all(
    client: Any, store_id: str, queries: list[dict[str, Any]], names: dict[str, str], mode: str, ranking: Any
) -> dict[str, list[str]]:
    """query id -> the first K distinct documents returned, best first."""

    def one(q: dict[str, Any]) -> tuple[str, list[str]]:
        body: dict[str, Any] = {"search_mode": mode}
        if ranking is not None:
            body["ranking_options"] = ranking
        page = client.vector_stores.search(store_id, query=q["query"], max_num_results=FETCH, extra_body=body)
        ranked: list[str] = []
        for hit in page.data:
            doc = names[hit.file_id]
            if doc not in ranked:
                ranked.append(doc)
        return q["id"], ranked[:K]

    with ThreadPoolExecutor(4) as pool:
        return dict(pool.map(one, queries))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="skip the ranker variants")
    parser.add_argument("--chunk-tokens", type=int, default=200)
    parser.add_argument("--overlap", type=int, default=50)
    args = parser.parse_args()

    docs = build_corpus()
    by_id = {d.doc_id: d for d in docs}
    queries, missing = load_queries(set(by_id))
    kinds = sorted({q["kind"] for q in queries})
    print(
        f"retrieval quality: {len(docs)} stdlib docstring documents (Python {sys.version.split()[0]}, "
        f"digest {digest(docs)}), {len(queries)} judged queries "
        + ", ".join(f"{sum(q['kind'] == k for q in queries)} {k}" for k in kinds)
    )
    if missing:
        print(f"  judged documents missing from this Python's corpus (judgments dropped): {', '.join(missing)}")
    for kind in kinds:
        overlap = mean(
            lexical_overlap(q["query"], by_id[max(q["relevant"], key=q["relevant"].get)].text)
            for q in queries
            if q["kind"] == kind
        )
        print(f"  {kind:<11} queries: {overlap:.0%} of their content words occur in the best judged document")
    print(machine_line())

    workdir = Path(tempfile.mkdtemp(prefix="underlay-bench-rq-"))
    server = start(workdir)
    try:
        client = server.openai(timeout=300)
        t0 = time.perf_counter()
        with ThreadPoolExecutor(4) as pool:
            uploaded = list(
                pool.map(
                    lambda d: client.files.create(file=(f"{d.doc_id}.txt", d.text.encode()), purpose="assistants"), docs
                )
            )
        names = {f.id: d.doc_id for f, d in zip(uploaded, docs, strict=True)}
        chunking = {
            "type": "static",
            "static": {"max_chunk_size_tokens": args.chunk_tokens, "chunk_overlap_tokens": args.overlap},
        }
        store = client.vector_stores.create(name="stdlib-docs", chunking_strategy=chunking)
        batch = client.vector_stores.file_batches.create(store.id, file_ids=list(names), chunking_strategy=chunking)
        batch = wait_batch(client, store.id, batch.id)
        counts = batch.file_counts
        print(
            f"ingested {counts.completed}/{counts.total} files in {time.perf_counter() - t0:.1f} s "
            f"(static chunks of {args.chunk_tokens} tokens, overlap {args.overlap}); failed {counts.failed}"
        )
        print()

        default_label = "hybrid (default)"
        runs: list[tuple[str, str, Any]] = [
            ("vector", "vector", None),
            ("keyword", "keyword", None),
            (default_label, "hybrid", None),
        ]
        if not args.quick:
            runs += [
                ("hybrid rrf k=60 match=any", "hybrid", {"ranker": "rrf", "keyword_match": "any"}),
                ("hybrid rrf k=10", "hybrid", {"ranker": "rrf", "rrf_k": 10}),
                ("hybrid rrf k=100", "hybrid", {"ranker": "rrf", "rrf_k": 100}),
            ]
            for v, w in ((0.5, 0.5), (0.7, 0.3)):
                for match in ("all", "any"):
                    weighted = {"ranker": "weighted", "vector_weight": v, "keyword_weight": w, "keyword_match": match}
                    runs.append((f"hybrid weighted {v}/{w} match={match}", "hybrid", weighted))
        tuning = split_queries(queries)
        subsets = {
            "all": [q["id"] for q in queries],
            **{kind: [q["id"] for q in queries if q["kind"] == kind] for kind in kinds},
            "tune": [q["id"] for q in queries if q["id"] in tuning],
            "held": [q["id"] for q in queries if q["id"] not in tuning],
        }
        print(
            f"split (seed {SPLIT_SEED}, stratified by kind): tuning half {len(subsets['tune'])} queries, "
            f"held-out half {len(subsets['held'])}"
        )
        header = f"{'mode':<36}" + "".join(f"{'nDCG ' + name[:5]:>11}{'R@10 ' + name[:5]:>11}" for name in subsets)
        print(header)
        per_query: dict[str, dict[str, float]] = {}
        scores: dict[str, dict[str, float]] = {}
        for label, mode, ranking in runs:
            ranked = search_all(client, store.id, queries, names, mode, ranking)
            n = {q["id"]: ndcg(ranked[q["id"]], q["relevant"]) for q in queries}
            r = {q["id"]: recall(ranked[q["id"]], q["relevant"]) for q in queries}
            per_query[label] = n
            scores[label] = {name: mean(n[i] for i in ids) for name, ids in subsets.items()}
            row = f"{label:<36}"
            for ids in subsets.values():
                row += f"{mean(n[i] for i in ids):>11.3f}{mean(r[i] for i in ids):>11.3f}"
            print(row, flush=True)
        print()

        hybrid = per_query[default_label]
        for other in ("vector", "keyword"):
            wins = sum(hybrid[i] > per_query[other][i] + 1e-9 for i in hybrid)
            losses = sum(hybrid[i] < per_query[other][i] - 1e-9 for i in hybrid)
            print(
                f"  hybrid vs {other:<8} per query: better on {wins}, worse on {losses}, equal on "
                f"{len(hybrid) - wins - losses}"
            )
        for half in ("held", "all"):
            got = scores[default_label][half]
            vec, kw = scores["vector"][half], scores["keyword"][half]
            verdict = "PASS" if got > max(vec, kw) else "MISS"
            name = "held-out half" if half == "held" else "all queries"
            print(f"target ({name}): hybrid nDCG@10 {got:.3f} > vector {vec:.3f} and > keyword {kw:.3f}: {verdict}")
        if not args.quick:
            variants = [label for label, _, _ in runs if label.startswith("hybrid")]
            best = max(variants, key=lambda label: scores[label]["tune"])
            print(
                f"  (best hybrid variant on the tuning half, informational: {best} at {scores[best]['tune']:.3f}; "
                f"held-out {scores[best]['held']:.3f})"
            )
    finally:
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
