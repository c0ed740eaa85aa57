"""``inline::milvus``: Milvus Lite, embedded (pymilvus ``MilvusClient("<path>.db")``).

Milvus Lite 3.x runs in this process (a gRPC server on a loopback port, in a thread) and keeps its
data under ``db_path``, which it locks: one process at a time. Vector search is exact (FLAT, cosine)
with filters and document exclusion as Milvus expressions. Keyword search is, by default, an FTS5
index beside it (``keyword_db_path``): Milvus Lite's own BM25 ranks unflushed rows with statistics
of the filtered rows only, so a filter would reorder results (``keyword: native`` uses it anyway).
See ``underlay.providers.vector_io.milvus.store`` for the collection layout.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from underlay.providers.utils.vector.sqlite import state_path
from underlay.providers.vector_io.milvus.store import LITE_GRPC_OPTIONS, MilvusVectorIO


class Config(BaseModel):
    """Where Milvus Lite keeps its data."""

    model_config = ConfigDict(extra="forbid")

    db_path: str = Field(
        default="milvus.db",
        validate_default=True,
        description="Milvus Lite data path, ending in '.db'; a relative path is inside the state directory.",
    )
    keyword: Literal["sidecar", "native"] = Field(
        default="sidecar", description="BM25 in an FTS5 index beside Milvus Lite, or Milvus Lite's own BM25."
    )
    keyword_db_path: str | None = Field(
        default=None, description="FTS5 keyword index file; unset: '<db_path>.keyword.sqlite' beside db_path."
    )
    threads: int = Field(default=2, ge=1, le=64, description="Worker threads for pymilvus's blocking client.")

    @field_validator("db_path")
    @classmethod
    def _resolve(cls, value: str, info: ValidationInfo) -> str:
        if not value.endswith(".db"):
            raise ValueError("db_path must end in '.db' (that is how pymilvus recognises Milvus Lite)")
        return state_path(value, info)

    @field_validator("keyword_db_path")
    @classmethod
    def _resolve_keyword(cls, value: str | None, info: ValidationInfo) -> str | None:
        return None if value is None else state_path(value, info)


async def create_provider(provider_id: str, config: Config, deps: dict[str, Any]) -> MilvusVectorIO:
    """The registry's factory; ``initialize()`` starts Milvus Lite on the path."""
    keyword_db = None
    if config.keyword == "sidecar":
        keyword_db = config.keyword_db_path or f"{config.db_path}.keyword.sqlite"
    return MilvusVectorIO(
        provider_id,
        {"uri": config.db_path, "grpc_options": dict(LITE_GRPC_OPTIONS)},
        where=config.db_path,
        threads=config.threads,
        keyword_db=keyword_db,
        flush_after_write=True,
    )
