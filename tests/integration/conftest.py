"""Shared fixtures: real Underlay servers on loopback."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.harness import RunningServer, install_external_provider, local_config, start_server


@pytest.fixture(scope="session")
def external_provider_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return install_external_provider(tmp_path_factory.mktemp("site") / "site-packages")


@pytest.fixture(scope="session")
def echo_server(tmp_path_factory: pytest.TempPathFactory, external_provider_path: Path) -> Iterator[RunningServer]:
    """A server whose only provider comes from the external test package (fast, no weights)."""
    config = {
        "apis": ["inference", "models"],
        "providers": {"inference": [{"provider_id": "echo", "provider_type": "remote::echo-test", "config": {}}]},
        "server": {"max_request_bytes": 65536},
    }
    server = start_server(config, tmp_path_factory.mktemp("echo"), extra_pythonpath=[external_provider_path])
    yield server
    server.stop()


@pytest.fixture(scope="session")
def local_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """A server with the embedded models (Qwen 0.5B, SmolLM2, MiniLM), started once per session."""
    server = start_server(local_config(), tmp_path_factory.mktemp("local"), timeout=300)
    yield server
    server.stop()
