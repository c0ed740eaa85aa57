"""The Responses API: OpenAI's agentic endpoint, with the tool loop run on the server.

A response turns input items (see :mod:`underlay.api.response_items`) into output items. The engine
may call server-side tools (``file_search`` over vector stores, ``mcp`` servers, ``web_search``)
several times before the model answers; client ``function`` tools end the response with
``function_call`` items that the client answers in a follow-up request (``previous_response_id``).
Responses are stored by default so that a follow-up can rebuild the whole context from the id.

Streaming sends OpenAI's typed events (``response.created`` … ``response.completed``), each with a
``sequence_number``; a non-streaming call returns the same final object the stream ends with.
``background: true`` runs the response as a durable job that clients poll, cancel, or stream from
any point (``GET /v1/responses/{id}?stream=true&starting_after=N``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal, Protocol

from pydantic import ConfigDict, Field, ValidationInfo, field_validator, model_validator

from underlay.api.base import ApiModel
from underlay.api.omit import omit_when_none
from underlay.api.pagination import ListQuery
from underlay.api.response_items import Includable, InputItem, check_metadata
from underlay.api.routes import Handler, Route

__all__ = [
    "AnnotationAddedEvent",
    "ArgumentsDeltaEvent",
    "ArgumentsDoneEvent",
    "CompactRequest",
    "CompactedResponse",
    "ContentPartEvent",
    "ConversationRef",
    "CreateResponseRequest",
    "ErrorEvent",
    "FileSearchHybrid",
    "FileSearchRanking",
    "FileSearchTool",
    "FormatJSONObject",
    "FormatJSONSchema",
    "FormatText",
    "FunctionTool",
    "IncompleteDetails",
    "InputItemList",
    "InputItemsQuery",
    "InputTokensDetails",
    "JobQueue",
    "ListResponsesQuery",
    "McpApprovalFilter",
    "McpTool",
    "McpToolFilter",
    "OutputItemEvent",
    "OutputTextDeltaEvent",
    "OutputTextDoneEvent",
    "OutputTokensDetails",
    "PromptReference",
    "ROUTES",
    "RefusalDeltaEvent",
    "RefusalDoneEvent",
    "ResponseDeleted",
    "ResponseErrorInfo",
    "ResponseEvent",
    "ResponseLifecycleEvent",
    "ResponseList",
    "ResponseObject",
    "ResponseStateStore",
    "ResponseStatus",
    "ResponseTool",
    "ResponseUsage",
    "ResponsesApi",
    "ResponsesProvider",
    "RetrieveResponseQuery",
    "SUPPORTED_TOOL_TYPES",
    "StoredResponse",
    "TERMINAL_EVENTS",
    "TextConfig",
    "TextFormat",
    "ToolChoice",
    "ToolChoiceAllowed",
    "ToolChoiceFunction",
    "ToolChoiceHosted",
    "ToolChoiceMcp",
    "ToolProgressEvent",
    "WebSearchTool",
]


class _Open(ApiModel):
    model_config = ConfigDict(extra="allow")


# ---------------------------------------------------------------------------------------------------
# Tools
# ---------------------------------------------------------------------------------------------------


class FunctionTool(_Open):
    """A client-side function: the response ends with a ``function_call`` item for the client to run."""

    type: Literal["function"] = "function"
    name: str = Field(pattern=r"^[a-zA-Z0-9_-]{1,64}$")
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class FileSearchHybrid(_Open):
    embedding_weight: float = Field(ge=0, le=1)
    text_weight: float = Field(ge=0, le=1)


class FileSearchRanking(_Open):
    ranker: Literal["auto", "default-2024-11-15", "none"] | None = None
    score_threshold: float | None = Field(default=None, ge=0, le=1)
    hybrid_search: FileSearchHybrid | None = None


class FileSearchTool(_Open):
    """Search vector stores on the server; the answer cites the files it used."""

    type: Literal["file_search"] = "file_search"
    vector_store_ids: list[str] = Field(min_length=1)
    filters: dict[str, Any] | None = None
    max_num_results: int | None = Field(default=None, ge=1, le=50)
    ranking_options: FileSearchRanking | None = None


class WebSearchTool(_Open):
    """Search the web through the tool runtime's web search."""

    type: Literal["web_search", "web_search_preview", "web_search_2025_08_26", "web_search_preview_2025_03_11"]
    search_context_size: Literal["low", "medium", "high"] | None = None
    user_location: dict[str, Any] | None = None
    filters: dict[str, Any] | None = None


