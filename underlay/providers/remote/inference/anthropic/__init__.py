"""``remote::anthropic``: the provider (:mod:`.provider`) and its chat ⇄ Messages translation (:mod:`.wire`).

A package so the translation is the provider's own module (the layer rules let a provider import only
its own package besides the shared layers); the spec names ``Config`` and ``create_provider`` here.
"""

from underlay.providers.remote.inference.anthropic.provider import (
    AnthropicInferenceProvider,
    Config,
    create_provider,
)

__all__ = ["AnthropicInferenceProvider", "Config", "create_provider"]
