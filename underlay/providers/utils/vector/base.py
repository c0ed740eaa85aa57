"""What every vector backend shares: validation, naming, and search-mode dispatch with hybrid fusion.

A backend subclasses :class:`VectorIOBase` and implements index lookup plus the two primitive
searches (vector top-n and keyword top-n, both with filters and exclusion pushed down). ``query``
here validates the request the same way for every backend, so a client gets the same 400 with the
same ``param`` whichever store is behind a vector store, and builds ``hybrid`` from the primitives
with :func:`fusion.fuse`, so hybrid results are identical in shape across backends.
"""

from __future__ import annotations

import hashlib
import math
import re
from abc import ABC, abstractmethod
from collections.abc import Sequence

from underlay.api.errors import ConflictError, InvalidRequestError, NotFoundError
from underlay.api.vector_io import Chunk, Filter, HybridOptions, ScoredChunk, SearchMode
from underlay.providers.utils.vector.filters import validate_filter
from underlay.providers.utils.vector.fusion import fuse

INDEX_KIND = "Vector store index"
SEARCH_MODES: tuple[SearchMode, ...] = ("vector", "keyword", "hybrid")
MAX_DIMENSION = 8192  # sqlite-vec's limit, and far above any embedding model in use
MAX_K = 4096  # sqlite-vec's KNN limit; the API asks for at most 50 (and hybrid over-fetches)

_UNSAFE = re.compile(r"[^a-z0-9]+")


def sanitize_index_name(index_id: str, *, prefix: str = "ix", max_length: int = 63) -> str:
    """A table/collection name for an index id: ``[a-z][a-z0-9_]*``, at most ``max_length`` long.

    The readable part is the id lower-cased with every other run of characters turned into ``_``;
    a hash of the exact id is appended, because lower-casing and replacing characters can make two
    ids look alike (``vs_A`` and ``vs_a``, ``vs-1`` and ``vs.1``) and SQL identifiers ignore case.
    The result suits SQLite, PostgreSQL (63 bytes), Milvus, Qdrant and Chroma (3-63 chars) alike.
    """
    digest = hashlib.sha256(index_id.encode("utf-8")).hexdigest()[:12]
    slug = _UNSAFE.sub("_", index_id.lower()).strip("_")
    room = max_length - len(prefix) - len(digest) - 2
    if room < 0:
        raise ValueError("max_length is too short for a prefix and a hash")
    slug = slug[:room].rstrip("_")
    return f"{prefix}_{slug}_{digest}" if slug else f"{prefix}_{digest}"


def hybrid_candidates(k: int) -> int:
    """How many results hybrid search takes from each of the vector and keyword searches.

    Fusion can only promote what it sees: a chunk ranked 12th by vector and 3rd by keyword should be
    able to win a top-5, so each side over-fetches. Tests use this to recompute hybrid results.
    """
    return min(max(4 * k, 40), MAX_K)


def validate_dimension(dimension: int) -> None:
    if not isinstance(dimension, int) or isinstance(dimension, bool) or not 1 <= dimension <= MAX_DIMENSION:
        raise InvalidRequestError(f"dimension must be an integer from 1 to {MAX_DIMENSION}.", param="dimension")


def check_embedding(embedding: Sequence[float], dimension: int, param: str) -> None:
    """An embedding must have the index's dimension, be finite, and not be all zeros (no direction)."""
    if len(embedding) != dimension:
        raise InvalidRequestError(
            f"{param} has {len(embedding)} dimensions but the index has {dimension}.", param=param
        )
    norm_sq = 0.0
    for value in embedding:
        if not math.isfinite(value):
            raise InvalidRequestError(f"{param} contains a non-finite value ({value}).", param=param)
        norm_sq += value * value
    if norm_sq == 0.0:
        raise InvalidRequestError(f"{param} is all zeros; cosine similarity needs a direction.", param=param)


def check_chunks(chunks: Sequence[Chunk], dimension: int) -> list[Chunk]:
    """Validate a batch for insertion; returns it with repeated ``chunk_id``s collapsed (last wins).

    Every chunk needs an embedding of the index's dimension, and attribute numbers must be finite
    (NaN has no order and no JSON spelling, so no backend could filter on it consistently).
    """
    latest: dict[str, Chunk] = {}
    for i, chunk in enumerate(chunks):
        param = f"chunks[{i}].embedding"
        if chunk.embedding is None:
            raise InvalidRequestError(
                f"{param} is required: every chunk must be inserted with its embedding.", param=param
            )
        check_embedding(chunk.embedding, dimension, param)
        for key, value in chunk.attributes.items():
            if isinstance(value, float) and not math.isfinite(value):
                raise InvalidRequestError(
                    f"Attribute '{key}' of chunks[{i}] is {value}; attribute numbers must be finite.",
                    param=f"chunks[{i}].attributes",
                )
        latest.pop(chunk.chunk_id, None)  # keep the order of last occurrence
        latest[chunk.chunk_id] = chunk
    return list(latest.values())


