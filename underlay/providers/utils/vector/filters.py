"""Attribute filters: the reference semantics in Python, and their translation to SQL.

Every vector backend must answer a filter exactly as :func:`matches` does, whether it evaluates the
filter itself or pushes it into its database. Pushing down matters: a filter evaluated after a top-k
search returns fewer than k results (or none) when the matching chunks are not among the nearest
ones, so backends translate the filter into their own query language and search only inside it.

Semantics (OpenAI's comparison and compound filters over a chunk's flat ``attributes``):

- Values have three types: string, number (``int`` and ``float`` alike; ``1 == 1.0``) and boolean.
  A boolean is never a number, even though Python says ``True == 1``.
- ``eq`` and ``in`` match when the key is present and holds a value of the same type that is equal
  (``in``: equal to any element of the list).
- ``gt``, ``gte``, ``lt`` and ``lte`` compare numbers numerically, strings lexicographically by
  code point (which is also the byte order of their UTF-8, so SQL ``BINARY`` collation agrees) and
  booleans as ``false < true``. Mixed types never match.
- ``ne`` and ``nin`` are the exact negations of ``eq`` and ``in``; so a missing key, or a value of
  another type, matches them. A missing key never matches any other operator.
- ``and`` of no filters matches everything, ``or`` of no filters matches nothing.
- ``in`` and ``nin`` need a list (an empty ``in`` matches nothing); the other operators need a
  single value. Anything else is an :class:`InvalidRequestError` naming ``filters``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from underlay.api.errors import InvalidRequestError
from underlay.api.vector_io import AttributeValue, ComparisonFilter, CompoundFilter, Filter

_ORDERING = {"gt", "gte", "lt", "lte"}
_LIST_OPS = {"in", "nin"}

# One scalar type per attribute value; ``bool`` first because ``bool`` is a subclass of ``int``.
_STRING, _NUMBER, _BOOL = "string", "number", "boolean"


def value_kind(value: object) -> str | None:
    """The filter type of a value: ``"string"``, ``"number"``, ``"boolean"``, or None if unusable."""
    if isinstance(value, bool):
        return _BOOL
    if isinstance(value, int | float):
        return _NUMBER
    if isinstance(value, str):
        return _STRING
    return None


def validate_filter(flt: Filter, *, param: str = "filters") -> None:
    """Reject filters no backend can answer consistently, naming where the problem is."""
    _validate(flt, param)


def _validate(flt: Filter, path: str) -> None:
    if isinstance(flt, CompoundFilter):
        for i, sub in enumerate(flt.filters):
            _validate(sub, f"{path}.filters[{i}]")
        return
    values = flt.value if isinstance(flt.value, list) else [flt.value]
    if flt.type in _LIST_OPS:
        if not isinstance(flt.value, list):
            raise InvalidRequestError(f"Filter '{flt.type}' on '{flt.key}' needs a list of values.", param=path)
    elif isinstance(flt.value, list):
        raise InvalidRequestError(f"Filter '{flt.type}' on '{flt.key}' needs a single value, not a list.", param=path)
    for value in values:
        if value_kind(value) is None:
            raise InvalidRequestError(
                f"Filter on '{flt.key}' has a value of type {type(value).__name__}; use a string, number or boolean.",
                param=path,
            )
        if isinstance(value, float) and value != value:
            raise InvalidRequestError(f"Filter on '{flt.key}' compares with NaN, which matches nothing.", param=path)


# ---------------------------------------------------------------------------------------------------
# Reference evaluation
# ---------------------------------------------------------------------------------------------------


def _equal(actual: object, expected: AttributeValue) -> bool:
    kind = value_kind(actual)
    return kind is not None and kind == value_kind(expected) and actual == expected


def _compare(op: str, actual: object, expected: AttributeValue) -> bool:
    kind = value_kind(actual)
    if kind is None or kind != value_kind(expected):
        return False
    a: Any = actual
    b: Any = expected
    if op == "gt":
        return bool(a > b)
    if op == "gte":
        return bool(a >= b)
    if op == "lt":
        return bool(a < b)
    return bool(a <= b)


def matches(flt: Filter | None, attributes: Mapping[str, object]) -> bool:
    """Whether ``attributes`` satisfy ``flt`` (None matches everything). The reference semantics."""
    if flt is None:
        return True
    if isinstance(flt, CompoundFilter):
        if flt.type == "and":
            return all(matches(sub, attributes) for sub in flt.filters)
        return any(matches(sub, attributes) for sub in flt.filters)
    present = flt.key in attributes
    actual = attributes.get(flt.key)
    if flt.type in ("eq", "ne"):
        hit = present and not isinstance(flt.value, list) and _equal(actual, flt.value)
        return hit if flt.type == "eq" else not hit
    if flt.type in _LIST_OPS:
        values = flt.value if isinstance(flt.value, list) else [flt.value]
        hit = present and any(_equal(actual, v) for v in values)
        return hit if flt.type == "in" else not hit
    if isinstance(flt.value, list) or not present:
        return False
    return _compare(flt.type, actual, flt.value)


# ---------------------------------------------------------------------------------------------------
# SQLite: a JSON object in a TEXT column
# ---------------------------------------------------------------------------------------------------

# ``json_each`` rather than ``json_extract(col, '$.key')``: a JSON path cannot quote every key (a key
# holding '"' or '.' breaks it), while ``json_each.key = ?`` binds the key as a plain parameter. It
# measured no slower. ``json_each.type`` tells the three value types apart, and ``json_each.value``
# of a boolean is 0 or 1, so booleans compare as integers once their type has been checked.
_SQLITE_TYPES = {
    _STRING: "j.type = 'text'",
    _NUMBER: "j.type IN ('integer', 'real')",
    _BOOL: "j.type IN ('true', 'false')",
}
_SQL_OPS = {"eq": "=", "gt": ">", "gte": ">=", "lt": "<", "lte": "<="}


def _sqlite_param(value: AttributeValue) -> Any:
    return int(value) if isinstance(value, bool) else value


def to_sqlite_where(flt: Filter | None, *, column: str = "attributes") -> tuple[str, list[Any]]:
    """A parameterized SQLite boolean expression (``?`` placeholders) equivalent to :func:`matches`.

    ``column`` is the (trusted, possibly table-qualified) column holding the attributes as a JSON
    object. None gives ``1`` (true), so callers can always write ``WHERE <expr>``.
    """
    if flt is None:
        return "1", []
    validate_filter(flt)
    params: list[Any] = []
    sql = _sqlite_expr(flt, column, params)
    return sql, params


def _sqlite_expr(flt: Filter, column: str, params: list[Any]) -> str:
    if isinstance(flt, CompoundFilter):
        if not flt.filters:
            return "1" if flt.type == "and" else "0"
        joiner = " AND " if flt.type == "and" else " OR "
        return "(" + joiner.join(_sqlite_expr(sub, column, params) for sub in flt.filters) + ")"
    if flt.type in ("eq", "ne", "in", "nin"):
        values = flt.value if isinstance(flt.value, list) else [flt.value]
        hit = _sqlite_any_equal(flt.key, values, column, params)
        return hit if flt.type in ("eq", "in") else f"NOT {hit}"
    assert not isinstance(flt.value, list)  # validate_filter guarantees it
    kind = value_kind(flt.value)
    assert kind is not None
    params.extend([flt.key, _sqlite_param(flt.value)])
    return (
        f"EXISTS (SELECT 1 FROM json_each({column}) AS j WHERE j.key = ? AND {_SQLITE_TYPES[kind]} "
        f"AND j.value {_SQL_OPS[flt.type]} ?)"
    )


def _sqlite_any_equal(key: str, values: list[AttributeValue], column: str, params: list[Any]) -> str:
    """``EXISTS`` the key holding a value equal (in type and value) to one of ``values``."""
    by_kind: dict[str, list[AttributeValue]] = {}
    for value in values:
        kind = value_kind(value)
        assert kind is not None
        by_kind.setdefault(kind, []).append(value)
    if not by_kind:
        return "0"
    params.append(key)
    terms = []
    for kind, group in by_kind.items():
        marks = ", ".join("?" for _ in group)
        params.extend(_sqlite_param(v) for v in group)
        terms.append(f"({_SQLITE_TYPES[kind]} AND j.value IN ({marks}))")
    return f"EXISTS (SELECT 1 FROM json_each({column}) AS j WHERE j.key = ? AND ({' OR '.join(terms)}))"


# ---------------------------------------------------------------------------------------------------
# PostgreSQL: a jsonb column
# ---------------------------------------------------------------------------------------------------

# ``jsonb_typeof`` separates the three types ('string', 'number', 'boolean'); the cast of the text
# value runs inside CASE so it only ever sees values of the right type (PostgreSQL may evaluate AND
# operands in any order, and ``'abc'::numeric`` would raise). String ordering uses the "C" collation,
# which orders UTF-8 by code point like Python and SQLite; the database default may be linguistic.
_PG_CASTS = {_STRING: "text", _NUMBER: "numeric", _BOOL: "boolean"}


def _pg_param(value: AttributeValue) -> Any:
    # Numbers are bound as text and cast in SQL: asyncpg encodes a ``numeric`` parameter only from
    # Decimal-like values, and text keeps ints exact (no detour through float8).
    if value_kind(value) == _NUMBER:
        return repr(value) if isinstance(value, float) else str(value)
    return value


def to_postgres_where(flt: Filter | None, *, column: str = "attributes", first_param: int = 1) -> tuple[str, list[Any]]:
    """A parameterized PostgreSQL boolean expression (``$n`` placeholders from ``first_param``).

    ``column`` is the (trusted) jsonb column holding the attributes. Parameters are plain Python
    values, ready for asyncpg: keys and strings as ``str``, numbers as their decimal text (cast to
    ``numeric`` in the SQL), booleans as ``bool``. None gives ``TRUE``.
    """
    if flt is None:
        return "TRUE", []
    validate_filter(flt)
    params: list[Any] = []
    sql = _pg_expr(flt, column, params, first_param)
    return sql, params


def _pg_placeholder(params: list[Any], value: Any, first_param: int) -> str:
    params.append(value)
    return f"${first_param + len(params) - 1}"


def _pg_expr(flt: Filter, column: str, params: list[Any], first: int) -> str:
    if isinstance(flt, CompoundFilter):
        if not flt.filters:
            return "TRUE" if flt.type == "and" else "FALSE"
        joiner = " AND " if flt.type == "and" else " OR "
        return "(" + joiner.join(_pg_expr(sub, column, params, first) for sub in flt.filters) + ")"
    if flt.type in ("eq", "ne", "in", "nin"):
        values = flt.value if isinstance(flt.value, list) else [flt.value]
        by_kind: dict[str, list[AttributeValue]] = {}
        for value in values:
            kind = value_kind(value)
            assert kind is not None
            by_kind.setdefault(kind, []).append(value)
        if not by_kind:  # an empty list: no parameters, or PostgreSQL cannot type the unused key
            return "FALSE" if flt.type == "in" else "TRUE"
        key = _pg_placeholder(params, flt.key, first)
        field = f"({column} -> {key}::text)"
        terms = []
        for kind, group in by_kind.items():
            cast = _PG_CASTS[kind]
            arr = _pg_placeholder(params, [_pg_param(v) for v in group], first)
            array = f"{arr}::text[]::numeric[]" if kind == _NUMBER else f"{arr}::{cast}[]"
            terms.append(f"WHEN '{_pg_type(kind)}' THEN ({column} ->> {key}::text)::{cast} = ANY({array})")
        hit = f"COALESCE(CASE jsonb_typeof({field}) {' '.join(terms)} ELSE FALSE END, FALSE)"
        return hit if flt.type in ("eq", "in") else f"NOT {hit}"
    assert not isinstance(flt.value, list)
    kind = value_kind(flt.value)
    assert kind is not None
    cast = _PG_CASTS[kind]
    key = _pg_placeholder(params, flt.key, first)
    field = f"({column} -> {key}::text)"
    value = _pg_placeholder(params, _pg_param(flt.value), first)
    bound = f"{value}::text::{cast}" if kind == _NUMBER else f"{value}::{cast}"
    if kind == _STRING:
        bound += ' COLLATE "C"'  # code-point order, whatever the database's default collation
    return (
        f"COALESCE(CASE WHEN jsonb_typeof({field}) = '{_pg_type(kind)}' "
        f"THEN ({column} ->> {key}::text)::{cast} {_SQL_OPS[flt.type]} {bound} ELSE FALSE END, FALSE)"
    )


def _pg_type(kind: str) -> str:
    return {_STRING: "string", _NUMBER: "number", _BOOL: "boolean"}[kind]


__all__ = [
    "ComparisonFilter",
    "CompoundFilter",
    "Filter",
    "matches",
    "to_postgres_where",
    "to_sqlite_where",
    "validate_filter",
    "value_kind",
]
