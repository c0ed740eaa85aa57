"""The public MCP conformance suite, client mode, against Underlay's MCP client (slow: npm and Node 22).

Runs ``scripts/mcp_conformance.py --mode client``: the suite (installed from the npm registry into
``.cache/mcp-conformance`` once) starts a server per scenario and launches
``scripts/mcp_conformance_client.py``, which drives the ``remote::model-context-protocol`` provider
against it (tool listing and calls, OAuth through the callback path, elicitation answers). The test
fails when a scenario in :data:`PASSING` stops passing, or when the suite cannot be installed (no npm,
no registry): a missing suite is a failure here, never a skip.

The four scenarios not pinned fail for known reasons (docs/tool-runtime.md): the first elicitation is
answered ``cancel`` while the caller is asked, a URL-based client id needs metadata at a public HTTPS
URL, the ``mcp`` SDK refuses authorization-server metadata whose issuer differs from where it was
fetched, and enterprise token exchange needs an identity provider. ``sse-retry`` passes too but is
left out: the suite fails it when the reconnect comes later than the server's 500 ms ``retry`` hint
(seen once in ten runs on a loaded 2-core machine, 712 ms), a timing judgement, not a behaviour.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.harness import ROOT

SCRIPT = ROOT / "scripts" / "mcp_conformance.py"
PASSING = frozenset(
    {
        "initialize",
        "tools_call",
        "auth/metadata-default",
        "auth/metadata-var1",
        "auth/metadata-var2",
        "auth/metadata-var3",
        "auth/scope-from-www-authenticate",
        "auth/scope-from-scopes-supported",
        "auth/scope-omitted-when-undefined",
        "auth/scope-step-up",
        "auth/scope-retry-limit",
        "auth/token-endpoint-auth-basic",
        "auth/token-endpoint-auth-post",
        "auth/token-endpoint-auth-none",
        "auth/pre-registration",
        "auth/2025-03-26-oauth-endpoint-fallback",
        "auth/resource-mismatch",
        "auth/offline-access-scope",
        "auth/offline-access-not-supported",
        "auth/client-credentials-jwt",
        "auth/client-credentials-basic",
    }
)


@pytest.mark.slow
def test_client_conformance_passes_at_least_what_it_passed(tmp_path: Path) -> None:
    results_path = tmp_path / "results.json"
    done = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            "--mode",
            "client",
            "--json",
            str(results_path),
            "--min-pass",
            str(len(PASSING)),
        ],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=ROOT,
    )
    assert done.returncode == 0, f"exit {done.returncode}\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
    results = json.loads(results_path.read_text())
    regressed = {name: results["failed"].get(name, "not run") for name in PASSING - set(results["passed"])}
    assert not regressed, f"client scenarios that passed now fail: {regressed}"
    assert results["total"] >= len(PASSING)
