"""``inline::builtin`` for the Responses API: the agent loop (model calls plus server-side tools).

Importing this package only loads the config; :func:`create_provider` imports the engine.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from underlay.api.providers import ProviderSpec
from underlay.providers.inline.responses.config import BuiltinResponsesConfig

if TYPE_CHECKING:
    from underlay.providers.inline.responses.provider import BuiltinResponsesProvider

__all__ = ["SPEC", "BuiltinResponsesConfig", "create_provider"]


async def create_provider(
    provider_id: str, config: BuiltinResponsesConfig, deps: dict[str, Any]
) -> BuiltinResponsesProvider:
    from underlay.providers.inline.responses.provider import BuiltinResponsesProvider

    return BuiltinResponsesProvider(provider_id, config, deps)


SPEC = ProviderSpec(
    api="responses",
    provider_type="inline::builtin",
    config_class="underlay.providers.inline.responses:BuiltinResponsesConfig",
    factory="underlay.providers.inline.responses:create_provider",
    api_dependencies=("inference", "vector_stores", "tool_runtime", "conversations", "files"),
    optional_api_dependencies=("vector_stores", "tool_runtime", "files", "safety", "prompts"),
    description="The Responses API's agent loop: model turns plus file_search, mcp and web_search tools.",
)
