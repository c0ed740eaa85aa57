"""Items: the unit of context shared by the Responses and Conversations APIs, in OpenAI's shapes.

A response's input, its output and a conversation's history are all lists of items (messages, tool
calls, tool results, MCP listings and approvals). Both APIs accept the same input forms and store the
same normalized form, so a response's output can be fed back as input, appended to a conversation,
or listed from either API without translation. Models accept unknown fields so a newer client's
extra keys pass through instead of failing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag

from underlay.api.base import ApiModel
from underlay.api.ids import new_id

__all__ = [
    "COMPACTION_MAX_CHARS",
    "CompactionItem",
    "ContentPart",
    "FileSearchCallItem",
    "FileSearchResult",
    "FunctionCallItem",
    "FunctionCallOutputItem",
    "Includable",
    "InputFile",
    "InputImage",
    "InputItem",
    "InputText",
    "ItemReference",
    "ItemStatus",
    "McpApprovalRequestItem",
    "McpApprovalResponseItem",
    "McpCallItem",
    "McpListToolsItem",
    "McpToolInfo",
    "MessageItem",
    "OutputText",
    "ReasoningItem",
    "Refusal",
    "WebSearchCallItem",
    "check_metadata",
    "item_id",
    "normalize_item",
    "shape_for_client",
]


class _Open(ApiModel):
    model_config = ConfigDict(extra="allow")


COMPACTION_MAX_CHARS = 1_000_000
"""A compaction item's payload, bounded: the server decodes whatever a client sends back."""


# ---------------------------------------------------------------------------------------------------
# Content parts
# ---------------------------------------------------------------------------------------------------


class InputText(_Open):
    type: Literal["input_text"] = "input_text"
    text: str


class InputImage(_Open):
    type: Literal["input_image"] = "input_image"
    image_url: str | None = None
    file_id: str | None = None
    detail: Literal["auto", "low", "high", "original"] | None = "auto"


class InputFile(_Open):
    type: Literal["input_file"] = "input_file"
    file_id: str | None = None
    file_data: str | None = None
    file_url: str | None = None
    filename: str | None = None


class OutputText(_Open):
    type: Literal["output_text"] = "output_text"
    text: str
    annotations: list[dict[str, Any]] = Field(default_factory=list)
    logprobs: list[dict[str, Any]] | None = None


class Refusal(_Open):
    type: Literal["refusal"] = "refusal"
    refusal: str


ContentPart = Annotated[InputText | InputImage | InputFile | OutputText | Refusal, Field(discriminator="type")]

# ---------------------------------------------------------------------------------------------------
# Items
# ---------------------------------------------------------------------------------------------------

ItemStatus = Literal["in_progress", "completed", "incomplete"]


class MessageItem(_Open):
    """A message; input messages may omit ``type``, ``id`` and ``status`` and give ``content`` as a string."""

    type: Literal["message"] = "message"
    role: Literal["user", "assistant", "system", "developer"]
    content: str | list[ContentPart]
    id: str | None = None
    status: ItemStatus | None = None


class FunctionCallItem(_Open):
    type: Literal["function_call"] = "function_call"
    call_id: str
    name: str
    arguments: str
    id: str | None = None
    status: ItemStatus | None = None


class FunctionCallOutputItem(_Open):
    type: Literal["function_call_output"] = "function_call_output"
    call_id: str
    output: str | list[dict[str, Any]]
    id: str | None = None
    status: ItemStatus | None = None


class FileSearchResult(_Open):
    file_id: str | None = None
    filename: str | None = None
    score: float | None = None
    text: str | None = None
    attributes: dict[str, Any] | None = None


class FileSearchCallItem(_Open):
    type: Literal["file_search_call"] = "file_search_call"
    id: str
    queries: list[str] = Field(default_factory=list)
    status: Literal["in_progress", "searching", "completed", "incomplete", "failed"] = "completed"
    results: list[FileSearchResult] | None = None


class WebSearchCallItem(_Open):
    type: Literal["web_search_call"] = "web_search_call"
    id: str
    status: Literal["in_progress", "searching", "completed", "failed", "incomplete"] = "completed"
    action: dict[str, Any] | None = None


class McpToolInfo(_Open):
    name: str
    input_schema: dict[str, Any] = Field(default_factory=dict)
    description: str | None = None
    annotations: dict[str, Any] | None = None


class McpListToolsItem(_Open):
    type: Literal["mcp_list_tools"] = "mcp_list_tools"
    id: str
    server_label: str
    tools: list[McpToolInfo] = Field(default_factory=list)
    error: str | None = None


class McpCallItem(_Open):
    type: Literal["mcp_call"] = "mcp_call"
    id: str
    server_label: str
    name: str
    arguments: str
    output: str | None = None
    error: dict[str, Any] | str | None = None
    status: Literal["in_progress", "completed", "incomplete", "calling", "failed"] | None = None
    approval_request_id: str | None = None


class McpApprovalRequestItem(_Open):
    type: Literal["mcp_approval_request"] = "mcp_approval_request"
    id: str
    server_label: str
    name: str
    arguments: str


class McpApprovalResponseItem(_Open):
    type: Literal["mcp_approval_response"] = "mcp_approval_response"
    approval_request_id: str
    approve: bool
    id: str | None = None
    reason: str | None = None


class ReasoningItem(_Open):
    type: Literal["reasoning"] = "reasoning"
    id: str
    summary: list[dict[str, Any]] = Field(default_factory=list)


