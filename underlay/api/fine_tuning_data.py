"""What a fine-tuning file may hold, checked line by line before a job is accepted.

A training run costs minutes to hours; a bad line found at step 900 wastes all of them. So the whole
file is read and every line checked up front, and the client gets *every* bad line back (up to
:data:`MAX_REPORTED_ERRORS`) with its 1-based line number, not just the first.

Two formats, as OpenAI defines them:

- ``supervised``: ``{"messages": [...], "tools": [...]?}`` — roles ``system``/``developer``/``user``/
  ``assistant``/``tool``; assistant messages may carry ``tool_calls`` (each answered by a ``tool``
  message with its ``tool_call_id``) and ``weight`` (0 or 1: whether the trainer learns from it); at least
  one assistant message is learned from.
- ``dpo``: ``{"input": {"messages": [...], "tools"?}, "preferred_output": [assistant message],
  "non_preferred_output": [assistant message]}``.

This is the contract (stdlib only): the router checks with it and a trainer parses with it, so both
agree on what a line means.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = [
    "DataError",
    "MAX_FILE_BYTES",
    "MAX_LINES",
    "MAX_LINE_BYTES",
    "MAX_REPORTED_ERRORS",
    "ParsedFile",
    "ROLES",
    "check_file",
    "message_text",
]

MAX_FILE_BYTES = 64 * 1024 * 1024
"""A training file's size here (a CPU trainer has no use for more)."""
MAX_LINES = 100_000
MAX_LINE_BYTES = 256 * 1024
MAX_MESSAGES = 256
MAX_TOOLS = 128
MAX_REPORTED_ERRORS = 100
"""Bad lines listed in one error (the count says how many more there were)."""
ROLES = ("system", "developer", "user", "assistant", "tool")


@dataclass(frozen=True)
class DataError:
    line: int
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}"


@dataclass
class ParsedFile:
    examples: list[dict[str, Any]] = field(default_factory=list)
    errors: list[DataError] = field(default_factory=list)
    bad_lines: int = 0
    """Every bad line, also those past :data:`MAX_REPORTED_ERRORS`."""


