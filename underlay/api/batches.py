"""The Batches API: many requests from one JSONL file, run later as durable work, results in files.

This is ``/v1/batches`` as OpenAI defines it (and as the ``openai`` SDK's ``client.batches`` speaks it).
A client uploads a JSONL file with purpose ``batch``, one request per line
(``{"custom_id", "method": "POST", "url", "body"}``), and creates a batch naming that file and one
endpoint. The server checks every line before any work starts, runs them through the same routers a live
request uses, and writes one output line per request to ``output_file_id`` (successes) and
``error_file_id`` (failures), each keeping the request's ``custom_id``.

Why the line checks live here and not in the router: they are the contract (what a line may say and how
big it may be), and a client reading this module learns the limits without reading server code.

:class:`NativeBatchProvider` is the other seam here: an inference provider whose upstream has its own
batch API (OpenAI's and Azure OpenAI's Batches, Anthropic's Message Batches) implements it, and a batch
whose lines all name that provider's models is then handed upstream whole instead of run line by line
(see ``docs/batches.md``, *Native pass-through*).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, Literal, Protocol, runtime_checkable

from pydantic import Field, field_validator

from underlay.api.base import ApiModel
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
    "BatchUsage",
    "BatchesApi",
    "CreateBatchRequest",
    "MAX_CUSTOM_ID_CHARS",
    "MAX_LINES",
    "MAX_LINE_BYTES",
    "MAX_OUTPUT_EXPIRES_SECONDS",
    "MIN_OUTPUT_EXPIRES_SECONDS",
    "NATIVE_BATCH_ENDPOINTS",
    "NativeBatchProvider",
    "OutputExpiresAfter",
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
NATIVE_BATCH_ENDPOINTS: tuple[str, ...] = ("/v1/chat/completions", "/v1/completions", "/v1/embeddings")
"""The endpoints a batch may be passed through to a provider's own Batches API on. ``/v1/responses`` and
``/v1/moderations`` lines always run here: Underlay's own Responses loop (stored responses, tools) and
shields serve them, not the upstream's."""
BatchStatus = Literal[
    "validating", "failed", "in_progress", "finalizing", "completed", "expired", "cancelling", "cancelled"
]

MAX_LINES = 50_000
"""Requests in one batch, as OpenAI allows; more is an error on line 50,001."""
MAX_LINE_BYTES = 1_000_000
"""One line's size: a request, not a document; a longer line is reported by its number."""
MAX_CUSTOM_ID_CHARS = 512
MIN_OUTPUT_EXPIRES_SECONDS = 3600
MAX_OUTPUT_EXPIRES_SECONDS = 30 * 24 * 3600
"""``output_expires_after.seconds`` bounds, as OpenAI's: an hour to 30 days."""


class BatchError(ApiModel):
    """One problem with the input, with the 1-based line it is on (``None`` for the file as a whole)."""

    code: str | None = None
    line: int | None = None
    message: str | None = None
    param: str | None = None


class BatchErrors(ApiModel):
    object: Literal["list"] = "list"
    data: list[BatchError] = Field(default_factory=list)


class BatchRequestCounts(ApiModel):
    completed: int = 0
    failed: int = 0
    total: int = 0


class InputTokensDetails(ApiModel):
    cached_tokens: int = 0


class OutputTokensDetails(ApiModel):
    reasoning_tokens: int = 0


class BatchUsage(ApiModel):
    """The tokens the batch's finished lines used, summed over their responses' ``usage``.

    Chat and completions lines report ``prompt_tokens``/``completion_tokens``, Responses lines
    ``input_tokens``/``output_tokens``, embeddings lines only ``prompt_tokens``; moderations lines none.
    """

    input_tokens: int = 0
    input_tokens_details: InputTokensDetails = Field(default_factory=InputTokensDetails)
    output_tokens: int = 0
    output_tokens_details: OutputTokensDetails = Field(default_factory=OutputTokensDetails)
    total_tokens: int = 0


class Batch(ApiModel):
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
    usage: BatchUsage | None = None
    metadata: dict[str, str] | None = None
    model: str | None = Field(
        default=None, description="The model every line names, once the lines are checked; unset when they differ."
    )


BatchList = ListPage[Batch]


