"""Auth end to end: a real ``underlay run`` (echo provider) with API keys and JWTs from a loopback issuer."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from tests.integration.harness import RunningServer, free_port, start_server
from tests.integration.test_auth_idp import CLIENT_ID, CLIENT_SECRET, IdentityProvider

ALICE_KEY = "sk-underlay-alice-0001"
BOB_KEY = "sk-underlay-bob-0002"
ORIGIN = "https://app.example"
DOWN_ISSUER = "https://down-sso.example"
GATEWAY_SECRET = "gateway-secret-for-the-auth-tests"


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@pytest.fixture(scope="module")
def idp() -> Iterator[IdentityProvider]:
    provider = IdentityProvider()
    provider.add_key("rsa-1", "RS256")
    provider.start()
    yield provider
    provider.stop()


@pytest.fixture(scope="module")
def server(
    idp: IdentityProvider, tmp_path_factory: pytest.TempPathFactory, external_provider_path: Path
) -> Iterator[RunningServer]:
    config = {
        "apis": ["inference", "models"],
        "providers": {"inference": [{"provider_id": "echo", "provider_type": "remote::echo-test", "config": {}}]},
        "server": {
            "cors_origins": [ORIGIN],
            "auth": {
                "providers": [
                    {
                        "type": "api_keys",
                        "keys": [
                            {"sha256": sha256(ALICE_KEY), "principal": "alice", "attributes": {"teams": ["team-a"]}},
                            {"sha256": sha256(BOB_KEY), "principal": "bob", "attributes": {"teams": ["team-b"]}},
                        ],
                    },
                    {
                        "type": "jwt",
                        "jwks_url": f"{idp.url}/jwks.json",
                        "issuer": idp.issuer,
                        "audience": idp.audience,
                        "attribute_claims": {"roles": "roles"},
                    },
                    {
                        "type": "introspection",
                        "url": f"{idp.url}/introspect",
                        "client_id": CLIENT_ID,
                        "client_secret": "${env.INTROSPECTION_SECRET}",
                        "attribute_claims": {"scopes": "scope"},
                    },
                    {
                        "type": "trusted_headers",
                        "attribute_headers": {"teams": "x-forwarded-groups"},
                        "shared_secret": "${env.GATEWAY_SECRET}",
                    },
                    {
                        "type": "jwt",
                        "name": "down-sso",
                        "jwks_url": f"http://127.0.0.1:{free_port()}/jwks.json",
                        "issuer": DOWN_ISSUER,
                    },
                ]
            },
        },
    }
    running = start_server(
        config,
        tmp_path_factory.mktemp("auth"),
        extra_pythonpath=[external_provider_path],
        env={"INTROSPECTION_SECRET": CLIENT_SECRET, "GATEWAY_SECRET": GATEWAY_SECRET},
    )
    yield running
    running.stop()


def sdk(server: RunningServer, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.v1, api_key=key, max_retries=0)


def test_the_jwks_is_fetched_at_start_up(server: RunningServer, idp: IdentityProvider) -> None:
    deadline = time.monotonic() + 10
    while idp.calls["jwks"] == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert idp.calls["jwks"] == 1  # before any token arrived


def test_health_and_version_stay_public(server: RunningServer) -> None:
    assert httpx.get(f"{server.v1}/health").json() == {"status": "OK"}
    assert httpx.get(f"{server.v1}/version").status_code == 200


def test_missing_or_wrong_credentials_are_401_in_the_openai_envelope(server: RunningServer) -> None:
    missing = httpx.get(f"{server.v1}/models")
    assert missing.status_code == 401
    assert missing.headers["www-authenticate"].startswith("Bearer")
    assert missing.headers["x-request-id"].startswith("req_")
    assert missing.json()["error"]["type"] == "authentication_error"
    with pytest.raises(openai.AuthenticationError) as caught:
        sdk(server, "sk-not-a-key").models.list()
    assert caught.value.status_code == 401 and "sk-not-a-key" not in str(caught.value)


def test_openai_sdk_with_a_static_key(server: RunningServer) -> None:
    client = sdk(server, ALICE_KEY)
    assert "echo/echo" in {m.id for m in client.models.list()}
    reply = client.chat.completions.create(model="echo/echo", messages=[{"role": "user", "content": "hi"}])
    assert reply.choices[0].message.content == "echo: hi"
    streamed = client.chat.completions.create(
        model="echo/echo", messages=[{"role": "user", "content": "s"}], stream=True
    )
    assert "".join(c.choices[0].delta.content or "" for c in streamed if c.choices) == "echo: s"


def test_openai_sdk_with_a_jwt(server: RunningServer, idp: IdentityProvider) -> None:
    token = idp.token("rsa-1", sub="carol", roles=["user"])
    assert "echo/echo" in {m.id for m in sdk(server, token).models.list()}
    with pytest.raises(openai.AuthenticationError) as caught:
        sdk(server, idp.token("rsa-1", lifetime=-300)).models.list()
    assert "expired" in str(caught.value)
    with pytest.raises(openai.AuthenticationError):
        sdk(server, idp.token("rsa-1", aud="another-service")).models.list()


def test_openai_sdk_with_an_opaque_token(server: RunningServer, idp: IdentityProvider) -> None:
    idp.opaque_tokens["opaque-for-dana"] = {"sub": "dana", "scope": "models"}
    before = idp.calls["introspect"]
    client = sdk(server, "opaque-for-dana")
    assert "echo/echo" in {m.id for m in client.models.list()}
    assert "echo/echo" in {m.id for m in client.models.list()}
    assert idp.calls["introspect"] - before == 1  # the second call was served from the cache
    with pytest.raises(openai.AuthenticationError) as caught:
        sdk(server, "opaque-revoked").models.list()
    assert "not active" in str(caught.value)


def test_gateway_headers_need_the_shared_secret(server: RunningServer) -> None:
    identity = {"x-forwarded-user": "erin", "x-forwarded-groups": "team-a"}
    through = httpx.get(f"{server.v1}/models", headers={**identity, "x-gateway-secret": GATEWAY_SECRET})
    assert through.status_code == 200
    forged = httpx.get(f"{server.v1}/models", headers=identity)
    assert forged.status_code == 401 and "x-gateway-secret" in forged.json()["error"]["message"]


def test_rows_belong_to_the_principal_the_credential_names(server: RunningServer) -> None:
    alice, bob = sdk(server, ALICE_KEY), sdk(server, BOB_KEY)
    made = alice.chat.completions.create(model="echo/echo", messages=[{"role": "user", "content": "mine"}], store=True)
    assert alice.chat.completions.retrieve(made.id).id == made.id
    with pytest.raises(openai.NotFoundError):
        bob.chat.completions.retrieve(made.id)
    assert made.id not in {c.id for c in bob.chat.completions.list(limit=100).data}


def test_cors_preflight_needs_no_credentials(server: RunningServer) -> None:
    preflight = httpx.options(
        f"{server.v1}/chat/completions",
        headers={
            "origin": ORIGIN,
            "access-control-request-method": "POST",
            "access-control-request-headers": "authorization",
        },
    )
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == ORIGIN


def test_an_unreachable_issuer_is_503_naming_it(server: RunningServer, idp: IdentityProvider) -> None:
    token = idp.token("rsa-1", iss=DOWN_ISSUER)
    response = httpx.get(f"{server.v1}/models", headers={"authorization": f"Bearer {token}"})
    assert response.status_code == 503
    assert "down-sso" in response.json()["error"]["message"] and token not in response.text


def test_tokens_never_reach_the_log(server: RunningServer, idp: IdentityProvider) -> None:
    token = idp.token("rsa-1", lifetime=-300)
    assert httpx.get(f"{server.v1}/models", headers={"authorization": f"Bearer {token}"}).status_code == 401
    assert httpx.get(f"{server.v1}/models", headers={"authorization": "Bearer sk-leaky-guess"}).status_code == 401
    log = server.log()
    for secret in (ALICE_KEY, BOB_KEY, token, "sk-leaky-guess", token.split(".")[2], "opaque-for-dana", GATEWAY_SECRET):
        assert secret not in log
