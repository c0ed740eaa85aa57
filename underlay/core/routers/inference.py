"""The inference router: resolve the model, call its provider, restore the client's model id, store.

Thin by design: lookup, type check, call, and storing completions when asked. The provider boundary
(:mod:`underlay.core.boundary`) maps a provider's own exceptions to typed errors naming it, mid-stream
included, so none reaches the client as a traceback, and charges the usage it reports to the quota.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from underlay.api.agents import AGENT_MODEL_PREFIX
from underlay.api.errors import InvalidRequestError
from underlay.api.inference import (
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionListQuery,
    ChatCompletionRequest,
    Choice,
    ChoiceLogprobs,
    Completion,
    CompletionRequest,
    DeletedChatCompletion,
    EmbeddingsRequest,
    EmbeddingsResponse,
    FunctionCall,
    InferenceApi,
    InferenceProvider,
    MessageListQuery,
    ResponseMessage,
    StoredChatCompletion,
    ToolCall,
    UpdateChatCompletionRequest,
    Usage,
)
from underlay.api.models import Model, ModelType
from underlay.api.omit import without_none
from underlay.core.access import require_create
from underlay.core.routing.models import ModelsRoutingTable
from underlay.core.stores.chat_completions import ChatCompletionStore

if TYPE_CHECKING:
    from underlay.core.agent_chat import AgentChat
    from underlay.core.routers.safety import SafetyRouter


class InferenceRouter(InferenceApi):
    def __init__(
        self,
        models: ModelsRoutingTable,
        providers: dict[str, InferenceProvider],
        completions_store: ChatCompletionStore,
        store_all: bool = False,
        safety: SafetyRouter | None = None,
        agent_chat: AgentChat | None = None,
    ) -> None:
        self.models = models
        self.providers = providers
        self.completions_store = completions_store
        self.store_all = store_all
        self.safety = safety
        """The safety router when the safety API is on: chat completions' guardrails run through it."""
        self.agent_chat = agent_chat
        """When the agents API is on: ``model="agent/<name>[@version]"`` runs that agent (on Responses)."""

    async def _resolve(self, model_id: str, expected: ModelType) -> tuple[Model, InferenceProvider]:
        model = await self.models.get(model_id)
        if model.model_type != expected:
            verb = "embeddings" if expected == ModelType.embedding else "chat and text completions"
            raise InvalidRequestError(
                f"Model '{model_id}' is a {model.model_type.value} model and cannot serve {verb}; "
                f"pick a {expected.value} model from GET /v1/models.",
                param="model",
            )
        return model, self.providers[model.provider_id]

    # -- chat completions -------------------------------------------------------------------------

    async def openai_chat_completion(
        self, params: ChatCompletionRequest
    ) -> ChatCompletion | AsyncIterator[ChatCompletionChunk]:
        from underlay.core.guardrails import Guard

        if self.agent_chat is not None and params.model.startswith(AGENT_MODEL_PREFIX):
            return await self.agent_chat(params)
        guard, params = Guard.for_request(self.safety, params)
        model, provider = await self._resolve(params.model, ModelType.llm)
        model.check_output_tokens("max_tokens", params.max_tokens)
        model.check_output_tokens("max_completion_tokens", params.max_completion_tokens)
        client_model = params.model
        if guard is not None:
            violation = await guard.check_input(params)
            if violation is not None:  # the model never sees a refused input
                if params.stream:
                    return guard.refused_stream(client_model, violation)
                return guard.refused_completion(client_model, violation)
        upstream = params.model_copy(update={"model": model.provider_resource_id})
        should_store = bool(params.store) or self.store_all
        inputs: list[dict[str, Any]] = []
        if should_store:
            require_create("chat_completion", "")  # refused before the model runs, not when storing
            inputs = [m.model_dump(mode="json", exclude_none=True) for m in params.messages]
        result = await provider.openai_chat_completion(upstream)  # charged to the quota at the boundary
        if isinstance(result, ChatCompletion):
            result.model = client_model
            if guard is not None:
                result = await guard.guard_completion(params, result)
            if should_store:
                await self.completions_store.store(result, inputs, params.metadata)
            return result
        if guard is not None:  # inside the relay, so a stored completion never holds the unsafe text
            result = guard.guard_stream(params, result)
        return self._relay_chunks(result, client_model, should_store, inputs, params.metadata)

    async def _relay_chunks(
        self,
        chunks: AsyncIterator[ChatCompletionChunk],
        client_model: str,
        should_store: bool,
        inputs: list[dict[str, Any]],
        metadata: dict[str, str] | None,
    ) -> AsyncIterator[ChatCompletionChunk]:
        collector = _ChunkCollector() if should_store else None
        try:
            async for chunk in chunks:
                chunk.model = client_model
                if collector is not None:
                    collector.add(chunk)
                yield chunk
        finally:
            aclose = getattr(chunks, "aclose", None)
            if aclose is not None:
                await aclose()
        if collector is not None and collector.id:
            await self.completions_store.store(collector.completion(client_model), inputs, metadata)

    async def list_chat_completions(self, query: ChatCompletionListQuery) -> dict[str, Any]:
        page = await self.completions_store.list(
            after=query.after,
            limit=query.limit,
            order=query.order,
            model=query.model,
            metadata=query.metadata,
        )
        return without_none(page, "first_id", "last_id")

    async def get_chat_completion(self, completion_id: str) -> StoredChatCompletion:
        return await self.completions_store.get(completion_id)

    async def update_chat_completion(
        self, completion_id: str, params: UpdateChatCompletionRequest
    ) -> StoredChatCompletion:
        return await self.completions_store.update_metadata(completion_id, params.metadata)

    async def list_chat_completion_messages(self, completion_id: str, query: MessageListQuery) -> dict[str, Any]:
        page = await self.completions_store.messages(
            completion_id, after=query.after, limit=query.limit, order=query.order
        )
        return without_none(page, "first_id", "last_id")

    async def delete_chat_completion(self, completion_id: str) -> DeletedChatCompletion:
        await self.completions_store.delete(completion_id)
        return DeletedChatCompletion(id=completion_id)

    # -- completions and embeddings ---------------------------------------------------------------

    async def openai_completion(self, params: CompletionRequest) -> Completion | AsyncIterator[Completion]:
        model, provider = await self._resolve(params.model, ModelType.llm)
        model.check_output_tokens("max_tokens", params.max_tokens)
        client_model = params.model
        upstream = params.model_copy(update={"model": model.provider_resource_id})
        result = await provider.openai_completion(upstream)
        if isinstance(result, Completion):
            result.model = client_model
            return result
        return self._relay_completions(result, client_model)

    async def _relay_completions(
        self, chunks: AsyncIterator[Completion], client_model: str
    ) -> AsyncIterator[Completion]:
        try:
            async for chunk in chunks:
                chunk.model = client_model
                yield chunk
        finally:
            aclose = getattr(chunks, "aclose", None)
            if aclose is not None:
                await aclose()

    async def openai_embeddings(self, params: EmbeddingsRequest) -> EmbeddingsResponse:
        model, provider = await self._resolve(params.model, ModelType.embedding)
        result = await provider.openai_embeddings(params.model_copy(update={"model": model.provider_resource_id}))
        result.model = params.model
        return result


