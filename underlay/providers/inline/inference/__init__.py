"""In-process inference providers: embedded llama.cpp chat models and sentence-transformers embeddings.

The specs are declared here, in a module that imports nothing heavy, because the ``underlay.providers``
entry points of ``pyproject.toml`` name them: listing providers must not load llama.cpp or torch.
"""

from __future__ import annotations

from underlay.api.providers import ProviderSpec

LLAMA_CPP = ProviderSpec(
    api="inference",
    provider_type="inline::llama-cpp",
    config_class="underlay.providers.inline.inference.llama_cpp:LlamaCppConfig",
    factory="underlay.providers.inline.inference.llama_cpp:create_provider",
    pip_packages=("llama-cpp-python==0.3.36",),
    extras=("local",),
    description="Embedded llama.cpp (GGUF chat models), in-process, with grammar-constrained tool calls.",
)

SENTENCE_TRANSFORMERS = ProviderSpec(
    api="inference",
    provider_type="inline::sentence-transformers",
    config_class="underlay.providers.inline.inference.sentence_transformers:SentenceTransformersConfig",
    factory="underlay.providers.inline.inference.sentence_transformers:create_provider",
    pip_packages=("sentence-transformers", "torch==2.13.0", "onnxruntime", "onnx"),
    extras=("local",),
    description="Embedded embedding models (all-MiniLM-L6-v2 packaged) via sentence-transformers.",
)
