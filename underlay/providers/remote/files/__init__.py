"""Files providers that store bytes in another service (S3-compatible object stores); the spec the entry
point names (``aiobotocore`` is imported only when the provider is built)."""

from __future__ import annotations

from underlay.api.providers import ProviderSpec

S3 = ProviderSpec(
    api="files",
    provider_type="remote::s3",
    config_class="underlay.providers.remote.files.s3:Config",
    factory="underlay.providers.remote.files.s3:create_provider",
    pip_packages=("aiobotocore==3.10.0",),
    extras=("s3",),
    description="Any S3-compatible object store.",
)
