"""Helpers shared by the Files / Vector Stores benchmarks: the server they start and waiting on ingestion."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.integration.harness import MINILM, RunningServer, local_config, start_server  # noqa: E402

__all__ = ["MINILM", "RunningServer", "machine_line", "server_config", "start", "wait_batch"]


def server_config(*, workers: int = 2, log_level: str = "warning") -> dict[str, Any]:
    """The embedded MiniLM embedding model, Files on local disk, sqlite-vec, Vector Stores: nothing else.

    Built from the integration harness's ``local_config()`` with the chat models left out (they are
    not used here and would only cost start-up time and memory)."""
    config = local_config()
    inference = [p for p in config["providers"]["inference"] if p["provider_id"] == "sentence-transformers"]
    config["apis"] = ["inference", "models", "files", "vector_io", "vector_stores"]
    config["providers"] = {
        "inference": inference,
        "files": [{"provider_id": "localfs", "provider_type": "inline::localfs", "config": {"root": "files"}}],
        "vector_io": [
            {"provider_id": "sqlite-vec", "provider_type": "inline::sqlite-vec", "config": {"db_path": "vector_io.db"}}
        ],
    }
    config["jobs"] = {"workers": workers}
    config["server"] = {"log_level": log_level}
    return config


def start(workdir: Path, **kwargs: Any) -> RunningServer:
    return start_server(server_config(**kwargs), workdir, timeout=300)


def wait_batch(client: Any, store_id: str, batch_id: str, timeout: float = 1800) -> Any:
    """Poll a file batch until nothing is in progress; returns the batch."""
    deadline = time.monotonic() + timeout
    while True:
        batch = client.vector_stores.file_batches.retrieve(batch_id, vector_store_id=store_id)
        if batch.status != "in_progress":
            return batch
        if time.monotonic() > deadline:
            raise RuntimeError(f"file batch {batch_id} still in progress after {timeout}s: {batch.file_counts}")
        time.sleep(0.1)


def machine_line() -> str:
    return f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} (shared: compare within one run)"
