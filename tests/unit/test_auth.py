"""Auth config, credential parsing, claim mapping, the token cache and the middleware (no network)."""

from __future__ import annotations

import hashlib
import json
import time
from typing import Any

import httpx
import pytest
import yaml

from underlay.api.errors import ServiceUnavailableError
from underlay.core.auth.authenticator import Authenticator
from underlay.core.auth.base import AuthRequest, map_attributes
from underlay.core.auth.cache import TokenCache
from underlay.core.auth.config import AuthConfig
from underlay.core.config import ConfigError, parse_run_config
from underlay.core.identity import ANONYMOUS, Principal, current_principal
from underlay.server.auth import AuthMiddleware

KEY = "sk-test-key-alice"
DIGEST = hashlib.sha256(KEY.encode()).hexdigest()

FULL_CONFIG = f"""
server:
  auth:
    providers:
      - type: api_keys
        keys:
          - sha256: "{DIGEST}"
            principal: alice
            attributes: {{roles: [user], teams: [team-a]}}
      - type: jwt
        jwks_url: http://127.0.0.1:9/jwks.json
        issuer: https://issuer.example
        audience: underlay
        principal_claim: sub
        attribute_claims: {{roles: roles, teams: groups}}
        cache_seconds: 300
      - type: introspection
        url: http://127.0.0.1:9/introspect
        client_id: underlay
        client_secret: s3cret
      - type: webhook
        url: http://127.0.0.1:9/hook
      - type: trusted_headers
        principal_header: x-forwarded-user
        attribute_headers: {{teams: x-forwarded-groups}}
        shared_secret: ${{env.GATEWAY_SECRET}}
      - type: kubernetes
        api_server: https://127.0.0.1:6443
        token: ${{env.K8S_TOKEN}}
    public_paths: ["/v1/health", "/v1/version"]
"""


def parse(text: str, **env: str) -> Any:
    return parse_run_config(yaml.safe_load(text), source="run.yaml", env=env)


def test_the_documented_config_shape_parses() -> None:
    config = parse(FULL_CONFIG, GATEWAY_SECRET="a-long-enough-gateway-secret", K8S_TOKEN="tok")
    auth = config.server.auth
    assert [p.type for p in auth.providers] == [
        "api_keys",
        "jwt",
        "introspection",
        "webhook",
        "trusted_headers",
        "kubernetes",
    ]
    assert auth.providers[0].keys[0].attributes == {"roles": ["user"], "teams": ["team-a"]}
    assert auth.providers[4].shared_secret == "a-long-enough-gateway-secret"
    assert auth.public_paths == ["/v1/health", "/v1/version"]
    names = [p.name for p in Authenticator(auth).providers]
    assert names == ["api_keys", "jwt", "introspection", "webhook", "trusted_headers", "kubernetes"]


@pytest.mark.parametrize(
    ("provider", "expected"),
    [
        ({"type": "api_keys", "keys": [{"sha256": "not-hex", "principal": "a"}]}, "keys[0].sha256"),
        ({"type": "jwt"}, "jwks_url"),
        ({"type": "jwt", "jwks_url": "http://x", "algorithms": ["HS256"]}, "HS256"),
        ({"type": "oauth", "url": "http://x"}, "providers[0]"),
        ({"type": "trusted_headers"}, "required key 'shared_secret' is missing"),
        ({"type": "webhook", "url": "http://x", "tiemout_seconds": 1}, "unknown key 'tiemout_seconds'"),
    ],
)
def test_config_mistakes_name_the_key(provider: dict[str, Any], expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_run_config({"server": {"auth": {"providers": [provider]}}}, source="run.yaml")
    message = str(caught.value)
    assert message.startswith("run.yaml: server.auth.providers") and expected in message
    assert "\n" not in message


def test_no_providers_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="server.auth.providers"):
        parse_run_config({"server": {"auth": {"providers": []}}}, source="run.yaml")


def test_bearer_parsing() -> None:
    assert AuthRequest.from_headers([(b"authorization", b"Bearer abc.def")]).bearer == "abc.def"
    assert AuthRequest.from_headers([(b"authorization", b"bearer   tok  ")]).bearer == "tok"
    assert AuthRequest.from_headers([(b"authorization", b"Basic dXNlcjpwYXNz")]).bearer is None
    assert AuthRequest.from_headers([(b"authorization", b"Bearer ")]).bearer is None
    assert AuthRequest.from_headers([]).bearer is None


def test_claims_map_to_list_attributes() -> None:
    claims = {
        "realm_access": {"roles": ["admin"]},
        "groups": "team-a",
        "scope": "read write",
        "https://example.com/projects": ["p1", 2],
        "level": 3,
    }
    mapping = {
        "roles": "realm_access.roles",
        "teams": "groups",
        "scopes": "scope",
        "projects": "https://example.com/projects",
        "levels": "level",
        "missing": "nope.deeper",
    }
    assert map_attributes(claims, mapping) == {
        "roles": ["admin"],
        "teams": ["team-a"],
        "scopes": ["read", "write"],
        "projects": ["p1", "2"],
        "levels": ["3"],
    }


