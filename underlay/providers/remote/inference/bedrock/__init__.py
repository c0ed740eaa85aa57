"""``remote::bedrock``: Amazon Bedrock inference.

``provider`` holds the client, embeddings and error mapping; ``converse`` the pure OpenAI ⇄ Converse
mapping. The spec names this package, so both modules are the provider's own.
"""

from __future__ import annotations

from underlay.providers.remote.inference.bedrock.provider import BedrockInferenceProvider, Config, create_provider

__all__ = ["BedrockInferenceProvider", "Config", "create_provider"]
