"""Underlay's MCP client against a real OAuth-protected MCP server: authorization and elicitation.

The MCP server is the ``mcp`` SDK's ``MCPServer`` acting as an OAuth resource server; next to it runs
a small loopback authorization server written for these tests (``tests/fixtures/mcp/oauth_server.py``,
a stand-in for a real identity provider, speaking the documented OAuth wire format). The redirect a
browser would follow is driven programmatically: the test opens the authorization URL Underlay hands
back (the loopback server approves at once, as the user named by ``user=``), and follows the redirect
to Underlay's callback.

What is proven: discovery from the 401 (protected resource metadata, then authorization server
metadata, then dynamic registration), the PKCE code flow per principal, client credentials for an
operator-configured group, refresh when the token expires and when the server refuses it (401),
tokens encrypted at rest (the raw KV store holds no token), one principal never getting another's
token, and elicitation surfaced to the caller and answered on the next call.
"""

from __future__ import annotations

import hashlib
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest

from tests.integration.harness import FIXTURES, RunningServer, free_port, start_server

ALICE_KEY = "alice-underlay-key"
BOB_KEY = "bob-underlay-key"
TTL = 4  # seconds an access token lives: short, so a refresh happens within the test
PEM_MARKER = "-----BEGIN PRIVATE KEY-----not-a-real-key-----END PRIVATE KEY-----"
PASSPHRASE = "a passphrase only this test knows"


