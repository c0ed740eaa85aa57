"""The provider chain: turn a request's credentials into a principal, or a 401 that says why."""

from __future__ import annotations

import logging
from collections import Counter

from underlay.api.errors import UnauthenticatedError
from underlay.core.auth.base import AuthProvider, AuthRequest, Decline
from underlay.core.auth.config import (
    ApiKeysProvider,
    AuthConfig,
    IntrospectionProvider,
    JwtProvider,
    KubernetesProvider,
    TrustedHeadersProvider,
    WebhookProvider,
)
from underlay.core.identity import Principal

log = logging.getLogger("underlay.auth")


def _build(entry: object, name: str) -> AuthProvider:
    """The provider object for one config entry, its module imported only when an entry names it.

    Why lazily: the JWT provider brings PyJWT and cryptography, the HTTP-backed ones httpx; a server
    without ``auth`` (or with API keys only) should not pay for importing them on every start.
    """
    if isinstance(entry, ApiKeysProvider):
        from underlay.core.auth.api_keys import ApiKeysAuth

        return ApiKeysAuth(entry, name)
    if isinstance(entry, JwtProvider):
        from underlay.core.auth.jwt_bearer import JwtAuth

        return JwtAuth(entry, name)
    if isinstance(entry, IntrospectionProvider):
        from underlay.core.auth.introspection import IntrospectionAuth

        return IntrospectionAuth(entry, name)
    if isinstance(entry, WebhookProvider):
        from underlay.core.auth.webhook import WebhookAuth

        return WebhookAuth(entry, name)
    if isinstance(entry, TrustedHeadersProvider):
        from underlay.core.auth.trusted_headers import TrustedHeadersAuth

        return TrustedHeadersAuth(entry, name)
    if isinstance(entry, KubernetesProvider):
        from underlay.core.auth.kubernetes import KubernetesAuth

        return KubernetesAuth(entry, name)
    raise TypeError(f"no authentication provider for {type(entry).__name__}")


def build_providers(config: AuthConfig) -> list[AuthProvider]:
    """One provider object per config entry; unnamed ones are called by type (``jwt``, ``jwt#2`` if repeated)."""
    counts = Counter(p.type for p in config.providers)
    seen: Counter[str] = Counter()
    providers: list[AuthProvider] = []
    for entry in config.providers:
        seen[entry.type] += 1
        name = entry.name or (entry.type if counts[entry.type] == 1 else f"{entry.type}#{seen[entry.type]}")
        providers.append(_build(entry, name))
    return providers


class Authenticator:
    def __init__(self, config: AuthConfig) -> None:
        self.config = config
        self.providers = build_providers(config)

    async def authenticate(self, request: AuthRequest) -> Principal:
        """The first provider that accepts (or rejects) the credential decides; declines fall through."""
        reasons: list[str] = []
        for provider in self.providers:
            try:
                return await provider.authenticate(request)
            except Decline as decline:
                reasons.append(f"{provider.name}: {decline}")
        if request.bearer is None:
            via_gateway = any(p.type == "trusted_headers" for p in self.config.providers)
            raise UnauthenticatedError(
                "Missing credentials: send 'Authorization: Bearer <API key or token>'"
                + (" or come through the gateway." if via_gateway else "."),
                code="missing_credentials",
            )
        relevant = [r for r in reasons if ": no " not in r] or reasons
        raise UnauthenticatedError(
            f"The bearer credential was not accepted ({'; '.join(relevant)}).", code="invalid_token"
        )

    async def warm(self) -> None:
        """Fetch ahead what the first request would otherwise wait for (JWKS); failures only log."""
        for provider in self.providers:
            warm = getattr(provider, "warm", None)
            if warm is None:
                continue
            try:
                await warm()
            except Exception as exc:
                log.warning("auth %s: could not fetch ahead (%s); will retry on the first request", provider.name, exc)

    async def aclose(self) -> None:
        for provider in self.providers:
            try:
                await provider.aclose()
            except Exception as exc:  # closing must not stop the others from closing
                log.debug("auth %s: close failed: %s", provider.name, exc)
