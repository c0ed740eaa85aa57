"""The Files API: OpenAI's ``/v1/files``, with the bytes in a pluggable store.

Uploads are ``multipart/form-data`` (a ``file`` part plus ``purpose`` and optional
``expires_after[anchor]`` / ``expires_after[seconds]`` fields) and are streamed to the provider as they
arrive, so a file is never held whole in memory. Metadata lives in the SQL store, owned by the
principal who uploaded it; the provider only stores bytes under opaque keys, which keeps a provider
small (put, open, delete) and lets several providers share one metadata table.

Routes: ``POST /v1/files``, ``GET /v1/files``, ``GET /v1/files/{file_id}``,
``GET /v1/files/{file_id}/content`` and ``DELETE /v1/files/{file_id}``.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any, Literal, Protocol

from pydantic import ConfigDict, Field, field_validator

from underlay.api.base import ApiModel
from underlay.api.omit import omit_when_none
from underlay.api.pagination import blank_as_absent
from underlay.api.routes import BinaryContent, MultipartUpload, Route

__all__ = [
    "ExpiresAfter",
    "FileDeleted",
    "FileList",
    "FileListQuery",
    "FileObject",
    "FilePurpose",
    "FileUploadForm",
    "FilesApi",
    "FilesProvider",
    "MAX_EXPIRES_AFTER_SECONDS",
    "MIN_EXPIRES_AFTER_SECONDS",
    "ROUTES",
    "STORAGE_KEY_PATTERN",
    "UploadPurpose",
    "check_storage_key",
]

UploadPurpose = Literal["assistants", "batch", "fine-tune", "user_data", "evals", "vision"]
"""Purposes a client may upload with (OpenAI's list)."""

FilePurpose = Literal[
    "assistants",
    "assistants_output",
    "batch",
    "batch_output",
    "fine-tune",
    "fine-tune-results",
    "vision",
    "user_data",
    "evals",
]
"""Purposes a stored file may have: the upload purposes plus those of files the server writes itself."""

MIN_EXPIRES_AFTER_SECONDS = 3600
"""OpenAI's shortest expiry (one hour). A run config may lower it (``files.min_expires_after_seconds``)."""

MAX_EXPIRES_AFTER_SECONDS = 2_592_000
"""OpenAI's longest expiry (30 days)."""


class ExpiresAfter(ApiModel):
    """When an uploaded file expires: ``seconds`` after its ``created_at``.

    The lower bound here is 1 so that a server configured for short expiries (tests, scratch data) can
    accept them; the router enforces the configured minimum, OpenAI's 3600 by default.
    """

    model_config = ConfigDict(extra="forbid")

    anchor: Literal["created_at"]
    seconds: int = Field(ge=1, le=MAX_EXPIRES_AFTER_SECONDS)


class FileUploadForm(ApiModel):
    """The form fields of ``POST /v1/files`` besides the file part itself."""

    purpose: UploadPurpose
    expires_after: ExpiresAfter | None = None


class FileObject(ApiModel):
    """A stored file, exactly as OpenAI describes one."""

    id: str
    object: Literal["file"] = "file"
    bytes: int
    created_at: int
    expires_at: int | None = None
    filename: str
    purpose: FilePurpose
    status: Literal["uploaded", "processed", "error"] = "processed"
    status_details: str | None = None

    _omit = omit_when_none("expires_at", "status_details")


class FileListQuery(ApiModel):
    """``GET /v1/files`` query: OpenAI's defaults (up to 10,000 per page, newest first)."""

    after: str | None = Field(default=None, description="Return files after this id.")
    limit: int = Field(default=10_000, ge=1, le=10_000, description="Page size, 1 to 10,000.")
    order: Literal["asc", "desc"] = Field(default="desc", description="Sort by created_at.")
    purpose: str | None = Field(default=None, description="Only files with this purpose.")

    _blank_cursor = field_validator("after", mode="before")(blank_as_absent)


class FileList(ApiModel):
    object: Literal["list"] = "list"
    data: list[FileObject]
    first_id: str | None = None
    last_id: str | None = None
    has_more: bool = False

    _omit = omit_when_none("first_id", "last_id")


class FileDeleted(ApiModel):
    id: str
    object: Literal["file"] = "file"
    deleted: bool = True


STORAGE_KEY_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,254}$")
"""The keys a router hands a provider: safe as a file name and as an object-store key."""


def check_storage_key(key: str) -> str:
    """``key`` if it is a valid storage key; a ``ValueError`` otherwise (a router bug, never user input)."""
    if not STORAGE_KEY_PATTERN.match(key):
        raise ValueError(f"Invalid storage key {key!r}.")
    return key


class FilesProvider(Protocol):
    """Where file bytes live. Keys are opaque ``[A-Za-z0-9._-]`` names chosen by the router.

    - ``put`` consumes ``chunks`` as they come and stores them under ``key``, returning the size. It
      must leave nothing behind when it fails, including when ``chunks`` itself raises (the upload
      was too large or the client went away): that exception propagates unchanged.
    - ``open`` starts a read (awaiting it reaches the store, so a missing key or an unreachable store
      fails there, before any byte is sent) and returns the bytes as an async iterator. A missing key
      raises ``FileNotFoundError``.
    - ``delete`` removes the key; deleting a missing key is not an error.

    Failures of the store itself are raised as the provider errors of ``underlay.api.errors``
    (502, 503, 504), naming the provider.
    """

    provider_id: str

    async def initialize(self) -> None: ...

    async def shutdown(self) -> None: ...

    async def put(self, key: str, chunks: AsyncIterator[bytes]) -> int: ...

    async def open(self, key: str) -> AsyncIterator[bytes]: ...

    async def delete(self, key: str) -> None: ...


class FilesApi(Protocol):
    """What the files router serves: one method per route in ``ROUTES``.

    The route table names these methods, so a missing or misspelled handler fails the type check;
    :class:`underlay.core.routers.files.FilesRouter` implements it.
    """

    async def upload_file(self, upload: MultipartUpload[FileUploadForm]) -> FileObject: ...

    async def list_files(self, query: FileListQuery) -> dict[str, Any]: ...

    async def retrieve_file(self, file_id: str) -> FileObject: ...

    async def retrieve_file_content(self, file_id: str) -> BinaryContent: ...

    async def delete_file(self, file_id: str) -> FileDeleted: ...


ROUTES: list[Route] = [
    Route(
        "POST",
        "/v1/files",
        FilesApi.upload_file,
        body=FileUploadForm,
        response=FileObject,
        multipart=True,
        body_limit_setting="files.max_upload_bytes",
        summary="Upload a file (multipart: file, purpose, expires_after)",
        tags=("files",),
    ),
    Route(
        "GET",
        "/v1/files",
        FilesApi.list_files,
        query=FileListQuery,
        response=FileList,
        summary="List files",
        tags=("files",),
    ),
    Route(
        "GET",
        "/v1/files/{file_id}",
        FilesApi.retrieve_file,
        response=FileObject,
        summary="Retrieve a file",
        tags=("files",),
    ),
    Route(
        "GET",
        "/v1/files/{file_id}/content",
        FilesApi.retrieve_file_content,
        summary="Download a file's content",
        tags=("files",),
    ),
    Route(
        "DELETE",
        "/v1/files/{file_id}",
        FilesApi.delete_file,
        response=FileDeleted,
        summary="Delete a file",
        tags=("files",),
    ),
]
