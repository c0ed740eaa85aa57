"""The pure steps of synthetic data generation and the dataset file parser: dedup, passages, parsing.

The model-backed steps run on the embedded model in ``tests/integration/test_synthetic_data.py``; here
are the parts whose answers can be stated exactly.
"""

from __future__ import annotations

import pytest

from underlay.api.datasets import check_row
from underlay.api.errors import InvalidRequestError
from underlay.core import synthesis
from underlay.providers.utils.dataset_files import parse_rows

DOC = synthesis.Source("documents[0]", "text")


def _pair(question: str) -> synthesis.Pair:
    return synthesis.Pair(question, "answer", DOC)


def test_normalised_folds_case_accents_punctuation_and_spacing() -> None:
    assert synthesis.normalised("  Où est   le Café?! ") == "ou est le cafe"
    assert synthesis.normalised("What's 2+2?") == synthesis.normalised("what s 2 2")


def test_dedup_keeps_the_first_of_each_question_in_order() -> None:
    pairs = [_pair("When was it built?"), _pair("Who kept it?"), _pair("when was it BUILT"), _pair("?!")]
    assert [p.question for p in synthesis.dedup(pairs)] == ["When was it built?", "Who kept it?"]


def test_passages_join_chunks_up_to_the_size_and_stop_at_the_limit() -> None:
    chunks = ["a" * 600, "b" * 600, "c" * 600, "d" * 600, "e" * 600]
    found = synthesis.passages("file-1", chunks, limit=2)
    assert [len(p.text) for p in found] == [1201, 1201] and all(p.ref == "file-1" for p in found)
    assert synthesis.passages("file-1", chunks, limit=10)[-1].text == "e" * 600
    assert synthesis.passages("file-1", [], limit=3) == []


def test_dialog_sources_render_roles() -> None:
    from underlay.api.synthetic_data_generation import DialogMessage

    (source,) = synthesis.dialog_sources(
        [[DialogMessage(role="user", content="hi"), DialogMessage(role="assistant", content="yo")]]
    )
    assert source == synthesis.Source("dialogs[0]", "user: hi\nassistant: yo")


def test_check_row_names_the_row_and_field() -> None:
    with pytest.raises(InvalidRequestError) as caught:
        check_row("eval/messages-answer", {"messages": [{"role": "user"}], "expected_answer": "x"}, 4)
    assert caught.value.param == "rows[3].messages[0].content" and caught.value.message.startswith("row 4")
    assert check_row("free-form", {"anything": [1, 2]}, 1) == {"anything": [1, 2]}


def test_parse_rows_reads_each_format_and_names_bad_lines() -> None:
    assert parse_rows(b'{"a": 1}\n\n{"a": 2}\n', "jsonl") == [{"a": 1}, {"a": 2}]
    assert parse_rows(b'[{"a": 1}]', "jsonl") == [{"a": 1}]
    csv = b'messages,expected_answer\n"[{""role"": ""user"", ""content"": ""hi""}]",hello\n'
    assert parse_rows(csv, "csv") == [{"messages": [{"role": "user", "content": "hi"}], "expected_answer": "hello"}]
    with pytest.raises(InvalidRequestError, match="line 3: not JSON"):
        parse_rows(b'{"a": 1}\n{"a": 2}\n{oops\n', "jsonl")
    with pytest.raises(InvalidRequestError, match="line 2: more cells"):
        parse_rows(b"a,b\n1,2,3\n", "csv")
