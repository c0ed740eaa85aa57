"""Web-search engines behind the ``web_search`` tool: one small adapter per service, one interface.

Each adapter turns a query into a list of :class:`WebResult` (title, URL, snippet) and reports any
failure as :class:`SearchEngineError` with a message naming the engine, so the tool can hand a
model a clear error instead of a stack trace. The HTTP adapters share one ``httpx`` client per
provider (connection reuse) and its timeout.

- ``searxng``: a SearXNG instance's JSON API (``GET {url}/search?q=...&format=json``); the instance
  must allow the ``json`` format in its ``settings.yml`` (``search.formats``).
- ``brave``: Brave Search's web search API (``X-Subscription-Token``).
- ``tavily``: Tavily's search API (bearer token).
- ``local-index``: the offline SQLite FTS5 index in :mod:`.local_index`.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, Protocol

import httpx

from underlay.providers.inline.tool_runtime.websearch.local_index import LocalIndex

BRAVE_URL = "https://api.search.brave.com/res/v1/web/search"
TAVILY_URL = "https://api.tavily.com/search"


@dataclass(frozen=True)
class WebResult:
    title: str
    url: str
    snippet: str
    score: float | None = None


class SearchEngineError(Exception):
    """A search that failed; ``message`` names the engine and says what happened."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class SearchEngine(Protocol):
    name: str

    async def start(self) -> None: ...

    async def search(self, query: str, limit: int) -> list[WebResult]: ...

    async def close(self) -> None: ...


class _HttpEngine:
    """Shared plumbing: one client, and HTTP failures turned into messages that name the engine."""

    name = "http"

    def __init__(self, url: str, api_key: str | None, timeout: float) -> None:
        self.url = url
        self.api_key = api_key
        self.client = httpx.AsyncClient(timeout=timeout, headers={"Accept": "application/json"})

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        await self.client.aclose()

    async def _request(self, method: str, url: str, **kwargs: Any) -> Any:
        try:
            response = await self.client.request(method, url, **kwargs)
        except httpx.TimeoutException:
            raise SearchEngineError(f"{self.name} at {url} did not answer in time") from None
        except httpx.HTTPError as exc:
            raise SearchEngineError(f"{self.name} at {url} is unreachable: {exc}") from None
        if response.status_code >= 400:
            detail = response.text[:2000]
            if self.api_key:  # an upstream (or a proxy) may quote the key it refused; never pass it on
                detail = detail.replace(self.api_key, "<api_key>")
            detail = detail[:200].strip()
            raise SearchEngineError(f"{self.name} answered HTTP {response.status_code}: {detail}")
        try:
            return response.json()
        except ValueError:
            raise SearchEngineError(f"{self.name} did not answer with JSON (is its JSON format enabled?)") from None


class SearxngEngine(_HttpEngine):
    name = "searxng"

    async def search(self, query: str, limit: int) -> list[WebResult]:
        body = await self._request("GET", self.url.rstrip("/") + "/search", params={"q": query, "format": "json"})
        return [
            WebResult(
                title=str(item.get("title") or item.get("url") or ""),
                url=str(item.get("url") or ""),
                snippet=str(item.get("content") or ""),
                score=item.get("score"),
            )
            for item in (body.get("results") or [])[:limit]
            if item.get("url")
        ]


class BraveEngine(_HttpEngine):
    name = "brave"

    async def search(self, query: str, limit: int) -> list[WebResult]:
        headers = {"X-Subscription-Token": self.api_key or ""}
        body = await self._request("GET", self.url, params={"q": query, "count": limit}, headers=headers)
        items = ((body.get("web") or {}).get("results")) or []
        return [
            WebResult(
                title=str(i.get("title") or ""), url=str(i.get("url") or ""), snippet=str(i.get("description") or "")
            )
            for i in items[:limit]
            if i.get("url")
        ]


class TavilyEngine(_HttpEngine):
    name = "tavily"

    async def search(self, query: str, limit: int) -> list[WebResult]:
        headers = {"Authorization": f"Bearer {self.api_key or ''}"}
        payload = {"query": query, "max_results": limit, "search_depth": "basic"}
        body = await self._request("POST", self.url, json=payload, headers=headers)
        return [
            WebResult(
                title=str(i.get("title") or ""),
                url=str(i.get("url") or ""),
                snippet=str(i.get("content") or ""),
                score=i.get("score"),
            )
            for i in (body.get("results") or [])[:limit]
            if i.get("url")
        ]


class LocalIndexEngine:
    name = "local-index"

    def __init__(self, index: LocalIndex) -> None:
        self.index = index

    async def start(self) -> None:
        await asyncio.to_thread(self.index.open)

    async def search(self, query: str, limit: int) -> list[WebResult]:
        try:
            hits = await asyncio.to_thread(self.index.search, query, limit)
        except Exception as exc:
            raise SearchEngineError(f"local-index search failed: {exc}") from None
        return [WebResult(title=h.title, url=h.url, snippet=h.snippet, score=h.score) for h in hits]

    async def close(self) -> None:
        await asyncio.to_thread(self.index.close)
