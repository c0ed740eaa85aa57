"""Ingest one file into one vector store: read, parse, chunk, embed in batches, index.

This is the handler of the ``vector_store.file_ingest`` durable job (:mod:`underlay.core.jobs`), so
it is written to be run again from the start at any time:

- It first deletes whatever an earlier attempt indexed for the file (a server killed mid-ingestion
  leaves a partial document; the resumed job clears it and redoes the file).
- Until the final status update the attachment is ``in_progress``, and search passes its file id in
  ``exclude_documents``: partial content is indexed but never visible.
- It works only while the attachment row still names *this* job (``job_id``). A file removed from
  the store, or attached again (which starts a new job), makes the old job's writes conditional
  updates that change nothing, and it removes what it indexed.
- Cancellation (a cancelled batch, a deleted file or store) is checked between embedding batches.

Failures a person can fix (an unsupported or corrupt file) end the job with ``unsupported_file`` /
``invalid_file``; an embedding provider that is down is retried; anything else is ``server_error``.
:meth:`IngestionPipeline.on_failure` turns every unsuccessful end, including a give-up after the
server died too often, into the attachment's ``failed`` / ``cancelled`` status and ``last_error``.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from typing import Any

from underlay.api.errors import NotFoundError, ProviderError, UnderlayError
from underlay.api.vector_io import Chunk
from underlay.core.ingestion.chunking import chunk_text
from underlay.core.jobs import Job, JobContext, JobError, RetryableJobError
from underlay.core.routers.vector_io import VectorIORouter
from underlay.core.stores.vector_stores import StoredVectorStore, VectorStoreRows, pack_embedding, unpack_embedding
from underlay.shared.parse import ParseError, parse_document

log = logging.getLogger("underlay.ingestion")

JOB_KIND = "vector_store.file_ingest"
LAST_ERROR_CODES = ("server_error", "unsupported_file", "invalid_file")


class IngestionPipeline:
    def __init__(
        self,
        rows: VectorStoreRows,
        vector_io: VectorIORouter,
        files: Any,
        *,
        embed_batch_size: int = 32,
        max_file_bytes: int = 512 * 1024 * 1024,
    ) -> None:
        self.rows = rows
        self.vector_io = vector_io
        self.files = files
        self.embed_batch_size = max(1, embed_batch_size)
        self.max_file_bytes = max_file_bytes

    async def read_file(self, file_id: str) -> tuple[str, bytes]:
        """The file's name and bytes through the Files API router (raises NotFoundError if gone)."""
        if self.files is None:
            raise JobError("server_error", "The files API is not enabled on this server; add 'files' to apis.")
        meta = await self.files.get_file(file_id)
        stream = self.files.open_content(file_id)
        if inspect.isawaitable(stream):
            stream = await stream
        pieces: list[bytes] = []
        size = 0
        async for piece in stream:
            size += len(piece)
            if size > self.max_file_bytes:
                raise JobError("invalid_file", f"The file is larger than {self.max_file_bytes} bytes; split it.")
            pieces.append(piece)
        name = meta.get("filename") if isinstance(meta, dict) else getattr(meta, "filename", None)
        return str(name or file_id), b"".join(pieces)

    async def run(self, ctx: JobContext) -> dict[str, Any]:
        vs_id = str(ctx.job.payload["vector_store_id"])
        file_id = str(ctx.job.payload["file_id"])
        store = await self.rows.find_store(vs_id)
        row = await self.rows.find_file(vs_id, file_id)
        if store is None or row is None or row.job_id != ctx.job.id or row.status != "in_progress":
            return {"skipped": "the attachment was removed or replaced"}
        provider_id, provider = self.vector_io.provider(store.provider_id)
        # A resumed attempt (or a re-attach) starts from a clean document.
        await provider.delete_document(vs_id, file_id)
        await self.rows.delete_chunks(vs_id, file_id)

        try:
            filename, data = await self.read_file(file_id)
        except NotFoundError:
            raise JobError("invalid_file", f"File '{file_id}' no longer exists; upload it again.") from None
        try:
            parsed = await asyncio.to_thread(parse_document, data, filename)
        except ParseError as exc:
            raise JobError(exc.code, exc.message) from None
        del data
        strategy = (row.chunking_strategy or {}).get("static") or {}
        max_tokens = int(strategy.get("max_chunk_size_tokens", 800))
        overlap = int(strategy.get("chunk_overlap_tokens", 400))
        pieces = await asyncio.to_thread(chunk_text, parsed.text, max_tokens, overlap)
        if not pieces:
            raise JobError("invalid_file", f"'{filename}' contains no text to index.")
        await ctx.checkpoint(0.05)

        attributes = dict(row.attributes)
        dimension = int(store.embedding_dimension)
        usage = 0
        total = len(pieces)
        for part, start in enumerate(range(0, total, self.embed_batch_size)):
            batch = pieces[start : start + self.embed_batch_size]
            await ctx.checkpoint(0.05 + 0.9 * start / total)
            try:
                vectors = await self.vector_io.embed(store.embedding_model, [p.text for p in batch], dimension)
            except ProviderError as exc:
                raise RetryableJobError("server_error", f"Embedding failed: {exc.message}", delay=2.0) from None
            except UnderlayError as exc:
                raise JobError("server_error", f"Embedding failed: {exc.message}") from None
            chunks = [
                Chunk(
                    chunk_id=f"{file_id}-{piece.index}",
                    document_id=file_id,
                    content=piece.text,
                    embedding=vector,
                    attributes=attributes,
                    metadata={
                        "file_id": file_id,
                        "filename": filename,
                        "chunk_index": piece.index,
                        "token_count": piece.token_count,
                    },
                )
                for piece, vector in zip(batch, vectors, strict=True)
            ]
            await ctx.checkpoint()
            try:
                await provider.insert_chunks(vs_id, chunks)
            except Exception as exc:
                message = exc.message if isinstance(exc, UnderlayError) else f"{type(exc).__name__}: {exc}"
                raise JobError("server_error", f"Vector provider '{provider_id}' failed: {message}") from None
            await self.rows.put_chunk_part(
                vs_id,
                file_id,
                part,
                ctx.job.id,
                [
                    {
                        "chunk_id": c.chunk_id,
                        "content": c.content,
                        "embedding": pack_embedding(c.embedding or []),
                        "metadata": c.metadata,
                    }
                    for c in chunks
                ],
            )
            usage += sum(len(c.content.encode("utf-8")) + 4 * dimension for c in chunks)
        await ctx.checkpoint(0.98)

        # Attributes updated while we were indexing: the chunks must carry the latest ones.
        latest = await self.rows.find_file(vs_id, file_id)
        if latest is not None and latest.job_id == ctx.job.id and latest.attributes != attributes:
            await self.rewrite_attributes(store, file_id, dict(latest.attributes))
        changed = await self.rows.update_file(
            vs_id,
            file_id,
            {"status": "completed", "usage_bytes": usage, "chunk_count": total, "last_error": None},
            job_id=ctx.job.id,
            status="in_progress",
        )
        if not changed:
            await self.discard(vs_id, file_id, ctx.job.id)
            return {"skipped": "the attachment was removed or replaced while indexing"}
        return {"chunks": total, "usage_bytes": usage, "format": parsed.format}

    async def rewrite_attributes(self, store: StoredVectorStore, file_id: str, attributes: dict[str, Any]) -> None:
        """Re-upsert a file's chunks with new attributes, from the stored chunks (no re-embedding)."""
        _, provider = self.vector_io.provider(store.provider_id)
        for part in await self.rows.chunk_parts(store.id, file_id):
            chunks = [
                Chunk(
                    chunk_id=item["chunk_id"],
                    document_id=file_id,
                    content=item["content"],
                    embedding=unpack_embedding(item["embedding"]),
                    attributes=attributes,
                    metadata=item.get("metadata") or {},
                )
                for item in part
            ]
            if chunks:
                await provider.insert_chunks(store.id, chunks)

    async def discard(self, vs_id: str, file_id: str, job_id: str) -> None:
        """Remove what ``job_id`` indexed, unless the file was attached again since (a newer job owns it)."""
        row = await self.rows.find_file(vs_id, file_id)
        if row is not None and row.job_id != job_id:
            return
        store = await self.rows.find_store(vs_id)
        if store is not None:
            _, provider = self.vector_io.provider(store.provider_id)
            await provider.delete_document(vs_id, file_id)
        await self.rows.delete_chunks(vs_id, file_id)

    async def on_failure(self, job: Job) -> None:
        """The job ended failed or cancelled: record it on the attachment and drop partial chunks."""
        vs_id = str(job.payload.get("vector_store_id"))
        file_id = str(job.payload.get("file_id"))
        error = job.error or {}
        if job.status == "cancelled":
            values: dict[str, Any] = {"status": "cancelled", "last_error": None}
        else:
            code = error.get("code") if error.get("code") in LAST_ERROR_CODES else "server_error"
            message = error.get("message") or "Ingestion failed."
            values = {"status": "failed", "last_error": {"code": code, "message": message}}
        values["usage_bytes"] = 0
        await self.rows.update_file(vs_id, file_id, values, job_id=job.id, status="in_progress")
        try:
            await self.discard(vs_id, file_id, job.id)
        except Exception as exc:  # the status is what matters; leftovers stay hidden from search
            log.warning("could not remove partial chunks of %s in %s: %s", file_id, vs_id, exc)
