"""MCP authorization (OAuth 2.1) for the MCP client: who gets which token, and where it is kept.

Why on top of the SDK's ``mcp.client.auth``: the SDK already does the protocol (protected resource
metadata from a 401's ``WWW-Authenticate``, authorization server metadata, dynamic client
registration, PKCE, client credentials, refresh). What it cannot know is that Underlay is a server
acting for many principals, none of whom is sitting at this process's browser. So this module adds:

- **Two identities.** A tool group (or server URL) listed under ``oauth.clients`` with a client
  secret is reached as Underlay itself, with the *client credentials* grant (operator-configured
  machine access; one token shared by every caller). Any other HTTP server answering 401 is reached
  as the calling principal, with the *authorization code* grant: one token per (principal, server).
- **A two-request code flow.** The SDK's flow waits inline for a redirect. Here the authorization URL
  (PKCE challenge, state) is returned to the caller as an error naming it, the verifier is parked in
  the KV store under a hash of the state (single use, expiring), and the authorization server's
  redirect to ``GET /v1/tool-runtime/oauth/callback`` finishes the exchange. The state is 256 random
  bits bound to the principal that asked, so the callback needs no other credential.
- **Tokens encrypted at rest.** Tokens, registered client secrets and parked verifiers are stored in
  the KV store encrypted with Fernet (AES-128-CBC + HMAC) under ``oauth.token_key``; the raw value
  never contains a token. A key that no longer decrypts a record makes it count as absent.
- **Refresh across restarts and on 401.** The expiry, the authorization server's metadata and the
  resource metadata are stored with the token, so an expired token is refreshed before the request;
  a token the server refuses (401) is refreshed too before anyone is asked to authorize again.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import secrets
import time
from collections import OrderedDict
from collections.abc import AsyncGenerator
from typing import Any
from urllib.parse import urlencode

import httpx2
from cryptography.fernet import Fernet, InvalidToken
from mcp.client.auth import OAuthClientProvider, OAuthFlowError, PKCEParameters
from mcp.client.auth.extensions.client_credentials import (
    ClientCredentialsOAuthProvider,
    PrivateKeyJWTOAuthProvider,
    SignedJWTParameters,
)
from mcp.client.auth.utils import validate_authorization_response_iss
from mcp.shared.auth import (
    OAuthClientInformationFull,
    OAuthClientMetadata,
    OAuthMetadata,
    OAuthToken,
    ProtectedResourceMetadata,
)

from underlay.api.tool_runtime import McpConnection
from underlay.providers.remote.tool_runtime.model_context_protocol.config import OAuthClient, OAuthConfig

log = logging.getLogger("underlay.tool_runtime.mcp.oauth")
_PREFIX = "mcp-oauth:"
_MAX_CACHED = 1024


class AuthorizationRequired(Exception):
    """The principal must authorize Underlay at the server's authorization server: open ``url``."""

    def __init__(self, url: str, expires_in: float) -> None:
        super().__init__("authorization required")
        self.url = url
        self.expires_in = expires_in


class OAuthCallbackError(Exception):
    """The callback could not finish an authorization (unknown or expired state, refused exchange)."""


def _digest(*parts: str) -> str:
    return hashlib.sha256("\x00".join(parts).encode()).hexdigest()[:40]


class TokenCipher:
    """Fernet with the configured key: a Fernet key as such, or any passphrase (hashed to one)."""

    def __init__(self, key: str) -> None:
        try:
            self._fernet = Fernet(key.encode())
        except ValueError:
            self._fernet = Fernet(base64.urlsafe_b64encode(hashlib.sha256(key.encode()).digest()))

    def seal(self, value: dict[str, Any]) -> str:
        return self._fernet.encrypt(json.dumps(value).encode()).decode()

    def open(self, sealed: str | None) -> dict[str, Any] | None:
        if sealed is None:
            return None
        try:
            value = json.loads(self._fernet.decrypt(sealed.encode()))
        except (InvalidToken, ValueError):
            log.warning("a stored MCP OAuth record does not decrypt with oauth.token_key (was the key changed?)")
            return None
        return value if isinstance(value, dict) else None


