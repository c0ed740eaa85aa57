"""Turn an uploaded file's bytes into plain text for chunking.

Formats: plain text and source code, Markdown, HTML (tags, scripts and styles removed), JSON, CSV/TSV,
PDF (pypdf), DOCX (python-docx), PPTX (python-pptx) and XLSX (openpyxl). The format is decided by
the content first (magic bytes: ``%PDF-``, and the part names inside an Office zip), then by the
file's extension, and for unknown extensions by sniffing for text: a renamed ``report.bin`` that is
really a PDF still parses, and a ``notes.txt`` that is really a zip is refused instead of indexing
garbage.

Every failure is a :class:`ParseError` whose ``code`` is one of OpenAI's ``last_error`` codes
(``unsupported_file`` for a type we cannot read, ``invalid_file`` for a file that claims a type but is
corrupt, encrypted or has no text) and whose message tells a person what to do about it.

The Office and PDF libraries are optional dependencies, imported on first use; a missing one is an
``unsupported_file`` error naming the package to install.
"""

from __future__ import annotations

import csv
import io
import json
import zipfile
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import PurePosixPath

TEXT_EXTENSIONS = frozenset(
    {
        "txt", "text", "log", "md", "markdown", "rst", "tex", "org", "adoc",
        "py", "js", "mjs", "ts", "tsx", "jsx", "java", "kt", "c", "h", "cc", "cpp", "hpp", "cs", "go",
        "rs", "rb", "php", "swift", "scala", "sh", "bash", "sql", "r", "lua", "pl",
        "css", "xml", "yaml", "yml", "toml", "ini", "cfg", "conf", "jsonl", "ndjson",
    }
)  # fmt: skip
_BINARY_MAGIC = {
    b"\x89PNG": "a PNG image",
    b"\xff\xd8\xff": "a JPEG image",
    b"GIF8": "a GIF image",
    b"\x1f\x8b": "a gzip archive",
    b"7z\xbc\xaf": "a 7-Zip archive",
    b"Rar!": "a RAR archive",
    b"\x7fELF": "an executable",
    b"MZ": "a Windows executable",
    b"ID3": "an MP3 audio file",
    b"OggS": "an Ogg media file",
    b"\xd0\xcf\x11\xe0": "a legacy Office (97-2003) document",
}


class ParseError(Exception):
    """A file that cannot become text; ``code`` is ``unsupported_file`` or ``invalid_file``."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class ParsedDocument:
    text: str
    format: str


def _extension(filename: str) -> str:
    return PurePosixPath(filename.lower()).suffix.lstrip(".")


def detect_format(data: bytes, filename: str) -> str:
    """The format name: pdf, docx, pptx, xlsx, html, json, csv, tsv, markdown or text."""
    ext = _extension(filename)
    if data[:5] == b"%PDF-" or (ext == "pdf" and b"%PDF-" in data[:1024]):
        return "pdf"
    if data[:4] == b"PK\x03\x04":
        try:
            with zipfile.ZipFile(io.BytesIO(data)) as archive:
                names = set(archive.namelist())
        except zipfile.BadZipFile:
            if ext in ("docx", "pptx", "xlsx"):
                raise ParseError(
                    "invalid_file", f"'{filename}' is not a valid .{ext} file (its zip container is damaged)."
                ) from None
            raise ParseError(
                "unsupported_file", f"'{filename}' is a damaged zip archive, which cannot be indexed."
            ) from None
        if "word/document.xml" in names:
            return "docx"
        if "ppt/presentation.xml" in names:
            return "pptx"
        if "xl/workbook.xml" in names:
            return "xlsx"
        if ext in ("docx", "pptx", "xlsx"):
            raise ParseError("invalid_file", f"'{filename}' is a zip file but not a valid .{ext} document.")
        raise ParseError(
            "unsupported_file",
            f"'{filename}' is a zip archive; upload the documents inside it one by one.",
        )
    for magic, what in _BINARY_MAGIC.items():
        if data.startswith(magic):
            raise ParseError(
                "unsupported_file",
                f"'{filename}' is {what}, which has no text to index; supported: text, Markdown, HTML, "
                "JSON, CSV, PDF, DOCX, PPTX and XLSX.",
            )
    if ext in ("pdf", "docx", "pptx", "xlsx"):
        raise ParseError(
            "invalid_file", f"'{filename}' does not look like a .{ext} file; its content is not {ext.upper()}."
        )
    if ext in ("html", "htm", "xhtml"):
        return "html"
    if ext == "json":
        return "json"
    if ext in ("csv", "tsv"):
        return ext
    if ext in ("md", "markdown"):
        return "markdown"
    if ext in TEXT_EXTENSIONS:
        return "text"
    head = data[:2048].lstrip().lower()
    if head.startswith((b"<!doctype html", b"<html")):
        return "html"
    if _looks_binary(data):
        raise ParseError(
            "unsupported_file",
            f"'{filename}' is a binary file of a type that cannot be indexed; supported: text, Markdown, "
            "HTML, JSON, CSV, PDF, DOCX, PPTX and XLSX.",
        )
    return "text"


def _looks_binary(data: bytes) -> bool:
    sample = data[:8192]
    if not sample:
        return False
    if sample.startswith((b"\xef\xbb\xbf", b"\xff\xfe", b"\xfe\xff")):
        return False
    if b"\x00" in sample:
        return True
    controls = sum(1 for b in sample if b < 32 and b not in (9, 10, 12, 13))
    if controls / len(sample) > 0.05:
        return True
    try:
        sample.decode("utf-8")
    except UnicodeDecodeError as exc:
        # A multi-byte character cut at the end of the sample is fine; garbage in the middle is not.
        return exc.start < len(sample) - 4
    return False


def decode_text(data: bytes, filename: str) -> str:
    """UTF-8 (with or without BOM) or UTF-16 with BOM; other bytes fall back to cp1252, then Latin-1."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        try:
            return data.decode("utf-16")
        except UnicodeDecodeError:
            raise ParseError(
                "invalid_file", f"'{filename}' has a UTF-16 byte order mark but is not valid UTF-16."
            ) from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        pass
    try:
        return data.decode("cp1252")
    except UnicodeDecodeError:
        return data.decode("latin-1")