def message_text(content: Any) -> str:
    """A message's ``content`` as plain text (a string, ``None``, or a list of text parts)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "".join(str(part.get("text", "")) for part in content if isinstance(part, dict))


def _content_problem(content: Any, where: str, *, nullable: bool) -> str | None:
    if content is None:
        return None if nullable else f"{where}.content is missing"
    if isinstance(content, str):
        return None
    if isinstance(content, list):
        for index, part in enumerate(content):
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                return f"{where}.content[{index}] must be a text part {{'type': 'text', 'text': ...}}"
        return None
    return f"{where}.content must be a string or a list of text parts"


def _tool_call_problem(call: Any, where: str) -> str | None:
    if not isinstance(call, dict):
        return f"{where} must be an object"
    if not isinstance(call.get("id"), str) or not call["id"]:
        return f"{where}.id must be a non-empty string"
    if call.get("type", "function") != "function":
        return f"{where}.type must be 'function'"
    function = call.get("function")
    if not isinstance(function, dict) or not isinstance(function.get("name"), str) or not function["name"]:
        return f"{where}.function.name must be a non-empty string"
    arguments = function.get("arguments")
    if not isinstance(arguments, str):
        return f"{where}.function.arguments must be a JSON string"
    try:
        json.loads(arguments)
    except ValueError:
        return f"{where}.function.arguments is not valid JSON"
    return None


def _messages_problem(messages: Any, where: str, *, need_assistant: bool) -> str | None:
    """The first problem with a conversation, or ``None``."""
    if not isinstance(messages, list) or not messages:
        return f"{where} must be a non-empty list of messages"
    if len(messages) > MAX_MESSAGES:
        return f"{where} has {len(messages)} messages; at most {MAX_MESSAGES}"
    open_calls: set[str] = set()
    learned = 0
    for index, message in enumerate(messages):
        at = f"{where}[{index}]"
        if not isinstance(message, dict):
            return f"{at} must be an object"
        role = message.get("role")
        if role not in ROLES:
            return f"{at}.role {str(role)[:30]!r} is not one of {', '.join(ROLES)}"
        calls = message.get("tool_calls")
        if calls is not None and role != "assistant":
            return f"{at}: only assistant messages may have tool_calls"
        problem = _content_problem(message.get("content"), at, nullable=role == "assistant" and bool(calls))
        if problem:
            return problem
        if role == "assistant":
            if calls is not None:
                if not isinstance(calls, list) or not calls:
                    return f"{at}.tool_calls must be a non-empty list"
                for number, call in enumerate(calls):
                    problem = _tool_call_problem(call, f"{at}.tool_calls[{number}]")
                    if problem:
                        return problem
                    open_calls.add(call["id"])
            weight = message.get("weight", 1)
            if weight not in (0, 1):
                return f"{at}.weight must be 0 or 1"
            learned += weight
        if role == "tool":
            call_id = message.get("tool_call_id")
            if not isinstance(call_id, str) or call_id not in open_calls:
                return f"{at}.tool_call_id must name a tool call of an earlier assistant message"
    if need_assistant and not learned:
        return f"{where} needs at least one assistant message to learn from (weight 1)"
    return None


def _tools_problem(tools: Any, where: str) -> str | None:
    if tools is None:
        return None
    if not isinstance(tools, list) or len(tools) > MAX_TOOLS:
        return f"{where} must be a list of at most {MAX_TOOLS} tools"
    for index, tool in enumerate(tools):
        function = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(tool, dict) or tool.get("type") != "function" or not isinstance(function, dict):
            return f"{where}[{index}] must be {{'type': 'function', 'function': {{'name', 'parameters'}}}}"
        if not isinstance(function.get("name"), str) or not function["name"]:
            return f"{where}[{index}].function.name must be a non-empty string"
    return None


def _supervised_problem(item: dict[str, Any]) -> str | None:
    if "messages" not in item:
        return "missing 'messages' (a supervised example is {'messages': [...]})"
    return _tools_problem(item.get("tools"), "tools") or _messages_problem(
        item["messages"], "messages", need_assistant=True
    )


def _dpo_problem(item: dict[str, Any]) -> str | None:
    source = item.get("input")
    if not isinstance(source, dict):
        return "missing 'input' (a preference example is {'input': {'messages'}, 'preferred_output', ...})"
    problem = _tools_problem(source.get("tools"), "input.tools") or _messages_problem(
        source.get("messages"), "input.messages", need_assistant=False
    )
    if problem:
        return problem
    for key in ("preferred_output", "non_preferred_output"):
        output = item.get(key)
        if not isinstance(output, list) or len(output) != 1:
            return f"{key} must be a list holding one assistant message"
        problem = _messages_problem(output, key, need_assistant=True)
        if problem:
            return problem
        if output[0].get("role") != "assistant":
            return f"{key}[0].role must be 'assistant'"
    if item["preferred_output"] == item["non_preferred_output"]:
        return "preferred_output and non_preferred_output are the same; a preference needs two different answers"
    return None


def check_file(raw: bytes, method: Literal["supervised", "dpo"]) -> ParsedFile:
    """Parse and check every line of a JSONL file; bad lines are listed, good ones kept as examples."""
    result = ParsedFile()
    check = _supervised_problem if method == "supervised" else _dpo_problem

    def bad(line: int, message: str) -> None:
        result.bad_lines += 1
        if len(result.errors) < MAX_REPORTED_ERRORS:
            result.errors.append(DataError(line, message))

    if len(raw) > MAX_FILE_BYTES:
        bad(0, f"the file is over {MAX_FILE_BYTES} bytes")
        return result
    number = 0
    for number, text in enumerate(raw.split(b"\n"), start=1):
        if not text.strip():
            continue
        if number > MAX_LINES:
            bad(number, f"a file holds at most {MAX_LINES} lines")
            break
        if len(text) > MAX_LINE_BYTES:
            bad(number, f"the line is over {MAX_LINE_BYTES} bytes")
            continue
        try:
            item = json.loads(text)
        except (ValueError, UnicodeDecodeError):
            bad(number, "not valid JSON (each line must be one JSON object)")
            continue
        if not isinstance(item, dict):
            bad(number, "must be a JSON object")
            continue
        problem = check(item)
        if problem:
            bad(number, problem)
            continue
        result.examples.append(item)
    if not result.examples and not result.errors:
        bad(max(number, 1), "the file has no examples")
    return result