class KvTokenStorage:
    """The SDK's ``TokenStorage`` over the KV store, encrypted; also keeps the metadata a refresh needs."""

    def __init__(self, kv: Any, cipher: TokenCipher, tokens_key: str, client_key: str) -> None:
        self.kv = kv
        self.cipher = cipher
        self.tokens_key = tokens_key
        self.client_key = client_key
        self.record: dict[str, Any] = {}
        self.context: Any = None
        """The OAuth context whose discovered metadata is saved with each token."""

    async def get_tokens(self) -> OAuthToken | None:
        self.record = self.cipher.open(await self.kv.get(self.tokens_key)) or {}
        token = self.record.get("token")
        return OAuthToken.model_validate(token) if token else None

    async def set_tokens(self, tokens: OAuthToken) -> None:
        record: dict[str, Any] = {"token": tokens.model_dump(mode="json", exclude_none=True)}
        if tokens.expires_in is not None:
            record["expires_at"] = time.time() + tokens.expires_in
        context = self.context
        if context is not None and context.oauth_metadata is not None:
            record["asm"] = context.oauth_metadata.model_dump(mode="json", exclude_none=True)
        if context is not None and context.protected_resource_metadata is not None:
            record["prm"] = context.protected_resource_metadata.model_dump(mode="json", exclude_none=True)
        self.record = record
        await self.kv.set(self.tokens_key, self.cipher.seal(record))

    async def clear_tokens(self) -> None:
        self.record = {}
        await self.kv.delete(self.tokens_key)

    async def get_client_info(self) -> OAuthClientInformationFull | None:
        value = self.cipher.open(await self.kv.get(self.client_key))
        return OAuthClientInformationFull.model_validate(value) if value else None

    async def set_client_info(self, client_info: OAuthClientInformationFull) -> None:
        await self.kv.set(self.client_key, self.cipher.seal(client_info.model_dump(mode="json", exclude_none=True)))


class _Remembers:
    """Keeps the last exception the SDK's auth flow raised. The flow runs inside the transport's own
    task, so when it fails on an open session the caller only sees the connection close; the provider
    reads the reason here."""

    last_error: BaseException | None = None
    last_status: int = 0
    """The status the MCP server last answered (a 401 is refreshed first; a 403 step-up is not)."""

    async def _auth_flow(self, request: httpx2.Request) -> AsyncGenerator[httpx2.Request, httpx2.Response]:
        flow = super()._auth_flow(request)  # type: ignore[misc]
        try:
            outgoing = await flow.__anext__()
            while True:
                incoming = yield outgoing
                if incoming.request.method == request.method and incoming.request.url == request.url:
                    self.last_status = incoming.status_code  # the MCP request's answer, not discovery's
                outgoing = await flow.asend(incoming)
        except StopAsyncIteration:
            return
        except Exception as exc:
            self.last_error = exc
            raise
        finally:
            await flow.aclose()  # the SDK's flow holds its context lock until it is closed


def _restore(provider: OAuthClientProvider, storage: KvTokenStorage) -> None:
    """Put the stored expiry and metadata back on the SDK's context (it keeps them in memory only)."""
    context = provider.context
    record = storage.record
    if "expires_at" in record:
        context.token_expiry_time = float(record["expires_at"])
    if "asm" in record and context.oauth_metadata is None:
        context.oauth_metadata = OAuthMetadata.model_validate(record["asm"])
    if "prm" in record and context.protected_resource_metadata is None:
        context.protected_resource_metadata = ProtectedResourceMetadata.model_validate(record["prm"])


class MachineOAuth(_Remembers, ClientCredentialsOAuthProvider):
    """Client credentials for operator-configured machine access, with the stored expiry restored."""

    async def _initialize(self) -> None:
        await super()._initialize()
        storage = self.context.storage
        assert isinstance(storage, KvTokenStorage)
        _restore(self, storage)


class MachineJwtOAuth(_Remembers, PrivateKeyJWTOAuthProvider):
    """Client credentials authenticated with a signed JWT (RFC 7523), with the stored expiry restored."""

    async def _initialize(self) -> None:
        await super()._initialize()
        storage = self.context.storage
        assert isinstance(storage, KvTokenStorage)
        _restore(self, storage)


