"""``inline::llama-cpp``: GGUF chat models run in-process with llama-cpp-python.

Importing this package is cheap (config classes only), so listing providers or validating a run
config never loads the native library; :func:`create_provider` imports the runtime.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from underlay.providers.inline.inference.llama_cpp.config import LlamaCppConfig, LlamaCppModelConfig

if TYPE_CHECKING:
    from underlay.providers.inline.inference.llama_cpp.provider import LlamaCppInferenceProvider

__all__ = ["LlamaCppConfig", "LlamaCppModelConfig", "LlamaCppInferenceProvider", "create_provider"]


async def create_provider(provider_id: str, config: LlamaCppConfig, deps: dict[str, Any]) -> LlamaCppInferenceProvider:
    """The registry's factory: build the provider (models load on first use unless ``preload``)."""
    from underlay.providers.inline.inference.llama_cpp.provider import LlamaCppInferenceProvider

    return LlamaCppInferenceProvider(provider_id, config)


def __getattr__(name: str) -> Any:
    if name == "LlamaCppInferenceProvider":
        from underlay.providers.inline.inference.llama_cpp.provider import LlamaCppInferenceProvider

        return LlamaCppInferenceProvider
    raise AttributeError(name)
