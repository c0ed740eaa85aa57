"""``client.api(name)``, the SDK's generic resource, on built-in APIs against the real app in process.

Real components: the app over ``httpx.ASGITransport`` with the echo provider (an installed plugin) for
chat, and the SQLite conversations store. The typed accessor reads the route tables through the
``underlay.apis`` entry points; ``typed=False`` reads the server's ``/v1/inspect/routes`` and
``/openapi.json`` instead. The external Notes API gets the same over a real server with two tenants in
``tests/integration/test_external_api.py``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import openai
import pytest

from tests.inprocess.harness import InProcessServer, echo_config, serve_in_process
from underlay import AsyncUnderlay
from underlay.api.conversations import Conversation, ConversationDeleted
from underlay.api.inference import ChatCompletion, ChatCompletionChunk


@pytest.fixture(scope="module")
async def app(tmp_path_factory: pytest.TempPathFactory, echo_plugin: Path) -> AsyncIterator[InProcessServer]:
    config = echo_config(tmp_path_factory.mktemp("generic"), apis=["inference", "models", "conversations"])
    async with serve_in_process(config) as served:
        yield served


@pytest.fixture
def client(app: InProcessServer) -> AsyncUnderlay:
    return AsyncUnderlay(base_url=app.v1, max_retries=0, http_client=app.http)


HELLO = [{"role": "user", "content": "one two three"}]


async def test_a_built_in_api_through_the_accessor_is_typed_by_its_models(client: AsyncUnderlay) -> None:
    conversations = client.api("conversations")
    assert client.api("conversations") is conversations  # one resource per client and name
    made = await conversations.create_conversation(metadata={"topic": "otters"})
    assert isinstance(made, Conversation) and made.metadata == {"topic": "otters"}
    again = await conversations.retrieve_conversation(conversation_id=made.id)
    assert isinstance(again, Conversation) and again.id == made.id
    updated = await conversations.update_conversation({"metadata": {"topic": "rafts"}}, conversation_id=made.id)
    assert updated.metadata == {"topic": "rafts"}
    gone = await conversations.delete_conversation(conversation_id=made.id)
    assert isinstance(gone, ConversationDeleted) and gone.deleted
    with pytest.raises(openai.NotFoundError, match=made.id):  # the error envelope, as openai's exception
        await conversations.retrieve_conversation(conversation_id=made.id)
    with pytest.raises(openai.BadRequestError) as caught:  # the server validates, naming the field
        await conversations.create_conversation(colour="blue")
    assert caught.value.body["param"] == "colour"  # type: ignore[index]


async def test_a_route_that_may_stream_streams_typed_events_when_asked(client: AsyncUnderlay) -> None:
    inference = client.api("inference")
    answer = await inference.openai_chat_completion(model="echo", messages=HELLO)
    assert isinstance(answer, ChatCompletion) and answer.choices[0].message.content
    stream = await inference.openai_chat_completion(model="echo", messages=HELLO, stream=True)
    assert isinstance(stream, openai.AsyncStream)
    chunks = [chunk async for chunk in stream]
    assert chunks and all(isinstance(c, ChatCompletionChunk) for c in chunks)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == answer.choices[0].message.content


async def test_without_the_package_the_server_describes_the_api_and_answers_are_json(client: AsyncUnderlay) -> None:
    typed = await client.api("conversations").operations()
    untyped_api = client.api("conversations", typed=False)
    untyped = await untyped_api.operations()
    assert {name: (op.method, op.path) for name, op in untyped.items()} == {
        name: (op.method, op.path) for name, op in typed.items()
    }
    models = await client.api("models", typed=False).operations()  # {model_id:path} routes too
    assert {name: (op.method, op.path) for name, op in models.items()} == {
        name: (op.method, op.path) for name, op in (await client.api("models").operations()).items()
    }
    described = await client.api("models", typed=False).retrieve_model(model_id="echo/echo")
    assert described["id"] == "echo/echo"
    made = await untyped_api.create_conversation(metadata={"k": "v"})
    assert isinstance(made, dict) and made["object"] == "conversation" and made["metadata"] == {"k": "v"}
    items = await untyped_api.list_items(conversation_id=made["id"], limit=5)
    assert items["object"] == "list" and items["data"] == []

    stream = await client.api("inference", typed=False).openai_chat_completion(
        model="echo", messages=HELLO, stream=True
    )
    events: list[Any] = [event async for event in stream]
    assert events and all(isinstance(e, dict) and e["object"] == "chat.completion.chunk" for e in events)


async def test_mistakes_are_clear_errors(client: AsyncUnderlay) -> None:
    with pytest.raises(AttributeError, match="has no route handler 'create_notes'; it has: .*create_conversation"):
        await client.api("conversations").create_notes()
    with pytest.raises(TypeError, match="needs the keyword argument 'conversation_id'"):
        await client.api("conversations").retrieve_conversation()
    with pytest.raises(LookupError, match="API 'notes' has no routes on this server"):
        await client.api("notes", typed=False).list_notes()
    with pytest.raises(ValueError, match="must be lower-case"):
        client.api("Notes; DROP")
