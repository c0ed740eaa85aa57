"""A site's own authentication service: POST {"token": ...}, answer a principal or 401.

The simplest way to plug in an identity system we do not speak natively. Accepted tokens are cached
by SHA-256 for ``cache_seconds``; the service's own headers (e.g. its key) go with every call.
"""

from __future__ import annotations

from typing import Any

import httpx

from underlay.core.auth.base import AuthRequest, Decline, as_list, unavailable
from underlay.core.auth.cache import TokenCache
from underlay.core.auth.config import WebhookProvider
from underlay.core.identity import Principal


class WebhookAuth:
    def __init__(self, config: WebhookProvider, name: str) -> None:
        self.name = name
        self.config = config
        self.cache = TokenCache(config.cache_seconds)
        self._client = httpx.AsyncClient(timeout=config.timeout_seconds, headers=config.headers)

    async def authenticate(self, request: AuthRequest) -> Principal:
        token, digest, cached = self.cache.lookup(request)
        if cached is not None:
            return cached
        where = f"webhook at {self.config.url}"
        try:
            response = await self._client.post(self.config.url, json={"token": token})
        except httpx.HTTPError as exc:
            raise unavailable(self.name, where, exc) from None
        if response.status_code in (401, 403):
            raise Decline("the webhook rejected the token")
        try:
            response.raise_for_status()
            answer: Any = response.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise unavailable(self.name, where, exc) from None
        principal_id = answer.get("principal") if isinstance(answer, dict) else None
        if not isinstance(principal_id, str) or not principal_id:
            raise unavailable(self.name, where, problem='answered without a "principal" string')
        raw = answer.get("attributes") or {}
        attributes = {str(k): v for k, v in ((k, as_list(v)) for k, v in raw.items()) if v is not None}
        principal = Principal(id=principal_id, attributes=attributes)
        self.cache.put(digest, principal)
        return principal

    async def aclose(self) -> None:
        await self._client.aclose()
