"""The retrieval-quality corpus: docstrings of the Python standard library, one document each.

Built at run time from the interpreter that runs the benchmark, so nothing copied lives in this
repository and the corpus is on every machine with Python. The rule (see ``bench/data/README.md``):

1. for each module in ``MODULES``, in that order, take its public names (no leading ``_``) in sorted
   order whose object is a class, a Python function or a builtin function defined by that module
   (``__module__`` equal to the module's name up to leading underscores, ``posix`` for ``os``);
2. keep those whose ``inspect.getdoc`` docstring has 40 to 600 words;
3. drop a docstring identical to one already kept (aliases such as ``bisect.bisect_right``).

A document is ``<module>.<name>`` on the first line, a blank line, then the docstring. On CPython
3.11 this gives 293 documents; other versions differ slightly, and ``retrieval_quality.py`` prints
the count, a digest of the corpus, and any judged document that is missing.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
from dataclasses import dataclass

MODULES = (
    "abc argparse base64 bisect calendar collections contextlib copy csv dataclasses difflib enum filecmp fnmatch "
    "functools glob gzip hashlib heapq hmac html ipaddress itertools json logging math operator os os.path pathlib "
    "pickle pprint queue random re secrets shlex shutil socket sqlite3 statistics string struct subprocess tarfile "
    "tempfile textwrap threading time timeit traceback typing urllib.parse uuid warnings weakref zipfile zlib"
).split()
MIN_WORDS, MAX_WORDS = 40, 600


@dataclass(frozen=True)
class Document:
    doc_id: str  # "<module>.<name>", e.g. "shutil.copytree"
    text: str


def _defined_in(obj: object, module: str) -> bool:
    owner = (getattr(obj, "__module__", None) or "").lstrip("_")
    return owner == module.lstrip("_") or (module, owner) in {("os", "posix"), ("os.path", "posixpath")}


def build_corpus() -> list[Document]:
    docs: list[Document] = []
    seen: set[str] = set()
    for module_name in MODULES:
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        for name, obj in sorted(vars(module).items()):
            if name.startswith("_") or not (inspect.isclass(obj) or inspect.isfunction(obj) or inspect.isbuiltin(obj)):
                continue
            if not _defined_in(obj, module_name):
                continue
            doc = inspect.getdoc(obj) or ""
            if not MIN_WORDS <= len(doc.split()) <= MAX_WORDS or doc in seen:
                continue
            seen.add(doc)
            docs.append(Document(f"{module_name}.{name}", f"{module_name}.{name}\n\n{doc}\n"))
    return docs


def digest(docs: list[Document]) -> str:
    """A short fingerprint of the corpus, so two runs can tell whether they searched the same text."""
    h = hashlib.sha256()
    for doc in docs:
        h.update(doc.doc_id.encode() + b"\0" + doc.text.encode() + b"\0")
    return h.hexdigest()[:12]


if __name__ == "__main__":
    corpus = build_corpus()
    print(f"{len(corpus)} documents, digest {digest(corpus)}")
    for d in corpus:
        print(f"  {d.doc_id:<40} {len(d.text.split()):>4} words")
