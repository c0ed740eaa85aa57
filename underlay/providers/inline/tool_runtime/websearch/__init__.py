"""``builtin::websearch``: the ``web_search`` tool over a configurable search engine.

Engines: ``searxng`` (a SearXNG URL), ``brave`` and ``tavily`` (an API key), or ``local-index``, an
offline SQLite FTS5 index over a directory of pages or a JSONL file (``documents``), built into
``index_path`` in the state directory and rebuilt when the documents change. See
:mod:`.engines` for the adapters.

A failing engine never fails the call: the result carries ``error_message`` naming the engine and
``error_code: search_error``. Results are in the content (numbered, for a model) and in
``metadata["results"]`` (``title``, ``url``, ``snippet``, ``score``) for callers that cite them.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from underlay.api.errors import NotFoundError, ProviderError
from underlay.api.tool_runtime import ToolCallContext, ToolDef, ToolGroup, ToolInvocationResult
from underlay.providers.inline.tool_runtime.websearch.engines import (
    BRAVE_URL,
    TAVILY_URL,
    BraveEngine,
    LocalIndexEngine,
    SearchEngine,
    SearchEngineError,
    SearxngEngine,
    TavilyEngine,
)
from underlay.providers.inline.tool_runtime.websearch.local_index import LocalIndex

log = logging.getLogger("underlay.tool_runtime.websearch")
TOOL_NAME = "web_search"

INPUT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "query": {"type": "string", "description": "What to search the web for."},
        "max_num_results": {"type": "integer", "minimum": 1, "maximum": 20, "description": "How many results."},
    },
    "required": ["query"],
}


class Config(BaseModel):
    model_config = ConfigDict(extra="forbid")

    toolgroup_id: str = Field(default="builtin::websearch", description="The tool group this provider serves.")
    engine: Literal["local-index", "searxng", "brave", "tavily"] = "local-index"
    documents: str | None = Field(
        default=None, description="local-index: a directory of pages (.md, .txt, .html) or a JSONL file."
    )
    index_path: str = Field(
        default="websearch.db",
        validate_default=True,
        description="local-index: the SQLite index file (relative: in the state dir).",
    )
    url: str | None = Field(default=None, description="searxng: the instance's base URL; brave/tavily: override.")
    api_key: SecretStr | None = Field(default=None, description="brave/tavily: the API key.")
    max_num_results: int = Field(default=5, ge=1, le=20, description="Default number of results.")
    timeout: float = Field(default=10.0, gt=0, description="Seconds an engine may take.")

    @field_validator("documents", "url", "api_key", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: Any) -> Any:
        """``${env.X:=}`` yields ""; that means unset."""
        return value or None

    @field_validator("index_path")
    @classmethod
    def _in_state_dir(cls, value: str, info: ValidationInfo) -> str:
        if value == ":memory:":
            return value
        path = Path(os.path.expanduser(value))
        state_dir = (info.context or {}).get("state_dir")
        if not path.is_absolute() and state_dir:
            path = Path(state_dir) / path
        return str(path)

    @model_validator(mode="after")
    def _engine_needs(self) -> Config:
        if self.engine == "local-index" and not self.documents:
            raise ValueError("engine local-index needs documents (a directory or a .jsonl file)")
        if self.engine == "searxng" and not self.url:
            raise ValueError("engine searxng needs url (the SearXNG instance)")
        if self.engine in ("brave", "tavily") and self.api_key is None:
            raise ValueError(f"engine {self.engine} needs api_key")
        return self


class WebSearchArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")

    query: str = Field(min_length=1)
    max_num_results: int | None = Field(default=None, ge=1, le=20)


def build_engine(config: Config) -> SearchEngine:
    key = config.api_key.get_secret_value() if config.api_key else None
    if config.engine == "searxng":
        return SearxngEngine(config.url or "", key, config.timeout)
    if config.engine == "brave":
        return BraveEngine(config.url or BRAVE_URL, key, config.timeout)
    if config.engine == "tavily":
        return TavilyEngine(config.url or TAVILY_URL, key, config.timeout)
    documents = Path(os.path.expanduser(config.documents or "")).resolve()
    return LocalIndexEngine(LocalIndex(documents, config.index_path))


class WebSearchTool:
    serves_mcp = False

    def __init__(self, provider_id: str, config: Config) -> None:
        self.provider_id = provider_id
        self.config = config
        self.engine = build_engine(config)

    async def initialize(self) -> None:
        if isinstance(self.engine, LocalIndexEngine) and not self.engine.index.source.exists():
            # A start-up failure the stack reports as one line, not a FileNotFoundError traceback.
            raise ProviderError(
                self.provider_id,
                f"websearch documents '{self.engine.index.source}' do not exist; create them (a JSONL file of "
                "url/title/text records or a directory of pages) or point config.documents at them",
            )
        await self.engine.start()
        if isinstance(self.engine, LocalIndexEngine):
            log.info("websearch local index: %d documents from %s", self.engine.index.size, self.engine.index.source)

    async def shutdown(self) -> None:
        await self.engine.close()

    async def health(self) -> dict[str, Any]:
        return {"status": "OK", "engine": self.engine.name}

    def builtin_tool_groups(self) -> list[ToolGroup]:
        return [
            ToolGroup(
                identifier=self.config.toolgroup_id,
                provider_id=self.provider_id,
                provider_resource_id=self.config.toolgroup_id,
                source="builtin",
                args={"engine": self.config.engine},
            )
        ]

    async def list_runtime_tools(self, context: ToolCallContext) -> list[ToolDef]:
        return [
            ToolDef(
                name=TOOL_NAME,
                description="Search the web and return the most relevant pages with their titles, URLs and snippets.",
                input_schema=INPUT_SCHEMA,
                toolgroup_id=context.toolgroup.identifier if context.toolgroup else self.config.toolgroup_id,
                provider_id=self.provider_id,
                metadata={"builtin": True, "engine": self.config.engine},
            )
        ]

    async def invoke_tool(
        self, tool_name: str, kwargs: dict[str, Any], context: ToolCallContext
    ) -> ToolInvocationResult:
        if tool_name != TOOL_NAME:
            raise NotFoundError(
                "Tool", tool_name, hint=f"Tool group '{self.config.toolgroup_id}' has only {TOOL_NAME}."
            )
        try:
            args = WebSearchArgs.model_validate(kwargs)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "arguments"
            return ToolInvocationResult(
                error_message=f"web_search: invalid argument '{where}': {first['msg']}", error_code="invalid_arguments"
            )
        limit = args.max_num_results or self.config.max_num_results
        try:
            results = await self.engine.search(args.query, limit)
        except SearchEngineError as exc:
            return ToolInvocationResult(error_message=f"web_search: {exc.message}", error_code="search_error")
        records = [{"title": r.title, "url": r.url, "snippet": r.snippet, "score": r.score} for r in results]
        if not records:
            text = f"No web results for '{args.query}'."
        else:
            text = "\n\n".join(
                f"[{n}] {r['title']}\n{r['url']}\n{r['snippet']}".rstrip() for n, r in enumerate(records, start=1)
            )
        return ToolInvocationResult(
            content=text, metadata={"results": records, "query": args.query, "engine": self.engine.name}
        )


async def create_provider(provider_id: str, config: Config, deps: dict[str, Any]) -> WebSearchTool:
    return WebSearchTool(provider_id, config)
