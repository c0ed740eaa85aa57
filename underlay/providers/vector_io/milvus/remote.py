"""``remote::milvus``: a Milvus server (standalone, cluster or Zilliz Cloud) by URI and token.

Everything runs in Milvus: HNSW vector search (``index_type`` / ``index_params`` to change it, ``ef``
raised to k when k is larger), BM25 keyword search with Milvus's BM25 function (Milvus 2.5 or later),
and filters and document exclusion as expressions. Nothing is kept beside it, so any number of
Underlay instances can share the server. ``keyword: sidecar`` keeps BM25 in a local FTS5 index
instead (for servers without BM25, or Milvus Lite's server, whose BM25 statistics follow the filter);
then every instance writing to the collections must share that file. See
``underlay.providers.vector_io.milvus.store`` for the collection layout.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationInfo, field_validator

from underlay.providers.utils.vector.sqlite import state_path
from underlay.providers.vector_io.milvus.store import MilvusVectorIO


class Config(BaseModel):
    """A Milvus server, its credentials and the vector index to build."""

    model_config = ConfigDict(extra="forbid")

    uri: str = Field(default="http://127.0.0.1:19530", description="The server's URI.")
    token: SecretStr | None = Field(default=None, description="'user:password' or an API key; unset for none.")
    db_name: str | None = Field(default=None, description="Milvus database; unset for the default one.")
    timeout: float = Field(default=30.0, gt=0, description="Seconds per request.")
    index_type: str = Field(default="HNSW", description="Vector index type (HNSW, IVF_FLAT, FLAT, AUTOINDEX, ...).")
    index_params: dict[str, Any] = Field(
        default_factory=lambda: {"M": 16, "efConstruction": 200}, description="Build parameters of the index."
    )
    search_ef: int | None = Field(
        default=128, ge=1, description="HNSW search breadth, raised to k; unset for index types without 'ef'."
    )
    threads: int = Field(default=4, ge=1, le=64, description="Concurrent requests to the server.")
    flush_after_write: bool = Field(
        default=False,
        description="Flush after every write. Only for a Milvus Lite server, which searches unflushed rows slowly.",
    )
    grpc_options: dict[str, Any] = Field(
        default_factory=dict,
        description="Extra gRPC channel options, e.g. {grpc.keepalive_time_ms: 300000, "
        "grpc.keepalive_permit_without_calls: false} for a Milvus Lite server, whose ping policy is strict.",
    )
    keyword: Literal["native", "sidecar"] = Field(
        default="native", description="Milvus's own BM25, or an FTS5 index on this machine (keyword_db_path)."
    )
    keyword_db_path: str = Field(
        default="milvus_keyword.db",
        validate_default=True,
        description="FTS5 keyword index file for keyword: sidecar; a relative path is inside the state directory.",
    )

    @field_validator("keyword_db_path")
    @classmethod
    def _resolve(cls, value: str, info: ValidationInfo) -> str:
        return value if value == ":memory:" else state_path(value, info)

    @field_validator("uri")
    @classmethod
    def _not_lite(cls, value: str) -> str:
        if value.endswith(".db"):
            raise ValueError("a '.db' path is Milvus Lite: use the inline::milvus provider for it")
        return value

    @field_validator("token")
    @classmethod
    def _empty_is_none(cls, value: SecretStr | None) -> SecretStr | None:
        return value if value is not None and value.get_secret_value() else None


async def create_provider(provider_id: str, config: Config, deps: dict[str, Any]) -> MilvusVectorIO:
    """The registry's factory; ``initialize()`` connects (503 if the server does not answer)."""
    kwargs: dict[str, Any] = {"uri": config.uri, "timeout": config.timeout}
    if config.token is not None:
        kwargs["token"] = config.token.get_secret_value()
    if config.db_name:
        kwargs["db_name"] = config.db_name
    if config.grpc_options:
        kwargs["grpc_options"] = dict(config.grpc_options)
    search_ef = config.search_ef if config.index_type.upper() == "HNSW" else None
    return MilvusVectorIO(
        provider_id,
        kwargs,
        where=config.uri,
        threads=config.threads,
        index_type=config.index_type,
        index_params=config.index_params,
        search_ef=search_ef,
        keyword_db=config.keyword_db_path if config.keyword == "sidecar" else None,
        flush_after_write=config.flush_after_write,
    )
