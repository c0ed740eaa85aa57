"""OAuth2 bearer JWTs, verified against keys from the issuer's JWKS.

The signature is checked by PyJWT's algorithm implementations over ``cryptography`` key objects that
the JWKS cache parsed once; the token is parsed once, here, and the registered claims are checked
here too (``jwt.decode`` re-parses and validates the alphabet per character, three times our cost).

A token is this provider's when it is shaped like a JWT and (if an issuer is configured) its
unverified ``iss`` names that issuer; from then on this provider decides, so a bad signature or an
expired token is a 401 rather than a fall-through. Tokens of other issuers pass to the next provider,
which lets several issuers sit side by side.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import time
from typing import Any

import httpx
from jwt.algorithms import get_default_algorithms

from underlay.core.auth.base import AuthRequest, Decline, invalid_token, map_attributes
from underlay.core.auth.config import JwtProvider
from underlay.core.auth.jwks import JwksCache, VerifyKey
from underlay.core.identity import Principal

_COMPACT = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")
_ALGORITHMS = get_default_algorithms()


def _b64(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def _segment(part: str) -> dict[str, Any]:
    decoded = json.loads(_b64(part))
    if not isinstance(decoded, dict):
        raise ValueError("not a JSON object")
    return decoded


def peek(token: str) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """Header and claims of a compact JWS, unverified (only to route it to a key), or None if not a JWT.

    The alphabet is checked with one regex: PyJWT checks it per character in Python, which was most of
    its cost per token, so we parse once here and hand only the signature to PyJWT's algorithm.
    """
    if _COMPACT.fullmatch(token) is None:
        return None
    header, payload, _ = token.split(".")
    try:
        return _segment(header), _segment(payload)
    except (ValueError, binascii.Error):
        return None


class JwtAuth:
    def __init__(self, config: JwtProvider, name: str) -> None:
        self.name = name
        self.config = config
        self._client = httpx.AsyncClient(timeout=config.timeout_seconds)
        self.jwks = JwksCache(
            config.jwks_url,
            self._client,
            name=name,
            cache_seconds=config.cache_seconds,
            refetch_min_seconds=config.refetch_min_seconds,
        )
        self._algorithms = frozenset(config.algorithms) & frozenset(_ALGORITHMS)
        audience = config.audience
        self._audiences = frozenset([audience] if isinstance(audience, str) else audience or ())

    async def authenticate(self, request: AuthRequest) -> Principal:
        token = request.bearer
        if token is None:
            raise Decline("no bearer credential")
        peeked = peek(token)
        if peeked is None:
            raise Decline("not a JWT")
        header, unverified = peeked
        issuer = self.config.issuer
        if issuer is not None and unverified.get("iss") != issuer:
            raise Decline(f"the token's issuer is not {issuer!r}")
        if "crit" in header:  # RFC 7515 4.1.11: extensions we do not implement must be refused
            raise invalid_token(f"{self.name}: the token uses critical header extensions this server does not support.")
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in self._algorithms:
            raise invalid_token(
                f"{self.name}: the token is signed with {alg!r}; accepted: {', '.join(self.config.algorithms)}."
            )
        kid = header.get("kid")
        keys = [k for k in await self.jwks.keys_for(kid if isinstance(kid, str) else None) if k.fits(alg)]
        if not keys:
            raise invalid_token(f"{self.name}: no key in the issuer's JWKS matches the token's kid {kid!r} and {alg}.")
        self._verify_signature(token, alg, keys)
        self._check_claims(unverified)
        claims = unverified  # verified now
        subject = claims.get(self.config.principal_claim)
        if not isinstance(subject, str) or not subject:
            raise invalid_token(f"{self.name}: the token has no '{self.config.principal_claim}' claim to identify you.")
        return Principal(id=subject, attributes=map_attributes(claims, self.config.attribute_claims))

    def _verify_signature(self, token: str, alg: str, keys: list[VerifyKey]) -> None:
        signing_input, _, signature = token.rpartition(".")
        try:
            raw = _b64(signature)
        except binascii.Error:
            raw = b""
        algorithm = _ALGORITHMS[alg]
        message = signing_input.encode()
        for key in keys:  # several only when the token names no kid
            if algorithm.verify(message, key.key, raw):
                return
        raise invalid_token(f"{self.name}: the token's signature does not verify with the issuer's keys.")

    def _check_claims(self, claims: dict[str, Any]) -> None:
        """exp (required), nbf, iat with leeway; iss and aud when configured (RFC 7519 section 4.1)."""
        now = time.time()
        leeway = self.config.leeway_seconds
        exp = claims.get("exp")
        if exp is None:
            raise invalid_token(f"{self.name}: the token lacks the required 'exp' claim.")
        if not _is_number(exp):
            raise invalid_token(f"{self.name}: the token's 'exp' claim is not a number.")
        if exp <= now - leeway:
            raise invalid_token(f"{self.name}: the token has expired; get a fresh one from the issuer.")
        for name in ("nbf", "iat"):
            value = claims.get(name)
            if value is None:
                continue
            if not _is_number(value):
                raise invalid_token(f"{self.name}: the token's '{name}' claim is not a number.")
            if value > now + leeway:
                raise invalid_token(
                    f"{self.name}: the token is not valid yet ({name} in the future); check the clocks."
                )
        if self.config.issuer is not None and claims.get("iss") != self.config.issuer:
            raise invalid_token(
                f"{self.name}: the token's issuer is not accepted here (expected {self.config.issuer!r})."
            )
        if self._audiences:
            aud = claims.get("aud")
            given = [aud] if isinstance(aud, str) else aud if isinstance(aud, list) else []
            if not any(isinstance(a, str) and a in self._audiences for a in given):
                raise invalid_token(
                    f"{self.name}: the token's audience is not accepted here (expected {self.config.audience!r})."
                )

    async def warm(self) -> None:
        """Fetch the JWKS before the first token arrives."""
        await self.jwks.keys_for(None)

    async def aclose(self) -> None:
        await self._client.aclose()


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
