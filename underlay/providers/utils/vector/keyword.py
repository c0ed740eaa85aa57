"""BM25 keyword search on SQLite FTS5, for stores that have no full-text index of their own.

Two layers:

- :class:`ChunkTable` is one index's chunks in SQLite: a plain table (``chunk_id``, ``document_id``,
  ``content``, the attributes as JSON, metadata) and an FTS5 index over its ``content``. It works on a
  connection inside the caller's transaction, which is how the sqlite-vec backend (same database as
  its vectors) and the faiss backend (its sidecar database) keep chunks, vectors and the keyword
  index changing atomically.
- :class:`KeywordIndex` is the same thing standing alone, in its own file or ``:memory:``, for
  backends that keep vectors elsewhere (Milvus, Qdrant, Chroma) and need BM25 beside them.

Because the attributes live in the same rows, filters and document exclusion are pushed into the
keyword query itself (see ``filters.to_sqlite_where``), never applied to a cut-down top-k.

FTS5's ``bm25()`` is lower-is-better; scores here are its negation, so higher is better like every
other score in the Vector IO API. The FTS5 table uses external content (the chunk table), which
works on SQLite 3.40 and later without the newer ``contentless_delete`` option; the tokenizer is
``porter unicode61 remove_diacritics 2`` (English stemming, case- and accent-insensitive).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic_core import to_json

from underlay.api.vector_io import Chunk, Filter, ScoredChunk
from underlay.providers.utils.vector.base import sanitize_index_name
from underlay.providers.utils.vector.filters import to_sqlite_where
from underlay.providers.utils.vector.sqlite import MEMORY, Connection, SqliteDatabase, quote_identifier

TOKENIZER = "porter unicode61 remove_diacritics 2"
MAX_QUERY_TERMS = 64

# unicode61 splits on everything but letters, numbers and private-use characters (so '_' and "'"
# split too); extracting the same runs here means each term we quote is one token to FTS5.
_TOKEN = re.compile(r"[^\W_]+", re.UNICODE)


def fts5_query(text: str) -> str | None:
    """An FTS5 MATCH expression for plain user text: every term quoted, terms OR-ed; None if no terms.

    Quoting makes operators, punctuation and FTS5 keywords (``AND``, ``NEAR``, ``"``, ``*``, ``:``)
    plain text, so no user input can be a syntax error. OR matches chunks that share any term, and
    BM25 ranks those sharing more (and rarer) terms higher, which is what a search box should do.
    """
    terms: list[str] = []
    seen: set[str] = set()
    for match in _TOKEN.finditer(text):
        term = match.group(0).lower()
        if term not in seen:
            seen.add(term)
            terms.append(term)
        if len(terms) >= MAX_QUERY_TERMS:
            break
    if not terms:
        return None
    return " OR ".join(f'"{term}"' for term in terms)


@dataclass(frozen=True)
class ChunkRow:
    rowid: int
    chunk: Chunk


def _chunk_from_row(row: Sequence[Any]) -> Chunk:
    """Columns: chunk_id, document_id, content, attributes, metadata."""
    return Chunk.model_construct(
        chunk_id=row[0],
        document_id=row[1],
        content=row[2],
        embedding=None,
        attributes=json.loads(row[3]),
        metadata=json.loads(row[4]),
    )


def dump_json(value: Any) -> str:
    """Compact JSON for SQLite's JSON functions (pydantic's encoder copes with dates, UUIDs and the like)."""
    return to_json(value).decode()


_COLUMNS = "c.chunk_id, c.document_id, c.content, c.attributes, c.metadata"


class ChunkTable:
    """One index's chunks plus their FTS5 index. Every method runs inside the caller's transaction.

    Row ids come from ``AUTOINCREMENT``, so they are never reused: an upsert gives a chunk a new row
    id, and a row id names one immutable (chunk, vector) pair for its whole life. That is what lets
    in-memory vector indexes (numpy, faiss) sync with the database by comparing id sets alone.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.chunks = quote_identifier(f"{name}_chunks")
        self.fts = quote_identifier(f"{name}_fts")
        self._doc_index = quote_identifier(f"{name}_chunks_document")

    def create(self, conn: Connection) -> None:
        conn.execute(
            f"CREATE TABLE IF NOT EXISTS {self.chunks} ("
            "rowid INTEGER PRIMARY KEY AUTOINCREMENT, chunk_id TEXT NOT NULL UNIQUE, "
            "document_id TEXT NOT NULL, content TEXT NOT NULL, attributes TEXT NOT NULL, metadata TEXT NOT NULL)"
        )
        conn.execute(f"CREATE INDEX IF NOT EXISTS {self._doc_index} ON {self.chunks} (document_id)")
        conn.execute(
            f"CREATE VIRTUAL TABLE IF NOT EXISTS {self.fts} USING fts5("
            f"content, content={quote_identifier(self.name + '_chunks')}, content_rowid='rowid', "
            f"tokenize='{TOKENIZER}')"
        )

    def drop(self, conn: Connection) -> None:
        conn.execute(f"DROP TABLE IF EXISTS {self.fts}")
        conn.execute(f"DROP TABLE IF EXISTS {self.chunks}")

    def _remove(self, conn: Connection, rows: Iterable[tuple[int, str]]) -> list[int]:
        """Delete ``(rowid, content)`` rows from both tables; FTS5 external content needs the old text."""
        rows = list(rows)
        if rows:
            conn.executemany(f"INSERT INTO {self.fts} ({self.fts}, rowid, content) VALUES ('delete', ?, ?)", rows)
            conn.executemany(f"DELETE FROM {self.chunks} WHERE rowid = ?", [(rowid,) for rowid, _ in rows])
        return [rowid for rowid, _ in rows]

    def upsert(self, conn: Connection, chunks: Sequence[Chunk]) -> tuple[list[int], list[int]]:
        """Insert or replace by ``chunk_id``. Returns (row ids removed, row ids added, in chunk order)."""
        removed = self.delete_chunks(conn, [chunk.chunk_id for chunk in chunks])
        added: list[int] = []
        insert = (
            f"INSERT INTO {self.chunks} (chunk_id, document_id, content, attributes, metadata) "
            "VALUES (?, ?, ?, ?, ?) RETURNING rowid"
        )
        for chunk in chunks:
            row = conn.execute(
                insert,
                (
                    chunk.chunk_id,
                    chunk.document_id,
                    chunk.content,
                    dump_json(chunk.attributes),
                    dump_json(chunk.metadata),
                ),
            ).fetchone()
            added.append(int(row[0]))
        conn.executemany(
            f"INSERT INTO {self.fts} (rowid, content) VALUES (?, ?)",
            [(rowid, chunk.content) for rowid, chunk in zip(added, chunks, strict=True)],
        )
        return removed, added

    def delete_chunks(self, conn: Connection, chunk_ids: Sequence[str]) -> list[int]:
        """Remove chunks by id (unknown ids are ignored); returns the row ids removed."""
        if not chunk_ids:
            return []
        rows = conn.execute(
            f"SELECT rowid, content FROM {self.chunks} WHERE chunk_id IN (SELECT value FROM json_each(?))",
            (json.dumps(list(chunk_ids)),),
        ).fetchall()
        return self._remove(conn, rows)

    def delete_document(self, conn: Connection, document_id: str) -> list[int]:
        rows = conn.execute(
            f"SELECT rowid, content FROM {self.chunks} WHERE document_id = ?", (document_id,)
        ).fetchall()
        return self._remove(conn, rows)

    def count(self, conn: Connection) -> int:
        return int(conn.execute(f"SELECT count(*) FROM {self.chunks}").fetchone()[0])

    def rowids(self, conn: Connection) -> list[int]:
        return [row[0] for row in conn.execute(f"SELECT rowid FROM {self.chunks} ORDER BY rowid")]

    def filtered_rowids(self, conn: Connection, filters: Filter | None, exclude_documents: Sequence[str]) -> list[int]:
        """Row ids of chunks that pass the filter and are not in an excluded document."""
        where, params = self.where(filters, exclude_documents)
        return [row[0] for row in conn.execute(f"SELECT c.rowid FROM {self.chunks} AS c WHERE {where}", params)]

    def document_rowids(self, conn: Connection, document_ids: Sequence[str]) -> list[int]:
        """Row ids of every chunk of these documents (an index lookup: cheap when the list is short)."""
        if not document_ids:
            return []
        return [
            row[0]
            for row in conn.execute(
                f"SELECT rowid FROM {self.chunks} WHERE document_id IN (SELECT value FROM json_each(?))",
                (json.dumps(list(document_ids)),),
            )
        ]

    @staticmethod
    def where(filters: Filter | None, exclude_documents: Sequence[str], alias: str = "c") -> tuple[str, list[Any]]:
        """The WHERE expression (over table alias ``alias``) for a filter plus document exclusion."""
        where, params = to_sqlite_where(filters, column=f"{alias}.attributes")
        if exclude_documents:
            where = f"({where}) AND {alias}.document_id NOT IN (SELECT value FROM json_each(?))"
            params = [*params, json.dumps(list(exclude_documents))]
        return where, params

    def fetch(self, conn: Connection, rowids: Sequence[int]) -> dict[int, Chunk]:
        """The chunks (without embeddings) for these row ids; ids no longer present are skipped."""
        if not rowids:
            return {}
        rows = conn.execute(
            f"SELECT c.rowid, {_COLUMNS} FROM {self.chunks} AS c WHERE c.rowid IN (SELECT value FROM json_each(?))",
            (json.dumps([int(r) for r in rowids]),),
        ).fetchall()
        return {int(row[0]): _chunk_from_row(row[1:]) for row in rows}

    def keyword_search(
        self,
        conn: Connection,
        text: str,
        k: int,
        filters: Filter | None = None,
        exclude_documents: Sequence[str] = (),
    ) -> list[tuple[int, Chunk, float]]:
        """BM25 top-k as ``(rowid, chunk, score)``, best first, ties by chunk id; [] if the text has no terms."""
        match = fts5_query(text)
        if match is None:
            return []
        where, params = self.where(filters, exclude_documents)
        sql = (
            f"SELECT c.rowid, {_COLUMNS}, -bm25({self.fts}) AS score FROM {self.fts} "
            f"JOIN {self.chunks} AS c ON c.rowid = {self.fts}.rowid "
            f"WHERE {self.fts} MATCH ? AND {where} ORDER BY score DESC, c.chunk_id LIMIT ?"
        )
        rows = conn.execute(sql, [match, *params, k]).fetchall()
        return [(int(row[0]), _chunk_from_row(row[1:6]), float(row[6])) for row in rows]