class McpToolFilter(_Open):
    tool_names: list[str] | None = None
    read_only: bool | None = None


class McpApprovalFilter(_Open):
    always: McpToolFilter | None = None
    never: McpToolFilter | None = None


class McpTool(_Open):
    """An MCP server's tools, run on the server (after the client's approval, unless ``never``).

    The server is ``server_url``, or a connector configured on the provider under ``connector_id`` or
    ``server_label``, or a tool group of that name registered with the tool runtime.
    """

    type: Literal["mcp"] = "mcp"
    server_label: str = Field(min_length=1, max_length=64)
    server_url: str | None = None
    connector_id: str | None = None
    headers: dict[str, str] | None = None
    authorization: str | None = None
    allowed_tools: list[str] | McpToolFilter | None = None
    require_approval: Literal["always", "never"] | McpApprovalFilter | None = None
    server_description: str | None = None


def _tool_type(value: Any) -> str:
    kind = value.get("type") if isinstance(value, dict) else getattr(value, "type", None)
    if isinstance(kind, str) and kind.startswith("web_search"):
        return "web_search"
    return str(kind)


SUPPORTED_TOOL_TYPES = ("function", "file_search", "mcp", "web_search", "web_search_preview")

ResponseTool = Annotated[FunctionTool | FileSearchTool | WebSearchTool | McpTool, Field(discriminator="type")]


class ToolChoiceFunction(_Open):
    type: Literal["function"] = "function"
    name: str


class ToolChoiceHosted(_Open):
    type: Literal["file_search", "web_search", "web_search_preview", "web_search_preview_2025_03_11"]


class ToolChoiceMcp(_Open):
    type: Literal["mcp"] = "mcp"
    server_label: str
    name: str | None = None


class ToolChoiceAllowed(_Open):
    type: Literal["allowed_tools"] = "allowed_tools"
    mode: Literal["auto", "required"]
    tools: list[dict[str, Any]]


ToolChoice = (
    Literal["auto", "none", "required"]
    | Annotated[ToolChoiceFunction | ToolChoiceHosted | ToolChoiceMcp | ToolChoiceAllowed, Field(discriminator="type")]
)

# ---------------------------------------------------------------------------------------------------
# Text format
# ---------------------------------------------------------------------------------------------------


class FormatText(_Open):
    type: Literal["text"] = "text"


class FormatJSONObject(_Open):
    type: Literal["json_object"] = "json_object"


class FormatJSONSchema(_Open):
    model_config = ConfigDict(extra="allow", populate_by_name=True)

    type: Literal["json_schema"] = "json_schema"
    name: str = Field(pattern=r"^[a-zA-Z0-9_-]{1,64}$")
    schema_: dict[str, Any] = Field(alias="schema")
    description: str | None = None
    strict: bool | None = None


TextFormat = Annotated[FormatText | FormatJSONObject | FormatJSONSchema, Field(discriminator="type")]


class TextConfig(_Open):
    format: TextFormat = Field(default_factory=FormatText)
    verbosity: Literal["low", "medium", "high"] | None = None


# ---------------------------------------------------------------------------------------------------
# Request
# ---------------------------------------------------------------------------------------------------


class ConversationRef(_Open):
    id: str


_PROMPT_VARIABLE_PARTS = ("input_text", "input_file", "input_image")


