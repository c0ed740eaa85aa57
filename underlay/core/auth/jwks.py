"""A JWKS fetched over HTTP and kept as parsed key objects.

Parsing a JWK into a ``cryptography`` key is far dearer than verifying with it, so keys are parsed
once per fetch and looked up by ``kid``. The set is refetched when it is older than ``cache_seconds``
and when a token names a ``kid`` we do not hold (the issuer rotated its keys), but the latter at most
once per ``refetch_min_seconds`` so a flood of tokens with made-up kids cannot hammer the issuer.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any

import httpx
from jwt import PyJWK

from underlay.api.errors import ServiceUnavailableError
from underlay.core.auth.base import unavailable

log = logging.getLogger("underlay.auth")

# JWK key type → the JWS algorithm families it can verify.
_FAMILY = {"RSA": ("RS", "PS"), "EC": ("ES",), "OKP": ("EdDSA",)}


@dataclass(frozen=True)
class VerifyKey:
    """One parsed JWKS member: the ``cryptography`` key object, ready to verify with."""

    kid: str | None
    kty: str
    alg: str | None  # the member's own "alg", which pins the algorithm when present
    key: Any

    def fits(self, alg: str) -> bool:
        """Whether this key may verify a token signed with ``alg``."""
        if self.alg is not None:
            return self.alg == alg
        return alg.startswith(_FAMILY.get(self.kty, ()))


class JwksCache:
    def __init__(
        self,
        url: str,
        client: httpx.AsyncClient,
        *,
        name: str,
        cache_seconds: float,
        refetch_min_seconds: float,
    ) -> None:
        self.url = url
        self.name = name
        self.cache_seconds = cache_seconds
        self.refetch_min_seconds = refetch_min_seconds
        self.fetches = 0
        self._client = client
        self._by_kid: dict[str, VerifyKey] = {}
        self._all: list[VerifyKey] = []
        self._fetched_at: float | None = None  # monotonic time of the last successful fetch
        self._tried_at = float("-inf")  # monotonic time of the last attempt, successful or not
        self._error: ServiceUnavailableError | None = None
        self._lock = asyncio.Lock()

    async def keys_for(self, kid: str | None) -> list[VerifyKey]:
        """Candidate keys for a token's ``kid`` (all keys when it names none); may refetch first."""
        now = time.monotonic()
        may_retry = now - self._tried_at >= self.refetch_min_seconds
        if self._fetched_at is None:
            if not may_retry and self._error is not None:
                raise self._error  # the issuer just failed: answer 503 without calling it again
            await self._refresh()
        elif now - self._fetched_at > self.cache_seconds and may_retry:
            await self._refresh()
        found = self._lookup(kid)
        if not found and time.monotonic() - self._tried_at >= self.refetch_min_seconds:
            await self._refresh()  # an unknown kid: maybe the issuer rotated its keys
            found = self._lookup(kid)
        return found

    def _lookup(self, kid: str | None) -> list[VerifyKey]:
        if kid is None:
            return self._all
        key = self._by_kid.get(kid)
        return [key] if key is not None else []

    async def _refresh(self) -> None:
        """Fetch the set; on failure keep the keys we have (stale beats down), or raise 503 if we have none."""
        tried = self._tried_at
        async with self._lock:
            if self._tried_at != tried:  # another request refreshed while we waited
                return
            self._tried_at = time.monotonic()
            try:
                keys = await self._fetch()
            except Exception as exc:
                self._error = unavailable(self.name, f"JWKS at {self.url}", exc)
                if self._fetched_at is None:
                    raise self._error from None
                log.warning(
                    "auth %s: JWKS refresh from %s failed (%s); keeping the keys we have",
                    self.name,
                    self.url,
                    type(exc).__name__,
                )
                return
            self._error = None
            self._all = keys
            self._by_kid = {k.kid: k for k in keys if k.kid}
            self._fetched_at = time.monotonic()
            self.fetches += 1

    async def _fetch(self) -> list[VerifyKey]:
        response = await self._client.get(self.url, headers={"accept": "application/json"})
        response.raise_for_status()
        document: Any = response.json()
        if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
            raise ValueError("not a JWKS document (no 'keys' list)")
        keys: list[VerifyKey] = []
        for member in document["keys"]:
            if not isinstance(member, dict) or member.get("use", "sig") != "sig":
                continue
            try:
                parsed = PyJWK(member)
                keys.append(VerifyKey(parsed.key_id, str(member.get("kty")), member.get("alg"), parsed.key))
            except Exception as exc:  # an unsupported or broken key must not hide the usable ones
                log.warning("auth %s: skipping JWKS key %r: %s", self.name, member.get("kid"), exc)
        return keys
