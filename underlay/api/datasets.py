"""The Datasets API: named sets of rows (eval questions, chat transcripts, free-form records) and their rows.

Two route groups, in the shape Llama Stack gave them so clients written for that family read naturally:
``/v1beta/datasets`` registers, lists, shows and deletes datasets, and ``/v1beta/datasetio`` pages
through a dataset's rows (``iterrows``) and appends to it (``append-rows``). A dataset is registered from
inline rows (``source: {type: rows, rows}``) or from a URI (``source: {type: uri, uri}``): a file of the
Files API (``file-...``; JSONL, CSV or Parquet), a ``file://`` path inside a directory the operator named
in the provider's config, or ``huggingface://...`` for the ``remote::huggingface`` provider.

Why the row schemas live here: a dataset's *purpose* is a promise to the APIs that read it (an eval job
reads ``input_query`` and ``expected_answer``; fine-tuning reads ``messages``), and a client should learn
what each purpose requires from the contract. :func:`check_row` is the one check every provider runs, so a
malformed row is refused at registration or append with its row number and field, never later inside an
eval job.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal, Protocol

from pydantic import ConfigDict, Field, field_validator

from underlay.api.base import ApiModel
from underlay.api.errors import InvalidRequestError
from underlay.api.omit import omit_when_none
from underlay.api.pagination import ListQuery
from underlay.api.response_items import check_metadata
from underlay.api.routes import Handler, Route

__all__ = [
    "AppendRowsRequest",
    "AppendRowsResult",
    "DATASET_ID_PATTERN",
    "Dataset",
    "DatasetDeleted",
    "DatasetList",
    "DatasetPurpose",
    "DatasetRowsProvider",
    "DatasetSource",
    "DatasetsApi",
    "IterRowsQuery",
    "IterRowsResponse",
    "MAX_DATASET_ROWS",
    "MAX_INLINE_ROWS",
    "MAX_ROW_BYTES",
    "PURPOSES",
    "ROUTES",
    "RegisterDatasetRequest",
    "RowStore",
    "RowsSource",
    "UriSource",
    "check_row",
    "check_rows",
]

DatasetPurpose = Literal["eval/question-answer", "eval/messages-answer", "post-training/messages", "free-form"]
PURPOSES: tuple[str, ...] = ("eval/question-answer", "eval/messages-answer", "post-training/messages", "free-form")

MAX_INLINE_ROWS = 10_000
"""Rows in one register or append request; more belong in a file (upload it and register its id)."""
MAX_DATASET_ROWS = 200_000
"""Rows one dataset may hold: enough for eval sets and small fine-tuning sets; more is a 413."""
MAX_ROW_BYTES = 200_000
"""One row's size as compact JSON: a record, not a document."""
MAX_ITER_LIMIT = 1_000
DATASET_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"

_ROLES = ("system", "developer", "user", "assistant", "tool")
_REQUIRED: dict[str, tuple[str, ...]] = {
    "eval/question-answer": ("input_query", "expected_answer"),
    "eval/messages-answer": ("messages", "expected_answer"),
    "post-training/messages": ("messages",),
    "free-form": (),
}


# ---------------------------------------------------------------------------------------------------
# Row schemas
# ---------------------------------------------------------------------------------------------------


def _row_error(number: int, field: str | None, problem: str, param_prefix: str) -> InvalidRequestError:
    where = f"row {number}" + (f", field '{field}'" if field else "")
    param = f"{param_prefix}[{number - 1}]" + (f".{field}" if field else "")
    return InvalidRequestError(f"{where}: {problem}", param=param, code="invalid_row")


def _check_messages(value: Any, number: int, prefix: str) -> None:
    if not isinstance(value, list) or not value:
        raise _row_error(number, "messages", "must be a non-empty list of {role, content} objects", prefix)
    for index, message in enumerate(value):
        field = f"messages[{index}]"
        if not isinstance(message, dict):
            raise _row_error(number, field, "must be an object with 'role' and 'content'", prefix)
        role = message.get("role")
        if role not in _ROLES:
            raise _row_error(number, f"{field}.role", f"must be one of {', '.join(_ROLES)}", prefix)
        content = message.get("content")
        if not isinstance(content, str | list) and not (role == "assistant" and message.get("tool_calls")):
            raise _row_error(number, f"{field}.content", "must be a string or a list of content parts", prefix)