class PromptReference(_Open):
    """``prompt``: a stored prompt (the Prompts API) rendered into the response's instructions.

    ``version`` is a string, as in OpenAI's API (``"2"``); unset means the prompt's default version. Each
    variable is a string or an input content part (``input_text``; ``input_file``, whose text is used;
    ``input_image`` is refused, since instructions are text). The response echoes it with the version used.
    """

    id: str = Field(min_length=1, max_length=256)
    version: str | None = Field(default=None, max_length=20)
    variables: dict[str, str | dict[str, Any]] | None = Field(default=None, max_length=64)

    @field_validator("version", mode="before")
    @classmethod
    def _number(cls, value: Any) -> Any:
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value

    @field_validator("variables")
    @classmethod
    def _parts(cls, value: dict[str, str | dict[str, Any]] | None) -> dict[str, str | dict[str, Any]] | None:
        for name, part in (value or {}).items():
            if isinstance(part, dict) and part.get("type") not in _PROMPT_VARIABLE_PARTS:
                raise ValueError(
                    f"variable '{name[:64]}' is a string or a part of type input_text, input_file or input_image"
                )
            if isinstance(part, dict) and part.get("type") == "input_text" and not isinstance(part.get("text"), str):
                raise ValueError(f"variable '{name[:64]}': an input_text part needs text")
        return value


class CreateResponseRequest(_Open):
    """``POST /v1/responses``. Unknown OpenAI fields are accepted and ignored.

    Underlay extra: ``max_infer_iters`` caps the model calls of one response (the tool loop's turns).
    ``guardrails`` (a list of shield ids) runs those shields on every model turn's input and output, as in
    chat completions; a violation ends the message with a ``refusal`` content part.
    """

    model: str
    input: str | list[InputItem] = ""
    instructions: str | None = None
    tools: list[ResponseTool] | None = None
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: bool | None = None
    max_output_tokens: int | None = Field(default=None, ge=1)
    max_tool_calls: int | None = Field(default=None, ge=1)
    max_infer_iters: int | None = Field(default=None, ge=1, le=100)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    top_logprobs: int | None = Field(default=None, ge=0, le=20)
    presence_penalty: float | None = Field(default=None, ge=-2, le=2)
    frequency_penalty: float | None = Field(default=None, ge=-2, le=2)
    text: TextConfig | None = None
    previous_response_id: str | None = None
    conversation: str | ConversationRef | None = None
    store: bool | None = None
    background: bool | None = None
    stream: bool | None = None
    metadata: dict[str, str] | None = None
    include: list[Includable] | None = None
    truncation: Literal["auto", "disabled"] | None = None
    user: str | None = None
    safety_identifier: str | None = Field(default=None, max_length=64)
    prompt_cache_key: str | None = Field(default=None, max_length=256)
    prompt: PromptReference | None = None
    seed: int | None = None

    _metadata = field_validator("metadata")(check_metadata)

    @field_validator("tools", mode="before")
    @classmethod
    def _known_tools(cls, value: Any) -> Any:
        if isinstance(value, list):
            for index, tool in enumerate(value):
                kind = tool.get("type") if isinstance(tool, dict) else None
                if isinstance(kind, str) and _tool_type(tool) not in SUPPORTED_TOOL_TYPES:
                    raise ValueError(
                        f"tools[{index}]: tool type '{kind}' is not supported here; use function, "
                        "file_search, mcp or web_search"
                    )
        return value

    @model_validator(mode="after")
    def _check(self) -> CreateResponseRequest:
        if self.previous_response_id and self.conversation is not None:
            raise ValueError("previous_response_id and conversation cannot be used together")
        if self.background and self.store is False:
            raise ValueError("background responses must be stored; leave store unset or true")
        tools = self.tools or []
        choice = self.tool_choice
        if choice == "required" and not tools:
            raise ValueError("tool_choice 'required' needs at least one tool in tools")
        if isinstance(choice, ToolChoiceFunction):
            names = {t.name for t in tools if isinstance(t, FunctionTool)}
            if choice.name not in names:
                raise ValueError(f"tool_choice names function '{choice.name}', which is not in tools")
        if isinstance(choice, ToolChoiceHosted):
            wanted = "file_search" if choice.type == "file_search" else "web_search"
            if not any(_tool_type(t) == wanted for t in tools):
                raise ValueError(f"tool_choice asks for {choice.type}, which is not in tools")
        if isinstance(choice, ToolChoiceMcp) and not any(
            isinstance(t, McpTool) and t.server_label == choice.server_label for t in tools
        ):
            raise ValueError(f"tool_choice names MCP server '{choice.server_label}', which is not in tools")
        labels = [t.server_label for t in tools if isinstance(t, McpTool)]
        if len(labels) != len(set(labels)):
            raise ValueError("each mcp tool needs its own server_label")
        return self

    @property
    def conversation_id(self) -> str | None:
        if isinstance(self.conversation, ConversationRef):
            return self.conversation.id
        return self.conversation


