"""Fine-tuning files are checked line by line: every bad line is reported with its number and reason."""

from __future__ import annotations

import json
from typing import Any

from underlay.api.fine_tuning_data import MAX_REPORTED_ERRORS, check_file


def _jsonl(items: list[Any]) -> bytes:
    return b"\n".join(item if isinstance(item, bytes) else json.dumps(item).encode() for item in items) + b"\n"


def _chat(answer: str = "Paris.") -> dict[str, Any]:
    return {
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Capital of France?"},
            {"role": "assistant", "content": answer},
        ]
    }


def _tool_example() -> dict[str, Any]:
    call = {"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": '{"city": "Oslo"}'}}
    return {
        "messages": [
            {"role": "user", "content": "Weather in Oslo?"},
            {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": "call_1", "content": "5 C"},
            {"role": "assistant", "content": "It is 5 C."},
        ],
        "tools": [{"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}}}],
    }


def test_good_lines_are_kept_in_order_and_blank_lines_skipped() -> None:
    parsed = check_file(_jsonl([_chat("A"), b"", _tool_example(), _chat("B")]), "supervised")
    assert parsed.bad_lines == 0 and parsed.errors == []
    assert [e["messages"][-1]["content"] for e in parsed.examples] == ["A", "It is 5 C.", "B"]


def test_every_bad_line_is_listed_with_its_number() -> None:
    no_answer = {"messages": [{"role": "user", "content": "hi"}]}
    bad_role = {"messages": [{"role": "bot", "content": "hi"}, {"role": "assistant", "content": "x"}]}
    orphan_tool = {
        "messages": [
            {"role": "user", "content": "hi"},
            {"role": "tool", "tool_call_id": "nope", "content": "x"},
            {"role": "assistant", "content": "x"},
        ]
    }
    bad_args = _tool_example()
    bad_args["messages"][1]["tool_calls"][0]["function"]["arguments"] = "{not json"
    weight = _chat()
    weight["messages"][2]["weight"] = 2
    raw = _jsonl([_chat(), b"{oops", no_answer, bad_role, orphan_tool, bad_args, weight, [1, 2], _chat()])
    parsed = check_file(raw, "supervised")
    assert [e.line for e in parsed.errors] == [2, 3, 4, 5, 6, 7, 8]
    messages = [e.message for e in parsed.errors]
    assert "not valid JSON" in messages[0]
    assert "assistant message to learn from" in messages[1]
    assert "'bot'" in messages[2]
    assert "tool_call_id" in messages[3]
    assert "arguments is not valid JSON" in messages[4]
    assert "weight must be 0 or 1" in messages[5]
    assert "JSON object" in messages[6]
    assert len(parsed.examples) == 2


def test_reported_errors_are_capped_but_all_counted() -> None:
    parsed = check_file(b"x\n" * (MAX_REPORTED_ERRORS + 25), "supervised")
    assert len(parsed.errors) == MAX_REPORTED_ERRORS
    assert parsed.bad_lines == MAX_REPORTED_ERRORS + 25


def test_an_empty_file_is_an_error() -> None:
    parsed = check_file(b"\n\n", "supervised")
    assert parsed.examples == [] and parsed.bad_lines == 1 and "no examples" in parsed.errors[0].message


def test_preference_pairs() -> None:
    good = {
        "input": {"messages": [{"role": "user", "content": "Say hi"}]},
        "preferred_output": [{"role": "assistant", "content": "Hi!"}],
        "non_preferred_output": [{"role": "assistant", "content": "No."}],
    }
    same = {**good, "non_preferred_output": good["preferred_output"]}
    two = {**good, "preferred_output": good["preferred_output"] * 2}
    user_output = {**good, "preferred_output": [{"role": "user", "content": "Hi!"}]}
    parsed = check_file(_jsonl([good, same, two, user_output, _chat()]), "dpo")
    assert len(parsed.examples) == 1
    assert [e.line for e in parsed.errors] == [2, 3, 4, 5]
    assert "the same" in parsed.errors[0].message
    assert "one assistant message" in parsed.errors[1].message
    assert "missing 'input'" in parsed.errors[3].message
