"""Milvus as a vector-io backend, shared by ``inline::milvus`` (Milvus Lite) and ``remote::milvus`` (a server).

On a Milvus server everything is native. One collection per index (strong consistency), with
these fields:

- ``chunk_id`` (primary key), ``document_id``, ``content``; attributes and metadata as JSON text
  (``attributes_json``, ``metadata_json``) so their exact types come back;
- ``embedding``: the unit vector, searched by COSINE (FLAT, i.e. exact, on Milvus Lite; HNSW by
  default on a server, with ``ef`` raised to k when k is larger);
- ``attrs``: a JSON field with the typed attribute keys of ``pushdown``, which filters run on;
- ``search_text`` (the content with accents folded, see ``textfold``) and ``sparse``, its BM25
  vector, computed by Milvus's own BM25 function (standard tokenizer, lowercase) and searched through
  a BM25 sparse inverted index (k1 = 1.2, b = 0.75). Only with ``keyword="native"``.

Filters become Milvus boolean expressions over ``attrs``: ``ne`` / ``nin`` are written as
``not (exists K and K == v)``, so a missing key matches them as the reference semantics require
(a bare ``K != v`` is null, hence false, on a missing key). Strings are rendered as escaped
literals (Milvus Lite has no expression templates). ``exclude_documents`` is ``not (document_id in
[...])``. Both searches apply the expression before ranking.

Keyword search is ``native`` (Milvus's BM25, the default for a server) or ``sidecar`` (the FTS5
index of ``sidecar`` beside the collection, the default for Milvus Lite). Milvus Lite 3.x computes
BM25 statistics per segment and, for rows not yet flushed, over the rows that pass the filter only,
so a filter changes the ranking of the chunks it keeps; that breaks the contract that filtering a
keyword search keeps the unfiltered order, hence the sidecar there. A Milvus server computes them
over the whole collection. Milvus Lite reports BM25 as a negative distance, a server as a positive
score; scores here are always the positive BM25 value.

pymilvus's client blocks, so each call runs on a worker thread of the backend's own pool.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from underlay.api.errors import (
    InvalidRequestError,
    NotFoundError,
    ProviderError,
    ServiceUnavailableError,
    UnderlayError,
    UpstreamError,
    UpstreamTimeoutError,
)
from underlay.api.vector_io import AttributeValue, Chunk, Filter, IndexInfo, ScoredChunk
from underlay.providers.utils.vector.base import (
    VectorIOBase,
    check_chunks,
    dimension_conflict,
    not_found,
    sanitize_index_name,
    validate_dimension,
)
from underlay.providers.utils.vector.keyword import dump_json
from underlay.providers.utils.vector.memindex import unit_vectors
from underlay.providers.utils.vector.pushdown import (
    FALSE,
    TRUE,
    AllOf,
    AnyOf,
    Match,
    Node,
    Range,
    plan,
    typed_attributes,
)
from underlay.providers.utils.vector.sidecar import BlockingStore, SidecarKeywordIndex, chunk_from_stored, ranked
from underlay.providers.utils.vector.textfold import fold_text

MAX_ID_BYTES = 2048
MAX_TEXT_BYTES = 65535  # Milvus's VARCHAR limit
_UPSERT_BATCH = 256
_OUTPUT = ["chunk_id", "document_id", "content", "attributes_json", "metadata_json"]
_OPS = {"gt": ">", "gte": ">=", "lt": "<", "lte": "<="}
_WORD = re.compile(r"\w", re.UNICODE)

# pymilvus pings the server every 10 s even when idle. Milvus itself allows that; Milvus Lite's gRPC
# server (Python gRPC's default policy: one idle ping per 5 minutes) answers the third early ping with
# GOAWAY "too many pings", and every later call on the shared channel fails. Ping rarely, and only
# during calls, when the server is Milvus Lite's.
LITE_GRPC_OPTIONS: dict[str, Any] = {
    "grpc.keepalive_time_ms": 300_000,
    "grpc.keepalive_permit_without_calls": False,
}


def collection_name(index_id: str) -> str:
    return sanitize_index_name(index_id, prefix="underlay")


def literal(value: AttributeValue) -> str:
    """A Milvus expression literal. Strings use only the escapes both Milvus and Milvus Lite accept."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value)
    escaped = (
        value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t")
    )
    return f'"{escaped}"'


