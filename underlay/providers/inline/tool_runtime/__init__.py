"""In-process tool-runtime providers: the builtin tools (file_search, web_search); the specs the entry
points name."""

from __future__ import annotations

from underlay.api.providers import ProviderSpec

FILE_SEARCH = ProviderSpec(
    api="tool_runtime",
    provider_type="builtin::file_search",
    config_class="underlay.providers.inline.tool_runtime.file_search:Config",
    factory="underlay.providers.inline.tool_runtime.file_search:create_provider",
    api_dependencies=("vector_stores",),
    description="The file_search tool over vector stores (needs the vector_stores API to answer).",
)

WEBSEARCH = ProviderSpec(
    api="tool_runtime",
    provider_type="builtin::websearch",
    config_class="underlay.providers.inline.tool_runtime.websearch:Config",
    factory="underlay.providers.inline.tool_runtime.websearch:create_provider",
    description="The web_search tool: SearXNG, Brave, Tavily, or an offline SQLite FTS5 index.",
)