class _ChunkCollector:
    """Rebuilds the final completion from streamed chunks so a streamed call can be stored too."""

    def __init__(self) -> None:
        self.id = ""
        self.created = 0
        self.usage: Usage | None = None
        self.text: dict[int, list[str]] = {}
        self.finish: dict[int, Any] = {}
        self.calls: dict[int, dict[int, dict[str, str]]] = {}
        self.logprobs: dict[int, list[Any]] = {}

    def add(self, chunk: ChatCompletionChunk) -> None:
        self.id = self.id or chunk.id
        self.created = self.created or chunk.created
        if chunk.usage is not None:
            self.usage = chunk.usage
        for choice in chunk.choices:
            i = choice.index
            self.text.setdefault(i, [])
            if choice.delta.content:
                self.text[i].append(choice.delta.content)
            for call in choice.delta.tool_calls or []:
                slot = self.calls.setdefault(i, {}).setdefault(call.index, {"id": "", "name": "", "arguments": ""})
                if call.id:
                    slot["id"] = call.id
                function = call.function or {}
                slot["name"] += function.get("name") or ""
                slot["arguments"] += function.get("arguments") or ""
            if choice.logprobs and choice.logprobs.content:
                self.logprobs.setdefault(i, []).extend(choice.logprobs.content)
            if choice.finish_reason:
                self.finish[i] = choice.finish_reason

    def completion(self, model: str) -> ChatCompletion:
        choices = []
        for i in sorted(self.text):
            calls = [
                ToolCall(id=c["id"], function=FunctionCall(name=c["name"], arguments=c["arguments"]))
                for _, c in sorted(self.calls.get(i, {}).items())
            ]
            choices.append(
                Choice(
                    index=i,
                    message=ResponseMessage(content="".join(self.text[i]) or None, tool_calls=calls or None),
                    finish_reason=self.finish.get(i, "stop"),
                    logprobs=ChoiceLogprobs(content=self.logprobs[i]) if i in self.logprobs else None,
                )
            )
        return ChatCompletion(id=self.id, created=self.created, model=model, choices=choices, usage=self.usage)
