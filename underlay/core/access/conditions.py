"""The condition language of access rules: short English phrases over the principal and the resource.

Why phrases rather than a nested YAML structure: a reviewer reads ``user in owners teams`` in a run
config and knows what it grants. Each phrase compiles once into a :class:`Condition` that can answer
for one resource in memory (registered resources: models, shields, tool groups) *and* turn into a SQL
predicate over a table's ``owner_principal`` / ``owner_attributes`` columns (user-owned rows), so
listing stays a single filtered query.

Grammar (``<attr>`` is a principal attribute name such as ``teams`` or ``roles``):

- ``user is owner`` / ``user is not owner``
- ``user in owners <attr>`` / ``user not in owners <attr>``: the principal and the owner share (or do
  not share) at least one value of ``<attr>``
- ``user with <value> in <attr>`` / ``user without <value> in <attr>``: the principal's ``<attr>``
  holds (or lacks) ``<value>``
- ``user is anonymous`` / ``user is authenticated``
- ``resource is owned`` / ``resource is unowned`` (configured models and shields have no owner)
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from underlay.core.identity import ANONYMOUS, Principal
from underlay.core.storage.sqlstore import Condition as SqlCondition
from underlay.core.storage.sqlstore import ConditionGroup, Filter, Where

Expr = bool | Filter
"""A predicate over rows after the principal is known: a constant, or a SQL filter."""

_ATTR = r"[A-Za-z_][A-Za-z0-9_-]*"
_PATTERNS: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"user is (not )?owner"), "owner"),
    (re.compile(rf"user (not )?in owners ({_ATTR})"), "shares"),
    (re.compile(rf"user (with|without) (\S+) in ({_ATTR})"), "holds"),
    (re.compile(r"user is (anonymous|authenticated)"), "anonymous"),
    (re.compile(r"resource is (owned|unowned)"), "owned"),
]
SYNTAX_HELP = (
    "use one of: 'user is owner', 'user is not owner', 'user in owners <attr>', 'user not in owners <attr>', "
    "'user with <value> in <attr>', 'user without <value> in <attr>', 'user is anonymous', "
    "'user is authenticated', 'resource is owned', 'resource is unowned'"
)


def attribute_values(attributes: Mapping[str, Any] | None, name: str) -> frozenset[str]:
    """An attribute's values as strings; a scalar counts as a one-value list, missing as none."""
    value = (attributes or {}).get(name)
    if value is None:
        return frozenset()
    if isinstance(value, list | tuple | set | frozenset):
        return frozenset(str(v) for v in value)
    return frozenset([str(value)])


@dataclass(frozen=True)
class Condition:
    """One parsed phrase. ``principal_only`` conditions never look at the resource (route policies)."""

    text: str
    kind: str
    negated: bool
    attribute: str = ""
    value: str = ""

    @property
    def principal_only(self) -> bool:
        return self.kind in ("holds", "anonymous")

    def holds(self, principal: Principal, owner: str | None, owner_attributes: Mapping[str, Any] | None) -> bool:
        """Whether the condition holds for ``principal`` against a resource with this owner."""
        if self.kind == "owner":
            result = owner is not None and owner == principal.id
        elif self.kind == "shares":
            mine = attribute_values(principal.attributes, self.attribute)
            result = owner is not None and bool(mine & attribute_values(owner_attributes, self.attribute))
        elif self.kind == "holds":
            result = self.value in attribute_values(principal.attributes, self.attribute)
        elif self.kind == "anonymous":
            result = principal.id == ANONYMOUS.id
        else:  # owned
            result = owner is not None
        return not result if self.negated else result

    def predicate(self, principal: Principal) -> Expr:
        """The condition as a row predicate for ``principal`` (a constant when rows do not matter)."""
        if self.principal_only:
            return self.holds(principal, None, None)
        if self.kind == "owner":
            expr: Expr = Where.eq("owner_principal", principal.id)
        elif self.kind == "shares":
            values = attribute_values(principal.attributes, self.attribute)
            expr = (
                SqlCondition("owner_attributes", "json_overlaps", (self.attribute, tuple(sorted(values))))
                if values
                else False
            )
        else:  # owned
            expr = Where.is_not_null("owner_principal")
        return negate(expr) if self.negated else expr


def parse_condition(text: str) -> Condition:
    """Parse one phrase; ``ValueError`` (one line, with the syntax) if it is not one we know."""
    phrase = " ".join(str(text).split())
    for pattern, kind in _PATTERNS:
        match = pattern.fullmatch(phrase)
        if match is None:
            continue
        if kind == "owner":
            return Condition(phrase, kind, negated=bool(match.group(1)))
        if kind == "shares":
            return Condition(phrase, kind, negated=bool(match.group(1)), attribute=match.group(2))
        if kind == "holds":
            return Condition(
                phrase, kind, negated=match.group(1) == "without", attribute=match.group(3), value=match.group(2)
            )
        if kind == "anonymous":
            return Condition(phrase, kind, negated=match.group(1) == "authenticated")
        return Condition(phrase, kind, negated=match.group(1) == "unowned")
    raise ValueError(f"unknown condition {text!r}; {SYNTAX_HELP}")


# ---- a tiny boolean algebra over constants and SQL filters -------------------------------------------


def conjunction(parts: list[Expr]) -> Expr:
    """AND, folding constants so a rule that cannot match costs no SQL."""
    filters: list[Filter] = []
    for part in parts:
        if part is False:
            return False
        if part is not True:
            filters.append(part)
    if not filters:
        return True
    return filters[0] if len(filters) == 1 else Where.all_of(*filters)


def disjunction(parts: list[Expr]) -> Expr:
    """OR, folding constants."""
    filters: list[Filter] = []
    for part in parts:
        if part is True:
            return True
        if part is not False:
            filters.append(part)
    if not filters:
        return False
    return filters[0] if len(filters) == 1 else Where.any_of(*filters)


def negate(expr: Expr) -> Expr:
    if expr is True or expr is False:
        return not expr
    return ConditionGroup("not", (expr,))
