"""Opaque tokens checked with an RFC 7662 token introspection endpoint.

An active answer is cached by the token's SHA-256 until the token's ``exp`` or ``cache_seconds``,
whichever comes first; an inactive one is not cached, so a token the issuer revives works at once.
"""

from __future__ import annotations

import time
from typing import Any

import httpx

from underlay.core.auth.base import AuthRequest, Decline, invalid_token, map_attributes, unavailable
from underlay.core.auth.cache import TokenCache
from underlay.core.auth.config import IntrospectionProvider
from underlay.core.identity import Principal


class IntrospectionAuth:
    def __init__(self, config: IntrospectionProvider, name: str) -> None:
        self.name = name
        self.config = config
        self.cache = TokenCache(config.cache_seconds)
        auth = (config.client_id, config.client_secret or "") if config.client_id else None
        self._client = httpx.AsyncClient(timeout=config.timeout_seconds, auth=auth)
        audience = config.audience
        self._audiences = {audience} if isinstance(audience, str) else set(audience or ())

    async def authenticate(self, request: AuthRequest) -> Principal:
        token, digest, cached = self.cache.lookup(request)
        if cached is not None:
            return cached
        answer = await self._introspect(token)
        if answer.get("active") is not True:
            raise Decline("the token is not active")
        exp = answer.get("exp")
        if isinstance(exp, int | float) and exp <= time.time():
            raise invalid_token(f"{self.name}: the token has expired; get a fresh one from the issuer.")
        if self._audiences:
            aud = answer.get("aud")
            given = {aud} if isinstance(aud, str) else set(aud or ())
            if not given & self._audiences:
                raise invalid_token(f"{self.name}: the token's audience is not accepted here.")
        subject = next(
            (
                answer[c]
                for c in (self.config.principal_claim, "username", "client_id")
                if isinstance(answer.get(c), str) and answer[c]
            ),
            None,
        )
        if subject is None:
            raise invalid_token(f"{self.name}: the introspection answer names no subject, username or client_id.")
        principal = Principal(id=subject, attributes=map_attributes(answer, self.config.attribute_claims))
        self.cache.put(digest, principal, float(exp) if isinstance(exp, int | float) else None)
        return principal

    async def _introspect(self, token: str) -> dict[str, Any]:
        try:
            response = await self._client.post(
                self.config.url,
                data={"token": token, "token_type_hint": "access_token"},
                headers={"accept": "application/json"},
            )
        except httpx.HTTPError as exc:
            raise unavailable(self.name, f"introspection endpoint at {self.config.url}", exc) from None
        if response.status_code in (401, 403):
            raise unavailable(
                self.name,
                f"introspection endpoint at {self.config.url}",
                problem=f"refused our client credentials (HTTP {response.status_code}); check client_id/client_secret",
            )
        try:
            response.raise_for_status()
            answer = response.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise unavailable(self.name, f"introspection endpoint at {self.config.url}", exc) from None
        if not isinstance(answer, dict):
            raise unavailable(
                self.name, f"introspection endpoint at {self.config.url}", problem="did not answer a JSON object"
            )
        return answer

    async def aclose(self) -> None:
        await self._client.aclose()
