"""Fixtures for in-process API tests: the real app over ``httpx.ASGITransport``, with the echo plugin.

See :mod:`tests.inprocess.harness` for what is real and what differs from a served app.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.inprocess.harness import InProcessServer, echo_config, external_provider_on_path, serve_in_process


@pytest.fixture(scope="session")
def echo_plugin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The echo provider installed as a distribution with an ``underlay.providers`` entry point."""
    with external_provider_on_path(tmp_path_factory.mktemp("inprocess-site") / "site-packages") as site:
        yield site


@pytest.fixture(scope="session")
async def echo_app(echo_plugin: Path, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[InProcessServer]:
    """One app for the session whose only provider is the echo plugin; tests keep their data apart by
    unique names, as they would on a shared server."""
    async with serve_in_process(echo_config(tmp_path_factory.mktemp("inprocess-echo"))) as server:
        yield server
