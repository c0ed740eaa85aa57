"""``remote::s3`` failure modes against real endpoints: an S3 server that is down, comes back and
goes away again (moto), one that accepts connections but never answers, and a missing bucket.

The Files API must answer 503 / 504 / 502 naming the provider, keep the metadata it has (listing and
retrieving still work while the bytes are unreachable), and recover by itself when S3 returns.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from tests.integration.harness import RunningServer, free_port, start_server
from tests.integration.s3_server import ACCESS_KEY, SECRET_KEY, MotoS3


def _server(workdir: Path, provider_config: dict, env: dict[str, str] | None = None) -> RunningServer:
    provider = {"provider_id": "s3", "provider_type": "remote::s3", "config": provider_config}
    return start_server({"apis": ["files"], "providers": {"files": [provider]}}, workdir, env=env)


def _status_error(call: object) -> openai.APIStatusError:
    with pytest.raises(openai.APIStatusError) as info:
        call()  # type: ignore[operator]
    return info.value


def test_s3_down_is_503_naming_the_provider_and_recovers(tmp_path: Path) -> None:
    s3 = MotoS3()  # not started yet: the server must start anyway and report the outage per request
    config = s3.provider_config("underlay-outage")
    # Credentials from the environment, not the config (the AWS credential chain).
    del config["access_key_id"], config["secret_access_key"]
    env = {"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY}
    server = _server(tmp_path, config, env=env)
    try:
        client = server.openai()
        down = _status_error(lambda: client.files.create(file=("a.txt", b"a"), purpose="assistants"))
        assert down.status_code == 503 and "Provider 's3'" in down.message and "reach S3" in down.message
        assert client.files.list().data == []  # nothing half-stored

        s3.start()
        s3.client().create_bucket(Bucket="underlay-outage")
        stored = client.files.create(file=("b.txt", b"bytes in s3"), purpose="assistants")
        assert client.files.content(stored.id).read() == b"bytes in s3"

        s3.stop()
        for call in (
            lambda: client.files.create(file=("c.txt", b"c"), purpose="assistants"),
            lambda: client.files.content(stored.id),
            lambda: client.files.delete(stored.id),
        ):
            error = _status_error(call)
            assert error.status_code == 503 and "Provider 's3'" in error.message
            assert isinstance(error.body, dict) and error.body["code"] == "s3_unreachable"
        # Metadata lives in the SQL store: still listed, and the failed delete removed nothing.
        assert client.files.retrieve(stored.id).bytes == len(b"bytes in s3")
        assert [f.id for f in client.files.list()] == [stored.id]

        s3 = MotoS3(s3.port).start()  # back (moto keeps its objects in-process)
        assert client.files.content(stored.id).read() == b"bytes in s3"
        assert client.files.delete(stored.id).deleted
        assert s3.keys("underlay-outage") == []
    finally:
        server.stop()
        s3.stop()


@pytest.fixture
def silent_endpoint() -> Iterator[int]:
    """A TCP port that accepts connections and never answers (a hung S3)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield int(listener.getsockname()[1])
    stop.set()
    thread.join()
    for conn in held:
        conn.close()
    listener.close()


def test_s3_that_never_answers_is_504(tmp_path: Path, silent_endpoint: int) -> None:
    config = MotoS3(silent_endpoint).provider_config("underlay-hung", read_timeout=1)
    server = _server(tmp_path, config)
    try:
        client = server.openai()
        error = _status_error(lambda: client.files.create(file=("a.txt", b"a"), purpose="assistants"))
        assert error.status_code == 504 and "Provider 's3'" in error.message
        assert client.files.list().data == []
    finally:
        server.stop()


def test_missing_bucket_is_502_naming_it(tmp_path: Path) -> None:
    s3 = MotoS3().start()
    server = _server(tmp_path, s3.provider_config("underlay-no-such-bucket", create_bucket=False))
    try:
        client = server.openai()
        error = _status_error(lambda: client.files.create(file=("a.txt", b"a"), purpose="assistants"))
        assert error.status_code == 502
        assert "Provider 's3'" in error.message and "NoSuchBucket" in error.message
        assert "underlay-no-such-bucket" in error.message
    finally:
        server.stop()
        s3.stop()


def test_unreachable_port_at_start_logs_and_serves(tmp_path: Path) -> None:
    """A config pointing at nothing still starts (S3 may come later); the log says what is wrong."""
    config = MotoS3(free_port()).provider_config("underlay-later")
    server = _server(tmp_path, config)
    try:
        assert server.openai().files.list().data == []
        assert "cannot reach S3" in server.log()
    finally:
        server.stop()
