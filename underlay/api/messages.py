"""The Messages API: Anthropic's ``/v1/messages`` and ``/v1/messages/count_tokens``, as its SDK speaks them.

Why a second chat API: agents and tools written against the ``anthropic`` SDK should run on any model
Underlay serves without a rewrite. The router translates these requests to the internal chat
completion interface (so every model works, the embedded one with grammar-constrained tool calls
included), and hands them unchanged to a provider that speaks Messages natively
(:class:`MessagesProvider`).

The wire differs from OpenAI's in three places, declared once in :data:`DIALECT`: errors are
``{"type": "error", "error": {"type", "message"}}`` with Anthropic's statuses, streams are named SSE
events ending without ``[DONE]``, and the key may come in ``x-api-key``. The ``anthropic-version``
header, when sent, must be a version this module knows.

Request models accept unknown fields (``extra="allow"``) so that a native provider receives new
Anthropic parameters untouched; every field we understand is typed and bounded.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Annotated, Any, Literal, Protocol

from pydantic import ConfigDict, Field

from underlay.api.base import ApiModel
from underlay.api.routes import Route, WireDialect

__all__ = [
    "ANTHROPIC_VERSIONS",
    "ContentBlock",
    "ContentBlockDeltaEvent",
    "ContentBlockParam",
    "ContentBlockStartEvent",
    "ContentBlockStopEvent",
    "CountTokensRequest",
    "DIALECT",
    "DocumentBlockParam",
    "ErrorDetail",
    "ErrorEvent",
    "ImageBlockParam",
    "ImageSource",
    "InputJSONDelta",
    "MAX_BLOCKS",
    "MAX_MESSAGES",
    "MAX_TOOLS",
    "Message",
    "MessageDelta",
    "MessageDeltaEvent",
    "MessageDeltaUsage",
    "MessageParam",
    "MessageStartEvent",
    "MessageStopEvent",
    "MessageStreamEvent",
    "MessagesApi",
    "MessagesProvider",
    "MessagesRequest",
    "Metadata",
    "PingEvent",
    "ROUTES",
    "RedactedThinkingBlock",
    "StopReason",
    "TextBlock",
    "TextBlockParam",
    "TextDelta",
    "ThinkingBlock",
    "TokenCount",
    "Tool",
    "ToolChoice",
    "ToolResultBlockParam",
    "ToolUseBlock",
    "ToolUseBlockParam",
    "Usage",
    "anthropic_error_body",
    "check_anthropic_headers",
]

ANTHROPIC_VERSIONS = ("2023-06-01", "2023-01-01")
"""``anthropic-version`` values this server speaks; the ``anthropic`` SDK sends ``2023-06-01``."""

MAX_MESSAGES = 2000
MAX_BLOCKS = 500
MAX_TOOLS = 128
_MAX_TEXT = 2_000_000
_MAX_ID = 256

_Text = Annotated[str, Field(max_length=_MAX_TEXT)]


class _Open(ApiModel):
    model_config = ConfigDict(extra="allow")


# ---------------------------------------------------------------------------------------------------
# Request content
# ---------------------------------------------------------------------------------------------------


class TextBlockParam(_Open):
    type: Literal["text"] = "text"
    text: str = Field(max_length=_MAX_TEXT)


class ImageSource(_Open):
    """``base64`` (``media_type`` + ``data``) or ``url``."""

    type: Literal["base64", "url"]
    media_type: str | None = Field(default=None, max_length=100)
    data: str | None = Field(default=None, max_length=20_000_000)
    url: str | None = Field(default=None, max_length=8192)


class ImageBlockParam(_Open):
    type: Literal["image"] = "image"
    source: ImageSource


class DocumentBlockParam(_Open):
    """A PDF or text document; only providers that speak Messages natively read it."""

    type: Literal["document"] = "document"
    source: dict[str, Any]


class ToolUseBlockParam(_Open):
    type: Literal["tool_use"] = "tool_use"
    id: str = Field(min_length=1, max_length=_MAX_ID)
    name: str = Field(min_length=1, max_length=128)
    input: dict[str, Any]


class ToolResultBlockParam(_Open):
    type: Literal["tool_result"] = "tool_result"
    tool_use_id: str = Field(min_length=1, max_length=_MAX_ID)
    content: _Text | Annotated[list[TextBlockParam | ImageBlockParam], Field(max_length=MAX_BLOCKS)] | None = None
    is_error: bool | None = None


class ThinkingBlock(_Open):
    type: Literal["thinking"] = "thinking"
    thinking: str = Field(max_length=_MAX_TEXT)
    signature: str = Field(default="", max_length=_MAX_TEXT)


class RedactedThinkingBlock(_Open):
    type: Literal["redacted_thinking"] = "redacted_thinking"
    data: str = Field(max_length=_MAX_TEXT)


ContentBlockParam = Annotated[
    TextBlockParam
    | ImageBlockParam
    | DocumentBlockParam
    | ToolUseBlockParam
    | ToolResultBlockParam
    | ThinkingBlock
    | RedactedThinkingBlock,
    Field(discriminator="type"),
]


class MessageParam(_Open):
    role: Literal["user", "assistant"]
    content: _Text | Annotated[list[ContentBlockParam], Field(max_length=MAX_BLOCKS)]


class Tool(_Open):
    """A client tool: the model may call it with ``input`` matching ``input_schema``.

    Anthropic's server tools (``web_search_...``) carry a ``type``; only native providers run them.
    """

    name: str = Field(pattern=r"^[a-zA-Z0-9_-]{1,128}$")
    description: str | None = Field(default=None, max_length=100_000)
    input_schema: dict[str, Any] | None = None
    type: str | None = Field(default=None, max_length=100)


class ToolChoice(_Open):
    type: Literal["auto", "any", "tool", "none"]
    name: str | None = Field(default=None, max_length=128)
    disable_parallel_tool_use: bool | None = None


class Metadata(_Open):
    user_id: str | None = Field(default=None, max_length=256)


class CountTokensRequest(_Open):
    """``POST /v1/messages/count_tokens``: what the model would read, without generating."""

    model: str = Field(min_length=1, max_length=256)
    messages: list[MessageParam] = Field(min_length=1, max_length=MAX_MESSAGES)
    system: _Text | Annotated[list[TextBlockParam], Field(max_length=MAX_BLOCKS)] | None = None
    tools: list[Tool] | None = Field(default=None, max_length=MAX_TOOLS)
    tool_choice: ToolChoice | None = None
    thinking: dict[str, Any] | None = None


class MessagesRequest(CountTokensRequest):
    """``POST /v1/messages``."""

    max_tokens: int = Field(ge=1, le=1_000_000)
    stop_sequences: list[Annotated[str, Field(max_length=256)]] | None = Field(default=None, max_length=16)
    stream: bool | None = None
    temperature: float | None = Field(default=None, ge=0, le=1)
    top_p: float | None = Field(default=None, ge=0, le=1)
    top_k: int | None = Field(default=None, ge=0, le=100_000)
    metadata: Metadata | None = None


# ---------------------------------------------------------------------------------------------------
# Response
# ---------------------------------------------------------------------------------------------------

StopReason = Literal["end_turn", "max_tokens", "stop_sequence", "tool_use", "pause_turn", "refusal"]


class TextBlock(_Open):
    type: Literal["text"] = "text"
    text: str


class ToolUseBlock(_Open):
    type: Literal["tool_use"] = "tool_use"
    id: str
    name: str
    input: dict[str, Any]


ContentBlock = Annotated[TextBlock | ToolUseBlock | ThinkingBlock | RedactedThinkingBlock, Field(discriminator="type")]


class Usage(_Open):
    input_tokens: int
    output_tokens: int
    cache_creation_input_tokens: int | None = None
    cache_read_input_tokens: int | None = None


class Message(_Open):
    """A model's answer. Blocks of types newer than this module (server tools' results) stay plain dicts."""

    id: str
    type: Literal["message"] = "message"
    role: Literal["assistant"] = "assistant"
    content: list[ContentBlock | dict[str, Any]]
    model: str
    stop_reason: StopReason | None = None
    stop_sequence: str | None = None
    usage: Usage


class TokenCount(_Open):
    input_tokens: int


# ---------------------------------------------------------------------------------------------------
# Stream events (each is one named SSE event: ``event: <type>``)
# ---------------------------------------------------------------------------------------------------


class MessageStartEvent(_Open):
    type: Literal["message_start"] = "message_start"
    message: Message


class ContentBlockStartEvent(_Open):
    type: Literal["content_block_start"] = "content_block_start"
    index: int
    content_block: ContentBlock | dict[str, Any]


class TextDelta(_Open):
    type: Literal["text_delta"] = "text_delta"
    text: str


class InputJSONDelta(_Open):
    type: Literal["input_json_delta"] = "input_json_delta"
    partial_json: str


class ContentBlockDeltaEvent(_Open):
    type: Literal["content_block_delta"] = "content_block_delta"
    index: int
    delta: TextDelta | InputJSONDelta | dict[str, Any]


class ContentBlockStopEvent(_Open):
    type: Literal["content_block_stop"] = "content_block_stop"
    index: int


class MessageDelta(_Open):
    stop_reason: StopReason | None = None
    stop_sequence: str | None = None


class MessageDeltaUsage(_Open):
    output_tokens: int
    input_tokens: int | None = None


class MessageDeltaEvent(_Open):
    type: Literal["message_delta"] = "message_delta"
    delta: MessageDelta
    usage: MessageDeltaUsage


class MessageStopEvent(_Open):
    type: Literal["message_stop"] = "message_stop"


class PingEvent(_Open):
    type: Literal["ping"] = "ping"


class ErrorDetail(_Open):
    type: str
    message: str


class ErrorEvent(_Open):
    type: Literal["error"] = "error"
    error: ErrorDetail


MessageStreamEvent = (
    MessageStartEvent
    | ContentBlockStartEvent
    | ContentBlockDeltaEvent
    | ContentBlockStopEvent
    | MessageDeltaEvent
    | MessageStopEvent
    | PingEvent
    | ErrorEvent
)


# ---------------------------------------------------------------------------------------------------
# Errors and headers
# ---------------------------------------------------------------------------------------------------

_TYPES_BY_STATUS = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    529: "overloaded_error",
}


def anthropic_error_body(status: int, error_type: str, message: str) -> tuple[int, dict[str, Any]]:
    """Our error as Anthropic's: same status (503, "overloaded", becomes its 529), its type names.

    The type follows the status, as Anthropic documents it; a status it does not list (405, 409, 502,
    504, 500) is an ``api_error``, or ``invalid_request_error`` for the other 4xx.
    """
    if status == 503:
        status = 529
    kind = _TYPES_BY_STATUS.get(status)
    if kind is None:
        kind = "invalid_request_error" if 400 <= status < 500 else "api_error"
    return status, {"type": "error", "error": {"type": kind, "message": message}}


def check_anthropic_headers(headers: Mapping[str, str]) -> str | None:
    """Refuse an ``anthropic-version`` we do not speak; without the header, the current version applies."""
    version = headers.get("anthropic-version")
    if version is None or version.strip() in ANTHROPIC_VERSIONS:
        return None
    shown = version if len(version) <= 64 else f"{version[:64]}…"
    return (
        f"anthropic-version: '{shown}' is not a version this server speaks; "
        f"send one of {', '.join(ANTHROPIC_VERSIONS)}."
    )


DIALECT = WireDialect(
    name="anthropic",
    error_body=anthropic_error_body,
    named_events=True,
    api_key_header="x-api-key",
    check_headers=check_anthropic_headers,
)


# ---------------------------------------------------------------------------------------------------
# Protocols and routes
# ---------------------------------------------------------------------------------------------------


class MessagesProvider(Protocol):
    """An inference provider that speaks Messages natively (``remote::anthropic``).

    ``params.model`` arrives as the provider's own model name. When a client's request targets one of
    its models, the router hands the request over as sent, with no translation either way.
    """

    provider_id: str

    async def create_message(self, params: MessagesRequest) -> Message | AsyncIterator[MessageStreamEvent]: ...

    async def count_message_tokens(self, params: CountTokensRequest) -> TokenCount: ...


class MessagesApi(Protocol):
    """What the messages router serves: one method per route in ``ROUTES``."""

    async def create_message(self, params: MessagesRequest) -> Message | AsyncIterator[MessageStreamEvent]: ...

    async def count_message_tokens(self, params: CountTokensRequest) -> TokenCount: ...


ROUTES: list[Route] = [
    Route(
        "POST",
        "/v1/messages",
        MessagesApi.create_message,
        body=MessagesRequest,
        response=Message,
        streaming=True,
        summary="Create a message (Anthropic Messages API)",
        tags=("messages",),
        dialect=DIALECT,
    ),
    Route(
        "POST",
        "/v1/messages/count_tokens",
        MessagesApi.count_message_tokens,
        body=CountTokensRequest,
        response=TokenCount,
        summary="Count the input tokens of a message request",
        tags=("messages",),
        dialect=DIALECT,
    ),
]
