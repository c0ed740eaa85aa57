"""Knowledge sync: the folder's ``knowledge/`` becomes one vector store, by content hash, idempotently.

Why by hash: re-running an agent (or syncing it to another environment) must not re-upload and
re-embed documents that did not change; that is minutes of embedding for a real folder. Each attached
file carries its path and sha256 in the vector-store file's ``attributes``, so the server itself is the
record of what is there and no local cache can go stale. The store's name is derived from the agent and
environment (``agent-<name>-<env>``), so every run finds the same store.

:func:`plan` is the pure decision (tested on its own); :func:`sync_knowledge` applies it with an
``openai``-compatible client (an ``Underlay`` in process or against a URL).
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from underlay.core.config import ConfigError

__all__ = ["KnowledgeFile", "Plan", "SyncReport", "knowledge_files", "plan", "store_name", "sync_knowledge"]

MAX_KNOWLEDGE_FILES = 10_000
INGEST_TIMEOUT_S = 600.0


@dataclass(frozen=True)
class KnowledgeFile:
    path: str  # relative to knowledge/, with '/'
    sha256: str
    absolute: Path


@dataclass(frozen=True)
class Attached:
    """A file the store already holds, as its attributes describe it."""

    file_id: str
    path: str | None
    sha256: str | None


@dataclass
class Plan:
    upload: list[KnowledgeFile] = field(default_factory=list)
    detach: list[Attached] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)


@dataclass
class SyncReport:
    vector_store_id: str
    uploaded: list[str]
    detached: list[str]
    unchanged: list[str]


def store_name(agent: str, environment: str) -> str:
    return f"agent-{agent}-{environment}"


def knowledge_files(root: Path, globs: list[str]) -> list[KnowledgeFile]:
    """The files under ``root/knowledge`` matching ``globs`` (hidden files skipped), sorted by path."""
    base = root / "knowledge"
    seen: dict[str, KnowledgeFile] = {}
    for pattern in globs:
        for path in base.glob(pattern):
            rel = path.relative_to(base).as_posix()
            if not path.is_file() or rel in seen or any(p.startswith(".") for p in rel.split("/")):
                continue
            if not path.resolve().is_relative_to(base.resolve()):
                continue  # a symlink out of knowledge/: never upload what the folder does not hold
            if len(seen) >= MAX_KNOWLEDGE_FILES:
                raise ConfigError(
                    f"{root / 'agent.yaml'}: knowledge: more than {MAX_KNOWLEDGE_FILES} files; narrow the globs"
                )
            seen[rel] = KnowledgeFile(rel, hashlib.sha256(path.read_bytes()).hexdigest(), path)
    return [seen[k] for k in sorted(seen)]


def plan(local: list[KnowledgeFile], attached: list[Attached]) -> Plan:
    """What to upload and detach so the store holds exactly ``local``.

    A file is kept when one attached file has its path and hash; a changed file is uploaded again and
    its old copy detached; an attached file no local file matches (removed, or not ours) is detached,
    as is a second copy of the same content.
    """
    result = Plan()
    keep: set[str] = set()
    by_key = {}
    for item in attached:
        by_key.setdefault((item.path, item.sha256), item)
    for file in local:
        hit = by_key.get((file.path, file.sha256))
        if hit is not None:
            keep.add(hit.file_id)
            result.unchanged.append(file.path)
        else:
            result.upload.append(file)
    result.detach = [a for a in attached if a.file_id not in keep]
    return result


def _find_or_create_store(client: Any, name: str, agent: str) -> str:
    for store in client.vector_stores.list(limit=100):
        if store.name == name:
            return str(store.id)
    created = client.vector_stores.create(name=name, metadata={"underlay_agent": agent})
    return str(created.id)


def _attached(client: Any, store_id: str) -> list[Attached]:
    found = []
    for item in client.vector_stores.files.list(vector_store_id=store_id, limit=100):
        attrs = item.attributes or {}
        path, digest = attrs.get("path"), attrs.get("sha256")
        found.append(Attached(item.id, str(path) if path else None, str(digest) if digest else None))
    return found


def sync_knowledge(client: Any, root: Path, agent: str, environment: str, globs: list[str]) -> SyncReport:
    """Make the agent's store (per environment) hold exactly the folder's knowledge, uploading only new
    content; waits until every new file is ingested (a failed ingestion raises, naming the file)."""
    store_id = _find_or_create_store(client, store_name(agent, environment), agent)
    todo = plan(knowledge_files(root, globs), _attached(client, store_id))
    for old in todo.detach:
        client.vector_stores.files.delete(file_id=old.file_id, vector_store_id=store_id)
        try:
            client.files.delete(old.file_id)
        except Exception:  # noqa: BLE001 - a file shared elsewhere or already gone: detaching was the point
            pass
    pending: dict[str, str] = {}
    for file in todo.upload:
        uploaded = client.files.create(
            file=(file.path.rsplit("/", 1)[-1], file.absolute.read_bytes()), purpose="assistants"
        )
        client.vector_stores.files.create(
            vector_store_id=store_id, file_id=uploaded.id, attributes={"path": file.path, "sha256": file.sha256}
        )
        pending[uploaded.id] = file.path
    deadline = time.monotonic() + INGEST_TIMEOUT_S
    while pending:
        for file_id, path in list(pending.items()):
            state = client.vector_stores.files.retrieve(file_id=file_id, vector_store_id=store_id)
            if state.status == "completed":
                del pending[file_id]
            elif state.status in ("failed", "cancelled"):
                reason = state.last_error.message if state.last_error else state.status
                raise RuntimeError(f"knowledge/{path}: ingestion {state.status}: {reason}")
        if pending and time.monotonic() > deadline:
            raise TimeoutError(f"knowledge: {len(pending)} file(s) not ingested after {INGEST_TIMEOUT_S:.0f}s")
        if pending:
            time.sleep(0.2)
    return SyncReport(store_id, [f.path for f in todo.upload], [a.file_id for a in todo.detach], todo.unchanged)
