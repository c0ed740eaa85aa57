"""How the server ships the console: public shell and assets under a strict CSP, gzip and ETags, no
shadowed API route, nothing fetched from another origin, and a first load under its 300 KB budget;
and the two API answers the console's pages rest on: providers with their health, traces by model.

The browser tests (``tests/console``) drive the pages themselves; these check the HTTP contract fast.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import re
from pathlib import Path
from typing import Any

import pytest

from tests.inprocess.harness import InProcessServer, echo_config, serve_in_process
from tests.integration.harness import free_port
from underlay.console import STATIC, load_assets
from underlay.server.console import CSP

KEY = "sk-console-inprocess-0001"
AUTH = {
    "providers": [
        {"type": "api_keys", "keys": [{"sha256": hashlib.sha256(KEY.encode()).hexdigest(), "principal": "ana"}]}
    ]
}
FIRST_LOAD = ["index.html", "console.css", "app.js", "api.js", "dom.js", "pages/playground.js"]


async def test_shell_is_served_at_root_with_a_strict_csp(echo_app: InProcessServer) -> None:
    res = await echo_app.http.get("/")
    assert res.status_code == 200
    assert res.headers["content-type"].startswith("text/html")
    assert res.headers["content-security-policy"] == CSP
    assert "script-src 'self'" in CSP and "unsafe-inline" not in CSP and "unsafe-eval" not in CSP
    assert res.headers["x-content-type-options"] == "nosniff"
    assert res.headers["x-frame-options"] == "DENY"
    assert '<script type="module" src="/console/app.js">' in res.text
    # No inline script: every <script> names its source.
    assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", res.text)


async def test_assets_are_gzipped_and_revalidated_by_etag(echo_app: InProcessServer) -> None:
    plain = await echo_app.http.get("/console/app.js", headers={"accept-encoding": "identity"})
    assert plain.status_code == 200 and "content-encoding" not in plain.headers
    assert plain.headers["content-type"].startswith("text/javascript")
    assert plain.content == (STATIC / "app.js").read_bytes()
    zipped = await echo_app.http.get("/console/app.js", headers={"accept-encoding": "gzip"})
    assert zipped.headers["content-encoding"] == "gzip"  # httpx decodes it for us
    assert zipped.content == plain.content
    again = await echo_app.http.get("/console/app.js", headers={"if-none-match": plain.headers["etag"]})
    assert again.status_code == 304 and again.content == b""
    assert again.headers["content-security-policy"] == CSP


@pytest.mark.parametrize("path", ["/console/nope.js", "/console/../pyproject.toml", "/console/%2e%2e/pyproject.toml"])
async def test_unknown_asset_is_a_404_envelope(echo_app: InProcessServer, path: str) -> None:
    res = await echo_app.http.get(path)
    assert res.status_code == 404
    assert res.json()["error"]["type"] == "not_found_error"


async def test_console_does_not_shadow_the_api(echo_app: InProcessServer) -> None:
    res = await echo_app.http.get("/v1/models")
    assert res.status_code == 200 and res.json()["object"] == "list"
    assert (await echo_app.http.get("/v1/nope")).status_code == 404
    paths = [getattr(r, "path", "") for r in echo_app.app.router.routes]
    assert paths.index("/") > paths.index("/v1/models")  # added after every API route


async def test_with_auth_the_console_is_public_and_the_api_is_not(tmp_path: Path) -> None:
    async with serve_in_process(echo_config(tmp_path, server={"auth": AUTH})) as server:
        assert (await server.http.get("/")).status_code == 200
        assert (await server.http.get("/console/pages/traces.js")).status_code == 200
        assert (await server.http.get("/v1/models")).status_code == 401
        assert (await server.http.get("/metrics")).status_code == 401
        ok = await server.http.get("/v1/models", headers={"authorization": f"Bearer {KEY}"})
        assert ok.status_code == 200


async def test_console_can_be_switched_off(tmp_path: Path) -> None:
    async with serve_in_process(echo_config(tmp_path, server={"console": False})) as server:
        assert (await server.http.get("/")).status_code == 404
        assert (await server.http.get("/console/app.js")).status_code == 404


SVG_NS = "http://www.w3.org/2000/svg"
"""The SVG namespace charts.js hands createElementNS: an XML name, never fetched (the only one allowed)."""


def test_assets_load_nothing_from_another_origin() -> None:
    for asset in load_assets().values():
        text = asset.body.decode()
        if asset.path == "charts.js":
            assert text.count(SVG_NS) == 1, "the SVG namespace is named once, as the SVG_NS constant"
            text = text.replace(SVG_NS, "")
        # Only the Python snippet's `location.origin` is a URL; no http(s):// anywhere, no @import or url().
        assert not re.search(r"https?://", text), asset.path
        assert "@import" not in text and "url(" not in text, asset.path


HTML_SINKS = re.compile(r"\.(innerHTML|outerHTML)\b|insertAdjacentHTML|document\.write|\beval\(|new Function\(")


def test_assets_write_text_never_html() -> None:
    for asset in load_assets().values():
        if asset.path.endswith(".js"):
            assert not HTML_SINKS.search(asset.body.decode()), asset.path


def test_the_shell_preloads_only_what_the_first_load_counts() -> None:
    shell = load_assets()["index.html"].body.decode()
    linked = re.findall(r'<(?:link|script)[^>]+(?:href|src)="/console/([^"]+)"', shell)
    assert "pages/playground.js" in linked  # the default page's module comes with the shell's
    assert set(linked) <= set(FIRST_LOAD), set(linked) - set(FIRST_LOAD)


def test_first_load_fits_the_300_kb_budget() -> None:
    assets = load_assets()
    total = sum(len(gzip.compress(assets[name].body)) for name in FIRST_LOAD)
    assert total < 300 * 1024, total


async def test_page_loads_do_not_spend_the_request_quota(tmp_path: Path) -> None:
    quotas = {"limits": {"requests_per_minute": 2}}
    async with serve_in_process(echo_config(tmp_path, server={"quotas": quotas})) as server:
        for _ in range(3):
            for path in ("/", *(f"/console/{name}" for name in FIRST_LOAD[1:])):
                assert (await server.http.get(path)).status_code == 200, path
        assert (await server.http.get("/v1/models")).status_code == 200
        assert (await server.http.get("/v1/models")).status_code == 200
        assert (await server.http.get("/v1/models")).status_code == 429  # the API still counts


async def test_providers_list_each_providers_own_health(tmp_path: Path, echo_plugin: Path) -> None:
    dead = {"base_url": f"http://127.0.0.1:{free_port()}/v1", "api_key": "sk-none", "max_retries": 0}
    providers = {
        "inference": [
            {"provider_id": "echo", "provider_type": "remote::echo-test", "config": {}},
            {"provider_id": "gone", "provider_type": "remote::openai", "config": dead},
        ],
        "files": [{"provider_id": "localfs", "provider_type": "inline::localfs", "config": {}}],
    }
    config = echo_config(tmp_path, apis=["inference", "models", "files"], providers=providers)
    async with serve_in_process(config) as server:
        listed = (await server.http.get("/v1/providers")).json()["data"]
    health = {p["provider_id"]: p["health"] for p in listed}
    assert health["localfs"]["status"] == "OK"
    assert health["echo"] is None  # it has no health check: said so, not guessed
    assert health["gone"]["status"] == "error" and health["gone"]["message"], health["gone"]
    assert "sk-none" not in str(listed)


async def test_the_providers_listing_reuses_a_recent_health_answer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Polling ``/v1/providers`` must not become a round of health requests upstream per call."""
    providers = {"files": [{"provider_id": "localfs", "provider_type": "inline::localfs", "config": {}}]}
    config = echo_config(tmp_path, apis=["files"], providers=providers)
    async with serve_in_process(config) as server:
        provider = server.app.state.stack.providers["files"]["localfs"]
        calls: list[int] = []
        real = provider.health

        async def counted() -> dict[str, Any]:
            calls.append(1)
            return dict(await real())

        object.__setattr__(provider, "health", counted)  # on the boundary handle, which the listing calls
        for _ in range(5):
            listed = (await server.http.get("/v1/providers")).json()["data"]
            assert listed[0]["health"]["status"] == "OK"
        assert len(calls) == 1
        monkeypatch.setattr("underlay.server.app.PROVIDER_HEALTH_REUSE_SECONDS", 0.0)
        await server.http.get("/v1/providers")
        assert len(calls) == 2  # an answer older than the reuse window is asked again


