"""Items to chat messages: how a response's whole context (history, input, output so far) reaches a model.

Everything the model sees is rebuilt from items on every turn, by this one function, whether the items
came from the request, a previous response, a conversation or this response's own earlier turns. So a
follow-up request sees a server-side tool call and its result exactly as the turn that made it did.

Server-side tool items become an assistant tool call plus a tool message: ``file_search_call`` (its
results as numbered sources), ``web_search_call`` (its results), ``mcp_call`` (output or error), and a
declined ``mcp_approval_response`` (a tool message saying so). Listings and reasoning are not shown.
"""

from __future__ import annotations

import json
from typing import Any

from underlay.api.errors import InvalidRequestError
from underlay.providers.inline.responses import compaction

DECLINED = "The user declined to run this tool call{reason}. Do not try it again; answer without it."


def check_input_items(items: list[dict[str, Any]]) -> None:
    """Refuse content the engine cannot give a model, naming the field (before any work starts)."""
    for i, item in enumerate(items):
        if item.get("type") == "compaction":
            compaction.decode(str(item.get("encrypted_content") or ""), f"input[{i}]")
        if item.get("type") != "message" or not isinstance(item.get("content"), list):
            continue
        for j, part in enumerate(item["content"]):
            kind = part.get("type")
            where = f"input[{i}].content[{j}]"
            if kind == "input_image" and not part.get("image_url"):
                raise InvalidRequestError(
                    "input_image needs an image_url (a URL or a data: URL); file_id images are not supported.",
                    param=where,
                )


def format_search_results(results: list[dict[str, Any]]) -> str:
    """Numbered sources for the model; the numbers are what it cites as ``[n]``."""
    if not results:
        return "No results were found."
    lines = [f"Found {len(results)} result(s). Cite a source as [n] right after the sentence that uses it."]
    for n, result in enumerate(results, 1):
        text = " ".join(str(result.get("text") or "").split())
        lines.append(f"[{n}] {result.get('filename') or result.get('file_id')}: {text}")
    return "\n".join(lines)


def format_web_results(results: list[dict[str, Any]]) -> str:
    if not results:
        return "No results were found."
    lines = []
    for n, result in enumerate(results, 1):
        lines.append(f"[{n}] {result.get('title') or ''} ({result.get('url') or ''}): {result.get('content') or ''}")
    return "\n".join(lines)


def _text(parts: Any) -> str:
    if isinstance(parts, str):
        return parts
    out = []
    for part in parts or []:
        if part.get("type") in ("input_text", "output_text", "text"):
            out.append(str(part.get("text", "")))
        elif part.get("type") == "refusal":
            out.append(str(part.get("refusal", "")))
    return "".join(out)


def _user_content(item: dict[str, Any], files: dict[str, str]) -> str | list[dict[str, Any]]:
    """Plain text when the message is all text, else chat content parts (text and image_url).

    An ``input_file`` part becomes the file's text (resolved up front, see :mod:`.input_files`).
    """
    parts = item.get("content")
    if isinstance(parts, str):
        return parts
    prefix = f"{item.get('id')}/"
    parts = [
        {"type": "input_text", "text": "\n" + files.get(f"{prefix}{j}", "") + "\n"}
        if p.get("type") == "input_file"
        else p
        for j, p in enumerate(parts or [])
    ]
    if all(p.get("type") != "input_image" for p in parts):
        return _text(parts)
    out: list[dict[str, Any]] = []
    for part in parts:
        if part.get("type") == "input_image":
            out.append({"type": "image_url", "image_url": {"url": part["image_url"], "detail": part.get("detail")}})
        else:
            out.append({"type": "text", "text": _text([part])})
    return out


def mcp_error_text(error: Any) -> str:
    if isinstance(error, dict):
        if "message" in error:
            return str(error["message"])
        content = error.get("content")
        if isinstance(content, list):
            return " ".join(str(c.get("text", c)) if isinstance(c, dict) else str(c) for c in content)
        return json.dumps(error)
    return str(error)


class _Builder:
    """Chat messages in the order chat templates expect: calls in one assistant message, then results."""

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []

    def call(self, call_id: str, name: str, arguments: str) -> None:
        """Attach a call to the latest assistant message (past any results already given), or start one.

        Calls of one turn share one assistant message; results stay after it, in call order.
        """
        entry = {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments or "{}"}}
        results: list[dict[str, Any]] = []
        while self.messages and self.messages[-1]["role"] == "tool":
            results.insert(0, self.messages.pop())
        last = self.messages[-1] if self.messages else None
        if last is not None and last["role"] == "assistant":
            last["tool_calls"] = [*(last.get("tool_calls") or []), entry]
        else:
            self.messages.append({"role": "assistant", "content": None, "tool_calls": [entry]})
        self.messages.extend(results)

    def result(self, call_id: str, text: str) -> None:
        self.messages.append({"role": "tool", "tool_call_id": call_id, "content": text})

    def call_and_result(self, call_id: str, name: str, arguments: str, text: str) -> None:
        self.call(call_id, name, arguments)
        self.result(call_id, text)


def items_to_messages(
    instructions: str | None, items: list[dict[str, Any]], files: dict[str, str] | None = None
) -> list[dict[str, Any]]:
    """The chat messages for ``items`` (oldest first), with ``instructions`` as the system message.

    ``files``: the text of each ``input_file`` part, by ``"<item id>/<part index>"``.
    """
    builder = _Builder()
    files = files or {}
    if instructions:
        builder.messages.append({"role": "system", "content": instructions})
    requests = {i["id"]: i for i in items if i.get("type") == "mcp_approval_request" and i.get("id")}
    for item in items:
        kind = item.get("type", "message")
        if kind == "message":
            role = item.get("role", "user")
            if role == "assistant":
                builder.messages.append({"role": "assistant", "content": _text(item.get("content"))})
            else:
                builder.messages.append({"role": role, "content": _user_content(item, files)})
        elif kind == "compaction":
            builder.messages.append(compaction.as_message(item))
        elif kind == "function_call":
            builder.call(item["call_id"], item["name"], item.get("arguments", ""))
        elif kind == "function_call_output":
            output = item.get("output")
            builder.result(item["call_id"], output if isinstance(output, str) else _text(output))
        elif kind == "file_search_call":
            query = json.dumps({"query": " ".join(item.get("queries") or [])})
            results = item.get("results")
            text = format_search_results(results) if results is not None else "The search failed."
            if item.get("status") == "failed":
                text = "The search failed: " + str(item.get("error") or "unknown error")
            builder.call_and_result(item["id"], "file_search", query, text)
        elif kind == "web_search_call":
            action = item.get("action") or {}
            query = json.dumps({"query": action.get("query") or ""})
            if item.get("status") == "failed":
                text = "The web search failed: " + str(item.get("error") or "unknown error")
            else:
                text = format_web_results(item.get("results") or [])
            builder.call_and_result(item["id"], "web_search", query, text)
        elif kind == "mcp_call":
            if item.get("error") is not None:
                text = f"Error: {mcp_error_text(item['error'])}"
            else:
                text = item.get("output") or ""
            builder.call_and_result(item["id"], item["name"], item.get("arguments", ""), text)
        elif kind == "mcp_approval_response" and not item.get("approve"):
            request = requests.get(item.get("approval_request_id", ""))
            if request is not None:
                reason = f" ({item['reason']})" if item.get("reason") else ""
                builder.call_and_result(
                    request["id"], request["name"], request.get("arguments", ""), DECLINED.format(reason=reason)
                )
    return builder.messages
