"""``builtin::websearch``'s Brave and Tavily engines against STAND-INS speaking those APIs' wire formats.

Brave Search and Tavily are paid cloud services, so a real ``underlay run`` is pointed (through each
engine's ``url`` override) at loopback stand-ins (``wire_standins.py``) that answer as the services
document: Brave's ``GET /res/v1/web/search?q=&count=`` with the key in ``X-Subscription-Token`` and
results under ``web.results[]`` (``title``, ``url``, ``description``), its errors as
``{"type": "ErrorResponse", "error": {"status", "code", "detail"}}``; Tavily's ``POST /search`` with
``Authorization: Bearer`` and a JSON body (``query``, ``max_results``), results under ``results[]``
(``title``, ``url``, ``content``, ``score``), errors as ``{"detail": {"error": ...}}``.

The tool is called through ``POST /v1/tool-runtime/invoke``. A failing engine never fails the call: the
result carries ``error_code: search_error`` and a message naming the engine and the upstream status
(401 and 429) or the stall, and never the API key, even when the upstream echoes it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from aiohttp import web

from tests.integration.harness import RunningServer, start_server
from tests.integration.wire_standins import Failure, Seen, StandIn

BRAVE_KEY = "BSA-brave-key-5be1"
TAVILY_KEY = "tvly-dev-key-0c77"
BRAVE_PATH = "/res/v1/web/search"
TAVILY_PATH = "/search"


def brave_standin() -> StandIn:
    async def search(seen: Seen) -> web.StreamResponse:
        if seen.headers.get("x-subscription-token") != BRAVE_KEY:
            error = {
                "id": "e1",
                "status": 401,
                "code": "SUBSCRIPTION_TOKEN_INVALID",
                "detail": "The provided subscription token is invalid.",
            }
            return web.json_response({"type": "ErrorResponse", "error": error}, status=401)
        query, count = seen.query["q"], int(seen.query.get("count", "20"))
        results = [
            {
                "title": f"{query} result {n}",
                "url": f"https://brave.example/{n}",
                "description": f"About {query}, part {n}.",
                "is_source_local": False,
                "language": "en",
                "family_friendly": True,
            }
            for n in range(1, 6)
        ]
        return web.json_response(
            {"type": "search", "query": {"original": query}, "web": {"type": "search", "results": results[:count]}}
        )

    return StandIn("brave", {("GET", BRAVE_PATH): search}).start()


def tavily_standin() -> StandIn:
    async def search(seen: Seen) -> web.StreamResponse:
        if seen.headers.get("authorization") != f"Bearer {TAVILY_KEY}":
            return web.json_response({"detail": {"error": "Unauthorized: missing or invalid API key."}}, status=401)
        query, limit = seen.body["query"], int(seen.body.get("max_results", 5))
        results = [
            {
                "title": f"{query} page {n}",
                "url": f"https://tavily.example/{n}",
                "content": f"Tavily on {query} ({n}).",
                "score": round(0.9 - n / 10, 2),
                "raw_content": None,
            }
            for n in range(1, 6)
        ]
        return web.json_response(
            {
                "query": query,
                "follow_up_questions": None,
                "answer": None,
                "images": [],
                "results": results[:limit],
                "response_time": 0.42,
                "request_id": "r-1",
            }
        )

    return StandIn("tavily", {("POST", TAVILY_PATH): search}).start()


@pytest.fixture(scope="module")
def standins() -> Iterator[dict[str, StandIn]]:
    started = {"brave": brave_standin(), "tavily": tavily_standin()}
    yield started
    for s in started.values():
        s.stop()


@pytest.fixture(scope="module")
def server(standins: dict[str, StandIn], tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    def engine(name: str, url: str, key: str) -> dict[str, Any]:
        config = {"engine": name, "url": url, "api_key": key, "toolgroup_id": name, "timeout": 1.5}
        return {"provider_id": name, "provider_type": "builtin::websearch", "config": config}

    config = {
        "apis": ["tool_runtime"],
        "providers": {
            "tool_runtime": [
                engine("brave", standins["brave"].root + BRAVE_PATH, BRAVE_KEY),
                engine("tavily", standins["tavily"].root + TAVILY_PATH, TAVILY_KEY),
            ]
        },
    }
    running = start_server(config, tmp_path_factory.mktemp("websearch"))
    yield running
    running.stop()


def _search(server: RunningServer, group: str, query: str, **extra: Any) -> dict[str, Any]:
    body = {"tool_name": "web_search", "kwargs": {"query": query, **extra}, "toolgroup_id": group}
    response = httpx.post(f"{server.v1}/tool-runtime/invoke", json=body, timeout=30)
    assert response.status_code == 200, response.text
    return response.json()


def test_brave_request_and_results(server: RunningServer, standins: dict[str, StandIn]) -> None:
    result = _search(server, "brave", "octopus camouflage", max_num_results=3)
    assert result["error_message"] is None
    assert result["metadata"]["results"][0] == {
        "title": "octopus camouflage result 1",
        "url": "https://brave.example/1",
        "snippet": "About octopus camouflage, part 1.",
        "score": None,
    }
    assert len(result["metadata"]["results"]) == 3 and "[3] octopus camouflage result 3" in result["content"]
    sent = standins["brave"].requests_to(BRAVE_PATH)[-1]
    assert sent.method == "GET" and sent.query == {"q": "octopus camouflage", "count": "3"}
    assert sent.headers["x-subscription-token"] == BRAVE_KEY and sent.headers["accept"] == "application/json"
    assert "authorization" not in sent.headers


def test_tavily_request_and_results(server: RunningServer, standins: dict[str, StandIn]) -> None:
    result = _search(server, "tavily", "tide tables", max_num_results=2)
    assert result["error_message"] is None
    assert [r["url"] for r in result["metadata"]["results"]] == ["https://tavily.example/1", "https://tavily.example/2"]
    assert (
        result["metadata"]["results"][0]["snippet"] == "Tavily on tide tables (1)."
        and result["metadata"]["results"][0]["score"] == 0.8
    )
    sent = standins["tavily"].requests_to(TAVILY_PATH)[-1]
    assert sent.method == "POST" and sent.headers["authorization"] == f"Bearer {TAVILY_KEY}"
    assert sent.body == {"query": "tide tables", "max_results": 2, "search_depth": "basic"}
    assert TAVILY_KEY not in str(sent.body)  # the key travels in the header only


@pytest.mark.parametrize("group", ["brave", "tavily"])
def test_rejected_key_is_a_search_error_naming_the_engine_without_the_key(
    server: RunningServer, standins: dict[str, StandIn], group: str
) -> None:
    key = BRAVE_KEY if group == "brave" else TAVILY_KEY
    path = BRAVE_PATH if group == "brave" else TAVILY_PATH
    # An upstream (or a proxy before it) that quotes the key it refused.
    echoed = {
        "type": "ErrorResponse",
        "error": {"status": 401, "code": "SUBSCRIPTION_TOKEN_INVALID", "detail": f"token {key} is invalid"},
    }
    standins[group].fail(path, Failure(401, echoed if group == "brave" else {"detail": {"error": f"bad key {key}"}}))
    result = _search(server, group, "anything")
    assert result["error_code"] == "search_error" and f"{group} answered HTTP 401" in result["error_message"]
    assert key not in str(result)


@pytest.mark.parametrize("group", ["brave", "tavily"])
def test_rate_limit_and_stall(server: RunningServer, standins: dict[str, StandIn], group: str) -> None:
    path = BRAVE_PATH if group == "brave" else TAVILY_PATH
    limited = (
        {
            "type": "ErrorResponse",
            "error": {"status": 429, "code": "RATE_LIMITED", "detail": "Request rate limit exceeded for plan."},
        }
        if group == "brave"
        else {"detail": {"error": "Rate limit exceeded."}}
    )
    standins[group].fail(path, Failure(429, limited, headers={"Retry-After": "1"}))
    result = _search(server, group, "anything")
    assert result["error_code"] == "search_error" and f"{group} answered HTTP 429" in result["error_message"]
    assert "rate limit" in result["error_message"].lower()

    standins[group].fail(path, Failure(200, {}, delay=4))  # past the 1.5 s timeout
    stalled = _search(server, group, "anything")
    assert stalled["error_code"] == "search_error" and "did not answer in time" in stalled["error_message"]
    assert group in stalled["error_message"]


def test_no_traceback_in_the_server_log(server: RunningServer) -> None:
    assert "Traceback" not in server.log()
