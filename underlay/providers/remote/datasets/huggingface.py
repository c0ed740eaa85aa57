"""``remote::huggingface``: rows read from Hugging Face datasets with the ``datasets`` library, offline.

A dataset is registered as ``huggingface://<name>[?split=<split>]``; ``<name>`` is a directory inside one
of the operator's ``allowed_dirs`` holding a dataset saved with ``save_to_disk`` (or a folder of
JSON/CSV/Parquet data files ``load_dataset`` reads). Nothing is fetched from the hub: the library runs with
``HF_DATASETS_OFFLINE=1`` and ``HF_HUB_OFFLINE=1``, and a name outside the allowed directories is a 400,
so a client can never make the server read an arbitrary path or reach the network.

The rows stay where they are (Arrow files, memory-mapped); registration checks every row against the
purpose once, and ``iterrows`` selects a range. The datasets are read-only here: ``append-rows`` is a 400
that says to register a copy with ``inline::localfs``.
"""

from __future__ import annotations

import asyncio
import os
import re
from typing import Any
from urllib.parse import parse_qs, urlparse

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from underlay.api.datasets import MAX_DATASET_ROWS, Dataset, UriSource, check_row
from underlay.api.errors import InvalidRequestError, PayloadTooLargeError
from underlay.providers.utils.dataset_files import allowed_path

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}(/[A-Za-z0-9][A-Za-z0-9._-]{0,127}){0,3}$")
_SPLIT = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


class Config(BaseModel):
    model_config = ConfigDict(extra="forbid")

    allowed_dirs: list[str] = Field(
        min_length=1,
        max_length=32,
        description="Directories holding saved datasets; huggingface://<name> is <dir>/<name> in the first that "
        "has it. A relative path is inside the state directory.",
    )

    @field_validator("allowed_dirs")
    @classmethod
    def _in_state_dir(cls, value: list[str], info: ValidationInfo) -> list[str]:
        state_dir = (info.context or {}).get("state_dir")
        out = []
        for item in value:
            path = os.path.expanduser(item)
            if not os.path.isabs(path) and state_dir:
                path = os.path.join(state_dir, path)
            out.append(path)
        return out


def _parse_uri(uri: str) -> tuple[str, str]:
    parsed = urlparse(uri)
    name = f"{parsed.netloc}{parsed.path}".strip("/")
    if parsed.scheme != "huggingface" or not _NAME.fullmatch(name):
        raise InvalidRequestError(
            "A Hugging Face dataset URI looks like huggingface://<name>?split=train, where <name> is a dataset "
            "directory the operator made available (letters, digits, '.', '_', '-', up to 4 path segments).",
            param="source.uri",
        )
    split = parse_qs(parsed.query).get("split", ["train"])[0]
    if not _SPLIT.fullmatch(split):
        raise InvalidRequestError("The split name is not valid (letters, digits, '_', '.', '-').", param="source.uri")
    return name, split


class HuggingFaceDatasets:
    def __init__(self, provider_id: str, config: Config) -> None:
        self.provider_id = provider_id
        self.config = config
        self._open: dict[str, Any] = {}

    async def initialize(self) -> None:
        os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        await asyncio.to_thread(__import__, "datasets")  # a missing extra fails at start-up, not on a request

    async def shutdown(self) -> None:
        self._open.clear()

    def _locate(self, name: str) -> str:
        for base in self.config.allowed_dirs:
            candidate = os.path.join(base, name)
            if os.path.isdir(candidate):
                return str(allowed_path(candidate, self.config.allowed_dirs, what="huggingface://"))
        raise InvalidRequestError(
            f"No dataset named '{name}' is available to provider '{self.provider_id}' (this server reads saved "
            "datasets offline, never from the hub).",
            param="source.uri",
        )

    def _read(self, uri: str) -> Any:
        import datasets

        name, split = _parse_uri(uri)
        path = self._locate(name)
        saved = os.path.exists(os.path.join(path, "dataset_info.json")) or os.path.exists(
            os.path.join(path, "dataset_dict.json")
        )
        try:
            table = datasets.load_from_disk(path) if saved else datasets.load_dataset(path, split=split)
        except (FileNotFoundError, ValueError) as exc:
            raise InvalidRequestError(
                f"Dataset '{name}' could not be read ({type(exc).__name__}: {str(exc)[:300]}).", param="source.uri"
            ) from None
        if isinstance(table, datasets.DatasetDict):
            if split not in table:
                raise InvalidRequestError(
                    f"Dataset '{name}' has no split '{split}'; it has: {', '.join(table)}.", param="source.uri"
                )
            table = table[split]
        return table

    async def _table(self, dataset: Dataset) -> Any:
        table = self._open.get(dataset.identifier)
        if table is None:
            if not isinstance(dataset.source, UriSource):
                raise InvalidRequestError("This dataset has no Hugging Face URI.", param="dataset_id")
            table = await asyncio.to_thread(self._read, dataset.source.uri)
            self._open[dataset.identifier] = table
        return table

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
        if uri is None or not uri.startswith("huggingface://"):
            raise InvalidRequestError(
                f"Provider '{self.provider_id}' (remote::huggingface) registers huggingface://<name> URIs only; "
                "register rows and files with an inline::localfs provider.",
                param="source",
            )
        table = await asyncio.to_thread(self._read, uri)
        count = len(table)
        if count > MAX_DATASET_ROWS:
            raise PayloadTooLargeError(f"The dataset has {count} rows; a dataset holds at most {MAX_DATASET_ROWS}.")

        def check_all() -> None:
            for number, row in enumerate(table, start=1):
                check_row(dataset.purpose, row, number, param_prefix="source")

        await asyncio.to_thread(check_all)
        self._open[dataset.identifier] = table
        return count

    async def iterrows(self, dataset: Dataset, start_index: int, limit: int) -> list[dict[str, Any]]:
        table = await self._table(dataset)
        end = min(len(table), start_index + limit)
        if start_index >= end:
            return []
        rows: list[dict[str, Any]] = await asyncio.to_thread(lambda: table.select(range(start_index, end)).to_list())
        return rows

    async def append_rows(self, dataset: Dataset, rows: list[dict[str, Any]]) -> int:
        raise InvalidRequestError(
            f"Dataset '{dataset.identifier}' is a Hugging Face dataset, read-only here; register a copy with an "
            "inline::localfs provider to append rows.",
            param="dataset_id",
        )

    async def unregister(self, dataset: Dataset) -> None:
        self._open.pop(dataset.identifier, None)


async def create_provider(provider_id: str, config: Config, deps: dict[str, Any]) -> HuggingFaceDatasets:
    return HuggingFaceDatasets(provider_id, config)
