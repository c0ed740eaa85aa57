"""Each auth provider against a real identity provider on loopback (see test_auth_idp)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import jwt
import pytest

from tests.integration.harness import free_port
from tests.integration.test_auth_idp import CLIENT_ID, CLIENT_SECRET, REVIEWER_TOKEN, IdentityProvider
from underlay.api.errors import ServiceUnavailableError, UnauthenticatedError
from underlay.core.auth.authenticator import Authenticator
from underlay.core.auth.base import AuthRequest
from underlay.core.auth.config import AuthConfig
from underlay.core.identity import Principal

GATEWAY_SECRET = "gateway-shared-secret-0123456789"


@pytest.fixture(scope="module")
def idp() -> Iterator[IdentityProvider]:
    provider = IdentityProvider()
    provider.add_key("rsa-1", "RS256")
    provider.add_key("ec-1", "ES256")
    provider.start()
    yield provider
    provider.stop()


def jwt_entry(idp: IdentityProvider, **overrides: Any) -> dict[str, Any]:
    return {
        "type": "jwt",
        "jwks_url": f"{idp.url}/jwks.json",
        "issuer": idp.issuer,
        "audience": idp.audience,
        "attribute_claims": {"roles": "roles", "teams": "groups", "scopes": "scope"},
        "refetch_min_seconds": 0.2,
        **overrides,
    }


@pytest.fixture
async def make() -> AsyncIterator[Any]:
    """Build an Authenticator from provider entries; closes every one built at the end of the test."""
    built: list[Authenticator] = []

    def build(*entries: dict[str, Any]) -> Authenticator:
        authenticator = Authenticator(AuthConfig.model_validate({"providers": list(entries)}))
        built.append(authenticator)
        return authenticator

    yield build
    for authenticator in built:
        await authenticator.aclose()


def bearer(token: str, **headers: str) -> AuthRequest:
    raw = [(b"authorization", f"Bearer {token}".encode())] if token else []
    raw += [(k.lower().encode(), v.encode()) for k, v in headers.items()]
    return AuthRequest.from_headers(raw)


async def rejected(authenticator: Authenticator, request: AuthRequest, token: str = "") -> UnauthenticatedError:
    with pytest.raises(UnauthenticatedError) as caught:
        await authenticator.authenticate(request)
    if token:
        assert token not in caught.value.message  # a token is never echoed
    return caught.value


# --- JWT ---------------------------------------------------------------------------------------------


async def test_jwt_rs256_and_es256_map_claims_to_attributes(idp: IdentityProvider, make: Any) -> None:
    auth = make(jwt_entry(idp))
    rsa_token = idp.token("rsa-1", sub="alice", roles=["admin", "user"], groups=["team-a"], scope="read write")
    principal = await auth.authenticate(bearer(rsa_token))
    assert principal == Principal(
        "alice", {"roles": ["admin", "user"], "teams": ["team-a"], "scopes": ["read", "write"]}
    )
    ec_principal = await auth.authenticate(bearer(idp.token("ec-1", sub="bob", groups="team-b")))
    assert ec_principal == Principal("bob", {"teams": ["team-b"]})


async def test_jwks_is_fetched_once_and_reused(idp: IdentityProvider, make: Any) -> None:
    auth = make(jwt_entry(idp))
    before = idp.calls["jwks"]
    for i in range(20):
        assert (await auth.authenticate(bearer(idp.token("rsa-1", sub=f"user-{i}")))).id == f"user-{i}"
    assert idp.calls["jwks"] - before == 1


async def test_jwks_is_refetched_after_cache_seconds(idp: IdentityProvider, make: Any) -> None:
    auth = make(jwt_entry(idp, cache_seconds=0.3, refetch_min_seconds=0))
    before = idp.calls["jwks"]
    await auth.authenticate(bearer(idp.token("rsa-1")))
    await auth.authenticate(bearer(idp.token("rsa-1")))
    assert idp.calls["jwks"] - before == 1
    await asyncio.sleep(0.4)
    await auth.authenticate(bearer(idp.token("rsa-1")))
    assert idp.calls["jwks"] - before == 2


async def test_key_rotation_new_kid_is_fetched_but_unknown_kids_are_rate_limited(
    idp: IdentityProvider, make: Any
) -> None:
    auth = make(jwt_entry(idp, refetch_min_seconds=1.0))
    await auth.authenticate(bearer(idp.token("rsa-1")))
    fetched = idp.calls["jwks"]
    await asyncio.sleep(1.05)
    # The issuer rotates: a new key appears in its JWKS, and tokens signed with it start arriving.
    idp.add_key("rsa-rotated", "RS256")
    rotated = idp.token("rsa-rotated", sub="carol")
    assert (await auth.authenticate(bearer(rotated))).id == "carol"
    assert idp.calls["jwks"] == fetched + 1
    # A kid the issuer never published: one refetch per window at most, however many such tokens come.
    idp.add_key("rsa-unpublished", "RS256", publish=False)
    for _ in range(5):
        error = await rejected(auth, bearer(idp.token("rsa-unpublished")))
        assert "rsa-unpublished" in error.message and error.code == "invalid_token"
    assert idp.calls["jwks"] <= fetched + 2
    assert (await auth.authenticate(bearer(rotated))).id == "carol"


async def test_jwt_rejections(idp: IdentityProvider, make: Any) -> None:
    auth = make(jwt_entry(idp))
    expired = idp.token("rsa-1", lifetime=-120)
    assert "expired" in (await rejected(auth, bearer(expired), expired)).message
    not_yet = idp.token("rsa-1", nbf=int(time.time()) + 600)
    assert "not valid yet" in (await rejected(auth, bearer(not_yet), not_yet)).message
    wrong_aud = idp.token("rsa-1", aud="someone-else")
    assert "audience" in (await rejected(auth, bearer(wrong_aud), wrong_aud)).message
    wrong_iss = idp.token("rsa-1", iss="https://elsewhere.example")
    assert "issuer" in (await rejected(auth, bearer(wrong_iss), wrong_iss)).message
    no_exp = idp.token("rsa-1", exp=None)
    assert "'exp'" in (await rejected(auth, bearer(no_exp), no_exp)).message
    # Signed by a key that is not the one the kid names: the signature must not verify.
    forged = jwt.encode(
        jwt.decode(idp.token("rsa-1"), options={"verify_signature": False}),
        idp.add_key("attacker", "RS256", publish=False).private,
        algorithm="RS256",
        headers={"kid": "rsa-1"},
    )
    assert "signature" in (await rejected(auth, bearer(forged), forged)).message
    # Algorithm confusion: HS256 keyed with anything, or no signature at all, is refused before any key lookup.
    claims = {"iss": idp.issuer, "aud": idp.audience, "sub": "mallory", "exp": int(time.time()) + 60}
    hs = jwt.encode(claims, "guessed-secret-guessed-secret-32b", algorithm="HS256", headers={"kid": "rsa-1"})
    assert "HS256" in (await rejected(auth, bearer(hs), hs)).message
    unsigned = jwt.encode(claims, None, algorithm="none", headers={"kid": "rsa-1"})
    assert "'none'" in (await rejected(auth, bearer(unsigned), unsigned)).message
    no_sub = idp.token("rsa-1", sub=None)
    assert "'sub'" in (await rejected(auth, bearer(no_sub), no_sub)).message


async def test_jwt_unreachable_jwks_is_503_naming_the_provider(make: Any, idp: IdentityProvider) -> None:
    auth = make(jwt_entry(idp, jwks_url=f"http://127.0.0.1:{free_port()}/jwks.json", name="corp-sso"))
    token = idp.token("rsa-1")
    with pytest.raises(ServiceUnavailableError) as caught:
        await auth.authenticate(bearer(token))
    assert caught.value.status_code == 503 and "corp-sso" in caught.value.message
    assert "cannot be reached" in caught.value.message and token not in caught.value.message


# --- introspection -----------------------------------------------------------------------------------


def introspection_entry(idp: IdentityProvider, **overrides: Any) -> dict[str, Any]:
    return {
        "type": "introspection",
        "url": f"{idp.url}/introspect",
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        "attribute_claims": {"scopes": "scope", "projects": "projects"},
        **overrides,
    }


async def test_introspection_active_tokens_are_cached_and_inactive_refused(idp: IdentityProvider, make: Any) -> None:
    auth = make(introspection_entry(idp))
    idp.opaque_tokens["opaque-dave"] = {"sub": "dave", "scope": "chat files", "projects": ["p1"]}
    before = idp.calls["introspect"]
    for _ in range(3):
        assert await auth.authenticate(bearer("opaque-dave")) == Principal(
            "dave", {"scopes": ["chat", "files"], "projects": ["p1"]}
        )
    assert idp.calls["introspect"] - before == 1
    error = await rejected(auth, bearer("opaque-unknown"), "opaque-unknown")
    assert "not active" in error.message and error.code == "invalid_token"
    # Inactive answers are not cached: a token the issuer starts honouring works at once.
    idp.opaque_tokens["opaque-unknown"] = {"username": "erin"}
    assert (await auth.authenticate(bearer("opaque-unknown"))).id == "erin"


async def test_introspection_cache_ends_at_token_expiry(idp: IdentityProvider, make: Any) -> None:
    auth = make(introspection_entry(idp, cache_seconds=3600))
    idp.opaque_tokens["opaque-short"] = {"sub": "frank", "exp": time.time() + 1.0}
    assert (await auth.authenticate(bearer("opaque-short"))).id == "frank"
    assert (await auth.authenticate(bearer("opaque-short"))).id == "frank"
    await asyncio.sleep(1.1)
    await rejected(auth, bearer("opaque-short"))  # not served from the cache past exp


async def test_introspection_cache_is_keyed_by_digest_not_token(idp: IdentityProvider, make: Any) -> None:
    auth = make(introspection_entry(idp))
    idp.opaque_tokens["opaque-grace"] = {"sub": "grace"}
    await auth.authenticate(bearer("opaque-grace"))
    cache = auth.providers[0].cache  # type: ignore[attr-defined]
    assert list(cache._entries) == [hashlib.sha256(b"opaque-grace").digest()]


async def test_introspection_failures_are_503(idp: IdentityProvider, make: Any) -> None:
    wrong_client = make(introspection_entry(idp, client_secret="wrong"))
    with pytest.raises(ServiceUnavailableError) as caught:
        await wrong_client.authenticate(bearer("opaque-x"))
    assert "client_id/client_secret" in caught.value.message
    down = make(introspection_entry(idp, url=f"http://127.0.0.1:{free_port()}/introspect"))
    with pytest.raises(ServiceUnavailableError) as caught:
        await down.authenticate(bearer("opaque-x"))
    assert "introspection" in caught.value.message and "opaque-x" not in caught.value.message


# --- webhook, trusted headers, kubernetes --------------------------------------------------------------


async def test_webhook(idp: IdentityProvider, make: Any) -> None:
    auth = make({"type": "webhook", "url": f"{idp.url}/webhook"})
    idp.webhook_tokens["hook-heidi"] = {"principal": "heidi", "attributes": {"teams": ["ops"], "roles": "admin"}}
    assert await auth.authenticate(bearer("hook-heidi")) == Principal("heidi", {"teams": ["ops"], "roles": ["admin"]})
    calls = idp.calls["webhook"]
    await auth.authenticate(bearer("hook-heidi"))
    assert idp.calls["webhook"] == calls  # cached
    assert "webhook rejected" in (await rejected(auth, bearer("hook-nobody"), "hook-nobody")).message
    down = make({"type": "webhook", "url": f"http://127.0.0.1:{free_port()}/hook"})
    with pytest.raises(ServiceUnavailableError):
        await down.authenticate(bearer("hook-heidi"))


async def test_trusted_headers_need_the_gateway_secret(make: Any) -> None:
    auth = make(
        {
            "type": "trusted_headers",
            "principal_header": "X-Forwarded-User",
            "attribute_headers": {"teams": "X-Forwarded-Groups"},
            "shared_secret": GATEWAY_SECRET,
        }
    )
    through_gateway = bearer(
        "", **{"x-forwarded-user": "ivan", "x-forwarded-groups": "team-a, team-b", "x-gateway-secret": GATEWAY_SECRET}
    )
    assert await auth.authenticate(through_gateway) == Principal("ivan", {"teams": ["team-a", "team-b"]})
    forged = await rejected(auth, bearer("", **{"x-forwarded-user": "ivan"}))
    assert "x-gateway-secret" in forged.message
    wrong = await rejected(auth, bearer("", **{"x-forwarded-user": "ivan", "x-gateway-secret": "guess"}))
    assert wrong.code == "invalid_token"
    missing = await rejected(auth, bearer(""))
    assert missing.code == "missing_credentials" and "gateway" in missing.message


async def test_kubernetes_token_review(idp: IdentityProvider, make: Any) -> None:
    entry = {"type": "kubernetes", "api_server": idp.url, "token": REVIEWER_TOKEN, "audiences": ["underlay"]}
    auth = make(entry)
    idp.cluster_tokens["sa-token"] = {
        "username": "system:serviceaccount:team-a:agent",
        "uid": "1234",
        "groups": ["system:serviceaccounts", "system:serviceaccounts:team-a"],
    }
    principal = await auth.authenticate(bearer("sa-token"))
    assert principal == Principal(
        "system:serviceaccount:team-a:agent",
        {"groups": ["system:serviceaccounts", "system:serviceaccounts:team-a"], "namespaces": ["team-a"]},
    )
    assert "does not authenticate" in (await rejected(auth, bearer("not-a-cluster-token"))).message
    refused = make({**entry, "token": "not-allowed-to-review"})
    with pytest.raises(ServiceUnavailableError) as caught:
        await refused.authenticate(bearer("sa-token"))
    assert "system:auth-delegator" in caught.value.message


async def test_kubernetes_reads_its_token_file(idp: IdentityProvider, make: Any, tmp_path: Any) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(REVIEWER_TOKEN + "\n")
    auth = make({"type": "kubernetes", "api_server": idp.url, "token_file": str(token_file)})
    idp.cluster_tokens["user-token"] = {"username": "judy", "groups": ["devs"]}
    assert await auth.authenticate(bearer("user-token")) == Principal("judy", {"groups": ["devs"]})


# --- the chain -----------------------------------------------------------------------------------------


async def test_chain_first_provider_that_recognizes_decides(idp: IdentityProvider, make: Any) -> None:
    key = "sk-underlay-static-key"
    auth = make(
        {
            "type": "api_keys",
            "keys": [{"sha256": hashlib.sha256(key.encode()).hexdigest(), "principal": "svc", "attributes": {}}],
        },
        jwt_entry(idp),
        introspection_entry(idp),
    )
    idp.opaque_tokens["opaque-kim"] = {"sub": "kim"}
    assert (await auth.authenticate(bearer(key))).id == "svc"
    assert (await auth.authenticate(bearer(idp.token("rsa-1", sub="liz")))).id == "liz"
    assert (await auth.authenticate(bearer("opaque-kim"))).id == "kim"
    # A JWT of our issuer with a bad signature is decided by the jwt provider: never sent to introspection.
    before = idp.calls["introspect"]
    expired = idp.token("rsa-1", lifetime=-300)
    assert "expired" in (await rejected(auth, bearer(expired), expired)).message
    assert idp.calls["introspect"] == before
    garbage = await rejected(auth, bearer("sk-wrong"), "sk-wrong")
    assert "api_keys: not a known API key" in garbage.message and "introspection: the token is not active" in (
        garbage.message
    )
    assert (await rejected(auth, bearer(""))).code == "missing_credentials"


async def test_jwt_claim_edge_cases(idp: IdentityProvider, make: Any) -> None:
    auth = make(jwt_entry(idp))
    listed = idp.token("rsa-1", aud=["other", idp.audience])
    assert (await auth.authenticate(bearer(listed))).id == "alice"
    for bad, expected in [
        (idp.token("rsa-1", aud=None), "audience"),
        (idp.token("rsa-1", aud=["other"]), "audience"),
        (idp.token("rsa-1", iat=int(time.time()) + 600), "not valid yet"),
        (idp.token("rsa-1", exp="tomorrow"), "not a number"),
        (idp.token("rsa-1", exp=True), "not a number"),
        (idp.token("rsa-1", exp=int(time.time()) - 5), None),  # within the leeway: accepted
    ]:
        if expected is None:
            assert (await auth.authenticate(bearer(bad))).id == "alice"
        else:
            assert expected in (await rejected(auth, bearer(bad), bad)).message
    key = idp.keys["rsa-1"]
    claims = {"iss": idp.issuer, "aud": idp.audience, "sub": "x", "exp": int(time.time()) + 60}
    crit = jwt.encode(claims, key.private, algorithm="RS256", headers={"kid": "rsa-1", "crit": ["exp"]})
    assert "critical" in (await rejected(auth, bearer(crit), crit)).message
    # No kid: every published key of the right type is tried.
    no_kid = jwt.encode(claims, idp.keys["ec-1"].private, algorithm="ES256")
    assert (await auth.authenticate(bearer(no_kid))).id == "x"
    # A tampered payload under a valid signature.
    header, _, signature = idp.token("rsa-1").split(".")
    payload = jwt.utils.base64url_encode(json.dumps({**claims, "sub": "root"}).encode()).decode()
    tampered = f"{header}.{payload}.{signature}"
    assert "signature" in (await rejected(auth, bearer(tampered), tampered)).message


async def test_a_jwks_url_that_answers_an_error_is_503_with_the_status(idp: IdentityProvider, make: Any) -> None:
    auth = make(jwt_entry(idp, jwks_url=f"{idp.url}/no-such-jwks.json"))
    with pytest.raises(ServiceUnavailableError) as caught:
        await auth.authenticate(bearer(idp.token("rsa-1")))
    assert "answered HTTP 404" in caught.value.message
