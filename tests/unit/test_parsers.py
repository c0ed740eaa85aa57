"""Parsing uploaded files into text: every supported format, and a usable error for everything else."""

from __future__ import annotations

import io
import zipfile

import pytest

from tests.documents import encrypt_pdf, make_docx, make_pdf, make_pptx, make_xlsx
from underlay.shared.parse import ParseError, detect_format, parse_document


def _fails(data: bytes, name: str) -> ParseError:
    with pytest.raises(ParseError) as info:
        parse_document(data, name)
    return info.value


def test_plain_text_and_markdown() -> None:
    assert parse_document(b"hello\r\nworld", "a.txt").text == "hello\nworld"
    doc = parse_document(b"# Title\n\nSome *markdown* text", "readme.md")
    assert doc.format == "markdown" and "Some *markdown* text" in doc.text


def test_text_encodings() -> None:
    assert parse_document("caf\u00e9".encode("utf-8-sig"), "a.txt").text == "caf\u00e9"
    assert parse_document("na\u00efve".encode("utf-16"), "a.txt").text == "na\u00efve"
    assert parse_document("r\u00e9sum\u00e9".encode("cp1252"), "a.txt").text == "r\u00e9sum\u00e9"


def test_html_drops_tags_scripts_and_styles() -> None:
    page = (
        b"<!doctype html><html><head><title>Docs</title><style>p{color:red}</style>"
        b"<script>alert('x')</script></head><body><h1>Install</h1><p>Run &amp; enjoy</p>"
        b"<noscript>enable js</noscript><table><tr><td>a</td><td>b</td></tr></table></body></html>"
    )
    doc = parse_document(page, "page.html")
    assert doc.format == "html"
    assert "Install" in doc.text and "Run & enjoy" in doc.text and "Docs" in doc.text
    for hidden in ("alert", "color:red", "enable js", "<"):
        assert hidden not in doc.text
    assert detect_format(page, "page") == "html"  # sniffed without an extension


def test_json_and_invalid_json() -> None:
    doc = parse_document(b'{"name": "ada", "langs": ["en"]}', "data.json")
    assert doc.format == "json" and '"name": "ada"' in doc.text
    error = _fails(b'{"name": ', "data.json")
    assert error.code == "invalid_file" and "not valid JSON" in error.message and "line 1" in error.message


def test_csv_rows_keep_their_column_names() -> None:
    doc = parse_document(b"city,country\nParis,France\nLima,Peru\n", "cities.csv")
    assert doc.text.splitlines() == ["city: Paris; country: France", "city: Lima; country: Peru"]
    tsv = parse_document(b"a\tb\n1\t2\n", "x.tsv")
    assert tsv.text == "a: 1; b: 2"


def test_pdf_text_from_every_page() -> None:
    doc = parse_document(make_pdf([["Quarterly report", "Revenue (net) grew"], ["Page two closes"]]), "r.pdf")
    assert doc.format == "pdf"
    assert "Quarterly report" in doc.text and "Revenue (net) grew" in doc.text and "Page two closes" in doc.text


def test_pdf_detected_by_content_despite_its_name() -> None:
    doc = parse_document(make_pdf([["renamed file"]]), "upload.bin")
    assert doc.format == "pdf" and "renamed file" in doc.text


def test_encrypted_pdf_fails_with_a_hint() -> None:
    error = _fails(encrypt_pdf(make_pdf([["secret text"]])), "locked.pdf")
    assert error.code == "invalid_file" and "password" in error.message


def test_corrupt_and_empty_pdfs() -> None:
    assert _fails(b"%PDF-1.4\n1 0 obj garbage", "broken.pdf").code == "invalid_file"
    error = _fails(make_pdf([[]]), "scan.pdf")
    assert error.code == "invalid_file" and "no extractable text" in error.message


def test_docx_paragraphs_and_tables_in_order() -> None:
    data = make_docx(["Introduction paragraph", "Closing words"], table=[["name", "role"], ["Ada", "engineer"]])
    doc = parse_document(data, "memo.docx")
    assert doc.format == "docx"
    assert "Introduction paragraph" in doc.text and "name: Ada; role: engineer" in doc.text


def test_pptx_slides_and_notes() -> None:
    doc = parse_document(make_pptx([("Roadmap", "Ship vector stores"), ("Risks", "None")], notes="say hi"), "deck.pptx")
    assert doc.format == "pptx"
    assert "Slide 1" in doc.text and "Ship vector stores" in doc.text and "Slide 2" in doc.text
    assert "Notes: say hi" in doc.text


def test_xlsx_sheets_with_headers() -> None:
    data = make_xlsx({"Prices": [["item", "price"], ["apple", 1.5], ["pear", 2]], "Empty": []})
    doc = parse_document(data, "book.xlsx")
    assert doc.format == "xlsx"
    assert "Sheet: Prices" in doc.text and "item: apple; price: 1.5" in doc.text and "Empty" not in doc.text


def test_damaged_office_files() -> None:
    data = bytearray(make_docx(["text"]))
    data[len(data) // 2 : len(data) // 2 + 200] = b"\x00" * 200
    assert _fails(bytes(data), "memo.docx").code == "invalid_file"
    assert _fails(b"not a zip at all", "memo.docx").code == "invalid_file"


def test_unsupported_types() -> None:
    png = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64
    error = _fails(png, "photo.png")
    assert error.code == "unsupported_file" and "PNG image" in error.message
    assert _fails(bytes(range(256)) * 8, "blob.dat").code == "unsupported_file"
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("a.txt", "hello")
    assert _fails(buffer.getvalue(), "bundle.zip").code == "unsupported_file"


def test_empty_files() -> None:
    assert _fails(b"", "empty.txt").code == "invalid_file"
    assert _fails(b" \n\t ", "blank.txt").code == "invalid_file"
    assert _fails(b"<html><script>x()</script></html>", "only-script.html").code == "invalid_file"


def test_unknown_extension_with_text_is_read() -> None:
    assert parse_document(b"just some notes", "notes.weird").text == "just some notes"
