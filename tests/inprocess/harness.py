"""The real app, served in this process: ``httpx.ASGITransport`` in place of a socket and a subprocess.

Why: most API tests check request and response shapes, error envelopes and routing, and need neither a
port nor a model. Starting ``underlay run`` for them costs seconds of start-up per server; building the
same app in process costs a few milliseconds and runs the very same code from the route to the
provider. Capabilities still keep their end-to-end tests on a real server (``tests/integration``).

What stays real: the run config is parsed as ``underlay run`` parses it, the stack starts (storage,
telemetry, the provider registry) inside the app's own lifespan, and the echo provider is found by the
registry through the ``underlay.providers`` entry-point group of an installed distribution, exactly as
a third-party package is. What differs: the body of a streamed (SSE) response arrives whole once the
handler finishes, since ``ASGITransport`` buffers it; a test of timing between events needs a server.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import openai
from fastapi import FastAPI

from tests.integration.harness import install_external_provider
from underlay.core.config import parse_run_config
from underlay.server.app import create_app

BASE_URL = "http://underlay.test"
"""Any host works (nothing is resolved); a fixed one keeps absolute URLs in the tests readable."""


@contextmanager
def external_provider_on_path(target: Path) -> Iterator[Path]:
    """Install the echo distribution under ``target`` and put it on ``sys.path`` for the duration.

    ``importlib.metadata`` reads entry points from ``sys.path`` each time it is asked, so the stack's
    registry discovers the provider the way it discovers any installed plugin.
    """
    site = str(install_external_provider(target))
    sys.path.insert(0, site)
    try:
        yield Path(site)
    finally:
        if site in sys.path:
            sys.path.remove(site)


def echo_config(state_dir: Path, **overrides: Any) -> dict[str, Any]:
    """A run config whose only provider is the external echo package (no weights, starts at once)."""
    config: dict[str, Any] = {
        "state_dir": str(state_dir),
        "apis": ["inference", "models"],
        "providers": {"inference": [{"provider_id": "echo", "provider_type": "remote::echo-test", "config": {}}]},
        "server": {"max_request_bytes": 65536},
    }
    config.update(overrides)
    return config


@dataclass
class InProcessServer:
    """One started app and the clients that talk to it: raw HTTP and the ``openai`` SDK."""

    app: FastAPI
    http: httpx.AsyncClient
    """Raw requests; paths are relative to the server root (``/v1/models``)."""
    _others: list[httpx.AsyncClient] = field(default_factory=list)

    @property
    def v1(self) -> str:
        return f"{BASE_URL}/v1"

    def openai(self, **kwargs: Any) -> openai.AsyncOpenAI:
        """The SDK over the same transport; no retries, so a failure shows on the first try."""
        return openai.AsyncOpenAI(base_url=self.v1, api_key="unused", max_retries=0, http_client=self.http, **kwargs)

    def http_from(self, address: str) -> httpx.AsyncClient:
        """Raw requests that the app sees coming from ``address`` (its ASGI ``client``), as a test of
        per-address behaviour (anonymous quotas) needs; closed with the app."""
        transport = httpx.ASGITransport(app=self.app, client=(address, 50000))
        client = httpx.AsyncClient(transport=transport, base_url=BASE_URL, timeout=30)
        self._others.append(client)
        return client

    def openai_from(self, address: str, **kwargs: Any) -> openai.AsyncOpenAI:
        """The SDK, seen by the app as coming from ``address``; ``api_key`` may be given in ``kwargs``."""
        options: dict[str, Any] = {"api_key": "unused", "max_retries": 0, **kwargs}
        return openai.AsyncOpenAI(base_url=self.v1, http_client=self.http_from(address), **options)


@asynccontextmanager
async def serve_in_process(
    config: dict[str, Any], env: Mapping[str, str] | None = None
) -> AsyncIterator[InProcessServer]:
    """Parse ``config`` (``${env.NAME}`` from ``env``, else this process's environment), build the app and
    run its lifespan, which starts the stack and stops it on the way out."""
    run_config = parse_run_config(config, source="<in-process test>", env=env)
    app = create_app(run_config)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url=BASE_URL, timeout=30) as http:
            server = InProcessServer(app, http)
            try:
                yield server
            finally:
                for other in server._others:
                    await other.aclose()
