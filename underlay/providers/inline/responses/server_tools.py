"""Server-side tools of the loop: file_search (Vector Stores API), mcp and web_search (Tool Runtime API).

Every call is bounded by a timeout and never raises for a tool's own failure: it returns an outcome
with an error the loop turns into a failed item, which the model then sees and can answer around.
Only a request the client got wrong (an unknown vector store, no way to reach an MCP server) raises,
as the API's typed errors.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from underlay.api.errors import InvalidRequestError, NotFoundError, UnderlayError
from underlay.api.responses import FileSearchTool, McpTool
from underlay.providers.inline.responses.config import BuiltinResponsesConfig

log = logging.getLogger("underlay.responses.tools")

FILE_SEARCH_DEF = {
    "name": "file_search",
    "description": "Search the user's documents for passages relevant to a query. Use it for questions "
    "about the user's files or knowledge base.",
    "parameters": {
        "type": "object",
        "properties": {"query": {"type": "string", "description": "What to look for."}},
        "required": ["query"],
    },
}
WEB_SEARCH_DEF = {
    "name": "web_search",
    "description": "Search the web for current information.",
    "parameters": {
        "type": "object",
        "properties": {"query": {"type": "string", "description": "The search query."}},
        "required": ["query"],
    },
}


@dataclass
class Outcome:
    """What a server-side call produced: ``text``/``results`` on success, ``error`` on failure."""

    text: str = ""
    results: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None
    error_code: str | None = None
    elicitation: dict[str, Any] | None = None
    """The MCP server's question (``elicitation_required``): asked of the client as an approval request."""


@dataclass
class McpServer:
    """Where one ``mcp`` tool's server is and how to authenticate, resolved from the request and config."""

    label: str
    url: str | None = None
    toolgroup_id: str | None = None
    headers: dict[str, str] = field(default_factory=dict)


