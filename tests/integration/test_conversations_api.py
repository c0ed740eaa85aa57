"""The Conversations API end to end with the openai SDK against a real server (no model needed), plus
ownership checks on the store: another principal can neither see, page, change nor delete a conversation.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
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


def test_items_are_normalized_in_openai_shapes(client: openai.OpenAI) -> None:
    conversation = client.conversations.create(items=[{"role": "user", "content": "What is 2+2?"}])
    added = client.conversations.items.create(
        conversation.id,
        items=[
            {"type": "function_call", "call_id": "call_1", "name": "add", "arguments": '{"a": 2, "b": 2}'},
            {"type": "function_call_output", "call_id": "call_1", "output": "4"},
            {"role": "assistant", "content": [{"type": "output_text", "text": "It is 4.", "annotations": []}]},
        ],
    )
    assert [i.type for i in added.data] == ["function_call", "function_call_output", "message"]
    assert added.first_id == added.data[0].id and added.last_id == added.data[-1].id and not added.has_more

    items = client.conversations.items.list(conversation.id, order="asc").data
    assert [i.type for i in items] == ["message", "function_call", "function_call_output", "message"]
    user = items[0]
    assert user.role == "user" and user.status == "completed" and user.id.startswith("msg_")
    assert user.content[0].type == "input_text" and user.content[0].text == "What is 2+2?"
    assert items[1].call_id == "call_1" and items[1].name == "add"
    assert items[3].content[0].type == "output_text" and items[3].content[0].text == "It is 4."

    one = client.conversations.items.retrieve(items[1].id, conversation_id=conversation.id)
    assert one.id == items[1].id and one.type == "function_call"
    after_delete = client.conversations.items.delete(items[1].id, conversation_id=conversation.id)
    assert after_delete.id == conversation.id and after_delete.object == "conversation"
    with pytest.raises(openai.NotFoundError):
        client.conversations.items.retrieve(items[1].id, conversation_id=conversation.id)
    assert len(client.conversations.items.list(conversation.id).data) == 3


def test_items_pagination(client: openai.OpenAI) -> None:
    conversation = client.conversations.create(items=[{"role": "user", "content": f"m{i}"} for i in range(7)])
    texts = [i.content[0].text for i in client.conversations.items.list(conversation.id, order="asc", limit=3)]
    assert texts == [f"m{i}" for i in range(7)]  # auto-pagination with after= across three pages
    newest = client.conversations.items.list(conversation.id, limit=2)  # default order: newest first
    assert [i.content[0].text for i in newest.data] == ["m6", "m5"] and newest.has_more
    page = client.conversations.items.list(conversation.id, limit=2, after=newest.last_id)
    assert [i.content[0].text for i in page.data] == ["m4", "m3"]
    last = client.conversations.items.list(conversation.id, order="asc", after=page.data[0].id)
    assert [i.content[0].text for i in last.data] == ["m5", "m6"] and not last.has_more


def test_include_controls_search_results(client: openai.OpenAI, server: RunningServer) -> None:
    call = {
        "type": "file_search_call",
        "id": "fs_test1",
        "queries": ["cats"],
        "status": "completed",
        "results": [{"file_id": "file-1", "filename": "cats.txt", "score": 0.9, "text": "Cats purr."}],
    }
    conversation = client.conversations.create(items=[call])
    plain = client.conversations.items.retrieve("fs_test1", conversation_id=conversation.id)
    assert plain.results is None
    full = client.conversations.items.retrieve(
        "fs_test1", conversation_id=conversation.id, include=["file_search_call.results"]
    )
    assert full.results[0].text == "Cats purr."
    listed = httpx.get(
        f"{server.v1}/conversations/{conversation.id}/items",
        params=[("include[]", "file_search_call.results")],
    ).json()
    assert listed["data"][0]["results"][0]["filename"] == "cats.txt"


def test_validation_errors(client: openai.OpenAI, server: RunningServer) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.conversations.create(metadata={f"k{i}": "v" for i in range(17)})
    assert caught.value.body["param"] == "metadata"
    with pytest.raises(openai.BadRequestError) as caught:
        client.conversations.create(items=[{"role": "robot", "content": "x"}])
    assert "items" in (caught.value.body["param"] or "")
    with pytest.raises(openai.BadRequestError):
        client.conversations.create(items=[{"type": "item_reference", "id": "msg_1"}])
    conversation = client.conversations.create()
    with pytest.raises(openai.BadRequestError) as caught:
        client.conversations.items.list(conversation.id, after="msg_nope")
    assert caught.value.body["param"] == "after"
    response = httpx.post(f"{server.v1}/conversations/{conversation.id}/items", json={"items": []})
    assert response.status_code == 400


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