# ---- HTML --------------------------------------------------------------------------------------------

_SKIP_TAGS = frozenset({"script", "style", "noscript", "template", "svg", "head", "iframe", "object"})
_BLOCK_TAGS = frozenset(
    {
        "p", "div", "br", "hr", "li", "ul", "ol", "tr", "table", "section", "article", "header", "footer",
        "h1", "h2", "h3", "h4", "h5", "h6", "pre", "blockquote", "dd", "dt", "dl", "nav", "aside", "main",
        "figure", "figcaption", "title", "form", "fieldset", "details", "summary", "address",
    }
)  # fmt: skip


class _TextExtractor(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.title: list[str] = []
        self._skip = 0
        self._in_title = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "title":
            self._in_title = True
        elif tag in _SKIP_TAGS:
            self._skip += 1
        if tag in _BLOCK_TAGS:
            self.parts.append("\n")
        elif tag in ("td", "th"):
            self.parts.append(" ")

    def handle_endtag(self, tag: str) -> None:
        if tag == "title":
            self._in_title = False
        elif tag in _SKIP_TAGS and self._skip:
            self._skip -= 1
        if tag in _BLOCK_TAGS:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.title.append(data)
        elif not self._skip:
            self.parts.append(data)


def html_to_text(markup: str) -> str:
    parser = _TextExtractor()
    parser.feed(markup)
    parser.close()
    lines = [" ".join(line.split()) for line in "".join(parser.parts).splitlines()]
    body = "\n".join(line for line in lines if line)
    title = " ".join("".join(parser.title).split())
    if title and not body.startswith(title):
        body = f"{title}\n{body}" if body else title
    return body


# ---- structured text ---------------------------------------------------------------------------------


def _rows_to_text(rows: list[list[str]]) -> str:
    """Rows under a header become ``column: value`` lines, so each chunk keeps the column names."""
    rows = [r for r in rows if any(cell.strip() for cell in r)]
    if not rows:
        return ""
    header = [h.strip() for h in rows[0]]
    if len(rows) == 1 or not all(header):
        return "\n".join(" | ".join(c.strip() for c in r) for r in rows)
    out = []
    for row in rows[1:]:
        pairs = [f"{header[i] if i < len(header) else f'column {i + 1}'}: {cell.strip()}" for i, cell in enumerate(row)]
        out.append("; ".join(p for p in pairs if not p.endswith(": ")))
    return "\n".join(out)


def _csv_text(text: str, filename: str, delimiter: str | None) -> str:
    try:
        if delimiter is None:
            try:
                delimiter = csv.Sniffer().sniff(text[:4096], delimiters=",;\t|").delimiter
            except csv.Error:
                delimiter = ","
        return _rows_to_text(list(csv.reader(io.StringIO(text), delimiter=delimiter)))
    except csv.Error as exc:
        raise ParseError("invalid_file", f"'{filename}' is not valid CSV ({exc}); check its quoting.") from None


def _json_text(text: str, filename: str) -> str:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ParseError(
            "invalid_file", f"'{filename}' is not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})."
        ) from None
    return json.dumps(value, indent=2, ensure_ascii=False)


# ---- binary documents -----------------------------------------------------------------------------------


def _missing(package: str, kind: str) -> ParseError:
    return ParseError(
        "unsupported_file", f"Reading {kind} files needs the '{package}' package on the server; install it."
    )


def _pdf_text(data: bytes, filename: str) -> str:
    try:
        from pypdf import PdfReader
        from pypdf.errors import PdfReadError
    except ImportError:
        raise _missing("pypdf", "PDF") from None
    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted:
            try:
                opened = reader.decrypt("")
            except Exception:
                opened = 0
            if not opened:
                raise ParseError(
                    "invalid_file", f"'{filename}' is a password-protected PDF; upload a copy without the password."
                )
        pages = [(page.extract_text() or "").strip() for page in reader.pages]
    except ParseError:
        raise
    except (PdfReadError, ValueError, KeyError, TypeError, AttributeError, OSError) as exc:
        raise ParseError("invalid_file", f"'{filename}' is a damaged PDF that cannot be read ({exc}).") from None
    except Exception as exc:
        raise ParseError(
            "invalid_file", f"'{filename}' could not be read as a PDF ({type(exc).__name__}: {exc})."
        ) from None
    return "\n\n".join(p for p in pages if p)


def _docx_text(data: bytes, filename: str) -> str:
    try:
        import docx
        from docx.table import Table
    except ImportError:
        raise _missing("python-docx", "DOCX") from None
    try:
        document = docx.Document(io.BytesIO(data))
        parts: list[str] = []
        for block in document.iter_inner_content():
            if isinstance(block, Table):
                rows = [[cell.text for cell in row.cells] for row in block.rows]
                parts.append(_rows_to_text(rows))
            else:
                parts.append(block.text)
        for section in document.sections:
            for paragraph in section.header.paragraphs + section.footer.paragraphs:
                if paragraph.text.strip():
                    parts.append(paragraph.text)
    except Exception as exc:
        raise ParseError(
            "invalid_file", f"'{filename}' is a damaged Word document ({type(exc).__name__}: {exc})."
        ) from None
    return "\n".join(p for p in parts if p.strip())


def _pptx_text(data: bytes, filename: str) -> str:
    try:
        from pptx import Presentation
    except ImportError:
        raise _missing("python-pptx", "PPTX") from None
    try:
        presentation = Presentation(io.BytesIO(data))
        slides: list[str] = []
        for number, slide in enumerate(presentation.slides, start=1):
            lines: list[str] = []
            for shape in slide.shapes:
                if getattr(shape, "has_text_frame", False) and shape.text_frame.text.strip():
                    lines.append(shape.text_frame.text)
                if getattr(shape, "has_table", False):
                    rows = [[cell.text for cell in row.cells] for row in shape.table.rows]
                    lines.append(_rows_to_text(rows))
            if slide.has_notes_slide and slide.notes_slide.notes_text_frame is not None:
                notes = slide.notes_slide.notes_text_frame.text.strip()
                if notes:
                    lines.append(f"Notes: {notes}")
            if lines:
                slides.append(f"Slide {number}\n" + "\n".join(lines))
    except Exception as exc:
        raise ParseError(
            "invalid_file", f"'{filename}' is a damaged PowerPoint file ({type(exc).__name__}: {exc})."
        ) from None
    return "\n\n".join(slides)


def _xlsx_text(data: bytes, filename: str) -> str:
    try:
        import openpyxl
    except ImportError:
        raise _missing("openpyxl", "XLSX") from None
    try:
        workbook = openpyxl.load_workbook(io.BytesIO(data), read_only=True, data_only=True)
        sheets: list[str] = []
        try:
            for sheet in workbook.worksheets:
                rows = [["" if v is None else str(v) for v in row] for row in sheet.iter_rows(values_only=True)]
                body = _rows_to_text(rows)
                if body:
                    sheets.append(f"Sheet: {sheet.title}\n{body}")
        finally:
            workbook.close()
    except Exception as exc:
        raise ParseError(
            "invalid_file", f"'{filename}' is a damaged Excel workbook ({type(exc).__name__}: {exc})."
        ) from None
    return "\n\n".join(sheets)


# ---- entry point ---------------------------------------------------------------------------------------


def parse_document(data: bytes, filename: str) -> ParsedDocument:
    """The text of a file, or :class:`ParseError`. CPU-bound: call it in a thread from async code."""
    if not data:
        raise ParseError("invalid_file", f"'{filename}' is empty; upload a file with content.")
    kind = detect_format(data, filename)
    if kind == "pdf":
        text = _pdf_text(data, filename)
    elif kind == "docx":
        text = _docx_text(data, filename)
    elif kind == "pptx":
        text = _pptx_text(data, filename)
    elif kind == "xlsx":
        text = _xlsx_text(data, filename)
    else:
        decoded = decode_text(data, filename)
        if kind == "html":
            text = html_to_text(decoded)
        elif kind == "json":
            text = _json_text(decoded, filename)
        elif kind in ("csv", "tsv"):
            text = _csv_text(decoded, filename, "\t" if kind == "tsv" else None)
        else:
            text = decoded
    text = text.replace("\x00", "").replace("\r\n", "\n").replace("\r", "\n")
    if not text.strip():
        hint = " (a scanned PDF holds only images; run OCR first)" if kind == "pdf" else ""
        raise ParseError("invalid_file", f"'{filename}' contains no extractable text{hint}.")
    return ParsedDocument(text=text, format=kind)
