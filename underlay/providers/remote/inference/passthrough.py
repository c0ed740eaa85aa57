"""``remote::passthrough``: any OpenAI-compatible base URL, with no assumptions about the upstream.

Nothing differs from the shared base except the names: the URL must be given, the key is optional,
and a per-request key arrives as ``passthrough_api_key`` (set ``provider_data_key`` to tell several
passthrough providers apart).
"""

from __future__ import annotations

from typing import Any

from underlay.providers.utils.openai_compat import OpenAICompatConfig, OpenAICompatInferenceProvider


class Config(OpenAICompatConfig):
    """A base URL such as ``http://10.0.0.5:8080/v1`` and, if the upstream wants one, ``api_key``."""


class PassthroughInferenceProvider(OpenAICompatInferenceProvider):
    api_key_env = "PASSTHROUGH_API_KEY"
    provider_data_key = "passthrough_api_key"


async def create_provider(provider_id: str, config: Config, deps: dict[str, Any]) -> PassthroughInferenceProvider:
    return PassthroughInferenceProvider(provider_id, config)
