"""Vector-io backends on other services: PostgreSQL with pgvector (Milvus, Qdrant and Chroma servers are in
``underlay.providers.vector_io``).

The specs are declared here, in a module that imports nothing heavy, because the ``underlay.providers``
entry points of ``pyproject.toml`` name them.
"""

from __future__ import annotations

from underlay.api.providers import ProviderSpec

PGVECTOR = ProviderSpec(
    api="vector_io",
    provider_type="remote::pgvector",
    config_class="underlay.providers.remote.vector_io.pgvector:Config",
    factory="underlay.providers.remote.vector_io.pgvector:create_provider",
    pip_packages=("asyncpg",),
    extras=("vector",),
    description="PostgreSQL with pgvector and full-text search.",
)
