"""What routers, routing tables and stores call: checks against the active policy for the current principal.

The rule for errors, everywhere: a resource the principal may not *read* does not exist for it (404,
with the same message as a truly missing id, so ids cannot be probed); a resource it can read but may
not act on answers 403 naming the action.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from underlay.api.errors import ForbiddenError, NotFoundError
from underlay.core.access.policy import Resource, active_policy
from underlay.core.identity import current_principal
from underlay.core.storage.sqlstore import Filter, Where

_intent: ContextVar[str] = ContextVar("underlay_access_intent", default="read")


@contextmanager
def acting_for(action: str) -> Iterator[None]:
    """Within this block, stores look rows up for ``action`` rather than for reading.

    For a router that hands a whole operation (delete, cancel) to a provider: the provider fetches
    the row first and acts on it, and the check must refuse *before* it acts, not when it writes.
    """
    token = _intent.set(action)
    try:
        yield
    finally:
        _intent.reset(token)


def intended_action() -> str:
    """The action set by :func:`acting_for` around this call (``"read"`` outside any)."""
    return _intent.get()


_NOUNS = {
    "model": "model",
    "shield": "shield",
    "tool_group": "tool group",
    "vector_store": "vector store",
    "file": "file",
    "response": "response",
    "conversation": "conversation",
    "prompt": "prompt",
    "agent": "agent",
    "batch": "batch",
    "scoring_function": "scoring function",
    "dataset": "dataset",
    "eval": "eval",
    "chat_completion": "chat completion",
    "job": "job",
}


def forbidden(action: str, resource_type: str, identifier: str) -> ForbiddenError:
    noun = _NOUNS.get(resource_type, resource_type)
    return ForbiddenError(
        f"The access policy does not let '{current_principal().id}' {action} {noun} '{identifier}'; "
        "ask an administrator to change access_policy in the run config.",
        code="access_denied",
    )


def can(action: str, resource: Resource) -> bool:
    return active_policy().allows(current_principal(), action, resource)


def require(action: str, resource: Resource, not_found: NotFoundError) -> None:
    """Raise ``not_found`` if the resource is hidden from the caller, 403 if ``action`` is refused."""
    if not can("read", resource):
        raise not_found
    if action != "read" and not can(action, resource):
        raise forbidden(action, resource.type, resource.id)


def require_create(resource_type: str, identifier: str, owner: str | None = "") -> None:
    """403 unless the caller may create it; a new user-owned row is owned by the caller.

    ``owner=None`` describes a resource nobody owns (e.g. a model registered through the API).
    """
    principal = current_principal()
    resource = Resource(
        resource_type,
        identifier,
        owner=principal.id if owner == "" else owner,
        owner_attributes=principal.attributes if owner == "" else {},
    )
    if not active_policy().allows(principal, "create", resource):
        raise forbidden("create", resource_type, identifier)


def rows_where(resource_type: str, action: str = "read", *extra: Filter, id_column: str = "id") -> list[Filter]:
    """A ``where`` list: ``extra`` plus the rows the policy lets the caller ``action``."""
    return [*extra, *active_policy().row_filter(current_principal(), action, resource_type, id_column)]


def where_of(values: Mapping[str, Any]) -> list[Filter]:
    """Equality conditions (``None`` meaning IS NULL) from a plain mapping."""
    return [Where.eq(column, value) for column, value in values.items()]


def owner_of(row: Mapping[str, Any]) -> dict[str, Any]:
    """A row's ownership columns, for child rows that must share their parent's owner."""
    return {"owner_principal": row.get("owner_principal"), "owner_attributes": row.get("owner_attributes") or {}}


def row_resource(resource_type: str, row: Mapping[str, Any], id_column: str = "id") -> Resource:
    return Resource(
        resource_type,
        str(row.get(id_column)),
        owner=row.get("owner_principal"),
        owner_attributes=row.get("owner_attributes") or {},
    )


async def explain_miss(
    sql: Any,
    table: str,
    resource_type: str,
    action: str,
    match: Sequence[Filter],
    not_found: NotFoundError,
    identifier: str,
    id_column: str = "id",
) -> NotFoundError | ForbiddenError:
    """After an update or delete under ``action``'s filter touched nothing: 403 if readable, else 404.

    Costs one more query, and only on the failure path.
    """
    if action != "read":
        visible = await sql.fetch_one(table, rows_where(resource_type, "read", *match, id_column=id_column))
        if visible is not None:
            return forbidden(action, resource_type, identifier)
    return not_found


async def fetch_for(
    sql: Any,
    table: str,
    resource_type: str,
    action: str,
    match: Sequence[Filter],
    not_found: NotFoundError,
    identifier: str,
    id_column: str = "id",
) -> dict[str, Any]:
    """The row matching ``match`` that the caller may ``action``; 404 if hidden, 403 if only readable."""
    row = await sql.fetch_one(table, rows_where(resource_type, action, *match, id_column=id_column))
    if row is None:
        raise await explain_miss(sql, table, resource_type, action, match, not_found, identifier, id_column)
    return dict(row)