class OAuthFixture:
    def __init__(self, workdir: Path) -> None:
        self.as_port = free_port()
        self.mcp_port = free_port()
        self.issuer = f"http://127.0.0.1:{self.as_port}"
        self.url = f"http://127.0.0.1:{self.mcp_port}/mcp"
        log = (workdir / "oauth-fixture.log").open("ab")
        script = FIXTURES / "mcp" / "oauth_server.py"
        args = [sys.executable, str(script), "--as-port", str(self.as_port), "--mcp-port", str(self.mcp_port)]
        self.process = subprocess.Popen([*args, "--ttl", str(TTL)], stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        for port in (self.as_port, self.mcp_port):
            while True:
                assert self.process.poll() is None, "the OAuth fixture exited"
                try:
                    with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                        break
                except OSError:
                    assert time.monotonic() < deadline, "the OAuth fixture did not start"
                    time.sleep(0.05)

    def events(self, event: str | None = None, **match: str) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = httpx.get(f"{self.issuer}/events", timeout=10).json()
        return [
            e for e in found if (event is None or e["event"] == event) and all(e.get(k) == v for k, v in match.items())
        ]

    def stop(self) -> None:
        self.process.kill()
        self.process.wait(10)


@pytest.fixture(scope="module")
def oauth(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OAuthFixture]:
    fixture = OAuthFixture(tmp_path_factory.mktemp("oauth-fixture"))
    yield fixture
    fixture.stop()


def _sha(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


@pytest.fixture(scope="module")
def server(oauth: OAuthFixture, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    port = free_port()
    config = {
        "apis": ["tool_runtime"],
        "server": {
            "auth": {
                "providers": [
                    {
                        "type": "api_keys",
                        "keys": [
                            {"sha256": _sha(ALICE_KEY), "principal": "alice"},
                            {"sha256": _sha(BOB_KEY), "principal": "bob"},
                        ],
                    }
                ]
            }
        },
        "providers": {
            "tool_runtime": [
                {
                    "provider_id": "mcp",
                    "provider_type": "remote::model-context-protocol",
                    "config": {
                        "connect_timeout": 15,
                        "timeout": 30,
                        "oauth": {
                            "token_key": "${env.UNDERLAY_MCP_TOKEN_KEY}",
                            "redirect_uri": f"http://127.0.0.1:{port}/v1/tool-runtime/oauth/callback",
                            "clients": {
                                "machine": {
                                    "client_id": "machine-client",
                                    "client_secret": "machine-secret",
                                    "issuer": oauth.issuer,
                                },
                                # Never used here: only to see the key redacted from GET /v1/providers.
                                "http://127.0.0.1:9/mcp": {"client_id": "jwt-client", "private_key": PEM_MARKER},
                            },
                        },
                    },
                }
            ]
        },
        "tool_groups": [
            {"toolgroup_id": "protected", "provider_id": "mcp", "mcp_endpoint": oauth.url},
            {"toolgroup_id": "machine", "provider_id": "mcp", "mcp_endpoint": oauth.url},
        ],
    }
    running = start_server(
        config,
        tmp_path_factory.mktemp("mcp-auth"),
        port=port,
        env={"UNDERLAY_MCP_TOKEN_KEY": PASSPHRASE},
    )
    yield running
    running.stop()


def _call(server: RunningServer, key: str, tool: str, group: str, **extra: Any) -> dict[str, Any]:
    response = httpx.post(
        f"{server.v1}/tool-runtime/invoke",
        json={"tool_name": tool, "kwargs": extra.pop("kwargs", {}), "toolgroup_id": group, **extra},
        headers={"Authorization": f"Bearer {key}"},
        timeout=60,
    )
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def _text(result: dict[str, Any]) -> str:
    assert result["error_message"] is None, result
    return str(result["content"][0]["text"])


def _authorize(server: RunningServer, oauth: OAuthFixture, key: str, user: str, tool: str = "whoami") -> str:
    """What a person does with the link: open it (the loopback server approves), follow the redirect.
    Returns the authorization URL."""
    needed = _call(server, key, tool, "protected")
    assert needed["error_code"] == "mcp_authorization_required", needed
    url = needed["metadata"]["authorization_url"]
    assert url in needed["error_message"] and "'protected'" in needed["error_message"]
    query = parse_qs(urlsplit(url).query)
    assert url.startswith(f"{oauth.issuer}/authorize?")
    assert query["code_challenge_method"] == ["S256"] and len(query["code_challenge"][0]) >= 43
    assert query["resource"] == [oauth.url] and query["redirect_uri"][0].startswith(server.base_url)
    redirect = httpx.get(f"{url}&{urlencode({'user': user})}", follow_redirects=False, timeout=10)
    assert redirect.status_code == 302, redirect.text
    callback = redirect.headers["location"]
    assert callback.startswith(f"{server.v1}/tool-runtime/oauth/callback?")
    done = httpx.get(callback, timeout=30)  # no Underlay credential: the state is the credential
    assert done.status_code == 200, done.text
    assert done.json()["status"] == "authorized" and done.json()["server"] == oauth.url
    replay = httpx.get(callback, timeout=30)
    assert replay.status_code == 400 and replay.json()["error"]["param"] == "state"  # single use
    return str(url)


def test_code_flow_with_discovery_registration_and_pkce(server: RunningServer, oauth: OAuthFixture) -> None:
    listing = httpx.get(
        f"{server.v1}/tool-runtime/list-tools",
        params={"toolgroup_id": "protected"},
        headers={"Authorization": f"Bearer {ALICE_KEY}"},
        timeout=60,
    )
    assert listing.status_code == 403, listing.text
    error = listing.json()["error"]
    assert error["code"] == "mcp_authorization_required" and f"{oauth.issuer}/authorize?" in error["message"]

    _authorize(server, oauth, ALICE_KEY, "alice@idp")
    assert _text(_call(server, ALICE_KEY, "whoami", "protected")) == "alice@idp"
    assert _text(_call(server, ALICE_KEY, "add", "protected", kwargs={"a": 2, "b": 3})) == "5"
    assert oauth.events("register"), "the client was not registered dynamically"
    assert oauth.events("token", grant="authorization_code", subject="alice@idp")


def test_tokens_are_per_principal(server: RunningServer, oauth: OAuthFixture) -> None:
    if not oauth.events("token", subject="alice@idp"):
        _authorize(server, oauth, ALICE_KEY, "alice@idp")
    # Bob is not served with Alice's token: he is asked to authorize for himself.
    _authorize(server, oauth, BOB_KEY, "bob@idp")
    assert _text(_call(server, BOB_KEY, "whoami", "protected")) == "bob@idp"
    assert _text(_call(server, ALICE_KEY, "whoami", "protected")) == "alice@idp"


def test_bad_callbacks_are_clear_400s(server: RunningServer) -> None:
    url = f"{server.v1}/tool-runtime/oauth/callback"
    unknown = httpx.get(url, params={"state": "not-a-state", "code": "x"}, timeout=30)
    assert unknown.status_code == 400 and "unknown or expired" in unknown.json()["error"]["message"]
    denied = httpx.get(url, params={"state": "s", "error": "access_denied"}, timeout=30)
    assert denied.status_code == 400 and "access_denied" in denied.json()["error"]["message"]
    huge = httpx.get(url, params={"state": "s" * 5000, "code": "x"}, timeout=30)
    assert huge.status_code == 400 and huge.json()["error"]["param"] == "state"


def test_client_credentials_for_an_operator_configured_group(server: RunningServer, oauth: OAuthFixture) -> None:
    assert _text(_call(server, ALICE_KEY, "whoami", "machine")) == "machine:machine-client"
    assert _text(_call(server, BOB_KEY, "whoami", "machine")) == "machine:machine-client"
    assert oauth.events("token", grant="client_credentials")


def test_refresh_on_expiry_and_on_401(server: RunningServer, oauth: OAuthFixture) -> None:
    if not oauth.events("token", subject="alice@idp"):
        _authorize(server, oauth, ALICE_KEY, "alice@idp")
    assert _text(_call(server, ALICE_KEY, "whoami", "protected")) == "alice@idp"
    before = len(oauth.events("token", grant="refresh_token", subject="alice@idp"))
    time.sleep(TTL + 1)  # the access token expires; the next call refreshes it first
    assert _text(_call(server, ALICE_KEY, "whoami", "protected")) == "alice@idp"
    after_expiry = len(oauth.events("token", grant="refresh_token", subject="alice@idp"))
    assert after_expiry > before

    assert httpx.post(f"{oauth.issuer}/revoke-all", timeout=10).status_code == 200  # the server now says 401
    assert _text(_call(server, ALICE_KEY, "whoami", "protected")) == "alice@idp"
    assert len(oauth.events("token", grant="refresh_token", subject="alice@idp")) > after_expiry
    assert _text(_call(server, BOB_KEY, "whoami", "machine")) == "machine:machine-client"  # new client credentials


def test_a_refused_refresh_on_an_open_session_asks_again(server: RunningServer, oauth: OAuthFixture) -> None:
    if not oauth.events("token", subject="alice@idp"):
        _authorize(server, oauth, ALICE_KEY, "alice@idp")
    assert _text(_call(server, ALICE_KEY, "whoami", "protected")) == "alice@idp"  # a session is open
    assert httpx.post(f"{oauth.issuer}/revoke-all", params={"refresh": 1}, timeout=10).status_code == 200
    # The 401 arrives on the open session and the refresh is refused: the caller is asked to authorize
    # (not told the server "closed the connection").
    _authorize(server, oauth, ALICE_KEY, "alice@idp")
    assert _text(_call(server, ALICE_KEY, "whoami", "protected")) == "alice@idp"


def test_a_scope_step_up_asks_the_principal_for_the_wider_grant(server: RunningServer, oauth: OAuthFixture) -> None:
    if not oauth.events("token", subject="alice@idp"):
        _authorize(server, oauth, ALICE_KEY, "alice@idp")
    assert _text(_call(server, ALICE_KEY, "whoami", "protected")) == "alice@idp"
    # 403 insufficient_scope on the open session: a refresh cannot widen the grant, so the principal is
    # asked again, for the scope the server named.
    url = _authorize(server, oauth, ALICE_KEY, "alice@idp", tool="admin_only")
    assert "admin" in parse_qs(urlsplit(url).query)["scope"][0].split()
    assert _text(_call(server, ALICE_KEY, "admin_only", "protected")) == "admin ok"
    assert _text(_call(server, ALICE_KEY, "whoami", "protected")) == "alice@idp"


def test_tokens_are_encrypted_at_rest(server: RunningServer, oauth: OAuthFixture) -> None:
    if not oauth.events("token", subject="alice@idp"):
        _authorize(server, oauth, ALICE_KEY, "alice@idp")
    _call(server, ALICE_KEY, "whoami", "protected")
    databases = list(server.config_path.parent.rglob("kvstore.db"))
    assert databases, "no KV store file"
    with sqlite3.connect(databases[0]) as db:
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        rows = [row for t in tables for row in db.execute(f'SELECT * FROM "{t}"')]  # noqa: S608 - test's own names
    stored = [row for row in rows if any("mcp-oauth:" in str(v) for v in row)]
    assert any("tokens:" in str(row) for row in stored), "no token record in the KV store"
    raw = b"".join(p.read_bytes() for p in databases[0].parent.glob("kvstore.db*"))
    issued = [t for e in oauth.events("token") for t in e["tokens"]]
    assert issued
    for token in issued:
        assert token.encode() not in raw, "a token is stored in clear"
        assert all(token not in str(row) for row in rows)
    assert b"machine-secret" not in raw


def test_oauth_secrets_are_redacted_from_the_provider_listing(server: RunningServer) -> None:
    listing = httpx.get(f"{server.v1}/providers", headers={"Authorization": f"Bearer {ALICE_KEY}"}, timeout=30)
    assert listing.status_code == 200, listing.text
    text = listing.text
    assert "machine-client" in text  # the config is shown...
    for secret in ("machine-secret", PASSPHRASE, PEM_MARKER):  # ...without its secrets
        assert secret not in text


def test_elicitation_is_surfaced_and_answered_on_the_next_call(server: RunningServer) -> None:
    asked = _call(server, ALICE_KEY, "ask_name", "machine")
    assert asked["error_code"] == "elicitation_required", asked
    question = asked["metadata"]["elicitation"]
    assert question["message"] == "What name should I greet?" and question["server"] == "machine"
    assert "name" in question["requested_schema"]["properties"]
    assert question["id"] in asked["error_message"] and "elicitation_responses" in asked["error_message"]

    answer = {"id": question["id"], "action": "accept", "content": {"name": "Ada"}}
    assert _text(_call(server, ALICE_KEY, "ask_name", "machine", elicitation_responses=[answer])) == "Hello, Ada!"
    declined = {"id": question["id"], "action": "decline"}
    assert _text(_call(server, ALICE_KEY, "ask_name", "machine", elicitation_responses=[declined])) == (
        "no name (decline)"
    )
    stranger = {"id": "elicit_unknown", "action": "accept", "content": {"name": "Eve"}}
    again = _call(server, ALICE_KEY, "ask_name", "machine", elicitation_responses=[stranger])
    assert again["error_code"] == "elicitation_required"  # an answer to another question is not used
    bad = httpx.post(
        f"{server.v1}/tool-runtime/invoke",
        json={
            "tool_name": "ask_name",
            "toolgroup_id": "machine",
            "elicitation_responses": [{"id": "x", "action": "ok"}],
        },
        headers={"Authorization": f"Bearer {ALICE_KEY}"},
        timeout=30,
    )
    assert bad.status_code == 400 and "action" in bad.json()["error"]["message"]