# ---------------------------------------------------------------------------------------------------
# The response object
# ---------------------------------------------------------------------------------------------------

ResponseStatus = Literal["completed", "failed", "in_progress", "cancelled", "queued", "incomplete"]


class InputTokensDetails(ApiModel):
    """``cache_write_tokens`` is required by the openai SDK's type: nothing here caches prompts, so both are 0."""

    cached_tokens: int = 0
    cache_write_tokens: int = 0


class OutputTokensDetails(ApiModel):
    reasoning_tokens: int = 0


class ResponseUsage(ApiModel):
    input_tokens: int = 0
    input_tokens_details: InputTokensDetails = Field(default_factory=InputTokensDetails)
    output_tokens: int = 0
    output_tokens_details: OutputTokensDetails = Field(default_factory=OutputTokensDetails)
    total_tokens: int = 0


class ResponseErrorInfo(ApiModel):
    code: str
    message: str


class IncompleteDetails(ApiModel):
    reason: Literal["max_output_tokens", "max_tool_calls", "max_infer_iters", "content_filter"]


_SAMPLING_DEFAULTS: dict[str, float | int] = {
    "temperature": 1.0,
    "top_p": 1.0,
    "top_logprobs": 0,
    "presence_penalty": 0.0,
    "frequency_penalty": 0.0,
}


class ResponseObject(_Open):
    id: str
    object: Literal["response"] = "response"
    created_at: int
    status: ResponseStatus
    completed_at: int | None = None
    background: bool = False
    error: ResponseErrorInfo | None = None
    incomplete_details: IncompleteDetails | None = None
    instructions: str | None = None
    max_output_tokens: int | None = None
    max_tool_calls: int | None = None
    model: str
    output: list[dict[str, Any]] = Field(default_factory=list)
    parallel_tool_calls: bool = True
    previous_response_id: str | None = None
    conversation: ConversationRef | None = None
    reasoning: dict[str, Any] | None = None
    service_tier: str = "default"
    store: bool = True
    # The sampling the model ran with, never null (Open Responses requires the numbers): the request's
    # values, else the provider's defaults, which the engine sends to the model explicitly.
    temperature: float = 1.0
    top_p: float = 1.0
    top_logprobs: int = 0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    safety_identifier: str | None = None
    prompt_cache_key: str | None = None
    prompt: PromptReference | None = None
    text: dict[str, Any] = Field(default_factory=lambda: {"format": {"type": "text"}})
    tool_choice: Any = "auto"
    tools: list[dict[str, Any]] = Field(default_factory=list)
    truncation: Literal["auto", "disabled"] = "disabled"
    usage: ResponseUsage | None = None
    user: str | None = None
    metadata: dict[str, str] = Field(default_factory=dict)
    # ``user`` stays ``null`` when unset, not omitted: the Open Responses schema requires the key (nullable),
    # and OpenAI's own API sends it that way; the openai SDK accepts either. ``prompt`` is optional in
    # OpenAI's type (absent when no prompt was used).

    _omit = omit_when_none("prompt")

    @field_validator(*_SAMPLING_DEFAULTS, mode="before")
    @classmethod
    def _stored_null(cls, value: Any, info: ValidationInfo) -> Any:
        """Responses stored before these were required hold ``null``: read them as the defaults."""
        return _SAMPLING_DEFAULTS[info.field_name] if value is None and info.field_name else value

    @property
    def output_text(self) -> str:
        return "".join(
            part.get("text", "")
            for item in self.output
            if item.get("type") == "message"
            for part in item.get("content") or []
            if part.get("type") == "output_text"
        )


