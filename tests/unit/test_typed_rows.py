"""Typed rows (issue "Checked contracts", item 3): stores read SQL rows once, callers use attributes.

Why a test and not a convention: a router that indexes a row by column name (``row["owner"]``) fails
only when a request reaches that line, while an attribute of a frozen row class fails the type check.
Two checks, both read from the source so they cost nothing at run time:

- the reads of each converted store return a row class (or an API model), never ``dict[str, Any]``;
- the code that consumes those rows (the routers, the ingestion pipeline, the Responses engine) never
  subscripts a row-like name with a string constant.

Item JSON (conversation items, response output items, tool payloads) stays a dict on purpose: it is the
API's own open shape, not a table row, and is not covered here.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "underlay"

# module (relative to underlay/) -> class -> the read methods that must not hand out raw rows.
READS: dict[str, dict[str, list[str]]] = {
    "core/stores/files.py": {"FileStore": ["get_stored", "get", "expired"]},
    "core/stores/responses.py": {"ResponseStore": ["find", "get", "page"]},
    "core/stores/conversations.py": {"ConversationStore": ["get", "page"]},
    "core/stores/chat_completions.py": {"ChatCompletionStore": ["get"]},
    "core/stores/vector_stores.py": {
        "VectorStoreRows": [
            "find_store",
            "find_store_any_owner",
            "get_store",
            "page_stores",
            "find_file",
            "get_file",
            "files_of",
            "page_files",
            "files_named",
            "attachments_of_file",
            "stuck_files",
            "get_batch",
        ]
    },
    "core/telemetry/span_store.py": {"SpanStore": ["list_roots", "root_of", "trace_spans", "span"]},
}

# Reads that return item JSON (the API's open shape, read from the row once), with why.
ITEM_JSON: dict[str, str] = {"ConversationStore.page": "a page of conversation items, each the item's own JSON"}

# Where rows are consumed: every router, the ingestion pipeline and the Responses provider.
CONSUMERS = [
    *sorted((PACKAGE / "core" / "routers").glob("*.py")),
    *sorted((PACKAGE / "core" / "ingestion").glob("*.py")),
    *sorted((PACKAGE / "providers" / "inline" / "responses").glob("*.py")),
]

# Names these modules give to store rows.
ROW_NAMES = {"row", "rows", "existing", "latest", "stored", "store", "cursor", "attachment", "root", "found"}


def _methods(path: Path, cls: str) -> dict[str, ast.AsyncFunctionDef | ast.FunctionDef]:
    tree = ast.parse(path.read_text())
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == cls:
            return {f.name: f for f in node.body if isinstance(f, ast.FunctionDef | ast.AsyncFunctionDef)}
    raise AssertionError(f"{path}: no class {cls}")


@pytest.mark.parametrize(
    ("module", "cls", "method"),
    [(m, c, f) for m, classes in READS.items() for c, methods in classes.items() for f in methods],
)
def test_store_reads_return_row_classes(module: str, cls: str, method: str) -> None:
    methods = _methods(PACKAGE / module, cls)
    assert method in methods, f"{module}: {cls}.{method} is gone; update READS"
    returns = methods[method].returns
    assert returns is not None, f"{module}: {cls}.{method} has no return annotation"
    text = ast.unparse(returns)
    assert text not in ("Page", "Any"), f"{module}: {cls}.{method} returns raw rows ({text})"
    if f"{cls}.{method}" not in ITEM_JSON:
        assert "dict[str, Any]" not in text, (
            f"{module}: {cls}.{method} returns {text}; return a row class so callers use attributes"
        )


def _string_subscripts(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if (
            isinstance(node, ast.Subscript)
            and isinstance(node.value, ast.Name)
            and node.value.id in ROW_NAMES
            and isinstance(node.slice, ast.Constant)
            and isinstance(node.slice.value, str)
        ):
            found.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno}: {ast.unparse(node)}")
    return found


def test_consumers_never_index_rows_by_column_name() -> None:
    assert CONSUMERS, "no consumer modules found"
    offenders = [hit for path in CONSUMERS for hit in _string_subscripts(path)]
    assert not offenders, "read the row's attribute instead:\n" + "\n".join(offenders)
