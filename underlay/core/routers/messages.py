"""The messages router: Anthropic's Messages API over every model the inference API serves.

Thin like the others: resolve the model, then one of two roads.

- The model's provider speaks Messages natively (:class:`~underlay.api.messages.MessagesProvider`,
  e.g. ``remote::anthropic``) and no guardrail applies: the request goes to it as sent, only the model
  name rewritten, and its answer comes back with the client's model id. No double translation.
- Otherwise the request is translated (:mod:`underlay.core.messages_chat`) and sent through the
  inference router's chat completions, so model access, guardrails, storage rules, provider spans and
  quota charges are exactly those of ``/v1/chat/completions``.

``count_tokens`` asks the native provider, or runs the translated prompt with a one-token limit and
reads ``prompt_tokens``: exact for every model (the template and tools are counted as the model sees
them), at the price of one prompt evaluation.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from underlay.api.agents import AGENT_MODEL_PREFIX
from underlay.api.errors import InvalidRequestError, UpstreamError
from underlay.api.inference import ChatCompletion
from underlay.api.messages import (
    CountTokensRequest,
    Message,
    MessageDeltaEvent,
    MessagesApi,
    MessagesProvider,
    MessagesRequest,
    MessageStartEvent,
    MessageStreamEvent,
    TokenCount,
)
from underlay.api.models import ModelType
from underlay.core.messages_chat import chat_request, events_from_chunks, message_from_chat
from underlay.core.quotas.usage import ledger_var, usage_tokens
from underlay.core.routers.inference import InferenceRouter


class MessagesRouter(MessagesApi):
    def __init__(self, inference: InferenceRouter) -> None:
        self.inference = inference

    async def create_message(self, params: MessagesRequest) -> Message | AsyncIterator[MessageStreamEvent]:
        native = await self._native(params)
        if native is not None:
            provider, upstream_model = native
            result = await provider.create_message(params.model_copy(update={"model": upstream_model}))
            if isinstance(result, Message):
                result.model = params.model
                _charge(result.usage)
                return result
            return _relay_native(result, params.model)
        chat = chat_request(params)
        result_chat = await self.inference.openai_chat_completion(chat)
        if isinstance(result_chat, ChatCompletion):
            return message_from_chat(result_chat, params.model, params)
        return events_from_chunks(result_chat, params.model, params)

    async def count_message_tokens(self, params: CountTokensRequest) -> TokenCount:
        native = await self._native(params)
        if native is not None:
            provider, upstream_model = native
            return await provider.count_message_tokens(params.model_copy(update={"model": upstream_model}))
        reply = await self.inference.openai_chat_completion(chat_request(params, count_only=True))
        if not isinstance(reply, ChatCompletion) or reply.usage is None:
            raise UpstreamError(params.model, "the model reported no token usage, so its input cannot be counted")
        return TokenCount(input_tokens=reply.usage.prompt_tokens)

    async def _native(self, params: CountTokensRequest) -> tuple[MessagesProvider, str] | None:
        """The native provider and its model name, when this request may go to it untranslated."""
        if self.inference.agent_chat is not None and params.model.startswith(AGENT_MODEL_PREFIX):
            return None
        if "guardrails" in (params.model_extra or {}) or self._default_guardrails():
            return None  # shields run on the chat road
        model = await self.inference.models.get(params.model)
        if model.model_type != ModelType.llm:
            raise InvalidRequestError(
                f"Model '{params.model}' is a {model.model_type.value} model and cannot serve messages; "
                "pick an llm model from GET /v1/models.",
                param="model",
            )
        provider: Any = self.inference.providers[model.provider_id]
        if not callable(getattr(provider, "create_message", None)):
            return None
        if isinstance(params, MessagesRequest):
            model.check_output_tokens("max_tokens", params.max_tokens)
        return provider, model.provider_resource_id

    def _default_guardrails(self) -> bool:
        safety = self.inference.safety
        return safety is not None and bool(safety.settings.default_guardrails)


def _charge(usage: Any) -> None:
    """Add a native answer's tokens to this request's quota ledger (chat answers are charged at the boundary)."""
    ledger = ledger_var.get()
    if ledger is not None:
        ledger.tokens += usage_tokens(usage)


async def _relay_native(events: AsyncIterator[MessageStreamEvent], model: str) -> AsyncIterator[MessageStreamEvent]:
    """A native stream with the client's model id, its usage charged as it goes by."""
    try:
        async for event in events:
            if isinstance(event, MessageStartEvent):
                event.message.model = model
                _charge(event.message.usage)
            elif isinstance(event, MessageDeltaEvent):
                _charge(event.usage.model_copy(update={"input_tokens": None}))  # input counted at the start
            yield event
    finally:
        aclose = getattr(events, "aclose", None)
        if aclose is not None:
            await aclose()
