"""The compiled access policy: decisions for one resource, SQL predicates for tables, route checks.

One policy object answers three questions, all with "first matching rule wins":

- :meth:`AccessPolicy.allows`: may this principal do this action on this one resource (a model, a
  shield, a tool group, or a row already in hand)?
- :meth:`AccessPolicy.row_filter`: which rows of a user-owned table may it act on? The rules become a
  ``where`` filter (``owner_principal = ...``, JSON attribute overlap...), so stores filter inside the
  query and listing never post-filters.
- :meth:`AccessPolicy.route_decision`: is this method and path refused outright?

The process holds one active policy (:func:`active_policy`), set from the run config when the app is
built; until then the built-in default applies, which is today's ownership behaviour.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any

from underlay.core.access.conditions import Condition, Expr, conjunction, disjunction, negate, parse_condition
from underlay.core.access.config import AccessPolicyConfig, AccessRule, RouteRule
from underlay.core.identity import Principal
from underlay.core.storage.sqlstore import Filter, Where

REGISTERED_TYPES = ("model", "shield", "tool_group")
"""Resources kept in routing tables rather than user-owned SQL rows."""

_DENY_ALL: list[Filter] = [Where.in_("owner_principal", [])]


@dataclass(frozen=True)
class Resource:
    """What a rule looks at: the type, the id and the owner (``None`` for configured resources)."""

    type: str
    id: str
    owner: str | None = None
    owner_attributes: Mapping[str, Any] = field(default_factory=dict)


def _glob_filter(column: str, pattern: str) -> Filter | bool:
    if pattern == "*":
        return True
    if "*" not in pattern and "?" not in pattern:
        return Where.eq(column, pattern)
    escaped = pattern.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return Where.like(column, escaped.replace("*", "%").replace("?", "_"))


@dataclass(frozen=True)
class _Rule:
    permit: bool
    actions: frozenset[str]
    types: tuple[str, ...]
    ids: tuple[str, ...]
    principals: tuple[str, ...]
    when: tuple[Condition, ...]
    unless: tuple[Condition, ...]

    @classmethod
    def of(cls, rule: AccessRule | RouteRule, types: tuple[str, ...] = ("*",)) -> _Rule:
        return cls(
            permit=rule.effect == "permit",
            actions=frozenset(getattr(rule, "actions", ["*"])),
            types=types,
            ids=tuple(getattr(rule, "ids", ["*"])),
            principals=tuple(rule.principals),
            when=tuple(parse_condition(c) for c in rule.when),
            unless=tuple(parse_condition(c) for c in rule.unless),
        )

    def covers(self, action: str, resource_type: str) -> bool:
        return ("*" in self.actions or action in self.actions) and any(
            fnmatchcase(resource_type, t) for t in self.types
        )

    def _principal_matches(self, principal: Principal) -> bool:
        return any(fnmatchcase(principal.id, p) for p in self.principals)

    def matches(self, principal: Principal, resource: Resource) -> bool:
        if not self._principal_matches(principal) or not any(fnmatchcase(resource.id, i) for i in self.ids):
            return False
        if not all(c.holds(principal, resource.owner, resource.owner_attributes) for c in self.when):
            return False
        return not any(c.holds(principal, resource.owner, resource.owner_attributes) for c in self.unless)

    def predicate(self, principal: Principal, id_column: str) -> Expr:
        if not self._principal_matches(principal):
            return False
        return conjunction(
            [
                disjunction([_glob_filter(id_column, pattern) for pattern in self.ids]),
                *(c.predicate(principal) for c in self.when),
                *(negate(c.predicate(principal)) for c in self.unless),
            ]
        )


DEFAULT_RULES = [
    AccessRule(effect="permit", when=["user is owner"], description="each principal reaches what it owns"),
    AccessRule(
        effect="permit",
        resources=list(REGISTERED_TYPES),
        when=["resource is unowned"],
        description="configured and shared registered resources are open to everyone",
    ),
]


class AccessPolicy:
    def __init__(self, config: AccessPolicyConfig | None = None) -> None:
        config = config or AccessPolicyConfig()
        self.configured = config.rules is not None
        rules = config.rules if config.rules is not None else DEFAULT_RULES
        self.rules = [_Rule.of(r, tuple(r.resources)) for r in rules]
        self.routes = [(r, _Rule.of(r)) for r in config.routes]

    # ---- one resource -----------------------------------------------------------------------------

    def allows(self, principal: Principal, action: str, resource: Resource) -> bool:
        for rule in self.rules:
            if rule.covers(action, resource.type) and rule.matches(principal, resource):
                return rule.permit
        return False

    # ---- rows -------------------------------------------------------------------------------------

    def row_predicate(self, principal: Principal, action: str, resource_type: str, id_column: str = "id") -> Expr:
        """Rows this principal may ``action``: the rules folded into one expression, in order.

        A row is allowed when some permit rule matches it and no forbid rule before that one does;
        rules after a rule that matches every row cannot change anything, so folding stops there.
        """
        allowed: list[Expr] = []
        blocked: list[Expr] = []
        for rule in self.rules:
            if not rule.covers(action, resource_type):
                continue
            matches = rule.predicate(principal, id_column)
            if matches is False:
                continue
            if rule.permit:
                allowed.append(conjunction([matches, *(negate(b) for b in blocked)]))
            else:
                blocked.append(matches)
            if matches is True:
                break
        return disjunction(allowed)

    def row_filter(self, principal: Principal, action: str, resource_type: str, id_column: str = "id") -> list[Filter]:
        """:meth:`row_predicate` as a ``where`` list for the SQL store (empty: every row; never ``None``)."""
        expr = self.row_predicate(principal, action, resource_type, id_column)
        if expr is True:
            return []
        if expr is False:
            return list(_DENY_ALL)
        return [expr]

    # ---- routes -----------------------------------------------------------------------------------

    def route_decision(self, principal: Principal, method: str, path: str) -> RouteRule | None:
        """The route rule that decides this request, or ``None`` when no route rule matches."""
        anywhere = Resource(type="route", id=path)
        for config, rule in self.routes:
            if "*" not in config.methods and method.upper() not in config.methods:
                continue
            if not fnmatchcase(path, config.path):
                continue
            if rule.matches(principal, anywhere):
                return config
        return None


_active = AccessPolicy()


def active_policy() -> AccessPolicy:
    return _active


def set_active_policy(policy: AccessPolicy | AccessPolicyConfig | None) -> AccessPolicy:
    """Make ``policy`` the process's policy (``None``: the built-in default); returns it."""
    global _active
    if not isinstance(policy, AccessPolicy):
        policy = AccessPolicy(policy)
    _active = policy
    return policy
