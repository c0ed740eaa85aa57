"""The datasets router: the Datasets API over its store and its providers.

Thin: the store owns ownership (every query carries the access policy), the providers own the rows
(parsing, per-row checks, storage). What the router adds is the order that keeps the two consistent:
a dataset's record is inserted first (so its id is taken, and its rows carry an owner), then its rows
are loaded, then its row count is written; a load that fails removes both, so a client never sees a
half-registered dataset. A ``file-...`` source is read through the files router as the caller, so a
client can only register files it may read.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Mapping
from typing import Any

from underlay.api.datasets import (
    MAX_DATASET_ROWS,
    AppendRowsRequest,
    AppendRowsResult,
    Dataset,
    DatasetDeleted,
    DatasetList,
    DatasetRowsProvider,
    DatasetsApi,
    IterRowsQuery,
    IterRowsResponse,
    RegisterDatasetRequest,
    RowsSource,
    UriSource,
)
from underlay.api.errors import ConflictError, InvalidRequestError, PayloadTooLargeError, ServiceUnavailableError
from underlay.api.pagination import ListQuery
from underlay.core.routers.files import FilesRouter
from underlay.core.stores.datasets import DatasetStore, new_dataset_id

DEFAULT_MAX_FILE_BYTES = 256 * 1024 * 1024
"""How much of a Files API file a registration reads before refusing it (413)."""


class DatasetsRouter(DatasetsApi):
    def __init__(
        self,
        store: DatasetStore,
        providers: Mapping[str, DatasetRowsProvider],
        files: FilesRouter | None,
        *,
        max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
    ) -> None:
        self.store = store
        self.providers = providers
        self.files = files
        self.max_file_bytes = max_file_bytes

    # -- helpers ------------------------------------------------------------------------------------

    def _provider(self, provider_id: str | None, *, param: str = "provider_id") -> tuple[str, DatasetRowsProvider]:
        if not self.providers:
            raise ServiceUnavailableError("datasets", "no datasets provider is configured on this server")
        chosen = provider_id or next(iter(self.providers))
        provider = self.providers.get(chosen)
        if provider is None:
            known = ", ".join(self.providers)
            raise InvalidRequestError(f"Unknown datasets provider '{chosen[:100]}'; use one of: {known}.", param=param)
        return chosen, provider

    def _serving(self, dataset: Dataset) -> DatasetRowsProvider:
        provider = self.providers.get(dataset.provider_id)
        if provider is None:
            raise ServiceUnavailableError(
                dataset.provider_id,
                f"dataset '{dataset.identifier}' is held by a provider this server no longer configures",
            )
        return provider

    async def _file_bytes(self, file_id: str) -> tuple[bytes, str]:
        if self.files is None:
            raise InvalidRequestError(
                "This server does not run the files API, so a dataset cannot be registered from a file id; add "
                "files to apis, or send the rows inline.",
                param="source.uri",
            )
        meta = await self.files.get_file(file_id)  # the caller's file, or 404
        chunks = await self.files.open_content(file_id)
        parts: list[bytes] = []
        size = 0
        async for chunk in chunks:
            size += len(chunk)
            if size > self.max_file_bytes:
                raise PayloadTooLargeError(
                    f"File '{file_id}' is larger than {self.max_file_bytes} bytes, the most a dataset file may be.",
                    param="source.uri",
                )
            parts.append(chunk)
        return b"".join(parts), meta.filename

    # -- routes -------------------------------------------------------------------------------------

    async def register_dataset(self, params: RegisterDatasetRequest) -> Dataset:
        provider_id, provider = self._provider(params.provider_id)
        dataset_id = params.dataset_id or new_dataset_id()
        await self.store.check_create(dataset_id)
        if await self.store.exists_any_owner(dataset_id):
            raise ConflictError(
                f"A dataset with id '{dataset_id}' already exists; pick another dataset_id or leave it out to get a "
                "generated one.",
                param="dataset_id",
                code="dataset_exists",
            )
        source: UriSource | RowsSource = (
            params.source if isinstance(params.source, UriSource) else RowsSource(rows=[])  # rows: read via iterrows
        )
        dataset = Dataset(
            identifier=dataset_id,
            provider_id=provider_id,
            provider_resource_id=dataset_id,
            purpose=params.purpose,
            source=source,
            created_at=int(time.time()),
            metadata=params.metadata or {},
        )
        await self.store.create(dataset)
        try:
            count = await self._load(provider, dataset, params)
            return await self.store.set_row_count(dataset, count)
        except BaseException:
            with contextlib.suppress(Exception):
                await provider.unregister(dataset)
            with contextlib.suppress(Exception):
                await self.store.delete(dataset_id)
            raise

    async def _load(self, provider: DatasetRowsProvider, dataset: Dataset, params: RegisterDatasetRequest) -> int:
        source = params.source
        if isinstance(source, RowsSource):
            return await provider.load(dataset, rows=source.rows)
        if source.uri.startswith("file-"):
            data, filename = await self._file_bytes(source.uri)
            return await provider.load(dataset, data=data, filename=filename, format=source.format)
        return await provider.load(dataset, uri=source.uri, format=source.format)

    async def list_datasets(self, query: ListQuery) -> DatasetList:
        datasets, has_more = await self.store.page(after=query.after, limit=query.limit, order=query.order)
        return DatasetList(
            data=datasets,
            first_id=datasets[0].identifier if datasets else None,
            last_id=datasets[-1].identifier if datasets else None,
            has_more=has_more,
        )

    async def get_dataset(self, dataset_id: str) -> Dataset:
        return await self.store.get(dataset_id)

    async def unregister_dataset(self, dataset_id: str) -> DatasetDeleted:
        dataset = await self.store.get(dataset_id, "delete")
        provider = self.providers.get(dataset.provider_id)
        await self.store.delete(dataset_id)
        if provider is not None:
            await provider.unregister(dataset)
        return DatasetDeleted(id=dataset_id)

    async def iterrows(self, dataset_id: str, query: IterRowsQuery) -> IterRowsResponse:
        dataset = await self.store.get(dataset_id)
        if query.start_index >= dataset.row_count:
            return IterRowsResponse(data=[], next_start_index=None)
        rows = await self._serving(dataset).iterrows(dataset, query.start_index, query.limit)
        end = query.start_index + len(rows)
        return IterRowsResponse(data=rows, next_start_index=end if rows and end < dataset.row_count else None)

    async def append_rows(self, dataset_id: str, params: AppendRowsRequest) -> AppendRowsResult:
        dataset = await self.store.get(dataset_id, "update")
        if dataset.row_count + len(params.rows) > MAX_DATASET_ROWS:
            raise PayloadTooLargeError(
                f"Dataset '{dataset_id}' has {dataset.row_count} rows; appending {len(params.rows)} would pass "
                f"{MAX_DATASET_ROWS}, the most a dataset may hold.",
                param="rows",
            )
        count = await self._serving(dataset).append_rows(dataset, params.rows)
        await self.store.set_row_count(dataset, count)
        return AppendRowsResult(dataset_id=dataset_id, appended=count - dataset.row_count, row_count=count)

    # -- for other routers --------------------------------------------------------------------------

    async def purpose_of(self, dataset_id: str) -> str:
        """The dataset's purpose (404 if the caller cannot read it): eval jobs check it before starting."""
        return (await self.store.get(dataset_id)).purpose

    async def all_rows(self, dataset_id: str, *, page: int = 500) -> list[dict[str, Any]]:
        """Every row of a dataset, in order, read page by page (bounded by the dataset's row limit)."""
        out: list[dict[str, Any]] = []
        start: int | None = 0
        while start is not None:
            got = await self.iterrows(dataset_id, IterRowsQuery(start_index=start, limit=min(page, 1000)))
            out.extend(got.data)
            start = got.next_start_index
        return out
