"""The Vector Stores API: OpenAI's ``/v1/vector_stores`` over any vector-io backend.

A vector store is a named collection of files. Attaching a file starts an ingestion job (parse,
chunk, embed, index) and the file is ``in_progress`` until that job ends ``completed``, ``failed``
(with ``last_error``) or ``cancelled``. Search embeds the query with the store's embedding model and
asks the backend for the nearest chunks; chunks of files still in progress are never returned.

Shapes follow OpenAI's exactly (the ``openai`` SDK parses every response). Underlay extensions ride
alongside, where the SDK ignores or passes them through:

- create: ``embedding_model``, ``embedding_dimension`` and ``provider_id`` (which vector-io backend)
  are accepted and echoed back on the vector store object;
- search: ``search_mode`` (``vector`` | ``keyword`` | ``hybrid``) and hybrid fusion options in
  ``ranking_options`` (``ranker: rrf | weighted``, ``rrf_k``, ``vector_weight``, ``keyword_weight``).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Protocol

from pydantic import ConfigDict, Field, field_validator, model_validator

from underlay.api.base import ApiModel
from underlay.api.omit import omit_when_none
from underlay.api.pagination import ListQuery
from underlay.api.routes import Handler, Route
from underlay.api.vector_io import AttributeValue, Filter, SearchMode

__all__ = [
    "Attributes",
    "AutoChunkingStrategy",
    "BatchFile",
    "ChunkingStrategyParam",
    "CreateFileBatchRequest",
    "CreateVectorStoreFileRequest",
    "CreateVectorStoreRequest",
    "ExpiresAfter",
    "FileContentItem",
    "FileCounts",
    "FileId",
    "FileStatus",
    "LastError",
    "MAX_ATTRIBUTES",
    "MAX_BATCH_FILES",
    "MAX_METADATA",
    "ROUTES",
    "RankingOptions",
    "SearchContent",
    "SearchRequest",
    "SearchResult",
    "SearchResultsPage",
    "StaticChunking",
    "StaticChunkingStrategy",
    "StaticChunkingStrategyObject",
    "UpdateVectorStoreFileRequest",
    "UpdateVectorStoreRequest",
    "VectorStoreDeleted",
    "VectorStoreFileBatchObject",
    "VectorStoreFileContent",
    "VectorStoreFileDeleted",
    "VectorStoreFileList",
    "VectorStoreFileListQuery",
    "VectorStoreFileObject",
    "VectorStoreList",
    "VectorStoreListQuery",
    "VectorStoreObject",
    "VectorStoresApi",
    "resolve_chunking",
]

MAX_ATTRIBUTES = 16
MAX_METADATA = 16
MAX_BATCH_FILES = 2000


def _check_attributes(value: dict[str, AttributeValue] | None) -> dict[str, AttributeValue] | None:
    """OpenAI's limits: at most 16 keys of up to 64 characters, string values up to 512 characters."""
    if value is None:
        return None
    if len(value) > MAX_ATTRIBUTES:
        raise ValueError(f"at most {MAX_ATTRIBUTES} attributes are allowed")
    for key, item in value.items():
        if len(key) > 64:
            raise ValueError(f"attribute key '{key[:20]}...' is longer than 64 characters")
        if isinstance(item, str) and len(item) > 512:
            raise ValueError(f"attribute '{key}' is longer than 512 characters")
    return value


def _check_metadata(value: dict[str, str] | None) -> dict[str, str] | None:
    if value is None:
        return None
    if len(value) > MAX_METADATA:
        raise ValueError(f"at most {MAX_METADATA} metadata keys are allowed")
    for key, item in value.items():
        if len(key) > 64 or len(item) > 512:
            raise ValueError(f"metadata '{key[:20]}': keys are at most 64 characters, values at most 512")
    return value


Attributes = Annotated[dict[str, AttributeValue], Field(description="Up to 16 filterable key-value pairs.")]
FileId = Annotated[str, Field(min_length=1, max_length=256, description="A Files API id (``file-...``).")]
"""A file id as a client sends it: checked while the request is parsed, so a bad one is a 400 naming it."""

