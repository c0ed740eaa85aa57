"""Config of ``remote::model-context-protocol``, importable without the MCP SDK (fast start-up)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class OAuthClient(BaseModel):
    """A client registered in advance at a server's authorization server (no dynamic registration)."""

    model_config = ConfigDict(extra="forbid")

    client_id: str = Field(min_length=1)
    client_secret: str | None = Field(default=None, description="Secret for client_secret_basic/post.")
    private_key: str | None = Field(
        default=None,
        description="PEM private key: client credentials authenticated with a signed JWT (private_key_jwt) "
        "instead of a secret.",
    )
    signing_algorithm: str = Field(default="RS256", description="The private_key's JWT algorithm (RS256, ES256...).")
    grant_type: Literal["client_credentials", "authorization_code"] = Field(
        default="client_credentials",
        description="client_credentials: Underlay's own (machine) token for every caller; authorization_code: "
        "each principal authorizes with this client.",
    )
    issuer: str | None = Field(default=None, description="The authorization server these credentials belong to.")
    scope: str | None = None
    token_endpoint_auth_method: Literal["client_secret_basic", "client_secret_post", "none"] = "client_secret_basic"


class OAuthConfig(BaseModel):
    """MCP authorization: per-principal authorization code flow, operator client credentials, stored tokens."""

    model_config = ConfigDict(extra="forbid")

    token_key: str = Field(
        min_length=16,
        description="Encrypts stored tokens: a Fernet key or a passphrase of 16+ characters "
        "(e.g. ${env.UNDERLAY_MCP_TOKEN_KEY}).",
    )
    redirect_uri: str | None = Field(
        default=None,
        description="This server's public URL + /v1/tool-runtime/oauth/callback; needed for the code flow.",
    )
    client_name: str = Field(default="Underlay", description="The name registered with authorization servers.")
    scope: str | None = Field(default=None, description="Scope to ask for when the server does not say.")
    clients: dict[str, OAuthClient] = Field(
        default_factory=dict, description="Pre-registered clients, keyed by tool group id or server URL."
    )
    authorization_ttl: float = Field(default=600.0, gt=0, description="Seconds an authorization URL stays usable.")


class Config(BaseModel):
    """Timeouts and pool limits; the servers themselves are tool groups (run config or API)."""

    model_config = ConfigDict(extra="forbid")

    connect_timeout: float = Field(default=10.0, gt=0, description="Seconds to connect and finish the handshake.")
    timeout: float = Field(default=60.0, gt=0, description="Seconds a tool call may take (a group may override).")
    list_timeout: float = Field(default=30.0, gt=0, description="Seconds to list a server's tools.")
    sse_read_timeout: float = Field(default=300.0, gt=0, description="Longest silence on an open event stream.")
    idle_timeout: float = Field(default=300.0, gt=0, description="Close a pooled session unused this long.")
    max_sessions: int = Field(default=64, ge=1, description="Most sessions held open at once.")
    max_backoff: float = Field(
        default=30.0, gt=0, description="Longest wait between connection attempts to a server that keeps failing."
    )
    oauth: OAuthConfig | None = Field(default=None, description="MCP authorization (OAuth 2.1); off when absent.")
