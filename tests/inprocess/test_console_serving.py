"""How the server ships the console: public shell and assets under a strict CSP, gzip and ETags, no
shadowed API route, nothing fetched from another origin, and a first load under its 300 KB budget.

The browser tests (``tests/console``) drive the pages themselves; these check the HTTP contract fast.
"""

from __future__ import annotations

import gzip
import hashlib
import re
from pathlib import Path

import pytest

from tests.inprocess.harness import InProcessServer, echo_config, serve_in_process
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
