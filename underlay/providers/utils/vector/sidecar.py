"""The engine of backends whose store has vectors and filters but no BM25 index (Qdrant, Chroma).

The store holds the vectors, the chunks and their typed attributes (``pushdown.typed_attributes``);
a :class:`SidecarKeywordIndex` (SQLite FTS5, ``keyword.KeywordIndex``) kept beside it, in the
backend's own directory, holds the same chunks for BM25. Every write goes to the store first, then
to the sidecar; a failure between the two leaves the sidecar behind by that one batch, and the
ingestion layer's retry (an upsert of the same chunk ids) heals it.

Vector search pushes the filter into the store through the typed plan. When the store cannot express
a plan (string ordering on Qdrant and Chroma), the sidecar evaluates the whole filter in SQL and the
store searches only among the matching chunk ids, so a filter is never applied to a cut-down top-k.
Keyword search runs entirely in the sidecar, filters and exclusion included.

Stores' clients block, so each call runs on a worker thread of the backend's own pool.
"""

from __future__ import annotations

import asyncio
import json
from abc import abstractmethod
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from underlay.api.vector_io import Chunk, Filter, ScoredChunk
from underlay.providers.utils.vector.base import (
    VectorIOBase,
    check_chunks,
    dimension_conflict,
    not_found,
    validate_dimension,
)
from underlay.providers.utils.vector.keyword import KeywordIndex
from underlay.providers.utils.vector.memindex import VectorArray, unit_vectors
from underlay.providers.utils.vector.pushdown import FALSE, Node, Unsupported, plan
from underlay.providers.utils.vector.sqlite import Connection

T = TypeVar("T")


class SidecarKeywordIndex(KeywordIndex):
    """The standalone FTS5 index, plus evaluating a filter to the ids of the chunks that pass it."""

    async def matching_chunk_ids(
        self, index_id: str, filters: Filter | None, exclude_documents: Sequence[str]
    ) -> list[str]:
        def do(conn: Connection) -> list[str]:
            with self._db.reading(conn):
                if not self._exists(conn, index_id):
                    return []
                table = self._table(index_id)
                where, params = table.where(filters, exclude_documents)
                return [
                    row[0] for row in conn.execute(f"SELECT c.chunk_id FROM {table.chunks} AS c WHERE {where}", params)
                ]

        return await self._db.run(do)


class BlockingStore:
    """A thread pool for a blocking client; ``threads=1`` for clients that are not thread-safe."""

    def __init__(self, threads: int, name: str) -> None:
        self._executor = ThreadPoolExecutor(max_workers=max(1, threads), thread_name_prefix=f"underlay-{name}")

    async def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, partial(fn, *args, **kwargs))

    async def close(self) -> None:
        await asyncio.get_running_loop().run_in_executor(None, partial(self._executor.shutdown, True))


def chunk_from_stored(chunk_id: str, document_id: str, content: str, attributes: str, metadata: str) -> Chunk:
    """A chunk from the JSON strings a store keeps (exact types survive every store's JSON handling)."""
    return Chunk.model_construct(
        chunk_id=chunk_id,
        document_id=document_id,
        content=content,
        embedding=None,
        attributes=json.loads(attributes),
        metadata=json.loads(metadata),
    )


def ranked(hits: list[tuple[Chunk, float]]) -> list[ScoredChunk]:
    """Best first, ties by chunk id (the order every backend gives equal scores)."""
    hits.sort(key=lambda hit: (-hit[1], hit[0].chunk_id))
    return [ScoredChunk(chunk=chunk, score=score) for chunk, score in hits]


