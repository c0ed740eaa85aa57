"""The Tool Runtime API end to end: a real Underlay server driving real MCP servers built with the ``mcp``
SDK (streamable HTTP, SSE and stdio), the builtin web search over a real local FTS5 index, and
file_search over a real vector store (embedded MiniLM embeddings; marked slow).

The fixture MCP server checks ``Authorization: Bearer <token>`` on every HTTP request and has a
``whoami`` tool that echoes it, so these tests see exactly which credential reached the server.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.harness import RunningServer, free_port, start_server
from tests.integration.mcp_fixtures import (
    DOCUMENTS,
    WEB_PAGES,
    WEB_SITE,
    McpFixtureServer,
    make_vector_store,
    stdio_command,
    vector_config,
)

TOKEN = "sekret-token"


@pytest.fixture(scope="module")
def mcp_servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, McpFixtureServer]]:
    base = tmp_path_factory.mktemp("mcp-servers")
    servers = {
        "http": McpFixtureServer(base, token=TOKEN, name="http-fixture"),
        "sse": McpFixtureServer(base, transport="sse", token=TOKEN, name="sse-fixture"),
        "flaky": McpFixtureServer(base, name="flaky-fixture"),
        "open": McpFixtureServer(base, name="open-fixture"),
    }
    try:
        for server in servers.values():
            server.start()
        yield servers
    finally:
        for server in servers.values():
            server.stop()


def _config(servers: dict[str, McpFixtureServer]) -> dict[str, Any]:
    return {
        "apis": ["tool_runtime"],
        "providers": {
            "tool_runtime": [
                {
                    "provider_id": "mcp",
                    "provider_type": "remote::model-context-protocol",
                    "config": {"connect_timeout": 5, "timeout": 20},
                },
                {
                    "provider_id": "websearch",
                    "provider_type": "builtin::websearch",
                    "config": {"engine": "local-index", "documents": str(WEB_PAGES)},
                },
                {"provider_id": "file-search", "provider_type": "builtin::file_search"},
            ]
        },
        "tool_groups": [
            {
                "toolgroup_id": "docs",
                "provider_id": "mcp",
                "mcp_endpoint": {"uri": servers["http"].url},
                "authorization": "${env.FIXTURE_TOKEN}",
            },
            {
                "toolgroup_id": "legacy-sse",
                "provider_id": "mcp",
                "mcp_endpoint": servers["sse"].url,
                "headers": {"Authorization": f"Bearer {TOKEN}"},
            },
            {
                "toolgroup_id": "local",
                "provider_id": "mcp",
                "stdio": {**stdio_command("stdio-fixture"), "env": {"FIXTURE_SECRET": "from-the-config"}},
            },
            {"toolgroup_id": "flaky", "provider_id": "mcp", "mcp_endpoint": servers["flaky"].url},
            {
                "toolgroup_id": "impatient",
                "provider_id": "mcp",
                "mcp_endpoint": servers["http"].url,
                "authorization": TOKEN,
                "timeout": 1,
            },
            {"toolgroup_id": "nowhere", "provider_id": "mcp", "mcp_endpoint": f"http://127.0.0.1:{free_port()}/mcp"},
            {"toolgroup_id": "switched-off", "provider_id": "${env.NOT_SET_ANYWHERE:=}", "mcp_endpoint": "http://x"},
        ],
    }


@pytest.fixture(scope="module")
def server(
    mcp_servers: dict[str, McpFixtureServer], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningServer]:
    running = start_server(_config(mcp_servers), tmp_path_factory.mktemp("tool-runtime"), env={"FIXTURE_TOKEN": TOKEN})
    yield running
    running.stop()


def _get(server: RunningServer, path: str, **kwargs: Any) -> httpx.Response:
    return httpx.get(f"{server.v1}{path}", timeout=60, **kwargs)


def _invoke(
    server: RunningServer, tool_name: str, kwargs: dict[str, Any] | None = None, **extra: Any
) -> dict[str, Any]:
    headers = extra.pop("http_headers", None)
    body = {"tool_name": tool_name, "kwargs": kwargs or {}, **extra}
    response = httpx.post(f"{server.v1}/tool-runtime/invoke", json=body, timeout=60, headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


def _text(result: dict[str, Any]) -> str:
    content = result["content"]
    return content if isinstance(content, str) else "\n".join(p.get("text", "") for p in content)


# ---------------------------------------------------------------------------------------------------
# Tool groups and listing
# ---------------------------------------------------------------------------------------------------


def test_tool_groups_from_config_and_builtins(server: RunningServer, mcp_servers: dict[str, McpFixtureServer]) -> None:
    response = _get(server, "/toolgroups")
    assert response.status_code == 200
    groups = {g["identifier"]: g for g in response.json()["data"]}
    assert set(list(groups)[:2]) == {"builtin::file_search", "builtin::websearch"}  # builtins first
    assert {"docs", "legacy-sse", "local", "flaky", "impatient", "nowhere"} <= set(groups)
    assert "switched-off" not in groups
    assert groups["docs"]["mcp_endpoint"] == {"uri": mcp_servers["http"].url}
    assert groups["docs"]["transport"] == "streamable_http" and groups["docs"]["source"] == "config"
    assert groups["legacy-sse"]["transport"] == "sse"
    assert groups["local"]["transport"] == "stdio" and groups["local"]["mcp_endpoint"] is None
    assert groups["builtin::websearch"]["source"] == "builtin"
    assert TOKEN not in response.text and "from-the-config" not in response.text  # secrets never leave
    single = _get(server, "/toolgroups/docs").json()
    assert single["provider_id"] == "mcp"
    missing = _get(server, "/toolgroups/nope")
    assert missing.status_code == 404 and "nope" in missing.json()["error"]["message"]


@pytest.mark.parametrize("group", ["docs", "legacy-sse", "local"])
def test_list_tools_over_each_transport(server: RunningServer, group: str) -> None:
    response = _get(server, "/tool-runtime/list-tools", params={"toolgroup_id": group})
    assert response.status_code == 200, response.text
    tools = {t["name"]: t for t in response.json()["data"]}
    assert {"add", "echo", "whoami", "explode", "sleep"} <= set(tools)
    add = tools["add"]
    assert add["toolgroup_id"] == group and add["provider_id"] == "mcp"
    assert add["input_schema"]["required"] == ["a", "b"]
    assert add["input_schema"]["properties"]["a"]["type"] == "integer"
    assert add["description"] == "Add two integers."


def test_list_all_tools_skips_dead_servers(server: RunningServer) -> None:
    response = _get(server, "/tools")
    assert response.status_code == 200, response.text
    tools = response.json()["data"]
    by_group: dict[str, set[str]] = {}
    for tool in tools:
        by_group.setdefault(tool["toolgroup_id"], set()).add(tool["name"])
    assert by_group["builtin::websearch"] == {"web_search"}
    assert by_group["builtin::file_search"] == {"file_search"}
    assert "add" in by_group["docs"] and "add" in by_group["local"]
    assert "nowhere" not in by_group  # unreachable: left out, not an error
    only = _get(server, "/tools", params={"toolgroup_id": "legacy-sse"}).json()["data"]
    assert {t["toolgroup_id"] for t in only} == {"legacy-sse"}
    tool = _get(server, "/tools/web_search").json()
    assert tool["toolgroup_id"] == "builtin::websearch" and tool["input_schema"]["required"] == ["query"]
    assert _get(server, "/tools/no_such_tool").status_code == 404


def test_dead_server_listing_is_503_naming_provider_and_server(server: RunningServer) -> None:
    response = _get(server, "/tool-runtime/list-tools", params={"toolgroup_id": "nowhere"})
    assert response.status_code == 503, response.text
    error = response.json()["error"]
    assert error["type"] == "service_unavailable" and error["code"] == "mcp_unavailable"
    assert "Provider 'mcp'" in error["message"] and "MCP server 'nowhere'" in error["message"]
    result = _invoke(server, "add", {"a": 1, "b": 2}, toolgroup_id="nowhere")
    assert result["error_code"] == "mcp_unavailable" and "'nowhere'" in result["error_message"]
    assert result["content"] is None


# ---------------------------------------------------------------------------------------------------
# Invocation
# ---------------------------------------------------------------------------------------------------


def test_invoke_with_arguments_over_each_transport(server: RunningServer) -> None:
    for group in ("docs", "legacy-sse", "local"):
        result = _invoke(server, "add", {"a": 2, "b": 40}, toolgroup_id=group)
        assert result["error_message"] is None, result
        assert result["content"] == [{"type": "text", "text": "42"}]
        assert result["metadata"]["toolgroup_id"] == group
        assert result["metadata"]["structured_content"] == {"result": 42}
    echoed = _invoke(server, "echo", {"text": "hello"}, toolgroup_id="local")
    assert _text(echoed) == "stdio-fixture: hello"


def test_tool_found_by_name_in_the_first_group(server: RunningServer) -> None:
    result = _invoke(server, "echo", {"text": "hi"})
    assert _text(result) == "http-fixture: hi" and result["metadata"]["toolgroup_id"] == "docs"


def test_tool_that_raises_is_an_error_result(server: RunningServer) -> None:
    for group in ("docs", "local"):
        result = _invoke(server, "explode", {"message": "kaboom"}, toolgroup_id=group)
        assert result["error_code"] == "tool_error"
        assert "exploded: kaboom" in result["error_message"] and f"MCP server '{group}'" in result["error_message"]
    bad_args = _invoke(server, "add", {"a": "seven"}, toolgroup_id="docs")
    assert bad_args["error_code"] == "tool_error" and "validation" in bad_args["error_message"]


def test_timeout_is_an_error_result(server: RunningServer) -> None:
    started = time.monotonic()
    result = _invoke(server, "sleep", {"seconds": 5}, toolgroup_id="impatient")
    assert time.monotonic() - started < 4.5
    assert result["error_code"] == "mcp_timeout" and "within 1s" in result["error_message"]
    assert "'impatient'" in result["error_message"]
    again = _invoke(server, "add", {"a": 1, "b": 1}, toolgroup_id="impatient")  # the session still works
    assert _text(again) == "2"


def test_unknown_tool_and_group_are_404(server: RunningServer) -> None:
    response = httpx.post(f"{server.v1}/tool-runtime/invoke", json={"tool_name": "no_such_tool"}, timeout=60)
    assert response.status_code == 404 and response.json()["error"]["param"] == "tool_name"
    response = httpx.post(
        f"{server.v1}/tool-runtime/invoke", json={"tool_name": "add", "toolgroup_id": "ghost"}, timeout=60
    )
    assert response.status_code == 404 and "ghost" in response.json()["error"]["message"]
    response = httpx.post(f"{server.v1}/tool-runtime/invoke", json={"kwargs": {}}, timeout=60)
    assert response.status_code == 400 and response.json()["error"]["param"] == "tool_name"
    response = _get(server, "/tool-runtime/list-tools")
    assert response.status_code == 400 and "toolgroup_id" in response.json()["error"]["message"]


# ---------------------------------------------------------------------------------------------------
# Authorization
# ---------------------------------------------------------------------------------------------------


def test_config_authorization_reaches_the_server(server: RunningServer) -> None:
    assert _text(_invoke(server, "whoami", toolgroup_id="docs")) == f"Bearer {TOKEN}"
    assert _text(_invoke(server, "whoami", toolgroup_id="legacy-sse")) == f"Bearer {TOKEN}"
    assert _text(_invoke(server, "whoami", toolgroup_id="local")) == "from-the-config"  # stdio: its env


def test_per_request_authorization_overrides_config(server: RunningServer) -> None:
    wrong = _invoke(server, "whoami", toolgroup_id="docs", authorization="not-the-token")
    assert wrong["error_code"] == "mcp_error"
    assert "HTTP 401" in wrong["error_message"] and "MCP server 'docs'" in wrong["error_message"]
    header = _invoke(server, "whoami", toolgroup_id="docs", headers={"authorization": "Bearer not-it-either"})
    assert "HTTP 401" in header["error_message"]
    right = _invoke(server, "whoami", toolgroup_id="docs", headers={"Authorization": f"Bearer {TOKEN}"})
    assert _text(right) == f"Bearer {TOKEN}"
    refused = _get(
        server,
        "/tool-runtime/list-tools",
        params={"toolgroup_id": "docs"},
        headers={"X-Underlay-Provider-Data": json.dumps({"mcp_headers": {"docs": {"Authorization": "Bearer x"}}})},
    )
    assert refused.status_code == 502 and "HTTP 401" in refused.json()["error"]["message"]


def test_register_tool_group_over_http(server: RunningServer, mcp_servers: dict[str, McpFixtureServer]) -> None:
    guarded = mcp_servers["http"].url
    created = httpx.post(
        f"{server.v1}/toolgroups", json={"toolgroup_id": "team-docs", "mcp_endpoint": {"uri": guarded}}, timeout=30
    )
    assert created.status_code == 200, created.text
    group = created.json()
    assert group["identifier"] == "team-docs" and group["provider_id"] == "mcp" and group["source"] == "api"
    assert group["owner"] == "anonymous" and group["transport"] == "streamable_http"
    assert "team-docs" in {g["identifier"] for g in _get(server, "/toolgroups").json()["data"]}

    # No credential registered: the server refuses, and the listing says who refused what.
    refused = _get(server, "/tool-runtime/list-tools", params={"toolgroup_id": "team-docs"})
    assert refused.status_code == 502
    assert "'team-docs'" in refused.json()["error"]["message"] and "401" in refused.json()["error"]["message"]
    # The caller's credential, per request, through provider data or on the call itself.
    provider_data = {"mcp_headers": {"team-docs": {"Authorization": f"Bearer {TOKEN}"}}}
    listed = _get(
        server,
        "/tool-runtime/list-tools",
        params={"toolgroup_id": "team-docs"},
        headers={"X-Underlay-Provider-Data": json.dumps(provider_data)},
    )
    assert listed.status_code == 200 and "whoami" in {t["name"] for t in listed.json()["data"]}
    by_url = {"mcp_headers": {guarded: {"Authorization": f"Bearer {TOKEN}"}}}
    result = _invoke(
        server, "whoami", toolgroup_id="team-docs", http_headers={"X-Underlay-Provider-Data": json.dumps(by_url)}
    )
    assert _text(result) == f"Bearer {TOKEN}"
    assert _text(_invoke(server, "add", {"a": 3, "b": 4}, toolgroup_id="team-docs", authorization=TOKEN)) == "7"

    clash = httpx.post(
        f"{server.v1}/toolgroups", json={"toolgroup_id": "docs", "mcp_endpoint": {"uri": guarded}}, timeout=30
    )
    assert clash.status_code == 409
    deleted = httpx.delete(f"{server.v1}/toolgroups/team-docs", timeout=30)
    assert deleted.status_code == 200 and deleted.json() == {
        "id": "team-docs",
        "object": "toolgroup.deleted",
        "deleted": True,
    }
    assert _get(server, "/toolgroups/team-docs").status_code == 404
    assert httpx.delete(f"{server.v1}/toolgroups/docs", timeout=30).status_code == 403


def test_register_rejects_bad_requests(server: RunningServer) -> None:
    url = f"{server.v1}/toolgroups"
    builtin = httpx.post(
        url, json={"toolgroup_id": "x", "provider_id": "websearch", "mcp_endpoint": {"uri": "http://a/mcp"}}
    )
    assert builtin.status_code == 400 and builtin.json()["error"]["param"] == "provider_id"
    no_url = httpx.post(url, json={"toolgroup_id": "x"})
    assert no_url.status_code == 400 and no_url.json()["error"]["param"] == "mcp_endpoint"
    not_http = httpx.post(url, json={"toolgroup_id": "x", "mcp_endpoint": {"uri": "file:///etc/passwd"}})
    assert not_http.status_code == 400
    unknown = httpx.post(url, json={"toolgroup_id": "x", "provider_id": "ghost", "mcp_endpoint": {"uri": "http://a"}})
    assert unknown.status_code == 400 and "ghost" in unknown.json()["error"]["message"]


def test_mcp_endpoint_without_registration(server: RunningServer, mcp_servers: dict[str, McpFixtureServer]) -> None:
    url = mcp_servers["open"].url
    listed = _get(server, "/tool-runtime/list-tools", params={"mcp_endpoint": url})
    assert listed.status_code == 200, listed.text
    tools = listed.json()["data"]
    assert "add" in {t["name"] for t in tools} and all(t["toolgroup_id"] is None for t in tools)
    result = _invoke(server, "echo", {"text": "direct"}, mcp_endpoint={"uri": url})
    assert _text(result) == "open-fixture: direct" and result["metadata"]["server"] == url


# ---------------------------------------------------------------------------------------------------
# Failure and recovery
# ---------------------------------------------------------------------------------------------------


def test_server_killed_mid_session_then_restarted(
    server: RunningServer, mcp_servers: dict[str, McpFixtureServer]
) -> None:
    flaky = mcp_servers["flaky"]
    assert _text(_invoke(server, "add", {"a": 1, "b": 2}, toolgroup_id="flaky")) == "3"  # session now pooled

    flaky.stop()
    down = _invoke(server, "add", {"a": 1, "b": 2}, toolgroup_id="flaky")
    assert down["error_code"] == "mcp_unavailable", down
    assert "MCP server 'flaky'" in down["error_message"] and flaky.url in down["error_message"]
    listing = _get(server, "/tool-runtime/list-tools", params={"toolgroup_id": "flaky"})
    assert listing.status_code == 503 and "'flaky'" in listing.json()["error"]["message"]
    assert _get(server, "/health").status_code == 200  # Underlay itself is fine

    flaky.start()
    back = _invoke(server, "add", {"a": 20, "b": 22}, toolgroup_id="flaky")
    assert back["error_message"] is None and _text(back) == "42"

    flaky.stop()  # restart under a pooled session: the stale session is replaced transparently
    flaky.start()
    assert _text(_invoke(server, "echo", {"text": "again"}, toolgroup_id="flaky")) == "flaky-fixture: again"


def test_sessions_are_reused(server: RunningServer) -> None:
    first = _text(_invoke(server, "session_id", toolgroup_id="docs"))
    assert first != "none"
    assert _text(_invoke(server, "session_id", toolgroup_id="docs")) == first
    other_credential = _invoke(server, "session_id", toolgroup_id="docs", headers={"X-Tenant": "b"})
    assert _text(other_credential) not in ("none", first)  # other headers: a session of its own
    pid = _text(_invoke(server, "pid", toolgroup_id="local"))
    assert _text(_invoke(server, "pid", toolgroup_id="local")) == pid  # one stdio process, kept


def test_idle_sessions_are_closed(tmp_path: Path) -> None:
    config = {
        "apis": ["tool_runtime"],
        "providers": {
            "tool_runtime": [
                {
                    "provider_id": "mcp",
                    "provider_type": "remote::model-context-protocol",
                    "config": {"idle_timeout": 1},
                }
            ]
        },
        "tool_groups": [{"toolgroup_id": "local", "provider_id": "mcp", "stdio": stdio_command()}],
    }
    running = start_server(config, tmp_path)
    try:
        first = int(_text(_invoke(running, "pid", toolgroup_id="local")))
        deadline = time.monotonic() + 15
        while _alive(first):
            assert time.monotonic() < deadline, "the idle stdio server was not stopped"
            time.sleep(0.2)
        second = int(_text(_invoke(running, "pid", toolgroup_id="local")))
        assert second != first and _alive(second)
    finally:
        running.stop()


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split()[2] != "Z"  # a zombie has exited
    except FileNotFoundError:
        return False


# ---------------------------------------------------------------------------------------------------
# Builtins
# ---------------------------------------------------------------------------------------------------


def test_websearch_over_local_index(server: RunningServer) -> None:
    result = _invoke(server, "web_search", {"query": "which rover carried a helicopter to Mars?"})
    assert result["error_message"] is None
    results = result["metadata"]["results"]
    assert results[0]["url"] == "https://example.org/astronomy/mars-rovers"
    assert "Ingenuity" in results[0]["snippet"] or "Perseverance" in results[0]["snippet"]
    assert "[1] Rovers on Mars" in result["content"]
    assert result["metadata"]["toolgroup_id"] == "builtin::websearch"

    bread = _invoke(server, "web_search", {"query": "sourdough starter crust", "max_num_results": 2})
    assert [r["url"] for r in bread["metadata"]["results"]][0] == "https://example.org/cooking/sourdough"
    assert len(bread["metadata"]["results"]) <= 2
    nothing = _invoke(server, "web_search", {"query": "zzyzx qwvbn"})
    assert nothing["metadata"]["results"] == [] and "No web results" in nothing["content"]
    invalid = _invoke(server, "web_search", {"max_num_results": 3})
    assert invalid["error_code"] == "invalid_arguments" and "query" in invalid["error_message"]


def test_file_search_without_vector_stores_says_so(server: RunningServer) -> None:
    result = _invoke(server, "file_search", {"query": "anything", "vector_store_ids": ["vs_x"]})
    assert result["error_code"] == "unavailable" and "vector_stores" in result["error_message"]


def test_registered_groups_survive_a_restart(mcp_servers: dict[str, McpFixtureServer], tmp_path: Path) -> None:
    config = {
        "apis": ["tool_runtime"],
        "providers": {"tool_runtime": [{"provider_id": "mcp", "provider_type": "remote::model-context-protocol"}]},
    }
    first = start_server(config, tmp_path)
    try:
        body = {"toolgroup_id": "kept", "mcp_endpoint": {"uri": mcp_servers["open"].url}}
        assert httpx.post(f"{first.v1}/toolgroups", json=body, timeout=30).status_code == 200
    finally:
        first.stop()
    second = start_server(config, tmp_path)
    try:
        assert _get(second, "/toolgroups/kept").json()["mcp_endpoint"]["uri"] == mcp_servers["open"].url
        assert _text(_invoke(second, "echo", {"text": "still here"}, toolgroup_id="kept")) == "open-fixture: still here"
    finally:
        second.stop()


def test_websearch_directory_mode_and_searxng_adapter(tmp_path: Path) -> None:
    """The directory index (HTML and Markdown pages) and the SearXNG adapter's HTTP path in one server."""
    searx_port = free_port()
    searx_app = tmp_path / "searx_app.py"
    searx_app.write_text(_SEARX_APP)
    process = subprocess.Popen([sys.executable, str(searx_app), str(searx_port)])
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                httpx.get(f"http://127.0.0.1:{searx_port}/healthz", timeout=0.5)
                break
            except httpx.HTTPError:
                time.sleep(0.05)
        config = {
            "apis": ["tool_runtime"],
            "providers": {
                "tool_runtime": [
                    {
                        "provider_id": "site",
                        "provider_type": "builtin::websearch",
                        "config": {"documents": str(WEB_SITE), "toolgroup_id": "site-search", "index_path": "site.db"},
                    },
                    {
                        "provider_id": "searx",
                        "provider_type": "builtin::websearch",
                        "config": {
                            "engine": "searxng",
                            "url": f"http://127.0.0.1:{searx_port}",
                            "toolgroup_id": "searx",
                        },
                    },
                ]
            },
        }
        running = start_server(config, tmp_path / "underlay")
        try:
            volcano = _invoke(running, "web_search", {"query": "basalt lava shield"}, toolgroup_id="site-search")
            top = volcano["metadata"]["results"][0]
            assert top["title"] == "Volcanoes and magma" and top["url"].endswith("/site/volcanoes.html")
            assert "color: red" not in top["snippet"]  # styles are not content
            searx_result = _invoke(running, "web_search", {"query": "octopus"}, toolgroup_id="searx")
            assert searx_result["metadata"]["results"][0] == {
                "title": "Result for octopus",
                "url": "https://search.example/octopus",
                "snippet": "searxng says: octopus",
                "score": 1.5,
            }
            failing = _invoke(running, "web_search", {"query": "fail please"}, toolgroup_id="searx")
            assert failing["error_code"] == "search_error" and "searxng answered HTTP 500" in failing["error_message"]
        finally:
            running.stop()
        assert (tmp_path / "underlay" / "state" / "site.db").exists()
    finally:
        process.kill()
        process.wait(10)


