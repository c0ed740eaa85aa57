"""``client.providers``: the providers this server runs (``GET /v1/providers``), secrets redacted."""

from __future__ import annotations

from openai._base_client import AsyncPaginator
from openai._resource import AsyncAPIResource, SyncAPIResource
from typing_extensions import Unpack

from underlay.api.providers import ProviderInfo
from underlay.client._wire import AsyncPage, RequestOptions, SyncPage, options_of

__all__ = ["AsyncProviders", "Providers"]

PATH = "/providers"
"""A platform route of the server (``underlay.server.app``), not an API's route table."""


class Providers(SyncAPIResource):
    def list(self, **options: Unpack[RequestOptions]) -> SyncPage[ProviderInfo]:
        """Each configured provider: its API, id, type and config (secrets redacted)."""
        return self._get_api_list(PATH, page=SyncPage[ProviderInfo], model=ProviderInfo, options=options_of(options))


class AsyncProviders(AsyncAPIResource):
    def list(self, **options: Unpack[RequestOptions]) -> AsyncPaginator[ProviderInfo, AsyncPage[ProviderInfo]]:
        """Each configured provider: its API, id, type and config (secrets redacted)."""
        return self._get_api_list(PATH, page=AsyncPage[ProviderInfo], model=ProviderInfo, options=options_of(options))
