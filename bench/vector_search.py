"""Vector search on every vector-io backend: insert chunks/s, search p50/p99 at concurrency 1 and 16, recall@10.

What it measures: 100,000 chunks of 384-dimensional unit vectors with cluster structure (fixed seed;
see ``make_vectors``), inserted in batches of 1,000 and then searched with held-out vectors from the
same distribution, k = 10. Each backend is driven through its provider class, in this process:
``create_provider(...)``, ``initialize()``, then ``create_index`` / ``insert_chunks`` / ``query`` with
``mode="vector"``, so the figures are the backend's own (no HTTP, no embedding model). Remote
backends talk to servers this script starts the way the integration tests do
(``tests/integration/vector_io/servers.py``: pgserver PostgreSQL + pgvector, ``chroma run``,
``milvus-lite server``); a backend whose package or server is unavailable is skipped with the reason.

Per backend it prints: insert chunks/s (time inside ``insert_chunks`` only), the first search (an
index loaded or built lazily pays here), search p50/p99 and queries/s at concurrency 1 and 16, and
recall@10 against exact search (numpy brute force over the same unit vectors).

Targets: vector search p50 <= 20 ms at concurrency 1 on the default backend (sqlite-vec);
recall@10 >= 0.95 on every approximate backend (the exact ones are shown with theirs, which should be 1.0).

    python bench/vector_search.py [--chunks 100000] [--backends local|all|sqlite-vec,faiss,...] [--quick]

By default it runs the backends of the ``local`` extra (sqlite-vec in memory and vec0 modes, faiss flat
and HNSW; about 4 minutes on a shared 2-core machine); ``--backends all`` runs every backend (about
26 minutes there at 100,000 chunks, most of it pgvector building its HNSW index row by row).
``--quick`` is 10,000 chunks and 50 queries. Exits 0 whatever the figures. ``--record`` / ``--check
[--tolerance 1.5]`` (``bench/_results.py``) keep and compare each backend's insert chunks/s, search p50 at
c=1, queries/s at c=16 and recall@10.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib.util
import os
import shutil
import sys
import tempfile
import time
import urllib.request
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))
from _common import percentile  # noqa: E402
from _results import HIGHER, LOWER, Guard  # noqa: E402

DIM = 384
K = 10
SEED = 20240611
CLUSTERS = 256
LATENT = 32
TARGET_P50_MS = 20.0
TARGET_RECALL = 0.95


def make_vectors(n: int, queries: int, seed: int = SEED) -> tuple[np.ndarray, np.ndarray]:
    """``n`` corpus vectors and ``queries`` held-out query vectors, float32, unit length.

    Embedding-like rather than uniform: 256 random unit cluster centres; each vector is its
    cluster's centre plus 0.8 x an offset in a shared 32-dimensional random subspace plus 0.3 x
    isotropic noise, then normalised. Queries are drawn the same way with another seed, so they
    are new points near the corpus, not copies of it. (Nearest-neighbour cosines come out at about
    0.62 for the 1st and 0.55 for the 10th neighbour; most pairs are near 0.)"""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((CLUSTERS, DIM)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    basis = (rng.standard_normal((LATENT, DIM)) / np.sqrt(LATENT)).astype(np.float32)

    def draw(m: int, r: np.random.Generator) -> np.ndarray:
        out = np.empty((m, DIM), dtype=np.float32)
        for start in range(0, m, 20_000):
            size = min(20_000, m - start)
            cluster = r.integers(0, CLUSTERS, size)
            offset = (r.standard_normal((size, LATENT)).astype(np.float32) / np.sqrt(LATENT)) @ basis
            noise = r.standard_normal((size, DIM)).astype(np.float32) / np.sqrt(DIM)
            x = centres[cluster] + 0.8 * offset + 0.3 * noise
            out[start : start + size] = x / np.linalg.norm(x, axis=1, keepdims=True)
        return out

    return draw(n, np.random.default_rng(seed + 1)), draw(queries, np.random.default_rng(seed + 2))


def exact_top_k(corpus: np.ndarray, queries: np.ndarray, k: int = K) -> list[set[int]]:
    """The true top-k (by cosine similarity) of each query: numpy brute force, in blocks."""
    truth: list[set[int]] = []
    for start in range(0, len(queries), 64):
        scores = queries[start : start + 64] @ corpus.T
        top = np.argpartition(-scores, k, axis=1)[:, :k]
        truth.extend(set(map(int, row)) for row in top)
    return truth


# ---------------------------------------------------------------------------------------------------
# Backends
# ---------------------------------------------------------------------------------------------------


class Skip(Exception):
    """A backend that cannot run here; the message says why."""


def _need(*modules: str) -> None:
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise Skip(f"python package(s) not installed: {', '.join(missing)} (pip install 'underlay[vector]')")


def _provider_module(api_path: str) -> Any:
    try:
        return importlib.import_module(api_path)
    except ImportError as exc:
        raise Skip(f"{api_path} is not importable ({exc})") from None


async def _open(module: Any, provider_id: str, config: Any) -> Any:
    provider = await module.create_provider(provider_id, config, {})
    await provider.initialize()
    return provider


def _servers() -> Any:
    from tests.integration.vector_io.servers import SERVERS

    return SERVERS


def _start_server(what: str, start: Callable[[], Any]) -> Any:
    """Start a test server; its helpers fail with ``pytest.fail`` (a BaseException) when they cannot."""
    try:
        return start()
    except Exception as exc:  # noqa: BLE001 - any reason to be unavailable is a skip
        raise Skip(f"{what} did not start: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
    except BaseException as exc:  # pytest.fail's Failed derives from BaseException
        if isinstance(exc, KeyboardInterrupt | SystemExit):
            raise
        raise Skip(f"{what} did not start: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None


async def open_sqlite_vec(path: Path) -> Any:
    _need("sqlite_vec")
    m = _provider_module("underlay.providers.inline.vector_io.sqlite_vec")
    return await _open(m, "sqlite-vec", m.Config(db_path=str(path / "sqlite_vec.db")))


async def open_sqlite_vec_vec0(path: Path) -> Any:
    _need("sqlite_vec")
    m = _provider_module("underlay.providers.inline.vector_io.sqlite_vec")
    return await _open(m, "sqlite-vec", m.Config(db_path=str(path / "sqlite_vec.db"), memory_index=False))


async def open_faiss(path: Path) -> Any:
    _need("faiss")
    m = _provider_module("underlay.providers.inline.vector_io.faiss")
    return await _open(m, "faiss", m.Config(persist_dir=str(path / "faiss")))


async def open_faiss_hnsw(path: Path) -> Any:
    _need("faiss")
    m = _provider_module("underlay.providers.inline.vector_io.faiss")
    return await _open(m, "faiss", m.Config(persist_dir=str(path / "faiss"), index_type="hnsw"))


def _postgres_dsn() -> str:
    if os.environ.get("UNDERLAY_BENCH_PG_DSN"):
        return os.environ["UNDERLAY_BENCH_PG_DSN"]
    _need("pgserver", "asyncpg")
    return str(_start_server("pgserver PostgreSQL", lambda: _servers().postgres()).uri)


async def open_pgvector(path: Path) -> Any:
    _need("asyncpg")
    m = _provider_module("underlay.providers.remote.vector_io.pgvector")
    return await _open(m, "pgvector", m.Config(dsn=_postgres_dsn()))


async def open_pgvector_exact(path: Path) -> Any:
    _need("asyncpg")
    m = _provider_module("underlay.providers.remote.vector_io.pgvector")
    return await _open(m, "pgvector", m.Config(dsn=_postgres_dsn(), ann="exact"))


async def open_qdrant(path: Path) -> Any:
    _need("qdrant_client")
    m = _provider_module("underlay.providers.vector_io.qdrant.inline")
    return await _open(m, "qdrant", m.Config(path=str(path / "qdrant")))


async def open_qdrant_remote(path: Path) -> Any:
    _need("qdrant_client")
    url = os.environ.get("UNDERLAY_BENCH_QDRANT_URL")
    if not url:
        raise Skip(
            "no Qdrant server here (none ships with a Python package); set UNDERLAY_BENCH_QDRANT_URL=http://host:6333"
        )
    try:
        await asyncio.to_thread(lambda: urllib.request.urlopen(f"{url.rstrip('/')}/readyz", timeout=3).close())
    except OSError as exc:
        raise Skip(f"the Qdrant server at {url} does not answer ({exc})") from None
    m = _provider_module("underlay.providers.vector_io.qdrant.remote")
    return await _open(m, "qdrant-remote", m.Config(url=url, keyword_db_path=str(path / "keyword.db")))


async def open_chromadb(path: Path) -> Any:
    _need("chromadb")
    m = _provider_module("underlay.providers.vector_io.chromadb.inline")
    return await _open(m, "chromadb", m.Config(path=str(path / "chroma")))


async def open_chromadb_remote(path: Path) -> Any:
    _need("chromadb")
    m = _provider_module("underlay.providers.vector_io.chromadb.remote")
    server = _start_server("the Chroma server (chroma run)", lambda: _servers().chroma())
    url = f"http://{server.host}:{server.port}"
    return await _open(m, "chromadb-remote", m.Config(url=url, keyword_db_path=str(path / "keyword.db")))


async def open_milvus(path: Path) -> Any:
    _need("pymilvus", "milvus_lite")
    m = _provider_module("underlay.providers.vector_io.milvus.inline")
    return await _open(m, "milvus", m.Config(db_path=str(path / "milvus.db")))


async def open_milvus_remote(path: Path) -> Any:
    _need("pymilvus", "milvus_lite")
    m = _provider_module("underlay.providers.vector_io.milvus.remote")
    server = _start_server("the Milvus Lite server (milvus-lite server)", lambda: _servers().milvus())
    return await _open(m, "milvus-remote", m.Config(uri=server.uri, keyword_db_path=str(path / "keyword.db")))


@dataclass(frozen=True)
class Backend:
    name: str
    provider_type: str
    search: str  # "exact" or "approximate": how this configuration answers vector queries
    open: Callable[[Path], Awaitable[Any]]


BACKENDS = [
    Backend("sqlite-vec", "inline::sqlite-vec (memory_index, the default)", "exact", open_sqlite_vec),
    Backend("sqlite-vec-vec0", "inline::sqlite-vec memory_index: false (vec0 scan)", "exact", open_sqlite_vec_vec0),
    Backend("faiss", "inline::faiss index_type: flat", "exact", open_faiss),
    Backend("faiss-hnsw", "inline::faiss index_type: hnsw (defaults)", "approximate", open_faiss_hnsw),
    Backend("pgvector", "remote::pgvector ann: hnsw (defaults) on pgserver", "approximate", open_pgvector),
    Backend("pgvector-exact", "remote::pgvector ann: exact on pgserver", "exact", open_pgvector_exact),
    Backend("qdrant", "inline::qdrant (qdrant-client local mode)", "exact", open_qdrant),
    Backend("qdrant-remote", "remote::qdrant (HNSW, defaults)", "approximate", open_qdrant_remote),
    Backend("chromadb", "inline::chromadb (persistent client, HNSW defaults)", "approximate", open_chromadb),
    Backend("chromadb-remote", "remote::chromadb on chroma run (HNSW defaults)", "approximate", open_chromadb_remote),
    Backend("milvus", "inline::milvus (Milvus Lite, FLAT)", "exact", open_milvus),
    Backend("milvus-remote", "remote::milvus on milvus-lite server (HNSW defaults)", "approximate", open_milvus_remote),
]
# The default selection: the embedded backends of ``pip install 'underlay[local]'`` (sqlite-vec, faiss), about
# 4 minutes at 100,000 chunks on a shared 2-core machine. ``--backends all`` adds the ``vector`` extra's
# (pgvector, qdrant, chromadb, milvus): about 26 minutes there, most of it pgvector's HNSW insertion.
LOCAL = ["sqlite-vec", "sqlite-vec-vec0", "faiss", "faiss-hnsw"]


# ---------------------------------------------------------------------------------------------------
# The measurement
# ---------------------------------------------------------------------------------------------------


def chunk_batch(vectors: np.ndarray, start: int) -> list[Any]:
    from underlay.api.vector_io import Chunk

    return [
        Chunk(
            chunk_id=f"c{start + i:07d}",
            document_id=f"d{(start + i) // 100:05d}",
            content=f"synthetic chunk {start + i}",
            embedding=row.tolist(),
        )
        for i, row in enumerate(vectors)
    ]


async def search_phase(
    provider: Any, index_id: str, queries: np.ndarray, concurrency: int, total: int, seconds: float
) -> tuple[list[float], dict[int, list[int]], float]:
    """Run ``total`` searches (cycling through ``queries``) with ``concurrency`` callers, stopping new
    ones after ``seconds``. Returns the latencies, per query index the ids of its last answer, and the
    phase's wall time."""
    latencies: list[float] = []
    answers: dict[int, list[int]] = {}
    as_lists = [q.tolist() for q in queries]
    counter = iter(range(total))
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        for n in counter:
            if time.perf_counter() > deadline:
                return
            qi = n % len(as_lists)
            start = time.perf_counter()
            hits = await provider.query(index_id, mode="vector", k=K, embedding=as_lists[qi])
            latencies.append(time.perf_counter() - start)
            answers[qi] = [int(h.chunk.chunk_id[1:]) for h in hits]

    began = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies, answers, time.perf_counter() - began


