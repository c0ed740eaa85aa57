"""Qdrant: ``inline::qdrant`` (qdrant-client's local mode, in a directory) and ``remote::qdrant`` (a server).

``store`` is the backend both share; ``inline`` and ``remote`` hold each one's config and factory. The
specs are declared here, in a module that imports nothing heavy, because the ``underlay.providers``
entry points of ``pyproject.toml`` name them: without ``qdrant-client`` installed the specs still say
which extra to install.
"""

from __future__ import annotations

from underlay.api.providers import ProviderSpec

INLINE = ProviderSpec(
    api="vector_io",
    provider_type="inline::qdrant",
    config_class="underlay.providers.vector_io.qdrant.inline:Config",
    factory="underlay.providers.vector_io.qdrant.inline:create_provider",
    pip_packages=("qdrant-client",),
    extras=("vector",),
    description="Qdrant's local mode, embedded.",
)

REMOTE = ProviderSpec(
    api="vector_io",
    provider_type="remote::qdrant",
    config_class="underlay.providers.vector_io.qdrant.remote:Config",
    factory="underlay.providers.vector_io.qdrant.remote:create_provider",
    pip_packages=("qdrant-client",),
    extras=("vector",),
    description="A Qdrant server.",
)
