"""The engine shared by the embedded backends: SQLite is the source of truth, memory makes it fast.

Per index, one SQLite database holds the chunks, their FTS5 keyword index (``keyword.ChunkTable``)
and their unit vectors (a sqlite-vec ``vec0`` table, or a BLOB table beside faiss), all changed in
one transaction, so a crash never leaves a chunk without its vector or its keyword entry. A registry
table records each index's dimension and a *generation* bumped by every write.

Vector search runs on an in-memory searcher (numpy or faiss) when the backend has one. It is loaded
lazily and kept current two ways:

- writes made by this process are applied to it right after they commit;
- before each search, the index's generation is read; if another process (a second worker on the
  same file) has written since, the searcher is reconciled with the database by id sets. Row ids are
  never reused and a row's vector never changes (an upsert is a new row), so "ids in the database
  but not in memory" and the reverse are exactly what to load and drop.

A backend without a searcher answers vector search in SQL instead (sqlite-vec's ``vec0`` KNN).
Filters are pushed into SQL as a set of allowed row ids; ``exclude_documents`` alone becomes a short
deny list found through the ``document_id`` index, because excluding the few documents still being
ingested must not cost a scan of every chunk on each query.
"""

from __future__ import annotations

import threading
import uuid
from abc import abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from underlay.api.vector_io import Chunk, Filter, IndexInfo, ScoredChunk
from underlay.providers.utils.vector.base import (
    VectorIOBase,
    check_chunks,
    check_embedding,
    dimension_conflict,
    not_found,
    sanitize_index_name,
    validate_dimension,
)
from underlay.providers.utils.vector.keyword import ChunkTable
from underlay.providers.utils.vector.sqlite import Connection, SqliteDatabase

if TYPE_CHECKING:
    from underlay.providers.utils.vector.memindex import IdArray, VectorArray, VectorSearcher

# numpy (through memindex) is imported by the methods that need it, on the first write or vector search:
# the local distribution opens this backend at every start, most of which never touch a vector.

REGISTRY = "underlay_vector_indexes"
_REGISTRY_SQL = (
    f"CREATE TABLE IF NOT EXISTS {REGISTRY} (index_id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, "
    "dimension INTEGER NOT NULL, generation INTEGER NOT NULL DEFAULT 0, token TEXT NOT NULL)"
)


@dataclass(frozen=True)
class IndexMeta:
    """One row of the registry. ``token`` changes when an index is deleted and created again."""

    index_id: str
    name: str
    dimension: int
    generation: int
    token: str

    @property
    def table(self) -> ChunkTable:
        return ChunkTable(self.name)


@dataclass
class LoadedIndex:
    """An index's in-memory searcher and the generation of the database state it reflects."""

    meta: IndexMeta
    searcher: VectorSearcher
    generation: int = -1  # -1: never reconciled
    lock: threading.Lock = field(default_factory=threading.Lock)
    dirty: bool = False  # changed since last persisted (for backends that persist searchers)
    saved_at: float = 0.0  # time.monotonic() of the last save


