"""Qdrant as a vector-io backend, shared by ``inline::qdrant`` (local mode) and ``remote::qdrant`` (a server).

One collection per index (cosine distance). A point's id is a UUID derived from the chunk id, so an
upsert by chunk id is a plain Qdrant upsert. Its payload carries the chunk (``chunk_id``,
``document_id``, ``content``, attributes and metadata as JSON text, so their exact types survive) and
the typed attribute keys of ``pushdown`` that filters run on.

What is pushed into Qdrant: vector search with every filter except orderings on strings (Qdrant's
range condition is numeric only), and ``exclude_documents``. Numbers are stored and compared as
floats (Qdrant's ranges are), so integers beyond 2**53 compare at float precision. String orderings are evaluated by the
FTS5 sidecar and pushed down as a ``has_id`` condition. Qdrant has no BM25 of its own (its text index
filters, it does not rank), so keyword search is the sidecar's (see ``sidecar``).
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

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

_POINT_NAMESPACE = uuid.UUID("5b0c4f0e-8d0a-4a51-9a4c-6f1d2a0e7c11")
_UPSERT_BATCH = 256
_PAYLOAD = ["chunk_id", "document_id", "content", "attributes", "metadata"]


def point_id(chunk_id: str) -> str:
    """A stable UUID for a chunk id (Qdrant ids are UUIDs or integers)."""
    return str(uuid.uuid5(_POINT_NAMESPACE, chunk_id))


def collection_name(index_id: str) -> str:
    return sanitize_index_name(index_id, prefix="underlay")


def to_qdrant(node: Node) -> Any:
    """The plan as a Qdrant condition (a ``Filter`` or ``FieldCondition``); ``Unsupported`` for string orderings."""
    from qdrant_client import models

    if isinstance(node, Match):
        conditions: list[Any]
        if node.kind == "number":
            conditions = [models.FieldCondition(key=node.field, range=models.Range(gte=v, lte=v)) for v in node.values]
        elif node.kind == "string" and len(node.values) > 1:
            conditions = [models.FieldCondition(key=node.field, match=models.MatchAny(any=list(node.values)))]
        else:
            conditions = [models.FieldCondition(key=node.field, match=models.MatchValue(value=v)) for v in node.values]
        condition = conditions[0] if len(conditions) == 1 else models.Filter(should=conditions)
        return models.Filter(must_not=[condition]) if node.negate else condition
    if isinstance(node, Range):
        if node.kind != "number":
            raise Unsupported("Qdrant ranges are numeric only")
        return models.FieldCondition(key=node.field, range=models.Range(**{node.op: node.value}))
    if isinstance(node, AllOf):
        return models.Filter(must=[to_qdrant(part) for part in node.parts])
    if isinstance(node, AnyOf):
        return models.Filter(should=[to_qdrant(part) for part in node.parts])
    assert isinstance(node, Constant) and node.value  # FALSE never reaches a store
    return None


class QdrantVectorIO(SidecarVectorIO):
    """A ``VectorIOProvider`` on a ``QdrantClient`` (local mode or a server) plus the FTS5 sidecar."""

    def __init__(
        self,
        provider_id: str,
        client_kwargs: dict[str, Any],
        *,
        keyword_db: str | Path,
        threads: int,
        where: str,
        hnsw_ef: int | None = None,
        exact: bool = False,
    ) -> None:
        super().__init__(provider_id, keyword_db, threads)
        self._client_kwargs = client_kwargs
        self._local = "path" in client_kwargs or client_kwargs.get("location") == ":memory:"
        # Local mode keeps collections in plain dicts with no locking: one thread at a time.
        self._store = BlockingStore(1 if self._local else threads, "qdrant")
        self._where = where
        self._hnsw_ef = hnsw_ef
        self._exact = exact
        self._client: Any = None

    @contextlib.contextmanager
    def _errors(self, action: str) -> Iterator[None]:
        try:
            yield
        except UnderlayError:
            raise
        except Exception as exc:
            raise _translate_error(self.provider_id, self._where, action, exc) from exc

    async def _call(self, action: str, method: str, *args: Any, **kwargs: Any) -> Any:
        with self._errors(action):
            return await self._store.run(getattr(self._client, method), *args, **kwargs)

    async def _open_store(self) -> None:
        try:
            from qdrant_client import QdrantClient
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ProviderError(
                self.provider_id, "Qdrant backends need qdrant-client: pip install qdrant-client"
            ) from exc

        def open_client() -> Any:
            if "path" in self._client_kwargs:
                Path(self._client_kwargs["path"]).mkdir(parents=True, exist_ok=True)
            return QdrantClient(**self._client_kwargs)

        with self._errors("open Qdrant"):
            self._client = await self._store.run(open_client)
        if self._local:
            await self._store.run(self._tune_local_storage)
        if not self._local:
            await self._call("reach Qdrant", "get_collections")

    def _tune_local_storage(self) -> None:
        """Make local mode's per-point commits cheap: WAL with ``synchronous=NORMAL``.

        Local mode persists each point in its own SQLite transaction, and with SQLite's defaults every
        commit waits for an fsync: about 16 ms per chunk on this project's machines (25 s for 1,500).
        In WAL mode with ``synchronous=NORMAL`` a commit is durable against a crash of the process and
        only the last transactions can be lost to a power cut, like the sqlite-vec backend's file.
        This reaches into qdrant-client's internals, so any surprise there just leaves the defaults.
        """
        collections = getattr(getattr(self._client, "_client", None), "collections", None)
        if not isinstance(collections, dict):
            return
        for collection in collections.values():
            conn = getattr(getattr(collection, "storage", None), "storage", None)
            if conn is None:
                continue
            try:  # both are no-ops on a connection already tuned
                conn.execute("PRAGMA journal_mode = WAL")
                conn.execute("PRAGMA synchronous = NORMAL")
            except Exception:  # noqa: BLE001 - an optimisation only
                pass

    async def _close_store(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            with contextlib.suppress(Exception):
                await self._store.run(client.close)
        await self._store.close()

    async def _store_dimension(self, index_id: str) -> int | None:
        name = collection_name(index_id)
        if not await self._call("look up an index", "collection_exists", name):
            return None
        try:
            info = await self._call("look up an index", "get_collection", name)
        except NotFoundError:
            return None
        vectors = info.config.params.vectors
        return int(vectors.size)

    async def _store_create(self, index_id: str, dimension: int) -> None:
        from qdrant_client import models

        name = collection_name(index_id)
        await self._call(
            "create an index",
            "create_collection",
            name,
            vectors_config=models.VectorParams(size=dimension, distance=models.Distance.COSINE),
        )
        if self._local:
            await self._store.run(self._tune_local_storage)
        else:
            # Exclusion and document deletes filter on document_id; index it on a server.
            await self._call(
                "create an index",
                "create_payload_index",
                name,
                field_name="document_id",
                field_schema=models.PayloadSchemaType.KEYWORD,
            )

    async def _store_drop(self, index_id: str) -> None:
        await self._call("delete an index", "delete_collection", collection_name(index_id))

    async def _store_upsert(self, index_id: str, chunks: list[Chunk], vectors: VectorArray) -> None:
        from qdrant_client import models

        name = collection_name(index_id)
        rows = vectors.tolist()
        points = [
            models.PointStruct(
                id=point_id(chunk.chunk_id),
                vector=rows[i],
                payload={
                    "chunk_id": chunk.chunk_id,
                    "document_id": chunk.document_id,
                    "content": chunk.content,
                    "attributes": dump_json(chunk.attributes),
                    "metadata": dump_json(chunk.metadata),
                    # Numbers as floats: Qdrant ranges compare as floats, so stored ints beyond 2**53
                    # would otherwise never equal the (rounded) value they are compared with.
                    **typed_attributes(chunk.attributes, numbers_as_float=True),
                },
            )
            for i, chunk in enumerate(chunks)
        ]
        for start in range(0, len(points), _UPSERT_BATCH):
            await self._call_index(
                index_id, "insert chunks", "upsert", name, points=points[start : start + _UPSERT_BATCH], wait=True
            )

    async def _call_index(self, index_id: str, action: str, method: str, *args: Any, **kwargs: Any) -> Any:
        """A call on one index's collection; a vanished collection is that index not found."""
        try:
            return await self._call(action, method, *args, **kwargs)
        except NotFoundError:
            self._forget(index_id)
            raise not_found(index_id) from None

    async def _store_delete_document(self, index_id: str, document_id: str) -> None:
        from qdrant_client import models

        selector = models.FilterSelector(
            filter=models.Filter(
                must=[models.FieldCondition(key="document_id", match=models.MatchValue(value=document_id))]
            )
        )
        await self._call_index(
            index_id, "delete a document", "delete", collection_name(index_id), points_selector=selector, wait=True
        )

    async def _store_search(
        self,
        index_id: str,
        query: list[float],
        k: int,
        node: Node,
        exclude_documents: list[str],
        chunk_ids: list[str] | None,
    ) -> list[ScoredChunk]:
        from qdrant_client import models

        must: list[Any] = []
        must_not: list[Any] = []
        if node != TRUE:
            must.append(to_qdrant(node))
        if chunk_ids is not None:
            must.append(models.HasIdCondition(has_id=[point_id(cid) for cid in chunk_ids]))
        if exclude_documents:
            must_not.append(models.FieldCondition(key="document_id", match=models.MatchAny(any=exclude_documents)))
        query_filter = models.Filter(must=must or None, must_not=must_not or None) if must or must_not else None
        params = None
        if not self._local:
            params = models.SearchParams(hnsw_ef=max(self._hnsw_ef or 0, k) or None, exact=self._exact)
        result = await self._call_index(
            index_id,
            "search vectors",
            "query_points",
            collection_name(index_id),
            query=query,
            query_filter=query_filter,
            limit=k,
            with_payload=_PAYLOAD,
            search_params=params,
        )
        hits = []
        for point in result.points:
            p = point.payload or {}
            chunk = chunk_from_stored(p["chunk_id"], p["document_id"], p["content"], p["attributes"], p["metadata"])
            hits.append((chunk, float(point.score)))
        return ranked(hits)


