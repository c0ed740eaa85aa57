"""``inline::localfs``: dataset rows in Underlay's SQL store, taken in from inline rows or a file.

A file is parsed once, at registration (JSONL, CSV or Parquet), every row is checked against the
dataset's purpose before any is kept, and the rows go to the row store the datasets router attaches
(the server's SQL store, each row owned like its dataset). So ``iterrows`` is an indexed range query,
the same on SQLite and PostgreSQL, and several workers share the rows with no file to copy around.

``file://`` URIs are read only inside ``allowed_dirs`` (none by default), and only up to
``max_file_bytes``; anything else a client sends as a URI is a 400 that says what this provider takes.
"""

from __future__ import annotations

import asyncio
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from underlay.api.datasets import MAX_DATASET_ROWS, Dataset, RowStore, check_rows
from underlay.api.errors import InvalidRequestError, PayloadTooLargeError, ServiceUnavailableError
from underlay.providers.utils.dataset_files import allowed_path, file_uri_path, format_of, parse_rows


class Config(BaseModel):
    model_config = ConfigDict(extra="forbid")

    allowed_dirs: list[str] = Field(
        default_factory=list,
        max_length=32,
        description="Directories file:// URIs may read from; empty (the default) switches file:// URIs off. "
        "A relative path is inside the state directory.",
    )
    max_file_bytes: int = Field(default=256 * 1024 * 1024, ge=1, le=4 * 1024**3)

    @field_validator("allowed_dirs")
    @classmethod
    def _in_state_dir(cls, value: list[str], info: ValidationInfo) -> list[str]:
        import os

        state_dir = (info.context or {}).get("state_dir")
        out = []
        for item in value:
            path = os.path.expanduser(item)
            if not os.path.isabs(path) and state_dir:
                path = os.path.join(state_dir, path)
            out.append(path)
        return out


class LocalFSDatasets:
    def __init__(self, provider_id: str, config: Config) -> None:
        self.provider_id = provider_id
        self.config = config
        self._rows: RowStore | None = None

    def attach(self, rows: RowStore) -> None:
        """The router's row store (the server's SQL store); set once, before any request."""
        self._rows = rows

    @property
    def rows(self) -> RowStore:
        if self._rows is None:
            raise ServiceUnavailableError(self.provider_id, "no row store attached (the datasets router attaches one)")
        return self._rows

    async def initialize(self) -> None:
        return None

    async def shutdown(self) -> None:
        return None

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
        param = "source.rows"
        if rows is None:
            param = "source"
            if data is None:
                data, filename = await self._read_uri(uri or "")
            rows = await asyncio.to_thread(parse_rows, data, format_of(filename, format))
        if len(rows) > MAX_DATASET_ROWS:
            raise PayloadTooLargeError(f"A dataset holds at most {MAX_DATASET_ROWS} rows; this one has {len(rows)}.")
        checked = check_rows(dataset.purpose, rows, param_prefix=param)
        await self.rows.insert(dataset.identifier, 0, checked)
        return len(checked)

    async def _read_uri(self, uri: str) -> tuple[bytes, str]:
        if not uri.startswith("file://"):
            raise InvalidRequestError(
                f"Provider '{self.provider_id}' (inline::localfs) reads inline rows, Files API ids (file-...) and "
                "file:// paths in allowed directories; for huggingface:// URIs configure a remote::huggingface "
                "provider and name it in provider_id.",
                param="source.uri",
            )
        path = allowed_path(file_uri_path(uri), self.config.allowed_dirs)

        def read() -> bytes:
            if not path.is_file():
                raise InvalidRequestError("The file:// URI does not name a readable file.", param="source.uri")
            if path.stat().st_size > self.config.max_file_bytes:
                raise PayloadTooLargeError(
                    f"The file is larger than {self.config.max_file_bytes} bytes, this provider's max_file_bytes.",
                    param="source.uri",
                )
            return path.read_bytes()

        return await asyncio.to_thread(read), path.name

    async def iterrows(self, dataset: Dataset, start_index: int, limit: int) -> list[dict[str, Any]]:
        return await self.rows.fetch(dataset.identifier, start_index, limit)

    async def append_rows(self, dataset: Dataset, rows: list[dict[str, Any]]) -> int:
        checked = check_rows(dataset.purpose, rows)  # numbered as the request's rows
        await self.rows.insert(dataset.identifier, dataset.row_count, checked)
        return dataset.row_count + len(checked)

    async def unregister(self, dataset: Dataset) -> None:
        await self.rows.delete(dataset.identifier)


async def create_provider(provider_id: str, config: Config, deps: dict[str, Any]) -> LocalFSDatasets:
    return LocalFSDatasets(provider_id, config)
