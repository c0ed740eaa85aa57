"""OAuth2 bearer JWTs, verified with PyJWT against keys from the issuer's JWKS.

A token is this provider's when it is shaped like a JWT and (if an issuer is configured) its
unverified ``iss`` names that issuer; from then on this provider decides, so a bad signature or an
expired token is a 401 rather than a fall-through. Tokens of other issuers pass to the next provider,
which lets several issuers sit side by side.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

import httpx
import jwt

from underlay.core.auth.base import AuthRequest, Decline, invalid_token, map_attributes
from underlay.core.auth.config import JwtProvider
from underlay.core.auth.jwks import JwksCache
from underlay.core.identity import Principal


def _segment(part: str) -> dict[str, Any]:
    decoded = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    if not isinstance(decoded, dict):
        raise ValueError("not a JSON object")
    return decoded


def peek(token: str) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """Header and claims of a JWT, unverified (only to route it to a key and issuer), or None if not a JWT."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        return _segment(parts[0]), _segment(parts[1])
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
        self._algorithms = frozenset(config.algorithms)
        self._options: dict[str, Any] = {"require": ["exp"], "verify_aud": config.audience is not None}

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
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in self._algorithms:
            raise invalid_token(
                f"{self.name}: the token is signed with {alg!r}; accepted: {', '.join(self.config.algorithms)}."
            )
        kid = header.get("kid")
        keys = [k for k in await self.jwks.keys_for(kid if isinstance(kid, str) else None) if k.fits(alg)]
        if not keys:
            raise invalid_token(f"{self.name}: no key in the issuer's JWKS matches the token's kid {kid!r} and {alg}.")
        claims = self._verify(token, alg, keys)
        subject = claims.get(self.config.principal_claim)
        if not isinstance(subject, str) or not subject:
            raise invalid_token(f"{self.name}: the token has no '{self.config.principal_claim}' claim to identify you.")
        return Principal(id=subject, attributes=map_attributes(claims, self.config.attribute_claims))

    def _verify(self, token: str, alg: str, keys: list[Any]) -> dict[str, Any]:
        last: jwt.PyJWTError | None = None
        for key in keys:  # several only when the token names no kid
            try:
                return jwt.decode(
                    token,
                    key.key,
                    algorithms=[alg],
                    audience=self.config.audience,
                    issuer=self.config.issuer,
                    leeway=self.config.leeway_seconds,
                    options=self._options,  # type: ignore[arg-type]
                )
            except jwt.InvalidSignatureError as exc:
                last = exc
            except jwt.PyJWTError as exc:
                raise invalid_token(f"{self.name}: {_describe(exc, self.config)}") from None
        raise invalid_token(f"{self.name}: {_describe(last, self.config)}") from None

    async def aclose(self) -> None:
        await self._client.aclose()


def _describe(exc: jwt.PyJWTError | None, config: JwtProvider) -> str:
    """A message the caller can act on; PyJWT's own text never includes the token."""
    if isinstance(exc, jwt.ExpiredSignatureError):
        return "the token has expired; get a fresh one from the issuer."
    if isinstance(exc, jwt.ImmatureSignatureError):
        return "the token is not valid yet (nbf/iat in the future); check the clocks."
    if isinstance(exc, jwt.InvalidAudienceError):
        return f"the token's audience is not accepted here (expected {config.audience!r})."
    if isinstance(exc, jwt.InvalidIssuerError):
        return f"the token's issuer is not accepted here (expected {config.issuer!r})."
    if isinstance(exc, jwt.MissingRequiredClaimError):
        return f"the token lacks the required '{exc.claim}' claim."
    if exc is None or isinstance(exc, jwt.InvalidSignatureError):
        return "the token's signature does not verify with the issuer's keys."
    return f"the token is malformed ({type(exc).__name__})."
