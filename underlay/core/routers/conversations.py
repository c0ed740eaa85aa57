"""The conversations router: the Conversations API over its SQL store, plus the calls Responses makes.

Thin: validation lives in the contract's models, ownership in the store's queries. Items arrive in
any of the input shorthands and are stored normalized (ids, statuses, content as parts).
"""

from __future__ import annotations

from typing import Any

from underlay.api.conversations import (
    Conversation,
    ConversationDeleted,
    ConversationItemList,
    ConversationsApi,
    CreateConversationRequest,
    CreateItemsRequest,
    IncludeQuery,
    ItemListQuery,
    UpdateConversationRequest,
)
from underlay.api.errors import InvalidRequestError
from underlay.api.response_items import ItemReference, normalize_item, shape_for_client
from underlay.core.stores.conversations import ConversationStore


def _normalized(items: list[Any], param: str) -> list[dict[str, Any]]:
    out = []
    for index, item in enumerate(items):
        if isinstance(item, ItemReference):
            raise InvalidRequestError(
                "item_reference items cannot be added to a conversation; send the item itself.",
                param=f"{param}[{index}]",
            )
        out.append(normalize_item(item))
    return out


class ConversationsRouter(ConversationsApi):
    def __init__(self, store: ConversationStore) -> None:
        self.store = store

    async def create_conversation(self, params: CreateConversationRequest) -> Conversation:
        items = _normalized(params.items or [], "items")
        conversation = await self.store.create(params.metadata)
        if items:
            await self.store.append(conversation.id, items)
        return conversation

    async def retrieve_conversation(self, conversation_id: str) -> Conversation:
        return await self.store.get(conversation_id)

    async def update_conversation(self, conversation_id: str, params: UpdateConversationRequest) -> Conversation:
        return await self.store.update_metadata(conversation_id, params.metadata)

    async def delete_conversation(self, conversation_id: str) -> ConversationDeleted:
        await self.store.delete(conversation_id)
        return ConversationDeleted(id=conversation_id)

    async def create_items(
        self, conversation_id: str, params: CreateItemsRequest, query: IncludeQuery
    ) -> ConversationItemList:
        items = await self.store.append(conversation_id, _normalized(params.items, "items"))
        data = [shape_for_client(i, query.include) for i in items]
        return ConversationItemList(data=data, first_id=data[0]["id"], last_id=data[-1]["id"], has_more=False)

    async def list_items(self, conversation_id: str, query: ItemListQuery) -> ConversationItemList:
        items, has_more = await self.store.page(
            conversation_id, after=query.after, limit=query.limit, order=query.order
        )
        data = [shape_for_client(item, query.include) for item in items]
        return ConversationItemList(
            data=data,
            first_id=data[0]["id"] if data else None,
            last_id=data[-1]["id"] if data else None,
            has_more=has_more,
        )

    async def retrieve_item(self, conversation_id: str, item_id: str, query: IncludeQuery) -> dict[str, Any]:
        return shape_for_client(await self.store.get_item(conversation_id, item_id), query.include)

    async def delete_item(self, conversation_id: str, item_id: str) -> Conversation:
        await self.store.delete_item(conversation_id, item_id)
        return await self.store.get(conversation_id)

    # ---- what the Responses engine calls (ConversationsApi) ------------------------------------------

    async def get_conversation(self, conversation_id: str) -> Conversation:
        """Asked before a response runs in the conversation: it will append, so ``update`` is checked now."""
        return await self.store.get(conversation_id, action="update")

    async def all_items(self, conversation_id: str) -> list[dict[str, Any]]:
        return await self.store.all_items(conversation_id)

    async def append_items(self, conversation_id: str, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return await self.store.append(conversation_id, [normalize_item(i) for i in items])