async def run_backend(
    backend: Backend, corpus: np.ndarray, queries: np.ndarray, truth: list[set[int]], args: argparse.Namespace
) -> dict[str, Any]:
    path = Path(tempfile.mkdtemp(prefix=f"underlay-bench-vs-{backend.name}-"))
    provider = None
    try:
        provider = await backend.open(path)
        index_id = f"vs_bench_{backend.name.replace('-', '_')}_{os.getpid()}"
        await provider.create_index(index_id, DIM)
        insert_s = 0.0
        wall = time.perf_counter()
        for start in range(0, len(corpus), args.batch):
            chunks = chunk_batch(corpus[start : start + args.batch], start)
            t0 = time.perf_counter()
            await provider.insert_chunks(index_id, chunks)
            insert_s += time.perf_counter() - t0
        wall = time.perf_counter() - wall
        t0 = time.perf_counter()
        await provider.query(index_id, mode="vector", k=K, embedding=queries[0].tolist())
        first = time.perf_counter() - t0
        for q in queries[1:4]:  # warm
            await provider.query(index_id, mode="vector", k=K, embedding=q.tolist())
        lat1, answers, wall1 = await search_phase(provider, index_id, queries, 1, len(queries), args.phase_seconds)
        total16 = max(16 * 20, len(queries))
        lat16, _, wall16 = await search_phase(provider, index_id, queries, 16, total16, args.phase_seconds)
        recalls = [len(truth[qi] & set(ids)) / K for qi, ids in answers.items()]
        try:
            await provider.delete_index(index_id)
        except Exception:  # noqa: BLE001 - the directory is removed anyway
            pass
        return {
            "insert_cps": len(corpus) / insert_s,
            "insert_wall": wall,
            "first_ms": first * 1000,
            "c1": lat1,
            "c16": lat16,
            "qps1": len(lat1) / wall1,
            "qps16": len(lat16) / wall16,
            "recall": float(np.mean(recalls)) if recalls else float("nan"),
            "recall_n": len(recalls),
        }
    finally:
        if provider is not None:
            await provider.shutdown()
        shutil.rmtree(path, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, default=100_000)
    parser.add_argument(
        "--backends",
        default="local",
        help="comma-separated names and groups: 'local' (the default: the backends of the local extra, "
        "sqlite-vec and faiss), 'all', or any of " + ", ".join(b.name for b in BACKENDS),
    )
    parser.add_argument("--queries", type=int, default=200, help="distinct query vectors (recall is over these)")
    parser.add_argument("--batch", type=int, default=1000, help="chunks per insert_chunks call")
    parser.add_argument("--phase-seconds", type=float, default=30.0, help="stop starting searches after this long")
    parser.add_argument("--quick", action="store_true", help="10,000 chunks, 50 queries")
    Guard.add_arguments(parser)
    args = parser.parse_args()
    guard = Guard("vector_search", args)
    if args.quick:
        args.chunks, args.queries = min(args.chunks, 10_000), min(args.queries, 50)
    wanted = [b.strip() for b in args.backends.split(",") if b.strip()]
    known = {b.name: b for b in BACKENDS}
    groups = {"all": [b.name for b in BACKENDS], "local": LOCAL}
    unknown = [w for w in wanted if w not in groups and w not in known]
    if unknown:
        parser.error(f"unknown backend(s) {', '.join(unknown)}; choose from all, local, {', '.join(known)}")
    names = {n for w in wanted for n in groups.get(w, [w])}
    selected = [b for b in BACKENDS if b.name in names]

    os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")
    t0 = time.perf_counter()
    corpus, queries = make_vectors(args.chunks, args.queries)
    truth = exact_top_k(corpus, queries)
    print(
        f"vector search: {args.chunks:,} chunks x {DIM} dims ({CLUSTERS} clusters, seed {SEED}, made in "
        f"{time.perf_counter() - t0:.1f} s), {args.queries} held-out queries, k = {K}, inserts of {args.batch}"
    )
    print(
        "figures are the backend's own: each provider is driven in this process through create_provider(), "
        "create_index(), insert_chunks() and query(mode='vector') (no HTTP, no embedding model)"
    )
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} (shared: compare within one run)")
    print()
    print(
        f"{'backend':<17}{'search':<7}{'insert/s':>10}{'1st ms':>9}{'c=1 p50':>9}{'p99':>8}{'q/s':>7}"
        f"{'c=16 p50':>10}{'p99':>8}{'q/s':>7}{'recall@10':>11}"
    )
    results: dict[str, dict[str, Any]] = {}
    try:
        for backend in selected:
            try:
                r = asyncio.run(run_backend(backend, corpus, queries, truth, args))
            except Skip as exc:
                print(f"{backend.name:<17}skipped: {exc}", flush=True)
                continue
            except Exception as exc:  # noqa: BLE001 - report and go on with the other backends
                print(f"{backend.name:<17}FAILED: {type(exc).__name__}: {str(exc)[:300]}", flush=True)
                continue
            finally:
                gc.collect()
            results[backend.name] = r
            c1, c16 = r["c1"], r["c16"]
            print(
                f"{backend.name:<17}{backend.search[:6]:<7}{r['insert_cps']:>10,.0f}{r['first_ms']:>9.0f}"
                f"{percentile(c1, 50) * 1000:>9.1f}{percentile(c1, 99) * 1000:>8.1f}{r['qps1']:>7.0f}"
                f"{percentile(c16, 50) * 1000:>10.1f}{percentile(c16, 99) * 1000:>8.1f}{r['qps16']:>7.0f}"
                f"{r['recall']:>11.3f}",
                flush=True,
            )
            if len(c1) < len(queries):
                print(f"{'':<17}(c=1 stopped after {args.phase_seconds:.0f} s: {len(c1)} searches)")
    finally:
        if "tests.integration.vector_io.servers" in sys.modules:
            sys.modules["tests.integration.vector_io.servers"].SERVERS.stop_all()
    print()
    print("backends: " + "; ".join(f"{b.name} = {b.provider_type}" for b in selected))
    print("insert/s: chunks per second inside insert_chunks; 1st ms: the first search after inserting (lazy loads);")
    print("p50/p99 in ms; q/s: searches completed per second at that concurrency; recall@10 vs numpy brute force")
    print()
    if "sqlite-vec" in results:
        p50 = percentile(results["sqlite-vec"]["c1"], 50) * 1000
        verdict = "PASS" if p50 <= TARGET_P50_MS else "MISS"
        print(f"target: sqlite-vec (default) search p50 at c=1 {p50:.1f} ms <= {TARGET_P50_MS:.0f} ms: {verdict}")
    else:
        print("target: sqlite-vec (default) search p50: not measured in this run")
    for backend in selected:
        if backend.name in results and backend.search == "approximate":
            recall = results[backend.name]["recall"]
            verdict = "PASS" if recall >= TARGET_RECALL else "MISS"
            print(f"target: {backend.name} recall@10 {recall:.3f} >= {TARGET_RECALL}: {verdict}")
    exact_low = [
        f"{b.name} {results[b.name]['recall']:.3f}"
        for b in selected
        if b.name in results and b.search == "exact" and results[b.name]["recall"] < 0.999
    ]
    if exact_low:
        print(f"note: exact backends below recall 1.0: {', '.join(exact_low)}")
    for name, r in results.items():
        guard.figure(f"{name} insert", r["insert_cps"], "chunks/s", HIGHER, wall=True)
        guard.figure(f"{name} search c=1 p50", percentile(r["c1"], 50) * 1000, "ms", LOWER, wall=True)
        guard.figure(f"{name} search c=16", r["qps16"], "queries/s", HIGHER, wall=True)
        guard.figure(f"{name} recall@10", r["recall"], "fraction", HIGHER)
    return guard.finish()


if __name__ == "__main__":
    sys.exit(main())
