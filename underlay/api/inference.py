"""The Inference API: OpenAI chat completions, legacy completions and embeddings.

Request models accept unknown fields (``extra="allow"``) so that remote adapters can pass new OpenAI
parameters through; every field we understand is typed, so a wrong type is a 400 naming the field.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal, Protocol

from pydantic import ConfigDict, Field, field_validator, model_validator

from underlay.api.base import ApiModel
from underlay.api.omit import omit_when_none
from underlay.api.pagination import ListQuery
from underlay.api.response_items import check_metadata
from underlay.api.routes import Route

__all__ = [
    "AssistantMessage",
    "AudioPart",
    "ChatCompletion",
    "ChatCompletionChunk",
    "ChatCompletionListQuery",
    "ChatCompletionRequest",
    "ChatMessage",
    "ChatTool",
    "Choice",
    "ChoiceDelta",
    "ChoiceLogprobs",
    "ChunkChoice",
    "Completion",
    "CompletionChoice",
    "CompletionLogprobs",
    "CompletionRequest",
    "ContentPart",
    "DeletedChatCompletion",
    "DeveloperMessage",
    "DiscoveredModel",
    "Embedding",
    "EmbeddingsRequest",
    "EmbeddingsResponse",
    "EmbeddingsUsage",
    "FilePart",
    "FinishReason",
    "FunctionCall",
    "FunctionDefinition",
    "ImagePart",
    "ImageURL",
    "InferenceApi",
    "InferenceProvider",
    "InputAudio",
    "JSONSchemaSpec",
    "MessageListQuery",
    "NamedFunction",
    "NamedToolChoice",
    "ROUTES",
    "RefusalPart",
    "ResponseFormat",
    "ResponseFormatJSONObject",
    "ResponseFormatJSONSchema",
    "ResponseFormatText",
    "ResponseMessage",
    "StoredChatCompletion",
    "StreamOptions",
    "SystemMessage",
    "TextPart",
    "TokenLogprob",
    "ToolCall",
    "ToolCallDelta",
    "ToolChoice",
    "ToolMessage",
    "TopLogprob",
    "UpdateChatCompletionRequest",
    "Usage",
    "UserMessage",
    "content_text",
]

# ---------------------------------------------------------------------------------------------------
# Chat messages
# ---------------------------------------------------------------------------------------------------


class _Open(ApiModel):
    model_config = ConfigDict(extra="allow")


class TextPart(_Open):
    type: Literal["text"] = "text"
    text: str


class ImageURL(_Open):
    url: str
    detail: Literal["auto", "low", "high"] | None = None


class ImagePart(_Open):
    type: Literal["image_url"] = "image_url"
    image_url: ImageURL


class InputAudio(_Open):
    data: str
    format: str


class AudioPart(_Open):
    type: Literal["input_audio"] = "input_audio"
    input_audio: InputAudio


class FilePart(_Open):
    type: Literal["file"] = "file"
    file: dict[str, Any]


class RefusalPart(_Open):
    type: Literal["refusal"] = "refusal"
    refusal: str


ContentPart = Annotated[TextPart | ImagePart | AudioPart | FilePart | RefusalPart, Field(discriminator="type")]


class FunctionCall(_Open):
    name: str
    arguments: str


class ToolCall(_Open):
    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class SystemMessage(_Open):
    role: Literal["system"] = "system"
    content: str | list[ContentPart]
    name: str | None = None


class DeveloperMessage(_Open):
    role: Literal["developer"] = "developer"
    content: str | list[ContentPart]
    name: str | None = None


class UserMessage(_Open):
    role: Literal["user"] = "user"
    content: str | list[ContentPart]
    name: str | None = None


class AssistantMessage(_Open):
    role: Literal["assistant"] = "assistant"
    content: str | list[ContentPart] | None = None
    refusal: str | None = None
    name: str | None = None
    tool_calls: list[ToolCall] | None = None


class ToolMessage(_Open):
    role: Literal["tool"] = "tool"
    content: str | list[ContentPart]
    tool_call_id: str


ChatMessage = Annotated[
    SystemMessage | DeveloperMessage | UserMessage | AssistantMessage | ToolMessage,
    Field(discriminator="role"),
]


def content_text(content: str | list[Any] | None) -> str:
    """Flatten string-or-parts content to plain text (text and refusal parts only)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    out: list[str] = []
    for part in content:
        if isinstance(part, TextPart):
            out.append(part.text)
        elif isinstance(part, RefusalPart):
            out.append(part.refusal)
        elif isinstance(part, dict) and part.get("type") == "text":
            out.append(str(part.get("text", "")))
    return "".join(out)


