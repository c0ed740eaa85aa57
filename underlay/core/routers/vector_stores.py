"""The Vector Stores router: OpenAI's vector stores, files, batches and search over vector-io backends.

What lives where:

- rows (stores, attachments, batches, chunk copies) in :class:`VectorStoreRows`, owner-filtered;
- the index in a vector-io backend (``provider_id``, default the first configured), one index per
  store, named by the store id, with ``document_id`` = file id;
- ingestion as durable jobs (:mod:`underlay.core.jobs`, kind ``vector_store.file_ingest``) run by
  :class:`~underlay.core.ingestion.pipeline.IngestionPipeline`.

``status``, ``file_counts`` and ``usage_bytes`` are computed from the attachment rows each time a store
or batch is shown (one query), never kept as counters that could drift.

Search with a list of queries runs each query on its own and merges the results, keeping each chunk's
best score: a list usually means alternative phrasings, and joining them into one string would blur
both the embedding and keyword matching.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from dataclasses import replace
from typing import Any, Literal

from underlay.api.errors import InvalidRequestError, NotFoundError
from underlay.api.inference import ChatCompletion, ChatCompletionRequest
from underlay.api.models import ModelType
from underlay.api.vector_io import HybridOptions, ScoredChunk
from underlay.api.vector_stores import (
    CreateFileBatchRequest,
    CreateVectorStoreFileRequest,
    CreateVectorStoreRequest,
    FileContentItem,
    FileCounts,
    RankingOptions,
    SearchContent,
    SearchRequest,
    SearchResult,
    SearchResultsPage,
    UpdateVectorStoreFileRequest,
    UpdateVectorStoreRequest,
    VectorStoreDeleted,
    VectorStoreFileBatchObject,
    VectorStoreFileContent,
    VectorStoreFileDeleted,
    VectorStoreFileList,
    VectorStoreFileListQuery,
    VectorStoreFileObject,
    VectorStoreList,
    VectorStoreListQuery,
    VectorStoreObject,
    VectorStoresApi,
    resolve_chunking,
)
from underlay.core.boundary import provider_failure
from underlay.core.ingestion.pipeline import JOB_KIND, IngestionPipeline
from underlay.core.jobs import JobRunner
from underlay.core.routers.files import FilesRouter
from underlay.core.routers.inference import InferenceRouter
from underlay.core.routers.vector_io import VectorIORouter
from underlay.core.stores.vector_stores import (
    FileStats,
    StoredFileBatch,
    StoredVectorStore,
    StoredVectorStoreFile,
    VectorStoreRows,
)

log = logging.getLogger("underlay.vector_stores")

DAY = 86_400
REWRITE_PROMPT = (
    "Rewrite the user's question as a short search query for a document search engine: keep the key "
    "terms, names and numbers, drop filler words. Reply with the query only, on one line."
)


def _now() -> int:
    return int(time.time())


def _filename(meta: Any, default: str) -> str:
    """The filename of a Files API object (a model or a plain mapping)."""
    value = meta.get("filename") if isinstance(meta, dict) else getattr(meta, "filename", None)
    return str(value or default)


class VectorStoresRouter(VectorStoresApi):
    def __init__(
        self,
        rows: VectorStoreRows,
        vector_io: VectorIORouter,
        inference: InferenceRouter,
        files: FilesRouter | None,
        jobs: JobRunner,
        *,
        default_embedding_model: str | None = None,
        rewrite_model: str | None = None,
        embed_batch_size: int = 32,
        max_attempts: int = 3,
    ) -> None:
        self.rows = rows
        self.vector_io = vector_io
        self.inference = inference
        self.files = files
        self.jobs = jobs
        self.default_embedding_model = default_embedding_model
        self.rewrite_model = rewrite_model
        self.pipeline = IngestionPipeline(rows, vector_io, files, embed_batch_size=embed_batch_size)
        self.max_attempts = max_attempts

    async def initialize(self) -> None:
        await self.rows.initialize()
        await self.jobs.initialize()
        self.jobs.register(
            JOB_KIND,
            self.pipeline.run,
            on_failure=self.pipeline.on_failure,
            max_attempts=self.max_attempts,
            lane="bulk",
        )
        add_hook = getattr(self.files, "add_delete_hook", None)
        if add_hook is not None:
            add_hook(self.on_file_deleted)
        await self._reconcile()

    async def _reconcile(self) -> None:
        """Attachments left ``in_progress`` whose job is gone or over can never finish: fail them.

        The job runner's failure hook normally prevents this; it covers a job table that was reset or a
        job that ended in a process without the hook (an older version).
        """
        try:
            stuck = await self.rows.stuck_files()
        except Exception as exc:
            log.warning("could not check for stuck vector store files: %s", exc)
            return
        for row in stuck:
            job_id = row.job_id
            try:
                job = await self.jobs.get(job_id) if job_id else None
            except NotFoundError:
                job = None
            if job is not None and job.status in ("queued", "running"):
                continue
            log.warning(
                "vector store file %s in %s had no live job; marking it failed", row.file_id, row.vector_store_id
            )
            await self.rows.fail_stuck(row, "Ingestion stopped unexpectedly; attach the file again.")

    # ---- helpers -------------------------------------------------------------------------------------

    async def _embedding_model(self, requested: str | None) -> tuple[str, int | None]:
        """The embedding model id and its dimension from metadata (``None`` if the model does not say)."""
        models = getattr(self.inference, "models", None)
        if models is None:
            raise InvalidRequestError("Vector stores need the inference API for embeddings; add it to apis.")
        name = requested or self.default_embedding_model
        if name is None:
            candidates = [m for m in await models.list() if m.model_type == ModelType.embedding]
            if not candidates:
                raise InvalidRequestError(
                    "No embedding model is available; register one (model_type: embedding) or pass embedding_model.",
                    param="embedding_model",
                )
            model = candidates[0]
        else:
            model = await models.get(name, param="embedding_model")
        if model.model_type != ModelType.embedding:
            raise InvalidRequestError(
                f"Model '{model.identifier}' is not an embedding model; pick one with model_type embedding.",
                param="embedding_model",
            )
        dimension = model.metadata.get("embedding_dimension")
        return model.identifier, int(dimension) if dimension else None

    def _store_object(self, row: StoredVectorStore, stats: FileStats) -> VectorStoreObject:
        expires_at = row.expires_at
        status: Literal["expired", "in_progress", "completed"]
        if expires_at is not None and expires_at <= _now():
            status = "expired"
        elif stats.in_progress:
            status = "in_progress"
        else:
            status = "completed"
        return VectorStoreObject(
            id=row.id,
            created_at=row.created_at,
            name=row.name,
            usage_bytes=stats.usage_bytes,
            file_counts=FileCounts(**stats.counts()),
            status=status,
            expires_after=row.expires_after,  # type: ignore[arg-type]  # validated into the model here
            expires_at=expires_at,
            last_active_at=row.last_active_at,
            metadata=row.metadata,
            description=row.description,
            embedding_model=row.embedding_model,
            embedding_dimension=row.embedding_dimension,
            provider_id=row.provider_id,
        )

    async def _show(self, row: StoredVectorStore) -> VectorStoreObject:
        stats = await self.rows.file_stats([row.id])
        return self._store_object(row, stats[row.id])

    @staticmethod
    def _file_object(row: StoredVectorStoreFile) -> VectorStoreFileObject:
        return VectorStoreFileObject(
            id=row.file_id,
            created_at=row.created_at,
            usage_bytes=row.usage_bytes,
            vector_store_id=row.vector_store_id,
            status=row.status,  # type: ignore[arg-type]  # validated into the model here
            last_error=row.last_error,  # type: ignore[arg-type]
            attributes=row.attributes,
            chunking_strategy=row.chunking_strategy,  # type: ignore[arg-type]
        )

    async def _touch(self, row: StoredVectorStore, *, throttle: bool = False) -> StoredVectorStore:
        """Record activity; an ``expires_after`` policy counts from here.

        Searches pass ``throttle`` so a busy store is written at most once a minute, not on every query.
        Returns the store as it now is.
        """
        now = _now()
        if throttle and now - int(row.last_active_at or 0) < 60:
            return row
        policy = row.expires_after
        expires_at = now + int(policy["days"]) * DAY if policy else row.expires_at
        values: dict[str, Any] = {"last_active_at": now}
        if policy:
            values["expires_at"] = expires_at
        await self.rows.update_store(row.id, values, action="read")  # any reader's activity counts
        return replace(row, last_active_at=now, expires_at=expires_at)

    async def _active_store(self, vector_store_id: str, action: str = "read") -> StoredVectorStore:
        row = await self.rows.get_store(vector_store_id, action)
        expires_at = row.expires_at
        if expires_at is not None and expires_at <= _now():
            raise InvalidRequestError(
                f"Vector store '{vector_store_id}' has expired; create a new one.", param="vector_store_id"
            )
        return row

    async def _check_file_exists(self, file_id: str) -> str:
        if self.files is None:
            raise InvalidRequestError("The files API is not enabled on this server; add 'files' to apis.")
        return _filename(await self.files.get_file(file_id), file_id)

    async def _attach(
        self,
        store: StoredVectorStore,
        file_id: str,
        filename: str,
        attributes: dict[str, Any] | None,
        chunking: Any,
        batch_id: str | None = None,
    ) -> StoredVectorStoreFile:
        """Create (or restart) an attachment and queue its ingestion job."""
        vs_id = store.id
        existing = await self.rows.find_file(vs_id, file_id)
        if existing is not None and existing.status == "in_progress" and existing.job_id:
            await self.jobs.cancel(existing.job_id)
        job_id = f"job_{secrets.token_hex(12)}"
        now = _now()
        row = {
            "vector_store_id": vs_id,
            "file_id": file_id,
            "created_at": existing.created_at if existing else now,
            "created_ns": existing.created_ns if existing else time.time_ns(),
            "status": "in_progress",
            "last_error": None,
            "usage_bytes": 0,
            "chunk_count": 0,
            "attributes": attributes or {},
            "chunking_strategy": resolve_chunking(chunking).model_dump(),
            "filename": filename,
            "batch_id": batch_id,
            "job_id": job_id,
            "updated_at": now,
        }
        await self.rows.upsert_file(row)
        await self.jobs.submit(
            JOB_KIND, {"vector_store_id": vs_id, "file_id": file_id}, reference=f"{vs_id}/{file_id}", job_id=job_id
        )
        return StoredVectorStoreFile.from_row(row)

    async def _detach(self, store: StoredVectorStore, row: StoredVectorStoreFile, *, any_owner: bool = False) -> None:
        """Remove an attachment: stop its job, drop its chunks from the backend, then its rows.

        The rows go last: while a row exists its chunks are either complete or hidden from search, so a
        backend failure here leaves the file attached (and the call can be repeated), never orphaned
        chunks that search would return without a file behind them.
        """
        vs_id, file_id = row.vector_store_id, row.file_id
        if row.status == "in_progress" and row.job_id:
            try:
                await self.jobs.cancel(row.job_id)
            except NotFoundError:
                pass
        _, provider = self.vector_io.provider(store.provider_id)
        await provider.delete_document(vs_id, file_id)  # its failures arrive typed (underlay.core.boundary)
        if any_owner:
            await self.rows.delete_attachment_any_owner(vs_id, file_id)
        else:
            await self.rows.delete_file(vs_id, file_id)

    # ---- vector stores -------------------------------------------------------------------------------

    async def create_vector_store(self, params: CreateVectorStoreRequest) -> VectorStoreObject:
        provider_id, provider = self.vector_io.provider(params.provider_id)
        model, dimension = await self._embedding_model(params.embedding_model)
        if params.embedding_dimension is not None:
            if dimension is not None and dimension != params.embedding_dimension:
                raise InvalidRequestError(
                    f"Model '{model}' produces {dimension}-dimensional embeddings, not {params.embedding_dimension}.",
                    param="embedding_dimension",
                )
            dimension = params.embedding_dimension
        if dimension is None:
            dimension = len((await self.vector_io.embed(model, ["dimension probe"]))[0])
        filenames = [await self._check_file_exists(f) for f in params.file_ids]
        vs_id = f"vs_{secrets.token_hex(12)}"
        now = _now()
        await provider.create_index(vs_id, dimension)
        row = {
            "id": vs_id,
            "created_at": now,
            "created_ns": time.time_ns(),
            "name": params.name or "",
            "description": params.description,
            "metadata": params.metadata or {},
            "expires_after": params.expires_after.model_dump() if params.expires_after else None,
            "expires_at": now + params.expires_after.days * DAY if params.expires_after else None,
            "last_active_at": now,
            "provider_id": provider_id,
            "embedding_model": model,
            "embedding_dimension": dimension,
        }
        await self.rows.insert_store(row)
        store = StoredVectorStore.from_row(row)
        for file_id, filename in zip(params.file_ids, filenames, strict=True):
            await self._attach(store, file_id, filename, None, params.chunking_strategy)
        return await self._show(store)

    async def list_vector_stores(self, query: VectorStoreListQuery) -> VectorStoreList:
        rows, has_more = await self.rows.page_stores(
            limit=query.limit, order=query.order, after=query.after, before=query.before
        )
        stats = await self.rows.file_stats([r.id for r in rows])
        data = [self._store_object(r, stats[r.id]) for r in rows]
        return VectorStoreList(
            data=data,
            first_id=data[0].id if data else None,
            last_id=data[-1].id if data else None,
            has_more=has_more,
        )

    async def retrieve_vector_store(self, vector_store_id: str) -> VectorStoreObject:
        return await self._show(await self.rows.get_store(vector_store_id))

    async def update_vector_store(self, vector_store_id: str, params: UpdateVectorStoreRequest) -> VectorStoreObject:
        row = await self.rows.get_store(vector_store_id, "update")
        values: dict[str, Any] = {}
        fields = params.model_fields_set
        if "name" in fields and params.name is not None:
            values["name"] = params.name
        if "metadata" in fields:
            values["metadata"] = params.metadata or {}
        if "expires_after" in fields:
            values["expires_after"] = params.expires_after.model_dump() if params.expires_after else None
            values["expires_at"] = None
        if values:
            await self.rows.update_store(vector_store_id, values)
            row = replace(row, **values)
        row = await self._touch(row)
        return await self._show(row)

    async def delete_vector_store(self, vector_store_id: str) -> VectorStoreDeleted:
        row = await self.rows.get_store(vector_store_id, "delete")
        for attachment in await self.rows.files_of(vector_store_id, statuses=["in_progress"]):
            if attachment.job_id:
                await self.jobs.cancel(attachment.job_id)
        await self.rows.delete_store(vector_store_id)
        _, provider = self.vector_io.provider(row.provider_id)
        await provider.delete_index(vector_store_id)
        return VectorStoreDeleted(id=vector_store_id)

    # ---- files ------------------------------------------------------------------------------------------

    async def create_vector_store_file(
        self, vector_store_id: str, params: CreateVectorStoreFileRequest
    ) -> VectorStoreFileObject:
        store = await self._active_store(vector_store_id, "update")
        filename = await self._check_file_exists(params.file_id)
        row = await self._attach(store, params.file_id, filename, params.attributes, params.chunking_strategy)
        await self._touch(store)
        return self._file_object(row)

    async def list_vector_store_files(
        self, vector_store_id: str, query: VectorStoreFileListQuery
    ) -> VectorStoreFileList:
        await self.rows.get_store(vector_store_id)
        return await self._file_list(vector_store_id, query, None)

    async def _file_list(
        self, vector_store_id: str, query: VectorStoreFileListQuery, batch_id: str | None
    ) -> VectorStoreFileList:
        rows, has_more = await self.rows.page_files(
            vector_store_id,
            limit=query.limit,
            order=query.order,
            after=query.after,
            before=query.before,
            status=query.filter,
            batch_id=batch_id,
        )
        data = [self._file_object(r) for r in rows]
        return VectorStoreFileList(
            data=data,
            first_id=data[0].id if data else None,
            last_id=data[-1].id if data else None,
            has_more=has_more,
        )

    async def retrieve_vector_store_file(self, vector_store_id: str, file_id: str) -> VectorStoreFileObject:
        await self.rows.get_store(vector_store_id)
        return self._file_object(await self.rows.get_file(vector_store_id, file_id))

    async def update_vector_store_file(
        self, vector_store_id: str, file_id: str, params: UpdateVectorStoreFileRequest
    ) -> VectorStoreFileObject:
        store = await self.rows.get_store(vector_store_id, "update")
        row = await self.rows.get_file(vector_store_id, file_id)
        attributes = params.attributes or {}
        await self.rows.update_file(vector_store_id, file_id, {"attributes": attributes})
        row = replace(row, attributes=attributes)
        if row.status == "completed":
            try:
                await self.pipeline.rewrite_attributes(store, file_id, attributes)
            except Exception as exc:  # the backend's own failures arrive typed; anything else still names it
                raise provider_failure(store.provider_id, exc) from None
        # An in-progress file picks the new attributes up when its job finishes.
        return self._file_object(row)

    async def delete_vector_store_file(self, vector_store_id: str, file_id: str) -> VectorStoreFileDeleted:
        store = await self.rows.get_store(vector_store_id, "update")
        row = await self.rows.get_file(vector_store_id, file_id)
        await self._detach(store, row)
        return VectorStoreFileDeleted(id=file_id)

    async def retrieve_vector_store_file_content(self, vector_store_id: str, file_id: str) -> VectorStoreFileContent:
        await self.rows.get_store(vector_store_id)
        row = await self.rows.get_file(vector_store_id, file_id)
        items: list[FileContentItem] = []
        if row.status == "completed":
            for part in await self.rows.chunk_parts(vector_store_id, file_id):
                items.extend(FileContentItem(text=item["content"]) for item in part)
        return VectorStoreFileContent(
            data=items, file_id=file_id, filename=row.filename or file_id, attributes=row.attributes
        )

    async def on_file_deleted(self, file_id: str) -> None:
        """Files API delete hook: the File is gone, so it leaves every vector store it was in."""
        for row in await self.rows.attachments_of_file(file_id):
            store = await self.rows.find_store_any_owner(row.vector_store_id)
            if store is None:
                await self.rows.delete_attachment_any_owner(row.vector_store_id, file_id)
                continue
            try:
                await self._detach(store, row, any_owner=True)
            except Exception as exc:  # the File is deleted either way; the attachment stays for a retry
                log.warning("could not remove file %s from %s: %s", file_id, row.vector_store_id, exc)

    # ---- batches ---------------------------------------------------------------------------------------

    async def _batch_object(self, row: StoredFileBatch) -> VectorStoreFileBatchObject:
        stats = (await self.rows.file_stats([row.vector_store_id], batch_id=row.id))[row.vector_store_id]
        status: Literal["cancelled", "in_progress", "failed", "completed"]
        if row.cancelled:
            status = "cancelled"
        elif stats.in_progress:
            status = "in_progress"
        elif stats.total and stats.failed == stats.total:
            status = "failed"
        else:
            status = "completed"
        return VectorStoreFileBatchObject(
            id=row.id,
            created_at=row.created_at,
            vector_store_id=row.vector_store_id,
            status=status,
            file_counts=FileCounts(**stats.counts()),
        )

    async def create_file_batch(
        self, vector_store_id: str, params: CreateFileBatchRequest
    ) -> VectorStoreFileBatchObject:
        store = await self._active_store(vector_store_id, "update")
        entries = params.entries()
        seen: set[str] = set()
        unique = []
        for candidate in entries:  # the first of each file id, in order
            if candidate.file_id not in seen:
                seen.add(candidate.file_id)
                unique.append(candidate)
        filenames = [await self._check_file_exists(e.file_id) for e in unique]
        batch_id = f"vsfb_{secrets.token_hex(12)}"
        row = {
            "id": batch_id,
            "vector_store_id": vector_store_id,
            "created_at": _now(),
            "created_ns": time.time_ns(),
            "cancelled": False,
            "file_count": len(unique),
        }
        await self.rows.insert_batch(row)
        for entry, filename in zip(unique, filenames, strict=True):
            await self._attach(store, entry.file_id, filename, entry.attributes, entry.chunking_strategy, batch_id)
        await self._touch(store)
        return await self._batch_object(StoredFileBatch.from_row(row))

    async def retrieve_file_batch(self, vector_store_id: str, batch_id: str) -> VectorStoreFileBatchObject:
        return await self._batch_object(await self.rows.get_batch(vector_store_id, batch_id))

    async def cancel_file_batch(self, vector_store_id: str, batch_id: str) -> VectorStoreFileBatchObject:
        row = await self.rows.get_batch(vector_store_id, batch_id, "update")
        if not row.cancelled:
            await self.rows.update_batch(batch_id, {"cancelled": True})
            row = replace(row, cancelled=True)
        for attachment in await self.rows.files_of(vector_store_id, statuses=["in_progress"], batch_id=batch_id):
            if attachment.job_id:
                await self.jobs.cancel(attachment.job_id)
        return await self._batch_object(row)

    async def list_file_batch_files(
        self, vector_store_id: str, batch_id: str, query: VectorStoreFileListQuery
    ) -> VectorStoreFileList:
        await self.rows.get_batch(vector_store_id, batch_id)
        return await self._file_list(vector_store_id, query, batch_id)

    # ---- search -----------------------------------------------------------------------------------------

    async def _rewrite(self, query: str) -> str:
        models = getattr(self.inference, "models", None)
        name = self.rewrite_model
        if name is None and models is not None:
            llms = [m for m in await models.list() if m.model_type == ModelType.llm]
            name = llms[0].identifier if llms else None
        if name is None:
            raise InvalidRequestError(
                "rewrite_query needs a chat model and none is available; register one or set "
                "vector_stores.rewrite_model.",
                param="rewrite_query",
            )
        request = ChatCompletionRequest.model_validate(
            {
                "model": name,
                "messages": [{"role": "system", "content": REWRITE_PROMPT}, {"role": "user", "content": query}],
                "temperature": 0,
                "max_tokens": 64,
            }
        )
        result = await self.inference.openai_chat_completion(request)
        if not isinstance(result, ChatCompletion) or not result.choices:
            return query
        text = (result.choices[0].message.content or "").strip()
        line = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
        line = line.removeprefix("Query:").removeprefix("query:").strip().strip("\"'`").strip()
        return line or query

    async def search_vector_store(self, vector_store_id: str, params: SearchRequest) -> SearchResultsPage:
        store = await self._active_store(vector_store_id)
        queries = [params.query] if isinstance(params.query, str) else list(params.query)
        if params.rewrite_query:
            queries = [await self._rewrite(q) for q in queries]
        mode = params.search_mode
        ranking = params.ranking_options or RankingOptions()
        hybrid = None
        if mode == "hybrid":
            hybrid = HybridOptions(
                ranker="weighted" if ranking.ranker == "weighted" else "rrf",
                rrf_k=ranking.rrf_k,
                vector_weight=ranking.vector_weight,
                keyword_weight=ranking.keyword_weight,
                keyword_match=ranking.keyword_match,
            )
        embeddings: list[list[float] | None] = [None] * len(queries)
        if mode in ("vector", "hybrid"):
            # The files to leave out are read while the query is embedded (two independent waits).
            embedded, not_ready = await asyncio.gather(
                self.vector_io.embed(store.embedding_model, queries, int(store.embedding_dimension)),
                self.rows.not_ready(vector_store_id),
                return_exceptions=True,
            )
            if isinstance(embedded, BaseException):
                raise embedded
            if isinstance(not_ready, BaseException):
                raise not_ready
            embeddings = list(embedded)
            hidden = not_ready
        else:
            hidden = await self.rows.not_ready(vector_store_id)
        _, provider = self.vector_io.provider(store.provider_id)
        best: dict[str, ScoredChunk] = {}
        for query, embedding in zip(queries, embeddings, strict=True):
            results = await provider.query(
                vector_store_id,
                mode=mode,
                k=params.max_num_results,
                embedding=embedding,
                query_text=query if mode != "vector" else None,
                filters=params.filters,
                hybrid=hybrid,
                exclude_documents=hidden or None,
            )
            for result in results:
                known = best.get(result.chunk.chunk_id)
                if known is None or result.score > known.score:
                    best[result.chunk.chunk_id] = result
        hidden_set = set(hidden)
        ranked = sorted(best.values(), key=lambda r: r.score, reverse=True)
        threshold = ranking.score_threshold
        ranked = [
            r for r in ranked if r.chunk.document_id not in hidden_set and (threshold is None or r.score >= threshold)
        ][: params.max_num_results]
        files = await self.rows.files_named(vector_store_id, [r.chunk.document_id for r in ranked])
        data: list[SearchResult] = []
        for result in ranked:
            chunk = result.chunk
            attached = files.get(chunk.document_id)
            known_name = attached.filename if attached else None
            data.append(
                SearchResult(
                    file_id=chunk.document_id,
                    filename=known_name or str(chunk.metadata.get("filename") or chunk.document_id),
                    score=result.score,
                    attributes=dict(chunk.attributes),
                    content=[SearchContent(text=chunk.content)],
                )
            )
        await self._touch(store, throttle=True)
        return SearchResultsPage(search_query=queries, data=data)
