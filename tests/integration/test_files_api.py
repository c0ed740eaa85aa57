"""The Files API end to end: the openai SDK (and raw HTTP for what the SDK can't send) against real
servers, once with ``inline::localfs`` and once with ``remote::s3`` on a real S3 endpoint (moto).

Each backend's server runs with a small upload limit (8 MiB), a body limit of 1 MiB for every other
route (so the multi-MB uploads here prove the upload route is exempt from it) and a short expiry
minimum with a fast sweep (so expiry is observed, not mocked).
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import openai
import pytest

from tests.integration.harness import RunningServer, start_server
from tests.integration.s3_server import MotoS3

MiB = 1024 * 1024
UPLOAD_LIMIT = 8 * MiB
PURPOSES = ["assistants", "batch", "fine-tune", "user_data", "evals", "vision"]
BUCKET = "underlay-files"
BOUNDARY = "underlay-test-boundary"


@dataclass
class Backend:
    name: str
    server: RunningServer
    stored: Callable[[], set[str]]
    """Keys (file ids) whose bytes are in storage now."""
    leftovers: Callable[[], list[str]]
    """Traces of unfinished writes: temporary files, open multipart uploads. Must stay empty."""


def _settings() -> dict:
    return {
        "server": {"max_request_bytes": MiB},
        "files": {"max_upload_bytes": UPLOAD_LIMIT, "min_expires_after_seconds": 2, "expiry_sweep_seconds": 0.2},
    }


@pytest.fixture(scope="module", params=["localfs", "s3"])
def backend(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Backend]:
    workdir = tmp_path_factory.mktemp(f"files-{request.param}")
    if request.param == "localfs":
        provider = {"provider_id": "localfs", "provider_type": "inline::localfs", "config": {"root": "files"}}
        server = start_server({"apis": ["files"], "providers": {"files": [provider]}, **_settings()}, workdir)
        root = workdir / "state" / "files"
        yield Backend(
            "localfs",
            server,
            stored=lambda: {p.name for p in root.iterdir() if not p.name.startswith(".")},
            leftovers=lambda: [p.name for p in root.iterdir() if p.name.startswith(".")],
        )
        server.stop()
        return
    s3 = MotoS3().start()
    config = s3.provider_config(BUCKET)
    provider = {"provider_id": "s3", "provider_type": "remote::s3", "config": config}
    server = start_server({"apis": ["files"], "providers": {"files": [provider]}, **_settings()}, workdir)
    prefix = config["prefix"]
    yield Backend(
        "s3",
        server,
        stored=lambda: {k.removeprefix(prefix) for k in s3.keys(BUCKET, prefix)},
        leftovers=lambda: [u["Key"] for u in s3.open_uploads(BUCKET)],
    )
    server.stop()
    s3.stop()


def _multipart(*parts: tuple[str, str | None, bytes]) -> bytes:
    """A multipart body from (name, filename or None, value) parts, in the order given."""
    out = bytearray()
    for name, filename, value in parts:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        out += f"--{BOUNDARY}\r\nContent-Disposition: {disposition}\r\n\r\n".encode() + value + b"\r\n"
    return bytes(out + f"--{BOUNDARY}--\r\n".encode())


def _post_raw(server: RunningServer, body: bytes | Iterator[bytes]) -> httpx.Response:
    return httpx.post(
        f"{server.v1}/files",
        content=body,
        headers={"content-type": f"multipart/form-data; boundary={BOUNDARY}"},
        timeout=60,
    )


def _ids(client: openai.OpenAI, **params: object) -> list[str]:
    return [f.id for f in client.files.list(**params)]


# ---------------------------------------------------------------------------------------------------


def test_upload_bytes_and_a_real_file(backend: Backend, tmp_path: Path) -> None:
    client = backend.server.openai()
    from_bytes = client.files.create(file=("notes.txt", b"hello files"), purpose="assistants")
    assert from_bytes.object == "file" and from_bytes.id.startswith("file-")
    assert from_bytes.bytes == 11 and from_bytes.filename == "notes.txt" and from_bytes.purpose == "assistants"
    assert from_bytes.status == "processed" and from_bytes.expires_at is None
    assert abs(from_bytes.created_at - time.time()) < 60

    path = tmp_path / "data.jsonl"
    path.write_bytes(b'{"a": 1}\n{"a": 2}\n')
    with path.open("rb") as handle:
        from_file = client.files.create(file=handle, purpose="user_data")
    assert from_file.filename == "data.jsonl" and from_file.bytes == path.stat().st_size
    from_path = client.files.create(file=path, purpose="user_data")
    assert from_path.filename == "data.jsonl"
    assert {from_bytes.id, from_file.id, from_path.id} <= backend.stored()

    raw = httpx.get(f"{backend.server.v1}/files/{from_file.id}").json()
    # OpenAI leaves out expires_at and status_details when they have no value (never null)
    assert set(raw) == {"id", "object", "bytes", "created_at", "filename", "purpose", "status"}


def test_every_purpose(backend: Backend) -> None:
    client = backend.server.openai()
    for purpose in PURPOSES:
        created = client.files.create(file=(f"{purpose}.txt", purpose.encode()), purpose=purpose)  # type: ignore[arg-type]
        assert created.purpose == purpose
        assert client.files.retrieve(created.id).purpose == purpose
        assert created.id in _ids(client, purpose=purpose)
        client.files.delete(created.id)


def test_bad_purpose_is_400_naming_it_and_stores_nothing(backend: Backend) -> None:
    client = backend.server.openai()
    before = backend.stored()
    with pytest.raises(openai.BadRequestError) as info:
        client.files.create(file=("x.txt", b"x"), purpose="wizardry")  # type: ignore[arg-type]
    body = info.value.body
    assert isinstance(body, dict)
    assert body["param"] == "purpose" and "purpose" in body["message"] and "assistants" in body["message"]
    assert backend.stored() == before and backend.leftovers() == []


def test_list_by_purpose_with_after_limit_and_order(backend: Backend) -> None:
    client = backend.server.openai()
    mine = [client.files.create(file=(f"ft-{i}.jsonl", b"{}\n"), purpose="fine-tune").id for i in range(5)]
    desc = _ids(client, purpose="fine-tune")
    assert [i for i in desc if i in mine] == mine[::-1]  # newest first by default
    assert _ids(client, purpose="fine-tune", order="asc") == desc[::-1]
    assert not set(mine) & set(_ids(client, purpose="vision"))

    first = client.files.list(purpose="fine-tune", limit=2)
    assert len(first.data) == 2 and first.has_more
    second = client.files.list(purpose="fine-tune", limit=2, after=first.data[-1].id)
    assert [f.id for f in second.data] == desc[2:4]
    # The SDK's auto-pagination follows after= to the end, without repeats or gaps.
    assert [f.id for f in client.files.list(purpose="fine-tune", limit=2)] == desc
    everything = client.files.list()
    assert set(mine) <= {f.id for f in everything.data} and not everything.has_more

    for bad in ({"limit": 0}, {"limit": 10001}, {"order": "sideways"}):
        response = httpx.get(f"{backend.server.v1}/files", params=bad)
        assert response.status_code == 400 and response.json()["error"]["param"] == next(iter(bad))
    unknown = httpx.get(f"{backend.server.v1}/files", params={"after": "file-nope"})
    assert unknown.status_code == 400 and unknown.json()["error"]["param"] == "after"


def test_content_round_trip_is_binary_exact(backend: Backend) -> None:
    client = backend.server.openai()
    every_byte = bytes(range(256)) * 33
    small = client.files.create(file=("bytes.bin", every_byte), purpose="assistants")
    assert client.files.content(small.id).read() == every_byte

    big = os.urandom(5 * MiB + 17)  # over server.max_request_bytes (1 MiB): uploads are exempt
    created = client.files.create(file=("big.json", big), purpose="user_data")
    assert created.bytes == len(big)
    response = httpx.get(f"{backend.server.v1}/files/{created.id}/content", timeout=60)
    assert response.status_code == 200
    assert hashlib.sha256(response.content).digest() == hashlib.sha256(big).digest()
    assert response.headers["content-type"].startswith("application/json")
    assert response.headers["content-length"] == str(len(big))
    assert 'filename="big.json"' in response.headers["content-disposition"]

    empty = client.files.create(file=("empty.txt", b""), purpose="assistants")
    assert empty.bytes == 0 and client.files.content(empty.id).read() == b""

    unicode_name = client.files.create(file=("résumé 2024.pdf", b"%PDF-1.4"), purpose="user_data")
    assert unicode_name.filename == "résumé 2024.pdf"
    head = httpx.get(f"{backend.server.v1}/files/{unicode_name.id}/content").headers
    assert head["content-type"] == "application/pdf"
    assert "filename*=UTF-8''r%C3%A9sum%C3%A9%202024.pdf" in head["content-disposition"]


def test_delete_then_404(backend: Backend) -> None:
    client = backend.server.openai()
    created = client.files.create(file=("gone.txt", b"soon gone"), purpose="assistants")
    assert created.id in backend.stored()
    deleted = client.files.delete(created.id)
    assert deleted.id == created.id and deleted.deleted and deleted.object == "file"
    assert created.id not in backend.stored()
    with pytest.raises(openai.NotFoundError) as info:
        client.files.retrieve(created.id)
    assert info.value.body["param"] == "file_id" and created.id in info.value.body["message"]  # type: ignore[index]
    with pytest.raises(openai.NotFoundError):
        client.files.content(created.id)
    with pytest.raises(openai.NotFoundError):
        client.files.delete(created.id)
    assert created.id not in _ids(client)


def test_upload_limit_is_413_and_stores_nothing(backend: Backend) -> None:
    client = backend.server.openai()
    before = backend.stored()
    exactly = client.files.create(file=("limit.bin", b"\0" * UPLOAD_LIMIT), purpose="assistants")
    assert exactly.bytes == UPLOAD_LIMIT
    before.add(exactly.id)

    # With a Content-Length (the SDK sends one): refused before the body is read.
    with pytest.raises(openai.APIStatusError) as info:
        client.files.create(file=("huge.bin", b"\0" * (UPLOAD_LIMIT + 2 * MiB)), purpose="assistants")
    assert info.value.status_code == 413 and "max_upload_bytes" in info.value.message

    # Chunked, so only counting can tell: refused the moment the file passes the limit.
    def chunked() -> Iterator[bytes]:
        yield f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nassistants\r\n'.encode()
        yield f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="c.bin"\r\n\r\n'.encode()
        for _ in range(UPLOAD_LIMIT // MiB + 2):
            yield b"\1" * MiB
        yield f"\r\n--{BOUNDARY}--\r\n".encode()

    response = _post_raw(backend.server, chunked())
    assert response.status_code == 413, response.text
    error = response.json()["error"]
    assert error["code"] == "file_too_large" and "files.max_upload_bytes" in error["message"]
    assert backend.stored() == before and backend.leftovers() == []
    assert not [f for f in client.files.list() if f.filename in ("huge.bin", "c.bin")]


def test_expires_after_hides_then_sweeps(backend: Backend) -> None:
    client = backend.server.openai()
    created = client.files.create(
        file=("short.txt", b"short-lived"), purpose="user_data", expires_after={"anchor": "created_at", "seconds": 3}
    )
    assert created.expires_at == created.created_at + 3
    assert client.files.retrieve(created.id).expires_at == created.expires_at
    assert created.id in _ids(client)
    while time.time() < created.expires_at + 0.2:
        time.sleep(0.1)
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(created.id)
    with pytest.raises(openai.NotFoundError):
        client.files.content(created.id)
    assert created.id not in _ids(client)
    deadline = time.monotonic() + 10
    while created.id in backend.stored() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert created.id not in backend.stored()  # the sweep removed the bytes too


def test_expires_after_validation(backend: Backend) -> None:
    client = backend.server.openai()
    cases = [
        ({"anchor": "created_at", "seconds": 1}, "expires_after.seconds"),  # below the configured minimum
        ({"anchor": "created_at", "seconds": 2_592_001}, "expires_after.seconds"),  # over 30 days
        ({"anchor": "last_active_at", "seconds": 3600}, "expires_after.anchor"),
    ]
    for expires_after, param in cases:
        with pytest.raises(openai.BadRequestError) as info:
            client.files.create(file=("e.txt", b"e"), purpose="user_data", expires_after=expires_after)  # type: ignore[arg-type]
        assert info.value.body["param"] == param, info.value.body  # type: ignore[index]
    batch = client.files.create(file=("in.jsonl", b"{}\n"), purpose="batch")
    assert batch.expires_at == batch.created_at + 30 * 24 * 3600  # OpenAI's default for batch files


def test_form_order_and_malformed_uploads(backend: Backend) -> None:
    before = backend.stored()
    file_first = _post_raw(backend.server, _multipart(("file", "late.txt", b"late"), ("purpose", None, b"evals")))
    assert file_first.status_code == 200, file_first.text
    assert file_first.json()["purpose"] == "evals" and file_first.json()["filename"] == "late.txt"
    before.add(file_first.json()["id"])

    no_purpose = _post_raw(backend.server, _multipart(("file", "a.txt", b"abc")))
    assert no_purpose.status_code == 400 and no_purpose.json()["error"]["param"] == "purpose"
    no_file = _post_raw(backend.server, _multipart(("purpose", None, b"assistants")))
    assert no_file.status_code == 400 and no_file.json()["error"]["param"] == "file"
    late_bad_purpose = _post_raw(backend.server, _multipart(("file", "a.txt", b"abc"), ("purpose", None, b"nope")))
    assert late_bad_purpose.status_code == 400 and late_bad_purpose.json()["error"]["param"] == "purpose"
    not_multipart = httpx.post(f"{backend.server.v1}/files", json={"purpose": "assistants"})
    assert not_multipart.status_code == 400 and "multipart/form-data" in not_multipart.json()["error"]["message"]

    def truncated() -> Iterator[bytes]:  # the client stops before the closing boundary
        yield f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nassistants\r\n'.encode()
        yield f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="t.bin"\r\n\r\n'.encode()
        yield b"\2" * (6 * MiB)

    cut = _post_raw(backend.server, truncated())
    assert cut.status_code == 400 and cut.json()["error"]["code"] == "incomplete_upload"
    assert backend.stored() == before and backend.leftovers() == []


def test_server_streams_uploads_without_holding_them(tmp_path: Path) -> None:
    """A 256 MiB upload through a server whose other routes take 1 MiB: its peak RSS barely moves."""
    status = Path("/proc/self/status")
    if not status.exists():
        pytest.skip("needs /proc to read the server's peak RSS")
    provider = {"provider_id": "localfs", "provider_type": "inline::localfs", "config": {}}
    server = start_server(
        {"apis": ["files"], "providers": {"files": [provider]}, "server": {"max_request_bytes": MiB}}, tmp_path
    )

    def peak_rss() -> int:
        for line in Path(f"/proc/{server.process.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
        raise AssertionError("no VmHWM")

    size = 256 * MiB
    block = os.urandom(MiB)

    def body() -> Iterator[bytes]:
        yield f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nuser_data\r\n'.encode()
        yield f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="big.bin"\r\n\r\n'.encode()
        for _ in range(size // MiB):
            yield block
        yield f"\r\n--{BOUNDARY}--\r\n".encode()

    try:
        httpx.get(f"{server.v1}/files")  # warm the route before measuring
        before = peak_rss()
        response = _post_raw(server, body())
        assert response.status_code == 200, response.text
        grown = peak_rss() - before
        assert response.json()["bytes"] == size
        assert grown < 48 * MiB, f"peak RSS grew by {grown / MiB:.0f} MiB for a {size // MiB} MiB upload"
        digest = hashlib.sha256()
        with httpx.stream("GET", f"{server.v1}/files/{response.json()['id']}/content", timeout=60) as download:
            for piece in download.iter_bytes():
                digest.update(piece)
        assert digest.digest() == hashlib.sha256(block * (size // MiB)).digest()
    finally:
        server.stop()


def test_routes_and_openapi_describe_the_upload(backend: Backend) -> None:
    routes = httpx.get(f"{backend.server.v1}/inspect/routes").json()["data"]
    paths = {(r["method"], r["path"]) for r in routes if r["api"] == "files"}
    assert paths == {
        ("POST", "/v1/files"),
        ("GET", "/v1/files"),
        ("GET", "/v1/files/{file_id}"),
        ("GET", "/v1/files/{file_id}/content"),
        ("DELETE", "/v1/files/{file_id}"),
    }
    spec = httpx.get(f"{backend.server.base_url}/openapi.json").json()
    body = spec["paths"]["/v1/files"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert body["properties"]["file"] == {"type": "string", "format": "binary"}
    assert {"file", "purpose"} <= set(body["required"]) and "$ref" not in str(body)
