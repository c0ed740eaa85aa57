"""The Conversations API: durable item histories that responses read from and append to.

A conversation is an ordered list of items (see :mod:`underlay.api.response_items`) with metadata.
Clients create and edit it directly; the Responses API reads it as context when a request names it
(``conversation``) and appends the request's input and the response's output when the response ends.
"""

from __future__ import annotations

from typing import Any, Literal, Protocol

from pydantic import ConfigDict, Field, field_validator

from underlay.api.base import ApiModel
from underlay.api.omit import omit_when_none
from underlay.api.pagination import ListQuery
from underlay.api.response_items import Includable, InputItem, check_metadata
from underlay.api.routes import Handler, Route

__all__ = [
    "Conversation",
    "ConversationDeleted",
    "ConversationItemList",
    "ConversationsApi",
    "CreateConversationRequest",
    "CreateItemsRequest",
    "IncludeQuery",
    "ItemListQuery",
    "MAX_ITEMS_PER_CALL",
    "ROUTES",
    "UpdateConversationRequest",
]

MAX_ITEMS_PER_CALL = 20
"""OpenAI's limit on items added in one create call."""


class Conversation(ApiModel):
    id: str
    object: Literal["conversation"] = "conversation"
    created_at: int
    metadata: dict[str, str] = Field(default_factory=dict)


class ConversationDeleted(ApiModel):
    id: str
    object: Literal["conversation.deleted"] = "conversation.deleted"
    deleted: bool = True


class CreateConversationRequest(ApiModel):
    model_config = ConfigDict(extra="forbid")

    items: list[InputItem] | None = Field(default=None, max_length=MAX_ITEMS_PER_CALL)
    metadata: dict[str, str] | None = None

    _metadata = field_validator("metadata")(check_metadata)


class UpdateConversationRequest(ApiModel):
    model_config = ConfigDict(extra="forbid")

    metadata: dict[str, str] | None

    _metadata = field_validator("metadata")(check_metadata)


class CreateItemsRequest(ApiModel):
    model_config = ConfigDict(extra="forbid")

    items: list[InputItem] = Field(min_length=1, max_length=MAX_ITEMS_PER_CALL)


class IncludeQuery(ApiModel):
    """``include`` in a query string; the SDK sends it as repeated ``include`` keys or ``include[]``."""

    include: list[Includable] | None = None

    @field_validator("include", mode="before")
    @classmethod
    def _listify(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value


class ItemListQuery(ListQuery):
    include: list[Includable] | None = None

    @field_validator("include", mode="before")
    @classmethod
    def _listify(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value


class ConversationItemList(ApiModel):
    object: Literal["list"] = "list"
    data: list[dict[str, Any]]
    first_id: str | None = None
    last_id: str | None = None
    has_more: bool = False

    _omit = omit_when_none("first_id", "last_id")


class ConversationsApi(Protocol):
    """The conversations router: one method per route below, then what the Responses engine calls on it
    (as the current principal). :class:`underlay.core.routers.conversations.ConversationsRouter` implements it.
    """

    async def create_conversation(self, params: CreateConversationRequest) -> Conversation: ...

    async def retrieve_conversation(self, conversation_id: str) -> Conversation: ...

    async def update_conversation(self, conversation_id: str, params: UpdateConversationRequest) -> Conversation: ...

    async def delete_conversation(self, conversation_id: str) -> ConversationDeleted: ...

    async def create_items(
        self, conversation_id: str, params: CreateItemsRequest, query: IncludeQuery
    ) -> ConversationItemList: ...

    async def list_items(self, conversation_id: str, query: ItemListQuery) -> ConversationItemList: ...

    async def retrieve_item(self, conversation_id: str, item_id: str, query: IncludeQuery) -> dict[str, Any]: ...

    async def delete_item(self, conversation_id: str, item_id: str) -> Conversation: ...

    # -- what other APIs (Responses) call ---------------------------------------------------------

    async def get_conversation(self, conversation_id: str) -> Conversation: ...

    async def all_items(self, conversation_id: str) -> list[dict[str, Any]]:
        """Every item of the conversation, oldest first (for building a model's context)."""
        ...

    async def append_items(self, conversation_id: str, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Append already-normalized items, in order; returns them as stored."""
        ...


def _route(method: str, path: str, handler: Handler, summary: str, **kwargs: Any) -> Route:
    return Route(method, path, handler, summary=summary, tags=("conversations",), **kwargs)


_C = "/v1/conversations/{conversation_id}"

ROUTES: list[Route] = [
    _route(
        "POST",
        "/v1/conversations",
        ConversationsApi.create_conversation,
        "Create a conversation",
        body=CreateConversationRequest,
        response=Conversation,
    ),
    _route("GET", _C, ConversationsApi.retrieve_conversation, "Retrieve a conversation", response=Conversation),
    _route(
        "POST",
        _C,
        ConversationsApi.update_conversation,
        "Update a conversation's metadata",
        body=UpdateConversationRequest,
        response=Conversation,
    ),
    _route("DELETE", _C, ConversationsApi.delete_conversation, "Delete a conversation", response=ConversationDeleted),
    _route(
        "POST",
        f"{_C}/items",
        ConversationsApi.create_items,
        "Add items to a conversation",
        body=CreateItemsRequest,
        query=IncludeQuery,
        response=ConversationItemList,
    ),
    _route(
        "GET",
        f"{_C}/items",
        ConversationsApi.list_items,
        "List a conversation's items",
        query=ItemListQuery,
        response=ConversationItemList,
    ),
    _route(
        "GET",
        f"{_C}/items/{{item_id}}",
        ConversationsApi.retrieve_item,
        "Retrieve a conversation item",
        query=IncludeQuery,
    ),
    _route(
        "DELETE",
        f"{_C}/items/{{item_id}}",
        ConversationsApi.delete_item,
        "Delete a conversation item",
        response=Conversation,
    ),
]
