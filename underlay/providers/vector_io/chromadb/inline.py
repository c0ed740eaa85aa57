"""``inline::chromadb``: Chroma's PersistentClient in a directory, with BM25 in an FTS5 index beside it.

Chroma's telemetry is switched off and no collection has an embedding function (vectors always come
from Underlay; Chroma's default function would download a model). Keyword search is an FTS5 index in
``keyword_db_path`` (by default ``underlay_keyword.db`` inside ``path``). See
``underlay.providers.vector_io.chromadb.store`` for what runs where.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from underlay.providers.utils.vector.sqlite import state_path
from underlay.providers.vector_io.chromadb.store import ChromaVectorIO


class Config(BaseModel):
    """Where Chroma keeps its data (and the keyword index), and HNSW settings for new collections."""

    model_config = ConfigDict(extra="forbid")

    path: str = Field(
        default="chromadb",
        validate_default=True,
        description="Chroma's data directory; a relative path is inside the state directory.",
    )
    keyword_db_path: str | None = Field(
        default=None, description="FTS5 keyword index file; unset: underlay_keyword.db inside path."
    )
    threads: int = Field(default=2, ge=1, le=64, description="Worker threads for Chroma's blocking client.")
    hnsw_ef_search: int = Field(
        default=400, ge=1, description="HNSW search breadth of new collections (400: recall@10 >= 0.99 at 100k)."
    )
    hnsw_ef_construction: int = Field(default=100, ge=1)
    hnsw_max_neighbors: int = Field(default=16, ge=2)

    @field_validator("path", "keyword_db_path")
    @classmethod
    def _resolve(cls, value: str | None, info: ValidationInfo) -> str | None:
        return None if value is None else state_path(value, info)


def hnsw_settings(config: Any) -> dict[str, Any]:
    return {
        "ef_search": config.hnsw_ef_search,
        "ef_construction": config.hnsw_ef_construction,
        "max_neighbors": config.hnsw_max_neighbors,
    }


async def create_provider(provider_id: str, config: Config, deps: dict[str, Any]) -> ChromaVectorIO:
    """The registry's factory; ``initialize()`` opens the directory."""

    def make_client() -> Any:
        os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")
        import chromadb
        from chromadb.config import Settings

        Path(config.path).mkdir(parents=True, exist_ok=True)
        return chromadb.PersistentClient(path=config.path, settings=Settings(anonymized_telemetry=False))

    keyword_db = config.keyword_db_path or str(Path(config.path) / "underlay_keyword.db")
    return ChromaVectorIO(
        provider_id,
        make_client,
        keyword_db=keyword_db,
        threads=config.threads,
        where=config.path,
        hnsw=hnsw_settings(config),
    )
