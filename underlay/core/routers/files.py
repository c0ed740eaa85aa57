"""The files router: uploads streamed to a files provider, metadata in the SQL store, expiry sweeps.

Uploads go to the first configured files provider; each row remembers its provider, so files stay
readable when the default changes. The order of work is what keeps state consistent without a
transaction spanning two stores: bytes are stored first and the row written after (a listed file is
always whole); a delete removes the bytes first and the row after (a failed delete leaves a file that
can be deleted again, never a row without bytes that still lists).

Other routers use the internal API: :meth:`get_file`, :meth:`open_content`, :meth:`create_file`
and :meth:`add_delete_hook` (the vector-stores layer drops a deleted file from its stores with it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import mimetypes
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from underlay.api.errors import (
    InvalidRequestError,
    NotFoundError,
    PayloadTooLargeError,
    ServiceUnavailableError,
    UpstreamError,
)
from underlay.api.files import (
    FileDeleted,
    FileListQuery,
    FileObject,
    FilePurpose,
    FilesApi,
    FilesProvider,
    FileUploadForm,
)
from underlay.api.ids import new_id
from underlay.api.omit import without_none
from underlay.api.routes import BinaryContent, MultipartUpload
from underlay.core.access import require_create
from underlay.core.config import FilesSettings
from underlay.core.stores.files import FileStore, StoredFile

log = logging.getLogger("underlay.files")

DeleteHook = Callable[[str], Awaitable[None]]

_SWEEP_BATCH = 500
_EXTRA_TYPES = {".jsonl": "application/jsonl", ".md": "text/markdown", ".parquet": "application/vnd.apache.parquet"}


def guess_media_type(filename: str) -> str:
    """A content type from the file name, for downloads; octet-stream when nothing fits."""
    lower = filename.lower()
    for suffix, media_type in _EXTRA_TYPES.items():
        if lower.endswith(suffix):
            return media_type
    return mimetypes.guess_type(filename, strict=False)[0] or "application/octet-stream"


class FilesRouter(FilesApi):
    def __init__(self, store: FileStore, providers: dict[str, FilesProvider], settings: FilesSettings) -> None:
        if not providers:
            raise ValueError("The files router needs at least one files provider.")
        self.store = store
        self.providers = providers
        self.settings = settings
        self.default_provider_id = next(iter(providers))
        self._delete_hooks: list[DeleteHook] = []
        self._sweeper: asyncio.Task[None] | None = None

    # -- lifecycle ----------------------------------------------------------------------------------

    async def initialize(self) -> None:
        """Start the expiry sweep (every worker runs one; deletes are idempotent, hooks fire once)."""
        if self._sweeper is None:
            self._sweeper = asyncio.create_task(self._sweep_forever(), name="underlay-files-sweep")

    async def shutdown(self) -> None:
        task, self._sweeper = self._sweeper, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    # -- internal API for other routers -------------------------------------------------------------

    def add_delete_hook(self, callback: DeleteHook) -> None:
        """Call ``callback(file_id)`` after a file is deleted, by a client or by expiry."""
        self._delete_hooks.append(callback)

    async def get_file(self, file_id: str) -> FileObject:
        """The caller's file (404 if it is not theirs, missing or expired)."""
        return await self.store.get(file_id)

    async def open_content(self, file_id: str) -> AsyncIterator[bytes]:
        """The caller's file's bytes as a stream; awaiting this reaches storage (errors come here)."""
        return await self._open_row(await self.store.get_stored(file_id))

    async def create_file(
        self,
        filename: str,
        purpose: FilePurpose,
        chunks: AsyncIterator[bytes],
        expires_after_seconds: int | None = None,
    ) -> FileObject:
        """Store a file the server produces itself (batch output, results), owned by the caller."""
        file_id, key = self._new_key()
        provider = self.providers[self.default_provider_id]
        size = await self._put(provider, key, self._limited(chunks))
        return await self._record(file_id, key, filename, purpose, size, expires_after_seconds)

    # -- routes -------------------------------------------------------------------------------------

    async def upload_file(self, upload: MultipartUpload[FileUploadForm]) -> FileObject:
        if upload.early is not None:
            self._check_form(upload.early)  # before a byte is stored
        if len(upload.filename) > 1024:
            raise InvalidRequestError("The file name is longer than 1024 characters.", param="file")
        file_id, key = self._new_key()
        require_create("file", file_id)  # before a byte is stored
        provider = self.providers[self.default_provider_id]
        size = await self._put(provider, key, self._limited(upload.chunks()))
        try:
            form = await upload.form()  # fields sent after the file part, if any
            self._check_form(form)
        except BaseException:
            await self._discard(key)
            raise
        seconds = form.expires_after.seconds if form.expires_after is not None else None
        return await self._record(file_id, key, upload.filename, form.purpose, size, seconds)

    async def list_files(self, query: FileListQuery) -> dict[str, Any]:
        page = await self.store.list_files(
            after=query.after, limit=query.limit, order=query.order, purpose=query.purpose
        )
        return without_none(page, "first_id", "last_id")

    async def retrieve_file(self, file_id: str) -> FileObject:
        return await self.store.get(file_id)

    async def retrieve_file_content(self, file_id: str) -> BinaryContent:
        stored = await self.store.get_stored(file_id)
        chunks = await self._open_row(stored)
        return BinaryContent(
            chunks=chunks, media_type=guess_media_type(stored.filename), filename=stored.filename, size=stored.bytes
        )

    async def delete_file(self, file_id: str) -> FileDeleted:
        stored = await self.store.get_stored(file_id, action="delete")
        provider = self._provider(stored.provider_id, file_id)
        await provider.delete(stored.storage_key)  # its failures arrive typed (underlay.core.boundary)
        if not await self.store.delete_owned(file_id):
            raise NotFoundError("File", file_id, param="file_id")  # a concurrent delete got there first
        await self._run_delete_hooks(file_id)
        return FileDeleted(id=file_id)

    # -- helpers ------------------------------------------------------------------------------------

    @staticmethod
    def _new_key() -> tuple[str, str]:
        file_id = new_id("file")
        return file_id, file_id

    def _check_form(self, form: FileUploadForm) -> None:
        minimum = self.settings.min_expires_after_seconds
        if form.expires_after is not None and form.expires_after.seconds < minimum:
            raise InvalidRequestError(
                f"Invalid value for 'expires_after.seconds': must be at least {minimum} "
                f"(got {form.expires_after.seconds}).",
                param="expires_after.seconds",
            )

    async def _limited(self, chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        """Pass ``chunks`` through, failing with 413 the moment the total passes the upload limit."""
        limit = self.settings.max_upload_bytes
        total = 0
        async for chunk in chunks:
            total += len(chunk)
            if total > limit:
                raise PayloadTooLargeError(
                    f"The file is larger than the limit of {limit} bytes (files.max_upload_bytes in the run config).",
                    param="file",
                    code="file_too_large",
                )
            yield chunk

    async def _put(self, provider: FilesProvider, key: str, chunks: AsyncIterator[bytes]) -> int:
        """Store the bytes; on failure the provider has already left nothing behind (its contract)."""
        return await provider.put(key, chunks)

    async def _discard(self, key: str, provider_id: str | None = None) -> None:
        provider_id = provider_id or self.default_provider_id
        try:
            await asyncio.shield(self.providers[provider_id].delete(key))
        except Exception as exc:
            log.warning("could not remove %s from files provider %s: %s", key, provider_id, exc)

    async def _record(
        self,
        file_id: str,
        key: str,
        filename: str,
        purpose: FilePurpose,
        size: int,
        expires_after_seconds: int | None,
    ) -> FileObject:
        created_ns = time.time_ns()
        created_at = created_ns // 1_000_000_000
        if expires_after_seconds is None and purpose == "batch":
            expires_after_seconds = self.settings.batch_expires_after_seconds
        file = FileObject(
            id=file_id,
            bytes=size,
            created_at=created_at,
            expires_at=created_at + expires_after_seconds if expires_after_seconds is not None else None,
            filename=filename,
            purpose=purpose,
        )
        try:
            await self.store.insert(file, provider_id=self.default_provider_id, storage_key=key, created_ns=created_ns)
        except BaseException:
            await self._discard(key)
            raise
        return file

    def _provider(self, provider_id: str, file_id: str) -> FilesProvider:
        provider = self.providers.get(provider_id)
        if provider is None:
            raise ServiceUnavailableError(
                provider_id,
                f"file '{file_id}' is stored there, but the provider is not configured; add it back under "
                "providers.files.",
                code="provider_not_configured",
            )
        return provider

    async def _open_row(self, stored: StoredFile) -> AsyncIterator[bytes]:
        file_id, provider_id = stored.id, stored.provider_id
        provider = self._provider(provider_id, file_id)
        try:
            return await provider.open(stored.storage_key)
        except FileNotFoundError:
            await self.store.get_stored(file_id)  # deleted meanwhile → 404 from here
            raise UpstreamError(
                provider_id, f"the content of file '{file_id}' is missing from storage.", code="file_content_missing"
            ) from None

    async def _run_delete_hooks(self, file_id: str) -> None:
        for hook in self._delete_hooks:
            try:
                await hook(file_id)
            except Exception:
                log.exception("a delete hook failed for file %s", file_id)

    # -- expiry -------------------------------------------------------------------------------------

    async def sweep(self, now: int | None = None) -> int:
        """Remove every file expired at ``now`` (bytes, then row, then hooks); how many were removed."""
        now = int(time.time()) if now is None else now
        removed = 0
        while True:
            rows = await self.store.expired(now, limit=_SWEEP_BATCH)
            batch_removed = 0
            for stored in rows:
                provider = self.providers.get(stored.provider_id)
                if provider is None:
                    continue  # kept until its provider is configured again
                try:
                    await provider.delete(stored.storage_key)
                except Exception as exc:
                    log.warning("could not remove expired file %s: %s", stored.id, exc)
                    continue
                if await self.store.delete_expired(stored.id, now):
                    batch_removed += 1
                    await self._run_delete_hooks(stored.id)
            removed += batch_removed
            if len(rows) < _SWEEP_BATCH or batch_removed == 0:
                return removed

    async def _sweep_forever(self) -> None:
        while True:
            try:
                removed = await self.sweep()
                if removed:
                    log.info("removed %d expired file(s)", removed)
            except Exception as exc:
                log.warning("expired-file sweep failed: %s", exc)
            await asyncio.sleep(self.settings.expiry_sweep_seconds)