class ServerTools:
    def __init__(self, config: BuiltinResponsesConfig, router: Callable[[str], Any]) -> None:
        self.config = config
        self._router = router

    @property
    def timeout(self) -> float:
        return self.config.tool_timeout_seconds

    # ---- file_search --------------------------------------------------------------------------------

    async def check_file_search(self, tool: FileSearchTool, param: str) -> None:
        """Refuse a file_search tool naming a store the caller cannot see, before any work starts.

        Searching an unknown store used to end quietly with no results, so a typo in an id (or a ``vs_...``
        placeholder) looked like an empty knowledge base. The lookup goes through the router, so a store
        the caller may not read is as unknown as a missing one.
        """
        stores = self._router("vector_stores")
        if stores is None:
            raise InvalidRequestError(
                "file_search needs the vector_stores API; add it to apis in the run config.", param=param
            )
        seen: set[str] = set()
        for index, store_id in enumerate(tool.vector_store_ids):
            if store_id in seen:
                continue
            seen.add(store_id)
            try:
                await stores.retrieve_vector_store(store_id)
            except NotFoundError as exc:
                raise NotFoundError(
                    "Vector store",
                    store_id,
                    hint="Create it with POST /v1/vector_stores or list yours with GET /v1/vector_stores.",
                    param=f"{param}.vector_store_ids[{index}]",
                ) from exc

    async def file_search(self, tool: FileSearchTool, query: str) -> Outcome:
        """Search every listed vector store and keep the best ``max_num_results`` results overall."""
        from underlay.api.vector_stores import RankingOptions, SearchRequest

        stores = self._router("vector_stores")
        limit = tool.max_num_results or self.config.file_search_max_results
        ranking = tool.ranking_options
        options: dict[str, Any] = {}
        mode = "vector"
        if ranking is not None:
            if ranking.score_threshold is not None:
                options["score_threshold"] = ranking.score_threshold
            if ranking.hybrid_search is not None:
                mode = "hybrid"
                options.update(
                    ranker="weighted",
                    vector_weight=ranking.hybrid_search.embedding_weight,
                    keyword_weight=ranking.hybrid_search.text_weight,
                )
        try:
            request = SearchRequest.model_validate(
                {
                    "query": query or " ",
                    "max_num_results": limit,
                    "filters": tool.filters,
                    "ranking_options": RankingOptions(**options) if options else None,
                    "search_mode": mode,
                }
            )
        except ValidationError as exc:
            return Outcome(error=f"Invalid file_search settings: {exc.errors()[0]['msg']}", error_code="invalid")

        async def one(store_id: str) -> list[dict[str, Any]]:
            page = await stores.search_vector_store(store_id, request)
            return [
                {
                    "file_id": r.file_id,
                    "filename": r.filename,
                    "score": r.score,
                    "attributes": r.attributes,
                    "text": "\n".join(c.text for c in r.content),
                }
                for r in page.data
            ]

        try:
            found = await asyncio.wait_for(
                asyncio.gather(*(one(s) for s in tool.vector_store_ids)), timeout=self.timeout
            )
        except TimeoutError:
            return Outcome(error=f"file_search timed out after {self.timeout:g}s", error_code="timeout")
        except NotFoundError as exc:
            return Outcome(error=exc.message, error_code="not_found")
        except UnderlayError as exc:
            return Outcome(error=exc.message, error_code="search_failed")
        except Exception as exc:  # a backend broke: the model is told, the response goes on
            log.exception("file_search failed")
            return Outcome(error=f"{type(exc).__name__}: {exc}", error_code="search_failed")
        merged = sorted((r for group in found for r in group), key=lambda r: r["score"], reverse=True)
        return Outcome(results=merged[:limit])

    # ---- mcp -----------------------------------------------------------------------------------------

    def resolve_mcp(self, tool: McpTool, param: str) -> McpServer:
        """The server for an ``mcp`` tool: its URL, a configured connector, or a registered tool group."""
        if self._router("tool_runtime") is None:
            raise InvalidRequestError(
                "mcp tools need the tool_runtime API with a remote::model-context-protocol provider; add it to "
                "apis and providers in the run config.",
                param=param,
            )
        headers = dict(tool.headers or {})
        if tool.authorization:
            headers["Authorization"] = f"Bearer {tool.authorization}"
        if tool.server_url:
            return McpServer(tool.server_label, url=tool.server_url, headers=headers)
        for name in (tool.connector_id, tool.server_label):
            connector = self.config.connectors.get(name or "")
            if connector is not None:
                return McpServer(tool.server_label, url=connector.server_url, headers={**connector.headers, **headers})
        return McpServer(tool.server_label, toolgroup_id=tool.connector_id or tool.server_label, headers=headers)

    async def mcp_list(self, server: McpServer) -> list[dict[str, Any]]:
        """The server's tools as ``mcp_list_tools`` entries; raises the runtime's error when unreachable."""
        runtime = self._router("tool_runtime")
        async with asyncio.timeout(self.timeout):  # not wait_for: no extra task on the turn's critical path
            listed = await runtime.list_tools(
                None if server.url else server.toolgroup_id, mcp_endpoint=server.url, headers=server.headers or None
            )
        return [
            {
                "name": t.name,
                "description": t.description,
                "input_schema": t.input_schema,
                "annotations": (t.metadata or {}).get("annotations"),
            }
            for t in listed
        ]

    async def mcp_call(
        self, server: McpServer, name: str, arguments: str, elicitation_responses: list[Any] | None = None
    ) -> Outcome:
        try:
            kwargs = json.loads(arguments or "{}")
            if not isinstance(kwargs, dict):
                raise ValueError("arguments must be a JSON object")
        except ValueError as exc:
            return Outcome(error=f"Invalid arguments for {name}: {exc}", error_code="invalid_arguments")
        runtime = self._router("tool_runtime")
        try:
            async with asyncio.timeout(self.timeout + 5):
                result = await runtime.invoke_tool(
                    name,
                    kwargs,
                    toolgroup_id=None if server.url else server.toolgroup_id,
                    mcp_endpoint=server.url,
                    headers=server.headers or None,
                    timeout=self.timeout,
                    elicitation_responses=elicitation_responses,
                )
        except TimeoutError:
            return Outcome(error=f"{server.label}: {name} timed out after {self.timeout:g}s", error_code="mcp_timeout")
        except UnderlayError as exc:
            return Outcome(error=exc.message, error_code=exc.code or "mcp_error")
        except Exception as exc:
            log.exception("mcp call %s/%s failed", server.label, name)
            return Outcome(error=f"{type(exc).__name__}: {exc}", error_code="internal_error")
        if result.error_code == "elicitation_required":
            question = result.metadata.get("elicitation")
            return Outcome(error=result.error_message, error_code=result.error_code, elicitation=question)
        if result.is_error:
            return Outcome(error=result.error_message, error_code=result.error_code or "tool_error")
        return Outcome(text=result.text())

    # ---- web_search ----------------------------------------------------------------------------------

    def check_web_search(self, param: str) -> None:
        if self._router("tool_runtime") is None:
            raise InvalidRequestError(
                "web_search needs the tool_runtime API with a websearch provider; add it to the run config.",
                param=param,
            )

    async def web_search(self, query: str) -> Outcome:
        runtime = self._router("tool_runtime")
        try:
            result = await asyncio.wait_for(
                runtime.invoke_tool("web_search", {"query": query}, timeout=self.timeout), timeout=self.timeout + 5
            )
        except TimeoutError:
            return Outcome(error=f"web_search timed out after {self.timeout:g}s", error_code="timeout")
        except UnderlayError as exc:
            return Outcome(error=exc.message, error_code=exc.code or "unavailable")
        if result.is_error:
            return Outcome(error=result.error_message, error_code=result.error_code)
        records = (result.metadata or {}).get("results")
        if not isinstance(records, list):
            records = [{"title": "", "url": "", "snippet": result.text()}]
        results = [
            {
                "title": r.get("title") or "",
                "url": r.get("url") or "",
                "content": r.get("snippet") or r.get("content") or "",
            }
            for r in records
            if isinstance(r, dict)
        ]
        return Outcome(text=result.text(), results=results)
