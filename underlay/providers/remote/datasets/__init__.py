"""Datasets providers that read rows kept elsewhere; the spec the entry point names."""

from __future__ import annotations

from underlay.api.providers import ProviderSpec

HUGGINGFACE = ProviderSpec(
    api="datasets",
    provider_type="remote::huggingface",
    config_class="underlay.providers.remote.datasets.huggingface:Config",
    factory="underlay.providers.remote.datasets.huggingface:create_provider",
    extras=("datasets",),
    description="Hugging Face datasets (the datasets library), read offline from directories the operator allows.",
)
