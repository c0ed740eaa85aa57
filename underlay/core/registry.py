"""Provider discovery: the built-in specs plus the ``underlay.providers`` entry-point group.

An entry point may name a ``ProviderSpec``, a list of them, or a zero-argument callable returning
either. A broken third-party entry point is reported, never fatal to the server.
"""

from __future__ import annotations

import importlib
import logging
from importlib.metadata import entry_points
from typing import Any

from underlay.api.providers import ProviderSpec
from underlay.providers.registry import BUILTIN_PROVIDERS

ENTRY_POINT_GROUP = "underlay.providers"
log = logging.getLogger("underlay.registry")


def _external_specs() -> list[ProviderSpec]:
    specs: list[ProviderSpec] = []
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            loaded: Any = ep.load()
            if callable(loaded) and not isinstance(loaded, ProviderSpec):
                loaded = loaded()
            items = loaded if isinstance(loaded, list | tuple) else [loaded]
            for item in items:
                if not isinstance(item, ProviderSpec):
                    raise TypeError(f"expected ProviderSpec, got {type(item).__name__}")
                specs.append(item)
        except Exception as exc:  # a third-party plugin must not take the server down
            log.warning("skipping provider entry point %s: %s", ep.name, exc)
    return specs


def available_providers() -> dict[tuple[str, str], ProviderSpec]:
    """Every known provider, keyed by ``(api, provider_type)``; external specs may not shadow built-ins."""
    registry: dict[tuple[str, str], ProviderSpec] = {}
    for spec in BUILTIN_PROVIDERS:
        registry[(spec.api, spec.provider_type)] = spec
    for spec in _external_specs():
        key = (spec.api, spec.provider_type)
        if key in registry:
            log.warning("entry point tries to replace built-in provider %s; ignored", spec.provider_type)
            continue
        registry[key] = spec
    return registry


def import_object(dotted: str) -> Any:
    """Import ``package.module:attribute``."""
    module_name, _, attribute = dotted.partition(":")
    module = importlib.import_module(module_name)
    return getattr(module, attribute) if attribute else module