# ---------------------------------------------------------------------------------------------------
# Chunking strategies
# ---------------------------------------------------------------------------------------------------


class StaticChunking(ApiModel):
    model_config = ConfigDict(extra="forbid")

    max_chunk_size_tokens: int = Field(default=800, ge=100, le=4096)
    chunk_overlap_tokens: int = Field(default=400, ge=0)

    @model_validator(mode="after")
    def _overlap_at_most_half(self) -> StaticChunking:
        if self.chunk_overlap_tokens > self.max_chunk_size_tokens // 2:
            raise ValueError("chunk_overlap_tokens must not exceed half of max_chunk_size_tokens")
        return self


class AutoChunkingStrategy(ApiModel):
    """800-token chunks overlapping by 400, OpenAI's ``auto``."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["auto"] = "auto"


class StaticChunkingStrategy(ApiModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["static"] = "static"
    static: StaticChunking


ChunkingStrategyParam = Annotated[AutoChunkingStrategy | StaticChunkingStrategy, Field(discriminator="type")]


class StaticChunkingStrategyObject(ApiModel):
    """How a file was chunked, as reported on a vector store file (``auto`` resolves to static)."""

    type: Literal["static"] = "static"
    static: StaticChunking


def resolve_chunking(strategy: AutoChunkingStrategy | StaticChunkingStrategy | None) -> StaticChunkingStrategyObject:
    if isinstance(strategy, StaticChunkingStrategy):
        return StaticChunkingStrategyObject(static=strategy.static)
    return StaticChunkingStrategyObject(static=StaticChunking(max_chunk_size_tokens=800, chunk_overlap_tokens=400))


# ---------------------------------------------------------------------------------------------------
# Vector stores
# ---------------------------------------------------------------------------------------------------


class FileCounts(ApiModel):
    in_progress: int = 0
    completed: int = 0
    failed: int = 0
    cancelled: int = 0
    total: int = 0


class ExpiresAfter(ApiModel):
    model_config = ConfigDict(extra="forbid")

    anchor: Literal["last_active_at"] = "last_active_at"
    days: int = Field(ge=1, le=365)


class VectorStoreObject(ApiModel):
    """OpenAI's vector store, plus the embedding model, dimension and backend that serve it."""

    id: str
    object: Literal["vector_store"] = "vector_store"
    created_at: int
    name: str
    usage_bytes: int = 0
    file_counts: FileCounts
    status: Literal["expired", "in_progress", "completed"]
    expires_after: ExpiresAfter | None = None
    expires_at: int | None = None
    last_active_at: int | None = None
    metadata: dict[str, str] = Field(default_factory=dict)
    description: str | None = None
    embedding_model: str
    embedding_dimension: int
    provider_id: str

    _omit = omit_when_none("expires_after")


class CreateVectorStoreRequest(ApiModel):
    name: str | None = Field(default=None, max_length=256)
    description: str | None = Field(default=None, max_length=512)
    file_ids: list[FileId] = Field(default_factory=list, max_length=MAX_BATCH_FILES)
    chunking_strategy: ChunkingStrategyParam | None = None
    expires_after: ExpiresAfter | None = None
    metadata: dict[str, str] | None = None
    embedding_model: str | None = Field(default=None, description="Underlay: the embedding model to use.")
    embedding_dimension: int | None = Field(default=None, ge=1, le=16384, description="Underlay: its dimension.")
    provider_id: str | None = Field(default=None, description="Underlay: the vector-io provider to store in.")

    _metadata = field_validator("metadata")(_check_metadata)


class UpdateVectorStoreRequest(ApiModel):
    name: str | None = Field(default=None, max_length=256)
    expires_after: ExpiresAfter | None = None
    metadata: dict[str, str] | None = None

    _metadata = field_validator("metadata")(_check_metadata)


class VectorStoreListQuery(ListQuery):
    before: str | None = Field(default=None, description="Return items before this id.")


class VectorStoreList(ApiModel):
    object: Literal["list"] = "list"
    data: list[VectorStoreObject]
    first_id: str | None = None
    last_id: str | None = None
    has_more: bool = False

    _omit = omit_when_none("first_id", "last_id")


