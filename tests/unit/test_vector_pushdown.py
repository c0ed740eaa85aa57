"""The typed filter plan (``pushdown``) means exactly what the reference semantics mean.

Backends translate the plan node by node, so the plan itself must agree with ``filters.matches`` on
typed attributes; this evaluates it in Python over generated attributes and filters (the generator
of the filter unit tests: awkward keys, mixed types, ints vs floats, empty lists, nesting).
"""

from __future__ import annotations

import random
from typing import Any

import pytest

from tests.unit.test_vector_filters import CASES, DOC, random_attributes, random_filter
from underlay.api.vector_io import ComparisonFilter, CompoundFilter
from underlay.providers.utils.vector.filters import matches, value_kind
from underlay.providers.utils.vector.pushdown import (
    FALSE,
    TRUE,
    AllOf,
    AnyOf,
    Constant,
    Match,
    Node,
    Range,
    has_string_range,
    plan,
    typed_attributes,
    typed_key,
)


def evaluate(node: Node, typed: dict[str, Any]) -> bool:
    """How a store answers a plan: a missing typed key never equals or orders, so negations match it."""
    if isinstance(node, Constant):
        return node.value
    if isinstance(node, AllOf):
        return all(evaluate(part, typed) for part in node.parts)
    if isinstance(node, AnyOf):
        return any(evaluate(part, typed) for part in node.parts)
    value = typed.get(node.field)
    present = node.field in typed and value_kind(value) == node.kind
    if isinstance(node, Match):
        hit = present and any(value == v for v in node.values)
        return not hit if node.negate else hit
    assert isinstance(node, Range)
    if not present:
        return False
    return {"gt": value > node.value, "gte": value >= node.value, "lt": value < node.value, "lte": value <= node.value}[
        node.op
    ]


def assert_well_formed(node: Node, root: bool = True) -> None:
    """Constants only at the root; compounds have at least two parts and never nest their own kind."""
    if isinstance(node, Constant):
        assert root
    elif isinstance(node, AllOf | AnyOf):
        assert len(node.parts) >= 2
        for part in node.parts:
            assert not isinstance(part, type(node))
            assert_well_formed(part, root=False)
    elif isinstance(node, Match):
        assert node.values and all(value_kind(v) == node.kind for v in node.values)


@pytest.mark.parametrize(("flt", "expected"), CASES, ids=[str(i) for i in range(len(CASES))])
def test_plan_agrees_on_cases(flt: Any, expected: bool) -> None:
    node = plan(flt)
    assert_well_formed(node)
    assert evaluate(node, typed_attributes(DOC)) is expected


def test_plan_agrees_on_generated_filters() -> None:
    rng = random.Random(7)
    rows = [random_attributes(rng) for _ in range(200)]
    typed_rows = [typed_attributes(row) for row in rows]
    for _ in range(400):
        flt = random_filter(rng)
        node = plan(flt)
        assert_well_formed(node)
        for row, typed in zip(rows, typed_rows, strict=True):
            assert evaluate(node, typed) is matches(flt, row), (flt.model_dump(), row)


def test_constants_and_simplification() -> None:
    assert plan(None) == TRUE
    assert plan(CompoundFilter(type="and", filters=[])) == TRUE
    assert plan(CompoundFilter(type="or", filters=[])) == FALSE
    assert plan(ComparisonFilter(type="in", key="k", value=[])) == FALSE
    assert plan(ComparisonFilter(type="nin", key="k", value=[])) == TRUE
    assert plan(ComparisonFilter(type="gt", key="k", value=True)) == FALSE
    assert plan(ComparisonFilter(type="gte", key="k", value=False)) == Match(
        typed_key("boolean", "k"), "boolean", (False, True)
    )
    # One clause is the clause; an "in" over two types is one match per type.
    single = CompoundFilter(type="and", filters=[ComparisonFilter(type="eq", key="k", value="v")])
    assert plan(single) == Match(typed_key("string", "k"), "string", ("v",))
    mixed = plan(ComparisonFilter(type="in", key="k", value=[1, "1", 1.0]))
    assert isinstance(mixed, AnyOf) and {part.kind for part in mixed.parts} == {"number", "string"}  # type: ignore[union-attr]


def test_typed_keys_are_safe_and_distinct() -> None:
    keys = {typed_key(kind, key) for kind in ("string", "number", "boolean") for key in ("a", "A", 'q"."', "ü", "")}
    assert len(keys) == 15
    assert all(key.replace("_", "").isalnum() and key.isascii() for key in keys)
    assert typed_attributes({"n": 1, "f": 2.5, "b": True}, numbers_as_float=True) == {
        typed_key("number", "n"): 1.0,
        typed_key("number", "f"): 2.5,
        typed_key("boolean", "b"): True,
    }


def test_string_ranges_are_flagged() -> None:
    assert has_string_range(plan(ComparisonFilter(type="gt", key="k", value="m")))
    assert not has_string_range(plan(ComparisonFilter(type="gt", key="k", value=3)))
