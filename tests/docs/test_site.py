"""The docs site builds from docs/ with MkDocs in strict mode, offline, and its API reference is current.

Strict mode turns every broken link, missing anchor or unknown page into a failure, so link checking
runs with the tests. The API reference is generated from the server's own ``app.openapi()`` by
``scripts/openapi_docs.py``; a route added without regenerating it fails here.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.docs.examples import ROOT


def test_site_builds_strict_and_offline(tmp_path: Path) -> None:
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-5000:]
    index = (tmp_path / "site" / "index.html").read_text()
    assert "fonts.googleapis.com" not in index  # no web fonts: the site reads the same offline
    assert (tmp_path / "site" / "reference" / "api" / "index.html").is_file()
    assert (tmp_path / "site" / "writing-docs" / "index.html").is_file()


def test_api_reference_matches_the_servers_openapi() -> None:
    result = subprocess.run(
        [sys.executable, "scripts/openapi_docs.py", "--check"], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
