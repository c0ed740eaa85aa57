"""``inline::localfs``: file bytes in a directory on the local filesystem (the default).

Each file is one plain file named by its key under ``root``. A write goes to a temporary name in the
same directory, is fsync'd, then renamed over the final name and the directory fsync'd, so a crash
or a failed upload never leaves a partial file under a real key: readers see the whole file or none.
Every blocking call runs in a worker thread so one slow disk never stalls the event loop; writes
are batched to about a mebibyte per thread hop so big uploads don't pay a hop per network read.

A relative ``root`` lives in the run config's state directory (``files`` by default).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import IO, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from underlay.api.errors import ServiceUnavailableError
from underlay.api.files import check_storage_key

_WRITE_BATCH_BYTES = 1024 * 1024
_TEMP_PREFIX = ".tmp-"
_STALE_TEMP_SECONDS = 24 * 3600


class Config(BaseModel):
    """Where the files go, and whether every write is made durable before the upload returns."""

    model_config = ConfigDict(extra="forbid")

    root: str = Field(
        default="files",
        validate_default=True,
        description="Directory for the files; a relative path is inside the state directory.",
    )
    fsync: bool = Field(default=True, description="fsync each file and its directory before answering.")
    read_chunk_bytes: int = Field(default=1024 * 1024, ge=4096, description="Size of the pieces sent to clients.")

    @field_validator("root")
    @classmethod
    def _resolve_root(cls, value: str, info: ValidationInfo) -> str:
        """Relative roots resolve under the run config's state directory (given as validation context)."""
        path = Path(os.path.expanduser(value))
        state_dir = (info.context or {}).get("state_dir")
        if not path.is_absolute() and state_dir:
            path = Path(state_dir) / path
        return str(path)


class LocalFSFilesProvider:
    def __init__(self, provider_id: str, config: Config) -> None:
        self.provider_id = provider_id
        self.config = config
        self.root = Path(config.root)

    def _unavailable(self, action: str, exc: OSError) -> ServiceUnavailableError:
        return ServiceUnavailableError(
            self.provider_id, f"cannot {action} under {self.root}: {exc.strerror or exc}", code="storage_error"
        )

    def _path(self, key: str) -> Path:
        return self.root / check_storage_key(key)

    # -- lifecycle ----------------------------------------------------------------------------------

    async def initialize(self) -> None:
        try:
            await asyncio.to_thread(self._prepare)
        except OSError as exc:
            raise self._unavailable("create the files directory", exc) from exc

    def _prepare(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        # Temporary files of uploads cut short by a crash. Only old ones: another worker sharing this
        # directory may be writing a fresh one right now.
        cutoff = time.time() - _STALE_TEMP_SECONDS
        for entry in self.root.glob(f"{_TEMP_PREFIX}*"):
            with contextlib.suppress(OSError):
                if entry.stat().st_mtime < cutoff:
                    entry.unlink()

    async def shutdown(self) -> None:
        return None

    async def health(self) -> dict[str, Any]:
        ok = await asyncio.to_thread(os.access, self.root, os.W_OK)
        return {"status": "OK" if ok else "Error", "root": str(self.root)}

    # -- bytes --------------------------------------------------------------------------------------

    async def put(self, key: str, chunks: AsyncIterator[bytes]) -> int:
        final = self._path(key)
        temp = self.root / f"{_TEMP_PREFIX}{key}-{secrets.token_hex(6)}"
        try:
            handle: IO[bytes] = await asyncio.to_thread(open, temp, "xb")
        except OSError as exc:
            raise self._unavailable("write a file", exc) from exc
        size = 0
        try:
            pending = bytearray()
            async for chunk in chunks:  # the source's own errors (413, disconnect) pass through as they are
                pending += chunk
                size += len(chunk)
                if len(pending) >= _WRITE_BATCH_BYTES:
                    batch, pending = pending, bytearray()
                    await self._write(handle, batch)
            if pending:
                await self._write(handle, pending)
            try:
                await asyncio.to_thread(self._commit, handle, temp, final)
            except OSError as exc:
                raise self._unavailable("write a file", exc) from exc
        except BaseException:
            # Shielded: a cancelled upload must still not leave its temporary file behind.
            await asyncio.shield(asyncio.to_thread(self._discard, handle, temp))
            raise
        return size

    async def _write(self, handle: IO[bytes], data: bytearray) -> None:
        try:
            await asyncio.to_thread(handle.write, data)
        except OSError as exc:
            raise self._unavailable("write a file", exc) from exc

    def _commit(self, handle: IO[bytes], temp: Path, final: Path) -> None:
        handle.flush()
        if self.config.fsync:
            os.fsync(handle.fileno())
        handle.close()
        os.replace(temp, final)
        if self.config.fsync:
            fd = os.open(self.root, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    @staticmethod
    def _discard(handle: IO[bytes], temp: Path) -> None:
        with contextlib.suppress(OSError):
            handle.close()
        with contextlib.suppress(OSError):
            temp.unlink(missing_ok=True)

    async def open(self, key: str) -> AsyncIterator[bytes]:
        path = self._path(key)
        try:
            handle: IO[bytes] = await asyncio.to_thread(open, path, "rb")
        except FileNotFoundError:
            raise
        except OSError as exc:
            raise self._unavailable("read a file", exc) from exc
        return self._read(handle)

    async def _read(self, handle: IO[bytes]) -> AsyncIterator[bytes]:
        try:
            while True:
                try:
                    chunk = await asyncio.to_thread(handle.read, self.config.read_chunk_bytes)
                except OSError as exc:
                    raise self._unavailable("read a file", exc) from exc
                if not chunk:
                    return
                yield chunk
        finally:
            handle.close()

    async def delete(self, key: str) -> None:
        path = self._path(key)
        try:
            await asyncio.to_thread(path.unlink, missing_ok=True)
        except OSError as exc:
            raise self._unavailable("delete a file", exc) from exc


async def create_provider(provider_id: str, config: Config, deps: dict[str, Any]) -> LocalFSFilesProvider:
    return LocalFSFilesProvider(provider_id, config)
