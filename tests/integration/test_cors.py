"""CORS by config (``server.cors_origins``) through a real ``underlay run``: preflights, allowed and
disallowed origins, and how CORS sits with quotas (preflights are free; a 429 still reaches the page).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.integration.harness import RunningServer, start_server

ECHO = {"inference": [{"provider_id": "echo", "provider_type": "remote::echo-test", "config": {}}]}
ALLOWED = "https://app.example"
OTHER = "https://evil.example"


@pytest.fixture(scope="module")
def cors_server(tmp_path_factory: pytest.TempPathFactory, external_provider_path: Path) -> Iterator[RunningServer]:
    config = {
        "apis": ["inference", "models"],
        "providers": ECHO,
        "server": {"cors_origins": [ALLOWED], "quotas": {"limits": {"requests_per_day": 2}}},
    }
    server = start_server(config, tmp_path_factory.mktemp("cors"), extra_pythonpath=[external_provider_path])
    yield server
    server.stop()


def preflight(server: RunningServer, origin: str) -> httpx.Response:
    return httpx.options(
        f"{server.v1}/chat/completions",
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type",
        },
    )


def test_preflight_from_an_allowed_origin(cors_server: RunningServer) -> None:
    response = preflight(cors_server, ALLOWED)
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == ALLOWED
    assert "POST" in response.headers["access-control-allow-methods"]
    allowed_headers = response.headers["access-control-allow-headers"].lower()
    assert "authorization" in allowed_headers and "content-type" in allowed_headers


def test_preflight_from_another_origin_is_refused(cors_server: RunningServer) -> None:
    response = preflight(cors_server, OTHER)
    assert response.status_code == 400
    assert "access-control-allow-origin" not in response.headers


def test_quota_ignores_preflights_and_429s_stay_readable(cors_server: RunningServer) -> None:
    for _ in range(5):
        assert preflight(cors_server, ALLOWED).status_code == 200
    # Requests from a disallowed origin are served (CORS is the browser's check), without the header.
    other = httpx.get(f"{cors_server.v1}/models", headers={"Origin": OTHER})
    assert other.status_code == 200 and "access-control-allow-origin" not in other.headers
    allowed = httpx.get(f"{cors_server.v1}/models", headers={"Origin": ALLOWED})
    assert allowed.status_code == 200 and allowed.headers["access-control-allow-origin"] == ALLOWED
    refused = httpx.get(f"{cors_server.v1}/models", headers={"Origin": ALLOWED})  # the third counted request
    assert refused.status_code == 429
    assert refused.headers["access-control-allow-origin"] == ALLOWED  # the page can read why


def test_no_cors_headers_unless_configured(echo_server: RunningServer) -> None:
    response = preflight(echo_server, ALLOWED)
    assert "access-control-allow-origin" not in response.headers
    assert response.status_code == 405
    plain = httpx.get(f"{echo_server.v1}/models", headers={"Origin": ALLOWED})
    assert plain.status_code == 200 and "access-control-allow-origin" not in plain.headers