def test_token_cache_expiry_ttl_and_bound() -> None:
    cache = TokenCache(ttl_seconds=60, max_entries=3)
    alice = Principal("alice")
    cache.put(b"a", alice, expires_at=time.time() - 1)  # already expired: not kept
    assert cache.get(b"a") is None and len(cache) == 0
    cache.put(b"a", alice, expires_at=time.time() + 0.05)
    assert cache.get(b"a") == alice
    time.sleep(0.06)
    assert cache.get(b"a") is None
    for key in (b"1", b"2", b"3", b"4"):
        cache.put(key, Principal(key.decode()))
    assert len(cache) == 3 and cache.get(b"1") is None and cache.get(b"4") == Principal("4")
    never = TokenCache(ttl_seconds=0)
    never.put(b"x", alice)
    assert never.get(b"x") is None


# --- the middleware, in process ----------------------------------------------------------------------


async def echo_principal(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """A bare ASGI endpoint that answers with the principal it sees."""
    principal = current_principal()
    body = json.dumps({"id": principal.id, "attributes": principal.attributes}).encode()
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": body})


def client_for(*providers: dict[str, Any], public_paths: list[str] | None = None) -> httpx.AsyncClient:
    config = AuthConfig.model_validate(
        {"providers": list(providers), **({"public_paths": public_paths} if public_paths is not None else {})}
    )
    app = AuthMiddleware(echo_principal, Authenticator(config), config.public_paths, config.realm)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


API_KEYS = {"type": "api_keys", "keys": [{"sha256": DIGEST, "principal": "alice", "attributes": {"roles": ["user"]}}]}


async def test_middleware_sets_the_principal_for_the_request_only() -> None:
    async with client_for(API_KEYS) as client:
        ok = await client.get("/v1/models", headers={"authorization": f"Bearer {KEY}"})
    assert ok.status_code == 200 and ok.json() == {"id": "alice", "attributes": {"roles": ["user"]}}
    assert current_principal() == ANONYMOUS


async def test_middleware_401s_in_the_openai_envelope_with_a_challenge() -> None:
    async with client_for(API_KEYS) as client:
        missing = await client.get("/v1/models")
        wrong = await client.post("/v1/chat/completions", headers={"authorization": "Bearer sk-nope"})
    assert missing.status_code == 401 and missing.headers["www-authenticate"] == 'Bearer realm="underlay"'
    error = missing.json()["error"]
    assert error["type"] == "authentication_error" and error["code"] == "missing_credentials"
    assert set(error) == {"message", "type", "param", "code"}
    assert wrong.status_code == 401 and 'error="invalid_token"' in wrong.headers["www-authenticate"]
    assert "sk-nope" not in wrong.text


async def test_public_paths_and_cors_preflight_need_no_credentials() -> None:
    async with client_for(API_KEYS, public_paths=["/v1/health", "/docs*"]) as client:
        assert (await client.get("/v1/health")).json()["id"] == "anonymous"
        assert (await client.get("/docs/oauth2-redirect")).status_code == 200
        assert (await client.get("/v1/version")).status_code == 401  # replaced the defaults
        preflight = await client.options(
            "/v1/models", headers={"origin": "https://app.example", "access-control-request-method": "POST"}
        )
        assert preflight.status_code == 200
        assert (await client.options("/v1/models")).status_code == 401  # not a preflight


async def test_an_unreachable_identity_provider_is_503_not_401() -> None:
    jwt_down = {"type": "jwt", "jwks_url": "http://127.0.0.1:9/jwks.json", "name": "corp-sso"}
    token = "eyJhbGciOiJSUzI1NiIsImtpZCI6ImsxIn0.eyJzdWIiOiJhIn0.c2ln"
    async with client_for(jwt_down) as client:
        response = await client.get("/v1/models", headers={"authorization": f"Bearer {token}"})
    assert response.status_code == 503 and response.headers["retry-after"]
    assert response.json()["error"]["type"] == ServiceUnavailableError.error_type
    assert "corp-sso" in response.json()["error"]["message"] and token not in response.text


async def test_websockets_are_authenticated_too() -> None:
    config = AuthConfig.model_validate({"providers": [API_KEYS]})
    reached: list[str] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        reached.append(current_principal().id)

    middleware = AuthMiddleware(app, Authenticator(config), config.public_paths, config.realm)
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def receive() -> dict[str, Any]:
        return {"type": "websocket.connect"}

    scope: dict[str, Any] = {"type": "websocket", "path": "/v1/realtime", "headers": []}
    await middleware(scope, receive, send)
    assert sent == [{"type": "websocket.close", "code": 1008, "reason": "authentication_error"}] and reached == []
    await middleware({**scope, "headers": [(b"authorization", f"Bearer {KEY}".encode())]}, receive, send)
    assert reached == ["alice"]
