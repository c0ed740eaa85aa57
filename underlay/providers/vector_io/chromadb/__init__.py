"""Chroma: ``inline::chromadb`` (a PersistentClient in a directory) and ``remote::chromadb`` (a server).

``store`` is the backend both share; ``inline`` and ``remote`` hold each one's config and factory (the
remote mode reuses the inline mode's HNSW settings). The specs are declared here, in a module that
imports nothing heavy, because the ``underlay.providers`` entry points of ``pyproject.toml`` name them.
"""

from __future__ import annotations

from underlay.api.providers import ProviderSpec

INLINE = ProviderSpec(
    api="vector_io",
    provider_type="inline::chromadb",
    config_class="underlay.providers.vector_io.chromadb.inline:Config",
    factory="underlay.providers.vector_io.chromadb.inline:create_provider",
    pip_packages=("chromadb",),
    extras=("vector",),
    description="Chroma's persistent client, embedded.",
)

REMOTE = ProviderSpec(
    api="vector_io",
    provider_type="remote::chromadb",
    config_class="underlay.providers.vector_io.chromadb.remote:Config",
    factory="underlay.providers.vector_io.chromadb.remote:create_provider",
    pip_packages=("chromadb",),
    extras=("vector",),
    description="A Chroma server.",
)
