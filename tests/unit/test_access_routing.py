"""Routing tables (shields, tool groups, models) apply the policy: filtered lists, 404 if hidden, 403 on writes.

In process, over a real SQLite KV store; the principal is set the way the auth layer sets it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from underlay.api.errors import ForbiddenError, NotFoundError
from underlay.api.models import Model
from underlay.api.safety import Shield
from underlay.api.tool_runtime import ToolGroup
from underlay.core.access import set_active_policy
from underlay.core.access.config import AccessPolicyConfig
from underlay.core.identity import Principal, principal_var
from underlay.core.routing.models import ModelsRoutingTable
from underlay.core.routing.shields import ShieldsRoutingTable
from underlay.core.routing.tool_groups import ToolGroupsRoutingTable
from underlay.core.storage.kvstore import kvstore_from_config

SAFETY_OFFICER = Principal("sam", {"roles": ["safety"]})
USER = Principal("una", {"roles": ["user"], "teams": ["team-a"]})
TEAMMATE = Principal("tim", {"teams": ["team-a"]})


@contextmanager
def acting_as(principal: Principal) -> Iterator[None]:
    token = principal_var.set(principal)
    try:
        yield
    finally:
        principal_var.reset(token)


@pytest.fixture
async def kvstore(tmp_path: Path) -> AsyncIterator[Any]:
    store = await kvstore_from_config({"type": "sqlite", "path": str(tmp_path / "kv.db")})
    yield store
    await store.close()


@pytest.fixture(autouse=True)
def policy() -> Iterator[None]:
    set_active_policy(
        AccessPolicyConfig.model_validate(
            {
                "rules": [
                    {
                        "effect": "forbid",
                        "resources": ["shield"],
                        "ids": ["internal-*"],
                        "unless": ["user with safety in roles"],
                    },
                    {"effect": "permit", "resources": ["shield"], "when": ["user with safety in roles"]},
                    {"effect": "permit", "actions": ["read"], "resources": ["shield", "model"]},
                    {
                        "effect": "permit",
                        "actions": ["read"],
                        "resources": ["tool_group"],
                        "when": ["resource is unowned"],
                    },
                    {"effect": "permit", "when": ["user is owner"]},
                ]
            }
        )
    )
    yield
    set_active_policy(None)


class _Provider:
    serves_mcp = True

    def builtin_tool_groups(self) -> list[ToolGroup]:
        return [ToolGroup(identifier="builtin::rag", provider_id="p")]


async def test_shields_are_listed_got_and_deleted_by_policy(kvstore: Any) -> None:
    table = ShieldsRoutingTable(kvstore, {"p": object()})
    await table.initialize(
        [
            Shield(identifier="internal-pii", provider_id="p", provider_resource_id="pii"),
            Shield(identifier="public-code", provider_id="p", provider_resource_id="code"),
        ]
    )
    with acting_as(USER):
        assert [s.identifier for s in await table.list()] == ["public-code"]
        with pytest.raises(NotFoundError) as hidden:
            await table.get("internal-pii")
        with pytest.raises(NotFoundError) as missing:
            await table.get("internal-none")
        assert str(hidden.value).replace("internal-pii", "X") == str(missing.value).replace("internal-none", "X")
        with pytest.raises(ForbiddenError):
            await table.unregister("public-code")  # visible, but only safety officers delete
        with pytest.raises(ForbiddenError):
            await table.register(Shield(identifier="mine", provider_id="p", provider_resource_id="x"))
    with acting_as(SAFETY_OFFICER):
        assert [s.identifier for s in await table.list()] == ["internal-pii", "public-code"]
        await table.unregister("internal-pii")
        assert [s.identifier for s in await table.list()] == ["public-code"]


async def test_registered_tool_groups_follow_ownership(kvstore: Any) -> None:
    table = ToolGroupsRoutingTable(kvstore, {"p": _Provider()})
    await table.initialize([])
    with acting_as(USER):
        await table.register(ToolGroup(identifier="una-tools", provider_id="p", owner="una"))
        assert [g.identifier for g in await table.list()] == ["builtin::rag", "una-tools"]
    with acting_as(TEAMMATE):  # shared (unowned) groups only; this policy shares nothing by team
        assert [g.identifier for g in await table.list()] == ["builtin::rag"]
        with pytest.raises(NotFoundError):
            await table.get("una-tools")
        with pytest.raises(NotFoundError):
            await table.unregister("una-tools")
    with acting_as(USER):
        await table.unregister("una-tools")


async def test_models_are_read_by_all_and_changed_by_none(kvstore: Any) -> None:
    table = ModelsRoutingTable(kvstore, {})
    table.providers = {"p": object()}
    await table.initialize([])
    with acting_as(SAFETY_OFFICER):
        with pytest.raises(ForbiddenError):  # the policy permits no one to create models
            await table.register(Model(identifier="m", provider_id="p", provider_resource_id="m"))
    await table._put(Model(identifier="m", provider_id="p", provider_resource_id="m", source="config"))
    with acting_as(USER):
        assert [m.identifier for m in await table.list()] == ["m"]
        assert (await table.get("m")).identifier == "m"
        with pytest.raises(ForbiddenError):
            await table.unregister("m")
