"""The Conversations API in process: life cycle, item normalisation, pagination, ``include``, validation.

The app needs no model (``apis: [conversations]``). On a real server the API keeps its end-to-end test
in ``tests/integration/test_openai_strict_sdk.py::test_conversations`` (every call, strict SDK
validation), and Responses continue conversations in ``tests/integration/test_responses_api.py``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import openai
import pytest

from tests.inprocess.harness import InProcessServer, serve_in_process


@pytest.fixture(scope="module")
async def app(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[InProcessServer]:
    state_dir = tmp_path_factory.mktemp("inprocess-conversations")
    async with serve_in_process({"state_dir": str(state_dir), "apis": ["conversations"]}) as server:
        yield server


@pytest.fixture(scope="module")
def client(app: InProcessServer) -> openai.AsyncOpenAI:
    return app.openai()


async def test_create_retrieve_update_delete(client: openai.AsyncOpenAI) -> None:
    conversation = await client.conversations.create(
        items=[{"role": "user", "content": "Hello"}, {"type": "message", "role": "assistant", "content": "Hi!"}],
        metadata={"topic": "greeting"},
    )
    assert conversation.id.startswith("conv_") and conversation.object == "conversation"
    assert conversation.metadata == {"topic": "greeting"}
    fetched = await client.conversations.retrieve(conversation.id)
    assert fetched.id == conversation.id and fetched.created_at == conversation.created_at

    updated = await client.conversations.update(conversation.id, metadata={"topic": "farewell", "n": "2"})
    assert updated.metadata == {"topic": "farewell", "n": "2"}
    assert (await client.conversations.retrieve(conversation.id)).metadata == {"topic": "farewell", "n": "2"}

    deleted = await client.conversations.delete(conversation.id)
    assert deleted.deleted and deleted.object == "conversation.deleted" and deleted.id == conversation.id
    with pytest.raises(openai.NotFoundError) as caught:
        await client.conversations.retrieve(conversation.id)
    assert isinstance(caught.value.body, dict) and caught.value.body["code"] == "conversation_not_found"
    with pytest.raises(openai.NotFoundError):
        await client.conversations.items.list(conversation.id)


async def test_items_are_normalized_in_openai_shapes(client: openai.AsyncOpenAI) -> None:
    conversation = await client.conversations.create(items=[{"role": "user", "content": "What is 2+2?"}])
    added = await client.conversations.items.create(
        conversation.id,
        items=[
            {"type": "function_call", "call_id": "call_1", "name": "add", "arguments": '{"a": 2, "b": 2}'},
            {"type": "function_call_output", "call_id": "call_1", "output": "4"},
            {"role": "assistant", "content": [{"type": "output_text", "text": "It is 4.", "annotations": []}]},
        ],
    )
    assert [i.type for i in added.data] == ["function_call", "function_call_output", "message"]
    assert added.first_id == added.data[0].id and added.last_id == added.data[-1].id and not added.has_more

    items: list = (await client.conversations.items.list(conversation.id, order="asc")).data
    assert [i.type for i in items] == ["message", "function_call", "function_call_output", "message"]
    user = items[0]
    assert user.role == "user" and user.status == "completed" and user.id.startswith("msg_")
    assert user.content[0].type == "input_text" and user.content[0].text == "What is 2+2?"
    assert items[1].call_id == "call_1" and items[1].name == "add"
    assert items[3].content[0].type == "output_text" and items[3].content[0].text == "It is 4."

    one = await client.conversations.items.retrieve(items[1].id, conversation_id=conversation.id)
    assert one.id == items[1].id and one.type == "function_call"
    after_delete = await client.conversations.items.delete(items[1].id, conversation_id=conversation.id)
    assert after_delete.id == conversation.id and after_delete.object == "conversation"
    with pytest.raises(openai.NotFoundError):
        await client.conversations.items.retrieve(items[1].id, conversation_id=conversation.id)
    assert len((await client.conversations.items.list(conversation.id)).data) == 3


async def test_items_pagination(client: openai.AsyncOpenAI) -> None:
    conversation = await client.conversations.create(items=[{"role": "user", "content": f"m{i}"} for i in range(7)])

    def texts(page: list) -> list[str]:
        return [item.content[0].text for item in page]

    every = [item async for item in client.conversations.items.list(conversation.id, order="asc", limit=3)]
    assert texts(every) == [f"m{i}" for i in range(7)]  # auto-pagination with after= across three pages
    newest = await client.conversations.items.list(conversation.id, limit=2)  # default order: newest first
    assert texts(newest.data) == ["m6", "m5"] and newest.has_more
    page = await client.conversations.items.list(conversation.id, limit=2, after=newest.last_id)
    assert texts(page.data) == ["m4", "m3"]
    last = await client.conversations.items.list(conversation.id, order="asc", after=page.data[0].id)
    assert texts(last.data) == ["m5", "m6"] and not last.has_more


async def test_include_controls_search_results(client: openai.AsyncOpenAI, app: InProcessServer) -> None:
    call = {
        "type": "file_search_call",
        "id": "fs_test1",
        "queries": ["cats"],
        "status": "completed",
        "results": [{"file_id": "file-1", "filename": "cats.txt", "score": 0.9, "text": "Cats purr."}],
    }
    conversation = await client.conversations.create(items=[call])
    plain = await client.conversations.items.retrieve("fs_test1", conversation_id=conversation.id)
    assert plain.type == "file_search_call" and plain.results is None
    full = await client.conversations.items.retrieve(
        "fs_test1", conversation_id=conversation.id, include=["file_search_call.results"]
    )
    assert full.type == "file_search_call" and full.results is not None and full.results[0].text == "Cats purr."
    listed = await app.http.get(
        f"/v1/conversations/{conversation.id}/items", params=[("include[]", "file_search_call.results")]
    )
    assert listed.json()["data"][0]["results"][0]["filename"] == "cats.txt"


async def test_validation_errors(client: openai.AsyncOpenAI, app: InProcessServer) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        await client.conversations.create(metadata={f"k{i}": "v" for i in range(17)})
    assert isinstance(caught.value.body, dict) and caught.value.body["param"] == "metadata"
    with pytest.raises(openai.BadRequestError) as caught:
        await client.conversations.create(items=[{"role": "robot", "content": "x"}])
    assert isinstance(caught.value.body, dict) and "items" in (caught.value.body["param"] or "")
    with pytest.raises(openai.BadRequestError):
        await client.conversations.create(items=[{"type": "item_reference", "id": "msg_1"}])
    conversation = await client.conversations.create()
    with pytest.raises(openai.BadRequestError) as caught:
        await client.conversations.items.list(conversation.id, after="msg_nope")
    assert isinstance(caught.value.body, dict) and caught.value.body["param"] == "after"
    response = await app.http.post(f"/v1/conversations/{conversation.id}/items", json={"items": []})
    assert response.status_code == 400
