"""Files API pieces in isolation: the streaming multipart parser, the localfs provider's all-or-nothing
writes, and the router's ownership, internal API and expiry sweep on a fixed clock."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from underlay.api.errors import InvalidRequestError, NotFoundError, PayloadTooLargeError
from underlay.api.files import FileUploadForm
from underlay.api.routes import BinaryContent
from underlay.core.config import FilesSettings
from underlay.core.identity import Principal, principal_var
from underlay.core.routers.files import FilesRouter, guess_media_type
from underlay.core.storage.sqlstore import SqliteSqlStoreConfig, SqlStore
from underlay.core.stores.files import FileStore
from underlay.providers.inline.files.localfs import Config as LocalFSConfig
from underlay.providers.inline.files.localfs import LocalFSFilesProvider
from underlay.server.app import binary_response
from underlay.server.multipart import Data, Field, FileStart, MultipartEvents, PartEnd, early_form, validate_form

BOUNDARY = b"xyz"


def _head(name: str, filename: str | None = None) -> bytes:
    disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
    return b"--" + BOUNDARY + b"\r\nContent-Disposition: " + disposition.encode() + b"\r\n\r\n"


async def _collect(chunks: AsyncIterator[bytes]) -> bytes:
    return b"".join([c async for c in chunks])


# -- multipart ----------------------------------------------------------------------------------------


async def test_file_bytes_are_handed_on_before_the_body_ends() -> None:
    """The parser yields file data as it arrives: the first piece comes out while the client still sends."""
    release = asyncio.Event()

    async def body() -> AsyncIterator[bytes]:
        yield _head("purpose") + b"assistants\r\n" + _head("file", "a.bin") + b"first piece"
        await release.wait()  # the rest of the upload has not arrived yet
        yield b" and the rest\r\n--" + BOUNDARY + b"--\r\n"

    events = aiter(MultipartEvents(body(), BOUNDARY, "file"))
    assert await anext(events) == Field("purpose", "assistants")
    assert await anext(events) == FileStart("file", "a.bin", None)
    first = await asyncio.wait_for(anext(events), 1)
    assert isinstance(first, Data) and first.data.startswith(b"first")
    assert not release.is_set()
    release.set()
    rest = [e async for e in events]
    data = first.data + b"".join(e.data for e in rest if isinstance(e, Data))
    assert data == b"first piece and the rest" and isinstance(rest[-1], PartEnd)


async def test_incomplete_body_and_oversized_fields_are_400() -> None:
    async def cut() -> AsyncIterator[bytes]:
        yield _head("file", "a.bin") + b"partial"

    with pytest.raises(InvalidRequestError) as info:
        [e async for e in MultipartEvents(cut(), BOUNDARY, "file")]
    assert info.value.code == "incomplete_upload"

    async def huge_field() -> AsyncIterator[bytes]:
        yield _head("purpose") + b"x" * (70 * 1024) + b"\r\n--" + BOUNDARY + b"--\r\n"

    with pytest.raises(InvalidRequestError) as info:
        [e async for e in MultipartEvents(huge_field(), BOUNDARY, "file")]
    assert info.value.param == "purpose"


async def test_utf8_file_names_survive() -> None:
    async def body() -> AsyncIterator[bytes]:
        yield _head("file", "naïve ☃.txt") + b"x\r\n--" + BOUNDARY + b"--\r\n"

    events = [e async for e in MultipartEvents(body(), BOUNDARY, "file")]
    assert events[0] == FileStart("file", "naïve ☃.txt", None)


def test_form_validation_nests_brackets_and_defers_missing_fields() -> None:
    form = validate_form(
        FileUploadForm,
        {"purpose": "batch", "expires_after[anchor]": "created_at", "expires_after[seconds]": "7200"},
    )
    assert form.expires_after is not None and form.expires_after.seconds == 7200
    assert early_form(FileUploadForm, {}) is None  # purpose may still come after the file part
    with pytest.raises(InvalidRequestError) as info:
        early_form(FileUploadForm, {"purpose": "nope"})
    assert info.value.param == "purpose"
    with pytest.raises(InvalidRequestError) as info:
        validate_form(FileUploadForm, {"purpose": "batch", "expires_after[anchor]": "created_at"})
    assert info.value.param == "expires_after.seconds"


def test_download_headers() -> None:
    async def nothing() -> AsyncIterator[bytes]:
        yield b""

    response = binary_response(BinaryContent(nothing(), "application/pdf", 'cv "final" ü.pdf', 12))
    assert response.headers["content-length"] == "12"
    disposition = response.headers["content-disposition"]
    assert disposition.startswith('attachment; filename="cv _final_ ?.pdf"')
    assert "filename*=UTF-8''cv%20%22final%22%20%C3%BC.pdf" in disposition
    assert guess_media_type("data.jsonl") == "application/jsonl"
    assert guess_media_type("x.PNG") == "image/png"
    assert guess_media_type("blob") == "application/octet-stream"


# -- localfs ------------------------------------------------------------------------------------------


def test_relative_root_resolves_in_the_state_dir(tmp_path: Path) -> None:
    config = LocalFSConfig.model_validate({}, context={"state_dir": str(tmp_path)})
    assert config.root == str(tmp_path / "files")
    absolute = LocalFSConfig.model_validate({"root": "/srv/files"}, context={"state_dir": str(tmp_path)})
    assert absolute.root == "/srv/files"


async def test_localfs_writes_all_or_nothing(tmp_path: Path) -> None:
    provider = LocalFSFilesProvider("localfs", LocalFSConfig(root=str(tmp_path / "files")))
    await provider.initialize()

    async def pieces() -> AsyncIterator[bytes]:
        for i in range(40):
            yield bytes([i]) * 100_000

    assert await provider.put("file-a", pieces()) == 4_000_000
    assert await _collect(await provider.open("file-a")) == b"".join(bytes([i]) * 100_000 for i in range(40))

    async def failing() -> AsyncIterator[bytes]:
        yield b"x" * 3_000_000
        raise PayloadTooLargeError("too big")

    with pytest.raises(PayloadTooLargeError):
        await provider.put("file-b", failing())

    stalled = asyncio.Event()

    async def stalls() -> AsyncIterator[bytes]:
        yield b"y" * 2_000_000
        stalled.set()
        await asyncio.sleep(3600)
        yield b""

    task = asyncio.create_task(provider.put("file-c", stalls()))
    await stalled.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert sorted(p.name for p in (tmp_path / "files").iterdir()) == ["file-a"]  # no partial or temp files

    with pytest.raises(FileNotFoundError):
        await provider.open("file-b")
    await provider.delete("file-a")
    await provider.delete("file-a")  # deleting twice is fine
    with pytest.raises(ValueError):
        await provider.open("../escape")


# -- router -------------------------------------------------------------------------------------------


@pytest.fixture
async def router(tmp_path: Path) -> AsyncIterator[FilesRouter]:
    sql = await SqlStore.open(SqliteSqlStoreConfig(path=str(tmp_path / "sql.db")))
    store = FileStore(sql)
    await store.initialize()
    provider = LocalFSFilesProvider("localfs", LocalFSConfig(root=str(tmp_path / "files")))
    await provider.initialize()
    files = FilesRouter(store, {"localfs": provider}, FilesSettings(max_upload_bytes=1000))
    yield files
    await files.shutdown()
    await sql.close()


async def _bytes(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def test_internal_api_owner_isolation_and_sweep_on_a_fixed_clock(router: FilesRouter, tmp_path: Path) -> None:
    deleted: list[str] = []

    async def hook(file_id: str) -> None:
        deleted.append(file_id)

    router.add_delete_hook(hook)
    keeps = await router.create_file("out.jsonl", "batch_output", _bytes(b"kept"))
    expires = await router.create_file("tmp.txt", "user_data", _bytes(b"gone"), expires_after_seconds=3600)
    assert expires.expires_at == expires.created_at + 3600
    assert (await router.get_file(keeps.id)).purpose == "batch_output"
    assert await _collect(await router.open_content(expires.id)) == b"gone"

    token = principal_var.set(Principal("someone-else"))
    try:
        with pytest.raises(NotFoundError):
            await router.get_file(keeps.id)
        with pytest.raises(NotFoundError):
            await router.open_content(keeps.id)
        with pytest.raises(NotFoundError):
            await router.delete_file(keeps.id)
        assert (await router.store.list_files(after=None, limit=10, order="desc", purpose=None))["data"] == []
    finally:
        principal_var.reset(token)

    assert await router.sweep(now=expires.created_at + 3599) == 0
    assert await router.sweep(now=expires.created_at + 3600) == 1
    assert deleted == [expires.id]
    assert not (tmp_path / "files" / expires.id).exists()
    assert (tmp_path / "files" / keeps.id).exists()

    await router.delete_file(keeps.id)
    assert deleted == [expires.id, keeps.id]
    with pytest.raises(NotFoundError):
        await router.get_file(keeps.id)


async def test_internal_create_respects_the_upload_limit(router: FilesRouter, tmp_path: Path) -> None:
    with pytest.raises(PayloadTooLargeError):
        await router.create_file("big.bin", "user_data", _bytes(b"z" * 1001))
    assert [p.name for p in (tmp_path / "files").iterdir()] == []
