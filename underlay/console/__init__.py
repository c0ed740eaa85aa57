"""The web console's assets: one HTML shell, one stylesheet and a few hand-written ES modules.

No build step and no framework, so the package ships exactly what the browser runs and a user needs
nothing beyond ``pip install``. :mod:`underlay.server.console` serves them; this module only finds and
describes them, so the set of servable paths is fixed when the server starts (no path is ever joined
from a request).
"""

from __future__ import annotations

import gzip
import hashlib
from dataclasses import dataclass
from pathlib import Path

STATIC = Path(__file__).parent / "static"

_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}


@dataclass(frozen=True)
class Asset:
    """One file, held in memory with its gzip form: the whole console is a few tens of kilobytes."""

    path: str
    body: bytes
    gzipped: bytes
    media_type: str
    etag: str


def load_assets() -> dict[str, Asset]:
    """Every console file by its URL path under ``/console/`` (``index.html`` is served at ``/``)."""
    assets: dict[str, Asset] = {}
    for file in sorted(STATIC.rglob("*")):
        media_type = _TYPES.get(file.suffix)
        if not file.is_file() or media_type is None:
            continue
        body = file.read_bytes()
        rel = file.relative_to(STATIC).as_posix()
        etag = '"' + hashlib.sha256(body).hexdigest()[:20] + '"'
        assets[rel] = Asset(rel, body, gzip.compress(body, 9, mtime=0), media_type, etag)
    return assets
