"""``remote::chromadb``: a Chroma server (``chroma run``, Chroma Cloud aside), with BM25 beside it.

Vectors, chunks and filters live in the server. Chroma does not rank by BM25, so keyword search uses
an FTS5 index in ``keyword_db_path`` on this machine: every Underlay instance writing to the same
collections must share that file (one host, or one writing instance), or keyword search on the others
misses their chunks. See ``underlay.providers.vector_io.chromadb.store`` for what runs where.
"""

from __future__ import annotations

import os
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationInfo, field_validator

from underlay.providers.utils.vector.sqlite import state_path
from underlay.providers.vector_io.chromadb.inline import hnsw_settings
from underlay.providers.vector_io.chromadb.store import ChromaVectorIO


class Config(BaseModel):
    """A Chroma server, its credentials, and where the keyword index lives."""

    model_config = ConfigDict(extra="forbid")

    url: str = Field(default="http://127.0.0.1:8000", description="The server's base URL (http or https).")
    api_key: SecretStr | None = Field(default=None, description="Token for a server with token auth; unset for none.")
    auth_header: Literal["Authorization", "X-Chroma-Token"] = Field(
        default="Authorization", description="How the token is sent: 'Authorization: Bearer <token>' or X-Chroma-Token."
    )
    tenant: str = "default_tenant"
    database: str = "default_database"
    threads: int = Field(default=4, ge=1, le=64, description="Concurrent requests to the server.")
    hnsw_ef_search: int = Field(
        default=400, ge=1, description="HNSW search breadth of new collections (400: recall@10 >= 0.99 at 100k)."
    )
    hnsw_ef_construction: int = Field(default=100, ge=1)
    hnsw_max_neighbors: int = Field(default=16, ge=2)
    keyword_db_path: str = Field(
        default="chromadb_keyword.db",
        validate_default=True,
        description="FTS5 keyword index file; a relative path is inside the state directory.",
    )

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("url must be http(s)://host[:port]")
        return value.rstrip("/")

    @field_validator("api_key")
    @classmethod
    def _empty_is_none(cls, value: SecretStr | None) -> SecretStr | None:
        return value if value is not None and value.get_secret_value() else None

    @field_validator("keyword_db_path")
    @classmethod
    def _resolve(cls, value: str, info: ValidationInfo) -> str:
        return value if value == ":memory:" else state_path(value, info)


async def create_provider(provider_id: str, config: Config, deps: dict[str, Any]) -> ChromaVectorIO:
    """The registry's factory; ``initialize()`` connects (and fails with 503 if nothing answers)."""
    parts = urlsplit(config.url)
    ssl = parts.scheme == "https"
    port = parts.port or (443 if ssl else 80)
    headers: dict[str, str] = {}
    if config.api_key is not None:
        token = config.api_key.get_secret_value()
        headers[config.auth_header] = f"Bearer {token}" if config.auth_header == "Authorization" else token

    def make_client() -> Any:
        os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")
        import chromadb
        from chromadb.config import Settings

        return chromadb.HttpClient(
            host=parts.hostname or "127.0.0.1",
            port=port,
            ssl=ssl,
            headers=headers,
            tenant=config.tenant,
            database=config.database,
            settings=Settings(anonymized_telemetry=False),
        )

    return ChromaVectorIO(
        provider_id,
        make_client,
        keyword_db=config.keyword_db_path,
        threads=config.threads,
        where=config.url,
        hnsw=hnsw_settings(config),
    )
