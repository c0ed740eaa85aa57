"""Datasets providers that keep rows in-process (in Underlay's SQL store); the spec the entry point names."""

from __future__ import annotations

from underlay.api.providers import ProviderSpec

LOCALFS = ProviderSpec(
    api="datasets",
    provider_type="inline::localfs",
    config_class="underlay.providers.inline.datasets.localfs:Config",
    factory="underlay.providers.inline.datasets.localfs:create_provider",
    description="Dataset rows in Underlay's SQL store, from inline rows or JSONL/CSV/Parquet files (the default).",
)
