"""Cursor pagination in OpenAI's list shape (``data``, ``first_id``, ``last_id``, ``has_more``)."""

from __future__ import annotations

from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel, Field

T = TypeVar("T")


class ListQuery(BaseModel):
    """Query parameters shared by every cursor-paginated list endpoint."""

    after: str | None = Field(default=None, description="Return items after this id.")
    limit: int = Field(default=20, ge=1, le=100, description="Page size, 1 to 100.")
    order: Literal["asc", "desc"] = Field(default="desc", description="Sort by creation time.")


class ListPage(BaseModel, Generic[T]):
    object: Literal["list"] = "list"
    data: list[T]
    first_id: str | None = None
    last_id: str | None = None
    has_more: bool = False


def page_of(items: list[Any], limit: int, id_of: Any = lambda x: x.id) -> dict[str, Any]:
    """Build the list envelope from up to ``limit + 1`` fetched items (the extra one sets has_more)."""
    has_more = len(items) > limit
    items = items[:limit]
    return {
        "object": "list",
        "data": items,
        "first_id": id_of(items[0]) if items else None,
        "last_id": id_of(items[-1]) if items else None,
        "has_more": has_more,
    }