def _translate_error(provider_id: str, where: str, action: str, exc: Exception) -> UnderlayError:
    """Qdrant client failures as API errors: missing collections 404, unreachable 503, timeouts 504."""
    text = str(exc)
    if isinstance(exc, ValueError) and "not found" in text.lower():
        return NotFoundError("Qdrant collection", text)
    try:
        import httpx
        from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse
    except ImportError:  # pragma: no cover
        return UpstreamError(provider_id, f"Qdrant failed to {action}: {exc}")
    if isinstance(exc, UnexpectedResponse):
        if exc.status_code == 404:
            return NotFoundError("Qdrant collection", text)
        if exc.status_code in (502, 503):
            return ServiceUnavailableError(provider_id, f"Qdrant at {where} is unavailable ({action}): {text}")
        return UpstreamError(provider_id, f"Qdrant failed to {action}: {text}")
    cause = exc.__cause__ if isinstance(exc, ResponseHandlingException) else exc
    if isinstance(cause, httpx.TimeoutException | TimeoutError):
        return UpstreamTimeoutError(provider_id, f"Qdrant at {where} timed out trying to {action}.")
    if isinstance(cause, httpx.TransportError | OSError) or isinstance(exc, ResponseHandlingException):
        return ServiceUnavailableError(provider_id, f"cannot reach Qdrant at {where} to {action}: {cause or exc}")
    if isinstance(exc, RuntimeError) and "already accessed by another instance" in text:
        return ServiceUnavailableError(
            provider_id, f"the Qdrant directory {where} is in use by another process: {text}"
        )
    return UpstreamError(provider_id, f"Qdrant failed to {action}: {exc}")
