"""File ingestion end to end through the HTTP API: files/s, chunks/s, and the share of time spent embedding.

What it measures: a real Underlay server (embedded all-MiniLM-L6-v2, Files on local disk, sqlite-vec,
Vector Stores, ``jobs.workers: 2`` as shipped) driven with the ``openai`` SDK, in two parts:

1. a 50-page PDF (text pages written by ``make_pdf`` below, a minimal PDF writer, from standard-library
   docstrings: about 400 words a page), attached to its own vector store;
2. 1,000 small text files (one standard-library docstring each, 12-250 words, about 47 on average),
   attached to another store with one file batch.

Both use the default chunking (``auto``: 800-token chunks overlapping by 400). For each part it prints
the upload rate (``files.create``, 4 at a time), the ingestion rate (file batch created -> batch no
longer ``in_progress``, polled every 0.1 s) in files/s, pages/s and chunks/s, and end to end.

The share of ingestion spent embedding is measured by replay, in the same run and on the same
server: the chunks the server made (read back from ``GET /v1/vector_stores/{id}/files/{file_id}/content``)
are sent to ``POST /v1/embeddings`` with the store's embedding model exactly as the ingestion jobs
call the model: each file's chunks in batches of ``vector_stores.embed_batch_size`` (32), files taken
by 2 concurrent callers (the 2 job workers). That time over the ingestion time is the share. It
slightly overstates the share, since the replay also pays HTTP and base64 encoding of the vectors,
which ingestion does not (the embedding call stays inside the server there). For comparison it
also prints the time for the same chunks in full batches of 32 regardless of file boundaries (one
request per small file is what ingestion does; that line shows what batching across files would buy).

Target: every file completed (no failed file). Speeds are reported; none is promised yet.

    python bench/ingest.py [--pages 50] [--files 1000] [--quick]

``--quick`` is a 10-page PDF and 100 files. Exits 0 whatever the figures. ``--record`` / ``--check
[--tolerance 1.5]`` (``bench/_results.py``) keep and compare each part's ingestion rate (pages/s for the PDF,
files/s for the small files; chunks/s) and its upload-and-ingest rate; ``--quick`` is enough for them.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import shutil
import sys
import tempfile
import textwrap
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE / "data"))
from _results import HIGHER, Guard  # noqa: E402
from _vector_stores import machine_line, start, wait_batch  # noqa: E402
from stdlib_docs import MODULES, build_corpus  # noqa: E402

EMBED_BATCH = 32  # vector_stores.embed_batch_size (the default, not overridden in the config)
JOB_WORKERS = 2  # jobs.workers
UPLOAD_THREADS = 4
LINES_PER_PAGE, COLUMNS = 58, 95
EXTRA_MODULES = (
    "asyncio email.message http.client http.server xml.etree.ElementTree configparser decimal fractions mailbox "
    "imaplib smtplib ftplib ssl selectors concurrent.futures multiprocessing unittest doctest pdb cmd code codecs "
    "locale gettext sched"
).split()


# ---------------------------------------------------------------------------------------------------
# The files
# ---------------------------------------------------------------------------------------------------


def _pdf_string(line: str) -> str:
    text = line.encode("ascii", "replace").decode("ascii")
    return text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")


def make_pdf(pages: list[list[str]]) -> bytes:
    """A PDF 1.4 file with one Helvetica text page per entry of ``pages`` (US letter, 10 pt lines)."""
    count = len(pages)
    objects: dict[int, bytes] = {
        1: b"<< /Type /Catalog /Pages 2 0 R >>",
        2: (
            "<< /Type /Pages /Kids [" + " ".join(f"{4 + 2 * i} 0 R" for i in range(count)) + f"] /Count {count} >>"
        ).encode(),
        3: b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>",
    }
    for i, lines in enumerate(pages):
        stream = (
            "BT /F1 10 Tf 12 TL 50 750 Td " + " ".join(f"({_pdf_string(x)}) Tj T*" for x in lines) + " ET"
        ).encode()
        objects[4 + 2 * i] = (
            f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources << /Font << /F1 3 0 R >> >> "
            f"/Contents {5 + 2 * i} 0 R >>"
        ).encode()
        objects[5 + 2 * i] = b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream"
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number in range(1, len(objects) + 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + objects[number] + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)


def pdf_pages(count: int) -> list[list[str]]:
    """``count`` pages of text: the retrieval corpus's docstrings, wrapped, cycled if needed."""
    lines: list[str] = []
    for doc in build_corpus():
        for paragraph in doc.text.split("\n\n"):
            lines += textwrap.wrap(" ".join(paragraph.split()), COLUMNS) + [""]
    needed = count * LINES_PER_PAGE
    lines = (lines * (needed // len(lines) + 1))[:needed]
    return [lines[i : i + LINES_PER_PAGE] for i in range(0, needed, LINES_PER_PAGE)]


def small_texts(count: int) -> list[tuple[str, str]]:
    """``count`` (name, text) pairs: distinct docstrings of 12-250 words of standard-library functions,
    classes and methods, in a fixed order."""
    out: list[tuple[str, str]] = []
    seen: set[str] = set()
    for module_name in MODULES + EXTRA_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        for name, obj in sorted(vars(module).items()):
            if name.startswith("_"):
                continue
            members = [(name, obj)]
            if inspect.isclass(obj):
                members += [(f"{name}.{a}", b) for a, b in sorted(vars(obj).items()) if not a.startswith("_")]
            for qualname, member in members:
                if not callable(member) and not isinstance(member, property | classmethod | staticmethod):
                    continue
                doc = inspect.getdoc(member) or ""
                if 12 <= len(doc.split()) <= 250 and doc not in seen:
                    seen.add(doc)
                    out.append((f"{module_name}.{qualname}", f"{module_name}.{qualname}\n\n{doc}\n"))
                    if len(out) == count:
                        return out
    while len(out) < count:  # other Pythons may have fewer; repeat with new names rather than stop short
        name, text = out[len(out) % len(seen)]
        out.append((f"{name}.copy{len(out)}", text))
    return out


# ---------------------------------------------------------------------------------------------------
# The measurement
# ---------------------------------------------------------------------------------------------------


def upload(client: Any, files: list[tuple[str, bytes]]) -> tuple[list[str], float]:
    t0 = time.perf_counter()
    with ThreadPoolExecutor(UPLOAD_THREADS) as pool:
        ids = list(pool.map(lambda f: client.files.create(file=f, purpose="assistants").id, files))
    return ids, time.perf_counter() - t0


def ingest(client: Any, name: str, file_ids: list[str]) -> tuple[Any, Any, float]:
    store = client.vector_stores.create(name=name)
    t0 = time.perf_counter()
    batch = client.vector_stores.file_batches.create(store.id, file_ids=file_ids)
    batch = wait_batch(client, store.id, batch.id)
    return store, batch, time.perf_counter() - t0


def chunk_texts(client: Any, store_id: str, file_ids: list[str]) -> list[list[str]]:
    def one(file_id: str) -> list[str]:
        page = client.vector_stores.files.content(file_id, vector_store_id=store_id)
        return [item.text for item in page.data if item.text]

    with ThreadPoolExecutor(UPLOAD_THREADS) as pool:
        return list(pool.map(one, file_ids))


def replay_embeddings(client: Any, model: str, per_file: list[list[str]]) -> float:
    """Embed every file's chunks as the ingestion jobs do (batches of EMBED_BATCH, JOB_WORKERS files at once)."""
    queue = list(reversed(per_file))
    lock = threading.Lock()

    def worker() -> None:
        while True:
            with lock:
                if not queue:
                    return
                texts = queue.pop()
            for offset in range(0, len(texts), EMBED_BATCH):
                client.embeddings.create(model=model, input=texts[offset : offset + EMBED_BATCH])

    client.embeddings.create(model=model, input=["warm up"])
    t0 = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(JOB_WORKERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - t0


def part(client: Any, label: str, files: list[tuple[str, bytes]], pages: int | None) -> dict[str, Any]:
    ids, upload_s = upload(client, files)
    store, batch, ingest_s = ingest(client, label, ids)
    counts = batch.file_counts
    texts = chunk_texts(client, store.id, ids)
    chunks = sum(len(t) for t in texts)
    model = (store.model_extra or {}).get("embedding_model") or client.vector_stores.retrieve(store.id).model_extra.get(
        "embedding_model"
    )
    embed_s = replay_embeddings(client, model, texts)
    size = sum(len(data) for _, data in files)
    n = len(files)
    print(f"{label}: {n} file(s), {size / 1e6:.2f} MB" + (f", {pages} pages" if pages else "") + f", {chunks} chunks")
    print(f"  upload      {upload_s:7.2f} s  {n / upload_s:8.1f} files/s  {size / 1e6 / upload_s:6.2f} MB/s")
    rate = f"  {n / ingest_s:8.1f} files/s  {chunks / ingest_s:8.1f} chunks/s"
    if pages:
        rate += f"  {pages / ingest_s:6.1f} pages/s"
    print(f"  ingest      {ingest_s:7.2f} s{rate}   (completed {counts.completed}, failed {counts.failed})")
    total = upload_s + ingest_s
    print(f"  end to end  {total:7.2f} s  {n / total:8.1f} files/s  {chunks / total:8.1f} chunks/s")
    print(
        f"  embedding   {embed_s:7.2f} s  replayed {chunks} chunks through /v1/embeddings ({chunks / embed_s:.0f}/s): "
        f"{embed_s / ingest_s:.0%} of ingestion"
    )
    flat = [t for file_texts in texts for t in file_texts]
    pooled_s = replay_embeddings(client, model, [flat[i : i + EMBED_BATCH] for i in range(0, len(flat), EMBED_BATCH)])
    print(
        f"  (for comparison: the same chunks in full batches of {EMBED_BATCH}, ignoring file boundaries: "
        f"{pooled_s:.2f} s, {chunks / pooled_s:.0f}/s)"
    )
    return {
        "failed": counts.failed,
        "completed": counts.completed,
        "total": counts.total,
        "label": label,
        # A PDF part is one file: its rates are per page (units counted, per second).
        "rate": (pages or n) / ingest_s,
        "unit": "pages/s" if pages else "files/s",
        "chunks_per_s": chunks / ingest_s,
        "end_to_end": (pages or n) / total,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pages", type=int, default=50)
    parser.add_argument("--files", type=int, default=1000)
    parser.add_argument("--quick", action="store_true", help="a 10-page PDF and 100 files")
    Guard.add_arguments(parser)
    args = parser.parse_args()
    guard = Guard("ingest", args)
    if args.quick:
        args.pages, args.files = min(args.pages, 10), min(args.files, 100)

    pdf = make_pdf(pdf_pages(args.pages))
    texts = small_texts(args.files)
    print(
        f"ingest: a {args.pages}-page PDF ({len(pdf) / 1e3:.0f} kB) and {args.files} small text files, default chunking"
    )
    print(machine_line())
    print()
    workdir = Path(tempfile.mkdtemp(prefix="underlay-bench-ingest-"))
    server = start(workdir, workers=JOB_WORKERS)
    try:
        client = server.openai(timeout=600)
        results = [
            part(client, "pdf", [("report.pdf", pdf)], args.pages),
            part(client, "small text files", [(f"{name}.txt", text.encode()) for name, text in texts], None),
        ]
        print()
        failed = sum(r["failed"] for r in results)
        done = sum(r["completed"] for r in results)
        total = sum(r["total"] for r in results)
        verdict = "PASS" if failed == 0 and done == total else "MISS"
        print(f"target: every file completed: {done}/{total}, failed {failed}: {verdict}")
        for r in results:
            guard.figure(f"{r['label']}: ingest", r["rate"], r["unit"], HIGHER, wall=True)
            guard.figure(f"{r['label']}: ingest chunks", r["chunks_per_s"], "chunks/s", HIGHER, wall=True)
            guard.figure(f"{r['label']}: upload and ingest", r["end_to_end"], r["unit"], HIGHER, wall=True)
    finally:
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    if verdict != "PASS" and guard.active:
        print("not every file completed: the figures are neither recorded nor checked")
        return 1
    return guard.finish()


if __name__ == "__main__":
    sys.exit(main())
