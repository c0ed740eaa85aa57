"""A bounded in-process cache of accepted tokens, keyed by the token's SHA-256.

Remote checks (introspection, webhook, TokenReview) cost a round trip; caching the answer until the
token's own expiry or a configured TTL, whichever is sooner, keeps that off the hot path. Only
acceptances are cached, so a revoked token is refused again as soon as its entry lapses.
"""

from __future__ import annotations

import time

from underlay.core.auth.base import AuthRequest, Decline, token_digest
from underlay.core.identity import Principal


class TokenCache:
    def __init__(self, ttl_seconds: float, max_entries: int = 10_000) -> None:
        self.ttl = ttl_seconds
        self.max_entries = max_entries
        self._entries: dict[bytes, tuple[float, Principal]] = {}

    def get(self, digest: bytes) -> Principal | None:
        entry = self._entries.get(digest)
        if entry is None:
            return None
        if entry[0] <= time.time():
            del self._entries[digest]
            return None
        return entry[1]

    def lookup(self, request: AuthRequest) -> tuple[str, bytes, Principal | None]:
        """The request's bearer token, its cache key and the principal cached for it (None: ask upstream).

        Declines a request without a bearer credential, so the next provider in the chain may try.
        """
        token = request.bearer
        if token is None:
            raise Decline("no bearer credential")
        digest = token_digest(token)
        return token, digest, self.get(digest)

    def put(self, digest: bytes, principal: Principal, expires_at: float | None = None) -> None:
        """Keep ``principal`` until ``min(expires_at, now + ttl)``; nothing when the TTL is zero."""
        now = time.time()
        until = now + self.ttl
        if expires_at is not None:
            until = min(until, expires_at)
        if until <= now:
            return
        if len(self._entries) >= self.max_entries:
            self._evict(now)
        self._entries[digest] = (until, principal)

    def _evict(self, now: float) -> None:
        for key in [k for k, (until, _) in self._entries.items() if until <= now]:
            del self._entries[key]
        while len(self._entries) >= self.max_entries:  # still full: drop the oldest insertions
            del self._entries[next(iter(self._entries))]

    def __len__(self) -> int:
        return len(self._entries)
