"""``inline::sentence-transformers``: sentence-embedding models (all-MiniLM-L6-v2 packaged) in-process.

Importing this package is cheap (config classes only), so listing providers or validating a run
config never imports torch or onnxruntime; :func:`create_provider` does not load weights either: a
model loads on its first request, or at start-up with ``preload: true``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from underlay.providers.inline.inference.sentence_transformers.config import (
    SentenceTransformersConfig,
    SentenceTransformersModelConfig,
)

if TYPE_CHECKING:
    from underlay.providers.inline.inference.sentence_transformers.provider import (
        SentenceTransformersInferenceProvider,
    )

__all__ = [
    "SentenceTransformersConfig",
    "SentenceTransformersModelConfig",
    "SentenceTransformersInferenceProvider",
    "create_provider",
]


async def create_provider(
    provider_id: str, config: SentenceTransformersConfig, deps: dict[str, Any]
) -> SentenceTransformersInferenceProvider:
    """The registry's factory: build the provider (models load on first use unless ``preload``)."""
    from underlay.providers.inline.inference.sentence_transformers.provider import (
        SentenceTransformersInferenceProvider,
    )

    return SentenceTransformersInferenceProvider(provider_id, config)


def __getattr__(name: str) -> Any:
    if name == "SentenceTransformersInferenceProvider":
        from underlay.providers.inline.inference.sentence_transformers.provider import (
            SentenceTransformersInferenceProvider,
        )

        return SentenceTransformersInferenceProvider
    raise AttributeError(name)
