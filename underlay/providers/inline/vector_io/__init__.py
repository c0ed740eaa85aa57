"""In-process vector-io backends: ``inline::sqlite-vec`` (the local default) and FAISS (Milvus Lite,
Qdrant's local mode and Chroma's persistent client are in ``underlay.providers.vector_io``).

The specs are declared here, in a module that imports nothing heavy, because the ``underlay.providers``
entry points of ``pyproject.toml`` name them: a backend whose package is missing still has a spec that
says which extra to install.
"""

from __future__ import annotations

from underlay.api.providers import ProviderSpec

SQLITE_VEC = ProviderSpec(
    api="vector_io",
    provider_type="inline::sqlite-vec",
    config_class="underlay.providers.inline.vector_io.sqlite_vec:Config",
    factory="underlay.providers.inline.vector_io.sqlite_vec:create_provider",
    pip_packages=("sqlite-vec", "pysqlite3-binary", "numpy"),
    extras=("vector",),
    description="SQLite with sqlite-vec and FTS5 (the local default).",
)

FAISS = ProviderSpec(
    api="vector_io",
    provider_type="inline::faiss",
    config_class="underlay.providers.inline.vector_io.faiss:Config",
    factory="underlay.providers.inline.vector_io.faiss:create_provider",
    pip_packages=("faiss-cpu",),
    extras=("vector",),
    description="FAISS in-process, persisted to disk.",
)
