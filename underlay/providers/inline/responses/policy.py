"""What the model is offered and allowed: tool definitions, tool_choice per turn, MCP approval and
filters, and the file citations an answer gets.
"""

from __future__ import annotations

import re
from typing import Any

from underlay.api.responses import (
    FileSearchTool,
    FunctionTool,
    McpApprovalFilter,
    McpTool,
    ToolChoiceAllowed,
    ToolChoiceFunction,
    ToolChoiceHosted,
    ToolChoiceMcp,
    WebSearchTool,
)
from underlay.providers.inline.responses.server_tools import FILE_SEARCH_DEF, WEB_SEARCH_DEF
from underlay.providers.inline.responses.state import Run

_SAFE_NAME = re.compile(r"[^a-zA-Z0-9_-]")
_CITATION = re.compile(r"\[(\d{1,2})\]")


def safe_name(name: str, taken: set[str]) -> str:
    base = _SAFE_NAME.sub("_", name)[:64] or "tool"
    candidate, n = base, 2
    while candidate in taken:
        suffix = f"_{n}"
        candidate, n = base[: 64 - len(suffix)] + suffix, n + 1
    return candidate


def needs_approval(tool: McpTool, name: str, annotations: dict[str, Any] | None) -> bool:
    """OpenAI's rule: approval is required unless ``never``, or the per-tool filter exempts the tool."""
    policy = tool.require_approval
    if policy is None or policy == "always":
        return True
    if policy == "never":
        return False
    assert isinstance(policy, McpApprovalFilter)
    read_only = bool((annotations or {}).get("readOnlyHint"))

    def matches(flt: Any) -> bool:
        if flt is None:
            return False
        if flt.tool_names is not None and name in flt.tool_names:
            return True
        return bool(flt.read_only) and read_only

    if matches(policy.never):
        return False
    if matches(policy.always):
        return True
    return not (policy.always is not None and policy.never is None)


def allowed(tool: McpTool, name: str, annotations: dict[str, Any] | None) -> bool:
    allowed = tool.allowed_tools
    if allowed is None:
        return True
    if isinstance(allowed, list):
        return name in allowed
    if allowed.tool_names is not None and name not in allowed.tool_names:
        return False
    return not (allowed.read_only and not (annotations or {}).get("readOnlyHint"))


def citations(text: str, results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``file_citation`` annotations: at each ``[n]`` the model wrote, else one per file at the end."""
    out: list[dict[str, Any]] = []
    for match in _CITATION.finditer(text):
        n = int(match.group(1))
        if 1 <= n <= len(results):
            r = results[n - 1]
            out.append(
                {"type": "file_citation", "file_id": r["file_id"], "filename": r["filename"], "index": match.start()}
            )
    if out or not text:
        return out
    seen: set[str] = set()
    for r in results:
        if r.get("file_id") and r["file_id"] not in seen:
            seen.add(r["file_id"])
            out.append(
                {"type": "file_citation", "file_id": r["file_id"], "filename": r["filename"], "index": len(text)}
            )
    return out


def chat_tools(run: Run) -> list[dict[str, Any]]:
    defs: list[dict[str, Any]] = []
    for tool in run.request.tools or []:
        if isinstance(tool, FunctionTool):
            d: dict[str, Any] = {
                "name": tool.name,
                "parameters": tool.parameters or {"type": "object", "properties": {}},
            }
            if tool.description:
                d["description"] = tool.description
            if tool.strict is not None:
                d["strict"] = tool.strict
            defs.append(d)
        elif isinstance(tool, FileSearchTool):
            defs.append(FILE_SEARCH_DEF)
        elif isinstance(tool, WebSearchTool):
            defs.append(WEB_SEARCH_DEF)
    defs += [b.definition for b in run.mcp.values()]
    choice = run.request.tool_choice
    if isinstance(choice, ToolChoiceAllowed):
        names = {_choice_name(run, t) for t in choice.tools}
        defs = [d for d in defs if d["name"] in names]
    if isinstance(choice, ToolChoiceMcp):
        keep = {b.function_name for b in run.mcp.values() if b.server.label == choice.server_label}
        defs = [d for d in defs if d["name"] in keep or d["name"] not in run.mcp]
    unique = {d["name"]: d for d in defs}
    return [{"type": "function", "function": d} for d in unique.values()]


def _choice_name(run: Run, entry: dict[str, Any]) -> str:
    kind = entry.get("type")
    if kind == "function":
        return str(entry.get("name"))
    if kind == "mcp":
        for b in run.mcp.values():
            if b.server.label == entry.get("server_label") and (entry.get("name") in (None, b.tool_name)):
                return b.function_name
    return "file_search" if kind == "file_search" else "web_search"


def tool_choice(run: Run, turn: int, tools: list[dict[str, Any]]) -> Any:
    """The request's choice on the first turn; after tools ran, the model may answer (``auto``)."""
    choice = run.request.tool_choice
    if not tools:
        return None
    if choice is None or choice == "auto":
        return "auto"
    if choice == "none":
        return "none"
    if turn > 0:
        return "auto"
    if choice == "required":
        return "required"
    if isinstance(choice, ToolChoiceFunction):
        return {"type": "function", "function": {"name": choice.name}}
    if isinstance(choice, ToolChoiceHosted):
        name = "file_search" if choice.type == "file_search" else "web_search"
        return {"type": "function", "function": {"name": name}}
    if isinstance(choice, ToolChoiceMcp):
        for b in run.mcp.values():
            if b.server.label == choice.server_label and choice.name in (None, b.tool_name):
                if choice.name is not None:
                    return {"type": "function", "function": {"name": b.function_name}}
        return "required"
    if isinstance(choice, ToolChoiceAllowed):
        return choice.mode
    return "auto"


# ---- the loop -------------------------------------------------------------------------------------
