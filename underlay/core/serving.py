"""Serving a model file produced at run time (a fine-tuned GGUF) with no restart.

Why here and not in the fine-tuning router: putting a new model behind ``/v1/models`` touches two
things that belong to inference — a provider that can load a file it was not configured with, and the
models routing table — and any API that makes models (fine-tuning today, distillation or merges
later) needs the same two steps in the same order: the provider first (so the name answers the moment
it is listed), the routing table second (so a name is never listed that nothing serves).

A provider opts in by having ``add_model(name, path)`` and ``remove_model(name)`` (the embedded
llama.cpp provider does).

A model made by an upstream service (a job ``remote::openai`` ran at OpenAI) needs only the second
step: the inference provider that talks to that service already serves it, so :meth:`ModelServing.list_upstream`
lists it under that provider.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

from underlay.api.errors import InvalidRequestError, ServiceUnavailableError, UnderlayError
from underlay.api.models import Model, ModelType
from underlay.core.routing.models import ModelsRoutingTable


def can_serve_files(provider: Any) -> bool:
    return inspect.iscoroutinefunction(getattr(provider, "add_model", None))


class ModelServing:
    """Adds model files to the first inference provider able to load them, and lists them as models."""

    def __init__(
        self, providers: Mapping[str, Any], models: ModelsRoutingTable, provider_id: str | None = None
    ) -> None:
        self.providers = providers
        self.models = models
        self.provider_id = provider_id

    def _provider(self) -> tuple[str, Any]:
        for provider_id, provider in self.providers.items():
            if (self.provider_id is None or provider_id == self.provider_id) and can_serve_files(provider):
                return provider_id, provider
        raise ServiceUnavailableError(
            "inference",
            "no inference provider here can load a model file at run time "
            "(add inline::llama-cpp to providers.inference)",
            code="serving_unavailable",
        )

    async def serve(self, name: str, path: str, metadata: dict[str, Any]) -> Model:
        """Load-check and serve ``path`` as ``name``; nothing is listed unless the provider took it."""
        provider_id, provider = self._provider()
        await provider.add_model(name, path)
        model = Model(
            identifier=name,
            provider_id=provider_id,
            provider_resource_id=name,
            model_type=ModelType.llm,
            metadata=dict(metadata),  # not the file path: server paths are not for clients
            source="api",
        )
        try:
            return await self.models.register(model)
        except UnderlayError:
            await provider.remove_model(name)
            raise

    async def unserve(self, name: str) -> None:
        provider_id, provider = self._provider()
        try:
            await self.models.unregister(name)
        except UnderlayError:
            pass
        await provider.remove_model(name)

    async def list_upstream(
        self, provider_id: str, name: str, metadata: dict[str, Any], *, alias: bool = True
    ) -> Model:
        """List ``name``, a model the inference provider ``provider_id`` serves upstream, as ``provider_id/name``.

        The bare ``name`` (what the upstream calls it) becomes an alias unless another model has it, so a
        client can use the name the upstream job reported as is.
        """
        if provider_id not in self.providers:
            raise ServiceUnavailableError(
                "inference",
                f"no inference provider '{provider_id}' here to serve {name} (add it to providers.inference)",
                code="serving_unavailable",
            )
        identifier = f"{provider_id}/{name}"
        model = Model(
            identifier=identifier,
            provider_id=provider_id,
            provider_resource_id=name,
            model_type=ModelType.llm,
            aliases=[name] if alias else [],
            metadata=dict(metadata),
            source="api",
        )
        try:
            return await self.models.register(model)
        except InvalidRequestError:
            if not model.aliases:
                raise
        # Another model already answers to the bare name: listed under its full id only.
        return await self.models.register(model.model_copy(update={"aliases": []}))
