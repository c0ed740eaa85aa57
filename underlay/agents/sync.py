"""Knowledge sync: the folder's ``knowledge/`` goes into one vector store, by content hash, idempotently.

Why by hash: re-running an agent (or syncing it to another environment) must not re-upload and
re-embed documents that did not change; that is minutes of embedding for a real folder. Each attached
file carries its path and sha256 in the vector-store file's ``attributes``, so the server itself is the
record of what is there and no local cache can go stale. The store's name is derived from the agent and
environment (``agent-<name>-<env>``), so every run finds the same store.

Why nothing is replaced in place: the store is shared by every deployed version of the agent. A changed
or removed file's old content stays attached, and each version's ``file_search`` tool carries a filter
on the ``sha256`` attribute (:func:`knowledge_filter`) restricting it to the content that version was
deployed with; so a rollback brings back the old version's answers, and a deploy embeds only content
the store has never seen. Superseded content stays until :func:`prune` detaches what no version names.

:func:`plan` is the pure decision (tested on its own); :func:`sync_knowledge` applies it with an
``openai``-compatible client (an ``Underlay`` in process or against a URL).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from underlay.core.config import ConfigError

__all__ = [
    "HASH_ATTRIBUTE",
    "KnowledgeFile",
    "Plan",
    "SyncReport",
    "knowledge_files",
    "knowledge_filter",
    "plan",
    "prune",
    "store_name",
    "sync_knowledge",
]

MAX_KNOWLEDGE_FILES = 10_000
INGEST_TIMEOUT_S = 600.0
HASH_ATTRIBUTE = "sha256"
"""The attached file's attribute holding its content hash, which versions' filters match on."""
PATH_ATTRIBUTE = "path"
_UNUSABLE = ("failed", "cancelled")


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
    status: str = "completed"


@dataclass
class Plan:
    upload: list[KnowledgeFile] = field(default_factory=list)
    """One local file per content hash the store has no usable copy of."""
    detach: list[Attached] = field(default_factory=list)
    """Files that are not ours (no hash), a second copy of one content, or whose ingestion failed."""
    unchanged: list[str] = field(default_factory=list)
    """Local paths whose content the store already holds (under this path or another)."""
    superseded: list[Attached] = field(default_factory=list)
    """Attached content the folder no longer has: kept, so earlier versions still find it."""
    waiting: list[Attached] = field(default_factory=list)
    """Attached content the folder needs that is still being ingested (an earlier sync was cut short)."""


@dataclass
class SyncReport:
    vector_store_id: str
    uploaded: list[str]
    detached: list[str]
    unchanged: list[str]
    superseded: list[str] = field(default_factory=list)
    """Paths of attached content this version does not include (kept for earlier versions)."""
    files: dict[str, str] = field(default_factory=dict)
    """This sync's knowledge: relative path → sha256, what the version's filter admits."""


def store_name(agent: str, environment: str) -> str:
    return f"agent-{agent}-{environment}"


def knowledge_filter(hashes: Iterable[str]) -> dict[str, Any]:
    """The ``file_search`` filter admitting only the attached files with these content hashes."""
    return {"type": "in", "key": HASH_ATTRIBUTE, "value": sorted(set(hashes))}


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
    """What to upload and detach so the store holds every content hash of ``local``, keeping the rest.

    Content is matched by hash alone: a renamed file uploads nothing. A changed file's new content is
    uploaded and its old content kept (superseded, not detached), as is a removed file's. Detached are
    only files that are not ours (no hash attribute), a second copy of content already attached, and
    copies whose ingestion failed (their content is uploaded again when the folder still has it).
    """
    result = Plan()
    by_hash: dict[str, Attached] = {}
    for item in attached:
        if item.sha256 is None or item.status in _UNUSABLE or item.sha256 in by_hash:
            result.detach.append(item)
        else:
            by_hash[item.sha256] = item
    wanted: set[str] = set()
    for file in local:
        if file.sha256 in by_hash:
            result.unchanged.append(file.path)
        elif file.sha256 not in wanted:
            result.upload.append(file)
        wanted.add(file.sha256)
    for digest, item in by_hash.items():
        if digest not in wanted:
            result.superseded.append(item)
        elif item.status != "completed":
            result.waiting.append(item)
    return result


def _find_store(client: Any, name: str) -> str | None:
    for store in client.vector_stores.list(limit=100):
        if store.name == name:
            return str(store.id)
    return None


def _find_or_create_store(client: Any, name: str, agent: str) -> str:
    found = _find_store(client, name)
    if found is not None:
        return found
    created = client.vector_stores.create(name=name, metadata={"underlay_agent": agent})
    return str(created.id)


def _attached(client: Any, store_id: str) -> list[Attached]:
    found = []
    for item in client.vector_stores.files.list(vector_store_id=store_id, limit=100):
        attrs = item.attributes or {}
        path, digest = attrs.get(PATH_ATTRIBUTE), attrs.get(HASH_ATTRIBUTE)
        found.append(Attached(item.id, str(path) if path else None, str(digest) if digest else None, str(item.status)))
    return found


def _detach(client: Any, store_id: str, file_id: str) -> None:
    client.vector_stores.files.delete(file_id=file_id, vector_store_id=store_id)
    try:
        client.files.delete(file_id)
    except Exception:  # noqa: BLE001 - a file shared elsewhere or already gone: detaching was the point
        pass


def sync_knowledge(client: Any, root: Path, agent: str, environment: str, globs: list[str]) -> SyncReport:
    """Make the agent's store (per environment) hold every content hash of the folder's knowledge,
    uploading only content it has never held; earlier content stays attached for earlier versions.
    Waits until every needed file is ingested (a failed ingestion raises, naming the file)."""
    store_id = _find_or_create_store(client, store_name(agent, environment), agent)
    local = knowledge_files(root, globs)
    todo = plan(local, _attached(client, store_id))
    for old in todo.detach:
        _detach(client, store_id, old.file_id)
    pending: dict[str, str] = {item.file_id: item.path or item.file_id for item in todo.waiting}
    for file in todo.upload:
        uploaded = client.files.create(
            file=(file.path.rsplit("/", 1)[-1], file.absolute.read_bytes()), purpose="assistants"
        )
        client.vector_stores.files.create(
            vector_store_id=store_id,
            file_id=uploaded.id,
            attributes={PATH_ATTRIBUTE: file.path, HASH_ATTRIBUTE: file.sha256},
        )
        pending[uploaded.id] = file.path
    deadline = time.monotonic() + INGEST_TIMEOUT_S
    while pending:
        for file_id, path in list(pending.items()):
            state = client.vector_stores.files.retrieve(file_id=file_id, vector_store_id=store_id)
            if state.status == "completed":
                del pending[file_id]
            elif state.status in _UNUSABLE:
                reason = state.last_error.message if state.last_error else state.status
                raise RuntimeError(f"knowledge/{path}: ingestion {state.status}: {reason}")
        if pending and time.monotonic() > deadline:
            raise TimeoutError(f"knowledge: {len(pending)} file(s) not ingested after {INGEST_TIMEOUT_S:.0f}s")
        if pending:
            time.sleep(0.2)
    return SyncReport(
        store_id,
        [f.path for f in todo.upload],
        [a.file_id for a in todo.detach],
        todo.unchanged,
        superseded=[a.path or a.file_id for a in todo.superseded],
        files={f.path: f.sha256 for f in local},
    )


def prune(client: Any, store_id: str, keep: Iterable[str]) -> list[str]:
    """Detach (and delete) every file of ``store_id`` whose content hash is not in ``keep`` (the hashes
    the agent's remaining versions name); returns the detached files' paths. Files without a hash
    attribute are left alone: they are not the sync's."""
    kept = set(keep)
    gone = []
    for item in _attached(client, store_id):
        if item.sha256 is not None and item.sha256 not in kept:
            _detach(client, store_id, item.file_id)
            gone.append(item.path or item.file_id)
    return gone
