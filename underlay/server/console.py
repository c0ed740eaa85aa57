"""Serves the web console (:mod:`underlay.console`) at ``/`` and its assets under ``/console/``.

The console is a client of the public API: it calls ``/v1/...`` with the user's own key, so auth and
access policies apply to it exactly as to any other client. Its own pages therefore hold nothing
private and are public (the login screen must load without a key). Every answer carries a strict
Content-Security-Policy (scripts only from this origin, no inline code), so even a model answer that
slipped past the console's escaping could not run script.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import Response

from underlay.api.errors import NotFoundError
from underlay.console import Asset, asset_paths, load_assets
from underlay.core.config import RunConfig

PREFIX = "/console/"

CSP = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "font-src 'self'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)
_SECURITY_HEADERS = {
    "content-security-policy": CSP,
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
    # Revalidate on every load (a 304 is a few bytes), so an upgraded server never runs stale modules.
    "cache-control": "no-cache",
}


def public_paths(config: RunConfig) -> list[str]:
    """The console's paths, which the auth layer lets through without credentials (none if it is off)."""
    return ["/", PREFIX + "*"] if config.server.console else []


def served_paths(config: RunConfig) -> set[str]:
    """Every exact path the console answers, so telemetry can leave them out of traces and metrics."""
    if not config.server.console:
        return set()
    return {"/", *(PREFIX + name for name in asset_paths())}


def _answer(request: Request, asset: Asset) -> Response:
    headers = {**_SECURITY_HEADERS, "etag": asset.etag, "vary": "accept-encoding"}
    if request.headers.get("if-none-match") == asset.etag:
        return Response(status_code=304, headers=headers)
    if "gzip" in request.headers.get("accept-encoding", ""):
        headers["content-encoding"] = "gzip"
        return Response(asset.gzipped, media_type=asset.media_type, headers=headers)
    return Response(asset.body, media_type=asset.media_type, headers=headers)


def install(app: FastAPI, config: RunConfig) -> None:
    """Add ``GET /`` and ``GET /console/{name}`` when ``server.console`` is on (the default)."""
    if not config.server.console:
        return
    assets = load_assets()
    shell = assets["index.html"]

    @app.get("/", include_in_schema=False)
    async def console_shell(request: Request) -> Response:
        return _answer(request, shell)

    @app.get(PREFIX + "{name:path}", include_in_schema=False)
    async def console_asset(request: Request, name: str) -> Response:
        asset = assets.get(name)
        if asset is None:
            raise NotFoundError("Console asset", name, hint="The console is served at /.")
        return _answer(request, asset)