class UserOAuth(_Remembers, OAuthClientProvider):
    """The authorization code flow for one principal at one server, split across two requests."""

    def __init__(
        self,
        manager: OAuthManager,
        principal: str,
        name: str,
        server_url: str,
        storage: KvTokenStorage,
        client_metadata: OAuthClientMetadata,
        fixed_client: OAuthClientInformationFull | None,
    ) -> None:
        super().__init__(server_url, client_metadata, storage)
        self.manager = manager
        self.principal = principal
        self.name = name
        self.fixed_client = fixed_client
        self._refreshing = False

    async def _initialize(self) -> None:
        await super()._initialize()
        if self.fixed_client is not None:
            self.context.client_info = self.fixed_client
        storage = self.context.storage
        assert isinstance(storage, KvTokenStorage)
        _restore(self, storage)

    async def _perform_authorization(self) -> httpx2.Request:
        """On a 401: refresh first if a refresh token is held, else send the principal to authorize (a 403
        asking for more scope always goes to the principal: a refresh cannot widen the grant)."""
        self._refreshing = self.last_status == 401 and self.context.can_refresh_token()
        if self._refreshing:
            return await self._refresh_token()
        return await super()._perform_authorization()

    async def _handle_token_response(self, response: httpx2.Response) -> None:
        if self._refreshing:
            self._refreshing = False
            if await self._handle_refresh_response(response):
                return
            storage = self.context.storage
            assert isinstance(storage, KvTokenStorage)
            await storage.clear_tokens()
            await self._perform_authorization_code_grant()  # raises AuthorizationRequired
        await super()._handle_token_response(response)

    async def _perform_authorization_code_grant(self) -> tuple[str, str]:
        """Build the authorization URL, park the verifier for the callback, and stop here."""
        context = self.context
        if self.manager.config.redirect_uri is None:
            raise OAuthFlowError(
                "the server requires OAuth authorization, but the MCP provider has no oauth.redirect_uri "
                "(this server's URL + /v1/tool-runtime/oauth/callback) to receive it"
            )
        if context.client_info is None:
            raise OAuthFlowError("no OAuth client is registered for this server")
        if context.oauth_metadata is not None and context.oauth_metadata.authorization_endpoint:
            endpoint = str(context.oauth_metadata.authorization_endpoint)
        else:
            endpoint = context.get_authorization_base_url(context.server_url) + "/authorize"
        pkce = PKCEParameters.generate()
        state = secrets.token_urlsafe(32)
        params = {
            "response_type": "code",
            "client_id": context.client_info.client_id,
            "redirect_uri": self.manager.config.redirect_uri,
            "state": state,
            "code_challenge": pkce.code_challenge,
            "code_challenge_method": "S256",
        }
        if context.should_include_resource_param(context.protocol_version):
            params["resource"] = context.get_resource_url()
        if context.client_metadata.scope:
            params["scope"] = context.client_metadata.scope
        pending = {
            "principal": self.principal,
            "name": self.name,
            "server_url": context.server_url,
            "verifier": pkce.code_verifier,
            "protocol_version": context.protocol_version,
            "client_info": context.client_info.model_dump(mode="json", exclude_none=True),
            "scope": context.client_metadata.scope,
        }
        if context.oauth_metadata is not None:
            pending["asm"] = context.oauth_metadata.model_dump(mode="json", exclude_none=True)
        if context.protected_resource_metadata is not None:
            pending["prm"] = context.protected_resource_metadata.model_dump(mode="json", exclude_none=True)
        ttl = self.manager.config.authorization_ttl
        await self.manager.kv.set(
            self.manager.prefix + "pending:" + _digest(state), self.manager.cipher.seal(pending), ttl
        )
        raise AuthorizationRequired(f"{endpoint}?{urlencode(params)}", ttl)

    async def finish(self, code: str, pending: dict[str, Any], iss: str | None) -> None:
        """The callback's half: exchange ``code`` (with the parked verifier) and store the tokens."""
        async with self.context.lock:
            if not self._initialized:
                await self._initialize()
            context = self.context
            context.client_info = OAuthClientInformationFull.model_validate(pending["client_info"])
            context.protocol_version = pending.get("protocol_version")
            context.client_metadata.scope = pending.get("scope")
            if "asm" in pending:
                context.oauth_metadata = OAuthMetadata.model_validate(pending["asm"])
            if "prm" in pending:
                context.protected_resource_metadata = ProtectedResourceMetadata.model_validate(pending["prm"])
            try:
                validate_authorization_response_iss(iss, context.oauth_metadata)
            except OAuthFlowError as exc:
                raise OAuthCallbackError(str(exc)) from None
            request = await self._exchange_token_authorization_code(code, pending["verifier"])
            async with httpx2.AsyncClient(timeout=self.manager.http_timeout) as client:
                response = await client.send(request)
            try:
                await super()._handle_token_response(response)
            except Exception as exc:
                raise OAuthCallbackError(f"the authorization server refused the code: {exc}") from None


