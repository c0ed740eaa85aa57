"""``client.models``: OpenAI's Models resource plus ``register`` (Underlay's ``POST /v1/models``).

Subclassing keeps ``list``/``retrieve``/``delete`` exactly the ``openai`` SDK's (same types, paging and
errors); only registration, which OpenAI's API lacks, is added.
"""

from __future__ import annotations

from typing import Any

from openai import Omit, omit
from openai.resources.models import AsyncModels, Models
from typing_extensions import Unpack

from underlay.api.models import ModelsApi, ModelType, OpenAIModel, RegisterModelRequest
from underlay.client._wire import RequestOptions, body_of, options_of, parsed, route_path, sends

__all__ = ["AsyncUnderlayModels", "UnderlayModels"]


class UnderlayModels(Models):
    """OpenAI's models resource; ``register`` adds a model to the server's routing table."""

    @sends(RegisterModelRequest)
    def register(
        self,
        *,
        model_id: str,
        provider_id: str | None | Omit = omit,
        provider_model_id: str | None | Omit = omit,
        model_type: ModelType | str | Omit = omit,
        metadata: dict[str, Any] | Omit = omit,
        aliases: list[str] | Omit = omit,
        **options: Unpack[RequestOptions],
    ) -> OpenAIModel:
        """Register ``model_id`` with a provider; the answer carries Underlay's metadata beside OpenAI's."""
        _, path = route_path(ModelsApi.register_model)
        body = body_of(
            model_id=model_id,
            provider_id=provider_id,
            provider_model_id=provider_model_id,
            model_type=model_type,
            metadata=metadata,
            aliases=aliases,
        )
        return self._post(path, body=body, options=options_of(options), cast_to=parsed(OpenAIModel))

    def describe(self, model: str, **options: Unpack[RequestOptions]) -> OpenAIModel:
        """``retrieve`` typed with Underlay's fields (provider, model type, context length, aliases)."""
        _, path = route_path(ModelsApi.retrieve_model, model_id=model)
        return self._get(path, options=options_of(options), cast_to=parsed(OpenAIModel))


class AsyncUnderlayModels(AsyncModels):
    """The async twin of :class:`UnderlayModels`."""

    @sends(RegisterModelRequest)
    async def register(
        self,
        *,
        model_id: str,
        provider_id: str | None | Omit = omit,
        provider_model_id: str | None | Omit = omit,
        model_type: ModelType | str | Omit = omit,
        metadata: dict[str, Any] | Omit = omit,
        aliases: list[str] | Omit = omit,
        **options: Unpack[RequestOptions],
    ) -> OpenAIModel:
        """Register ``model_id`` with a provider; the answer carries Underlay's metadata beside OpenAI's."""
        _, path = route_path(ModelsApi.register_model)
        body = body_of(
            model_id=model_id,
            provider_id=provider_id,
            provider_model_id=provider_model_id,
            model_type=model_type,
            metadata=metadata,
            aliases=aliases,
        )
        return await self._post(path, body=body, options=options_of(options), cast_to=parsed(OpenAIModel))

    async def describe(self, model: str, **options: Unpack[RequestOptions]) -> OpenAIModel:
        """``retrieve`` typed with Underlay's fields (provider, model type, context length, aliases)."""
        _, path = route_path(ModelsApi.retrieve_model, model_id=model)
        return await self._get(path, options=options_of(options), cast_to=parsed(OpenAIModel))
