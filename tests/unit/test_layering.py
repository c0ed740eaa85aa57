"""The layer rules of DESIGN.md §1, read from the source with ``ast`` so a wrong import fails here, not in review.

- ``underlay.api`` (the contract) imports nothing of ours outside itself: a third-party provider depends
  on it alone.
- ``underlay.shared`` (helpers both sides need) imports only the contract.
- A provider imports the contract, ``underlay.shared``, ``underlay.providers.utils`` and its own package
  (``underlay.providers.<inline|remote>.<api>.<name>`` plus the ``<api>`` package that declares its spec,
  or in the backend layout the whole ``underlay.providers.<api>.<backend>`` package).
- ``underlay.core`` never imports a provider (it finds them by spec, through the ``underlay.providers``
  entry points) nor a front door (server, CLI, client).

Every import counts, including those inside functions and under ``TYPE_CHECKING``. A violation that has
to stay for a while is named in ``KNOWN`` with the reason (none today); any other fails the test, and
so does an entry of ``KNOWN`` that no longer occurs (so the list only shrinks).
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "underlay"

# (importing module, imported module): why it is still allowed. Empty since the last cross-provider
# imports moved into backend packages (``providers/<api>/<backend>/``); keep it that way.
KNOWN: dict[tuple[str, str], str] = {}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(source: str, module: str, is_package: bool) -> set[str]:
    """Every ``underlay`` module that ``source`` (the text of ``module``) imports, relative imports resolved."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".") if is_package else module.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.add(target)
            # ``from underlay.core import stack`` imports a module, not just a name: count it.
            found.update(f"{target}.{alias.name}" for alias in node.names if is_module(f"{target}.{alias.name}"))
    return {name for name in found if name == "underlay" or name.startswith("underlay.")}


def is_module(name: str) -> bool:
    path = PACKAGE.parent.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def within(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def provider_roots() -> set[str]:
    """The package (or module) of each built-in provider: where its spec's factory lives."""
    from underlay.core.registry import available_providers

    roots = set()
    for spec in available_providers().values():
        name = spec.factory.partition(":")[0]
        parts = name.split(".")
        if not within(name, "underlay.providers"):
            continue  # a third-party provider installed here
        # ``providers/<api>/<backend>/``: the whole backend package is one provider's home.
        roots.add(name if parts[2] in ("inline", "remote") else ".".join(parts[:4]))
    return roots


def provider_home(module: str, roots: set[str]) -> tuple[str, ...]:
    """What a provider module may import besides the shared layers: its own provider and its API package."""
    owners = [root for root in roots if within(module, root)]
    if not owners:
        return ()
    parts = module.split(".")
    return (max(owners, key=len), ".".join(parts[:4]))


def violation(module: str, imported: str, roots: set[str]) -> str | None:
    """Why ``module`` may not import ``imported``, or None when the layer rules allow it."""
    if imported == "underlay":  # the root package holds only ``__version__``
        return None
    if within(module, "underlay.api"):
        return None if within(imported, "underlay.api") else "the contract imports only itself"
    if within(module, "underlay.shared"):
        if within(imported, "underlay.api") or within(imported, "underlay.shared"):
            return None
        return "underlay.shared imports only the contract"
    if within(module, "underlay.providers"):
        allowed = ("underlay.api", "underlay.shared", "underlay.providers.utils")
        if any(within(imported, package) for package in allowed):
            return None
        home = provider_home(module, roots)
        if home and (within(imported, home[0]) or imported == home[1]):
            return None
        return "a provider imports only underlay.api, underlay.shared, underlay.providers.utils and its own package"
    if within(module, "underlay.core"):
        if within(imported, "underlay.providers"):
            return "core finds providers by spec (entry points), never by import"
        for door in ("underlay.server", "underlay.cli", "underlay.client", "underlay.agents"):
            if within(imported, door):
                return "core does not import the front doors"
    return None


def all_imports() -> dict[tuple[str, str], str]:
    pairs: dict[tuple[str, str], str] = {}
    roots = provider_roots()
    for path in sorted(PACKAGE.rglob("*.py")):
        module = module_name(path)
        for imported in imports_of(path.read_text(encoding="utf-8"), module, path.name == "__init__.py"):
            reason = violation(module, imported, roots)
            if reason:
                pairs[(module, imported)] = reason
    return pairs


def test_the_layer_rules_hold_apart_from_the_named_exceptions() -> None:
    found = all_imports()
    new = {f"{module} imports {imported}: {reason}" for (module, imported), reason in found.items()}
    new -= {f"{module} imports {imported}: {found[(module, imported)]}" for module, imported in KNOWN}
    assert not sorted(new), "layer rule broken (DESIGN.md §1):\n" + "\n".join(sorted(new))
    stale = sorted(f"{module} -> {imported}" for module, imported in KNOWN if (module, imported) not in found)
    assert not stale, "these KNOWN exceptions are fixed; remove them from the list: " + ", ".join(stale)


def test_the_checker_sees_each_kind_of_violation() -> None:
    """The rules above are only as good as the checker: each kind of wrong import is caught, wherever it sits."""
    provider = "underlay.providers.remote.inference.example"
    roots = {
        provider,
        "underlay.providers.remote.inference.vllm",
        "underlay.providers.inline.responses",
        "underlay.providers.vector_io.qdrant",
    }
    source = (
        "import underlay.core.config\n"
        "def later():\n"
        "    from underlay.core.telemetry import redact\n"
        "from underlay.core import stack\n"
        "from .vllm import Config\n"
        "from underlay.providers.utils.openai_compat import OpenAICompatAdapter\n"
        "from underlay.api.errors import UpstreamError\n"
    )
    imported = imports_of(source, provider, is_package=False)
    assert {
        "underlay.core.config",
        "underlay.core.telemetry.redact",
        "underlay.core.stack",
        "underlay.providers.remote.inference.vllm",
    } <= imported
    assert "underlay.api.errors.UpstreamError" not in imported  # a name, not a module
    assert violation(provider, "underlay.core.config", roots)
    assert violation(provider, "underlay.core.telemetry.redact", roots)
    assert violation(provider, "underlay.providers.inline.inference.llama_cpp", roots)
    assert (
        violation(provider, "underlay.providers.remote.inference", roots) is None
    )  # its API package declares the spec
    assert violation(provider, "underlay.providers.utils.openai_compat", roots) is None
    assert violation(provider, "underlay.providers.remote.inference.example.helpers", roots) is None
    assert violation(provider, "underlay.providers.remote.inference.vllm", roots)  # a sibling provider
    assert (
        violation("underlay.providers.inline.responses.engine", "underlay.providers.inline.responses.state", roots)
        is None
    )
    assert violation("underlay.api.inference", "underlay.core.config", roots)
    assert violation("underlay.api.inference", "underlay.shared.redact", roots)
    assert violation("underlay.shared.redact", "underlay.core.telemetry", roots)
    assert violation("underlay.core.stack", "underlay.providers.remote.inference.vllm", roots)
    assert violation("underlay.core.stack", "underlay.server.app", roots)
    assert violation("underlay.core.stack", "underlay.shared.redact", roots) is None
    assert violation("underlay.server.app", "underlay.providers.inline.inference.llama_cpp", roots) is None