class VectorStoreDeleted(ApiModel):
    id: str
    object: Literal["vector_store.deleted"] = "vector_store.deleted"
    deleted: bool = True


# ---------------------------------------------------------------------------------------------------
# Vector store files and batches
# ---------------------------------------------------------------------------------------------------

FileStatus = Literal["in_progress", "completed", "cancelled", "failed"]


class LastError(ApiModel):
    code: Literal["server_error", "unsupported_file", "invalid_file"]
    message: str


class VectorStoreFileObject(ApiModel):
    id: str
    object: Literal["vector_store.file"] = "vector_store.file"
    created_at: int
    usage_bytes: int = 0
    vector_store_id: str
    status: FileStatus
    last_error: LastError | None = None
    attributes: dict[str, AttributeValue] | None = None
    chunking_strategy: StaticChunkingStrategyObject | None = None


class CreateVectorStoreFileRequest(ApiModel):
    file_id: FileId
    attributes: dict[str, AttributeValue] | None = None
    chunking_strategy: ChunkingStrategyParam | None = None

    _attributes = field_validator("attributes")(_check_attributes)


class UpdateVectorStoreFileRequest(ApiModel):
    attributes: dict[str, AttributeValue] | None

    _attributes = field_validator("attributes")(_check_attributes)


class VectorStoreFileListQuery(ListQuery):
    before: str | None = Field(default=None, description="Return items before this id.")
    filter: FileStatus | None = Field(default=None, description="Only files with this status.")


class VectorStoreFileList(ApiModel):
    object: Literal["list"] = "list"
    data: list[VectorStoreFileObject]
    first_id: str | None = None
    last_id: str | None = None
    has_more: bool = False

    _omit = omit_when_none("first_id", "last_id")


class VectorStoreFileDeleted(ApiModel):
    id: str
    object: Literal["vector_store.file.deleted"] = "vector_store.file.deleted"
    deleted: bool = True


class FileContentItem(ApiModel):
    type: Literal["text"] = "text"
    text: str


class VectorStoreFileContent(ApiModel):
    """The file's chunks, in order, as OpenAI's content page (one ``text`` item per chunk)."""

    object: Literal["vector_store.file_content.page"] = "vector_store.file_content.page"
    data: list[FileContentItem]
    has_more: bool = False
    next_page: str | None = None
    file_id: str
    filename: str
    attributes: dict[str, AttributeValue] | None = None


class BatchFile(ApiModel):
    file_id: FileId
    attributes: dict[str, AttributeValue] | None = None
    chunking_strategy: ChunkingStrategyParam | None = None

    _attributes = field_validator("attributes")(_check_attributes)


class CreateFileBatchRequest(ApiModel):
    """Either ``file_ids`` (sharing ``attributes`` and ``chunking_strategy``) or ``files``, each its own."""

    file_ids: list[FileId] | None = Field(default=None, max_length=MAX_BATCH_FILES)
    files: list[BatchFile] | None = Field(default=None, max_length=MAX_BATCH_FILES)
    attributes: dict[str, AttributeValue] | None = None
    chunking_strategy: ChunkingStrategyParam | None = None

    _attributes = field_validator("attributes")(_check_attributes)

    @model_validator(mode="after")
    def _one_of(self) -> CreateFileBatchRequest:
        if (self.file_ids is None) == (self.files is None):
            raise ValueError("pass exactly one of file_ids or files")
        if not (self.file_ids or self.files):
            raise ValueError("a file batch needs at least one file")
        return self

    def entries(self) -> list[BatchFile]:
        """One entry per file. Built without re-validation: every field was checked when the request was
        parsed, and validating again here would turn a bad value into a 500 instead of a 400."""
        if self.files is not None:
            return self.files
        return [
            BatchFile.model_construct(file_id=f, attributes=self.attributes, chunking_strategy=self.chunking_strategy)
            for f in self.file_ids or []
        ]


class VectorStoreFileBatchObject(ApiModel):
    id: str
    object: Literal["vector_store.files_batch"] = "vector_store.files_batch"
    created_at: int
    vector_store_id: str
    status: Literal["in_progress", "completed", "cancelled", "failed"]
    file_counts: FileCounts


