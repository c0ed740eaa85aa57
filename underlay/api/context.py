"""Per-request context that providers may read: the caller's provider data (per-request credentials).

The server sets these from the ``X-Underlay-Provider-Data`` header (a JSON object, e.g.
``{"openai_api_key": "sk-..."}``) before calling a router; a provider reads them with
:func:`get_provider_data`. Context variables keep concurrent requests apart.
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import Any

__all__ = ["PROVIDER_DATA_HEADER", "get_provider_data", "provider_data_var", "request_id_var"]

PROVIDER_DATA_HEADER = "X-Underlay-Provider-Data"

provider_data_var: ContextVar[dict[str, Any] | None] = ContextVar("underlay_provider_data", default=None)
request_id_var: ContextVar[str | None] = ContextVar("underlay_request_id", default=None)


def get_provider_data() -> dict[str, Any]:
    """The current request's provider data, or an empty dict outside a request."""
    return provider_data_var.get() or {}
