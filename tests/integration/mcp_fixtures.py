"""Helpers for the tool-runtime and MCP-server tests: real MCP fixture servers, and real vector stores."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tests.integration.harness import FIXTURES, MINILM, RunningServer, free_port, local_config

SERVER_SCRIPT = FIXTURES / "mcp" / "server.py"
WEB_PAGES = FIXTURES / "web" / "pages.jsonl"
WEB_SITE = FIXTURES / "web" / "site"


def stdio_command(name: str = "stdio-fixture") -> dict[str, object]:
    """The run-config ``stdio`` block that starts the fixture server over stdio."""
    return {"command": sys.executable, "args": [str(SERVER_SCRIPT), "--transport", "stdio", "--name", name]}


class McpFixtureServer:
    """One fixture MCP server process; ``stop``/``start`` keep the port, so it can come back."""

    def __init__(
        self,
        workdir: Path,
        *,
        transport: str = "streamable-http",
        token: str | None = None,
        name: str = "fixture",
        request_log: Path | None = None,
    ) -> None:
        self.request_log = request_log
        self.workdir = workdir
        self.transport = transport
        self.token = token
        self.name = name
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/{'sse' if self.transport == 'sse' else 'mcp'}"

    def start(self, timeout: float = 30) -> McpFixtureServer:
        self.workdir.mkdir(parents=True, exist_ok=True)
        args = [sys.executable, str(SERVER_SCRIPT), "--transport", self.transport, "--port", str(self.port)]
        args += ["--name", self.name] + (["--token", self.token] if self.token else [])
        args += ["--request-log", str(self.request_log)] if self.request_log else []
        log = (self.workdir / f"mcp-{self.name}-{self.port}.log").open("ab")
        self.process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"MCP fixture {self.name} exited with {self.process.returncode}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"MCP fixture {self.name} did not listen on {self.port} within {timeout}s")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        self.process = None


def vector_config(**overrides: Any) -> dict[str, Any]:
    """Embeddings (MiniLM), files on disk, sqlite-vec vector stores and the tool runtime."""
    base = local_config()
    embeddings = [p for p in base["providers"]["inference"] if p["provider_id"] == "sentence-transformers"]
    config: dict[str, Any] = {
        "apis": ["inference", "models", "files", "vector_io", "vector_stores", "tool_runtime"],
        "providers": {
            "inference": embeddings,
            "files": [{"provider_id": "localfs", "provider_type": "inline::localfs", "config": {"root": "files"}}],
            "vector_io": [
                {"provider_id": "sqlite-vec", "provider_type": "inline::sqlite-vec", "config": {"db_path": "v.db"}}
            ],
            "tool_runtime": [
                {"provider_id": "file-search", "provider_type": "builtin::file_search"},
                {"provider_id": "mcp", "provider_type": "remote::model-context-protocol"},
            ],
        },
        "jobs": {"workers": 2, "poll_seconds": 0.1},
        "vector_stores": {"default_embedding_model": MINILM},
    }
    config.update(overrides)
    return config


def make_vector_store(server: RunningServer, documents: dict[str, str], name: str = "notes") -> str:
    """Upload ``documents`` (filename → text), attach them to a new store and wait until searchable."""
    client = server.openai(timeout=120)
    file_ids = [
        client.files.create(file=(fn, text.encode()), purpose="assistants").id for fn, text in documents.items()
    ]
    store = client.vector_stores.create(name=name, file_ids=file_ids)
    deadline = time.monotonic() + 180
    while client.vector_stores.retrieve(store.id).status != "completed":
        assert time.monotonic() < deadline, "vector store did not finish ingesting"
        time.sleep(0.2)
    return store.id


DOCUMENTS = {
    "glaciers.txt": (
        "Glaciers are slow rivers of ice. They form where snow accumulates faster than it melts, compress "
        "into ice over decades, and flow downhill under their own weight, carving U-shaped valleys."
    ),
    "espresso.md": (
        "# Espresso\n\nEspresso is brewed by forcing hot water at about nine bars of pressure through finely "
        "ground coffee for roughly twenty-five seconds, which yields a concentrated shot topped with crema."
    ),
    "chess.txt": (
        "In chess, castling moves the king two squares towards a rook and places the rook on the other side "
        "of the king. It is allowed only if neither piece has moved and the king is not in check."
    ),
}
