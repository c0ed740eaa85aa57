"""Provider discovery: every provider, built-in or third-party, comes from the ``underlay.providers`` entry points.

Why one path: a built-in provider is declared exactly as an outside package declares one (a
``ProviderSpec`` named in its distribution's entry points; ours are in ``pyproject.toml``), so the
plugin path is the path every request already exercises, and core imports no provider module.

An entry point may name a ``ProviderSpec``, a list of them, or a zero-argument callable returning
either. The ``underlay`` distribution's entry points are the built-ins and load first; a third-party
spec may not replace one. A broken third-party entry point is reported, never fatal to the server.
"""

from __future__ import annotations

import importlib
import logging
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from underlay.api.providers import ProviderSpec

ENTRY_POINT_GROUP = "underlay.providers"
BUILTIN_DISTRIBUTION = "underlay"
log = logging.getLogger("underlay.registry")


def _is_builtin(entry_point: EntryPoint, names: dict[int, str] | None = None) -> bool:
    """Whether ``underlay`` itself declares ``entry_point``; ``names`` memoises distribution names by object.

    Why the memo: ``Distribution.name`` parses the distribution's METADATA file on every access, and the
    entry points of one distribution share one distribution object within a scan, so one parse each.
    """
    dist = entry_point.dist
    if dist is None:
        return False
    if names is None:
        return dist.name.lower() == BUILTIN_DISTRIBUTION
    name = names.get(id(dist))
    if name is None:
        name = names[id(dist)] = dist.name.lower()
    return name == BUILTIN_DISTRIBUTION


def _load(entry_point: EntryPoint) -> list[ProviderSpec]:
    loaded: Any = entry_point.load()
    if callable(loaded) and not isinstance(loaded, ProviderSpec):
        loaded = loaded()
    items = loaded if isinstance(loaded, list | tuple) else [loaded]
    for item in items:
        if not isinstance(item, ProviderSpec):
            raise TypeError(f"expected ProviderSpec, got {type(item).__name__}")
    return list(items)


def _entry_points() -> list[EntryPoint]:
    return list(entry_points(group=ENTRY_POINT_GROUP))


def _specs(builtin: bool, points: list[EntryPoint] | None = None) -> list[ProviderSpec]:
    specs: list[ProviderSpec] = []
    names: dict[int, str] = {}
    for entry_point in _entry_points() if points is None else points:
        if _is_builtin(entry_point, names) != builtin:
            continue
        try:
            specs.extend(_load(entry_point))
        except Exception as exc:  # a plugin (or a stale install of ours) must not take the server down
            log.warning("skipping provider entry point %s: %s", entry_point.name, exc)
    return specs


def builtin_providers(points: list[EntryPoint] | None = None) -> list[ProviderSpec]:
    """The specs the ``underlay`` distribution declares, in ``pyproject.toml`` order."""
    specs = _specs(builtin=True, points=points)
    if not specs:
        log.error(
            "no built-in providers found: the '%s' entry points of the underlay package are missing; "
            "install it (pip install -e .) rather than running it from a bare source tree",
            ENTRY_POINT_GROUP,
        )
    return specs


def available_providers() -> dict[tuple[str, str], ProviderSpec]:
    """Every known provider, keyed by ``(api, provider_type)``; external specs may not shadow built-ins."""
    registry: dict[tuple[str, str], ProviderSpec] = {}
    points = _entry_points()  # one scan of the installed distributions for both passes
    for spec in builtin_providers(points):
        registry[(spec.api, spec.provider_type)] = spec
    for spec in _specs(builtin=False, points=points):
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
