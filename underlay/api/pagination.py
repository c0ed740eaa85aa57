"""Cursor pagination in OpenAI's list shape (``data``, ``first_id``, ``last_id``, ``has_more``).

An empty cursor (``?after=`` or ``?before=``, as a client building a URL from an unset variable sends
it) means "no cursor" on every list, the same everywhere: it is dropped while the query is parsed, so
no list looks an empty id up and answers 400 on one route and 404 on another.
"""

from __future__ import annotations

from typing import Any, Generic, Literal, TypeVar

from pydantic import Field, field_validator

from underlay.api.base import ApiModel
from underlay.api.omit import omit_when_none, without_none

__all__ = ["ListPage", "ListQuery", "blank_as_absent", "page_of"]

T = TypeVar("T")


def blank_as_absent(value: Any) -> Any:
    """``""`` (an empty query value) → ``None``; anything else unchanged, for the field's own checks."""
    return None if value == "" else value


class ListQuery(ApiModel):
    """Query parameters shared by every cursor-paginated list endpoint."""

    after: str | None = Field(default=None, description="Return items after this id.")
    limit: int = Field(default=20, ge=1, le=100, description="Page size, 1 to 100.")
    order: Literal["asc", "desc"] = Field(default="desc", description="Sort by creation time.")

    # check_fields=False: ``before`` is declared by the lists that have one; the rule follows it there.
    _blank_cursor = field_validator("after", "before", mode="before", check_fields=False)(blank_as_absent)


class ListPage(ApiModel, Generic[T]):
    object: Literal["list"] = "list"
    data: list[T]
    first_id: str | None = None
    last_id: str | None = None
    has_more: bool = False

    _omit = omit_when_none("first_id", "last_id")


def page_of(items: list[Any], limit: int, id_of: Any = lambda x: x.id) -> dict[str, Any]:
    """Build the list envelope from up to ``limit + 1`` fetched items (the extra one sets has_more)."""
    has_more = len(items) > limit
    items = items[:limit]
    return without_none(
        {
            "object": "list",
            "data": items,
            "first_id": id_of(items[0]) if items else None,
            "last_id": id_of(items[-1]) if items else None,
            "has_more": has_more,
        },
        "first_id",
        "last_id",
    )
