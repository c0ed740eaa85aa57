"""Token chunking with the packaged MiniLM tokenizer: sizes, overlap, exact text and OpenAI's bounds."""

from __future__ import annotations

import pytest

from underlay.api.vector_stores import CreateVectorStoreFileRequest, StaticChunking, resolve_chunking
from underlay.core.ingestion.chunking import _HFTokenizer, chunk_text, count_tokens, get_tokenizer


def _text(n: int) -> str:
    return " ".join(f"Sentence {i} talks about topic{i % 7} in plain words." for i in range(n))


def test_uses_the_real_wordpiece_tokenizer() -> None:
    assert isinstance(get_tokenizer(), _HFTokenizer)
    # WordPiece splits rare words into pieces: more tokens than words.
    assert count_tokens("unbelievably") > 1
    assert count_tokens("the cat") == 2


def test_chunks_respect_the_size_and_overlap() -> None:
    text = _text(400)
    chunks = chunk_text(text, max_tokens=100, overlap_tokens=20)
    assert len(chunks) > 10
    assert all(c.token_count <= 100 for c in chunks)
    assert all(c.token_count >= 80 for c in chunks[:-1])  # only snapping to word edges shortens a chunk
    for prev, nxt in zip(chunks, chunks[1:], strict=False):
        assert nxt.start_char < prev.end_char  # overlapping windows
        overlap = count_tokens(text[nxt.start_char : prev.end_char])
        assert 15 <= overlap <= 40
    assert chunks[0].start_char == 0 and chunks[-1].end_char == len(text)


def test_no_overlap_tiles_the_text() -> None:
    text = _text(200)
    chunks = chunk_text(text, max_tokens=120, overlap_tokens=0)
    for prev, nxt in zip(chunks, chunks[1:], strict=False):
        assert prev.end_char <= nxt.start_char
        assert text[prev.end_char : nxt.start_char].strip() == ""
    assert sum(c.token_count for c in chunks) == count_tokens(text)


def test_chunk_text_is_cut_from_the_original() -> None:
    text = "Mixed CASE, punctuation!  And   spaces stay EXACT. " * 40
    for chunk in chunk_text(text, max_tokens=100, overlap_tokens=10):
        assert chunk.text == text[chunk.start_char : chunk.end_char]
        assert chunk.text == chunk.text.strip()
    assert "CASE" in chunk_text(text, 100, 10)[0].text


def test_chunks_do_not_split_words() -> None:
    text = " ".join(["antidisestablishmentarianism"] * 300)
    for chunk in chunk_text(text, max_tokens=100, overlap_tokens=30):
        assert set(chunk.text.split()) == {"antidisestablishmentarianism"}


def test_short_and_empty_text() -> None:
    assert chunk_text("", 100, 50) == []
    assert chunk_text("   \n ", 100, 50) == []
    (only,) = chunk_text("A short note.", 800, 400)
    assert only.text == "A short note." and only.index == 0


def test_defaults_are_openai_auto() -> None:
    text = _text(600)
    chunks = chunk_text(text)
    assert max(c.token_count for c in chunks) <= 800
    assert max(c.token_count for c in chunks) > 700
    auto = resolve_chunking(None)
    assert auto.static.max_chunk_size_tokens == 800 and auto.static.chunk_overlap_tokens == 400


@pytest.mark.parametrize(
    ("size", "overlap"),
    [(99, 0), (4097, 0), (200, 101), (100, -1)],
)
def test_static_bounds_are_validated(size: int, overlap: int) -> None:
    with pytest.raises(ValueError):
        StaticChunking(max_chunk_size_tokens=size, chunk_overlap_tokens=overlap)


def test_static_strategy_in_a_request() -> None:
    request = CreateVectorStoreFileRequest.model_validate(
        {
            "file_id": "f",
            "chunking_strategy": {
                "type": "static",
                "static": {"max_chunk_size_tokens": 200, "chunk_overlap_tokens": 100},
            },
        }
    )
    assert resolve_chunking(request.chunking_strategy).static.max_chunk_size_tokens == 200
