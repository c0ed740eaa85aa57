"""``client.vector_io``: the low-level index under vector stores (insert chunks, query them).

Vector stores themselves are OpenAI's API (``client.vector_stores``); this resource reaches under one:
insert pre-chunked text (embedded by the store's model when a chunk has no ``embedding``) and search it
in ``vector``, ``keyword`` or ``hybrid`` mode with OpenAI-style filters.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from openai import Omit, omit
from openai._resource import AsyncAPIResource, SyncAPIResource
from typing_extensions import Unpack

from underlay.api.vector_io import (
    Chunk,
    Filter,
    HybridOptions,
    InsertChunksRequest,
    InsertChunksResponse,
    QueryChunksRequest,
    QueryChunksResponse,
    SearchMode,
    VectorIOApi,
)
from underlay.client._wire import RequestOptions, body_of, options_of, parsed, route_path, sends

__all__ = ["AsyncVectorIO", "VectorIO"]

Chunks = Iterable[Chunk | dict[str, Any]]


class VectorIO(SyncAPIResource):
    """Insert chunks into a vector store's index and query them directly."""

    @sends(InsertChunksRequest)
    def insert(
        self, *, vector_store_id: str, chunks: Chunks, **options: Unpack[RequestOptions]
    ) -> InsertChunksResponse:
        """Upsert ``chunks`` by ``chunk_id`` (embedded by the store's model when they carry no embedding)."""
        _, path = route_path(VectorIOApi.insert_chunks)
        body = body_of(vector_store_id=vector_store_id, chunks=[*chunks])
        return self._post(path, body=body, options=options_of(options), cast_to=parsed(InsertChunksResponse))

    @sends(QueryChunksRequest)
    def query(
        self,
        *,
        vector_store_id: str,
        query: str | None | Omit = omit,
        embedding: list[float] | None | Omit = omit,
        search_mode: SearchMode | Omit = omit,
        max_num_results: int | Omit = omit,
        filters: Filter | dict[str, Any] | None | Omit = omit,
        ranking_options: HybridOptions | dict[str, Any] | None | Omit = omit,
        **options: Unpack[RequestOptions],
    ) -> QueryChunksResponse:
        """The best chunks first, each with its score (cosine, BM25 or the fused score)."""
        _, path = route_path(VectorIOApi.query_chunks)
        body = body_of(
            vector_store_id=vector_store_id,
            query=query,
            embedding=embedding,
            search_mode=search_mode,
            max_num_results=max_num_results,
            filters=filters,
            ranking_options=ranking_options,
        )
        return self._post(path, body=body, options=options_of(options), cast_to=parsed(QueryChunksResponse))


class AsyncVectorIO(AsyncAPIResource):
    """The async twin of :class:`VectorIO`."""

    @sends(InsertChunksRequest)
    async def insert(
        self, *, vector_store_id: str, chunks: Chunks, **options: Unpack[RequestOptions]
    ) -> InsertChunksResponse:
        """Upsert ``chunks`` by ``chunk_id`` (embedded by the store's model when they carry no embedding)."""
        _, path = route_path(VectorIOApi.insert_chunks)
        body = body_of(vector_store_id=vector_store_id, chunks=[*chunks])
        return await self._post(path, body=body, options=options_of(options), cast_to=parsed(InsertChunksResponse))

    @sends(QueryChunksRequest)
    async def query(
        self,
        *,
        vector_store_id: str,
        query: str | None | Omit = omit,
        embedding: list[float] | None | Omit = omit,
        search_mode: SearchMode | Omit = omit,
        max_num_results: int | Omit = omit,
        filters: Filter | dict[str, Any] | None | Omit = omit,
        ranking_options: HybridOptions | dict[str, Any] | None | Omit = omit,
        **options: Unpack[RequestOptions],
    ) -> QueryChunksResponse:
        """The best chunks first, each with its score (cosine, BM25 or the fused score)."""
        _, path = route_path(VectorIOApi.query_chunks)
        body = body_of(
            vector_store_id=vector_store_id,
            query=query,
            embedding=embedding,
            search_mode=search_mode,
            max_num_results=max_num_results,
            filters=filters,
            ranking_options=ranking_options,
        )
        return await self._post(path, body=body, options=options_of(options), cast_to=parsed(QueryChunksResponse))