class SqliteVectorIO(VectorIOBase):
    """A ``VectorIOProvider`` over one SQLite database; subclasses say where vectors live and how to search them."""

    def __init__(self, provider_id: str, db: SqliteDatabase) -> None:
        self.provider_id = provider_id
        self._db = db
        self._loaded: dict[str, LoadedIndex] = {}
        self._loaded_lock = threading.Lock()
        self._dimensions: dict[str, int] = {}

    # ---- hooks ------------------------------------------------------------------------------------

    @abstractmethod
    def _create_vectors(self, conn: Connection, meta: IndexMeta) -> None:
        """Create the index's vector storage."""

    @abstractmethod
    def _drop_vectors(self, conn: Connection, meta: IndexMeta) -> None:
        """Drop the index's vector storage."""

    @abstractmethod
    def _store_vectors(self, conn: Connection, meta: IndexMeta, rowids: Sequence[int], vectors: VectorArray) -> None:
        """Store unit vectors for new row ids."""

    @abstractmethod
    def _delete_vectors(self, conn: Connection, meta: IndexMeta, rowids: Sequence[int]) -> None:
        """Delete the vectors of removed row ids."""

    @abstractmethod
    def _load_vectors(self, conn: Connection, meta: IndexMeta, rowids: IdArray | None) -> tuple[IdArray, VectorArray]:
        """Stored vectors for these row ids (all when None), as ``(ids, unit vectors)``."""

    def _new_searcher(self, meta: IndexMeta) -> VectorSearcher | None:
        """A fresh in-memory searcher for the index, or None to search in SQL with ``_sql_knn``."""
        return None

    def _sql_knn(
        self,
        conn: Connection,
        meta: IndexMeta,
        query: VectorArray,
        k: int,
        filters: Filter | None,
        exclude_documents: list[str],
    ) -> list[tuple[int, float]]:
        """Top-k ``(rowid, cosine similarity)`` computed by the database (backends without a searcher)."""
        raise NotImplementedError

    def _searcher_changed(self, loaded: LoadedIndex) -> None:
        """Called (holding ``loaded.lock``) after the searcher changed; faiss persists from here."""

    def _searcher_dropped(self, meta: IndexMeta) -> None:
        """Called after an index was deleted (its searcher is gone); faiss removes its file here."""

    # ---- lifecycle --------------------------------------------------------------------------------

    async def initialize(self) -> None:
        await self._db.open()
        await self._db.run(lambda conn: conn.execute(_REGISTRY_SQL))

    async def shutdown(self) -> None:
        await self._db.close()
        with self._loaded_lock:
            self._loaded.clear()

    def loaded_indexes(self) -> list[LoadedIndex]:
        """The searchers loaded so far (a snapshot of the list)."""
        with self._loaded_lock:
            return list(self._loaded.values())

    # ---- registry ---------------------------------------------------------------------------------

    @staticmethod
    def _meta(conn: Connection, index_id: str) -> IndexMeta:
        row = conn.execute(
            f"SELECT name, dimension, generation, token FROM {REGISTRY} WHERE index_id = ?", (index_id,)
        ).fetchone()
        if row is None:
            raise not_found(index_id)
        return IndexMeta(index_id, row[0], int(row[1]), int(row[2]), row[3])

    @staticmethod
    def _bump(conn: Connection, meta: IndexMeta) -> int:
        conn.execute(f"UPDATE {REGISTRY} SET generation = generation + 1 WHERE index_id = ?", (meta.index_id,))
        return meta.generation + 1

    async def _index_dimension(self, index_id: str) -> int:
        """From a cache when possible: this runs before every query, and a thread hop is not free.

        A stale entry (the index deleted, or re-created with another dimension, by another process)
        is harmless: every operation re-reads the registry in its own transaction and raises
        NotFoundError or rejects the embedding there.
        """
        dimension = self._dimensions.get(index_id)
        if dimension is None:
            dimension = await self._db.run(lambda conn: self._meta(conn, index_id).dimension)
            self._dimensions[index_id] = dimension
        return dimension

    def _forget_index(self, index_id: str) -> None:
        self._dimensions.pop(index_id, None)

    async def index_info(self, index_id: str) -> IndexInfo:
        """Dimension and chunk count of an index (NotFoundError if there is none)."""

        def do(conn: Connection) -> IndexInfo:
            with self._db.reading(conn):
                meta = self._meta(conn, index_id)
                return IndexInfo(index_id=index_id, dimension=meta.dimension, chunk_count=meta.table.count(conn))

        return await self._db.run(do)

    async def create_index(self, index_id: str, dimension: int) -> None:
        """Create an index; creating it again with the same dimension is a no-op, another is a conflict."""
        validate_dimension(dimension)

        def do(conn: Connection) -> None:
            with self._db.writing(conn):
                row = conn.execute(f"SELECT dimension FROM {REGISTRY} WHERE index_id = ?", (index_id,)).fetchone()
                if row is not None:
                    if int(row[0]) != dimension:
                        raise dimension_conflict(index_id, int(row[0]), dimension)
                    return
                meta = IndexMeta(index_id, sanitize_index_name(index_id), dimension, 0, uuid.uuid4().hex)
                meta.table.create(conn)
                self._create_vectors(conn, meta)
                conn.execute(
                    f"INSERT INTO {REGISTRY} (index_id, name, dimension, generation, token) VALUES (?, ?, ?, 0, ?)",
                    (index_id, meta.name, dimension, meta.token),
                )
            # A new index starts with a live, empty searcher, so ingestion grows it write by write
            # (an HNSW graph built during ingestion, not all at once on the first search).
            searcher = self._new_searcher(meta)
            if searcher is not None:
                with self._loaded_lock:
                    self._loaded[index_id] = LoadedIndex(meta, searcher, generation=0)

        await self._db.run(do)

    async def delete_index(self, index_id: str) -> None:
        """Drop an index and everything in it (NotFoundError if there is none)."""

        def do(conn: Connection) -> None:
            with self._db.writing(conn):
                meta = self._meta(conn, index_id)
                meta.table.drop(conn)
                self._drop_vectors(conn, meta)
                conn.execute(f"DELETE FROM {REGISTRY} WHERE index_id = ?", (index_id,))
            self._dimensions.pop(index_id, None)
            with self._loaded_lock:
                loaded = self._loaded.pop(index_id, None)
            if loaded is not None:
                with loaded.lock:  # wait for a search in flight on it
                    pass
            self._searcher_dropped(meta)

        await self._db.run(do)

    # ---- writes -----------------------------------------------------------------------------------

    async def insert_chunks(self, index_id: str, chunks: list[Chunk]) -> None:
        """Upsert by ``chunk_id``: chunk row, FTS entry and vector change together or not at all."""
        dimension = await self._checked_dimension(index_id, [len(c.embedding) for c in chunks if c.embedding])
        batch = check_chunks(chunks, dimension)
        if not batch:
            return
        from underlay.providers.utils.vector.memindex import unit_vectors

        vectors = unit_vectors([chunk.embedding or () for chunk in batch], dimension)

        def do(conn: Connection) -> None:
            with self._db.writing(conn):
                meta = self._meta(conn, index_id)
                if meta.dimension != dimension:  # re-created elsewhere since the dimension was cached
                    self._dimensions.pop(index_id, None)
                    check_chunks(batch, meta.dimension)
                removed, added = meta.table.upsert(conn, batch)
                self._delete_vectors(conn, meta, removed)
                self._store_vectors(conn, meta, added, vectors)
                generation = self._bump(conn, meta)
            self._apply(meta, generation, removed, added, vectors)

        await self._db.run(do)

    async def delete_document(self, index_id: str, document_id: str) -> None:
        """Remove every chunk of a document (none is fine)."""
        import numpy as np

        def do(conn: Connection) -> None:
            with self._db.writing(conn):
                meta = self._meta(conn, index_id)
                removed = meta.table.delete_document(conn, document_id)
                if not removed:
                    return
                self._delete_vectors(conn, meta, removed)
                generation = self._bump(conn, meta)
            self._apply(meta, generation, removed, [], np.empty((0, meta.dimension), dtype=np.float32))

        await self._db.run(do)

    def _apply(
        self, meta: IndexMeta, generation: int, removed: list[int], added: list[int], vectors: VectorArray
    ) -> None:
        """Mirror a committed write into the loaded searcher, if it was current just before it."""
        import numpy as np

        with self._loaded_lock:
            loaded = self._loaded.get(meta.index_id)
        if loaded is None or loaded.meta.token != meta.token:
            return
        with loaded.lock:
            if loaded.generation != generation - 1:
                return  # behind (another process wrote) or ahead (a search reconciled): the next search syncs
            loaded.searcher.remove(np.asarray(removed, dtype=np.int64))
            loaded.searcher.add(np.asarray(added, dtype=np.int64), vectors)
            loaded.generation = generation
            self._searcher_changed(loaded)

    # ---- searches ---------------------------------------------------------------------------------

    def _loaded_for(self, meta: IndexMeta) -> LoadedIndex | None:
        with self._loaded_lock:
            loaded = self._loaded.get(meta.index_id)
            if loaded is None or loaded.meta.token != meta.token:
                searcher = self._new_searcher(meta)
                if searcher is None:
                    return None
                loaded = LoadedIndex(meta, searcher)
                self._loaded[meta.index_id] = loaded
            return loaded

    def _reconcile(self, conn: Connection, meta: IndexMeta, loaded: LoadedIndex) -> None:
        """Bring the searcher to the database's state (inside the caller's read transaction)."""
        import numpy as np

        in_db = np.asarray(meta.table.rowids(conn), dtype=np.int64)
        in_memory = loaded.searcher.ids()
        extra = np.setdiff1d(in_memory, in_db, assume_unique=True)
        missing = np.setdiff1d(in_db, in_memory, assume_unique=True)
        if len(extra):
            loaded.searcher.remove(extra)
        if len(missing):
            # Point lookups for a few rows; one sequential scan when most rows are missing (first load).
            if len(missing) * 4 < len(in_db):
                ids, vectors = self._load_vectors(conn, meta, missing)
            else:
                ids, vectors = self._load_vectors(conn, meta, None)
                keep = np.isin(ids, missing)
                ids, vectors = ids[keep], vectors[keep]
            loaded.searcher.add(ids, vectors)
        loaded.generation = meta.generation
        if len(extra) or len(missing):
            self._searcher_changed(loaded)

    async def _vector_search(
        self, index_id: str, embedding: list[float], k: int, filters: Filter | None, exclude_documents: list[str]
    ) -> list[ScoredChunk]:
        import numpy as np

        from underlay.providers.utils.vector.memindex import EMPTY_IDS, unit_vectors

        def do(conn: Connection) -> list[ScoredChunk]:
            with self._db.reading(conn):
                meta = self._meta(conn, index_id)
                if meta.dimension != len(embedding):  # re-created elsewhere since the dimension was cached
                    self._dimensions.pop(index_id, None)
                    check_embedding(embedding, meta.dimension, "embedding")
                query = unit_vectors([embedding], meta.dimension)[0]
                loaded = self._loaded_for(meta)
                if loaded is None:
                    hits = self._sql_knn(conn, meta, query, k, filters, exclude_documents)
                else:
                    allow: IdArray | None = None
                    deny: IdArray | None = None
                    table = meta.table
                    if filters is not None:
                        allow = np.asarray(table.filtered_rowids(conn, filters, exclude_documents), dtype=np.int64)
                    elif exclude_documents:
                        deny = np.asarray(table.document_rowids(conn, exclude_documents), dtype=np.int64)
                    with loaded.lock:
                        if loaded.generation < meta.generation:
                            self._reconcile(conn, meta, loaded)
                        if allow is not None and len(allow) == 0:
                            ids, scores = EMPTY_IDS, np.empty(0, dtype=np.float32)
                        else:
                            ids, scores = loaded.searcher.search(query, k, allow=allow, deny=deny)
                    hits = list(zip(ids.tolist(), scores.tolist(), strict=True))
            # Outside the snapshot: the searcher may be newer than it (another thread's write applied).
            rows = meta.table.fetch(conn, [rowid for rowid, _ in hits])
            return _ranked([(rows[rowid], score) for rowid, score in hits if rowid in rows])

        return await self._db.run(do)

    async def _keyword_search(
        self, index_id: str, query_text: str, k: int, filters: Filter | None, exclude_documents: list[str]
    ) -> list[ScoredChunk]:
        def do(conn: Connection) -> list[ScoredChunk]:
            with self._db.reading(conn):
                meta = self._meta(conn, index_id)
                hits = meta.table.keyword_search(conn, query_text, k, filters, exclude_documents)
            return [ScoredChunk(chunk=chunk, score=score) for _, chunk, score in hits]

        return await self._db.run(do)


def _ranked(hits: list[tuple[Chunk, float]]) -> list[ScoredChunk]:
    """Best first, ties by chunk id, so equal scores come back in the same order on every backend."""
    hits.sort(key=lambda hit: (-hit[1], hit[0].chunk_id))
    return [ScoredChunk(chunk=chunk, score=score) for chunk, score in hits]