class CompactRequest(_Open):
    """``POST /v1/responses/compact``: condense a context (``input``, after ``previous_response_id``'s chain).

    The answer's single ``compaction`` item stands for the whole context: send it as the first input item
    of the next request (without ``previous_response_id``) and the model sees the summary in its place.
    """

    model: str
    input: str | list[InputItem] | None = None
    instructions: str | None = None
    previous_response_id: str | None = None
    prompt_cache_key: str | None = Field(default=None, max_length=256)
    safety_identifier: str | None = Field(default=None, max_length=64)
    service_tier: str | None = None


class CompactedResponse(ApiModel):
    """OpenAI's ``response.compaction`` object (not stored: it is its own result)."""

    id: str
    object: Literal["response.compaction"] = "response.compaction"
    created_at: int
    output: list[dict[str, Any]]
    usage: ResponseUsage
    safety_identifier: str | None = None


class ResponseDeleted(ApiModel):
    id: str
    object: Literal["response.deleted"] = "response.deleted"
    deleted: bool = True


class ResponseList(ApiModel):
    object: Literal["list"] = "list"
    data: list[ResponseObject]
    first_id: str | None = None
    last_id: str | None = None
    has_more: bool = False

    _omit = omit_when_none("first_id", "last_id")  # an empty list has no ids to show


class InputItemList(ApiModel):
    object: Literal["list"] = "list"
    data: list[dict[str, Any]]
    first_id: str | None = None
    last_id: str | None = None
    has_more: bool = False


