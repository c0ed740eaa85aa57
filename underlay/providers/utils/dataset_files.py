"""Rows out of a dataset file (JSONL, CSV, Parquet), with a bounded row count and errors that name the line.

Why one parser for every datasets provider: a client uploads the same file whichever provider keeps the
rows, and a bad line must read the same way ("line 7: not JSON") wherever it lands. Parsing is a pure
function of the bytes; the caller has already bounded their size.
"""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from underlay.api.datasets import MAX_DATASET_ROWS
from underlay.api.errors import InvalidRequestError, PayloadTooLargeError

__all__ = ["FORMATS", "allowed_path", "file_uri_path", "format_of", "parse_rows"]

FORMATS = ("jsonl", "csv", "parquet")
_SUFFIXES = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl", ".csv": "csv", ".parquet": "parquet"}
_JSON_COLUMNS = ("messages", "chat_completion_input")
"""CSV cells that hold a list of messages as JSON text; decoded so a CSV row checks like a JSONL one."""


def format_of(filename: str | None, given: str | None = None) -> str:
    """``given`` when set, else the format the file name's suffix says; a 400 when neither tells."""
    if given:
        return given
    name = (filename or "").lower()
    for suffix, fmt in _SUFFIXES.items():
        if name.endswith(suffix):
            return fmt
    raise InvalidRequestError(
        f"Cannot tell the format of '{(filename or '')[:200]}'; name the file .jsonl, .csv or .parquet, or set "
        "source.format.",
        param="source.format",
    )


def _too_many() -> PayloadTooLargeError:
    return PayloadTooLargeError(
        f"The file has more than {MAX_DATASET_ROWS} rows, the most one dataset may hold; split it.",
        param="source",
    )


def _jsonl(data: bytes) -> list[Any]:
    rows: list[Any] = []
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InvalidRequestError(f"The file is not UTF-8 text (byte {exc.start}).", param="source") from None
    if text.lstrip().startswith("["):  # a .json file holding one array of rows
        try:
            array = json.loads(text)
        except ValueError as exc:
            raise InvalidRequestError(f"The file is not valid JSON ({exc}).", param="source") from None
        if len(array) > MAX_DATASET_ROWS:
            raise _too_many()
        return list(array)
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except ValueError as exc:
            raise InvalidRequestError(
                f"line {number}: not JSON ({exc}); each line of a JSONL file is one JSON object.",
                param="source",
                code="invalid_row",
            ) from None
        if len(rows) > MAX_DATASET_ROWS:
            raise _too_many()
    return rows


def _decode_cells(row: dict[str, Any]) -> dict[str, Any]:
    for column in _JSON_COLUMNS:
        value = row.get(column)
        if isinstance(value, str) and value.lstrip().startswith("["):
            try:
                row[column] = json.loads(value)
            except ValueError:
                pass  # left as text: the purpose's check names the field
    return row


def _csv(data: bytes) -> list[Any]:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InvalidRequestError(f"The file is not UTF-8 text (byte {exc.start}).", param="source") from None
    csv.field_size_limit(1_000_000)
    reader = csv.DictReader(io.StringIO(text, newline=""))
    rows: list[Any] = []
    try:
        for row in reader:
            if None in row:  # more cells than header columns
                raise InvalidRequestError(
                    f"line {reader.line_num}: more cells than the header has columns.",
                    param="source",
                    code="invalid_row",
                )
            rows.append(_decode_cells(dict(row)))
            if len(rows) > MAX_DATASET_ROWS:
                raise _too_many()
    except csv.Error as exc:
        raise InvalidRequestError(f"line {reader.line_num}: not valid CSV ({exc}).", param="source") from None
    return rows


def _parquet(data: bytes) -> list[Any]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise InvalidRequestError(
            "Parquet files need pyarrow on the server (pip install 'underlay[datasets]'); send JSONL or CSV.",
            param="source.format",
        ) from None
    try:
        parquet = pq.ParquetFile(io.BytesIO(data))
    except Exception as exc:  # pyarrow raises its own error types for a damaged file
        raise InvalidRequestError(
            f"The file is not a readable Parquet file ({type(exc).__name__}).", param="source"
        ) from None
    if parquet.metadata.num_rows > MAX_DATASET_ROWS:
        raise _too_many()
    rows: list[Any] = parquet.read().to_pylist()
    return [_decode_cells(row) if isinstance(row, dict) else row for row in rows]


def parse_rows(data: bytes, fmt: str) -> list[Any]:
    """The file's rows, in order; each is usually a dict (the caller checks them against the purpose)."""
    if fmt == "jsonl":
        return _jsonl(data)
    if fmt == "csv":
        return _csv(data)
    if fmt == "parquet":
        return _parquet(data)
    raise InvalidRequestError(f"Unknown dataset file format '{fmt[:20]}'; use one of: {', '.join(FORMATS)}.")


def allowed_path(path_text: str, allowed_dirs: list[str], *, what: str = "file://") -> Path:
    """``path_text`` resolved (symlinks and ``..`` included) if it lies inside one of ``allowed_dirs``.

    Why so strict: a dataset URI is a client's string, and a server that opened any path it was sent
    would hand its own files (keys, configs, other tenants' data) to whoever asked. Only directories the
    operator named are readable, and the refusal does not say whether the path exists.
    """
    if not allowed_dirs:
        raise InvalidRequestError(
            f"{what} URIs are switched off on this server; upload the file through the Files API and register "
            "its id (file-...), or ask the operator to list a directory in the provider's allowed_dirs.",
            param="source.uri",
        )
    if "\x00" in path_text or not path_text:
        raise InvalidRequestError("The URI's path is empty or not valid.", param="source.uri")
    resolved = Path(os.path.realpath(path_text))
    for base in allowed_dirs:
        root = Path(os.path.realpath(base))
        if resolved == root or root in resolved.parents:
            return resolved
    raise InvalidRequestError(
        f"{what} URIs may only name paths inside the directories the operator allowed (the provider's "
        "allowed_dirs); upload the file through the Files API instead.",
        param="source.uri",
    )


def file_uri_path(uri: str) -> str:
    """The local path of a ``file://`` URI (``file:///data/x.jsonl``), percent-escapes decoded."""
    parsed = urlparse(uri)
    if parsed.scheme != "file" or parsed.netloc not in ("", "localhost") or parsed.query or parsed.fragment:
        raise InvalidRequestError(
            "A file URI looks like file:///absolute/path/rows.jsonl (no host, query or fragment).", param="source.uri"
        )
    return unquote(parsed.path)
