"""API discovery: every API, built-in or from a package, comes from the ``underlay.apis`` entry points.

Why one path: a whole new API (contract, router, providers) is Underlay's equivalent of a custom
resource, and it only gets the same machinery as a built-in one (routes, auth, access policies,
quotas, spans, jobs, stores) if the server cannot tell them apart. So the built-in table is itself an
entry point of the ``underlay`` distribution (``pyproject.toml``), loaded by the same code as a
third-party one, and operators who do not publish packages name a folder of API packages in the run
config (``apis_dir``).

An entry point (or a folder package's ``APIS`` attribute) names an :class:`ApiEntry`, called by the
entry point's (folder's) name, or a mapping of API names to entries. A folder package may also export
``PROVIDERS``, a list of :class:`ProviderSpec` for its API. What can go wrong is one config line
naming the package: a configured API that is missing, one that fails to import, two packages
claiming one API name or one route, a malformed version.
"""

from __future__ import annotations

import importlib
import logging
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from typing import Any

from underlay.api.providers import ProviderSpec
from underlay.core.apis import API_TABLE, ApiEntry, api_order
from underlay.core.config import ConfigError, RunConfig

ENTRY_POINT_GROUP = "underlay.apis"
BUILTIN_PACKAGE = "underlay"
_VERSION = re.compile(r"^v[1-9][0-9]*(alpha[0-9]*|beta[0-9]*)?$")
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
PLATFORM_ROUTES = ("/v1/health", "/v1/version", "/v1/providers", "/v1/inspect/routes")
log = logging.getLogger("underlay.api_plugins")


@dataclass(frozen=True)
class ApiSource:
    """One API as found: its entry, and the package (distribution or folder) that declared it."""

    name: str
    entry: ApiEntry
    package: str


@dataclass
class ApiCatalog:
    """Every API found, the ones that could not be loaded, and the providers folder packages bring."""

    apis: dict[str, ApiSource] = field(default_factory=dict)
    duplicates: dict[str, list[str]] = field(default_factory=dict)
    """API name → the other packages that claimed it too (the first one found is in ``apis``)."""
    broken: dict[str, tuple[str, str]] = field(default_factory=dict)
    """Entry-point or folder name → (package, one-line reason)."""
    providers: list[ProviderSpec] = field(default_factory=list)

    @property
    def table(self) -> dict[str, ApiEntry]:
        return {name: source.entry for name, source in self.apis.items()}

    def add(self, name: str, entry: Any, package: str) -> None:
        if not isinstance(entry, ApiEntry):
            raise TypeError(f"API '{name}' is a {type(entry).__name__}, not an underlay.core.apis.ApiEntry")
        if not _NAME.match(name):
            raise TypeError(f"API name '{name}' must be lower-case letters, digits and _ (at most 64)")
        if name in self.apis:
            self.duplicates.setdefault(name, []).append(package)
            return
        self.apis[name] = ApiSource(name, _served(entry), package)


def _served(entry: ApiEntry) -> ApiEntry:
    """The entry with every route under its version prefix (``/notes`` → ``/v1alpha/notes``)."""
    prefix = f"/{entry.version}"
    routes = [
        route if route.path.startswith(prefix + "/") else replace(route, path=prefix + route.path)
        for route in entry.routes
    ]
    return replace(entry, routes=routes)


def _entries(name: str, loaded: Any) -> list[tuple[str, Any]]:
    if callable(loaded) and not isinstance(loaded, ApiEntry):
        loaded = loaded()
    if isinstance(loaded, Mapping):
        return list(loaded.items())
    return [(name, loaded)]


def _reason(exc: BaseException) -> str:
    return " ".join(f"{type(exc).__name__}: {exc}".split())[:300]


def _package(entry_point: EntryPoint) -> str:
    return entry_point.dist.name if entry_point.dist is not None else entry_point.value


def _load_entry_points(catalog: ApiCatalog) -> None:
    found = list(entry_points(group=ENTRY_POINT_GROUP))
    # Distribution.name parses METADATA on each access: read each entry point's package once.
    packages = {id(p): _package(p) for p in found}
    points = sorted(found, key=lambda p: packages[id(p)].lower() != BUILTIN_PACKAGE)
    if not any(packages[id(p)].lower() == BUILTIN_PACKAGE for p in points):
        # A bare source tree (never pip-installed) has no entry points; the built-ins still load.
        log.warning(
            "the underlay package's '%s' entry points are missing; pip install -e . refreshes them", ENTRY_POINT_GROUP
        )
        for name, entry in API_TABLE.items():
            catalog.add(name, entry, BUILTIN_PACKAGE)
    for entry_point in points:
        package = packages[id(entry_point)]
        try:
            for name, entry in _entries(entry_point.name, entry_point.load()):
                catalog.add(name, entry, package)
        except Exception as exc:  # reported when the API is configured; a plugin never takes the server down
            catalog.broken[entry_point.name] = (package, _reason(exc))