class SidecarVectorIO(VectorIOBase):
    """Index lifecycle, writes and searches over a store plus the FTS5 sidecar; subclasses drive the store."""

    def __init__(self, provider_id: str, keyword_db: str | Path, threads: int) -> None:
        self.provider_id = provider_id
        self._keyword_path = keyword_db
        self.keyword = SidecarKeywordIndex(keyword_db, threads=2)
        self._dimensions: dict[str, int] = {}

    # ---- store hooks (called on the event loop; they hop to threads themselves) -------------------

    @abstractmethod
    async def _open_store(self) -> None: ...

    @abstractmethod
    async def _close_store(self) -> None: ...

    @abstractmethod
    async def _store_dimension(self, index_id: str) -> int | None:
        """The dimension of the index's collection, or None if there is none."""

    @abstractmethod
    async def _store_create(self, index_id: str, dimension: int) -> None: ...

    @abstractmethod
    async def _store_drop(self, index_id: str) -> None: ...

    @abstractmethod
    async def _store_upsert(self, index_id: str, chunks: list[Chunk], vectors: VectorArray) -> None: ...

    @abstractmethod
    async def _store_delete_document(self, index_id: str, document_id: str) -> None: ...

    @abstractmethod
    async def _store_search(
        self,
        index_id: str,
        query: list[float],
        k: int,
        node: Node,
        exclude_documents: list[str],
        chunk_ids: list[str] | None,
    ) -> list[ScoredChunk]:
        """Top-k by cosine similarity among chunks passing ``node`` (raise ``Unsupported`` if it cannot
        be expressed) and, when ``chunk_ids`` is given, only among those (then ``node`` is ``TRUE``)."""

    # ---- lifecycle --------------------------------------------------------------------------------

    async def initialize(self) -> None:
        if str(self._keyword_path) != ":memory:":
            Path(self._keyword_path).parent.mkdir(parents=True, exist_ok=True)
        await self.keyword.open()
        await self._open_store()

    async def shutdown(self) -> None:
        await self._close_store()
        await self.keyword.close()

    # ---- indexes ----------------------------------------------------------------------------------

    async def _index_dimension(self, index_id: str) -> int:
        dimension = self._dimensions.get(index_id)
        if dimension is None:
            dimension = await self._store_dimension(index_id)
            if dimension is None:
                raise not_found(index_id)
            self._dimensions[index_id] = dimension
        return dimension

    def _forget(self, index_id: str) -> None:
        self._dimensions.pop(index_id, None)

    async def create_index(self, index_id: str, dimension: int) -> None:
        validate_dimension(dimension)
        existing = await self._store_dimension(index_id)
        if existing is not None and existing != dimension:
            raise dimension_conflict(index_id, existing, dimension)
        if existing is None:
            await self._store_create(index_id, dimension)
        await self.keyword.create_index(index_id)
        self._dimensions[index_id] = dimension

    async def delete_index(self, index_id: str) -> None:
        if await self._store_dimension(index_id) is None:
            self._forget(index_id)
            raise not_found(index_id)
        await self._store_drop(index_id)
        await self.keyword.delete_index(index_id)
        self._forget(index_id)

    # ---- writes -----------------------------------------------------------------------------------

    async def insert_chunks(self, index_id: str, chunks: list[Chunk]) -> None:
        dimension = await self._index_dimension(index_id)
        batch = check_chunks(chunks, dimension)
        if not batch:
            return
        vectors = unit_vectors([chunk.embedding or () for chunk in batch], dimension)
        await self._store_upsert(index_id, batch, vectors)
        await self.keyword.upsert(index_id, batch)

    async def delete_document(self, index_id: str, document_id: str) -> None:
        await self._index_dimension(index_id)
        await self._store_delete_document(index_id, document_id)
        await self.keyword.delete_document(index_id, document_id)

    # ---- searches ---------------------------------------------------------------------------------

    async def _vector_search(
        self, index_id: str, embedding: list[float], k: int, filters: Filter | None, exclude_documents: list[str]
    ) -> list[ScoredChunk]:
        dimension = await self._index_dimension(index_id)
        query = unit_vectors([embedding], dimension)[0].tolist()
        node = plan(filters)
        if node == FALSE:
            return []
        try:
            return await self._store_search(index_id, query, k, node, exclude_documents, None)
        except Unsupported:
            pass
        allowed = await self.keyword.matching_chunk_ids(index_id, filters, exclude_documents)
        if not allowed:
            return []
        return await self._store_search(index_id, query, k, plan(None), [], allowed)

    async def _keyword_search(
        self, index_id: str, query_text: str, k: int, filters: Filter | None, exclude_documents: list[str]
    ) -> list[ScoredChunk]:
        await self._index_dimension(index_id)
        return await self.keyword.search(index_id, query_text, k, filters=filters, exclude_documents=exclude_documents)