# ---------------------------------------------------------------------------------------------------
# Search
# ---------------------------------------------------------------------------------------------------


class RankingOptions(ApiModel):
    """OpenAI's ranking options plus hybrid fusion settings.

    ``ranker``: OpenAI's ``auto`` / ``default-2024-11-15`` / ``none`` leave the backend's order as it
    is (hybrid then fuses by reciprocal rank); ``rrf`` and ``weighted`` pick the hybrid fusion.
    ``score_threshold`` drops results scoring below it, after the search.
    """

    ranker: Literal["auto", "default-2024-11-15", "none", "rrf", "weighted"] = "auto"
    score_threshold: float | None = Field(default=None, description="Drop results scoring below this.")
    rrf_k: int = Field(default=60, ge=1)
    vector_weight: float = Field(default=0.5, ge=0, le=1)
    keyword_weight: float = Field(default=0.5, ge=0, le=1)
    keyword_match: Literal["all", "any"] = Field(
        default="all", description="Hybrid: fuse only keyword hits containing every content word (all), or every hit."
    )


class SearchRequest(ApiModel):
    query: str | list[str]
    max_num_results: int = Field(default=10, ge=1, le=50)
    filters: Filter | None = None
    ranking_options: RankingOptions | None = None
    rewrite_query: bool = False
    search_mode: SearchMode = Field(default="vector", description="Underlay: vector, keyword or hybrid.")

    @field_validator("query")
    @classmethod
    def _non_empty(cls, value: str | list[str]) -> str | list[str]:
        queries = [value] if isinstance(value, str) else value
        if not queries or not all(q.strip() for q in queries):
            raise ValueError("query must be a non-empty string or a list of non-empty strings")
        if len(queries) > 20:
            raise ValueError("at most 20 queries may be searched at once")
        return value


class SearchContent(ApiModel):
    type: Literal["text"] = "text"
    text: str


class SearchResult(ApiModel):
    file_id: str
    filename: str
    score: float
    attributes: dict[str, AttributeValue] | None = None
    content: list[SearchContent]


class SearchResultsPage(ApiModel):
    object: Literal["vector_store.search_results.page"] = "vector_store.search_results.page"
    search_query: list[str]
    data: list[SearchResult]
    has_more: bool = False
    next_page: str | None = None


class VectorStoresApi(Protocol):
    """What the vector stores router serves: one method per route in ``ROUTES``.

    The route table names these methods, so a missing or misspelled handler fails the type check;
    :class:`underlay.core.routers.vector_stores.VectorStoresRouter` implements it.
    """

    async def create_vector_store(self, params: CreateVectorStoreRequest) -> VectorStoreObject: ...

    async def list_vector_stores(self, query: VectorStoreListQuery) -> VectorStoreList: ...

    async def retrieve_vector_store(self, vector_store_id: str) -> VectorStoreObject: ...

    async def update_vector_store(
        self, vector_store_id: str, params: UpdateVectorStoreRequest
    ) -> VectorStoreObject: ...

    async def delete_vector_store(self, vector_store_id: str) -> VectorStoreDeleted: ...

    async def search_vector_store(self, vector_store_id: str, params: SearchRequest) -> SearchResultsPage: ...

    async def create_vector_store_file(
        self, vector_store_id: str, params: CreateVectorStoreFileRequest
    ) -> VectorStoreFileObject: ...

    async def list_vector_store_files(
        self, vector_store_id: str, query: VectorStoreFileListQuery
    ) -> VectorStoreFileList: ...

    async def retrieve_vector_store_file(self, vector_store_id: str, file_id: str) -> VectorStoreFileObject: ...

    async def update_vector_store_file(
        self, vector_store_id: str, file_id: str, params: UpdateVectorStoreFileRequest
    ) -> VectorStoreFileObject: ...

    async def delete_vector_store_file(self, vector_store_id: str, file_id: str) -> VectorStoreFileDeleted: ...

    async def retrieve_vector_store_file_content(
        self, vector_store_id: str, file_id: str
    ) -> VectorStoreFileContent: ...

    async def create_file_batch(
        self, vector_store_id: str, params: CreateFileBatchRequest
    ) -> VectorStoreFileBatchObject: ...

    async def retrieve_file_batch(self, vector_store_id: str, batch_id: str) -> VectorStoreFileBatchObject: ...

    async def cancel_file_batch(self, vector_store_id: str, batch_id: str) -> VectorStoreFileBatchObject: ...

    async def list_file_batch_files(
        self, vector_store_id: str, batch_id: str, query: VectorStoreFileListQuery
    ) -> VectorStoreFileList: ...