class ItemReference(_Open):
    type: Literal["item_reference"] = "item_reference"
    id: str


class CompactionItem(_Open):
    """What ``POST /v1/responses/compact`` returns: the condensed context, opaque to the client.

    ``encrypted_content`` keeps OpenAI's name; here it is not encrypted but encoded (see the provider's
    ``compaction`` module): it carries the model's summary, which a client could as well send as text.
    """

    type: Literal["compaction"] = "compaction"
    encrypted_content: str = Field(min_length=1, max_length=COMPACTION_MAX_CHARS)
    id: str | None = None


def _item_type(value: Any) -> str:
    """Messages may omit ``type`` (OpenAI's "easy" input message)."""
    if isinstance(value, dict):
        return str(value.get("type") or "message")
    return str(getattr(value, "type", "message"))


InputItem = Annotated[
    Annotated[MessageItem, Tag("message")]
    | Annotated[FunctionCallItem, Tag("function_call")]
    | Annotated[FunctionCallOutputItem, Tag("function_call_output")]
    | Annotated[FileSearchCallItem, Tag("file_search_call")]
    | Annotated[WebSearchCallItem, Tag("web_search_call")]
    | Annotated[McpListToolsItem, Tag("mcp_list_tools")]
    | Annotated[McpCallItem, Tag("mcp_call")]
    | Annotated[McpApprovalRequestItem, Tag("mcp_approval_request")]
    | Annotated[McpApprovalResponseItem, Tag("mcp_approval_response")]
    | Annotated[ReasoningItem, Tag("reasoning")]
    | Annotated[ItemReference, Tag("item_reference")]
    | Annotated[CompactionItem, Tag("compaction")],
    Discriminator(_item_type),
]
"""Any item a client may send as input (or append to a conversation)."""


_ID_PREFIX = {
    "message": "msg",
    "function_call": "fc",
    "function_call_output": "fco",
    "file_search_call": "fs",
    "web_search_call": "ws",
    "mcp_list_tools": "mcpl",
    "mcp_call": "mcp",
    "mcp_approval_request": "mcpr",
    "mcp_approval_response": "mcpa",
    "reasoning": "rs",
    "compaction": "cmp",
}


def item_id(kind: str) -> str:
    """A fresh id for an item of ``kind`` in OpenAI's style (``msg_…``, ``fc_…``)."""
    return new_id(_ID_PREFIX.get(kind, "item")).replace("-", "_")


def normalize_item(item: BaseModel | dict[str, Any]) -> dict[str, Any]:
    """The stored form of an item: an id, a status where the type has one, message content as parts.

    Why normalize on the way in: listing a conversation or a response's input must return the same
    shapes the SDK's types describe (``content`` is always a list of parts, every item has an id),
    whatever shorthand the client used to send it.
    """
    data = item.model_dump(mode="json", exclude_none=True) if isinstance(item, BaseModel) else dict(item)
    kind = str(data.get("type") or "message")
    data["type"] = kind
    if not data.get("id"):
        data["id"] = item_id(kind)
    if kind == "message":
        content = data.get("content")
        part = "output_text" if data.get("role") == "assistant" else "input_text"
        if isinstance(content, str):
            data["content"] = [{"type": part, "text": content}]
        for piece in data.get("content") or []:
            # The SDK's strict types (and Open Responses) require both lists on every output_text part.
            if isinstance(piece, dict) and piece.get("type") == "output_text":
                piece.setdefault("annotations", [])
                if piece.get("logprobs") is None:
                    piece["logprobs"] = []
        data.setdefault("status", "completed")
    elif kind in ("function_call", "function_call_output"):
        data.setdefault("status", "completed")
    return data


def check_metadata(value: dict[str, str] | None) -> dict[str, str] | None:
    """OpenAI's metadata limits: 16 keys, keys up to 64 characters, values up to 512."""
    if value is None:
        return None
    if len(value) > 16:
        raise ValueError("at most 16 metadata keys are allowed")
    for key, item in value.items():
        if len(key) > 64 or len(item) > 512:
            raise ValueError(f"metadata '{key[:20]}': keys are at most 64 characters, values at most 512")
    return value


Includable = Literal[
    "file_search_call.results",
    "web_search_call.results",
    "web_search_call.action.sources",
    "message.input_image.image_url",
    "computer_call_output.output.image_url",
    "code_interpreter_call.outputs",
    "reasoning.encrypted_content",
    "message.output_text.logprobs",
]


def shape_for_client(item: dict[str, Any], include: Sequence[str] | None) -> dict[str, Any]:
    """Hide stored detail the client did not ask for (``include``): search results, logprobs."""
    wanted = set(include or ())
    kind = item.get("type")
    if kind == "file_search_call" and "file_search_call.results" not in wanted:
        return {**item, "results": None}
    if kind == "web_search_call" and "web_search_call.results" not in wanted:
        return {k: v for k, v in item.items() if k != "results"}
    if kind == "message" and "message.output_text.logprobs" not in wanted:
        parts = item.get("content")
        if isinstance(parts, list) and any(isinstance(p, dict) and p.get("logprobs") for p in parts):
            # Emptied, not removed: Open Responses requires the list on every output_text part.
            return {**item, "content": [{**p, "logprobs": []} if p.get("logprobs") else p for p in parts]}
    return item