def check_row(purpose: str, row: Any, number: int, *, param_prefix: str = "rows") -> dict[str, Any]:
    """``row`` (1-based ``number``) checked against ``purpose``'s schema; a 400 naming the row and field.

    Extra fields are kept (a row may carry ids or tags for the caller); only the purpose's own fields are
    checked. ``param_prefix`` is where the rows came from in the request (``rows``, ``source.rows``).
    """
    if not isinstance(row, dict):
        raise _row_error(number, None, f"must be a JSON object, not {type(row).__name__}", param_prefix)
    size = len(json.dumps(row, separators=(",", ":"), ensure_ascii=False, default=str))
    if size > MAX_ROW_BYTES:
        raise _row_error(number, None, f"is {size} bytes as JSON; at most {MAX_ROW_BYTES} are allowed", param_prefix)
    for field in _REQUIRED.get(purpose, ()):
        if field not in row or row[field] is None:
            needed = ", ".join(_REQUIRED[purpose])
            raise _row_error(number, field, f"is missing; purpose '{purpose}' needs {needed}", param_prefix)
    for field in ("input_query", "expected_answer"):
        if field in _REQUIRED.get(purpose, ()) and not isinstance(row[field], str):
            raise _row_error(number, field, f"must be a string, not {type(row[field]).__name__}", param_prefix)
    if "messages" in _REQUIRED.get(purpose, ()):
        _check_messages(row["messages"], number, param_prefix)
    if purpose == "eval/question-answer" and row.get("chat_completion_input") is not None:
        value = row["chat_completion_input"]
        if isinstance(value, str):  # Llama Stack's files keep it as a JSON-encoded list of messages
            try:
                value = json.loads(value)
            except ValueError:
                raise _row_error(
                    number, "chat_completion_input", "is a string but not JSON; give a list of messages", param_prefix
                ) from None
        if not isinstance(value, list):
            raise _row_error(number, "chat_completion_input", "must be a list of messages", param_prefix)
    return row


def check_rows(
    purpose: str, rows: list[Any], first_number: int = 1, *, param_prefix: str = "rows"
) -> list[dict[str, Any]]:
    """Every row checked, numbered from ``first_number``; the first bad one is the error."""
    return [check_row(purpose, row, first_number + i, param_prefix=param_prefix) for i, row in enumerate(rows)]


# ---------------------------------------------------------------------------------------------------
# Objects
# ---------------------------------------------------------------------------------------------------


class UriSource(ApiModel):
    """Rows from a URI: ``file-...`` (a Files API file), ``file:///...`` (an allowed directory) or
    ``huggingface://<path>`` (the huggingface provider; a dataset saved with ``save_to_disk``)."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["uri"] = "uri"
    uri: str = Field(min_length=1, max_length=2048)
    format: Literal["jsonl", "csv", "parquet"] | None = Field(
        default=None, description="The file's format; left out, it is read from the file name (.jsonl, .csv, .parquet)."
    )


class RowsSource(ApiModel):
    """Rows given inline. On a registered dataset ``rows`` is empty: read them with iterrows."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["rows"] = "rows"
    rows: list[dict[str, Any]] = Field(default_factory=list, max_length=MAX_INLINE_ROWS)


DatasetSource = Annotated[UriSource | RowsSource, Field(discriminator="type")]


class Dataset(ApiModel):
    """A registered dataset. ``identifier`` is its id everywhere (paths, eval jobs, fine-tuning)."""

    identifier: str
    object: Literal["dataset"] = "dataset"
    type: Literal["dataset"] = "dataset"
    provider_id: str
    provider_resource_id: str
    purpose: DatasetPurpose
    source: DatasetSource
    row_count: int = 0
    created_at: int
    metadata: dict[str, str] = Field(default_factory=dict)


class DatasetList(ApiModel):
    object: Literal["list"] = "list"
    data: list[Dataset]
    first_id: str | None = None
    last_id: str | None = None
    has_more: bool = False

    _omit = omit_when_none("first_id", "last_id")


class DatasetDeleted(ApiModel):
    id: str
    object: Literal["dataset.deleted"] = "dataset.deleted"
    deleted: bool = True


class IterRowsResponse(ApiModel):
    """One page of rows; ``next_start_index`` is where the next page starts (``None``: this was the last)."""

    data: list[dict[str, Any]]
    next_start_index: int | None = None


class AppendRowsResult(ApiModel):
    dataset_id: str
    object: Literal["dataset.rows_appended"] = "dataset.rows_appended"
    appended: int
    row_count: int


# ---------------------------------------------------------------------------------------------------
# Requests
# ---------------------------------------------------------------------------------------------------


class RegisterDatasetRequest(ApiModel):
    """``POST /v1beta/datasets``. ``dataset_id`` left out: one is made (``ds_...``)."""

    model_config = ConfigDict(extra="forbid")

    purpose: DatasetPurpose
    source: DatasetSource
    dataset_id: str | None = Field(default=None, pattern=DATASET_ID_PATTERN, max_length=128)
    provider_id: str | None = Field(
        default=None, max_length=100, description="Which datasets provider holds the rows; the first one by default."
    )
    metadata: dict[str, str] | None = None

    _metadata = field_validator("metadata")(check_metadata)


