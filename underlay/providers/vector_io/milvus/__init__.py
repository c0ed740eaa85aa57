"""Milvus: ``inline::milvus`` (Milvus Lite, embedded in a file) and ``remote::milvus`` (a server).

``store`` is the backend both share; ``inline`` and ``remote`` hold each one's config and factory. The
specs are declared here, in a module that imports nothing heavy, because the ``underlay.providers``
entry points of ``pyproject.toml`` name them.
"""

from __future__ import annotations

from underlay.api.providers import ProviderSpec

INLINE = ProviderSpec(
    api="vector_io",
    provider_type="inline::milvus",
    config_class="underlay.providers.vector_io.milvus.inline:Config",
    factory="underlay.providers.vector_io.milvus.inline:create_provider",
    pip_packages=("pymilvus", "milvus-lite"),
    extras=("vector",),
    description="Milvus Lite, embedded.",
)

REMOTE = ProviderSpec(
    api="vector_io",
    provider_type="remote::milvus",
    config_class="underlay.providers.vector_io.milvus.remote:Config",
    factory="underlay.providers.vector_io.milvus.remote:create_provider",
    pip_packages=("pymilvus",),
    extras=("vector",),
    description="A Milvus server.",
)