class OutputExpiresAfter(ApiModel):
    """When the batch's output and error files expire, counted from their creation."""

    anchor: Literal["created_at"]
    seconds: int = Field(ge=MIN_OUTPUT_EXPIRES_SECONDS, le=MAX_OUTPUT_EXPIRES_SECONDS)


class CreateBatchRequest(ApiModel):
    """``POST /v1/batches``: the uploaded file (purpose ``batch``), the one endpoint every line calls."""

    input_file_id: str = Field(min_length=1, max_length=256)
    endpoint: BatchEndpoint
    completion_window: Literal["24h"]
    metadata: dict[str, str] | None = None
    output_expires_after: OutputExpiresAfter | None = None

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


@runtime_checkable
class NativeBatchProvider(Protocol):
    """An inference provider whose upstream runs whole batches itself (OpenAI's ``/v1/files`` + ``/v1/batches``).

    Why a seam of its own: the batches router must not know any provider, and a provider must not know
    the router's store or jobs. The router decides *whether* a batch goes upstream (every line's model on
    one provider that answers ``True`` here), keeps the upstream ids durably and polls; the provider only
    speaks its upstream's wire format. Upstream batches are returned as :class:`Batch` (the upstream's ids,
    status, counts, usage and file ids); every message in them and every line read back has the
    provider's credentials scrubbed out. Failures are the usual typed errors naming the provider.

    The input the router hands over is always OpenAI's batch JSONL (``custom_id``, ``method``, ``url``,
    ``body`` with ``model`` set to the provider's own name for it), and what comes back is OpenAI's output
    line format: a provider whose upstream speaks another format (Anthropic's Message Batches) translates
    both ways. An upstream that takes the requests in its create call instead of an uploaded file gets
    them there (``content``); its ``upload_native_batch_input`` only returns a reference to them.
    """

    def native_batches_for(self, endpoint: str) -> bool:
        """Whether a batch of ``endpoint`` lines may go upstream now (switched on, a key of its own)."""
        ...

    def native_batch_accepts(self, endpoint: str, requests: list[tuple[str, dict[str, Any]]]) -> bool:
        """Whether these lines (``custom_id`` and body, each ``model`` already the provider's name) can
        run upstream as one batch.

        ``False`` keeps the whole batch here, where each line gets its own answer: a request the upstream's
        batch format cannot carry (a ``custom_id`` it cannot spell, a field with no translation), a model
        with no batch deployment, or models the upstream will not mix in one batch.
        """
        ...

    async def upload_native_batch_input(self, filename: str, content: bytes) -> str:
        """Upload a JSONL input file (purpose ``batch``) upstream; the upstream's file id (or, for an
        upstream with no file upload, a reference ``find_native_batch`` understands)."""
        ...

    async def create_native_batch(
        self,
        input_file_id: str,
        endpoint: str,
        completion_window: str,
        metadata: dict[str, str] | None,
        content: bytes,
    ) -> Batch:
        """Create the upstream batch over an uploaded input file (``content`` is that file's JSONL again)."""
        ...

    async def find_native_batch(self, input_file_id: str) -> Batch | None:
        """The upstream batch created over ``input_file_id``, if any (recovery after a crash mid-create).

        ``None`` only when the upstream surely has no such batch; an upstream that cannot tell raises
        (``ConflictError``), and the router then fails the batch rather than risk running it twice.
        """
        ...

    async def retrieve_native_batch(self, batch_id: str) -> Batch: ...

    async def cancel_native_batch(self, batch_id: str) -> Batch: ...

    def read_native_batch_file(self, file_id: str) -> AsyncIterator[dict[str, Any]]:
        """The upstream output or error file's lines, parsed, in file order, in OpenAI's output line format."""
        ...


def _route(method: str, path: str, handler: Handler, summary: str, **kwargs: Any) -> Route:
    return Route(method, path, handler, summary=summary, tags=("batches",), **kwargs)


ROUTES: list[Route] = [
    _route("POST", "/v1/batches", BatchesApi.create_batch, "Create a batch", body=CreateBatchRequest, response=Batch),
    _route("GET", "/v1/batches", BatchesApi.list_batches, "List batches", query=ListQuery, response=BatchList),
    _route("GET", "/v1/batches/{batch_id}", BatchesApi.retrieve_batch, "Retrieve a batch", response=Batch),
    _route("POST", "/v1/batches/{batch_id}/cancel", BatchesApi.cancel_batch, "Cancel a batch", response=Batch),
]