# ---------------------------------------------------------------------------------------------------
# Tools and formats
# ---------------------------------------------------------------------------------------------------


class FunctionDefinition(_Open):
    name: str = Field(pattern=r"^[a-zA-Z0-9_-]{1,64}$")
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class ChatTool(_Open):
    type: Literal["function"] = "function"
    function: FunctionDefinition


class NamedFunction(_Open):
    name: str


class NamedToolChoice(_Open):
    type: Literal["function"] = "function"
    function: NamedFunction


ToolChoice = Literal["auto", "none", "required"] | NamedToolChoice


class JSONSchemaSpec(_Open):
    name: str = Field(pattern=r"^[a-zA-Z0-9_-]{1,64}$")
    description: str | None = None
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    strict: bool | None = None

    model_config = ConfigDict(extra="allow", populate_by_name=True)


class ResponseFormatText(_Open):
    type: Literal["text"] = "text"


class ResponseFormatJSONObject(_Open):
    type: Literal["json_object"] = "json_object"


class ResponseFormatJSONSchema(_Open):
    type: Literal["json_schema"] = "json_schema"
    json_schema: JSONSchemaSpec


ResponseFormat = Annotated[
    ResponseFormatText | ResponseFormatJSONObject | ResponseFormatJSONSchema, Field(discriminator="type")
]


class StreamOptions(_Open):
    include_usage: bool | None = None


# ---------------------------------------------------------------------------------------------------
# Chat completion request and responses
# ---------------------------------------------------------------------------------------------------


