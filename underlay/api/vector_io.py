"""The Vector IO API: the low-level index every vector-store backend implements.

A backend stores chunks (text, embedding, metadata) in named indexes and answers three kinds of
search: ``vector`` (nearest neighbours by cosine similarity), ``keyword`` (BM25 over the chunk text)
and ``hybrid`` (both, fused by reciprocal rank or by weights). Filters are OpenAI's comparison and
compound filters over chunk attributes; a backend pushes them into its own query language where it
can and must give the same answers either way.

Routes: ``POST /v1/vector-io/insert`` and ``POST /v1/vector-io/query`` for pre-embedded chunks.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Protocol

from pydantic import ConfigDict, Field

from underlay.api.base import ApiModel
from underlay.api.routes import Route

__all__ = [
    "AttributeValue",
    "Chunk",
    "ComparisonFilter",
    "CompoundFilter",
    "Filter",
    "HybridOptions",
    "IndexInfo",
    "InsertChunksRequest",
    "InsertChunksResponse",
    "QueryChunksRequest",
    "QueryChunksResponse",
    "ROUTES",
    "ScoredChunk",
    "SearchMode",
    "VectorIOApi",
    "VectorIOProvider",
]

AttributeValue = str | float | bool | int


class ComparisonFilter(ApiModel):
    """``{"type": "eq", "key": "author", "value": "ada"}``; ``in`` / ``nin`` take a list."""

    type: Literal["eq", "ne", "gt", "gte", "lt", "lte", "in", "nin"]
    key: str = Field(min_length=1)
    value: AttributeValue | list[AttributeValue]


class CompoundFilter(ApiModel):
    type: Literal["and", "or"]
    filters: list[Annotated[ComparisonFilter | CompoundFilter, Field(union_mode="left_to_right")]]


Filter = Annotated[ComparisonFilter | CompoundFilter, Field(union_mode="left_to_right")]
SearchMode = Literal["vector", "keyword", "hybrid"]


class Chunk(ApiModel):
    """One indexed piece of text. ``attributes`` are what filters see; ``metadata`` is carried along.

    ``document_id`` groups the chunks of one source (a vector-store file), so a backend can delete or
    hide them together.
    """

    model_config = ConfigDict(extra="forbid")

    chunk_id: str = Field(min_length=1)
    document_id: str = Field(min_length=1)
    content: str
    embedding: list[float] | None = None
    attributes: dict[str, AttributeValue] = Field(default_factory=dict)
    metadata: dict[str, Any] = Field(default_factory=dict)


class HybridOptions(ApiModel):
    ranker: Literal["rrf", "weighted"] = "rrf"
    rrf_k: int = Field(default=60, ge=1)
    vector_weight: float = Field(default=0.5, ge=0, le=1)
    keyword_weight: float = Field(default=0.5, ge=0, le=1)
    keyword_match: Literal["all", "any"] = "all"  # which keyword hits vote: see fusion.py


class ScoredChunk(ApiModel):
    chunk: Chunk
    score: float


class IndexInfo(ApiModel):
    index_id: str
    dimension: int
    chunk_count: int | None = None


class VectorIOProvider(Protocol):
    """What a vector backend implements. Indexes are created by the vector-store layer.

    - ``insert_chunks`` upserts by ``chunk_id``; every chunk carries an embedding of ``dimension``.
    - ``delete_document`` removes every chunk of a document (a file leaving a vector store).
    - ``query``: ``embedding`` is required for vector and hybrid modes, ``query_text`` for keyword and
      hybrid. Results are sorted best first; scores are higher-is-better (cosine similarity for vector,
      BM25 for keyword, the fused score for hybrid). ``exclude_documents`` hides documents still being
      ingested, so search never returns half-indexed content.
    """

    provider_id: str

    async def initialize(self) -> None: ...

    async def shutdown(self) -> None: ...

    async def create_index(self, index_id: str, dimension: int) -> None: ...

    async def delete_index(self, index_id: str) -> None: ...

    async def insert_chunks(self, index_id: str, chunks: list[Chunk]) -> None: ...

    async def delete_document(self, index_id: str, document_id: str) -> None: ...

    async def query(
        self,
        index_id: str,
        *,
        mode: SearchMode,
        k: int,
        embedding: list[float] | None = None,
        query_text: str | None = None,
        filters: Filter | None = None,
        hybrid: HybridOptions | None = None,
        exclude_documents: list[str] | None = None,
    ) -> list[ScoredChunk]: ...


# ---------------------------------------------------------------------------------------------------
# Low-level HTTP API
# ---------------------------------------------------------------------------------------------------


class InsertChunksRequest(ApiModel):
    vector_store_id: str
    chunks: list[Chunk] = Field(min_length=1)


class InsertChunksResponse(ApiModel):
    object: Literal["vector_io.insert"] = "vector_io.insert"
    vector_store_id: str
    inserted: int = Field(description="How many chunks were upserted.")


class QueryChunksRequest(ApiModel):
    vector_store_id: str
    query: str | None = None
    embedding: list[float] | None = None
    search_mode: SearchMode = "vector"
    max_num_results: int = Field(default=10, ge=1, le=50)
    filters: Filter | None = None
    ranking_options: HybridOptions | None = None


class QueryChunksResponse(ApiModel):
    object: Literal["list"] = "list"
    data: list[ScoredChunk]


class VectorIOApi(Protocol):
    """What the vector io router serves: one method per route in ``ROUTES``.

    The route table names these methods, so a missing or misspelled handler fails the type check;
    :class:`underlay.core.routers.vector_io.VectorIORouter` implements it.
    """

    async def insert_chunks(self, params: InsertChunksRequest) -> InsertChunksResponse: ...

    async def query_chunks(self, params: QueryChunksRequest) -> QueryChunksResponse: ...


ROUTES: list[Route] = [
    Route(
        "POST",
        "/v1/vector-io/insert",
        VectorIOApi.insert_chunks,
        body=InsertChunksRequest,
        response=InsertChunksResponse,
        summary="Insert pre-embedded chunks into a vector store",
        tags=("vector-io",),
    ),
    Route(
        "POST",
        "/v1/vector-io/query",
        VectorIOApi.query_chunks,
        body=QueryChunksRequest,
        response=QueryChunksResponse,
        summary="Query a vector store's chunks directly",
        tags=("vector-io",),
    ),
]
