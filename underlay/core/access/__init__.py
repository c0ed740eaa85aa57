"""Attribute-based access control over resources and user-owned rows (see ``docs/access-control.md``).

:mod:`.config` is the run-config section, :mod:`.conditions` the condition phrases, :mod:`.policy`
the compiled policy and :mod:`.enforce` what routers and stores call.
"""

from underlay.core.access.enforce import (
    acting_for,
    can,
    explain_miss,
    fetch_for,
    forbidden,
    intended_action,
    owner_of,
    require,
    require_create,
    row_resource,
    rows_where,
    where_of,
)
from underlay.core.access.policy import AccessPolicy, Resource, active_policy, set_active_policy

__all__ = [
    "AccessPolicy",
    "Resource",
    "acting_for",
    "intended_action",
    "active_policy",
    "can",
    "explain_miss",
    "fetch_for",
    "forbidden",
    "owner_of",
    "require",
    "require_create",
    "row_resource",
    "rows_where",
    "set_active_policy",
    "where_of",
]
