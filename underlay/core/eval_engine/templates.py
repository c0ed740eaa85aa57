"""``{{item.x}}`` / ``{{sample.output_text}}`` references in eval templates, rendered per row.

Why our own tiny renderer and not a template engine: the syntax OpenAI's evals use is only dotted look-ups
in two namespaces, and a general engine would let a client's template run loops or filters on the server.
A reference that names nothing in the row is the row's error (it names the reference), never an empty
string that would quietly pass a ``ne`` check.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

REFERENCE = re.compile(r"\{\{\s*([A-Za-z_][\w-]*(?:\.[\w-]+)*)\s*\}\}")


class TemplateError(ValueError):
    """A reference the row does not have, or a namespace that does not exist."""


def lookup(namespaces: Mapping[str, Any], path: str) -> Any:
    """The value at a dotted ``path`` (``item.answer``, ``item.list.0``); :class:`TemplateError` if absent."""
    head, *rest = path.split(".")
    if head not in namespaces or namespaces[head] is None:
        known = ", ".join(sorted(k for k, v in namespaces.items() if v is not None))
        raise TemplateError(f"{{{{{path}}}}}: there is no '{head}' namespace here (available: {known or 'none'})")
    value: Any = namespaces[head]
    for key in rest:
        if isinstance(value, Mapping) and key in value:
            value = value[key]
        elif isinstance(value, list) and key.isdigit() and int(key) < len(value):
            value = value[int(key)]
        else:
            raise TemplateError(f"{{{{{path}}}}}: the row has no '{key}' there")
    return value


def as_text(value: Any) -> str:
    """Strings as they are; anything else as compact JSON (so a number or an object still compares)."""
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def render(template: str, namespaces: Mapping[str, Any]) -> str:
    """Replace every ``{{ns.path}}`` in ``template`` with the value from ``namespaces`` as text."""
    return REFERENCE.sub(lambda m: as_text(lookup(namespaces, m.group(1))), template)


def references(template: str) -> list[str]:
    """The dotted paths ``template`` refers to, in order (for checks before a run starts)."""
    return [m.group(1) for m in REFERENCE.finditer(template)]
