"""``remote::qdrant``: a Qdrant server (url and API key), with BM25 in an FTS5 index beside it.

Vectors, chunks and filters live in Qdrant (HNSW search, ``hnsw_ef`` raised to k when k is larger;
``exact: true`` scans instead). Qdrant does not rank by BM25, so keyword search uses an FTS5 index
in ``keyword_db_path`` on this machine: every Underlay instance that writes to the same collections
must share that file (one host, or one instance writing), or keyword search on the others misses
their chunks. See ``underlay.providers.vector_io.qdrant.store`` for what runs where.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationInfo, field_validator

from underlay.providers.utils.vector.sqlite import state_path
from underlay.providers.vector_io.qdrant.store import QdrantVectorIO


class Config(BaseModel):
    """A Qdrant server and where the keyword index lives."""

    model_config = ConfigDict(extra="forbid")

    url: str = Field(default="http://127.0.0.1:6333", description="Qdrant's HTTP endpoint.")
    api_key: SecretStr | None = Field(default=None, description="Sent as the api-key header; unset for none.")
    timeout: float = Field(default=30.0, gt=0, description="Seconds per request.")
    prefer_grpc: bool = Field(default=False, description="Talk gRPC (port 6334) instead of HTTP.")
    hnsw_ef: int = Field(default=128, ge=1, description="HNSW search breadth; raised to k when k is larger.")
    exact: bool = Field(default=False, description="Scan every vector instead of using HNSW.")
    threads: int = Field(default=4, ge=1, le=64, description="Concurrent requests to the server.")
    keyword_db_path: str = Field(
        default="qdrant_keyword.db",
        validate_default=True,
        description="FTS5 keyword index file; a relative path is inside the state directory.",
    )

    @field_validator("api_key")
    @classmethod
    def _empty_is_none(cls, value: SecretStr | None) -> SecretStr | None:
        return value if value is not None and value.get_secret_value() else None

    @field_validator("keyword_db_path")
    @classmethod
    def _resolve(cls, value: str, info: ValidationInfo) -> str:
        return value if value == ":memory:" else state_path(value, info)


async def create_provider(provider_id: str, config: Config, deps: dict[str, Any]) -> QdrantVectorIO:
    """The registry's factory; ``initialize()`` checks that the server answers."""
    # The client's own start-up version probe only warns (on stderr, outside the one-line error a
    # config mistake gets); initialize() checks the server answers and says so in Underlay's words.
    kwargs: dict[str, Any] = {
        "url": config.url,
        "timeout": int(config.timeout),
        "prefer_grpc": config.prefer_grpc,
        "check_compatibility": False,
    }
    if config.api_key is not None:
        kwargs["api_key"] = config.api_key.get_secret_value()
    return QdrantVectorIO(
        provider_id,
        kwargs,
        keyword_db=config.keyword_db_path,
        threads=config.threads,
        where=config.url,
        hnsw_ef=config.hnsw_ef,
        exact=config.exact,
    )