class AppendRowsRequest(ApiModel):
    model_config = ConfigDict(extra="forbid")

    rows: list[dict[str, Any]] = Field(min_length=1, max_length=MAX_INLINE_ROWS)


class IterRowsQuery(ApiModel):
    start_index: int = Field(default=0, ge=0, le=MAX_DATASET_ROWS)
    limit: int = Field(default=100, ge=1, le=MAX_ITER_LIMIT)


# ---------------------------------------------------------------------------------------------------
# Provider contract
# ---------------------------------------------------------------------------------------------------


class RowStore(Protocol):
    """Where ``inline::localfs`` keeps rows: Underlay's SQL store, each row owned like its dataset.

    The datasets router hands it to providers that ask for it (``attach``), as the Responses API hands
    its store to its provider; a provider never opens the server's database itself.
    """

    async def insert(self, dataset_id: str, start_index: int, rows: list[dict[str, Any]]) -> None: ...

    async def fetch(self, dataset_id: str, start_index: int, limit: int) -> list[dict[str, Any]]: ...

    async def delete(self, dataset_id: str) -> None: ...


class DatasetRowsProvider(Protocol):
    """What a datasets provider does: take in a dataset's rows, page through them, add to them.

    ``load`` receives inline rows, or a file's bytes already read (``data`` and its ``filename``) for
    ``file-...`` sources, or the raw ``uri`` for anything else, which the provider accepts or refuses
    with a 400; ``format`` is the source's ``format`` when the client gave one. Every row is checked with
    :func:`check_row` before any is kept.
    """

    provider_id: str

    async def initialize(self) -> None: ...

    async def shutdown(self) -> None: ...

    async def load(
        self,
        dataset: Dataset,
        *,
        rows: list[dict[str, Any]] | None = None,
        data: bytes | None = None,
        filename: str | None = None,
        format: str | None = None,
        uri: str | None = None,
    ) -> int:
        """Check and keep the rows; returns how many there are."""
        ...

    async def iterrows(self, dataset: Dataset, start_index: int, limit: int) -> list[dict[str, Any]]: ...

    async def append_rows(self, dataset: Dataset, rows: list[dict[str, Any]]) -> int:
        """Check and add ``rows`` after ``dataset.row_count``; returns the new count."""
        ...

    async def unregister(self, dataset: Dataset) -> None: ...


# ---------------------------------------------------------------------------------------------------
# The router's contract and the routes
# ---------------------------------------------------------------------------------------------------


class DatasetsApi(Protocol):
    """The datasets router, as the current principal.

    Other APIs call it directly: eval jobs read rows with :meth:`iterrows` and check
    :attr:`Dataset.purpose` through :meth:`get_dataset`; fine-tuning reads ``post-training/messages``
    datasets; synthetic data generation saves what it made with :meth:`register_dataset`.
    """

    async def register_dataset(self, params: RegisterDatasetRequest) -> Dataset: ...

    async def list_datasets(self, query: ListQuery) -> DatasetList: ...

    async def get_dataset(self, dataset_id: str) -> Dataset: ...

    async def unregister_dataset(self, dataset_id: str) -> DatasetDeleted: ...

    async def iterrows(self, dataset_id: str, query: IterRowsQuery) -> IterRowsResponse: ...

    async def append_rows(self, dataset_id: str, params: AppendRowsRequest) -> AppendRowsResult: ...


def _route(method: str, path: str, handler: Handler, summary: str, tag: str, **kwargs: Any) -> Route:
    return Route(method, path, handler, summary=summary, tags=(tag,), **kwargs)


_D = "/datasets/{dataset_id}"

ROUTES: list[Route] = [
    _route(
        "POST",
        "/datasets",
        DatasetsApi.register_dataset,
        "Register a dataset from rows or a URI",
        "datasets",
        body=RegisterDatasetRequest,
        response=Dataset,
    ),
    _route(
        "GET",
        "/datasets",
        DatasetsApi.list_datasets,
        "List datasets",
        "datasets",
        query=ListQuery,
        response=DatasetList,
    ),
    _route("GET", _D, DatasetsApi.get_dataset, "Get a dataset", "datasets", response=Dataset),
    _route(
        "DELETE",
        _D,
        DatasetsApi.unregister_dataset,
        "Delete a dataset and its rows",
        "datasets",
        response=DatasetDeleted,
    ),
    _route(
        "GET",
        "/datasetio/iterrows/{dataset_id}",
        DatasetsApi.iterrows,
        "Page through a dataset's rows",
        "datasetio",
        query=IterRowsQuery,
        response=IterRowsResponse,
    ),
    _route(
        "POST",
        "/datasetio/append-rows/{dataset_id}",
        DatasetsApi.append_rows,
        "Append rows to a dataset",
        "datasetio",
        body=AppendRowsRequest,
        response=AppendRowsResult,
    ),
]