def _listify(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


class ListResponsesQuery(ListQuery):
    model: str | None = None


class InputItemsQuery(ListQuery):
    include: list[Includable] | None = None

    _include = field_validator("include", mode="before")(_listify)


class RetrieveResponseQuery(ApiModel):
    """``stream=true`` replays a background response's events (after ``starting_after``) and follows it."""

    include: list[Includable] | None = None
    stream: bool = False
    starting_after: int | None = Field(default=None, ge=-1)
    include_obfuscation: bool | None = None

    _include = field_validator("include", mode="before")(_listify)


# ---------------------------------------------------------------------------------------------------
# Stream events (OpenAI's ``ResponseStreamEvent`` union)
# ---------------------------------------------------------------------------------------------------


class ResponseEvent(ApiModel):
    """Every event has a ``type`` and a ``sequence_number`` (the server writes ``event: <type>``)."""

    type: str
    sequence_number: int = 0


class ResponseLifecycleEvent(ResponseEvent):
    """response.created / queued / in_progress / completed / incomplete / failed."""

    type: Literal[
        "response.created",
        "response.queued",
        "response.in_progress",
        "response.completed",
        "response.incomplete",
        "response.failed",
    ]
    response: ResponseObject


class OutputItemEvent(ResponseEvent):
    type: Literal["response.output_item.added", "response.output_item.done"]
    output_index: int
    item: dict[str, Any]


class ContentPartEvent(ResponseEvent):
    type: Literal["response.content_part.added", "response.content_part.done"]
    item_id: str
    output_index: int
    content_index: int
    part: dict[str, Any]


class OutputTextDeltaEvent(ResponseEvent):
    type: Literal["response.output_text.delta"] = "response.output_text.delta"
    item_id: str
    output_index: int
    content_index: int
    delta: str
    logprobs: list[dict[str, Any]] = Field(default_factory=list)


class OutputTextDoneEvent(ResponseEvent):
    type: Literal["response.output_text.done"] = "response.output_text.done"
    item_id: str
    output_index: int
    content_index: int
    text: str
    logprobs: list[dict[str, Any]] = Field(default_factory=list)


class RefusalDeltaEvent(ResponseEvent):
    type: Literal["response.refusal.delta"] = "response.refusal.delta"
    item_id: str
    output_index: int
    content_index: int
    delta: str


class RefusalDoneEvent(ResponseEvent):
    type: Literal["response.refusal.done"] = "response.refusal.done"
    item_id: str
    output_index: int
    content_index: int
    refusal: str


class AnnotationAddedEvent(ResponseEvent):
    type: Literal["response.output_text.annotation.added"] = "response.output_text.annotation.added"
    item_id: str
    output_index: int
    content_index: int
    annotation_index: int
    annotation: dict[str, Any]


class ArgumentsDeltaEvent(ResponseEvent):
    type: Literal["response.function_call_arguments.delta", "response.mcp_call_arguments.delta"]
    item_id: str
    output_index: int
    delta: str


class ArgumentsDoneEvent(ResponseEvent):
    type: Literal["response.function_call_arguments.done", "response.mcp_call_arguments.done"]
    item_id: str
    output_index: int
    arguments: str
    name: str | None = None


class ToolProgressEvent(ResponseEvent):
    """Progress of a server-side tool item: file_search_call / web_search_call / mcp_call / mcp_list_tools."""

    type: Literal[
        "response.file_search_call.in_progress",
        "response.file_search_call.searching",
        "response.file_search_call.completed",
        "response.web_search_call.in_progress",
        "response.web_search_call.searching",
        "response.web_search_call.completed",
        "response.mcp_call.in_progress",
        "response.mcp_call.completed",
        "response.mcp_call.failed",
        "response.mcp_list_tools.in_progress",
        "response.mcp_list_tools.completed",
        "response.mcp_list_tools.failed",
    ]
    item_id: str
    output_index: int


class ErrorEvent(ResponseEvent):
    type: Literal["error"] = "error"
    code: str | None = None
    message: str
    param: str | None = None


TERMINAL_EVENTS = frozenset({"response.completed", "response.incomplete", "response.failed"})

# ---------------------------------------------------------------------------------------------------
# What the provider is given, and what it implements
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StoredResponse:
    """One stored response as the store reads it, so the engine uses attributes, never string keys.

    ``status`` and ``background`` are the row's own columns (kept current by the store's updates);
    ``response`` is the object as JSON, ``history`` the items before this response's input,
    ``request`` the create request (for background work), ``job_id`` its job if it has one, and
    ``owner_principal`` who created it.
    """

    id: str
    status: str | None
    background: bool
    response: dict[str, Any]
    input_items: list[dict[str, Any]] = field(default_factory=list)
    history: list[dict[str, Any]] = field(default_factory=list)
    request: dict[str, Any] | None = None
    job_id: str | None = None
    owner_principal: str | None = None


class ResponseStateStore(Protocol):
    """Stored responses and background event logs, filtered by the current principal (core implements it)."""

    async def put(self, response: dict[str, Any], **fields: Any) -> None: ...

    async def get(self, response_id: str) -> StoredResponse: ...

    async def find(self, response_id: str) -> StoredResponse | None: ...

    async def update(self, response_id: str, response: dict[str, Any] | None = None, **fields: Any) -> None: ...

    async def delete(self, response_id: str) -> None: ...

    async def page(
        self, *, after: str | None, limit: int, order: str, model: str | None
    ) -> tuple[list[StoredResponse], bool]: ...

    async def append_events(self, response_id: str, events: list[dict[str, Any]]) -> None: ...

    async def events_after(self, response_id: str, sequence_number: int) -> list[dict[str, Any]]: ...

    async def discard_events_after(self, response_id: str, sequence_number: int) -> int:
        """Drop the events written after ``sequence_number`` by an attempt that will never finish."""
        ...

    async def last_sequence_number(self, response_id: str) -> int: ...


class JobQueue(Protocol):
    """The durable job runner, as the provider uses it (see ``underlay.core.jobs``)."""

    def register(
        self, kind: str, handler: Any, *, on_failure: Any = None, max_attempts: int = 3, lane: Any = "bulk"
    ) -> None: ...

    async def submit(
        self, kind: str, payload: dict[str, Any] | None = None, *, reference: str | None = None
    ) -> Any: ...

    async def cancel(self, job_id: str) -> Any: ...


class ResponsesProvider(Protocol):
    provider_id: str

    async def initialize(self) -> None: ...

    async def shutdown(self) -> None: ...

    def attach(self, store: ResponseStateStore, jobs: JobQueue) -> None:
        """Called by the control plane once the stores exist. The routers of the APIs the provider uses
        (required and optional) are built before it and reach it with its ``deps`` at construction."""
        ...

    async def create_response(self, params: CreateResponseRequest) -> ResponseObject | AsyncIterator[ResponseEvent]: ...

    async def get_response(
        self, response_id: str, query: RetrieveResponseQuery
    ) -> ResponseObject | AsyncIterator[ResponseEvent]: ...

    async def delete_response(self, response_id: str) -> ResponseDeleted: ...

    async def cancel_response(self, response_id: str) -> ResponseObject: ...

    async def list_responses(self, query: ListResponsesQuery) -> ResponseList: ...

    async def list_input_items(self, response_id: str, query: InputItemsQuery) -> InputItemList: ...

    async def compact_response(self, params: CompactRequest) -> CompactedResponse: ...


class ResponsesApi(Protocol):
    """What the responses router serves: one method per route in ``ROUTES``.

    The route table names these methods, so a missing or misspelled handler fails the type check;
    :class:`underlay.core.routers.responses.ResponsesRouter` implements it.
    """

    async def create_response(self, params: CreateResponseRequest) -> ResponseObject | AsyncIterator[ResponseEvent]: ...

    async def list_responses(self, query: ListResponsesQuery) -> ResponseList: ...

    async def compact_response(self, params: CompactRequest) -> CompactedResponse: ...

    async def get_response(
        self, response_id: str, query: RetrieveResponseQuery
    ) -> ResponseObject | AsyncIterator[ResponseEvent]: ...

    async def delete_response(self, response_id: str) -> ResponseDeleted: ...

    async def cancel_response(self, response_id: str) -> ResponseObject: ...

    async def list_input_items(self, response_id: str, query: InputItemsQuery) -> InputItemList: ...


def _route(method: str, path: str, handler: Handler, summary: str, **kwargs: Any) -> Route:
    return Route(method, path, handler, summary=summary, tags=("responses",), **kwargs)


_R = "/v1/responses/{response_id}"

ROUTES: list[Route] = [
    _route(
        "POST",
        "/v1/responses",
        ResponsesApi.create_response,
        "Create a response",
        body=CreateResponseRequest,
        response=ResponseObject,
        streaming=True,
    ),
    _route("GET", "/v1/responses", ResponsesApi.list_responses, "List stored responses", query=ListResponsesQuery),
    _route(
        "POST",
        "/v1/responses/compact",
        ResponsesApi.compact_response,
        "Condense a context into one compaction item",
        body=CompactRequest,
        response=CompactedResponse,
    ),
    _route(
        "GET",
        _R,
        ResponsesApi.get_response,
        "Retrieve a response (stream=true follows a background response)",
        query=RetrieveResponseQuery,
        response=ResponseObject,
        streaming=True,
    ),
    _route("DELETE", _R, ResponsesApi.delete_response, "Delete a stored response", response=ResponseDeleted),
    _route(
        "POST", f"{_R}/cancel", ResponsesApi.cancel_response, "Cancel a background response", response=ResponseObject
    ),
    _route(
        "GET",
        f"{_R}/input_items",
        ResponsesApi.list_input_items,
        "List a response's input items",
        query=InputItemsQuery,
        response=InputItemList,
    ),
]
