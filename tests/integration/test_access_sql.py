"""Policy predicates run inside SQL and agree with the in-memory decision, on SQLite and PostgreSQL.

For each policy, principal and action, the rows a SQL query returns under
:meth:`AccessPolicy.row_filter` must be exactly the rows :meth:`AccessPolicy.allows` admits one by
one. That is the contract that lets stores filter in the query instead of after it.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.base import Executable
from sqlalchemy.sql.elements import ClauseElement

from tests.integration.storage.conftest import pg_database, sql_config  # noqa: F401  (pg_database: a fixture)
from underlay.core.access import AccessPolicy, Resource
from underlay.core.access.config import AccessPolicyConfig
from underlay.core.identity import Principal
from underlay.core.storage.sqlstore import (
    OWNER_COLUMNS,
    ColumnDefinition,
    ColumnType,
    SqlStore,
    _conditions,
    sqlstore_from_config,
)

OWNERS = [
    Principal("alice", {"teams": ["team-a"], "roles": ["admin"]}),
    Principal("alex", {"teams": ["team-a", "team-x"]}),
    Principal("bob", {"teams": "team-b"}),
    Principal("carol", {}),
    Principal("dave", {"teams": ["o'brien", "50%_off"]}),  # values that need careful quoting
]
CALLERS = [*OWNERS, Principal("erin", {"teams": ["team-x"], "roles": ["auditor"]}), Principal("anonymous")]
IDS = ["secret-1", "secret_2", "public-1", "plain", "a%b"]

POLICIES: dict[str, list[dict[str, Any]] | None] = {
    "default": None,
    "team-read": [
        {"effect": "permit", "when": ["user is owner"]},
        {"effect": "permit", "actions": ["read"], "when": ["user in owners teams"]},
    ],
    "forbid-then-permit": [
        {"effect": "forbid", "ids": ["secret*"], "unless": ["user with admin in roles"]},
        {"effect": "permit", "when": ["user is owner"]},
        {"effect": "permit", "actions": ["read"], "when": ["user with auditor in roles"]},
        {"effect": "permit", "actions": ["read", "update"], "when": ["user in owners teams", "user is not owner"]},
    ],
    "negations": [
        {"effect": "permit", "when": ["user not in owners teams"], "unless": ["user is anonymous"]},
        {"effect": "forbid", "when": ["user is owner"]},
        {"effect": "permit", "ids": ["a%b", "p*-?"]},
    ],
    "principal-globs": [
        {"effect": "permit", "principals": ["al*"], "when": ["resource is owned"]},
        {"effect": "permit", "principals": ["bob"], "actions": ["read"]},
    ],
    "nothing": [],
}


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest) -> tuple[str, str | None]:
    # Synchronous: only the PostgreSQL runs pull in (and create) the session's database.
    return request.param, request.getfixturevalue("pg_database") if request.param == "postgres" else None


@pytest.fixture
async def sql(backend: tuple[str, str | None], tmp_path: Path) -> AsyncIterator[SqlStore]:
    store = await sqlstore_from_config(sql_config(backend[0], tmp_path, backend[1]))
    yield store
    await store.close()


async def _rows(sql: SqlStore) -> str:
    table = f"access_{uuid.uuid4().hex[:12]}"
    await sql.create_table(
        table,
        {
            "id": ColumnDefinition(type=ColumnType.STRING, primary_key=True, nullable=False),
            "rid": ColumnType.STRING,  # the id rules look at; several owners share each one
            **OWNER_COLUMNS,
        },
    )
    for owner in OWNERS:
        for rid in IDS:
            await sql.insert(
                table,
                {
                    "id": f"{owner.id}:{rid}",
                    "rid": rid,
                    "owner_principal": owner.id,
                    "owner_attributes": owner.attributes,
                },
            )
    # Rows written before ownership was recorded, or by code that left attributes out.
    for rid in IDS:
        await sql.insert(table, {"id": f"nobody:{rid}", "rid": rid, "owner_principal": None, "owner_attributes": None})
        await sql.insert(table, {"id": f"bare:{rid}", "rid": rid, "owner_principal": "bare", "owner_attributes": None})
    return table


@pytest.mark.parametrize("name", list(POLICIES))
async def test_sql_predicates_match_in_memory_decisions(sql: SqlStore, name: str) -> None:
    rules = POLICIES[name]
    policy = AccessPolicy(AccessPolicyConfig.model_validate({} if rules is None else {"rules": rules}))
    table = await _rows(sql)
    everything = await sql.fetch_all(table)
    checked = 0
    for caller in CALLERS:
        for action in ("read", "update", "delete"):
            expected = {
                row["id"]
                for row in everything
                if policy.allows(
                    caller, action, Resource("file", row["rid"], row["owner_principal"], row["owner_attributes"])
                )
            }
            where = policy.row_filter(caller, action, "file", id_column="rid")
            got = {row["id"] for row in await sql.fetch_all(table, where)}
            assert got == expected, (name, caller.id, action)
            checked += len(expected)
    if rules != []:
        assert checked > 0  # the policy admits something, so the comparison is not vacuous


class _Explain(Executable, ClauseElement):
    """``EXPLAIN <statement>``, with the statement's parameters bound as usual."""

    inherit_cache = False

    def __init__(self, statement: Any) -> None:
        self.statement = statement


@compiles(_Explain)
def _explain(element: _Explain, compiler: Any, **kw: Any) -> str:
    return "EXPLAIN " + compiler.process(element.statement, **kw)


async def test_team_predicate_can_use_the_owner_indexes_on_postgres(pg_database: str, tmp_path: Path) -> None:  # noqa: F811
    """The shape of the SQL matters: containment on the column itself is what the GIN index answers.

    With sequential scans priced out, the plan for "owner, or a teammate" must read both indexes.
    """
    sql = await sqlstore_from_config(sql_config("postgres", tmp_path, pg_database))
    try:
        table_name = await _rows(sql)
        policy = AccessPolicy(AccessPolicyConfig.model_validate({"rules": POLICIES["team-read"]}))
        where = policy.row_filter(OWNERS[1], "read", "file")
        table = await sql._table(table_name, [])
        async with sql._engine.connect() as conn:
            await conn.exec_driver_sql("SET enable_seqscan = off")
            statement = _Explain(select(table).where(*_conditions(table, where)))
            plan = "\n".join(row[0] for row in await conn.execute(statement))
    finally:
        await sql.close()
    assert f"ix_{table_name}_owner_principal" in plan, plan
    assert f"ix_{table_name}_owner_attributes" in plan, plan
