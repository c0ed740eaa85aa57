"""Moved to :mod:`underlay.shared.parse`: the Responses provider parses attached files too, and a provider
may not import the control plane. These names are re-exported so old imports keep working."""

from underlay.shared.parse import (
    TEXT_EXTENSIONS,
    ParsedDocument,
    ParseError,
    decode_text,
    detect_format,
    html_to_text,
    parse_document,
)

__all__ = [
    "ParseError",
    "ParsedDocument",
    "TEXT_EXTENSIONS",
    "decode_text",
    "detect_format",
    "html_to_text",
    "parse_document",
]
