"""Underlay: an open, run-anywhere API server for AI agents.

``from underlay import Underlay, AsyncUnderlay, Agent, AsyncAgent`` gives the SDK (:mod:`underlay.client`,
and :mod:`underlay.agents` for the agents). It is loaded on first use, not here: the server and the CLI
import this package too, and the SDK pulls in the ``openai`` client, which they do not need.
"""

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = ["Agent", "AsyncAgent", "AsyncUnderlay", "Underlay", "__version__"]

if TYPE_CHECKING:
    from underlay.agents import Agent, AsyncAgent
    from underlay.client import AsyncUnderlay, Underlay

_LAZY = {
    "Underlay": "underlay.client",
    "AsyncUnderlay": "underlay.client",
    "Agent": "underlay.agents",
    "AsyncAgent": "underlay.agents",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'underlay' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
