"""Stored chat completions (``store: true``) in the SQL store, owned by the principal who made them."""

from __future__ import annotations

import time
from typing import Any, Literal

from underlay.api.errors import NotFoundError
from underlay.api.inference import ChatCompletion, StoredChatCompletion
from underlay.core.access import explain_miss, require_create, rows_where
from underlay.core.identity import current_principal
from underlay.core.storage.sqlstore import OWNER_COLUMNS, ColumnDefinition, ColumnType, SqlStore, Where

TABLE = "chat_completions"


class ChatCompletionStore:
    def __init__(self, sqlstore: SqlStore) -> None:
        self.sql = sqlstore

    async def initialize(self) -> None:
        await self.sql.create_table(
            TABLE,
            {
                "id": ColumnDefinition(type=ColumnType.STRING, primary_key=True, nullable=False),
                "created_at": ColumnDefinition(type=ColumnType.INTEGER, index=True),
                "model": ColumnDefinition(type=ColumnType.STRING, index=True),
                "completion": ColumnType.JSON,
                "input_messages": ColumnType.JSON,
                "metadata": ColumnType.JSON,
                **OWNER_COLUMNS,
            },
        )

    async def store(
        self,
        completion: ChatCompletion,
        input_messages: list[dict[str, Any]],
        metadata: dict[str, str] | None,
    ) -> None:
        require_create("chat_completion", completion.id)
        principal = current_principal()
        await self.sql.insert(
            TABLE,
            {
                "id": completion.id,
                "created_at": time.time_ns(),  # ordering key; the completion keeps OpenAI's seconds
                "model": completion.model,
                "completion": completion.model_dump(mode="json"),
                "input_messages": input_messages,
                "metadata": metadata or {},
                "owner_principal": principal.id,
                "owner_attributes": principal.attributes,
            },
        )

    @staticmethod
    def _allowed(action: str = "read", **where: Any) -> list[Any]:
        """``where`` plus the rows the access policy lets the caller ``action`` (in the query)."""
        return rows_where("chat_completion", action, *(Where.eq(k, v) for k, v in where.items()))

    async def get(self, completion_id: str) -> StoredChatCompletion:
        row = await self.sql.fetch_one(TABLE, self._allowed(id=completion_id))
        if row is None:
            raise NotFoundError("Chat completion", completion_id, param="completion_id")
        return self._to_model(row)

    @staticmethod
    def _to_model(row: dict[str, Any]) -> StoredChatCompletion:
        return StoredChatCompletion.model_validate(
            {
                **row["completion"],
                "input_messages": row["input_messages"],
                "metadata": row["metadata"] or None,
            }
        )

    async def update_metadata(self, completion_id: str, metadata: dict[str, str] | None) -> StoredChatCompletion:
        """Replace the metadata (``None`` clears it), if the caller may update the completion."""
        changed = await self.sql.update(TABLE, {"metadata": metadata or {}}, self._allowed("update", id=completion_id))
        if not changed:
            missing = NotFoundError("Chat completion", completion_id, param="completion_id")
            raise await explain_miss(
                self.sql, TABLE, "chat_completion", "update", [Where.eq("id", completion_id)], missing, completion_id
            )
        return await self.get(completion_id)

    async def list(
        self,
        *,
        after: str | None,
        limit: int,
        order: Literal["asc", "desc"],
        model: str | None,
        metadata: dict[str, str] | None,
    ) -> dict[str, Any]:
        where = self._allowed(**({"model": model} if model else {}))
        if metadata:
            # Metadata filtering happens after the page query; fetch generously so a page stays full.
            rows, _ = await self.sql.fetch_page(TABLE, where, order=order, limit=1000, after_id=after)
            rows = [r for r in rows if all((r["metadata"] or {}).get(k) == v for k, v in metadata.items())]
            has_more = len(rows) > limit
            rows = rows[:limit]
        else:
            rows, has_more = await self.sql.fetch_page(TABLE, where, order=order, limit=limit, after_id=after)
        data = [self._to_model(r) for r in rows]
        return {
            "object": "list",
            "data": data,
            "first_id": data[0].id if data else None,
            "last_id": data[-1].id if data else None,
            "has_more": has_more,
        }

    async def messages(
        self, completion_id: str, *, after: str | None, limit: int, order: Literal["asc", "desc"]
    ) -> dict[str, Any]:
        stored = await self.get(completion_id)
        messages = [{**m, "id": m.get("id") or f"{completion_id}-{i}"} for i, m in enumerate(stored.input_messages)]
        if order == "desc":
            messages.reverse()
        start = 0
        if after is not None:
            ids = [m["id"] for m in messages]
            if after not in ids:
                raise NotFoundError("Message", after, param="after")
            start = ids.index(after) + 1
        page = messages[start : start + limit]
        return {
            "object": "list",
            "data": page,
            "first_id": page[0]["id"] if page else None,
            "last_id": page[-1]["id"] if page else None,
            "has_more": start + limit < len(messages),
        }

    async def delete(self, completion_id: str) -> None:
        deleted = await self.sql.delete(TABLE, self._allowed("delete", id=completion_id))
        if not deleted:
            missing = NotFoundError("Chat completion", completion_id, param="completion_id")
            raise await explain_miss(
                self.sql, TABLE, "chat_completion", "delete", [Where.eq("id", completion_id)], missing, completion_id
            )
