"""The Conversations API end to end with the openai SDK against a real server (no model needed), plus
ownership checks on the store: another principal can neither see, page, change nor delete a conversation.

The item shapes, pagination, ``include`` and validation errors are checked in process, in
``tests/inprocess/test_conversations_api.py``; the life cycle below keeps a real server.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path

import openai
import pytest

from tests.integration.harness import RunningServer, start_server
from underlay.api.errors import InvalidRequestError, NotFoundError
from underlay.core.identity import Principal, principal_var
from underlay.core.storage.sqlstore import sqlstore_from_config
from underlay.core.stores.conversations import ConversationStore


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    running = start_server({"apis": ["conversations"]}, tmp_path_factory.mktemp("conversations"))
    yield running
    running.stop()


@pytest.fixture(scope="module")
def client(server: RunningServer) -> openai.OpenAI:
    return server.openai(timeout=30)


def test_create_retrieve_update_delete(client: openai.OpenAI) -> None:
    conversation = client.conversations.create(
        items=[{"role": "user", "content": "Hello"}, {"type": "message", "role": "assistant", "content": "Hi!"}],
        metadata={"topic": "greeting"},
    )
    assert conversation.id.startswith("conv_") and conversation.object == "conversation"
    assert conversation.metadata == {"topic": "greeting"}
    fetched = client.conversations.retrieve(conversation.id)
    assert fetched.id == conversation.id and fetched.created_at == conversation.created_at

    updated = client.conversations.update(conversation.id, metadata={"topic": "farewell", "n": "2"})
    assert updated.metadata == {"topic": "farewell", "n": "2"}
    assert client.conversations.retrieve(conversation.id).metadata == {"topic": "farewell", "n": "2"}

    deleted = client.conversations.delete(conversation.id)
    assert deleted.deleted and deleted.object == "conversation.deleted" and deleted.id == conversation.id
    with pytest.raises(openai.NotFoundError) as caught:
        client.conversations.retrieve(conversation.id)
    assert caught.value.body["code"] == "conversation_not_found"
    with pytest.raises(openai.NotFoundError):
        client.conversations.items.list(conversation.id)


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
