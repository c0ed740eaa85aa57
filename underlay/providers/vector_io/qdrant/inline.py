"""``inline::qdrant``: Qdrant's local mode (qdrant-client, no server) in a directory, with BM25 beside it.

Local mode keeps each collection in process memory and persists it under ``path``; it is exact (no
HNSW) and suits a single process: the directory is locked, so two workers cannot share it. Keyword
search is an FTS5 index in ``keyword_db_path`` (by default ``underlay_keyword.db`` inside ``path``);
see ``underlay.providers.vector_io.qdrant.store`` for what runs where.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from underlay.providers.utils.vector.sqlite import state_path
from underlay.providers.vector_io.qdrant.store import QdrantVectorIO


class Config(BaseModel):
    """Where local mode keeps its collections (and the keyword index)."""

    model_config = ConfigDict(extra="forbid")

    path: str = Field(
        default="qdrant",
        validate_default=True,
        description="Directory for the collections; a relative path is inside the state directory.",
    )
    keyword_db_path: str | None = Field(
        default=None, description="FTS5 keyword index file; unset: underlay_keyword.db inside path."
    )

    @field_validator("path", "keyword_db_path")
    @classmethod
    def _resolve(cls, value: str | None, info: ValidationInfo) -> str | None:
        return None if value is None else state_path(value, info)


async def create_provider(provider_id: str, config: Config, deps: dict[str, Any]) -> QdrantVectorIO:
    """The registry's factory; ``initialize()`` opens the directory."""
    keyword_db = config.keyword_db_path or str(Path(config.path) / "underlay_keyword.db")
    return QdrantVectorIO(provider_id, {"path": config.path}, keyword_db=keyword_db, threads=1, where=config.path)
