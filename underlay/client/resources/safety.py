"""``client.safety.run_shield`` and ``client.shields``: Underlay's Safety API beside OpenAI's.

``client.safety`` stays the ``openai`` SDK's own resource (its sub-resources keep working) and gains
``run_shield``; ``client.moderations`` is OpenAI's, unchanged. Shields are a resource of their own.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from openai import Omit, omit
from openai._base_client import AsyncPaginator
from openai._resource import AsyncAPIResource, SyncAPIResource
from openai.resources.safety import AsyncSafety, Safety
from typing_extensions import Unpack

from underlay.api.safety import (
    DeletedShield,
    RegisterShieldRequest,
    RunShieldRequest,
    RunShieldResponse,
    SafetyApi,
    ShieldMessage,
    ShieldObject,
)
from underlay.client._wire import (
    AsyncPage,
    RequestOptions,
    SyncPage,
    body_of,
    options_of,
    parsed,
    route_path,
    sends,
)

__all__ = ["AsyncShields", "AsyncUnderlaySafety", "Shields", "UnderlaySafety"]

Messages = Iterable[ShieldMessage | dict[str, Any]]


class UnderlaySafety(Safety):
    """OpenAI's safety resource plus ``run_shield``."""

    @sends(RunShieldRequest)
    def run_shield(
        self,
        *,
        shield_id: str,
        messages: Messages,
        params: dict[str, Any] | Omit = omit,
        **options: Unpack[RequestOptions],
    ) -> RunShieldResponse:
        """Run one shield over ``messages``; ``violation`` is ``None`` when the shield lets them through."""
        _, path = route_path(SafetyApi.run_shield)
        body = body_of(shield_id=shield_id, messages=list(messages), params=params)
        return self._post(path, body=body, options=options_of(options), cast_to=parsed(RunShieldResponse))


class AsyncUnderlaySafety(AsyncSafety):
    """The async twin of :class:`UnderlaySafety`."""

    @sends(RunShieldRequest)
    async def run_shield(
        self,
        *,
        shield_id: str,
        messages: Messages,
        params: dict[str, Any] | Omit = omit,
        **options: Unpack[RequestOptions],
    ) -> RunShieldResponse:
        """Run one shield over ``messages``; ``violation`` is ``None`` when the shield lets them through."""
        _, path = route_path(SafetyApi.run_shield)
        body = body_of(shield_id=shield_id, messages=list(messages), params=params)
        return await self._post(path, body=body, options=options_of(options), cast_to=parsed(RunShieldResponse))


class Shields(SyncAPIResource):
    """Registered shields: list, retrieve, register, delete."""

    def list(self, **options: Unpack[RequestOptions]) -> SyncPage[ShieldObject]:
        _, path = route_path(SafetyApi.list_shields)
        return self._get_api_list(path, page=SyncPage[ShieldObject], model=ShieldObject, options=options_of(options))

    def retrieve(self, shield_id: str, **options: Unpack[RequestOptions]) -> ShieldObject:
        _, path = route_path(SafetyApi.retrieve_shield, shield_id=shield_id)
        return self._get(path, options=options_of(options), cast_to=parsed(ShieldObject))

    @sends(RegisterShieldRequest)
    def register(
        self,
        *,
        shield_id: str,
        provider_id: str | None | Omit = omit,
        provider_shield_id: str | None | Omit = omit,
        params: dict[str, Any] | Omit = omit,
        **options: Unpack[RequestOptions],
    ) -> ShieldObject:
        _, path = route_path(SafetyApi.register_shield)
        body = body_of(
            shield_id=shield_id, provider_id=provider_id, provider_shield_id=provider_shield_id, params=params
        )
        return self._post(path, body=body, options=options_of(options), cast_to=parsed(ShieldObject))

    def delete(self, shield_id: str, **options: Unpack[RequestOptions]) -> DeletedShield:
        _, path = route_path(SafetyApi.delete_shield, shield_id=shield_id)
        return self._delete(path, options=options_of(options), cast_to=parsed(DeletedShield))


class AsyncShields(AsyncAPIResource):
    """The async twin of :class:`Shields`."""

    def list(self, **options: Unpack[RequestOptions]) -> AsyncPaginator[ShieldObject, AsyncPage[ShieldObject]]:
        """An ``openai`` ``AsyncPaginator``: ``await`` it for the page, or ``async for`` the shields."""
        _, path = route_path(SafetyApi.list_shields)
        return self._get_api_list(path, page=AsyncPage[ShieldObject], model=ShieldObject, options=options_of(options))

    async def retrieve(self, shield_id: str, **options: Unpack[RequestOptions]) -> ShieldObject:
        _, path = route_path(SafetyApi.retrieve_shield, shield_id=shield_id)
        return await self._get(path, options=options_of(options), cast_to=parsed(ShieldObject))

    @sends(RegisterShieldRequest)
    async def register(
        self,
        *,
        shield_id: str,
        provider_id: str | None | Omit = omit,
        provider_shield_id: str | None | Omit = omit,
        params: dict[str, Any] | Omit = omit,
        **options: Unpack[RequestOptions],
    ) -> ShieldObject:
        _, path = route_path(SafetyApi.register_shield)
        body = body_of(
            shield_id=shield_id, provider_id=provider_id, provider_shield_id=provider_shield_id, params=params
        )
        return await self._post(path, body=body, options=options_of(options), cast_to=parsed(ShieldObject))

    async def delete(self, shield_id: str, **options: Unpack[RequestOptions]) -> DeletedShield:
        _, path = route_path(SafetyApi.delete_shield, shield_id=shield_id)
        return await self._delete(path, options=options_of(options), cast_to=parsed(DeletedShield))
