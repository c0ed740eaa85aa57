"""The Batches API: many requests from one JSONL file, run later as durable work, results in files.

This is ``/v1/batches`` as OpenAI defines it (and as the ``openai`` SDK's ``client.batches`` speaks it).
A client uploads a JSONL file with purpose ``batch``, one request per line
(``{"custom_id", "method": "POST", "url", "body"}``), and creates a batch naming that file and one
endpoint. The server checks every line before any work starts, runs them through the same routers a live
request uses, and writes one output line per request to ``output_file_id`` (successes) and
``error_file_id`` (failures), each keeping the request's ``custom_id``.

Why the line checks live here and not in the router: they are the contract (what a line may say and how
big it may be), and a client reading this module learns the limits without reading server code.
"""

from __future__ import annotations

from typing import Any, Literal, Protocol

from pydantic import BaseModel, Field, field_validator

from underlay.api.pagination import ListPage, ListQuery
from underlay.api.response_items import check_metadata
from underlay.api.routes import Handler, Route

__all__ = [
    "BATCH_ENDPOINTS",
    "Batch",
    "BatchEndpoint",
    "BatchError",
    "BatchErrors",
    "BatchList",
    "BatchRequestCounts",
    "BatchStatus",
    "BatchesApi",
    "CreateBatchRequest",
    "MAX_CUSTOM_ID_CHARS",
    "MAX_LINES",
    "MAX_LINE_BYTES",
    "ROUTES",
]

BatchEndpoint = Literal["/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/responses", "/v1/moderations"]
BATCH_ENDPOINTS: tuple[str, ...] = (
    "/v1/chat/completions",
    "/v1/completions",
    "/v1/embeddings",
    "/v1/responses",
    "/v1/moderations",
)
BatchStatus = Literal[
    "validating", "failed", "in_progress", "finalizing", "completed", "expired", "cancelling", "cancelled"
]

MAX_LINES = 50_000
"""Requests in one batch, as OpenAI allows; more is an error on line 50,001."""
MAX_LINE_BYTES = 1_000_000
"""One line's size: a request, not a document; a longer line is reported by its number."""
MAX_CUSTOM_ID_CHARS = 512


class BatchError(BaseModel):
    """One problem with the input, with the 1-based line it is on (``None`` for the file as a whole)."""

    code: str | None = None
    line: int | None = None
    message: str | None = None
    param: str | None = None


class BatchErrors(BaseModel):
    object: Literal["list"] = "list"
    data: list[BatchError] = Field(default_factory=list)


class BatchRequestCounts(BaseModel):
    completed: int = 0
    failed: int = 0
    total: int = 0


class Batch(BaseModel):
    """A batch as OpenAI returns it; the timestamps say when each status was reached."""

    id: str
    object: Literal["batch"] = "batch"
    endpoint: str
    input_file_id: str
    completion_window: str
    status: BatchStatus
    created_at: int
    output_file_id: str | None = None
    error_file_id: str | None = None
    errors: BatchErrors | None = None
    in_progress_at: int | None = None
    expires_at: int | None = None
    finalizing_at: int | None = None
    completed_at: int | None = None
    failed_at: int | None = None
    expired_at: int | None = None
    cancelling_at: int | None = None
    cancelled_at: int | None = None
    request_counts: BatchRequestCounts = Field(default_factory=BatchRequestCounts)
    metadata: dict[str, str] | None = None


BatchList = ListPage[Batch]


class CreateBatchRequest(BaseModel):
    """``POST /v1/batches``: the uploaded file (purpose ``batch``), the one endpoint every line calls."""

    input_file_id: str = Field(min_length=1, max_length=256)
    endpoint: BatchEndpoint
    completion_window: Literal["24h"]
    metadata: dict[str, str] | None = None

    _metadata = field_validator("metadata")(check_metadata)


class BatchesApi(Protocol):
    """The batches router: one method per route below, as the current principal."""

    async def create_batch(self, params: CreateBatchRequest) -> Batch:
        """Queue the batch (``validating``); its lines are checked and run by a job."""
        ...

    async def retrieve_batch(self, batch_id: str) -> Batch: ...

    async def list_batches(self, query: ListQuery) -> BatchList: ...

    async def cancel_batch(self, batch_id: str) -> Batch:
        """``cancelling`` until the line in flight ends; then ``cancelled`` with the finished lines' files."""
        ...


def _route(method: str, path: str, handler: Handler, summary: str, **kwargs: Any) -> Route:
    return Route(method, path, handler, summary=summary, tags=("batches",), **kwargs)


ROUTES: list[Route] = [
    _route("POST", "/v1/batches", BatchesApi.create_batch, "Create a batch", body=CreateBatchRequest, response=Batch),
    _route("GET", "/v1/batches", BatchesApi.list_batches, "List batches", query=ListQuery, response=BatchList),
    _route("GET", "/v1/batches/{batch_id}", BatchesApi.retrieve_batch, "Retrieve a batch", response=Batch),
    _route("POST", "/v1/batches/{batch_id}/cancel", BatchesApi.cancel_batch, "Cancel a batch", response=Batch),
]
