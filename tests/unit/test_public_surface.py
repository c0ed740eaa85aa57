"""The public surface a provider author builds on is declared (``__all__``) and pinned here.

Why pin it: ``underlay.api`` and the OpenAI-compatible adapter base are what third-party providers
import, so adding, renaming or dropping a name there is a change to a published contract. With the
exact list below, such a change shows up in review as an edit to this file, never as a side effect.
When you change the surface on purpose, update the list (and docs/providers/external.md if it matters
to provider authors).
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import pkgutil
from pathlib import Path

import pytest

import underlay.api

SURFACE: dict[str, list[str]] = {
    "underlay.api": [
        "context",
        "conversations",
        "errors",
        "files",
        "ids",
        "inference",
        "models",
        "omit",
        "pagination",
        "providers",
        "response_items",
        "responses",
        "routes",
        "safety",
        "telemetry",
        "tool_runtime",
        "vector_io",
        "vector_stores",
    ],
    "underlay.api.context": [
        "PROVIDER_DATA_HEADER",
        "get_provider_data",
        "provider_data_var",
        "request_id_var",
    ],
    "underlay.api.conversations": [
        "Conversation",
        "ConversationDeleted",
        "ConversationItemList",
        "ConversationsApi",
        "CreateConversationRequest",
        "CreateItemsRequest",
        "IncludeQuery",
        "ItemListQuery",
        "MAX_ITEMS_PER_CALL",
        "ROUTES",
        "UpdateConversationRequest",
    ],
    "underlay.api.errors": [
        "ConfigError",
        "ConflictError",
        "ForbiddenError",
        "InvalidRequestError",
        "NotFoundError",
        "NotImplementedByProviderError",
        "PayloadTooLargeError",
        "ProviderError",
        "RateLimitedError",
        "ServiceUnavailableError",
        "UnauthenticatedError",
        "UnderlayError",
        "UpstreamError",
        "UpstreamTimeoutError",
    ],
    "underlay.api.files": [
        "ExpiresAfter",
        "FileDeleted",
        "FileList",
        "FileListQuery",
        "FileObject",
        "FilePurpose",
        "FileUploadForm",
        "FilesApi",
        "FilesProvider",
        "MAX_EXPIRES_AFTER_SECONDS",
        "MIN_EXPIRES_AFTER_SECONDS",
        "ROUTES",
        "STORAGE_KEY_PATTERN",
        "UploadPurpose",
        "check_storage_key",
    ],
    "underlay.api.ids": [
        "new_id",
        "now",
    ],
    "underlay.api.inference": [
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
    ],
    "underlay.api.models": [
        "DeletedModel",
        "Model",
        "ModelList",
        "ModelType",
        "ModelsApi",
        "OpenAIModel",
        "ROUTES",
        "RegisterModelRequest",
    ],
    "underlay.api.omit": [
        "omit_when_none",
        "without_none",
    ],
    "underlay.api.pagination": [
        "ListPage",
        "ListQuery",
        "blank_as_absent",
        "page_of",
    ],
    "underlay.api.providers": [
        "Api",
        "Provider",
        "ProviderInfo",
        "ProviderSpec",
    ],
    "underlay.api.response_items": [
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
    ],
    "underlay.api.responses": [
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
    ],
    "underlay.api.routes": [
        "BinaryContent",
        "Handler",
        "MultipartUpload",
        "Route",
    ],
    "underlay.api.safety": [
        "DeletedShield",
        "MODERATION_CATEGORIES",
        "ModerationRequest",
        "ModerationResponse",
        "ModerationResult",
        "ROUTES",
        "RegisterShieldRequest",
        "RunShieldRequest",
        "RunShieldResponse",
        "SafetyApi",
        "SafetyProvider",
        "SafetyViolation",
        "Shield",
        "ShieldList",
        "ShieldMessage",
        "ShieldObject",
        "ViolationLevel",
        "moderation_result",
    ],
    "underlay.api.telemetry": [
        "ROUTES",
        "Span",
        "SpanList",
        "SpanTree",
        "SpanTreeQuery",
        "TelemetryApi",
        "Trace",
        "TraceList",
        "TraceListQuery",
    ],
    "underlay.api.tool_runtime": [
        "ContentPart",
        "ElicitationResponse",
        "InvokeToolRequest",
        "ListRuntimeToolsQuery",
        "ListToolsQuery",
        "McpConnection",
        "McpStdioCommand",
        "McpTransport",
        "MediaContentPart",
        "OAuthCallbackQuery",
        "OAuthCallbackResult",
        "ROUTES",
        "RegisterToolGroupRequest",
        "ResourceContentPart",
        "TextContentPart",
        "ToolCallContext",
        "ToolDef",
        "ToolGroup",
        "ToolGroupDeleted",
        "ToolGroupList",
        "ToolGroupSource",
        "ToolInvocationResult",
        "ToolList",
        "ToolRuntimeApi",
        "ToolRuntimeProvider",
        "URL",
    ],
    "underlay.api.vector_io": [
        "AttributeValue",
        "Chunk",
        "ComparisonFilter",
        "CompoundFilter",
        "Filter",
        "HybridOptions",
        "IndexInfo",
        "InsertChunksRequest",
        "QueryChunksRequest",
        "QueryChunksResponse",
        "ROUTES",
        "ScoredChunk",
        "SearchMode",
        "VectorIOApi",
        "VectorIOProvider",
    ],
    "underlay.api.vector_stores": [
        "Attributes",
        "AutoChunkingStrategy",
        "BatchFile",
        "ChunkingStrategyParam",
        "CreateFileBatchRequest",
        "CreateVectorStoreFileRequest",
        "CreateVectorStoreRequest",
        "ExpiresAfter",
        "FileContentItem",
        "FileCounts",
        "FileId",
        "FileStatus",
        "LastError",
        "MAX_ATTRIBUTES",
        "MAX_BATCH_FILES",
        "MAX_METADATA",
        "ROUTES",
        "RankingOptions",
        "SearchContent",
        "SearchRequest",
        "SearchResult",
        "SearchResultsPage",
        "StaticChunking",
        "StaticChunkingStrategy",
        "StaticChunkingStrategyObject",
        "UpdateVectorStoreFileRequest",
        "UpdateVectorStoreRequest",
        "VectorStoreDeleted",
        "VectorStoreFileBatchObject",
        "VectorStoreFileContent",
        "VectorStoreFileDeleted",
        "VectorStoreFileList",
        "VectorStoreFileListQuery",
        "VectorStoreFileObject",
        "VectorStoreList",
        "VectorStoreListQuery",
        "VectorStoreObject",
        "VectorStoresApi",
        "resolve_chunking",
    ],
    "underlay.providers.utils.openai_compat": [
        "CONTEXT_LENGTH_KEYS",
        "Credential",
        "OpenAICompatConfig",
        "OpenAICompatInferenceProvider",
        "OpenAICompatSettings",
        "REQUEST_ID_HEADER",
        "RETRYABLE_STATUSES",
        "SSEStream",
        "TimeoutSettings",
        "body_message",
        "check_http_url",
        "floats_to_base64",
        "guess_model_type",
        "normalize_finish_reasons",
        "retry_after_seconds",
        "upstream_message",
        "with_v1",
    ],
}


@pytest.mark.parametrize("module_name", sorted(SURFACE))
def test_each_module_declares_exactly_the_pinned_names(module_name: str) -> None:
    module = importlib.import_module(module_name)
    declared = getattr(module, "__all__", None)
    assert declared is not None, f"{module_name} has no __all__"
    assert len(declared) == len(set(declared)), f"{module_name}.__all__ repeats a name"
    assert sorted(declared) == SURFACE[module_name]
    for name in declared:  # every declared name exists (a submodule, for the package itself)
        assert hasattr(module, name) or importlib.util.find_spec(f"{module_name}.{name}"), f"{module_name}.{name}"


def test_every_contract_module_is_pinned() -> None:
    """A new module in ``underlay.api`` joins the surface deliberately: it needs an ``__all__`` and an entry above."""
    modules = {f"underlay.api.{info.name}" for info in pkgutil.iter_modules(underlay.api.__path__)}
    assert modules == {name for name in SURFACE if name.startswith("underlay.api.")}
    assert sorted(underlay.api.__all__) == sorted(name.rpartition(".")[2] for name in modules)


def undeclared_imports(source: str) -> list[str]:
    """What ``source`` takes from Underlay outside the declared surface (empty when it keeps to it)."""
    found: list[str] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names if alias.name.split(".")[0] == "underlay"]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "underlay":
            if node.module not in SURFACE:
                found.append(str(node.module))
                continue
            public = importlib.import_module(node.module).__all__
            found += [f"{node.module}.{alias.name}" for alias in node.names if alias.name not in public]
    return found


def test_the_suites_external_provider_keeps_to_the_surface() -> None:
    """tests/fixtures/external_provider stands for a third-party package: it imports declared names only."""
    fixture = Path(__file__).resolve().parents[1] / "fixtures" / "external_provider"
    sources = sorted(fixture.rglob("*.py"))
    assert sources
    for path in sources:
        assert undeclared_imports(path.read_text()) == [], path


def test_undeclared_imports_are_found() -> None:
    source = (
        "from underlay.api.errors import UpstreamError, UnderlayError\n"
        "from underlay.core.config import ConfigError\n"
        "from underlay.api.pagination import T\n"
        "import underlay.server.app\n"
    )
    assert undeclared_imports(source) == ["underlay.core.config", "underlay.api.pagination.T", "underlay.server.app"]
