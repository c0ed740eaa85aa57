"""The shields routing table: shield id → safety provider, persisted in the KV store.

Shields come from the run config (``shields:``) and from ``POST /v1/shields``; like models they live
in the KV store so every worker and replica sees the same set.
"""

from __future__ import annotations

from typing import Any

from underlay.api.errors import InvalidRequestError, NotFoundError
from underlay.api.ids import now
from underlay.api.safety import Shield
from underlay.core.access import Resource, can, require, require_create

_PREFIX = "shields:"


class ShieldsRoutingTable:
    def __init__(self, kvstore: Any, providers: dict[str, Any]) -> None:
        self.kvstore = kvstore
        self.providers = providers
        self._cache: dict[str, Shield] = {}

    async def initialize(self, configured: list[Shield]) -> None:
        await self._reload()
        for shield in configured:
            if shield.provider_id in self.providers:
                await self._put(shield)

    async def _reload(self) -> None:
        values = await self.kvstore.values_in_range(_PREFIX, _PREFIX + "\xff")
        self._cache = {}
        for value in values:
            shield = Shield.model_validate_json(value)
            self._cache[shield.identifier] = shield

    async def _put(self, shield: Shield) -> None:
        if not shield.created:
            shield.created = now()
        await self.kvstore.set(_PREFIX + shield.identifier, shield.model_dump_json())
        self._cache[shield.identifier] = shield

    async def get(self, identifier: str, *, param: str | None = "shield_id", action: str = "read") -> Shield:
        """The shield if the caller may ``action`` it (running it counts as ``read``)."""
        shield = self._cache.get(identifier)
        if shield is None:  # another worker may have registered it since we loaded
            value = await self.kvstore.get(_PREFIX + identifier)
            if value is not None:
                shield = Shield.model_validate_json(value)
                self._cache[shield.identifier] = shield
        missing = NotFoundError("Shield", identifier, hint="GET /v1/shields lists the shields available.", param=param)
        if shield is None or shield.provider_id not in self.providers:
            raise missing
        require(action, Resource("shield", shield.identifier), missing)
        return shield

    async def list(self) -> list[Shield]:
        await self._reload()
        visible = (
            s
            for s in self._cache.values()
            if s.provider_id in self.providers and can("read", Resource("shield", s.identifier))
        )
        return sorted(visible, key=lambda s: s.identifier)

    async def register(self, shield: Shield) -> Shield:
        require_create("shield", shield.identifier, owner=None)
        if shield.provider_id not in self.providers:
            raise InvalidRequestError(
                f"No safety provider '{shield.provider_id}' is configured; use one of: "
                f"{', '.join(sorted(self.providers))}.",
                param="provider_id",
            )
        await self._put(shield)
        return shield

    async def unregister(self, identifier: str) -> Shield:
        shield = await self.get(identifier, param=None, action="delete")
        await self.kvstore.delete(_PREFIX + shield.identifier)
        self._cache.pop(shield.identifier, None)
        return shield
