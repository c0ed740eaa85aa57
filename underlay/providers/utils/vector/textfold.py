"""Accent folding for keyword indexes that do not fold accents themselves (PostgreSQL, Milvus).

SQLite FTS5's ``remove_diacritics`` makes "Wimbledón" find "Wimbledon"; PostgreSQL's built-in text
search configurations (without the ``unaccent`` extension) and Milvus's standard analyzer do not.
Those backends index ``fold_text(content)`` and search ``fold_text(query)`` instead, and keep the
content itself untouched, so every backend agrees that case and accents do not matter.
"""

from __future__ import annotations

import unicodedata


def fold_text(text: str) -> str:
    """``text`` without combining marks (NFKD, marks dropped, NFC again); NUL becomes a space.

    NUL is blanked because PostgreSQL text cannot hold it and it is never part of a word.
    """
    decomposed = unicodedata.normalize("NFKD", text.replace("\x00", " "))
    return unicodedata.normalize("NFC", "".join(ch for ch in decomposed if not unicodedata.combining(ch)))