class OAuthManager:
    """Picks the OAuth identity for each connection and keeps one SDK provider per identity."""

    def __init__(self, config: OAuthConfig, http_timeout: float, provider_id: str = "mcp") -> None:
        self.prefix = f"{_PREFIX}{provider_id}:"
        self.config = config
        self.cipher = TokenCipher(config.token_key)
        self.http_timeout = http_timeout
        self.kv: Any = None
        self._providers: OrderedDict[str, OAuthClientProvider] = OrderedDict()

    def attach(self, kv: Any) -> None:
        self.kv = kv

    def _client_for(self, connection: McpConnection) -> OAuthClient | None:
        clients = self.config.clients
        return clients.get(connection.name) or (clients.get(connection.uri) if connection.uri else None)

    def auth_for(self, connection: McpConnection, principal: str | None) -> tuple[httpx2.Auth | None, str | None]:
        """The OAuth provider for ``connection`` and the identity it stands for (a pool-key part).

        None for stdio, for a connection that already carries an ``Authorization`` header (an explicit
        credential wins), and when no KV store is attached (OAuth off)."""
        if connection.transport == "stdio" or connection.uri is None or self.kv is None:
            return None, None
        if any(name.lower() == "authorization" for name in connection.headers):
            return None, None
        server = connection.uri
        client = self._client_for(connection)
        if client is not None and client.grant_type == "client_credentials":
            identity = "machine:" + _digest(server, client.client_id)
        else:
            identity = "user:" + _digest(server, principal or "anonymous")
        provider = self._providers.get(identity)
        if provider is None:
            provider = self._build(identity, connection.name, server, client, principal or "anonymous")
            self._providers[identity] = provider
            while len(self._providers) > _MAX_CACHED:
                self._providers.popitem(last=False)
        else:
            self._providers.move_to_end(identity)
        return provider, identity

    def _storage(self, identity: str, server: str) -> KvTokenStorage:
        return KvTokenStorage(
            self.kv,
            self.cipher,
            self.prefix + "tokens:" + _digest(identity),
            self.prefix + "client:" + _digest(server),
        )

    def _build(
        self, identity: str, name: str, server: str, client: OAuthClient | None, principal: str
    ) -> OAuthClientProvider:
        storage = self._storage(identity, server)
        provider: OAuthClientProvider
        if client is not None and client.grant_type == "client_credentials" and client.private_key:
            signer = SignedJWTParameters(
                issuer=client.client_id,
                subject=client.client_id,
                signing_key=client.private_key,
                signing_algorithm=client.signing_algorithm,
            )
            provider = MachineJwtOAuth(
                server,
                storage,
                client.client_id,
                signer.create_assertion_provider(),
                scope=client.scope,
                issuer=client.issuer,
            )
        elif client is not None and client.grant_type == "client_credentials":
            provider = MachineOAuth(
                server,
                storage,
                client.client_id,
                client.client_secret or "",
                token_endpoint_auth_method=client.token_endpoint_auth_method,
                scope=client.scope,
                issuer=client.issuer,
            )
        else:
            redirect = [self.config.redirect_uri] if self.config.redirect_uri else None
            metadata = OAuthClientMetadata(
                redirect_uris=redirect,  # type: ignore[arg-type]
                client_name=self.config.client_name,
                grant_types=["authorization_code", "refresh_token"],
                response_types=["code"],
                token_endpoint_auth_method="none" if client is None else client.token_endpoint_auth_method,
                scope=(client.scope if client is not None else None) or self.config.scope,
            )
            fixed = None
            if client is not None:
                fixed = OAuthClientInformationFull(
                    redirect_uris=redirect,  # type: ignore[arg-type]
                    client_id=client.client_id,
                    client_secret=client.client_secret,
                    grant_types=["authorization_code", "refresh_token"],
                    token_endpoint_auth_method=client.token_endpoint_auth_method,
                    scope=client.scope,
                )
            provider = UserOAuth(self, principal, name, server, storage, metadata, fixed)
        storage.context = provider.context
        return provider

    async def complete(self, state: str, code: str, iss: str | None) -> dict[str, Any]:
        """Finish a code flow from the callback: the parked request is used once, then gone."""
        if self.kv is None:
            raise OAuthCallbackError("MCP OAuth is not configured on this server")
        key = self.prefix + "pending:" + _digest(state)
        pending = self.cipher.open(await self.kv.get(key))
        if pending is None:
            raise OAuthCallbackError(
                "unknown or expired authorization state; call the tool again to get a new authorization URL"
            )
        await self.kv.delete(key)
        server = str(pending["server_url"])
        principal = str(pending["principal"])
        connection = McpConnection(name=str(pending.get("name") or server), uri=server)
        provider, _ = self.auth_for(connection, principal)
        if not isinstance(provider, UserOAuth):
            raise OAuthCallbackError("this server is no longer reached with a per-user authorization")
        await provider.finish(code, pending, iss)
        return {"server": server, "principal": principal}
