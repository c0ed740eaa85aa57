"""Conversations ownership on the store itself: another principal can neither see, page, change nor
delete a conversation.

The API's shapes (life cycle, items, pagination, ``include``, validation errors) are checked in
process, in ``tests/inprocess/test_conversations_api.py``; the Conversations API on a real server is
covered by ``test_openai_strict_sdk.py::test_conversations`` and the Responses tests that continue a
conversation.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from underlay.api.errors import InvalidRequestError, NotFoundError
from underlay.core.identity import Principal, principal_var
from underlay.core.storage.sqlstore import sqlstore_from_config
from underlay.core.stores.conversations import ConversationStore

# ---- ownership, on the store itself -------------------------------------------------------------------


@contextmanager
def acting_as(name: str) -> Iterator[None]:
    token = principal_var.set(Principal(name, {"team": name}))
    try:
        yield
    finally:
        principal_var.reset(token)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[ConversationStore]:
    sql = await sqlstore_from_config({"type": "sqlite", "path": str(tmp_path / "state.db")})
    conversations = ConversationStore(sql)
    await conversations.initialize()
    yield conversations
    await sql.close()


async def test_conversations_are_invisible_to_other_principals(store: ConversationStore) -> None:
    with acting_as("alice"):
        mine = await store.create({"k": "v"})
        await store.append(mine.id, [{"id": "msg_a1", "type": "message", "role": "user", "content": []}])
    with acting_as("bob"):
        with pytest.raises(NotFoundError):
            await store.get(mine.id)
        with pytest.raises(NotFoundError):
            await store.all_items(mine.id)
        with pytest.raises(NotFoundError):
            await store.append(mine.id, [{"id": "msg_b1", "type": "message", "role": "user", "content": []}])
        with pytest.raises(NotFoundError):
            await store.update_metadata(mine.id, {"k": "stolen"})
        with pytest.raises(NotFoundError):
            await store.delete_item(mine.id, "msg_a1")
        with pytest.raises(NotFoundError):
            await store.delete(mine.id)
        theirs = await store.create(None)
        with pytest.raises(InvalidRequestError):  # cannot page from alice's item id either
            await store.page(theirs.id, after="msg_a1", limit=5, order="asc")
    with acting_as("alice"):
        assert (await store.get(mine.id)).metadata == {"k": "v"}
        assert [i["id"] for i in await store.all_items(mine.id)] == ["msg_a1"]
