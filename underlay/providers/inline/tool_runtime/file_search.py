"""``builtin::file_search``: the ``file_search`` tool, searching vector stores through the Vector Stores API.

Why through the API's router and not a backend: the router is where ownership is enforced, files still
being ingested are hidden and queries are embedded with each store's own model, so a tool call sees
exactly what ``POST /v1/vector_stores/{id}/search`` would show the same caller.

Several stores are searched one after the other and their results merged by score. That is only a
fair comparison when the stores score alike (same embedding model and search mode), which is the
common case; the merged list keeps each result's store id so a caller can tell them apart.

The tool works without the Vector Stores API switched on; it then answers every call with an error
result saying so (``error_code: unavailable``), so a distribution can always list it.
"""

from __future__ import annotations

import logging
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from underlay.api.errors import NotFoundError, UnderlayError
from underlay.api.tool_runtime import ToolCallContext, ToolDef, ToolGroup, ToolInvocationResult
from underlay.api.vector_io import Filter, SearchMode
from underlay.api.vector_stores import RankingOptions, SearchRequest

log = logging.getLogger("underlay.tool_runtime.file_search")
TOOL_NAME = "file_search"

INPUT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "query": {"type": "string", "description": "What to look for, in natural language."},
        "vector_store_ids": {
            "type": "array",
            "items": {"type": "string"},
            "description": "The vector stores to search (default: the ones configured for the tool).",
        },
        "max_num_results": {
            "type": "integer",
            "minimum": 1,
            "maximum": 50,
            "description": "How many passages to return.",
        },
        "filters": {
            "type": "object",
            "description": (
                "An attribute filter: {type: eq|ne|gt|gte|lt|lte|in|nin, key, value} or {type: and|or, filters: [...]}."
            ),
        },
        "ranking_options": {"type": "object", "description": "score_threshold and hybrid fusion options."},
        "search_mode": {"type": "string", "enum": ["vector", "keyword", "hybrid"]},
    },
    "required": ["query"],
}


class Config(BaseModel):
    model_config = ConfigDict(extra="forbid")

    toolgroup_id: str = Field(default="builtin::file_search", description="The tool group this provider serves.")
    vector_store_ids: list[str] = Field(default_factory=list, description="Stores searched when a call names none.")
    max_num_results: int = Field(default=10, ge=1, le=50, description="Default number of passages.")
    search_mode: SearchMode = Field(default="vector", description="Default search mode.")
    max_chars_per_result: int = Field(
        default=4000, ge=100, description="Passages longer than this are cut in the text the model reads."
    )


class FileSearchArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")

    query: str | list[str]
    vector_store_ids: list[str] | None = None
    max_num_results: int | None = Field(default=None, ge=1, le=50)
    filters: Filter | None = None
    ranking_options: RankingOptions | None = None
    search_mode: SearchMode | None = None
    rewrite_query: bool = False


class FileSearchTool:
    serves_mcp = False

    def __init__(self, provider_id: str, config: Config, vector_stores: Any | None) -> None:
        self.provider_id = provider_id
        self.config = config
        self.vector_stores = vector_stores

    async def initialize(self) -> None:
        if self.vector_stores is None:
            log.info("file_search: the vector_stores API is off; the tool will answer with an error")

    async def shutdown(self) -> None:
        pass

    async def health(self) -> dict[str, Any]:
        return {"status": "OK" if self.vector_stores is not None else "vector_stores API is off"}

    def builtin_tool_groups(self) -> list[ToolGroup]:
        return [
            ToolGroup(
                identifier=self.config.toolgroup_id,
                provider_id=self.provider_id,
                provider_resource_id=self.config.toolgroup_id,
                source="builtin",
            )
        ]

    def _tool(self, context: ToolCallContext) -> ToolDef:
        return ToolDef(
            name=TOOL_NAME,
            description=(
                "Search the content of uploaded files (vector stores) and return the most relevant passages "
                "with their file names."
            ),
            input_schema=INPUT_SCHEMA,
            toolgroup_id=context.toolgroup.identifier if context.toolgroup else self.config.toolgroup_id,
            provider_id=self.provider_id,
            metadata={"builtin": True},
        )

    async def list_runtime_tools(self, context: ToolCallContext) -> list[ToolDef]:
        return [self._tool(context)]

    async def invoke_tool(
        self, tool_name: str, kwargs: dict[str, Any], context: ToolCallContext
    ) -> ToolInvocationResult:
        if tool_name != TOOL_NAME:
            raise NotFoundError(
                "Tool", tool_name, hint=f"Tool group '{self.config.toolgroup_id}' has only {TOOL_NAME}."
            )
        try:
            args = FileSearchArgs.model_validate(kwargs)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "arguments"
            return _error(f"file_search: invalid argument '{where}': {first['msg']}", "invalid_arguments")
        if self.vector_stores is None:
            return _error(
                "file_search needs the vector_stores API; add vector_stores to the run config's apis.", "unavailable"
            )
        store_ids = args.vector_store_ids or self.config.vector_store_ids
        if not store_ids:
            return _error("file_search: pass vector_store_ids (no default stores are configured).", "invalid_arguments")
        limit = args.max_num_results or self.config.max_num_results
        request = SearchRequest(
            query=args.query,
            max_num_results=limit,
            filters=args.filters,
            ranking_options=args.ranking_options,
            rewrite_query=args.rewrite_query,
            search_mode=args.search_mode or self.config.search_mode,
        )
        results: list[dict[str, Any]] = []
        queries: list[str] = []
        for store_id in store_ids:
            try:
                page = await self.vector_stores.search_vector_store(store_id, request)
            except NotFoundError:
                return _error(f"file_search: vector store '{store_id}' not found.", "invalid_arguments")
            except UnderlayError as exc:
                return _error(f"file_search: searching vector store '{store_id}' failed: {exc.message}", "search_error")
            queries = page.search_query
            for hit in page.data:
                results.append(
                    {
                        "vector_store_id": store_id,
                        "file_id": hit.file_id,
                        "filename": hit.filename,
                        "score": hit.score,
                        "attributes": hit.attributes or {},
                        "text": "\n".join(c.text for c in hit.content),
                    }
                )
        results.sort(key=lambda r: r["score"], reverse=True)
        results = results[:limit]
        return ToolInvocationResult(
            content=self._render(queries or [str(args.query)], results),
            metadata={"results": results, "queries": queries, "vector_store_ids": store_ids},
        )

    def _render(self, queries: list[str], results: list[dict[str, Any]]) -> str:
        """The text a model reads: numbered passages with their sources, best first."""
        asked = "; ".join(queries)
        if not results:
            return f"No passages matched '{asked}'."
        lines = [f"Found {len(results)} passage{'s' if len(results) != 1 else ''} for '{asked}':"]
        cap = self.config.max_chars_per_result
        for number, result in enumerate(results, start=1):
            text = result["text"].strip()
            if len(text) > cap:
                text = text[:cap].rstrip() + " [...]"
            lines.append(
                f"\n[{number}] {result['filename']} (file_id {result['file_id']}, score {result['score']:.3f})\n{text}"
            )
        return "\n".join(lines)


def _error(message: str, code: str) -> ToolInvocationResult:
    return ToolInvocationResult(error_message=message, error_code=code)


async def create_provider(provider_id: str, config: Config, deps: dict[str, Any]) -> FileSearchTool:
    return FileSearchTool(provider_id, config, deps.get("vector_stores"))