def _field(key: str) -> str:
    return f'attrs["{key}"]'  # typed keys are [snb]_<hex>: nothing to escape


def to_milvus(node: Node) -> str:
    """The plan as a Milvus boolean expression (never for ``FALSE``; ``TRUE`` is the empty string)."""
    if isinstance(node, Match):
        field = _field(node.field)
        hit = " or ".join(f"{field} == {literal(v)}" for v in node.values)
        return f"(not (exists {field} and ({hit})))" if node.negate else f"(exists {field} and ({hit}))"
    if isinstance(node, Range):
        field = _field(node.field)
        return f"(exists {field} and {field} {_OPS[node.op]} {literal(node.value)})"
    if isinstance(node, AllOf):
        return "(" + " and ".join(to_milvus(part) for part in node.parts) + ")"
    if isinstance(node, AnyOf):
        return "(" + " or ".join(to_milvus(part) for part in node.parts) + ")"
    assert node == TRUE
    return ""


def _check_sizes(chunks: list[Chunk]) -> None:
    """Milvus VARCHAR fields have hard byte limits; reject what would not fit, naming the field."""
    for i, chunk in enumerate(chunks):
        for name, value, limit in (
            ("chunk_id", chunk.chunk_id, MAX_ID_BYTES),
            ("document_id", chunk.document_id, MAX_ID_BYTES),
            ("content", chunk.content, MAX_TEXT_BYTES),
            ("attributes", dump_json(chunk.attributes), MAX_TEXT_BYTES),
            ("metadata", dump_json(chunk.metadata), MAX_TEXT_BYTES),
        ):
            if len(value.encode("utf-8")) > limit:
                raise InvalidRequestError(
                    f"chunks[{i}].{name} is longer than Milvus can store ({limit} bytes).", param=f"chunks[{i}].{name}"
                )


