"""The access policy as logic: parsing, first-match-wins decisions, route rules, predicate folding."""

from __future__ import annotations

from typing import Any

import pytest

from underlay.api.errors import ForbiddenError, NotFoundError
from underlay.core.access import AccessPolicy, Resource, require, require_create, rows_where, set_active_policy
from underlay.core.access.config import AccessPolicyConfig
from underlay.core.config import ConfigError, parse_run_config
from underlay.core.identity import ANONYMOUS, Principal, principal_var
from underlay.core.storage.sqlstore import Condition, ConditionGroup, Where

ALICE = Principal("alice", {"teams": ["team-a"], "roles": ["admin"]})
ALEX = Principal("alex", {"teams": ["team-a", "team-x"]})
BOB = Principal("bob", {"teams": "team-b"})  # a scalar attribute counts as a one-value list


def policy(rules: list[dict[str, Any]] | None = None, routes: list[dict[str, Any]] | None = None) -> AccessPolicy:
    data: dict[str, Any] = {"routes": routes or []}
    if rules is not None:
        data["rules"] = rules
    return AccessPolicy(AccessPolicyConfig.model_validate(data))


def owned(kind: str, rid: str, by: Principal) -> Resource:
    return Resource(kind, rid, owner=by.id, owner_attributes=by.attributes)


