"""Chroma as a vector-io backend, shared by ``inline::chromadb`` (PersistentClient) and ``remote::chromadb``.

One collection per index, created with cosine space and *no embedding function*: every vector comes
from Underlay, and Chroma's default function (which downloads a model) must never run. The collection
metadata records the index's dimension. Each record keeps the chunk text as its document and, as
metadata, ``u_doc`` (the document id), ``u_attrs`` / ``u_meta`` (attributes and metadata as JSON text,
so exact types survive) and the typed attribute keys of ``pushdown`` (numbers as floats, because
Chroma's ``$in`` wants one type per list).

What is pushed into Chroma: vector search (HNSW) with every filter except orderings on strings
(Chroma's ``$gt`` and friends are numeric only), and ``exclude_documents`` as ``u_doc $nin``. String
orderings are evaluated by the FTS5 sidecar and given to Chroma as the ``ids`` to search among.
Chroma's local engine has no BM25 ranking (``$contains`` filters, it does not score), so keyword
search is the sidecar's (see ``sidecar``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from underlay.api.errors import (
    NotFoundError,
    ProviderError,
    ServiceUnavailableError,
    UnderlayError,
    UpstreamError,
    UpstreamTimeoutError,
)
from underlay.api.vector_io import Chunk, ScoredChunk
from underlay.providers.utils.vector.base import not_found, sanitize_index_name
from underlay.providers.utils.vector.keyword import dump_json
from underlay.providers.utils.vector.memindex import VectorArray
from underlay.providers.utils.vector.pushdown import (
    TRUE,
    AllOf,
    AnyOf,
    Constant,
    Match,
    Node,
    Range,
    Unsupported,
    typed_attributes,
)
from underlay.providers.utils.vector.sidecar import BlockingStore, SidecarVectorIO, chunk_from_stored, ranked

T = TypeVar("T")
DIMENSION_KEY = "underlay_dimension"
INDEX_ID_KEY = "underlay_index_id"


def collection_name(index_id: str) -> str:
    """3-63 characters of ``[a-z0-9_]``, starting and ending with one of ``[a-z0-9]``: what Chroma accepts."""
    return sanitize_index_name(index_id, prefix="underlay")


def _value(node_kind: str, value: Any) -> Any:
    return float(value) if node_kind == "number" else value


def to_chroma(node: Node) -> dict[str, Any]:
    """The plan as a Chroma ``where`` document; ``Unsupported`` for orderings on strings."""
    if isinstance(node, Match):
        values = [_value(node.kind, v) for v in node.values]
        if len(values) == 1:
            return {node.field: {"$ne" if node.negate else "$eq": values[0]}}
        return {node.field: {"$nin" if node.negate else "$in": values}}
    if isinstance(node, Range):
        if node.kind != "number":
            raise Unsupported("Chroma orders numbers only")
        return {node.field: {f"${node.op}": float(node.value)}}  # type: ignore[arg-type]
    if isinstance(node, AllOf):
        return {"$and": [to_chroma(part) for part in node.parts]}
    if isinstance(node, AnyOf):
        return {"$or": [to_chroma(part) for part in node.parts]}
    assert isinstance(node, Constant) and node.value  # FALSE never reaches a store
    return {}


class _Gone(Exception):
    """A cached collection handle points at a collection that no longer exists."""


class ChromaVectorIO(SidecarVectorIO):
    """A ``VectorIOProvider`` on a Chroma client (persistent or HTTP) plus the FTS5 sidecar."""

    def __init__(
        self,
        provider_id: str,
        make_client: Callable[[], Any],
        *,
        keyword_db: str,
        threads: int,
        where: str,
        hnsw: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(provider_id, keyword_db, threads)
        self._make_client = make_client
        self._store = BlockingStore(threads, "chroma")
        self._where = where
        self._hnsw = hnsw or {}
        self._client: Any = None
        self._collections: dict[str, Any] = {}
        self._batch = 1000

    @contextlib.contextmanager
    def _errors(self, action: str) -> Iterator[None]:
        try:
            yield
        except UnderlayError:
            raise
        except Exception as exc:
            raise _translate_error(self.provider_id, self._where, action, exc) from exc

    async def _open_store(self) -> None:
        try:
            import chromadb  # noqa: F401
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ProviderError(self.provider_id, "Chroma backends need chromadb: pip install chromadb") from exc
        with self._errors("open Chroma"):
            self._client = await self._store.run(self._make_client)
            self._batch = max(1, min(1000, int(await self._store.run(self._client.get_max_batch_size))))

    async def _close_store(self) -> None:
        self._collections.clear()
        self._client = None
        await self._store.close()

    # ---- collections ------------------------------------------------------------------------------

    def _get(self, index_id: str) -> Any | None:
        """The collection (fetched, not cached), or None; runs on a worker thread."""
        from chromadb.errors import NotFoundError as ChromaNotFound

        try:
            collection = self._client.get_collection(collection_name(index_id), embedding_function=None)
        except ChromaNotFound:
            return None
        except ValueError as exc:  # older clients say "does not exist" with a ValueError
            if "does not exist" in str(exc):
                return None
            raise
        self._collections[index_id] = collection
        return collection

    async def _on_collection(self, index_id: str, action: str, fn: Callable[[Any], T]) -> T:
        """Run ``fn(collection)`` on a worker thread; a stale handle is refreshed once, a missing index is 404."""
        from chromadb.errors import NotFoundError as ChromaNotFound

        def call() -> T:
            collection = self._collections.get(index_id) or self._get(index_id)
            if collection is None:
                raise _Gone
            try:
                return fn(collection)
            except ChromaNotFound:
                self._collections.pop(index_id, None)
                collection = self._get(index_id)  # deleted and created again by another worker?
                if collection is None:
                    raise _Gone from None
                return fn(collection)

        with self._errors(action):
            try:
                return await self._store.run(call)
            except _Gone:
                self._collections.pop(index_id, None)
                self._forget(index_id)
                raise not_found(index_id) from None

    async def _store_dimension(self, index_id: str) -> int | None:
        with self._errors("look up an index"):
            collection = await self._store.run(self._get, index_id)
        if collection is None:
            self._collections.pop(index_id, None)
            return None
        return int((collection.metadata or {}).get(DIMENSION_KEY, 0)) or None

    async def _store_create(self, index_id: str, dimension: int) -> None:
        def create() -> None:
            configuration: dict[str, Any] = {"hnsw": {"space": "cosine", **self._hnsw}}
            self._collections[index_id] = self._client.get_or_create_collection(
                collection_name(index_id),
                embedding_function=None,
                configuration=configuration,
                metadata={DIMENSION_KEY: dimension, INDEX_ID_KEY: index_id},
            )

        with self._errors("create an index"):
            await self._store.run(create)

    async def _store_drop(self, index_id: str) -> None:
        from chromadb.errors import NotFoundError as ChromaNotFound

        def drop() -> None:
            self._collections.pop(index_id, None)
            with contextlib.suppress(ChromaNotFound):
                self._client.delete_collection(collection_name(index_id))

        with self._errors("delete an index"):
            await self._store.run(drop)

    # ---- writes -----------------------------------------------------------------------------------

    async def _store_upsert(self, index_id: str, chunks: list[Chunk], vectors: VectorArray) -> None:
        rows = vectors.tolist()
        metadatas = [
            {
                "u_doc": chunk.document_id,
                "u_attrs": dump_json(chunk.attributes),
                "u_meta": dump_json(chunk.metadata),
                **typed_attributes(chunk.attributes, numbers_as_float=True),
            }
            for chunk in chunks
        ]

        def upsert(collection: Any) -> None:
            for start in range(0, len(chunks), self._batch):
                end = start + self._batch
                collection.upsert(
                    ids=[chunk.chunk_id for chunk in chunks[start:end]],
                    embeddings=rows[start:end],
                    documents=[chunk.content for chunk in chunks[start:end]],
                    metadatas=metadatas[start:end],
                )

        await self._on_collection(index_id, "insert chunks", upsert)

    async def _store_delete_document(self, index_id: str, document_id: str) -> None:
        await self._on_collection(
            index_id, "delete a document", lambda collection: collection.delete(where={"u_doc": document_id})
        )

    # ---- search -----------------------------------------------------------------------------------

    async def _store_search(
        self,
        index_id: str,
        query: list[float],
        k: int,
        node: Node,
        exclude_documents: list[str],
        chunk_ids: list[str] | None,
    ) -> list[ScoredChunk]:
        clauses: list[dict[str, Any]] = []
        if node != TRUE:
            clauses.append(to_chroma(node))
        if exclude_documents:
            clauses.append({"u_doc": {"$nin": exclude_documents}})
        where = None if not clauses else clauses[0] if len(clauses) == 1 else {"$and": clauses}

        def search(collection: Any) -> dict[str, Any]:
            return dict(
                collection.query(
                    query_embeddings=[query],
                    n_results=k,
                    where=where,
                    ids=chunk_ids,
                    include=["documents", "metadatas", "distances"],
                )
            )

        result = await self._on_collection(index_id, "search vectors", search)
        hits = []
        for chunk_id, content, meta, distance in zip(
            result["ids"][0], result["documents"][0], result["metadatas"][0], result["distances"][0], strict=True
        ):
            chunk = chunk_from_stored(chunk_id, meta["u_doc"], content or "", meta["u_attrs"], meta["u_meta"])
            hits.append((chunk, 1.0 - float(distance)))
        return ranked(hits)


def _translate_error(provider_id: str, where: str, action: str, exc: Exception) -> UnderlayError:
    """Chroma client failures as API errors: unreachable 503, timeouts 504, anything else 502."""
    try:
        import httpx
        from chromadb.errors import NotFoundError as ChromaNotFound
    except ImportError:  # pragma: no cover
        return UpstreamError(provider_id, f"Chroma failed to {action}: {exc}")
    if isinstance(exc, ChromaNotFound):
        return NotFoundError("Chroma collection", str(exc))
    chain: list[BaseException] = []
    cause: BaseException | None = exc
    while cause is not None and len(chain) < 8:  # the client wraps transport errors in its own
        chain.append(cause)
        cause = cause.__cause__ or cause.__context__
    if any(isinstance(e, httpx.TimeoutException | TimeoutError) for e in chain):
        return UpstreamTimeoutError(provider_id, f"Chroma at {where} timed out trying to {action}.")
    if any(isinstance(e, httpx.TransportError | ConnectionError) for e in chain) or (
        "could not connect to a chroma server" in str(exc).lower()
    ):
        return ServiceUnavailableError(provider_id, f"cannot reach Chroma at {where} to {action}: {exc}")
    return UpstreamError(provider_id, f"Chroma failed to {action}: {exc}")
