"""Real servers for the vector-io tests, started on first use and stopped at the end of the session.

- PostgreSQL with pgvector: PyPI ``pgserver`` (PostgreSQL 16 + pgvector 0.6.2) on a Unix socket in a
  temporary directory. As root it runs the server as its own user.
- Chroma: the ``chroma run`` server that ships with the ``chromadb`` package, on a free loopback port.
- Milvus: the gRPC server of ``milvus-lite`` (``milvus-lite server``), a separate process speaking the
  Milvus protocol on a free loopback port. It is Milvus Lite's engine, not a Milvus standalone build.

Lazy, so a test run that selects only other backends starts none of them; ``stop_all`` (called by a
session fixture in ``conftest``) stops what was started and removes its data.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

_BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class _Process:
    """A server subprocess in its own process group, with its log kept for failure messages."""

    def __init__(self, name: str, argv: list[str], workdir: Path) -> None:
        self.name = name
        self.workdir = workdir
        self.log_path = workdir / f"{name}.log"
        env = {**os.environ, "ANONYMIZED_TELEMETRY": "False"}
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, start_new_session=True
            )

    def log_tail(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-2000:]
        except OSError:
            return ""

    def fail(self, message: str) -> None:
        pytest.fail(f"{message}\n--- {self.name} log ---\n{self.log_tail()}", pytrace=False)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)


class ChromaServer:
    def __init__(self, workdir: Path) -> None:
        self.host, self.port = "127.0.0.1", free_port()
        chroma = shutil.which("chroma", path=str(_BIN)) or "chroma"
        argv = [chroma, "run", "--path", str(workdir / "data"), "--host", self.host, "--port", str(self.port)]
        self.process = _Process("chroma", argv, workdir)
        deadline = time.monotonic() + 60
        url = f"http://{self.host}:{self.port}/api/v2/heartbeat"
        while True:
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:
                pass
            if self.process.proc.poll() is not None or time.monotonic() > deadline:
                self.process.stop()
                self.process.fail(f"The Chroma server did not come up on {self.host}:{self.port}.")
            time.sleep(0.2)

    def stop(self) -> None:
        self.process.stop()


class MilvusServer:
    def __init__(self, workdir: Path) -> None:
        self.host, self.port = "127.0.0.1", free_port()
        milvus = shutil.which("milvus-lite", path=str(_BIN)) or "milvus-lite"
        argv = [milvus, "server", "--data-dir", str(workdir / "data"), "--host", self.host, "--port", str(self.port)]
        self.process = _Process("milvus", argv, workdir)
        deadline = time.monotonic() + 60
        while True:
            try:
                with socket.create_connection((self.host, self.port), timeout=1):
                    return
            except OSError:
                pass
            if self.process.proc.poll() is not None or time.monotonic() > deadline:
                self.process.stop()
                self.process.fail(f"The Milvus Lite server did not come up on {self.host}:{self.port}.")
            time.sleep(0.2)

    @property
    def uri(self) -> str:
        return f"http://{self.host}:{self.port}"

    def stop(self) -> None:
        self.process.stop()


class PostgresServer:
    def __init__(self, workdir: Path) -> None:
        try:
            import pgserver
        except ImportError:
            pytest.fail("The pgvector tests need PyPI pgserver (PostgreSQL + pgvector): pip install pgserver")
        self.workdir = workdir
        self.server: Any = pgserver.get_server(workdir / "pgdata", cleanup_mode="stop")
        self.uri: str = self.server.get_uri()
        self.socket_dir = str(self.server.get_postmaster_info().socket_dir)

    def stop(self) -> None:
        self.server.cleanup()


class LazyServers:
    """One of each server per test session, started when first asked for."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._root: Path | None = None
        self._servers: dict[str, Any] = {}

    def _workdir(self, name: str) -> Path:
        if self._root is None:
            self._root = Path(tempfile.mkdtemp(prefix="underlay-vector-servers-"))
        path = self._root / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def _get(self, name: str, cls: type) -> Any:
        with self._lock:
            if name not in self._servers:
                self._servers[name] = cls(self._workdir(name))
            return self._servers[name]

    def postgres(self) -> PostgresServer:
        return self._get("postgres", PostgresServer)

    def chroma(self) -> ChromaServer:
        return self._get("chroma", ChromaServer)

    def milvus(self) -> MilvusServer:
        return self._get("milvus", MilvusServer)

    def stop_all(self) -> None:
        with self._lock:
            servers, self._servers = self._servers, {}
            for server in servers.values():
                try:
                    server.stop()
                except Exception:  # noqa: BLE001 - stop the others regardless
                    pass
            if self._root is not None:
                shutil.rmtree(self._root, ignore_errors=True)
                self._root = None


SERVERS = LazyServers()