def _route(method: str, path: str, handler: Handler, summary: str, **kwargs: Any) -> Route:
    return Route(method, path, handler, summary=summary, tags=("vector_stores",), **kwargs)


_VS = "/v1/vector_stores/{vector_store_id}"

ROUTES: list[Route] = [
    _route(
        "POST",
        "/v1/vector_stores",
        VectorStoresApi.create_vector_store,
        "Create a vector store",
        body=CreateVectorStoreRequest,
        response=VectorStoreObject,
    ),
    _route(
        "GET",
        "/v1/vector_stores",
        VectorStoresApi.list_vector_stores,
        "List vector stores",
        query=VectorStoreListQuery,
        response=VectorStoreList,
    ),
    _route("GET", _VS, VectorStoresApi.retrieve_vector_store, "Retrieve a vector store", response=VectorStoreObject),
    _route(
        "POST",
        _VS,
        VectorStoresApi.update_vector_store,
        "Modify a vector store",
        body=UpdateVectorStoreRequest,
        response=VectorStoreObject,
    ),
    _route("DELETE", _VS, VectorStoresApi.delete_vector_store, "Delete a vector store", response=VectorStoreDeleted),
    _route(
        "POST",
        f"{_VS}/search",
        VectorStoresApi.search_vector_store,
        "Search a vector store",
        body=SearchRequest,
        response=SearchResultsPage,
    ),
    _route(
        "POST",
        f"{_VS}/files",
        VectorStoresApi.create_vector_store_file,
        "Attach a file to a vector store",
        body=CreateVectorStoreFileRequest,
        response=VectorStoreFileObject,
    ),
    _route(
        "GET",
        f"{_VS}/files",
        VectorStoresApi.list_vector_store_files,
        "List a vector store's files",
        query=VectorStoreFileListQuery,
        response=VectorStoreFileList,
    ),
    _route(
        "GET",
        f"{_VS}/files/{{file_id}}",
        VectorStoresApi.retrieve_vector_store_file,
        "Retrieve a vector store file",
        response=VectorStoreFileObject,
    ),
    _route(
        "POST",
        f"{_VS}/files/{{file_id}}",
        VectorStoresApi.update_vector_store_file,
        "Update a vector store file's attributes",
        body=UpdateVectorStoreFileRequest,
        response=VectorStoreFileObject,
    ),
    _route(
        "DELETE",
        f"{_VS}/files/{{file_id}}",
        VectorStoresApi.delete_vector_store_file,
        "Remove a file from a vector store",
        response=VectorStoreFileDeleted,
    ),
    _route(
        "GET",
        f"{_VS}/files/{{file_id}}/content",
        VectorStoresApi.retrieve_vector_store_file_content,
        "A vector store file's chunks",
        response=VectorStoreFileContent,
    ),
    _route(
        "POST",
        f"{_VS}/file_batches",
        VectorStoresApi.create_file_batch,
        "Attach several files at once",
        body=CreateFileBatchRequest,
        response=VectorStoreFileBatchObject,
    ),
    _route(
        "GET",
        f"{_VS}/file_batches/{{batch_id}}",
        VectorStoresApi.retrieve_file_batch,
        "Retrieve a file batch",
        response=VectorStoreFileBatchObject,
    ),
    _route(
        "POST",
        f"{_VS}/file_batches/{{batch_id}}/cancel",
        VectorStoresApi.cancel_file_batch,
        "Cancel a file batch",
        response=VectorStoreFileBatchObject,
    ),
    _route(
        "GET",
        f"{_VS}/file_batches/{{batch_id}}/files",
        VectorStoresApi.list_file_batch_files,
        "List the files of a batch",
        query=VectorStoreFileListQuery,
        response=VectorStoreFileList,
    ),
]
