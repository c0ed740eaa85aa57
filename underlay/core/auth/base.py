"""What every authentication provider shares: the request it reads, how it declines, how it fails.

A provider answers one of three ways. It returns a :class:`Principal` (accepted), raises
:class:`Decline` (not its credential, or not one it accepts: the next provider is tried) or raises an
:class:`~underlay.api.errors.UnderlayError` (it recognized the credential and rejects it with 401, or
its identity provider is down: 503). Only the chain turns a run of declines into the final 401.
"""

from __future__ import annotations

import hashlib
from typing import Any, Protocol

from underlay.api.errors import ServiceUnavailableError, UnauthenticatedError
from underlay.core.identity import Principal


class Decline(Exception):  # noqa: N818 - a normal outcome, not an error
    """The provider does not accept this credential; the reason (never the token) may reach the client."""


class AuthRequest:
    """The parts of an HTTP request that carry credentials, read straight from the ASGI scope."""

    __slots__ = ("bearer", "_headers")

    def __init__(self, headers: list[tuple[bytes, bytes]], bearer: str | None = None) -> None:
        self._headers = headers
        self.bearer = bearer

    @classmethod
    def from_headers(cls, headers: list[tuple[bytes, bytes]]) -> AuthRequest:
        bearer = None
        for name, value in headers:
            if name == b"authorization":
                scheme, _, rest = value.partition(b" ")
                if scheme.lower() == b"bearer" and rest.strip():
                    bearer = rest.strip().decode("latin-1")
                break
        return cls(headers, bearer)

    def header(self, name: bytes) -> str | None:
        """The first value of a (lower-case) header, or None."""
        for key, value in self._headers:
            if key == name:
                return value.decode("latin-1")
        return None


class AuthProvider(Protocol):
    name: str

    async def authenticate(self, request: AuthRequest) -> Principal: ...

    async def aclose(self) -> None: ...


def token_digest(token: str) -> bytes:
    """Cache key for a token: its SHA-256, so the raw token is never kept as a key or id."""
    return hashlib.sha256(token.encode()).digest()


def invalid_token(message: str) -> UnauthenticatedError:
    """A recognized credential that is rejected (RFC 6750 ``invalid_token``)."""
    return UnauthenticatedError(message, code="invalid_token")


def unavailable(
    name: str, what: str, exc: BaseException | None = None, *, problem: str | None = None
) -> ServiceUnavailableError:
    """The identity provider behind ``name`` cannot answer (503); the message names it, never the token."""
    import httpx  # here, not at the top: API-key auth needs none of it (only the HTTP-backed providers call this)

    if isinstance(exc, httpx.HTTPStatusError):
        text = problem or f"answered HTTP {exc.response.status_code}; check its URL and health"
    else:
        detail = f" ({type(exc).__name__})" if exc is not None else ""
        text = problem or f"cannot be reached{detail}; try again shortly"
    return ServiceUnavailableError(f"auth:{name}", f"the identity provider {what} {text}.")


def claim(claims: dict[str, Any], name: str) -> Any:
    """A claim by name; a dotted name reaches into nested objects (``realm_access.roles``)."""
    if name in claims:
        return claims[name]
    value: Any = claims
    for part in name.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def as_list(value: Any, *, split_spaces: bool = False) -> list[str] | None:
    """Claim value → list of strings (attributes always hold lists); None when absent."""
    if value is None:
        return None
    if isinstance(value, list | tuple):
        return [str(v) for v in value]
    if isinstance(value, str):
        return value.split() if split_spaces else [value]
    return [str(value)]


def map_attributes(claims: dict[str, Any], attribute_claims: dict[str, str]) -> dict[str, list[str]]:
    """Pick the configured claims into attributes; ``scope``/``scp`` strings split on spaces (RFC 8693)."""
    attributes: dict[str, list[str]] = {}
    for attribute, claim_name in attribute_claims.items():
        values = as_list(claim(claims, claim_name), split_spaces=claim_name in ("scope", "scp"))
        if values is not None:
            attributes[attribute] = values
    return attributes