class MilvusVectorIO(VectorIOBase):
    """A ``VectorIOProvider`` on pymilvus's ``MilvusClient`` (Milvus Lite file or server URI)."""

    def __init__(
        self,
        provider_id: str,
        client_kwargs: dict[str, Any],
        *,
        where: str,
        threads: int,
        index_type: str = "FLAT",
        index_params: dict[str, Any] | None = None,
        search_ef: int | None = None,
        keyword_db: str | None = None,
        flush_after_write: bool = False,
    ) -> None:
        """``keyword_db``: keep BM25 in an FTS5 index in that file instead of Milvus's own BM25.

        ``flush_after_write``: seal new rows into a segment after every write. Milvus Lite searches
        unflushed rows by brute force in Python (about 340 ms at 5,000 x 384) and flushed ones through
        their index (about 17 ms), and a flush costs about 15 ms; a Milvus server needs none of this.
        """
        self._flush = flush_after_write
        self.provider_id = provider_id
        self.keyword = SidecarKeywordIndex(keyword_db, threads=2) if keyword_db is not None else None
        self._keyword_db = keyword_db
        self._client_kwargs = client_kwargs
        self._where = where
        self._store = BlockingStore(threads, "milvus")
        self._index_type = index_type
        self._index_params = index_params or {}
        self._search_ef = search_ef
        self._client: Any = None
        self._dimensions: dict[str, int] = {}
        # Milvus Lite rejects a flush that interleaves with another write on the same collection
        # ("current_seq is monotonic"), so with flush_after_write a write and its flush run as one unit.
        self._write_locks: dict[str, asyncio.Lock] = {}

    def _write_lock(self, index_id: str) -> contextlib.AbstractAsyncContextManager[Any]:
        if not self._flush:
            return contextlib.nullcontext()
        return self._write_locks.setdefault(index_id, asyncio.Lock())

    @contextlib.contextmanager
    def _errors(self, action: str, index_id: str | None = None) -> Iterator[None]:
        try:
            yield
        except UnderlayError:
            raise
        except Exception as exc:
            error = _translate_error(self.provider_id, self._where, action, exc)
            if isinstance(error, NotFoundError) and index_id is not None:
                self._dimensions.pop(index_id, None)
                raise not_found(index_id) from exc
            raise error from exc

    async def _call(self, action: str, method: str, *args: Any, index_id: str | None = None, **kwargs: Any) -> Any:
        with self._errors(action, index_id):
            return await self._store.run(getattr(self._client, method), *args, **kwargs)

    # ---- lifecycle --------------------------------------------------------------------------------

    async def initialize(self) -> None:
        try:
            from pymilvus import MilvusClient
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ProviderError(self.provider_id, "Milvus backends need pymilvus: pip install pymilvus") from exc

        def connect() -> Any:
            uri = str(self._client_kwargs.get("uri", ""))
            if uri.endswith(".db"):  # Milvus Lite: its data directory's parent must exist
                Path(uri).parent.mkdir(parents=True, exist_ok=True)
            return MilvusClient(**self._client_kwargs)

        with self._errors("connect to Milvus"):
            self._client = await self._store.run(connect)
        if self.keyword is not None:
            if self._keyword_db != ":memory:":
                await self._store.run(lambda: Path(str(self._keyword_db)).parent.mkdir(parents=True, exist_ok=True))
            await self.keyword.open()

    async def shutdown(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            with contextlib.suppress(Exception):
                await self._store.run(client.close)
        await self._store.close()
        if self.keyword is not None:
            await self.keyword.close()

    # ---- indexes ----------------------------------------------------------------------------------

    async def _describe(self, index_id: str) -> int | None:
        name = collection_name(index_id)
        if not await self._call("look up an index", "has_collection", name):
            return None
        try:
            info = await self._call("look up an index", "describe_collection", name)
        except NotFoundError:
            return None
        for field in info.get("fields", []):
            if field.get("name") == "embedding":
                return int(field.get("params", {}).get("dim"))
        raise UpstreamError(self.provider_id, f"Milvus collection {name} has no embedding field.")

    async def _index_dimension(self, index_id: str) -> int:
        dimension = self._dimensions.get(index_id)
        if dimension is None:
            dimension = await self._describe(index_id)
            if dimension is None:
                raise not_found(index_id)
            self._dimensions[index_id] = dimension
        return dimension

    async def index_info(self, index_id: str) -> IndexInfo:
        dimension = await self._index_dimension(index_id)
        stats = await self._call("count chunks", "get_collection_stats", collection_name(index_id), index_id=index_id)
        return IndexInfo(index_id=index_id, dimension=dimension, chunk_count=int(stats.get("row_count", 0)))

    async def create_index(self, index_id: str, dimension: int) -> None:
        validate_dimension(dimension)
        existing = await self._describe(index_id)
        if existing is not None:
            if existing != dimension:
                raise dimension_conflict(index_id, existing, dimension)
            if self.keyword is not None:
                await self.keyword.create_index(index_id)
            self._dimensions[index_id] = dimension
            return
        from pymilvus import DataType, Function, FunctionType

        schema = self._client.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("chunk_id", DataType.VARCHAR, is_primary=True, max_length=MAX_ID_BYTES)
        schema.add_field("document_id", DataType.VARCHAR, max_length=MAX_ID_BYTES)
        schema.add_field("content", DataType.VARCHAR, max_length=MAX_TEXT_BYTES)
        schema.add_field("embedding", DataType.FLOAT_VECTOR, dim=dimension)
        schema.add_field("attrs", DataType.JSON)
        schema.add_field("attributes_json", DataType.VARCHAR, max_length=MAX_TEXT_BYTES)
        schema.add_field("metadata_json", DataType.VARCHAR, max_length=MAX_TEXT_BYTES)
        index_params = self._client.prepare_index_params()
        index_params.add_index(
            "embedding", index_type=self._index_type, metric_type="COSINE", params=dict(self._index_params)
        )
        if self.keyword is None:
            schema.add_field(
                "search_text",
                DataType.VARCHAR,
                max_length=MAX_TEXT_BYTES,
                enable_analyzer=True,
                analyzer_params={"tokenizer": "standard", "filter": ["lowercase"]},
            )
            schema.add_field("sparse", DataType.SPARSE_FLOAT_VECTOR)
            schema.add_function(
                Function(
                    name="bm25",
                    function_type=FunctionType.BM25,
                    input_field_names=["search_text"],
                    output_field_names=["sparse"],
                )
            )
            index_params.add_index(
                "sparse",
                index_type="SPARSE_INVERTED_INDEX",
                metric_type="BM25",
                params={"bm25_k1": 1.2, "bm25_b": 0.75},
            )
        await self._call(
            "create an index",
            "create_collection",
            collection_name(index_id),
            schema=schema,
            index_params=index_params,
            consistency_level="Strong",
        )
        if self.keyword is not None:
            await self.keyword.create_index(index_id)
        self._dimensions[index_id] = dimension

    async def delete_index(self, index_id: str) -> None:
        if await self._describe(index_id) is None:
            self._dimensions.pop(index_id, None)
            raise not_found(index_id)
        await self._call("delete an index", "drop_collection", collection_name(index_id))
        if self.keyword is not None:
            await self.keyword.delete_index(index_id)
        self._dimensions.pop(index_id, None)

    # ---- writes -----------------------------------------------------------------------------------

    async def insert_chunks(self, index_id: str, chunks: list[Chunk]) -> None:
        dimension = await self._index_dimension(index_id)
        batch = check_chunks(chunks, dimension)
        if not batch:
            return
        _check_sizes(batch)
        vectors = unit_vectors([chunk.embedding or () for chunk in batch], dimension).tolist()
        rows = [
            {
                "chunk_id": chunk.chunk_id,
                "document_id": chunk.document_id,
                "content": chunk.content,
                "embedding": vectors[i],
                "attrs": typed_attributes(chunk.attributes),
                "attributes_json": dump_json(chunk.attributes),
                "metadata_json": dump_json(chunk.metadata),
                **({"search_text": fold_text(chunk.content)} if self.keyword is None else {}),
            }
            for i, chunk in enumerate(batch)
        ]
        name = collection_name(index_id)
        async with self._write_lock(index_id):
            for start in range(0, len(rows), _UPSERT_BATCH):
                await self._call(
                    "insert chunks", "upsert", name, rows[start : start + _UPSERT_BATCH], index_id=index_id
                )
            if self._flush:
                await self._flush_collection("flush chunks", name, index_id)
        if self.keyword is not None:  # after the store, as in ``sidecar``: a retry heals a failure between
            await self.keyword.upsert(index_id, batch)

    async def _flush_collection(self, action: str, name: str, index_id: str) -> None:
        """Flush, retrying twice when another client's flush raced ours: a flush is idempotent, and
        Milvus Lite refuses the later of two overlapping ones ("current_seq is monotonic")."""
        for attempt in range(3):
            try:
                await self._store.run(self._client.flush, name)
                return
            except Exception as exc:
                if attempt == 2 or "current_seq is monotonic" not in str(exc):
                    with self._errors(action, index_id):
                        raise
            await asyncio.sleep(0.05 * (attempt + 1))

    async def delete_document(self, index_id: str, document_id: str) -> None:
        await self._index_dimension(index_id)
        async with self._write_lock(index_id):
            await self._call(
                "delete a document",
                "delete",
                collection_name(index_id),
                filter=f"document_id == {literal(document_id)}",
                index_id=index_id,
            )
            if self._flush:
                await self._flush_collection("flush a delete", collection_name(index_id), index_id)
        if self.keyword is not None:
            await self.keyword.delete_document(index_id, document_id)

    # ---- searches ---------------------------------------------------------------------------------

    @staticmethod
    def _expression(filters: Filter | None, exclude_documents: list[str]) -> str | None:
        """The filter and exclusion as one expression; None when nothing can match."""
        node = plan(filters)
        if node == FALSE:
            return None
        clauses = [to_milvus(node)] if node != TRUE else []
        if exclude_documents:
            clauses.append(f"(not (document_id in [{', '.join(literal(d) for d in exclude_documents)}]))")
        return " and ".join(clauses)

    @staticmethod
    def _hits(result: Any) -> list[tuple[Chunk, float]]:
        """``(chunk, distance)`` pairs of the first (only) query of a search result."""
        hits = []
        for hit in result[0] if result else []:
            entity = hit.get("entity", hit)
            chunk = chunk_from_stored(
                entity["chunk_id"],
                entity["document_id"],
                entity["content"],
                entity["attributes_json"],
                entity["metadata_json"],
            )
            hits.append((chunk, float(hit["distance"])))
        return hits

    async def _vector_search(
        self, index_id: str, embedding: list[float], k: int, filters: Filter | None, exclude_documents: list[str]
    ) -> list[ScoredChunk]:
        dimension = await self._index_dimension(index_id)
        expression = self._expression(filters, exclude_documents)
        if expression is None:
            return []
        params: dict[str, Any] = {}
        if self._search_ef is not None:
            params["ef"] = max(self._search_ef, k)
        result = await self._call(
            "search vectors",
            "search",
            collection_name(index_id),
            data=[unit_vectors([embedding], dimension)[0].tolist()],
            anns_field="embedding",
            limit=k,
            filter=expression,
            output_fields=_OUTPUT,
            search_params={"metric_type": "COSINE", "params": params},
            consistency_level="Strong",
            index_id=index_id,
        )
        return ranked(self._hits(result))

    async def _keyword_search(
        self, index_id: str, query_text: str, k: int, filters: Filter | None, exclude_documents: list[str]
    ) -> list[ScoredChunk]:
        await self._index_dimension(index_id)
        if self.keyword is not None:
            return await self.keyword.search(
                index_id, query_text, k, filters=filters, exclude_documents=exclude_documents
            )
        text = fold_text(query_text)
        expression = self._expression(filters, exclude_documents)
        if expression is None or not _WORD.search(text):
            return []
        result = await self._call(
            "search keywords",
            "search",
            collection_name(index_id),
            data=[text],
            anns_field="sparse",
            limit=k,
            filter=expression,
            output_fields=_OUTPUT,
            search_params={"metric_type": "BM25"},
            consistency_level="Strong",
            index_id=index_id,
        )
        # Milvus Lite gives BM25 as a negative distance, a server as a positive score.
        return ranked([(chunk, abs(score)) for chunk, score in self._hits(result) if score != 0])


def _translate_error(provider_id: str, where: str, action: str, exc: Exception) -> UnderlayError:
    """pymilvus failures as API errors: unknown collections 404, unreachable 503, timeouts 504."""
    text = str(exc)
    lowered = text.lower()
    code = getattr(exc, "code", None)
    if code == 100 or "collection not found" in lowered or "can't find collection" in lowered:
        return NotFoundError("Milvus collection", text)
    if isinstance(exc, TimeoutError) or "deadline exceeded" in lowered or "timeout" in type(exc).__name__.lower():
        return UpstreamTimeoutError(provider_id, f"Milvus at {where} timed out trying to {action}.")
    if (
        isinstance(exc, ConnectionError | OSError)
        or "fail connecting" in lowered
        or "unavailable" in lowered
        or "connect" in type(exc).__name__.lower()
    ):
        return ServiceUnavailableError(provider_id, f"cannot reach Milvus at {where} to {action}: {text}")
    if "datadirlocked" in type(exc).__name__.lower() or "locked" in lowered:
        return ServiceUnavailableError(provider_id, f"the Milvus Lite data at {where} is in use by another process.")
    return UpstreamError(provider_id, f"Milvus failed to {action}: {text}")