class ChatCompletionRequest(_Open):
    model: str
    messages: list[ChatMessage] = Field(min_length=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    stop: str | list[str] | None = None
    seed: int | None = None
    n: int | None = Field(default=None, ge=1, le=8)
    presence_penalty: float | None = Field(default=None, ge=-2, le=2)
    frequency_penalty: float | None = Field(default=None, ge=-2, le=2)
    logit_bias: dict[str, float] | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = Field(default=None, ge=0, le=20)
    response_format: ResponseFormat | None = None
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    tools: list[ChatTool] | None = None
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: bool | None = None
    user: str | None = None
    metadata: dict[str, str] | None = None
    store: bool | None = None

    _metadata = field_validator("metadata")(check_metadata)

    @model_validator(mode="after")
    def _check(self) -> ChatCompletionRequest:
        if self.top_logprobs is not None and self.top_logprobs > 0 and not self.logprobs:
            raise ValueError("top_logprobs requires logprobs to be true")
        if isinstance(self.tool_choice, NamedToolChoice):
            names = {t.function.name for t in self.tools or []}
            if self.tool_choice.function.name not in names:
                raise ValueError(
                    f"tool_choice names function '{self.tool_choice.function.name}', which is not in tools"
                )
        if self.tool_choice == "required" and not self.tools:
            raise ValueError("tool_choice 'required' needs at least one tool in tools")
        return self

    @property
    def stop_list(self) -> list[str]:
        if self.stop is None:
            return []
        return [self.stop] if isinstance(self.stop, str) else list(self.stop)

    @property
    def token_limit(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens


class TopLogprob(_Open):
    token: str
    logprob: float
    bytes: list[int] | None = None


class TokenLogprob(_Open):
    token: str
    logprob: float
    bytes: list[int] | None = None
    top_logprobs: list[TopLogprob] = Field(default_factory=list)


class ChoiceLogprobs(_Open):
    content: list[TokenLogprob] | None = None
    refusal: list[TokenLogprob] | None = None


class ResponseMessage(_Open):
    role: Literal["assistant"] = "assistant"
    content: str | None = None
    refusal: str | None = None
    tool_calls: list[ToolCall] | None = None

    _omit = omit_when_none("tool_calls")


FinishReason = Literal["stop", "length", "tool_calls", "content_filter", "function_call"]


class Choice(_Open):
    index: int
    message: ResponseMessage
    finish_reason: FinishReason | None
    logprobs: ChoiceLogprobs | None = None


class Usage(_Open):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class ChatCompletion(_Open):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[Choice]
    usage: Usage | None = None
    system_fingerprint: str | None = None
    service_tier: str | None = None

    _omit = omit_when_none("system_fingerprint", "service_tier")


class ToolCallDelta(_Open):
    index: int
    id: str | None = None
    type: Literal["function"] | None = None
    function: dict[str, Any] | None = None


class ChoiceDelta(_Open):
    role: Literal["assistant"] | None = None
    content: str | None = None
    refusal: str | None = None
    tool_calls: list[ToolCallDelta] | None = None

    _omit = omit_when_none("tool_calls")


class ChunkChoice(_Open):
    index: int
    delta: ChoiceDelta
    finish_reason: FinishReason | None = None
    logprobs: ChoiceLogprobs | None = None


class ChatCompletionChunk(_Open):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: Usage | None = None
    system_fingerprint: str | None = None

    _omit = omit_when_none("system_fingerprint")


# ---------------------------------------------------------------------------------------------------
# Legacy completions
# ---------------------------------------------------------------------------------------------------


class CompletionRequest(_Open):
    """OpenAI's legacy completion request.

    ``prompt`` is required but may be ``null``, as in OpenAI's reference: with no prompt the model
    writes as from the start of a new document, so ``null`` is read as the empty prompt (the
    model's start token alone).
    """

    model: str
    prompt: str | list[str] | list[int] | list[list[int]] | None
    max_tokens: int | None = Field(default=16, ge=0)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    n: int | None = Field(default=None, ge=1, le=8)
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    logprobs: int | None = Field(default=None, ge=0, le=5)
    echo: bool | None = None
    stop: str | list[str] | None = None
    presence_penalty: float | None = Field(default=None, ge=-2, le=2)
    frequency_penalty: float | None = Field(default=None, ge=-2, le=2)
    best_of: int | None = Field(default=None, ge=1)
    logit_bias: dict[str, float] | None = None
    seed: int | None = None
    suffix: str | None = None
    user: str | None = None

    @field_validator("prompt", mode="after")
    @classmethod
    def _null_is_empty(cls, value: str | list[Any] | None) -> str | list[Any]:
        return "" if value is None else value

    @property
    def stop_list(self) -> list[str]:
        if self.stop is None:
            return []
        return [self.stop] if isinstance(self.stop, str) else list(self.stop)


class CompletionLogprobs(_Open):
    tokens: list[str] = Field(default_factory=list)
    token_logprobs: list[float | None] = Field(default_factory=list)
    top_logprobs: list[dict[str, float] | None] | None = None
    text_offset: list[int] = Field(default_factory=list)


class CompletionChoice(_Open):
    index: int
    text: str
    finish_reason: Literal["stop", "length", "content_filter"] | None = None
    logprobs: CompletionLogprobs | None = None


class Completion(_Open):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage | None = None
    system_fingerprint: str | None = None

    _omit = omit_when_none("system_fingerprint")


# ---------------------------------------------------------------------------------------------------
# Embeddings
# ---------------------------------------------------------------------------------------------------


class EmbeddingsRequest(_Open):
    model: str
    input: str | list[str] | list[int] | list[list[int]]
    encoding_format: Literal["float", "base64"] | None = None
    dimensions: int | None = Field(default=None, ge=1)
    user: str | None = None

    @model_validator(mode="after")
    def _non_empty(self) -> EmbeddingsRequest:
        if isinstance(self.input, list) and not self.input:
            raise ValueError("input must not be an empty list")
        if isinstance(self.input, str) and self.input == "":
            raise ValueError("input must not be an empty string")
        return self


class Embedding(_Open):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str


class EmbeddingsUsage(_Open):
    prompt_tokens: int
    total_tokens: int


class EmbeddingsResponse(_Open):
    object: Literal["list"] = "list"
    data: list[Embedding]
    model: str
    usage: EmbeddingsUsage


# ---------------------------------------------------------------------------------------------------
# Stored chat completions
# ---------------------------------------------------------------------------------------------------


class StoredChatCompletion(ChatCompletion):
    """A stored completion: the completion plus the request's input messages and metadata."""

    input_messages: list[dict[str, Any]] = Field(default_factory=list)
    metadata: dict[str, str] | None = None
    request_id: str | None = None

    _omit = omit_when_none("system_fingerprint", "service_tier", "request_id")


class UpdateChatCompletionRequest(ApiModel):
    """``POST /v1/chat/completions/{id}``: OpenAI lets a stored completion's metadata be replaced, nothing else."""

    model_config = ConfigDict(extra="forbid")

    metadata: dict[str, str] | None = Field(description="The new metadata (replaces the old; null clears it).")

    _metadata = field_validator("metadata")(check_metadata)


class ChatCompletionListQuery(ListQuery):
    model: str | None = None
    metadata: dict[str, str] | None = None


class MessageListQuery(ListQuery):
    order: Literal["asc", "desc"] = "asc"


class DeletedChatCompletion(_Open):
    id: str
    object: Literal["chat.completion.deleted"] = "chat.completion.deleted"
    deleted: bool = True


# ---------------------------------------------------------------------------------------------------
# Provider protocol and routes
# ---------------------------------------------------------------------------------------------------


class DiscoveredModel(ApiModel):
    """A model a provider reports it can serve (``provider_resource_id`` is the provider's name)."""

    provider_resource_id: str
    model_type: Literal["llm", "embedding"] = "llm"
    metadata: dict[str, Any] = Field(default_factory=dict)


class InferenceProvider(Protocol):
    """What an inference provider implements.

    ``params.model`` arrives as the provider's own model name (the router rewrites it); the router
    rewrites ``model`` in the result back to the id the client used. A streaming call returns an
    async iterator of typed chunks; only the server knows SSE.
    """

    provider_id: str

    async def initialize(self) -> None: ...

    async def shutdown(self) -> None: ...

    async def list_provider_models(self) -> list[DiscoveredModel]: ...

    async def openai_chat_completion(
        self, params: ChatCompletionRequest
    ) -> ChatCompletion | AsyncIterator[ChatCompletionChunk]: ...

    async def openai_completion(self, params: CompletionRequest) -> Completion | AsyncIterator[Completion]: ...

    async def openai_embeddings(self, params: EmbeddingsRequest) -> EmbeddingsResponse: ...


class InferenceApi(Protocol):
    """What the inference router serves: one method per route in ``ROUTES``.

    The route table names these methods, so a missing or misspelled handler fails the type check;
    :class:`underlay.core.routers.inference.InferenceRouter` implements it.
    """

    async def openai_chat_completion(
        self, params: ChatCompletionRequest
    ) -> ChatCompletion | AsyncIterator[ChatCompletionChunk]: ...

    async def list_chat_completions(self, query: ChatCompletionListQuery) -> dict[str, Any]: ...

    async def get_chat_completion(self, completion_id: str) -> StoredChatCompletion: ...

    async def update_chat_completion(
        self, completion_id: str, params: UpdateChatCompletionRequest
    ) -> StoredChatCompletion: ...

    async def list_chat_completion_messages(self, completion_id: str, query: MessageListQuery) -> dict[str, Any]: ...

    async def delete_chat_completion(self, completion_id: str) -> DeletedChatCompletion: ...

    async def openai_completion(self, params: CompletionRequest) -> Completion | AsyncIterator[Completion]: ...

    async def openai_embeddings(self, params: EmbeddingsRequest) -> EmbeddingsResponse: ...


ROUTES: list[Route] = [
    Route(
        "POST",
        "/v1/chat/completions",
        InferenceApi.openai_chat_completion,
        body=ChatCompletionRequest,
        response=ChatCompletion,
        streaming=True,
        summary="Create a chat completion",
        tags=("inference",),
    ),
    Route(
        "GET",
        "/v1/chat/completions",
        InferenceApi.list_chat_completions,
        query=ChatCompletionListQuery,
        summary="List stored chat completions",
        tags=("inference",),
    ),
    Route(
        "GET",
        "/v1/chat/completions/{completion_id}",
        InferenceApi.get_chat_completion,
        response=StoredChatCompletion,
        summary="Retrieve a stored chat completion",
        tags=("inference",),
    ),
    Route(
        "POST",
        "/v1/chat/completions/{completion_id}",
        InferenceApi.update_chat_completion,
        body=UpdateChatCompletionRequest,
        response=StoredChatCompletion,
        summary="Update a stored chat completion's metadata",
        tags=("inference",),
    ),
    Route(
        "GET",
        "/v1/chat/completions/{completion_id}/messages",
        InferenceApi.list_chat_completion_messages,
        query=MessageListQuery,
        summary="List the input messages of a stored chat completion",
        tags=("inference",),
    ),
    Route(
        "DELETE",
        "/v1/chat/completions/{completion_id}",
        InferenceApi.delete_chat_completion,
        response=DeletedChatCompletion,
        summary="Delete a stored chat completion",
        tags=("inference",),
    ),
    Route(
        "POST",
        "/v1/completions",
        InferenceApi.openai_completion,
        body=CompletionRequest,
        response=Completion,
        streaming=True,
        summary="Create a text completion",
        tags=("inference",),
    ),
    Route(
        "POST",
        "/v1/embeddings",
        InferenceApi.openai_embeddings,
        body=EmbeddingsRequest,
        response=EmbeddingsResponse,
        summary="Create embeddings",
        tags=("inference",),
    ),
]