def apis_dir_path(config: RunConfig) -> Path | None:
    """``apis_dir`` as a path: relative to the run config's folder (or the working directory)."""
    if not config.apis_dir:
        return None
    path = Path(config.apis_dir).expanduser()
    if not path.is_absolute():
        origin = Path(config.source)
        path = (origin.parent if origin.is_file() else Path.cwd()) / path
    return path


def _load_folder(catalog: ApiCatalog, config: RunConfig) -> None:
    folder = apis_dir_path(config)
    if folder is None:
        return
    if not folder.is_dir():
        raise ConfigError(f"{config.source}: apis_dir: {folder} is not a folder; create it or fix the path")
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))  # the packages import their own modules by absolute name
    for package_dir in sorted(folder.iterdir()):
        if not (package_dir / "__init__.py").is_file():
            continue
        package = f"{package_dir.name} (in {folder})"
        try:
            module = importlib.import_module(package_dir.name)
            apis = getattr(module, "APIS", None)
            if apis is None:
                raise AttributeError("it exports no APIS (an ApiEntry, or a mapping of API names to them)")
            for name, entry in _entries(package_dir.name, apis):
                catalog.add(name, entry, package)
            specs = list(getattr(module, "PROVIDERS", []) or [])
            for spec in specs:
                if not isinstance(spec, ProviderSpec):
                    raise TypeError(f"PROVIDERS holds a {type(spec).__name__}, not a ProviderSpec")
            catalog.providers.extend(specs)
        except Exception as exc:
            catalog.broken[package_dir.name] = (package, _reason(exc))


def discover(config: RunConfig) -> ApiCatalog:
    """Every API the entry points and ``apis_dir`` declare (the built-ins first)."""
    catalog = ApiCatalog()
    _load_entry_points(catalog)
    _load_folder(catalog, config)
    return catalog


def check(config: RunConfig, catalog: ApiCatalog) -> list[str]:
    """The switched-on APIs in build order, or a one-line :class:`ConfigError` naming what is wrong."""
    source = config.source
    for api in config.apis:
        if api in catalog.apis:
            continue
        if api in catalog.broken:
            package, reason = catalog.broken[api]
            raise ConfigError(
                f"{source}: apis: API '{api}' from package {package} failed to load ({reason}); "
                "fix or reinstall that package, or remove the API from apis"
            )
        raise ConfigError(
            f"{source}: apis: unknown API '{api}'; known APIs: {', '.join(sorted(catalog.apis))}"
            + (
                f" (packages that failed to load: {', '.join(sorted(catalog.broken))})"
                if catalog.broken
                else "; an API from a package needs the package installed (its 'underlay.apis' entry point) "
                "or its folder in apis_dir"
            )
        )
    order = api_order(config.apis, catalog.table)
    claimed: dict[tuple[str, str], str] = {("GET", path): "the platform" for path in PLATFORM_ROUTES}
    for api in order:
        found = catalog.apis[api]
        missing = [dep for dep in found.entry.depends_on if dep not in catalog.apis]
        if missing:
            raise ConfigError(
                f"{source}: apis: API '{api}' (package {found.package}) depends on unknown API '{missing[0]}'; "
                "install the package that provides it"
            )
        if api in catalog.duplicates:
            others = ", ".join(catalog.duplicates[api])
            raise ConfigError(
                f"{source}: apis: API '{api}' is declared by both {found.package} and {others}; uninstall one"
            )
        if not _VERSION.match(found.entry.version):
            raise ConfigError(
                f"{source}: apis: API '{api}' (package {found.package}) declares version "
                f"'{found.entry.version[:40]}'; use v<N>, v<N>beta or v<N>alpha (e.g. v1alpha)"
            )
        for route in found.entry.routes:
            if not route.path.startswith(f"/{found.entry.version}/"):
                raise ConfigError(
                    f"{source}: apis: API '{api}' (package {found.package}) has a route path that does not "
                    f"start with '/' ({route.path[:80]!r}); write paths like '/notes'"
                )
            key = (route.method.upper(), route.path)
            owner = f"API '{api}' (package {found.package})"
            if key in claimed:
                raise ConfigError(
                    f"{source}: apis: {key[0]} {key[1]} is claimed by both {claimed[key]} and {owner}; "
                    "switch one of them off"
                )
            claimed[key] = owner
    return order
