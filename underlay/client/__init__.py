"""Underlay's Python SDK: ``Underlay`` and ``AsyncUnderlay`` are the ``openai`` clients plus Underlay's APIs.

``from underlay import Underlay`` is the usual import; see docs/sdk.md. The resources for Underlay's own
APIs are typed with the server's pydantic models (``underlay.api``), so there is one definition of each
shape, shared by the server and the SDK.
"""

from underlay.client._wire import AsyncCursorPage, AsyncPage, SyncCursorPage, SyncPage
from underlay.client.client import DEFAULT_BASE_URL, AsyncUnderlay, Underlay

__all__ = [
    "DEFAULT_BASE_URL",
    "AsyncCursorPage",
    "AsyncPage",
    "AsyncUnderlay",
    "SyncCursorPage",
    "SyncPage",
    "Underlay",
]
