"""The models routing table: model id (or alias) → provider, persisted in the KV store.

Models come from three places: the run config, discovery from each inference provider, and the
``POST /v1/models`` API. Discovery runs in the background at start-up so a slow upstream never delays
the server; a lookup that misses waits for discovery to finish before answering 404.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from underlay.api.errors import InvalidRequestError, NotFoundError
from underlay.api.ids import now
from underlay.api.models import Model, ModelType
from underlay.core.access import Resource, can, require, require_create

log = logging.getLogger("underlay.models")
_PREFIX = "models:"


class ModelsRoutingTable:
    def __init__(self, kvstore: Any, providers: dict[str, Any], discovery_timeout: float = 5.0) -> None:
        self.kvstore = kvstore
        self.providers = providers
        self.discovery_timeout = discovery_timeout
        self._cache: dict[str, Model] = {}
        self._discovery: asyncio.Task[None] | None = None

    # -- lifecycle --------------------------------------------------------------------------------

    async def initialize(self, configured: list[Model]) -> None:
        await self._reload()
        for model in configured:
            await self._put(model)
        self._discovery = asyncio.create_task(self._discover_all(), name="model-discovery")

    async def shutdown(self) -> None:
        if self._discovery and not self._discovery.done():
            self._discovery.cancel()

    async def wait_for_discovery(self) -> None:
        if self._discovery is not None:
            await asyncio.shield(self._discovery)

    async def _reload(self) -> None:
        values = await self.kvstore.values_in_range(_PREFIX, _PREFIX + "\xff")
        self._cache = {}
        for value in values:
            model = Model.model_validate_json(value)
            self._cache[model.identifier] = model

    async def _put(self, model: Model) -> None:
        if not model.created:
            model.created = now()
        await self.kvstore.set(_PREFIX + model.identifier, model.model_dump_json())
        self._cache[model.identifier] = model

    async def _remove(self, identifier: str) -> None:
        await self.kvstore.delete(_PREFIX + identifier)
        self._cache.pop(identifier, None)

    async def _discover_all(self) -> None:
        await asyncio.gather(*(self._discover(pid, p) for pid, p in self.providers.items()))

    async def _discover(self, provider_id: str, provider: Any) -> None:
        try:
            found = await asyncio.wait_for(provider.list_provider_models(), self.discovery_timeout)
        except Exception as exc:  # an unreachable upstream keeps its previously known models
            log.warning("model discovery failed for provider %s: %s", provider_id, exc)
            return
        seen: set[str] = set()
        taken_aliases = {a for m in self._cache.values() if m.provider_id != provider_id for a in m.aliases}
        taken_aliases |= {m.identifier for m in self._cache.values()}
        for item in found:
            identifier = f"{provider_id}/{item.provider_resource_id}"
            seen.add(identifier)
            existing = self._cache.get(identifier)
            if existing is not None and existing.source != "discovered":
                continue
            alias = item.provider_resource_id
            aliases = [alias] if alias not in taken_aliases or (existing and alias in existing.aliases) else []
            if self._configured_for(provider_id, item.provider_resource_id):
                aliases = []
            await self._put(
                Model(
                    identifier=identifier,
                    provider_id=provider_id,
                    provider_resource_id=item.provider_resource_id,
                    model_type=ModelType(item.model_type),
                    metadata=item.metadata,
                    aliases=aliases,
                    source="discovered",
                    created=existing.created if existing else 0,
                )
            )
        for model in list(self._cache.values()):
            if model.provider_id == provider_id and model.source == "discovered" and model.identifier not in seen:
                await self._remove(model.identifier)

    def _configured_for(self, provider_id: str, resource: str) -> bool:
        return any(
            m.provider_id == provider_id and m.provider_resource_id == resource and m.source != "discovered"
            for m in self._cache.values()
        )

    # -- queries ----------------------------------------------------------------------------------

    def _lookup(self, identifier: str) -> Model | None:
        model = self._cache.get(identifier)
        if model is not None:
            return model
        for candidate in self._cache.values():
            if identifier in candidate.aliases:
                return candidate
        return None

    async def get(self, identifier: str, *, param: str | None = "model", action: str = "read") -> Model:
        """The model (by id or alias) if the caller may ``action`` it; use counts as ``read``."""
        model = self._lookup(identifier)
        if model is None and self._discovery is not None and not self._discovery.done():
            await self.wait_for_discovery()
            model = self._lookup(identifier)
        if model is None:
            # Another process may have registered it since we loaded.
            value = await self.kvstore.get(_PREFIX + identifier)
            if value is not None:
                model = Model.model_validate_json(value)
                self._cache[model.identifier] = model
        missing = NotFoundError("Model", identifier, hint="GET /v1/models lists the models available.", param=param)
        if model is None or model.provider_id not in self.providers:
            raise missing
        require(action, _resource(model), missing)  # hidden by the access policy → the same 404
        return model

    async def list(self) -> list[Model]:
        if self._discovery is not None and not self._discovery.done():
            await self.wait_for_discovery()
        await self._reload()
        visible = (m for m in self._cache.values() if m.provider_id in self.providers and can("read", _resource(m)))
        return sorted(visible, key=lambda m: m.identifier)

    # -- mutations --------------------------------------------------------------------------------

    async def register(self, model: Model) -> Model:
        require_create("model", model.identifier, owner=None)
        if model.provider_id not in self.providers:
            raise InvalidRequestError(
                f"No provider '{model.provider_id}' is configured; use one of: {', '.join(sorted(self.providers))}.",
                param="provider_id",
            )
        for name in [model.identifier, *model.aliases]:
            clash = self._lookup(name)
            if clash is not None and clash.identifier != model.identifier:
                raise InvalidRequestError(
                    f"'{name}' already names model '{clash.identifier}'; choose another id.", param="model_id"
                )
        await self._put(model)
        return model

    async def unregister(self, identifier: str) -> Model:
        model = await self.get(identifier, param=None, action="delete")
        await self._remove(model.identifier)
        return model


def _resource(model: Model) -> Resource:
    """Models have no owner: configured, discovered and API-registered ones are shared resources."""
    return Resource("model", model.identifier)
