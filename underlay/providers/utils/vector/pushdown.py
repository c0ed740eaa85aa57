"""Filters for stores with their own metadata filters (Milvus, Qdrant, Chroma): a typed plan to translate.

Those stores' filters differ from the reference semantics (``filters.matches``) in ways that change
answers: some compare ``1`` with ``true``, some cannot say "missing key" inside a negation, some
reject an empty ``$in`` or an ``$and`` of one clause. Two devices make a faithful translation simple:

- **Typed keys.** Each attribute is stored a second time under a key that names its type:
  ``s_<hex>`` for strings, ``n_<hex>`` for numbers, ``b_<hex>`` for booleans, where ``<hex>`` is the
  UTF-8 of the attribute name in hex. A comparison with a number looks only at ``n_<hex>``, so a
  value of another type is simply a missing key there, which is exactly the reference rule ("mixed
  types never match"; ``ne`` / ``nin`` match them). Hex also makes any name a safe key in every
  store's syntax (no quotes, dots or brackets to escape).
- **A normalised plan.** :func:`plan` turns a filter into a tree of :class:`Match` (equal to one of
  some values, possibly negated), :class:`Range` and :class:`AllOf` / :class:`AnyOf`, with constants
  folded away: an empty ``in`` is ``FALSE``, ``and`` of nothing is ``TRUE``, a one-clause compound is its
  clause, boolean orderings become matches. A backend translates the few node types that remain;
  where it cannot (Qdrant and Chroma have no ordering on strings) it raises :class:`Unsupported` and
  falls back to the keyword index beside it, which evaluates any filter in SQL (see ``sidecar``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from underlay.api.vector_io import AttributeValue, CompoundFilter, Filter
from underlay.providers.utils.vector.filters import validate_filter, value_kind

Kind = Literal["string", "number", "boolean"]
_PREFIX = {"string": "s", "number": "n", "boolean": "b"}


class Unsupported(Exception):
    """A store cannot express part of a plan natively; the caller falls back to filtering by id."""


def typed_key(kind: str, key: str) -> str:
    """The stored key for attribute ``key`` holding a value of ``kind`` (``s_``/``n_``/``b_`` + hex)."""
    return f"{_PREFIX[kind]}_{key.encode('utf-8').hex()}"


def typed_attributes(
    attributes: Mapping[str, AttributeValue], *, numbers_as_float: bool = False
) -> dict[str, AttributeValue]:
    """Attributes re-keyed by :func:`typed_key`. ``numbers_as_float`` for stores that want one numeric type."""
    typed: dict[str, AttributeValue] = {}
    for key, value in attributes.items():
        kind = value_kind(value)
        if kind is None:
            continue
        if kind == "number" and numbers_as_float:
            value = float(value)
        typed[typed_key(kind, key)] = value
    return typed


@dataclass(frozen=True)
class Match:
    """The typed key holds one of ``values`` (all of ``kind``); ``negate``: it does not (or is missing)."""

    field: str
    kind: Kind
    values: tuple[AttributeValue, ...]
    negate: bool = False


@dataclass(frozen=True)
class Range:
    """The typed key holds a value ``op`` (gt/gte/lt/lte) ``value``; ``kind`` is string or number."""

    field: str
    kind: Kind
    op: Literal["gt", "gte", "lt", "lte"]
    value: AttributeValue


@dataclass(frozen=True)
class AllOf:
    parts: tuple[Node, ...]  # at least two


@dataclass(frozen=True)
class AnyOf:
    parts: tuple[Node, ...]  # at least two


@dataclass(frozen=True)
class Constant:
    value: bool


TRUE = Constant(True)
FALSE = Constant(False)
Node = Match | Range | AllOf | AnyOf | Constant


def plan(flt: Filter | None) -> Node:
    """The normalised plan of a filter (``TRUE`` for None). Only the root can be a :class:`Constant`."""
    if flt is None:
        return TRUE
    validate_filter(flt)
    return _plan(flt)


def _plan(flt: Filter) -> Node:
    if isinstance(flt, CompoundFilter):
        parts = [_plan(sub) for sub in flt.filters]
        return _all(parts) if flt.type == "and" else _any(parts)
    values = flt.value if isinstance(flt.value, list) else [flt.value]
    if flt.type in ("eq", "in", "ne", "nin"):
        negate = flt.type in ("ne", "nin")
        by_kind: dict[str, list[AttributeValue]] = {}
        for value in values:
            kind = value_kind(value)
            assert kind is not None  # validate_filter checked
            group = by_kind.setdefault(kind, [])
            if not any(value_kind(v) == kind and v == value for v in group):
                group.append(value)
        matches: list[Node] = [
            Match(typed_key(kind, flt.key), kind, tuple(group), negate)  # type: ignore[arg-type]
            for kind, group in by_kind.items()
        ]
        # in: any kind matches; nin: no kind matches. An empty list is FALSE for in, TRUE for nin.
        return _all(matches) if negate else _any(matches)
    value = values[0]
    kind = value_kind(value)
    assert kind is not None
    if kind == "boolean":
        return _bool_range(flt.key, flt.type, bool(value))
    return Range(typed_key(kind, flt.key), kind, flt.type, value)  # type: ignore[arg-type]


def _bool_range(key: str, op: str, value: bool) -> Node:
    """Orderings on booleans (false < true) as matches on the finite set of booleans."""
    allowed = [b for b in (False, True) if {"gt": b > value, "gte": b >= value, "lt": b < value, "lte": b <= value}[op]]
    if not allowed:
        return FALSE
    return Match(typed_key("boolean", key), "boolean", tuple(allowed))


def _all(parts: list[Node]) -> Node:
    flat: list[Node] = []
    for part in parts:
        if part == FALSE:
            return FALSE
        if part == TRUE:
            continue
        flat.extend(part.parts if isinstance(part, AllOf) else (part,))
    if not flat:
        return TRUE
    return flat[0] if len(flat) == 1 else AllOf(tuple(flat))


def _any(parts: list[Node]) -> Node:
    flat: list[Node] = []
    for part in parts:
        if part == TRUE:
            return TRUE
        if part == FALSE:
            continue
        flat.extend(part.parts if isinstance(part, AnyOf) else (part,))
    if not flat:
        return FALSE
    return flat[0] if len(flat) == 1 else AnyOf(tuple(flat))


def has_string_range(node: Node) -> bool:
    """Whether the plan orders strings (which Qdrant and Chroma cannot do natively)."""
    if isinstance(node, Range):
        return node.kind == "string"
    if isinstance(node, AllOf | AnyOf):
        return any(has_string_range(part) for part in node.parts)
    return False
