"""Attribute filters: the reference semantics, and the SQLite translation agreeing with it everywhere.

The PostgreSQL translation is checked against a real server in
``tests/integration/vector_io/test_filters_postgres.py``.
"""

from __future__ import annotations

import json
import random
from typing import Any

import pytest

from underlay.api.errors import InvalidRequestError
from underlay.api.vector_io import ComparisonFilter, CompoundFilter, Filter
from underlay.providers.utils.vector.filters import matches, to_postgres_where, to_sqlite_where, validate_filter
from underlay.providers.utils.vector.sqlite import sqlite_driver


def cmp(op: str, key: str, value: Any) -> ComparisonFilter:
    return ComparisonFilter(type=op, key=key, value=value)


def both(*filters: Filter) -> CompoundFilter:
    return CompoundFilter(type="and", filters=list(filters))


def either(*filters: Filter) -> CompoundFilter:
    return CompoundFilter(type="or", filters=list(filters))


DOC = {"s": "mango", "n": 5, "f": 2.5, "b": True, "z": False, "empty": ""}

CASES: list[tuple[Filter, bool]] = [
    # strings
    (cmp("eq", "s", "mango"), True),
    (cmp("eq", "s", "Mango"), False),
    (cmp("ne", "s", "mango"), False),
    (cmp("gt", "s", "lemon"), True),
    (cmp("gt", "s", "mango"), False),
    (cmp("gte", "s", "mango"), True),
    (cmp("lt", "s", "mangoes"), True),  # a prefix sorts first
    (cmp("lte", "s", "Z"), False),  # upper case sorts before lower case (code points)
    (cmp("eq", "empty", ""), True),
    (cmp("in", "s", ["kiwi", "mango"]), True),
    (cmp("nin", "s", ["kiwi", "mango"]), False),
    # numbers: ints and floats are one type
    (cmp("eq", "n", 5), True),
    (cmp("eq", "n", 5.0), True),
    (cmp("gt", "n", 4.99), True),
    (cmp("gte", "f", 2.5), True),
    (cmp("lt", "f", 3), True),
    (cmp("lte", "n", 4), False),
    (cmp("in", "f", [1, 2.5]), True),
    (cmp("nin", "n", [5.0]), False),
    # booleans are not numbers
    (cmp("eq", "b", True), True),
    (cmp("eq", "b", 1), False),
    (cmp("eq", "n", True), False),
    (cmp("ne", "b", 1), True),
    (cmp("in", "z", [0, "false"]), False),
    (cmp("in", "z", [False]), True),
    (cmp("gt", "b", False), True),
    (cmp("lt", "z", True), True),
    (cmp("gt", "b", 0), False),
    # mixed types never match (and so their negations always do)
    (cmp("eq", "n", "5"), False),
    (cmp("ne", "n", "5"), True),
    (cmp("gt", "s", 1), False),
    (cmp("lt", "n", "9"), False),
    (cmp("gte", "b", "a"), False),
    # missing keys match only ne and nin
    (cmp("eq", "missing", "x"), False),
    (cmp("gt", "missing", 0), False),
    (cmp("lte", "missing", 0), False),
    (cmp("in", "missing", ["x"]), False),
    (cmp("ne", "missing", "x"), True),
    (cmp("nin", "missing", ["x"]), True),
    # empty lists
    (cmp("in", "s", []), False),
    (cmp("nin", "s", []), True),
    # compounds
    (both(), True),
    (either(), False),
    (both(cmp("eq", "s", "mango"), cmp("gt", "n", 1)), True),
    (both(cmp("eq", "s", "mango"), cmp("gt", "n", 10)), False),
    (either(cmp("eq", "s", "kiwi"), cmp("gt", "n", 10)), False),
    (
        either(cmp("eq", "s", "kiwi"), both(cmp("eq", "b", True), either(cmp("lt", "f", 0), cmp("eq", "z", False)))),
        True,
    ),
]


@pytest.mark.parametrize(("flt", "expected"), CASES, ids=[str(i) for i in range(len(CASES))])
def test_reference_semantics(flt: Filter, expected: bool) -> None:
    assert matches(flt, DOC) is expected


def test_no_filter_matches_everything() -> None:
    assert matches(None, {}) and matches(None, DOC)
    assert to_sqlite_where(None) == ("1", [])
    assert to_postgres_where(None) == ("TRUE", [])


def test_filters_parse_from_openai_json() -> None:
    from pydantic import TypeAdapter

    raw = {
        "type": "and",
        "filters": [
            {"type": "eq", "key": "author", "value": "ada"},
            {
                "type": "or",
                "filters": [{"type": "gte", "key": "year", "value": 2020}, {"type": "eq", "key": "x", "value": True}],
            },
        ],
    }
    flt = TypeAdapter(Filter).validate_python(raw)
    assert isinstance(flt, CompoundFilter) and isinstance(flt.filters[1], CompoundFilter)
    assert matches(flt, {"author": "ada", "year": 2021}) and not matches(flt, {"author": "ada", "year": 2019})


