"""``inline::sqlite-vec``: vector stores in one SQLite file, the ``local`` distribution's default.

Everything an index holds lives in the file, changed in single transactions: the chunks, an FTS5
index for BM25 keyword search, and the unit vectors in a sqlite-vec ``vec0`` table with cosine
distance. The file is the source of truth; several workers may share it (WAL, busy timeout).

Vector search is exact. By default it runs on a copy of each index's vectors in process memory
(``memory_index: true``), filled as the index is (loaded on first search after a restart) and kept
current after every write, because at 100,000 x 384 dimensions a numpy scan answers in about 8 ms
where ``vec0``'s scan (the published wheel is built without SIMD) takes 45-70 ms on a 2-core
machine. The copy costs ``4 x dimension`` bytes per chunk (150 MB for 100,000 x 384) in every
worker; ``memory_index: false`` searches with ``vec0`` KNN instead and keeps nothing in memory.
Both give the same results.

The stdlib ``sqlite3`` of many Python builds cannot load extensions; ``pysqlite3-binary`` (a current
SQLite with extension loading) is used when installed.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from underlay.api.vector_io import Filter
from underlay.providers.utils.vector.base import MAX_K
from underlay.providers.utils.vector.sqlite import MEMORY, Connection, SqliteDatabase, quote_identifier, state_path
from underlay.providers.utils.vector.sqlite_backend import IndexMeta, SqliteVectorIO

if TYPE_CHECKING:  # numpy is imported on the first vector read, not when the provider starts
    from underlay.providers.utils.vector.memindex import IdArray, VectorArray, VectorSearcher

# Fewer missing rows than this are fetched from vec0 one by one (about 0.2 ms each); vec0 answers
# ``rowid IN (...)`` with a full scan, so a longer list costs as much as reading everything.
_POINT_LOOKUPS = 4096


class Config(BaseModel):
    """Where the database lives and whether to keep vectors in memory for search."""

    model_config = ConfigDict(extra="forbid")

    db_path: str = Field(
        default="sqlite_vec.db",
        validate_default=True,
        description="SQLite file for every index of this provider; a relative path is inside the state directory.",
    )
    memory_index: bool = Field(
        default=True,
        description="Search a copy of each index's vectors in memory (fast) rather than with vec0's scan (lean).",
    )
    threads: int = Field(default=4, ge=1, le=64, description="Worker threads, each with its own connection.")

    @field_validator("db_path")
    @classmethod
    def _resolve(cls, value: str, info: ValidationInfo) -> str:
        return value if value == MEMORY else state_path(value, info)


def _vec0_path() -> str | None:
    """The extension library the ``sqlite-vec`` package ships, found without running its ``__init__``.

    Why: that ``__init__`` imports ``numpy.typing`` (for a helper this backend never calls), which would
    put numpy's import on every start; the library sits in the package directory as ``vec0``, which is
    where the package's own ``loadable_path()`` points too. ``None`` when the package is not installed.
    """
    spec = importlib.util.find_spec("sqlite_vec")
    if spec is None or not spec.submodule_search_locations:
        return None
    return os.path.join(next(iter(spec.submodule_search_locations)), "vec0")


def _load_sqlite_vec(conn: Connection) -> None:
    path = _vec0_path()
    conn.enable_load_extension(True)
    try:
        if path is None:
            import sqlite_vec  # not installed: its ImportError names the missing package

            sqlite_vec.load(conn)
        else:
            conn.load_extension(path)
    finally:
        conn.enable_load_extension(False)


class SqliteVecVectorIO(SqliteVectorIO):
    """Chunks, FTS5 and ``vec0`` vectors in one SQLite file; exact search in memory or in ``vec0``."""

    def __init__(self, provider_id: str, config: Config) -> None:
        super().__init__(
            provider_id,
            SqliteDatabase(
                config.db_path, threads=config.threads, setup=_load_sqlite_vec, need_extensions=True, name="sqlite-vec"
            ),
        )
        self.config = config

    @staticmethod
    def _vec(meta: IndexMeta) -> str:
        return quote_identifier(f"{meta.name}_vec")

    def _create_vectors(self, conn: Connection, meta: IndexMeta) -> None:
        column = f"embedding float[{meta.dimension}] distance_metric=cosine"
        conn.execute(f"CREATE VIRTUAL TABLE {self._vec(meta)} USING vec0({column})")

    def _drop_vectors(self, conn: Connection, meta: IndexMeta) -> None:
        conn.execute(f"DROP TABLE IF EXISTS {self._vec(meta)}")

    def _store_vectors(self, conn: Connection, meta: IndexMeta, rowids: Sequence[int], vectors: VectorArray) -> None:
        conn.executemany(
            f"INSERT INTO {self._vec(meta)} (rowid, embedding) VALUES (?, ?)",
            [(rowid, vectors[i].tobytes()) for i, rowid in enumerate(rowids)],
        )

    def _delete_vectors(self, conn: Connection, meta: IndexMeta, rowids: Sequence[int]) -> None:
        conn.executemany(f"DELETE FROM {self._vec(meta)} WHERE rowid = ?", [(rowid,) for rowid in rowids])

    def _load_vectors(self, conn: Connection, meta: IndexMeta, rowids: IdArray | None) -> tuple[IdArray, VectorArray]:
        import numpy as np

        table = self._vec(meta)
        if rowids is not None and len(rowids) <= _POINT_LOOKUPS:
            rows = [
                row
                for row in (
                    conn.execute(f"SELECT rowid, embedding FROM {table} WHERE rowid = ?", (rowid,)).fetchone()
                    for rowid in rowids.tolist()
                )
                if row is not None
            ]
        else:
            rows = conn.execute(f"SELECT rowid, embedding FROM {table}").fetchall()
        ids = np.fromiter((row[0] for row in rows), dtype=np.int64, count=len(rows))
        vectors = np.frombuffer(b"".join(row[1] for row in rows), dtype=np.float32).reshape(len(rows), meta.dimension)
        if rowids is not None and len(rowids) > _POINT_LOOKUPS:
            keep = np.isin(ids, rowids)
            ids, vectors = ids[keep], vectors[keep]
        return ids, vectors.copy()

    def _new_searcher(self, meta: IndexMeta) -> VectorSearcher | None:
        from underlay.providers.utils.vector.memindex import NumpySearcher

        return NumpySearcher(meta.dimension) if self.config.memory_index else None

    def _sql_knn(
        self,
        conn: Connection,
        meta: IndexMeta,
        query: VectorArray,
        k: int,
        filters: Filter | None,
        exclude_documents: list[str],
    ) -> list[tuple[int, float]]:
        """``vec0`` KNN; filters become a ``rowid IN (subquery)`` constraint that vec0 applies during the scan."""
        import numpy as np

        table, blob = self._vec(meta), query.astype(np.float32).tobytes()
        knn = f"SELECT rowid, distance FROM {table} WHERE embedding MATCH ? AND k = ?"
        if filters is None and exclude_documents:
            denied = set(meta.table.document_rowids(conn, exclude_documents))
            if k + len(denied) <= MAX_K:
                # Cheaper than a subquery over every chunk: over-fetch by the excluded rows, then drop them.
                rows = conn.execute(knn, (blob, k + len(denied))).fetchall()
                return [(int(r), 1.0 - float(d)) for r, d in rows if r not in denied][:k]
        params: list[Any] = [blob, k]
        if filters is not None or exclude_documents:
            where, where_params = meta.table.where(filters, exclude_documents)
            knn += f" AND rowid IN (SELECT c.rowid FROM {meta.table.chunks} AS c WHERE {where})"
            params += where_params
        return [(int(r), 1.0 - float(d)) for r, d in conn.execute(knn, params).fetchall()]


async def create_provider(provider_id: str, config: Config, deps: dict[str, Any]) -> SqliteVecVectorIO:
    """The registry's factory; the stack calls ``initialize()`` (which opens the file) next."""
    return SqliteVecVectorIO(provider_id, config)