_SEARX_APP = '''
"""A tiny server speaking SearXNG's JSON search API, so the adapter's HTTP path runs for real."""
import json, sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        parts = urlsplit(self.path)
        query = parse_qs(parts.query)
        if parts.path == "/search" and query.get("format") == ["json"]:
            q = query.get("q", [""])[0]
            status = 500 if q.startswith("fail") else 200
            hit = {"title": f"Result for {q}", "url": f"https://search.example/{q}", "score": 1.5}
            hit["content"] = f"searxng says: {q}"
            body = {"query": q, "results": [hit]} if status == 200 else {"error": "engine exploded"}
        else:
            status, body = 200, {"ok": True}
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass

ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
'''


# ---------------------------------------------------------------------------------------------------
# file_search over a real vector store (embedded embeddings: slow)
# ---------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def vector_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    running = start_server(vector_config(), tmp_path_factory.mktemp("file-search"), timeout=300)
    yield running
    running.stop()


@pytest.mark.slow
def test_file_search_over_a_real_vector_store(vector_server: RunningServer) -> None:
    store_id = make_vector_store(vector_server, DOCUMENTS)
    result = _invoke(
        vector_server,
        "file_search",
        {
            "query": "how is espresso coffee brewed under pressure?",
            "vector_store_ids": [store_id],
            "max_num_results": 2,
        },
    )
    assert result["error_message"] is None, result
    results = result["metadata"]["results"]
    assert len(results) <= 2 and results[0]["filename"] == "espresso.md"
    assert results[0]["vector_store_id"] == store_id and "nine bars" in results[0]["text"]
    assert results == sorted(results, key=lambda r: r["score"], reverse=True)
    assert "[1] espresso.md" in result["content"] and result["metadata"]["toolgroup_id"] == "builtin::file_search"

    keyword = _invoke(
        vector_server,
        "file_search",
        {"query": "castling rook king", "vector_store_ids": [store_id], "search_mode": "keyword"},
    )
    assert keyword["metadata"]["results"][0]["filename"] == "chess.txt"
    missing = _invoke(vector_server, "file_search", {"query": "x", "vector_store_ids": ["vs_missing"]})
    assert missing["error_code"] == "invalid_arguments" and "vs_missing" in missing["error_message"]
    none = _invoke(vector_server, "file_search", {"query": "glaciers"})
    assert none["error_code"] == "invalid_arguments" and "vector_store_ids" in none["error_message"]
