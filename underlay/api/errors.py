"""Typed errors raised anywhere below the server; the server maps each to the OpenAI error envelope.

Every error carries the HTTP status, the OpenAI error ``type`` string, an optional ``param`` naming the
offending field and an optional machine-readable ``code``. Messages are written for a person to act on.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "ConfigError",
    "ConflictError",
    "ForbiddenError",
    "InvalidRequestError",
    "NotFoundError",
    "NotImplementedByProviderError",
    "PayloadTooLargeError",
    "ProviderError",
    "RateLimitedError",
    "ServiceUnavailableError",
    "UnauthenticatedError",
    "UnderlayError",
    "UpstreamError",
    "UpstreamTimeoutError",
]


class UnderlayError(Exception):
    """Base class for every error that reaches a client."""

    status_code: int = 500
    error_type: str = "server_error"

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code
        self.headers = headers or {}

    def to_envelope(self) -> dict[str, Any]:
        """The OpenAI error envelope for this error."""
        return {
            "error": {
                "message": self.message,
                "type": self.error_type,
                "param": self.param,
                "code": self.code,
            }
        }


class InvalidRequestError(UnderlayError):
    status_code = 400
    error_type = "invalid_request_error"


class UnauthenticatedError(UnderlayError):
    status_code = 401
    error_type = "authentication_error"


class ForbiddenError(UnderlayError):
    status_code = 403
    error_type = "permission_error"


class NotFoundError(UnderlayError):
    status_code = 404
    error_type = "not_found_error"

    def __init__(self, kind: str, identifier: str, *, hint: str | None = None, param: str | None = None):
        shown = identifier if len(identifier) <= 256 else f"{identifier[:256]}… ({len(identifier)} characters)"
        message = f"{kind} '{shown}' not found."  # a client's id can be huge: quote its start, keep the hint
        if hint:
            message = f"{message} {hint}"
        super().__init__(message, param=param, code=f"{kind.lower().replace(' ', '_')}_not_found")
        self.kind = kind
        self.identifier = identifier


class ConflictError(UnderlayError):
    status_code = 409
    error_type = "conflict_error"


class PayloadTooLargeError(UnderlayError):
    status_code = 413
    error_type = "invalid_request_error"


class RateLimitedError(UnderlayError):
    status_code = 429
    error_type = "rate_limit_error"


class ProviderError(UnderlayError):
    """A failure of an upstream service or local runtime; the message always names the provider."""

    def __init__(self, provider_id: str, message: str, *, code: str | None = None) -> None:
        super().__init__(f"Provider '{provider_id}': {message}", code=code)
        self.provider_id = provider_id


class UpstreamError(ProviderError):
    """The upstream answered with an error or garbage (502)."""

    status_code = 502
    error_type = "upstream_error"


class ServiceUnavailableError(ProviderError):
    """The upstream cannot be reached or refuses work right now (503)."""

    status_code = 503
    error_type = "service_unavailable"


class UpstreamTimeoutError(ProviderError):
    """The upstream did not answer in time (504)."""

    status_code = 504
    error_type = "upstream_timeout"


class ConfigError(Exception):
    """A run-config or provider-config mistake, found at start-up; ``str(error)`` is the one line to show.

    It is not an :class:`UnderlayError`: it never reaches a client as an HTTP answer, it stops the
    server (or the CLI) with one line naming the file, the key and the fix. It lives in the contract so
    that a provider can reject its own config without importing the control plane.
    """


class NotImplementedByProviderError(UnderlayError):
    """A provider does not support a feature the request asked for."""

    status_code = 400
    error_type = "invalid_request_error"