@pytest.mark.parametrize(
    ("flt", "param"),
    [
        (cmp("eq", "s", ["a"]), "filters"),
        (cmp("gt", "n", [1, 2]), "filters"),
        (cmp("in", "s", "a"), "filters"),
        (cmp("nin", "s", 3), "filters"),
        (cmp("eq", "f", float("nan")), "filters"),
        (both(cmp("eq", "s", "a"), either(cmp("in", "s", "a"))), "filters.filters[1].filters[0]"),
    ],
)
def test_invalid_filters_name_where(flt: Filter, param: str) -> None:
    with pytest.raises(InvalidRequestError) as err:
        validate_filter(flt)
    assert err.value.param == param
    with pytest.raises(InvalidRequestError):
        to_sqlite_where(flt)
    with pytest.raises(InvalidRequestError):
        to_postgres_where(flt)


# ---------------------------------------------------------------------------------------------------
# SQLite translation == reference, on generated data and filters
# ---------------------------------------------------------------------------------------------------

KEYS = ["s", "n", "b", "odd.key", 'quo"te', "$[0]", "ünï"]
STRINGS = ["", "a", "apple", "Apple", "banana", "b", "ünïcode", "10", "true"]
NUMBERS = [-3, 0, 1, 1.0, 2.5, 10, 1e9, -0.5, 2**53 + 1]
BOOLS = [True, False]


def random_value(rng: random.Random) -> Any:
    return rng.choice([rng.choice(STRINGS), rng.choice(NUMBERS), rng.choice(BOOLS)])


def random_attributes(rng: random.Random) -> dict[str, Any]:
    return {key: random_value(rng) for key in KEYS if rng.random() < 0.7}


def random_filter(rng: random.Random, depth: int = 0) -> Filter:
    if depth < 3 and rng.random() < 0.3:
        return CompoundFilter(
            type=rng.choice(["and", "or"]), filters=[random_filter(rng, depth + 1) for _ in range(rng.randint(0, 3))]
        )
    op = rng.choice(["eq", "ne", "gt", "gte", "lt", "lte", "in", "nin"])
    key = rng.choice([*KEYS, "absent"])
    if op in ("in", "nin"):
        return cmp(op, key, [random_value(rng) for _ in range(rng.randint(0, 4))])
    return cmp(op, key, random_value(rng))


@pytest.fixture(scope="module")
def sqlite_rows() -> Any:
    driver = sqlite_driver()
    conn = driver.connect(":memory:")
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, attributes TEXT NOT NULL)")
    rng = random.Random(1)
    rows = [random_attributes(rng) for _ in range(300)]
    conn.executemany("INSERT INTO t (id, attributes) VALUES (?, ?)", [(i, json.dumps(a)) for i, a in enumerate(rows)])
    yield conn, rows
    conn.close()


def sqlite_ids(conn: Any, flt: Filter | None) -> set[int]:
    where, params = to_sqlite_where(flt, column="t.attributes")
    return {row[0] for row in conn.execute(f"SELECT t.id FROM t WHERE {where}", params)}


@pytest.mark.parametrize(("flt", "expected"), CASES, ids=[str(i) for i in range(len(CASES))])
def test_sqlite_agrees_on_cases(flt: Filter, expected: bool) -> None:
    conn = sqlite_driver().connect(":memory:")
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, attributes TEXT NOT NULL)")
    conn.execute("INSERT INTO t VALUES (1, ?)", (json.dumps(DOC),))
    assert (sqlite_ids(conn, flt) == {1}) is expected


def test_sqlite_agrees_on_generated_filters(sqlite_rows: Any) -> None:
    conn, rows = sqlite_rows
    rng = random.Random(2)
    for _ in range(400):
        flt = random_filter(rng)
        want = {i for i, attrs in enumerate(rows) if matches(flt, attrs)}
        assert sqlite_ids(conn, flt) == want, flt.model_dump()


def test_sqlite_keys_are_parameters_not_paths(sqlite_rows: Any) -> None:
    conn, rows = sqlite_rows
    for key in KEYS:
        flt = cmp("ne", key, "x")
        assert sqlite_ids(conn, flt) == {i for i, attrs in enumerate(rows) if matches(flt, attrs)}
    evil = cmp("eq", "s') OR 1=1 --", "a")
    assert sqlite_ids(conn, evil) == set()


def test_postgres_sql_shape() -> None:
    sql, params = to_postgres_where(both(cmp("eq", "a", 1), cmp("gt", "b", "x")), column="attrs", first_param=3)
    assert "$3" in sql and "$6" in sql and "$7" not in sql
    assert params == ["a", ["1"], "b", "x"]
    assert 'COLLATE "C"' in sql
