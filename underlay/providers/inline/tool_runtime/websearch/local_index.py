"""An offline web-search index: SQLite FTS5 (BM25) over a directory of documents or a JSONL file.

Why it exists: agents and tests need a ``web_search`` tool that works with no network, searching
real text with real ranking rather than returning a canned answer. Point it at a folder of pages
(Markdown, text, HTML) or a JSONL file of ``{"url", "title", "text"}`` records and it behaves like a
small search engine over them.

The index is built once into an SQLite file and rebuilt only when the source changes (the set of
files, their sizes and modification times, recorded as a signature in the database), so restarts
are instant. Building and searching run in a worker thread: SQLite calls block.
"""

from __future__ import annotations

import hashlib
import html
import json
import re
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path

TOKENIZER = "porter unicode61 remove_diacritics 2"
TEXT_SUFFIXES = {".md", ".markdown", ".txt", ".rst", ".html", ".htm"}
_TERM = re.compile(r"[^\W_]+", re.UNICODE)
_TAG = re.compile(r"<[^>]+>")
_DROP = re.compile(r"<(script|style|head)\b.*?</\1\s*>", re.IGNORECASE | re.DOTALL)
_TITLE = re.compile(r"<title[^>]*>(.*?)</title>", re.IGNORECASE | re.DOTALL)
_SCHEMA_VERSION = "1"


@dataclass(frozen=True)
class Document:
    url: str
    title: str
    text: str


@dataclass(frozen=True)
class Hit:
    url: str
    title: str
    snippet: str
    score: float


def match_expression(query: str, max_terms: int = 32) -> str | None:
    """Plain text → an FTS5 MATCH of quoted terms OR-ed together (no user text is ever FTS5 syntax)."""
    terms: list[str] = []
    for term in (t.lower() for t in _TERM.findall(query)):
        if term not in terms:
            terms.append(term)
    if not terms:
        return None
    return " OR ".join(f'"{t}"' for t in terms[:max_terms])


def _html_document(path: Path, raw: str, url: str) -> Document:
    title_match = _TITLE.search(raw)
    title = html.unescape(_TAG.sub("", title_match.group(1))).strip() if title_match else path.stem
    body = html.unescape(_TAG.sub(" ", _DROP.sub(" ", raw)))
    return Document(url=url, title=title or path.stem, text=" ".join(body.split()))


def _text_document(path: Path, raw: str, url: str) -> Document:
    title = path.stem.replace("-", " ").replace("_", " ")
    for line in raw.splitlines():
        stripped = line.strip()
        if stripped:
            if stripped.startswith("#"):
                title = stripped.lstrip("#").strip() or title
            break
    return Document(url=url, title=title, text=raw)


def read_documents(source: Path) -> list[Document]:
    """Every document of ``source``: a JSONL file (one record per line) or a directory of pages."""
    if source.is_file():
        documents = []
        for number, line in enumerate(source.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{source}:{number}: not a JSON object ({exc.msg})") from None
            text = record.get("text") or record.get("content") or record.get("body") or ""
            url = record.get("url") or f"{source.as_uri()}#{number}"
            documents.append(Document(url=str(url), title=str(record.get("title") or url), text=str(text)))
        return documents
    documents = []
    for path in sorted(p for p in source.rglob("*") if p.is_file() and p.suffix.lower() in TEXT_SUFFIXES):
        raw = path.read_text(encoding="utf-8", errors="replace")
        url = path.resolve().as_uri()
        reader = _html_document if path.suffix.lower() in (".html", ".htm") else _text_document
        documents.append(reader(path, raw, url))
    return documents


def source_signature(source: Path) -> str:
    """Changes whenever a file is added, removed, resized or touched."""
    digest = hashlib.sha256(_SCHEMA_VERSION.encode())
    paths = [source] if source.is_file() else sorted(p for p in source.rglob("*") if p.is_file())
    for path in paths:
        stat = path.stat()
        digest.update(f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


class LocalIndex:
    def __init__(self, source: Path, db_path: str) -> None:
        self.source = source
        self.db_path = db_path
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self.size = 0

    def open(self) -> None:
        """Open the index, building or rebuilding it when the source changed. Blocking: run in a thread."""
        if not self.source.exists():
            raise FileNotFoundError(f"websearch documents '{self.source}' do not exist")
        if self.db_path != ":memory:":
            Path(self.db_path).parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.db_path, check_same_thread=False)
        try:
            conn.execute(
                "CREATE VIRTUAL TABLE IF NOT EXISTS pages "
                f"USING fts5(url UNINDEXED, title, body, tokenize='{TOKENIZER}')"
            )
        except sqlite3.OperationalError as exc:
            conn.close()
            raise RuntimeError(f"this SQLite has no FTS5 ({exc}); install pysqlite3-binary") from None
        conn.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT)")
        signature = source_signature(self.source)
        row = conn.execute("SELECT value FROM meta WHERE key = 'signature'").fetchone()
        if row is None or row[0] != signature:
            documents = read_documents(self.source)
            with conn:
                conn.execute("DELETE FROM pages")
                conn.executemany(
                    "INSERT INTO pages (url, title, body) VALUES (?, ?, ?)",
                    [(d.url, d.title, d.text) for d in documents],
                )
                conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('signature', ?)", (signature,))
        self.size = conn.execute("SELECT count(*) FROM pages").fetchone()[0]
        self._conn = conn

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def search(self, query: str, limit: int) -> list[Hit]:
        """Best pages first (BM25, title matches weigh more), each with a snippet around the match."""
        expression = match_expression(query)
        if expression is None:
            return []
        with self._lock:
            if self._conn is None:
                raise RuntimeError("the local web index is closed")
            rows = self._conn.execute(
                "SELECT url, title, snippet(pages, 2, '', '', ' ... ', 32), bm25(pages, 0.0, 4.0, 1.0) AS rank "
                "FROM pages WHERE pages MATCH ? ORDER BY rank LIMIT ?",
                (expression, limit),
            ).fetchall()
        return [Hit(url=r[0], title=r[1], snippet=" ".join(r[2].split()), score=-float(r[3])) for r in rows]
