"""Files providers that store bytes in-process (on the local filesystem); the spec the entry point names."""

from __future__ import annotations

from underlay.api.providers import ProviderSpec

LOCALFS = ProviderSpec(
    api="files",
    provider_type="inline::localfs",
    config_class="underlay.providers.inline.files.localfs:Config",
    factory="underlay.providers.inline.files.localfs:create_provider",
    description="Files on the local filesystem (the default).",
)