# ---- configuration errors -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("access_policy", "expected"),
    [
        ({"rules": [{"effect": "permit", "when": ["user is ownr"]}]}, "access_policy.rules[0].when: "),
        ({"rules": [{"effect": "allow"}]}, "access_policy.rules[0].effect: "),
        ({"rules": [{"effect": "permit", "resources": ["modle"]}]}, "unknown resource type 'modle'"),
        ({"rules": [{"effect": "permit", "actions": ["use"]}]}, "access_policy.rules[0].actions[0]"),
        ({"routes": [{"effect": "forbid", "path": "/v1/*", "when": ["user is owner"]}]}, "route rules see no resource"),
        ({"routes": [{"effect": "forbid", "path": "v1/models"}]}, "must start with '/'"),
        ({"routes": [{"effect": "forbid", "path": "/v1", "methods": ["FETCH"]}]}, "unknown HTTP method 'FETCH'"),
        ({"rules": [{"effect": "permit", "whom": ["x"]}]}, "unknown key 'whom'"),
        ({"rules": [{"effect": "permit", "ids": ["m[0-9]"]}]}, "only '*' and '?' are wildcards"),
    ],
)
def test_invalid_policies_are_one_line_config_errors(access_policy: dict[str, Any], expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_run_config({"access_policy": access_policy}, source="run.yaml")
    message = str(info.value)
    assert message.startswith("run.yaml: access_policy.")
    assert expected in message
    assert "\n" not in message


def test_condition_syntax_error_lists_the_phrases() -> None:
    with pytest.raises(ConfigError, match="user in owners <attr>"):
        parse_run_config({"access_policy": {"rules": [{"effect": "permit", "when": ["owner is user"]}]}})


# ---- the default policy ---------------------------------------------------------------------------------


def test_default_policy_is_ownership_and_open_registered_resources() -> None:
    default = policy()
    assert not default.configured
    for action in ("read", "update", "delete"):
        assert default.allows(ALICE, action, owned("file", "file-1", ALICE))
        assert not default.allows(BOB, action, owned("file", "file-1", ALICE))
    assert default.allows(BOB, "read", Resource("model", "echo/m"))
    assert default.allows(ANONYMOUS, "delete", Resource("shield", "pii"))
    assert default.allows(ANONYMOUS, "create", owned("response", "", ANONYMOUS))
    # A registered tool group owned by someone is that owner's, as before.
    assert not default.allows(BOB, "read", Resource("tool_group", "mine", owner="alice"))


def test_default_row_filter_is_exactly_the_owner_column() -> None:
    assert policy().row_filter(BOB, "read", "conversation") == [Where.eq("owner_principal", "bob")]


# ---- first match wins -----------------------------------------------------------------------------------


def test_first_matching_rule_decides() -> None:
    rules = [
        {"effect": "forbid", "actions": ["delete"], "resources": ["file"], "unless": ["user with admin in roles"]},
        {"effect": "permit", "when": ["user is owner"]},
    ]
    p = policy(rules)
    assert p.configured
    assert p.allows(ALEX, "read", owned("file", "f", ALEX))
    assert not p.allows(ALEX, "delete", owned("file", "f", ALEX))  # the forbid came first
    assert p.allows(ALICE, "delete", owned("file", "f", ALICE))  # admins are excepted
    assert not p.allows(ALEX, "read", Resource("model", "m"))  # nothing permits it: refused


def test_team_sharing_and_id_globs() -> None:
    p = policy(
        [
            {"effect": "permit", "when": ["user is owner"]},
            {"effect": "permit", "actions": ["read"], "resources": ["vector_store"], "when": ["user in owners teams"]},
            {"effect": "permit", "actions": ["read"], "resources": ["model"], "ids": ["public/*"]},
        ]
    )
    store = owned("vector_store", "vs_1", ALICE)
    assert p.allows(ALEX, "read", store)
    assert not p.allows(ALEX, "update", store)
    assert not p.allows(BOB, "read", store)
    assert not p.allows(ALEX, "read", owned("file", "f", ALICE))  # only vector stores are shared
    assert p.allows(BOB, "read", Resource("model", "public/x"))
    assert not p.allows(BOB, "read", Resource("model", "private/x"))


def test_principal_globs_and_anonymous_conditions() -> None:
    p = policy(
        [
            {"effect": "forbid", "when": ["user is anonymous"]},
            {"effect": "permit", "principals": ["al*"], "resources": ["model"]},
        ]
    )
    assert p.allows(ALEX, "read", Resource("model", "m"))
    assert not p.allows(BOB, "read", Resource("model", "m"))
    assert not p.allows(Principal("anonymous"), "read", Resource("model", "m"))


# ---- routes ---------------------------------------------------------------------------------------------


def test_route_rules_match_method_and_path_in_order() -> None:
    p = policy(
        routes=[
            {"effect": "permit", "path": "/v1/models*", "methods": ["GET"]},
            {"effect": "forbid", "path": "/v1/models*", "unless": ["user with admin in roles"]},
        ]
    )
    assert p.route_decision(BOB, "GET", "/v1/models") is not None
    assert p.route_decision(BOB, "GET", "/v1/models").effect == "permit"  # type: ignore[union-attr]
    assert p.route_decision(BOB, "POST", "/v1/models").effect == "forbid"  # type: ignore[union-attr]
    assert p.route_decision(ALICE, "POST", "/v1/models") is None  # the forbid does not apply to admins
    assert p.route_decision(BOB, "POST", "/v1/files") is None


# ---- predicates -----------------------------------------------------------------------------------------


def test_predicates_fold_rules_in_order() -> None:
    p = policy(
        [
            {"effect": "forbid", "actions": ["read"], "ids": ["secret-*"]},
            {"effect": "permit", "when": ["user is owner"]},
            {"effect": "permit", "when": ["user with admin in roles"]},  # every row for admins
            {"effect": "permit", "when": ["user in owners teams"]},  # shadowed for admins
        ]
    )
    admin = p.row_predicate(ALICE, "read", "file")
    assert isinstance(admin, ConditionGroup) and admin.combinator == "or"
    # owner (minus secrets), then everything but secrets; folding stopped at the admin rule.
    assert len(admin.conditions) == 2
    bob = p.row_predicate(BOB, "read", "file")
    assert isinstance(bob, ConditionGroup) and len(bob.conditions) == 2  # owner, team; the admin rule is False
    assert p.row_predicate(BOB, "delete", "file") == ConditionGroup(
        "or",
        (
            Where.eq("owner_principal", "bob"),
            Condition("owner_attributes", "json_overlaps", ("teams", ("team-b",))),
        ),
    )


def test_a_principal_without_the_attribute_shares_nothing() -> None:
    p = policy([{"effect": "permit", "when": ["user in owners teams"]}])
    assert p.row_predicate(Principal("loner"), "read", "file") is False
    assert p.row_filter(Principal("loner"), "read", "file") == [Where.in_("owner_principal", [])]


def test_id_globs_become_escaped_like_patterns() -> None:
    p = policy([{"effect": "permit", "ids": ["a_b*", "exact"]}])
    assert p.row_predicate(BOB, "read", "file", id_column="vector_store_id") == ConditionGroup(
        "or", (Where.like("vector_store_id", "a\\_b%"), Where.eq("vector_store_id", "exact"))
    )


# ---- enforcement helpers --------------------------------------------------------------------------------


def test_require_gives_404_when_hidden_and_403_when_only_readable() -> None:
    active = set_active_policy(
        AccessPolicyConfig.model_validate(
            {
                "rules": [
                    {"effect": "permit", "actions": ["read"], "resources": ["model"], "when": ["user in owners teams"]},
                    {"effect": "permit", "when": ["user is owner"]},
                ]
            }
        )
    )
    token = principal_var.set(ALEX)
    try:
        assert active.configured
        mine_by_team = owned("model", "m", ALICE)
        require("read", mine_by_team, NotFoundError("Model", "m"))
        with pytest.raises(ForbiddenError, match="does not let 'alex' delete model 'm'"):
            require("delete", mine_by_team, NotFoundError("Model", "m"))
        with pytest.raises(NotFoundError):
            require("delete", owned("model", "m", BOB), NotFoundError("Model", "m"))
        require_create("file", "file-1")  # owned by the caller, so "user is owner" holds
        with pytest.raises(ForbiddenError):
            require_create("model", "m", owner=None)
        assert rows_where("file", "read", Where.eq("id", "x")) == [
            Where.eq("id", "x"),
            Where.eq("owner_principal", "alex"),
        ]
    finally:
        principal_var.reset(token)
        set_active_policy(None)


def test_every_policy_in_the_docs_is_valid() -> None:
    import re
    from pathlib import Path

    import yaml

    doc = (Path(__file__).parents[2] / "docs" / "access-control.md").read_text()
    blocks = [b for b in re.findall(r"```yaml\n(.*?)```", doc, re.S) if "access_policy:" in b]
    assert len(blocks) >= 4
    env = {name: "0" * 64 for name in ("ALICE_SHA", "ALEX_SHA", "BOB_SHA", "ROOT_SHA")}
    for block in blocks:
        data = yaml.safe_load(block)
        config = parse_run_config(data, source="docs/access-control.md", env=env)
        AccessPolicy(config.access_policy)  # compiles
