"""Fixtures for the console tests: Debian's Chromium driven by Playwright, against a real server.

The browser is the system's ``chromium`` package (never one downloaded by Playwright): when it is
missing, the session installs it with apt-get, or fails saying how to. The server is a real
``underlay run`` with API keys for two tenants (alice in team-a, bob in team-b), the embedded SmolLM2
chat model, MiniLM embeddings, sqlite-vec, local files, the PII shield, stored traces and the
repository's MCP fixture server registered as the tool group ``calc``.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.harness import MINILM, ROOT, SMOLLM2, RunningServer, start_server
from tests.integration.mcp_fixtures import McpFixtureServer

CHROMIUM = Path(os.environ.get("UNDERLAY_CHROMIUM", "/usr/bin/chromium"))
SCREENSHOTS = ROOT / ".cache" / "console-screenshots"
KEYS = {"alice": "sk-console-alice-0001", "bob": "sk-console-bob-0002"}
WIDTHS = {"laptop": (1280, 800), "phone": (390, 844)}


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def ensure_chromium() -> Path:
    """Debian's chromium, installed with apt-get when absent (as ``.ci/run`` would); a clear failure otherwise."""
    if CHROMIUM.exists():
        return CHROMIUM
    apt = shutil.which("apt-get")
    if apt is None or os.geteuid() != 0:
        pytest.fail(f"{CHROMIUM} is missing and cannot be installed here: run `apt-get install -y chromium` as root")
    install = [apt, "install", "-y", "--no-install-recommends", "chromium"]
    done = subprocess.run(install, capture_output=True, text=True, timeout=900, check=False)
    if done.returncode != 0:  # a fresh machine may have no package lists yet
        subprocess.run([apt, "update"], capture_output=True, text=True, timeout=900, check=False)
        done = subprocess.run(install, capture_output=True, text=True, timeout=900, check=False)
    if done.returncode != 0 or not CHROMIUM.exists():
        pytest.fail(f"`apt-get install -y chromium` failed (exit {done.returncode}): {done.stderr[-1500:]}")
    return CHROMIUM


def console_config(**overrides: Any) -> dict[str, Any]:
    config: dict[str, Any] = {
        "apis": [
            "inference",
            "models",
            "files",
            "vector_io",
            "vector_stores",
            "conversations",
            "tool_runtime",
            "responses",
            "safety",
            "telemetry",
        ],
        "providers": {
            "inference": [
                {
                    "provider_id": "llama-cpp",
                    "provider_type": "inline::llama-cpp",
                    "config": {"models": [{"name": SMOLLM2, "packaged": SMOLLM2, "n_ctx": 2048}]},
                },
                {
                    "provider_id": "sentence-transformers",
                    "provider_type": "inline::sentence-transformers",
                    "config": {"models": [{"name": MINILM, "packaged": MINILM}]},
                },
            ],
            "files": [{"provider_id": "localfs", "provider_type": "inline::localfs", "config": {"root": "files"}}],
            "vector_io": [
                {"provider_id": "sqlite-vec", "provider_type": "inline::sqlite-vec", "config": {"db_path": "v.db"}}
            ],
            "responses": [{"provider_id": "builtin", "provider_type": "inline::builtin", "config": {}}],
            "safety": [{"provider_id": "pii", "provider_type": "inline::pii"}],
        },
        "shields": [{"shield_id": "pii", "provider_id": "pii"}],
        "jobs": {"workers": 2, "lease_seconds": 2, "poll_seconds": 0.1},
        "telemetry": {"flush_seconds": 0.2},
        "server": {
            "auth": {
                "providers": [
                    {
                        "type": "api_keys",
                        "keys": [
                            {"sha256": _sha256(key), "principal": name, "attributes": {"teams": [f"team-{name}"]}}
                            for name, key in KEYS.items()
                        ],
                    }
                ]
            }
        },
    }
    config.update(overrides)
    return config


@pytest.fixture(scope="session")
def mcp_calc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[McpFixtureServer]:
    """The repository's MCP fixture server (``tests/fixtures/mcp/server.py``: add, echo...), as tool group calc."""
    server = McpFixtureServer(tmp_path_factory.mktemp("mcp-calc"), name="calc").start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def console_server(tmp_path_factory: pytest.TempPathFactory, mcp_calc: McpFixtureServer) -> Iterator[RunningServer]:
    config = console_config()
    config["providers"]["tool_runtime"] = [
        {"provider_id": "mcp", "provider_type": "remote::model-context-protocol", "config": {}}
    ]
    config["tool_groups"] = [{"toolgroup_id": "calc", "provider_id": "mcp", "mcp_endpoint": {"uri": mcp_calc.url}}]
    server = start_server(config, tmp_path_factory.mktemp("console"), timeout=300)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Module-scoped on purpose: Playwright's sync API holds an event loop while it runs, and the
    asyncio tests that follow in the same session (tests/docs, tests/inprocess...) need it gone."""
    executable = ensure_chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(executable), args=["--no-sandbox"])
        yield chromium
        chromium.close()


@pytest.fixture(scope="session")
def screenshots() -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return SCREENSHOTS
