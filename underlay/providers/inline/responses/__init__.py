"""``inline::builtin`` for the Responses API: the agent loop (model calls plus server-side tools).

Importing this package only loads the config; :func:`create_provider` imports the engine.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from underlay.providers.inline.responses.config import BuiltinResponsesConfig

if TYPE_CHECKING:
    from underlay.providers.inline.responses.provider import BuiltinResponsesProvider

__all__ = ["BuiltinResponsesConfig", "create_provider"]


async def create_provider(
    provider_id: str, config: BuiltinResponsesConfig, deps: dict[str, Any]
) -> BuiltinResponsesProvider:
    from underlay.providers.inline.responses.provider import BuiltinResponsesProvider

    return BuiltinResponsesProvider(provider_id, config, deps)
