"""The web console's assets: one HTML shell, one stylesheet and a few hand-written ES modules.

No build step and no framework, so the package ships exactly what the browser runs and a user needs
nothing beyond ``pip install``. :mod:`underlay.server.console` serves them; this module only finds and
describes them, so the set of servable paths is fixed when the server starts (no path is ever joined
from a request).
"""

from __future__ import annotations

import functools
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
    media_type: str
    etag: str

    @functools.cached_property
    def gzipped(self) -> bytes:
        """The body gzip-compressed, made by the first request that accepts gzip (then kept).

        Why not at start: compressing every file at level 9 cost each start about 4 ms of CPU, before
        anyone had opened the console (bench/startup.py).
        """
        return gzip.compress(self.body, 9, mtime=0)


def _files() -> list[tuple[str, Path, str]]:
    """(URL path under ``/console/``, file, media type) of every servable file, in path order."""
    found = []
    for file in sorted(STATIC.rglob("*")):
        media_type = _TYPES.get(file.suffix)
        if media_type is not None and file.is_file():
            found.append((file.relative_to(STATIC).as_posix(), file, media_type))
    return found


def asset_paths() -> list[str]:
    """The URL path under ``/console/`` of every console file, without reading them."""
    return [rel for rel, _, _ in _files()]


def load_assets() -> dict[str, Asset]:
    """Every console file by its URL path under ``/console/`` (``index.html`` is served at ``/``)."""
    assets: dict[str, Asset] = {}
    for rel, file, media_type in _files():
        body = file.read_bytes()
        etag = '"' + hashlib.sha256(body).hexdigest()[:20] + '"'
        assets[rel] = Asset(rel, body, media_type, etag)
    return assets