class KeywordIndex:
    """A standalone BM25 index over many named indexes, in its own SQLite file or in memory.

    For backends whose store has no full-text search: upsert chunks here alongside the vectors and
    call :meth:`search` for ``keyword`` mode (and for the keyword half of ``hybrid``). Index names are
    sanitized into table names, so any vector-store id is fine.
    """

    _REGISTRY = "underlay_keyword_indexes"

    def __init__(self, path: str | Path = MEMORY, *, threads: int = 2) -> None:
        self._db = SqliteDatabase(path, threads=threads, name="keyword")

    async def open(self) -> KeywordIndex:
        await self._db.open()
        await self._db.run(
            lambda conn: conn.execute(
                f"CREATE TABLE IF NOT EXISTS {self._REGISTRY} (index_id TEXT PRIMARY KEY, table_name TEXT NOT NULL)"
            )
        )
        return self

    async def close(self) -> None:
        await self._db.close()

    @staticmethod
    def _table(index_id: str) -> ChunkTable:
        return ChunkTable(sanitize_index_name(index_id, prefix="kw"))

    def _ensure(self, conn: Connection, index_id: str) -> ChunkTable:
        table = self._table(index_id)
        table.create(conn)
        conn.execute(
            f"INSERT OR IGNORE INTO {self._REGISTRY} (index_id, table_name) VALUES (?, ?)", (index_id, table.name)
        )
        return table

    def _exists(self, conn: Connection, index_id: str) -> bool:
        return conn.execute(f"SELECT 1 FROM {self._REGISTRY} WHERE index_id = ?", (index_id,)).fetchone() is not None

    async def create_index(self, index_id: str) -> None:
        def do(conn: Connection) -> None:
            with self._db.writing(conn):
                self._ensure(conn, index_id)

        await self._db.run(do)

    async def delete_index(self, index_id: str) -> None:
        def do(conn: Connection) -> None:
            with self._db.writing(conn):
                self._table(index_id).drop(conn)
                conn.execute(f"DELETE FROM {self._REGISTRY} WHERE index_id = ?", (index_id,))

        await self._db.run(do)

    async def upsert(self, index_id: str, chunks: Sequence[Chunk]) -> None:
        """Insert or replace chunks by ``chunk_id`` (creating the index on first use)."""

        def do(conn: Connection) -> None:
            with self._db.writing(conn):
                self._ensure(conn, index_id).upsert(conn, chunks)

        if chunks:
            await self._db.run(do)

    async def delete_chunks(self, index_id: str, chunk_ids: Sequence[str]) -> None:
        def do(conn: Connection) -> None:
            with self._db.writing(conn):
                if self._exists(conn, index_id):
                    self._table(index_id).delete_chunks(conn, chunk_ids)

        await self._db.run(do)

    async def delete_document(self, index_id: str, document_id: str) -> None:
        def do(conn: Connection) -> None:
            with self._db.writing(conn):
                if self._exists(conn, index_id):
                    self._table(index_id).delete_document(conn, document_id)

        await self._db.run(do)

    async def search(
        self,
        index_id: str,
        text: str,
        k: int,
        *,
        filters: Filter | None = None,
        exclude_documents: Sequence[str] = (),
    ) -> list[ScoredChunk]:
        """BM25 top-k for plain user text; an index never written to gives []."""

        def do(conn: Connection) -> list[ScoredChunk]:
            with self._db.reading(conn):
                if not self._exists(conn, index_id):
                    return []
                hits = self._table(index_id).keyword_search(conn, text, k, filters, exclude_documents)
            return [ScoredChunk(chunk=chunk, score=score) for _, chunk, score in hits]

        return await self._db.run(do)
