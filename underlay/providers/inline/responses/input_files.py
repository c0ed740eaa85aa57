"""``input_file`` content parts: the text of a file the client attaches to a message.

The engine's models read text (and image URLs), so an attached file reaches the model as its extracted
text, parsed by the same parser that ingests files into vector stores (text and source files, Markdown,
HTML, JSON, CSV, PDF, and the Office formats whose libraries are installed). A file comes either from
the Files API (``file_id``, read as the caller, so another tenant's id is a 404) or inline
(``file_data``: a base64 ``data:`` URL, or bare base64, with ``filename``). ``file_url`` is refused:
this server does not fetch URLs on a client's behalf.

Why the text is not stored in the item: the stored input keeps the client's own part (what
``input_items`` lists), and a follow-up (``previous_response_id``) resolves its files again. Every
failure is a 400 naming the part, raised before any model time is spent; the size limit is checked
before a byte is decoded or parsed, so a client's attachment costs bounded work.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import mimetypes
from typing import Any

from underlay.api.errors import InvalidRequestError, NotFoundError, PayloadTooLargeError

FileText = dict[str, str]
"""``"<item id>/<part index>"`` → the text the model sees for that part."""


def part_key(item: dict[str, Any], index: int) -> str:
    return f"{item.get('id')}/{index}"


def _file_parts(items: list[dict[str, Any]]) -> list[tuple[int, int, dict[str, Any], dict[str, Any]]]:
    found = []
    for i, item in enumerate(items):
        if item.get("type") != "message" or not isinstance(item.get("content"), list):
            continue
        for j, part in enumerate(item["content"]):
            if isinstance(part, dict) and part.get("type") == "input_file":
                found.append((i, j, item, part))
    return found


def _decode_data(data: str, max_bytes: int, where: str) -> tuple[bytes, str | None]:
    """(bytes, media type) from a ``data:`` URL or bare base64; the size is checked before decoding."""
    media_type = None
    payload = data
    if data.startswith("data:"):
        header, sep, payload = data.partition(",")
        if not sep or not header.endswith(";base64"):
            raise InvalidRequestError(
                "input_file.file_data must be base64: 'data:<media type>;base64,<data>' or bare base64.",
                param=f"{where}.file_data",
            )
        media_type = header[5:-7] or None
    if len(payload) > (max_bytes + 2) // 3 * 4 + 4:
        raise PayloadTooLargeError(
            f"input_file.file_data is larger than the {max_bytes} bytes allowed; upload the file to a vector "
            "store and use file_search instead.",
            param=f"{where}.file_data",
        )
    try:
        return base64.b64decode(payload, validate=True), media_type
    except (binascii.Error, ValueError):
        raise InvalidRequestError("input_file.file_data is not valid base64.", param=f"{where}.file_data") from None


async def _read_file(files: Any, file_id: str, max_bytes: int, where: str) -> tuple[bytes, str]:
    if files is None:
        raise InvalidRequestError(
            "input_file with a file_id needs the files API; add files to apis in the run config, or send "
            "file_data instead.",
            param=f"{where}.file_id",
        )
    try:
        meta = await files.get_file(file_id)
    except NotFoundError:
        raise NotFoundError("File", file_id, param=f"{where}.file_id") from None
    if meta.bytes > max_bytes:
        raise PayloadTooLargeError(
            f"File '{file_id}' has {meta.bytes} bytes; an input_file may have at most {max_bytes}. Attach it "
            "to a vector store and use file_search instead.",
            param=f"{where}.file_id",
        )
    chunks = await files.open_content(file_id)
    data = bytearray()
    async for chunk in chunks:
        data.extend(chunk)
        if len(data) > max_bytes:  # the stored size lied (or the file grew): stop reading, do not buffer it all
            raise PayloadTooLargeError(
                f"File '{file_id}' is larger than the {max_bytes} bytes an input_file may have.",
                param=f"{where}.file_id",
            )
    return bytes(data), meta.filename


async def _text_of(part: dict[str, Any], files: Any, max_bytes: int, where: str) -> str:
    # The parser lives with the ingestion pipeline in the control plane; it is pure (bytes in, text out)
    # and imported here, not copied, so an attachment and an ingested file read the same way.
    from underlay.shared.parse import ParseError, parse_document

    if part.get("file_url"):
        raise InvalidRequestError(
            "input_file.file_url is not supported: this server does not fetch URLs. Upload the file (file_id) or "
            "send its content as file_data.",
            param=f"{where}.file_url",
        )
    if part.get("file_id"):
        data, filename = await _read_file(files, str(part["file_id"]), max_bytes, where)
        filename = part.get("filename") or filename
    elif part.get("file_data"):
        data, media_type = _decode_data(str(part["file_data"]), max_bytes, where)
        filename = part.get("filename") or "attachment" + (
            (mimetypes.guess_extension(media_type) or "") if media_type else ""
        )
    else:
        raise InvalidRequestError("input_file needs a file_id or file_data (with a filename).", param=where)
    try:
        parsed = await asyncio.to_thread(parse_document, data, filename)
    except ParseError as exc:
        raise InvalidRequestError(
            f"input_file '{filename}': {exc.message} Send text, Markdown, HTML, JSON, CSV or PDF files; images go "
            "in input_image.",
            param=where,
            code=exc.code,
        ) from None
    return f"[File: {filename}]\n{parsed.text}"


async def file_text(part: dict[str, Any], files: Any, max_bytes: int, where: str) -> str:
    """The text the model sees for one ``input_file`` part (a prompt variable's, say), errors at ``where``."""
    return await _text_of(part, files, max_bytes, where)


async def resolve_files(
    history: list[dict[str, Any]], items: list[dict[str, Any]], files: Any, max_bytes: int
) -> FileText:
    """The text of every ``input_file`` part in ``history`` and ``items`` (this request's input)."""
    texts: FileText = {}
    for source, label in ((history, None), (items, "input")):
        for i, j, item, part in _file_parts(source):
            where = f"input[{i}].content[{j}]" if label else f"previous input item '{item.get('id')}'.content[{j}]"
            texts[part_key(item, j)] = await _text_of(part, files, max_bytes, where)
    return texts
