"""The vector-io router: which backend holds a vector store, and the low-level chunk routes.

The vector-store layer above decides *what* goes into an index; this router only knows the configured
backends (by provider id) and how to reach the index of a vector store the caller owns. The low-level
routes let a client bring its own chunks:

- ``POST /v1/vector-io/insert`` upserts chunks into a vector store's index. Chunks without an
  ``embedding`` are embedded with the store's embedding model; an embedding of the wrong dimension is
  a 400 naming the chunk.
- ``POST /v1/vector-io/query`` searches the index directly (no filenames, no query rewriting); as in
  ``/search``, chunks of files still being ingested are hidden.
"""

from __future__ import annotations

import logging

from underlay.api.errors import InvalidRequestError, UpstreamError
from underlay.api.inference import EmbeddingsRequest
from underlay.api.vector_io import (
    Chunk,
    HybridOptions,
    InsertChunksRequest,
    InsertChunksResponse,
    QueryChunksRequest,
    QueryChunksResponse,
    ScoredChunk,
    VectorIOApi,
    VectorIOProvider,
)
from underlay.core.routers.inference import InferenceRouter
from underlay.core.stores.vector_stores import VectorStoreRows

log = logging.getLogger("underlay.vector_io")


class VectorIORouter(VectorIOApi):
    def __init__(
        self, providers: dict[str, VectorIOProvider], rows: VectorStoreRows, inference: InferenceRouter | None
    ) -> None:
        self.providers = providers
        self.rows = rows
        self.inference = inference

    async def initialize(self) -> None:
        await self.rows.initialize()

    def provider(self, provider_id: str | None = None) -> tuple[str, VectorIOProvider]:
        """The named backend, or the first one configured."""
        if not self.providers:
            raise InvalidRequestError(
                "No vector-io provider is configured; add one under providers.vector_io "
                "(e.g. provider_type: inline::sqlite-vec).",
                param="provider_id",
            )
        if provider_id is None:
            first = next(iter(self.providers))
            return first, self.providers[first]
        if provider_id not in self.providers:
            raise InvalidRequestError(
                f"No vector-io provider '{provider_id}'; use one of: {', '.join(self.providers)}.",
                param="provider_id",
            )
        return provider_id, self.providers[provider_id]

    async def embed(self, model: str, texts: list[str], dimension: int | None = None) -> list[list[float]]:
        """Embed ``texts`` with ``model`` through the inference router, checking the dimension."""
        if self.inference is None:
            raise InvalidRequestError("Embedding needs the inference API; add it to apis.")
        response = await self.inference.openai_embeddings(EmbeddingsRequest(model=model, input=texts))
        vectors = sorted(response.data, key=lambda e: e.index)
        out: list[list[float]] = []
        for item in vectors:
            if not isinstance(item.embedding, list):
                raise UpstreamError(model, "returned base64 embeddings where floats were asked for")
            if dimension is not None and len(item.embedding) != dimension:
                raise InvalidRequestError(
                    f"Model '{model}' returned {len(item.embedding)}-dimensional embeddings but the vector store "
                    f"expects {dimension}; create the store with the matching embedding_dimension."
                )
            out.append([float(x) for x in item.embedding])
        if len(out) != len(texts):
            raise UpstreamError(model, f"returned {len(out)} embeddings for {len(texts)} inputs")
        return out

    # ---- low-level routes ---------------------------------------------------------------------------

    async def insert_chunks(self, params: InsertChunksRequest) -> InsertChunksResponse:
        store = await self.rows.get_store(params.vector_store_id, "update")
        _, provider = self.provider(store.provider_id)
        dimension = int(store.embedding_dimension)
        missing = [i for i, c in enumerate(params.chunks) if c.embedding is None]
        chunks = list(params.chunks)
        if missing:
            vectors = await self.embed(store.embedding_model, [chunks[i].content for i in missing], dimension)
            for i, vector in zip(missing, vectors, strict=True):
                chunks[i] = chunks[i].model_copy(update={"embedding": vector})
        for i, chunk in enumerate(chunks):
            if chunk.embedding is not None and len(chunk.embedding) != dimension:
                raise InvalidRequestError(
                    f"chunks[{i}].embedding has {len(chunk.embedding)} dimensions; this vector store holds "
                    f"{dimension}-dimensional embeddings.",
                    param=f"chunks[{i}].embedding",
                )
        await provider.insert_chunks(store.id, chunks)  # its failures arrive typed (underlay.core.boundary)
        return InsertChunksResponse(vector_store_id=store.id, inserted=len(chunks))

    async def query_chunks(self, params: QueryChunksRequest) -> QueryChunksResponse:
        store = await self.rows.get_store(params.vector_store_id)
        _, provider = self.provider(store.provider_id)
        mode = params.search_mode
        if mode in ("keyword", "hybrid") and not params.query:
            raise InvalidRequestError(f"search_mode '{mode}' needs query text.", param="query")
        embedding = params.embedding
        if mode in ("vector", "hybrid") and embedding is None:
            if not params.query:
                raise InvalidRequestError("Pass query (text to embed) or embedding.", param="query")
            embedding = (await self.embed(store.embedding_model, [params.query], int(store.embedding_dimension)))[0]
        if embedding is not None and len(embedding) != int(store.embedding_dimension):
            raise InvalidRequestError(
                f"embedding has {len(embedding)} dimensions; the store expects {store.embedding_dimension}.",
                param="embedding",
            )
        hidden = await self.rows.not_ready(store.id)
        results = await provider.query(
            store.id,
            mode=mode,
            k=params.max_num_results,
            embedding=embedding if mode != "keyword" else None,
            query_text=params.query if mode != "vector" else None,
            filters=params.filters,
            hybrid=params.ranking_options or (HybridOptions() if mode == "hybrid" else None),
            exclude_documents=hidden or None,
        )
        hidden_set = set(hidden)
        data = [
            ScoredChunk(chunk=_without_embedding(r.chunk), score=r.score)
            for r in results
            if r.chunk.document_id not in hidden_set
        ]
        return QueryChunksResponse(data=data)


def _without_embedding(chunk: Chunk) -> Chunk:
    return chunk.model_copy(update={"embedding": None}) if chunk.embedding is not None else chunk