async def _traces(server: InProcessServer, **query: Any) -> list[dict[str, Any]]:
    res = await server.http.get("/v1/telemetry/traces", params={"limit": 100, **query})
    assert res.status_code == 200, res.text
    return list(res.json()["data"])


async def test_traces_carry_and_filter_by_the_model_the_request_named(tmp_path: Path, echo_plugin: Path) -> None:
    config = echo_config(tmp_path, apis=["inference", "models", "telemetry"], telemetry={"flush_seconds": 0.05})
    async with serve_in_process(config) as server:
        chat = await server.http.post(
            "/v1/chat/completions", json={"model": "echo/echo", "messages": [{"role": "user", "content": "hi"}]}
        )
        embed = await server.http.post("/v1/embeddings", json={"model": "echo/echo-embed", "input": "hi"})
        ids = {chat.headers["x-trace-id"]: "echo/echo", embed.headers["x-trace-id"]: "echo/echo-embed"}
        for _ in range(200):
            listed = {t["id"]: t for t in await _traces(server)}
            if set(ids) <= set(listed):
                break
            await asyncio.sleep(0.05)
        assert {trace_id: listed[trace_id]["model"] for trace_id in ids} == ids
        assert listed[next(iter(ids))]["route"] == "/v1/chat/completions"
        for model in ("echo/echo", "echo/echo-embed"):
            found = await _traces(server, model=model)
            assert found and {t["model"] for t in found} == {model}
            assert [t["id"] for t in found if t["id"] in ids] == [i for i, m in ids.items() if m == model]
        assert await _traces(server, model="echo/none") == []
        assert (await server.http.get("/v1/models")).status_code == 200  # untraced model: no trace matches it
        assert all(t["model"] is None for t in await _traces(server, route="/v1/models"))
