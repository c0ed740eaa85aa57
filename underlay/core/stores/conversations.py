"""Conversations and their items in the SQL store, owned by the principal who created them.

Items live in their own table, one row per item, so appending is an insert (never a rewrite of the
whole history) and listing is a cursor page in SQL. Order is a ``position`` column: nanoseconds at
insert, bumped so it strictly increases within a process, which keeps items appended in one call in
their given order. Every query filters by the access policy (by default: the owner) inside SQL; items
carry their conversation's owner, so one predicate governs a conversation and its items.
"""

from __future__ import annotations

import secrets
import threading
import time
from typing import Any, Literal

from underlay.api.conversations import Conversation
from underlay.api.errors import NotFoundError
from underlay.core.access import explain_miss, fetch_for, owner_of, require_create, rows_where
from underlay.core.identity import current_principal
from underlay.core.storage.sqlstore import OWNER_COLUMNS, ColumnDefinition, ColumnType, SqlStore, Where

CONVERSATIONS = "conversations"
ITEMS = "conversation_items"

_lock = threading.Lock()
_previous = 0


def _positions(n: int) -> list[int]:
    """``n`` strictly increasing positions after any handed out before in this process."""
    global _previous
    with _lock:
        start = max(time.time_ns(), _previous + 1)
        _previous = start + n - 1
    return list(range(start, start + n))


def new_conversation_id() -> str:
    return f"conv_{secrets.token_hex(24)}"


class ConversationStore:
    def __init__(self, sql: SqlStore) -> None:
        self.sql = sql

    async def initialize(self) -> None:
        await self.sql.create_table(
            CONVERSATIONS,
            {
                "id": ColumnDefinition(type=ColumnType.STRING, primary_key=True, nullable=False),
                "created_at": ColumnType.TIMESTAMP,
                "metadata": ColumnType.JSON,
                **OWNER_COLUMNS,
            },
        )
        await self.sql.create_table(
            ITEMS,
            {
                "row_id": ColumnDefinition(type=ColumnType.STRING, primary_key=True, nullable=False),
                "conversation_id": ColumnDefinition(type=ColumnType.STRING, index=True),
                "item_id": ColumnDefinition(type=ColumnType.STRING, index=True),
                "position": ColumnDefinition(type=ColumnType.INTEGER, index=True),
                "item": ColumnType.JSON,
                **OWNER_COLUMNS,
            },
        )

    @staticmethod
    def _allowed(action: str, id_column: str = "id", **where: Any) -> list[Any]:
        """``where`` plus the rows the policy lets the caller ``action`` (items: by conversation id)."""
        match = [Where.eq(k, v) for k, v in where.items()]
        return rows_where("conversation", action, *match, id_column=id_column)

    async def _row(self, conversation_id: str, action: str = "read") -> dict[str, Any]:
        """The conversation row; 404 if the caller cannot see it, 403 if it may not ``action`` it."""
        missing = NotFoundError("Conversation", conversation_id, param="conversation_id")
        match = [Where.eq("id", conversation_id)]
        return await fetch_for(self.sql, CONVERSATIONS, "conversation", action, match, missing, conversation_id)

    @staticmethod
    def _conversation(row: dict[str, Any]) -> Conversation:
        return Conversation(id=row["id"], created_at=int(row["created_at"]), metadata=row["metadata"] or {})

    async def create(self, metadata: dict[str, str] | None) -> Conversation:
        principal = current_principal()
        conversation_id = new_conversation_id()
        require_create("conversation", conversation_id)
        row = {
            "id": conversation_id,
            "created_at": int(time.time()),
            "metadata": metadata or {},
            "owner_principal": principal.id,
            "owner_attributes": principal.attributes,
        }
        await self.sql.insert(CONVERSATIONS, row)
        return self._conversation(row)

    async def get(self, conversation_id: str, action: str = "read") -> Conversation:
        return self._conversation(await self._row(conversation_id, action))

    async def update_metadata(self, conversation_id: str, metadata: dict[str, str] | None) -> Conversation:
        values = {"metadata": metadata or {}}
        changed = await self.sql.update(CONVERSATIONS, values, self._allowed("update", id=conversation_id))
        if not changed:
            raise await self._miss(conversation_id, "update")
        return await self.get(conversation_id)

    async def _miss(self, conversation_id: str, action: str) -> Exception:
        missing = NotFoundError("Conversation", conversation_id, param="conversation_id")
        match = [Where.eq("id", conversation_id)]
        return await explain_miss(self.sql, CONVERSATIONS, "conversation", action, match, missing, conversation_id)

    async def delete(self, conversation_id: str) -> None:
        deleted = await self.sql.delete(CONVERSATIONS, self._allowed("delete", id=conversation_id))
        if not deleted:
            raise await self._miss(conversation_id, "delete")
        await self.sql.delete(ITEMS, self._allowed("delete", "conversation_id", conversation_id=conversation_id))

    # ---- items ------------------------------------------------------------------------------------

    async def append(self, conversation_id: str, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Insert normalized items in order (the caller must be allowed to update the conversation).

        Items take the conversation's owner, not the caller's, so whoever may read the conversation
        reads all of its items.
        """
        owner = owner_of(await self._row(conversation_id, "update"))
        for position, item in zip(_positions(len(items)), items, strict=True):
            await self.sql.insert(
                ITEMS,
                {
                    "row_id": f"{conversation_id}/{item['id']}",
                    "conversation_id": conversation_id,
                    "item_id": item["id"],
                    "position": position,
                    "item": item,
                    **owner,
                },
            )
        return items

    async def page(
        self, conversation_id: str, *, after: str | None, limit: int, order: Literal["asc", "desc"]
    ) -> tuple[list[dict[str, Any]], bool]:
        """A page of the conversation's items (each the item's JSON, not its row) and whether more follow."""
        await self.get(conversation_id)
        rows, has_more = await self.sql.fetch_page(
            ITEMS,
            self._allowed("read", "conversation_id", conversation_id=conversation_id),
            order_column="position",
            order=order,
            limit=limit,
            after_id=after,
            id_column="item_id",
        )
        return [row["item"] for row in rows], has_more

    async def all_items(self, conversation_id: str) -> list[dict[str, Any]]:
        await self.get(conversation_id)
        rows = await self.sql.fetch_all(
            ITEMS,
            self._allowed("read", "conversation_id", conversation_id=conversation_id),
            order_by=[("position", "asc")],
        )
        return [row["item"] for row in rows]

    async def get_item(self, conversation_id: str, item_id: str) -> dict[str, Any]:
        await self.get(conversation_id)
        match = self._allowed("read", "conversation_id", conversation_id=conversation_id, item_id=item_id)
        row = await self.sql.fetch_one(ITEMS, match)
        if row is None:
            raise NotFoundError("Conversation item", item_id, param="item_id")
        return dict(row["item"])

    async def delete_item(self, conversation_id: str, item_id: str) -> None:
        await self._row(conversation_id, "update")
        match = self._allowed("update", "conversation_id", conversation_id=conversation_id, item_id=item_id)
        deleted = await self.sql.delete(ITEMS, match)
        if not deleted:
            raise NotFoundError("Conversation item", item_id, param="item_id")