def check_query(
    *,
    mode: str,
    k: int,
    embedding: Sequence[float] | None,
    query_text: str | None,
    filters: Filter | None,
) -> None:
    """The checks that need no index: mode, k, the inputs the mode requires, and the filter's shape."""
    if mode not in SEARCH_MODES:
        raise InvalidRequestError(f"mode must be one of {', '.join(SEARCH_MODES)}; got {mode!r}.", param="mode")
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise InvalidRequestError("k must be a positive integer.", param="k")
    if mode in ("vector", "hybrid") and embedding is None:
        raise InvalidRequestError(f"embedding is required for {mode} search.", param="embedding")
    if mode in ("keyword", "hybrid") and (query_text is None or not query_text.strip()):
        raise InvalidRequestError(f"query_text is required for {mode} search.", param="query_text")
    if filters is not None:
        validate_filter(filters)


def not_found(index_id: str) -> NotFoundError:
    return NotFoundError(INDEX_KIND, index_id)


def dimension_conflict(index_id: str, existing: int, requested: int) -> ConflictError:
    return ConflictError(
        f"Vector store index '{index_id}' already exists with dimension {existing}, not {requested}.",
        param="dimension",
    )


class VectorIOBase(ABC):
    """Validation and mode dispatch for a backend; subclasses supply lookup and the two searches.

    ``_vector_search`` and ``_keyword_search`` receive validated input: the embedding has the
    index's dimension, ``k`` is within ``MAX_K``, ``exclude_documents`` is de-duplicated. Both must
    apply ``filters`` and ``exclude_documents`` before ranking (never to a cut-down top-k) and return
    results best first with higher-is-better scores.
    """

    provider_id: str

    @abstractmethod
    async def _index_dimension(self, index_id: str) -> int:
        """The index's dimension; raises ``not_found(index_id)`` if there is no such index."""

    def _forget_index(self, index_id: str) -> None:  # noqa: B027 (an optional hook: nothing cached by default)
        """Drop anything cached about an index; called before re-checking a dimension that did not fit."""

    async def _checked_dimension(self, index_id: str, lengths: Sequence[int]) -> int:
        """The index's dimension, looked up afresh if a cached one disagrees with the given embeddings."""
        dimension = await self._index_dimension(index_id)
        if any(length != dimension for length in lengths):
            self._forget_index(index_id)
            dimension = await self._index_dimension(index_id)
        return dimension

    @abstractmethod
    async def _vector_search(
        self, index_id: str, embedding: list[float], k: int, filters: Filter | None, exclude_documents: list[str]
    ) -> list[ScoredChunk]:
        """Top-k by cosine similarity (the score)."""

    @abstractmethod
    async def _keyword_search(
        self, index_id: str, query_text: str, k: int, filters: Filter | None, exclude_documents: list[str]
    ) -> list[ScoredChunk]:
        """Top-k by BM25 (the score); [] when the text has no searchable terms."""

    async def query(
        self,
        index_id: str,
        *,
        mode: SearchMode,
        k: int,
        embedding: list[float] | None = None,
        query_text: str | None = None,
        filters: Filter | None = None,
        hybrid: HybridOptions | None = None,
        exclude_documents: list[str] | None = None,
    ) -> list[ScoredChunk]:
        check_query(mode=mode, k=k, embedding=embedding, query_text=query_text, filters=filters)
        search_embedding = embedding if mode != "keyword" else None
        lengths = [len(search_embedding)] if search_embedding is not None else []
        dimension = await self._checked_dimension(index_id, lengths)
        if search_embedding is not None:
            check_embedding(search_embedding, dimension, "embedding")
        k = min(k, MAX_K)
        exclude = sorted(set(exclude_documents or ()))
        if mode == "vector":
            assert embedding is not None
            return await self._vector_search(index_id, embedding, k, filters, exclude)
        assert query_text is not None
        if mode == "keyword":
            return await self._keyword_search(index_id, query_text, k, filters, exclude)
        assert embedding is not None
        n = hybrid_candidates(k)
        # One after the other rather than gathered: both usually share a database or a thread pool,
        # and running them in sequence keeps one query from taking two workers at once.
        vector = await self._vector_search(index_id, embedding, n, filters, exclude)
        keyword = await self._keyword_search(index_id, query_text, n, filters, exclude)
        return fuse(vector, keyword, hybrid, k, query_text=query_text)
