"""Static API keys, stored as SHA-256 digests in the run config."""

from __future__ import annotations

import hashlib

from underlay.core.auth.base import AuthRequest, Decline
from underlay.core.auth.config import ApiKeysProvider
from underlay.core.identity import Principal


class ApiKeysAuth:
    """A dict lookup by digest: constant work per request, and the clear key is never stored."""

    def __init__(self, config: ApiKeysProvider, name: str) -> None:
        self.name = name
        self._by_digest = {
            bytes.fromhex(key.sha256): Principal(id=key.principal, attributes=dict(key.attributes))
            for key in config.keys
        }

    async def authenticate(self, request: AuthRequest) -> Principal:
        if request.bearer is None:
            raise Decline("no bearer credential")
        principal = self._by_digest.get(hashlib.sha256(request.bearer.encode()).digest())
        if principal is None:
            raise Decline("not a known API key")
        return principal

    async def aclose(self) -> None:
        return None
