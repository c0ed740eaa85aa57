"""The ``server.auth`` section of the run config (see :mod:`underlay.core.auth`).

Providers are listed in the order they are tried; each is one pydantic model told apart by ``type``,
so a typo in a provider's keys fails at start-up with the key's name, not at the first request.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

_SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")
DEFAULT_PUBLIC_PATHS = ["/v1/health", "/v1/version", "/v1/tool-runtime/oauth/callback"]
# Asymmetric algorithms only: a JWKS carries public keys, and allowing HS* would let a public key act as
# an HMAC secret (the classic algorithm-confusion attack).
ASYMMETRIC_ALGORITHMS = ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"]


class _Provider(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(
        default=None, description="Shown in errors and logs (default: the type, e.g. 'jwt'); give one per provider."
    )


class ApiKey(BaseModel):
    model_config = ConfigDict(extra="forbid")

    sha256: str = Field(description='Hex SHA-256 of the key: printf %s "$KEY" | sha256sum')
    principal: str = Field(min_length=1)
    attributes: dict[str, list[str]] = Field(default_factory=dict)

    @field_validator("sha256")
    @classmethod
    def _hex(cls, value: str) -> str:
        value = value.strip().lower()
        if not _SHA256_HEX.match(value):
            raise ValueError('must be the 64 hex digits of the key\'s SHA-256 (printf %s "$KEY" | sha256sum)')
        return value

    @field_validator("attributes", mode="before")
    @classmethod
    def _lists(cls, value: object) -> object:
        if isinstance(value, dict):
            return {k: [v] if isinstance(v, str) else v for k, v in value.items()}
        return value


class ApiKeysProvider(_Provider):
    """Static keys; only their SHA-256 is kept, so a leaked config does not leak the keys."""

    type: Literal["api_keys"]
    keys: list[ApiKey] = Field(default_factory=list)


class JwtProvider(_Provider):
    """OAuth2 bearer JWTs verified against the issuer's JWKS."""

    type: Literal["jwt"]
    jwks_url: str = Field(min_length=1)
    issuer: str | None = Field(default=None, description="Required 'iss'; tokens of other issuers pass to the next.")
    audience: str | list[str] | None = Field(default=None, description="Accepted 'aud' value(s).")
    principal_claim: str = "sub"
    attribute_claims: dict[str, str] = Field(
        default_factory=dict, description="Attribute name -> claim (dots reach nested claims: realm_access.roles)."
    )
    algorithms: list[str] = Field(default_factory=lambda: list(ASYMMETRIC_ALGORITHMS))
    cache_seconds: float = Field(default=300, ge=0, description="How long a fetched JWKS is trusted.")
    refetch_min_seconds: float = Field(
        default=5, ge=0, description="An unknown kid refetches the JWKS at most this often (key rotation)."
    )
    leeway_seconds: float = Field(default=30, ge=0, description="Clock skew allowed on exp/nbf/iat.")
    timeout_seconds: float = Field(default=5, gt=0)

    @field_validator("algorithms")
    @classmethod
    def _asymmetric(cls, value: list[str]) -> list[str]:
        bad = [a for a in value if a not in ASYMMETRIC_ALGORITHMS]
        if bad:
            raise ValueError(f"unsupported algorithm {bad[0]!r}; use some of {', '.join(ASYMMETRIC_ALGORITHMS)}")
        if not value:
            raise ValueError("list at least one algorithm")
        return value


class IntrospectionProvider(_Provider):
    """Opaque tokens checked with an RFC 7662 introspection endpoint; active answers are cached."""

    type: Literal["introspection"]
    url: str = Field(min_length=1)
    client_id: str | None = None
    client_secret: str | None = None
    principal_claim: str = Field(default="sub", description="Falls back to 'username', then 'client_id'.")
    attribute_claims: dict[str, str] = Field(default_factory=dict)
    audience: str | list[str] | None = Field(default=None, description="When set, the answer's 'aud' must match.")
    cache_seconds: float = Field(default=60, ge=0, description="Cache an active answer this long (or until exp).")
    timeout_seconds: float = Field(default=5, gt=0)


class WebhookProvider(_Provider):
    """POST {"token": ...} to a service that answers {"principal", "attributes"} or 401."""

    type: Literal["webhook"]
    url: str = Field(min_length=1)
    headers: dict[str, str] = Field(default_factory=dict, description="Sent with every call (e.g. its own key).")
    cache_seconds: float = Field(default=30, ge=0, description="Cache an accepted token this long (0: never).")
    timeout_seconds: float = Field(default=5, gt=0)


class TrustedHeadersProvider(_Provider):
    """Identity set by a gateway in front of the server, proven by a shared secret header."""

    type: Literal["trusted_headers"]
    principal_header: str = Field(default="x-forwarded-user", min_length=1)
    attribute_headers: dict[str, str] = Field(
        default_factory=dict, description="Attribute name -> header holding a comma-separated list."
    )
    secret_header: str = Field(default="x-gateway-secret", min_length=1)
    # No length rule here: a config error would echo the value, and this one is a secret.
    shared_secret: str = Field(min_length=1, description="The gateway sends it in secret_header on every request.")

    @field_validator("principal_header", "secret_header")
    @classmethod
    def _lower(cls, value: str) -> str:
        return value.lower()

    @field_validator("attribute_headers")
    @classmethod
    def _lower_values(cls, value: dict[str, str]) -> dict[str, str]:
        return {k: v.lower() for k, v in value.items()}


class KubernetesProvider(_Provider):
    """Service-account (or any cluster) tokens checked with a TokenReview against the API server."""

    type: Literal["kubernetes"]
    api_server: str = Field(
        default="https://kubernetes.default.svc", description="The API server's base URL (in-cluster default)."
    )
    token: str | None = Field(default=None, description="Our own token for the TokenReview call.")
    token_file: str = Field(
        default="/var/run/secrets/kubernetes.io/serviceaccount/token",
        description="Read when token is not given (the pod's service account).",
    )
    ca_file: str | None = Field(default=None, description="CA bundle for the API server's certificate.")
    audiences: list[str] = Field(default_factory=list, description="Audiences the token must be valid for.")
    cache_seconds: float = Field(default=30, ge=0)
    timeout_seconds: float = Field(default=5, gt=0)


ProviderConfig = Annotated[
    ApiKeysProvider
    | JwtProvider
    | IntrospectionProvider
    | WebhookProvider
    | TrustedHeadersProvider
    | KubernetesProvider,
    Field(discriminator="type"),
]


class AuthConfig(BaseModel):
    """Who may call the server: providers tried in order, and the paths that need no credentials."""

    model_config = ConfigDict(extra="forbid")

    providers: list[ProviderConfig] = Field(min_length=1)
    public_paths: list[str] = Field(
        default_factory=lambda: list(DEFAULT_PUBLIC_PATHS),
        description="Exact paths (or prefixes ending in '*') that never need credentials.",
    )
    realm: str = Field(default="underlay", description="The realm in WWW-Authenticate.")
