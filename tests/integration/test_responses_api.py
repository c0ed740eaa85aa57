"""The Responses API end to end: the openai SDK against a real server with the embedded models.

Qwen2.5-Coder 0.5B (constrained tool calls) covers tools and structured output; SmolLM2 covers plain
text, streaming and background work, where only real tokens matter. file_search runs over a real vector
store (MiniLM embeddings, sqlite-vec, an ingested file), mcp tools over the SDK's real MCP fixture
server through the tool runtime, web_search over the tool runtime's offline index. Token budgets are
small: these run on two shared cores.
"""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import openai
import pytest

from tests.integration.harness import MINILM, QWEN, SMOLLM2, RunningServer, local_config, start_server
from tests.integration.mcp_fixtures import WEB_PAGES, McpFixtureServer

pytestmark = pytest.mark.slow

WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "Current weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}
CATS = (
    "Cats are small domesticated felines. A cat sleeps between twelve and sixteen hours a day, and an adult "
    "cat has thirty teeth. Kittens learn to hunt by playing with their littermates."
)


def _config(**overrides: Any) -> dict[str, Any]:
    config = local_config()
    config["apis"] = [
        "inference", "models", "files", "vector_io", "vector_stores", "tool_runtime", "conversations", "responses",
    ]  # fmt: skip
    config["providers"].update(
        {
            "files": [{"provider_id": "localfs", "provider_type": "inline::localfs", "config": {"root": "files"}}],
            "vector_io": [
                {"provider_id": "sqlite-vec", "provider_type": "inline::sqlite-vec", "config": {"db_path": "v.db"}}
            ],
            "tool_runtime": [
                {"provider_id": "mcp", "provider_type": "remote::model-context-protocol", "config": {}},
                {
                    "provider_id": "websearch",
                    "provider_type": "builtin::websearch",
                    "config": {"documents": str(WEB_PAGES)},
                },
            ],
            "responses": [{"provider_id": "builtin", "provider_type": "inline::builtin", "config": {}}],
        }
    )
    config["jobs"] = {"workers": 2, "lease_seconds": 2, "poll_seconds": 0.1}
    config.update(overrides)
    return config


@pytest.fixture(scope="module")
def mcp_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[McpFixtureServer]:
    server = McpFixtureServer(tmp_path_factory.mktemp("mcp"), name="calc").start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    running = start_server(_config(), tmp_path_factory.mktemp("responses"), timeout=300)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def client(server: RunningServer) -> openai.OpenAI:
    return server.openai(timeout=300)


def _wait(predicate: Callable[[], Any], timeout: float = 180.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def _check_sequence(events: list[Any]) -> list[str]:
    assert [e.sequence_number for e in events] == list(range(events[0].sequence_number, events[-1].sequence_number + 1))
    return [e.type for e in events]


# ---- plain text, storage, streaming ---------------------------------------------------------------------


def test_text_response_is_stored_with_true_usage(client: openai.OpenAI) -> None:
    response = client.responses.create(
        model=SMOLLM2,
        instructions="You are terse.",
        input="Name a colour.",
        max_output_tokens=8,
        temperature=0,
        metadata={"case": "plain"},
    )
    assert response.object == "response" and response.id.startswith("resp_")
    assert response.status in ("completed", "incomplete") and response.model == SMOLLM2
    message = response.output[0]
    assert message.type == "message" and message.role == "assistant" and message.content[0].type == "output_text"
    assert response.output_text and response.metadata == {"case": "plain"}
    usage = response.usage
    assert usage.input_tokens > 5 and 1 <= usage.output_tokens <= 8
    assert usage.total_tokens == usage.input_tokens + usage.output_tokens
    if response.status == "incomplete":
        assert response.incomplete_details.reason == "max_output_tokens"

    stored = client.responses.retrieve(response.id)
    assert stored.model_dump() == response.model_dump()
    items = client.responses.input_items.list(response.id)
    assert [(i.type, i.role, i.content[0].text) for i in items.data] == [("message", "user", "Name a colour.")]

    unstored = client.responses.create(model=SMOLLM2, input="Hi", max_output_tokens=2, store=False)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(unstored.id)
    deleted = client.responses.delete(response.id)
    assert deleted is None or getattr(deleted, "deleted", True)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(response.id)


def test_stream_events_in_order_and_the_same_final_object(client: openai.OpenAI, server: RunningServer) -> None:
    events = list(
        client.responses.create(
            model=SMOLLM2, input="Count: one, two,", max_output_tokens=10, temperature=0, stream=True
        )
    )
    types = _check_sequence(events)
    assert events[0].sequence_number == 0
    assert types[:4] == [
        "response.created", "response.in_progress", "response.output_item.added", "response.content_part.added",
    ]  # fmt: skip
    assert types[-4:-1] == ["response.output_text.done", "response.content_part.done", "response.output_item.done"]
    assert types[-1] in ("response.completed", "response.incomplete")
    assert set(types[4:-4]) == {"response.output_text.delta"}
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert deltas == events[-4].text
    assert events[0].response.status == "in_progress" and events[0].response.output == []
    final = events[-1].response
    assert final.output_text == deltas

    stored = client.responses.retrieve(final.id)
    assert stored.model_dump() == final.model_dump()  # what the stream ended with is what was stored
    again = client.responses.create(model=SMOLLM2, input="Count: one, two,", max_output_tokens=10, temperature=0)
    assert again.output_text == final.output_text and again.status == final.status
    shape = {k for k, v in again.model_dump().items() if v is not None}
    assert shape == {k for k, v in final.model_dump().items() if v is not None}

    raw = httpx.post(
        f"{server.v1}/responses",
        json={"model": SMOLLM2, "input": "Hi", "max_output_tokens": 2, "stream": True},
        timeout=120,
    ).text
    assert raw.startswith("event: response.created\ndata: ")


def test_list_responses(client: openai.OpenAI, server: RunningServer) -> None:
    ids = [client.responses.create(model=SMOLLM2, input=f"Say {w}", max_output_tokens=2).id for w in ("a", "b")]
    page = httpx.get(f"{server.v1}/responses", params={"limit": 1}).json()
    assert page["object"] == "list" and page["data"][0]["id"] == ids[1] and page["has_more"]
    after = httpx.get(f"{server.v1}/responses", params={"limit": 1, "after": ids[1]}).json()
    assert after["data"][0]["id"] == ids[0]


# ---- client tools ---------------------------------------------------------------------------------------


def test_function_tool_round_trip_with_previous_response_id(client: openai.OpenAI) -> None:
    first = client.responses.create(
        model=QWEN,
        input="What's the weather in Paris?",
        tools=[WEATHER],
        tool_choice="required",
        max_output_tokens=64,
        temperature=0,
    )
    assert first.status == "completed"
    calls = [o for o in first.output if o.type == "function_call"]
    assert len(calls) >= 1 and calls[0].name == "get_weather" and calls[0].call_id
    jsonschema.validate(json.loads(calls[0].arguments), WEATHER["parameters"])

    second = client.responses.create(
        model=QWEN,
        previous_response_id=first.id,
        input=[{"type": "function_call_output", "call_id": c.call_id, "output": "Sunny, 21 C"} for c in calls],
        tools=[WEATHER],
        tool_choice="none",
        max_output_tokens=40,
        temperature=0,
    )
    assert second.previous_response_id == first.id and second.status in ("completed", "incomplete")
    assert second.output[0].type == "message" and second.output_text
    # The whole chain reached the model: the first turn's prompt, its call, and the result.
    alone = client.responses.create(
        model=QWEN, input="What's the weather in Paris?", tools=[WEATHER], tool_choice="none", max_output_tokens=1
    )
    assert second.usage.input_tokens > alone.usage.input_tokens + 10
    items = client.responses.input_items.list(second.id, order="asc").data
    assert [i.type for i in items] == ["function_call_output"] * len(calls)

    named = client.responses.create(
        model=QWEN,
        input="Weather in Oslo please",
        tools=[WEATHER, {**WEATHER, "name": "get_time", "description": "Current time in a city"}],
        tool_choice={"type": "function", "name": "get_time"},
        parallel_tool_calls=False,
        max_output_tokens=48,
    )
    assert [o.name for o in named.output if o.type == "function_call"] == ["get_time"]

    with pytest.raises(openai.NotFoundError) as caught:
        client.responses.create(model=QWEN, previous_response_id="resp_missing", input="x")
    assert caught.value.body["param"] == "previous_response_id"


def test_streamed_function_call_events(client: openai.OpenAI) -> None:
    events = list(
        client.responses.create(
            model=QWEN, input="Weather in Rome?", tools=[WEATHER], tool_choice="required", max_output_tokens=48,
            stream=True,
        )
    )  # fmt: skip
    types = _check_sequence(events)
    assert types[0] == "response.created" and types[-1] == "response.completed"
    start = types.index("response.output_item.added")
    assert types[start : start + 4] == [
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
    ]
    done = events[start + 2]
    assert json.loads(done.arguments)["city"] and events[start + 3].item.status == "completed"


def test_json_schema_output_is_validated(client: openai.OpenAI) -> None:
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string"}, "country": {"type": "string"}},
        "required": ["city", "country"],
        "additionalProperties": False,
    }
    response = client.responses.create(
        model=QWEN,
        input="Give the capital city of France and its country.",
        text={"format": {"type": "json_schema", "name": "capital", "schema": schema, "strict": True}},
        max_output_tokens=48,
        temperature=0,
    )
    assert response.status == "completed", response.error
    jsonschema.validate(json.loads(response.output_text), schema)
    assert response.text.format.type == "json_schema" and response.text.format.name == "capital"

    with pytest.raises(openai.BadRequestError) as caught:
        client.responses.create(
            model=QWEN, input="x",
            text={"format": {"type": "json_schema", "name": "bad", "schema": {"type": "objekt"}}},
        )  # fmt: skip
    assert caught.value.body["param"] == "text.format.schema"


def test_validation_errors(client: openai.OpenAI) -> None:
    cases: list[tuple[dict[str, Any], str]] = [
        (
            {"input": [{"role": "user", "content": [{"type": "input_file", "file_url": "http://10.0.0.1/a.pdf"}]}]},
            "input[0].content[0].file_url",
        ),
        ({"input": "x", "tools": [{"type": "code_interpreter", "container": {"type": "auto"}}]}, "tools"),
        ({"input": "x", "tool_choice": "required"}, ""),
        ({"input": "x", "previous_response_id": "resp_1", "conversation": "conv_1"}, ""),
        ({"input": "x", "background": True, "store": False}, ""),
    ]
    for body, param in cases:
        with pytest.raises(openai.BadRequestError) as caught:
            client.responses.create(model=QWEN, **body)
        assert param in (caught.value.body["param"] or ""), caught.value.body
    with pytest.raises(openai.NotFoundError):
        client.responses.create(model="no-such-model", input="x")
    with pytest.raises(openai.BadRequestError):
        client.responses.create(model=MINILM, input="x")


# ---- conversations ----------------------------------------------------------------------------------------


def test_conversation_gets_both_sides(client: openai.OpenAI) -> None:
    conversation = client.conversations.create(items=[{"role": "user", "content": "My name is Ada."}])
    first = client.responses.create(
        model=SMOLLM2, conversation=conversation.id, input="Say hi to me.", max_output_tokens=8
    )
    assert first.conversation.id == conversation.id
    items = client.conversations.items.list(conversation.id, order="asc").data
    assert [(i.type, i.role) for i in items] == [("message", "user"), ("message", "user"), ("message", "assistant")]
    assert items[2].id == first.output[0].id and items[2].content[0].text == first.output_text
    second = client.responses.create(
        model=SMOLLM2, conversation={"id": conversation.id}, input="Again.", max_output_tokens=4
    )
    assert second.usage.input_tokens > first.usage.input_tokens  # it saw the earlier turns
    assert len(client.conversations.items.list(conversation.id).data) == 5
    with pytest.raises(openai.NotFoundError):
        client.responses.create(model=SMOLLM2, conversation="conv_missing", input="x")


# ---- server-side tools ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cats_store(client: openai.OpenAI) -> str:
    file_id = client.files.create(file=("cats.txt", CATS.encode()), purpose="assistants").id
    store = client.vector_stores.create(name="pets", file_ids=[file_id])
    _wait(lambda: client.vector_stores.retrieve(store.id).status == "completed", what="ingestion")
    return store.id


def test_file_search_cites_files(client: openai.OpenAI, cats_store: str) -> None:
    stream = client.responses.create(
        model=QWEN,
        input="How many hours a day does a cat sleep? Answer in one sentence.",
        tools=[{"type": "file_search", "vector_store_ids": [cats_store], "max_num_results": 2}],
        tool_choice={"type": "file_search"},
        include=["file_search_call.results"],
        # Qwen 0.5B searches twice before it answers (about 60 tokens in all); with 60 it was cut
        # inside a third call, which once came back as a message of half-call text.
        max_output_tokens=120,
        temperature=0,
        stream=True,
        extra_body={"max_infer_iters": 3},
    )
    events = list(stream)
    types = _check_sequence(events)
    assert [t for t in types if t.startswith("response.file_search_call")][:3] == [
        "response.file_search_call.in_progress",
        "response.file_search_call.searching",
        "response.file_search_call.completed",
    ]
    final = events[-1].response
    call = next(o for o in final.output if o.type == "file_search_call")
    assert call.status == "completed" and call.queries and call.results
    assert call.results[0].filename == "cats.txt" and "sixteen" in call.results[0].text
    message = next(o for o in final.output if o.type == "message")
    annotations = message.content[0].annotations
    assert annotations and all(a.type == "file_citation" and a.filename == "cats.txt" for a in annotations)
    assert "response.output_text.annotation.added" in types
    assert types.index("response.output_text.annotation.added") < types.index("response.output_text.done")

    plain = client.responses.retrieve(final.id)
    assert next(o for o in plain.output if o.type == "file_search_call").results is None
    full = client.responses.retrieve(final.id, include=["file_search_call.results"])
    assert next(o for o in full.output if o.type == "file_search_call").results[0].file_id


def test_file_search_with_an_unknown_store_is_a_404_naming_it(client: openai.OpenAI, cats_store: str) -> None:
    # An unknown id (a typo, or the docs' "vs_..." placeholder) used to complete quietly with no search.
    with pytest.raises(openai.NotFoundError) as caught:
        client.responses.create(
            model=QWEN,
            input="How long do cats sleep?",
            tools=[{"type": "file_search", "vector_store_ids": [cats_store, "vs_..."]}],
        )
    error = caught.value.body
    assert error["param"] == "tools[0].vector_store_ids[1]" and "vs_..." in error["message"], error


def _mcp_tool(server: McpFixtureServer, **extra: Any) -> dict[str, Any]:
    return {"type": "mcp", "server_label": "calc", "server_url": server.url, **extra}


def test_mcp_tool_call(client: openai.OpenAI, mcp_server: McpFixtureServer) -> None:
    events = list(
        client.responses.create(
            model=QWEN,
            input="Add 2 and 3 with the add tool.",
            tools=[_mcp_tool(mcp_server, require_approval="never", allowed_tools=["add", "explode"])],
            tool_choice={"type": "mcp", "server_label": "calc", "name": "add"},
            max_output_tokens=48,
            stream=True,
            extra_body={"max_infer_iters": 2},
        )
    )
    types = _check_sequence(events)
    assert "response.mcp_list_tools.in_progress" in types and "response.mcp_list_tools.completed" in types
    assert "response.mcp_call_arguments.done" in types and "response.mcp_call.completed" in types
    final = events[-1].response
    listing = final.output[0]
    assert listing.type == "mcp_list_tools" and sorted(t.name for t in listing.tools) == ["add", "explode"]
    call = next(o for o in final.output if o.type == "mcp_call")
    assert call.name == "add" and call.server_label == "calc" and call.status == "completed"
    assert call.output.strip() == str(sum(json.loads(call.arguments).values()))
    assert final.status in ("completed", "incomplete")


def test_failing_mcp_tool_is_a_failed_item(client: openai.OpenAI, mcp_server: McpFixtureServer) -> None:
    response = client.responses.create(
        model=QWEN,
        input="Call explode with message 'kaboom'.",
        tools=[_mcp_tool(mcp_server, require_approval="never")],
        tool_choice={"type": "mcp", "server_label": "calc", "name": "explode"},
        max_output_tokens=40,
        extra_body={"max_infer_iters": 2},
    )
    assert response.status in ("completed", "incomplete") and response.error is None
    call = next(o for o in response.output if o.type == "mcp_call")
    assert call.status == "failed" and "exploded" in json.dumps(call.error.model_dump())

    unreachable = client.responses.create(
        model=SMOLLM2,
        input="Hi",
        tools=[
            {"type": "mcp", "server_label": "gone", "server_url": "http://127.0.0.1:9/mcp", "require_approval": "never"}
        ],
        max_output_tokens=4,
    )
    listing = unreachable.output[0]
    assert listing.type == "mcp_list_tools" and listing.error and unreachable.status != "failed"


def test_mcp_approval_flow(client: openai.OpenAI, mcp_server: McpFixtureServer) -> None:
    tool = _mcp_tool(mcp_server, require_approval={"always": {"tool_names": ["echo"]}})
    first = client.responses.create(
        model=QWEN,
        input="Echo the text 'ping'.",
        tools=[tool],
        tool_choice={"type": "mcp", "server_label": "calc", "name": "echo"},
        max_output_tokens=40,
    )
    request = next(o for o in first.output if o.type == "mcp_approval_request")
    assert request.name == "echo" and request.server_label == "calc" and first.status == "completed"
    assert not any(o.type == "mcp_call" for o in first.output)

    second = client.responses.create(
        model=QWEN,
        previous_response_id=first.id,
        input=[{"type": "mcp_approval_response", "approval_request_id": request.id, "approve": True}],
        tools=[tool],
        tool_choice="none",
        max_output_tokens=30,
    )
    assert second.output[0].type == "mcp_call"  # run first; the listing from the first response is reused
    call = second.output[0]
    assert call.approval_request_id == request.id and call.status == "completed" and call.output.startswith("calc:")
    assert not any(o.type == "mcp_list_tools" for o in second.output)


def test_mcp_authorization_reaches_the_server(client: openai.OpenAI, tmp_path: Path) -> None:
    guarded = McpFixtureServer(tmp_path, token="s3cret", name="vault").start()
    try:
        tool = {"type": "mcp", "server_label": "vault", "server_url": guarded.url, "require_approval": "never"}
        refused = client.responses.create(model=SMOLLM2, input="Hi", tools=[tool], max_output_tokens=2)
        assert refused.output[0].type == "mcp_list_tools" and refused.output[0].error
        allowed = client.responses.create(
            model=QWEN,
            input="Who am I? Use whoami.",
            tools=[{**tool, "authorization": "s3cret", "allowed_tools": ["whoami"]}],
            tool_choice={"type": "mcp", "server_label": "vault", "name": "whoami"},
            max_output_tokens=24,
            extra_body={"max_infer_iters": 1},
        )
        call = next(o for o in allowed.output if o.type == "mcp_call")
        assert call.status == "completed" and call.output == "Bearer s3cret"
        assert all("authorization" not in t.model_dump(exclude_none=True) for t in allowed.tools)  # never echoed
    finally:
        guarded.stop()


def test_web_search(client: openai.OpenAI) -> None:
    response = client.responses.create(
        model=QWEN,
        input="Search the web: which planet has the Great Red Spot?",
        tools=[{"type": "web_search"}],
        tool_choice={"type": "web_search_preview"},
        max_output_tokens=40,
        extra_body={"max_infer_iters": 2},
    )
    call = next(o for o in response.output if o.type == "web_search_call")
    assert call.status == "completed" and call.action.query
    assert any("jupiter" in s.url for s in call.action.sources)


def test_limits_end_incomplete(client: openai.OpenAI, mcp_server: McpFixtureServer) -> None:
    capped = client.responses.create(
        model=QWEN,
        input="Add 1 and 1.",
        tools=[_mcp_tool(mcp_server, require_approval="never")],
        tool_choice={"type": "mcp", "server_label": "calc", "name": "add"},
        max_output_tokens=48,
        extra_body={"max_infer_iters": 1},
    )
    assert capped.status == "incomplete" and capped.incomplete_details.reason == "max_infer_iters"
    assert next(o for o in capped.output if o.type == "mcp_call").status == "completed"
    short = client.responses.create(model=SMOLLM2, input="Tell me a story.", max_output_tokens=3)
    assert short.status == "incomplete" and short.incomplete_details.reason == "max_output_tokens"
    assert short.output[0].status == "incomplete" and short.usage.output_tokens == 3


# ---- background ---------------------------------------------------------------------------------------


def test_background_poll_stream_and_resume_from_sequence(client: openai.OpenAI) -> None:
    queued = client.responses.create(model=SMOLLM2, input="Name three fruits.", max_output_tokens=16, background=True)
    assert queued.status in ("queued", "in_progress") and queued.background
    done = _wait(
        lambda: (r := client.responses.retrieve(queued.id)).status in ("completed", "incomplete") and r,
        what="background response",
    )
    assert done.output_text and done.usage.output_tokens >= 1

    events = list(client.responses.retrieve(queued.id, stream=True))
    types = _check_sequence(events)
    assert types[:3] == ["response.created", "response.queued", "response.in_progress"]
    assert types[-1] in ("response.completed", "response.incomplete")
    assert events[-1].response.output_text == done.output_text
    tail = list(client.responses.retrieve(queued.id, stream=True, starting_after=3))
    assert [e.sequence_number for e in tail] == [e.sequence_number for e in events[4:]]

    live = list(
        client.responses.create(model=SMOLLM2, input="Say yes.", max_output_tokens=4, background=True, stream=True)
    )
    assert _check_sequence(live)[0] == "response.created" and live[-1].type in (
        "response.completed", "response.incomplete",
    )  # fmt: skip
    with pytest.raises(openai.BadRequestError):
        client.responses.retrieve(
            client.responses.create(model=SMOLLM2, input="x", max_output_tokens=1).id, stream=True
        )


def test_background_cancel(client: openai.OpenAI) -> None:
    long = client.responses.create(
        model=SMOLLM2, input="Write a very long story about a dragon.", max_output_tokens=600, background=True
    )
    _wait(lambda: client.responses.retrieve(long.id).status == "in_progress", what="start")
    cancelled = client.responses.cancel(long.id)
    assert cancelled.status == "cancelled"
    assert client.responses.retrieve(long.id).status == "cancelled"
    with pytest.raises(openai.BadRequestError):
        client.responses.cancel(client.responses.create(model=SMOLLM2, input="x", max_output_tokens=1).id)


def test_background_response_survives_a_restart(tmp_path: Path) -> None:
    config = local_config()
    config["providers"]["inference"] = [
        {
            "provider_id": "llama-cpp",
            "provider_type": "inline::llama-cpp",
            "config": {"models": [{"name": SMOLLM2, "packaged": SMOLLM2, "n_ctx": 2048}]},
        }
    ]
    config["apis"] = ["inference", "models", "conversations", "responses"]
    config["providers"]["responses"] = [{"provider_id": "builtin", "provider_type": "inline::builtin"}]
    config["jobs"] = {"workers": 1, "lease_seconds": 2, "poll_seconds": 0.1}
    first = start_server(config, tmp_path, timeout=300)
    try:
        client = first.openai(timeout=120)
        response = client.responses.create(
            model=SMOLLM2, input="Write a long story about a lighthouse.", max_output_tokens=150, background=True
        )
        _wait(lambda: client.responses.retrieve(response.id).status == "in_progress", what="start")
        seen = _raw_events(first, response.id, until_deltas=3)  # a client reading live, a few tokens in
        assert _deltas(seen), [e["type"] for e in seen]
        time.sleep(0.3)  # the first attempt writes more after the client's cursor
    finally:
        first.stop(signal.SIGKILL)
    cursor = seen[-1]["sequence_number"]
    second = start_server(config, tmp_path, port=first.port, timeout=300)
    try:
        client = second.openai(timeout=120)
        final = _wait(
            lambda: (r := client.responses.retrieve(response.id)).status in ("completed", "incomplete", "failed") and r,
            timeout=600,  # two shared cores: a loaded machine can slow the model to a token a second
            what="resumed response",
        )
        assert final.status in ("completed", "incomplete"), final.error
        text = final.output_text
        events = _raw_events(second, response.id)
        numbers = [e["sequence_number"] for e in events]
        assert numbers == sorted(set(numbers)) and numbers[:2] == [0, 1]  # never reused, in order
        assert numbers[2] > cursor  # the resumed run numbers after everything the first one wrote
        types = [e["type"] for e in events]
        # One attempt only: the interrupted attempt's events were discarded, so a replay shows one
        # in_progress, one output item at output_index 0, and deltas that add up to the final text.
        assert types[:3] == ["response.created", "response.queued", "response.in_progress"]
        assert types.count("response.in_progress") == 1 and types.count("response.output_item.added") == 1
        assert _deltas(events) == text
        # A client resuming from a cursor inside the interrupted attempt gets the new attempt alone.
        resumed = _raw_events(second, response.id, starting_after=cursor)
        assert resumed[0]["type"] == "response.in_progress" and _deltas(resumed) == text
        # The SDK's stream helper (its accumulator refuses a second output_item.added at one
        # output_index) consumes the replay and ends on the same text, with no duplication.
        with client.responses.stream(response_id=response.id) as stream:
            streamed = list(stream)  # get_final_response() wants "completed"; this may end "incomplete"
        assert streamed[-1].type in ("response.completed", "response.incomplete")
        assert streamed[-1].response.output_text == text
        assert "".join(e.delta for e in streamed if e.type == "response.output_text.delta") == text
    finally:
        second.stop()


def _deltas(events: list[dict[str, Any]]) -> str:
    return "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")


def _raw_events(
    server: RunningServer, response_id: str, starting_after: int | None = None, until_deltas: int | None = None
) -> list[dict[str, Any]]:
    """The event log as it stands (the stream ends at once when the response is over), or what a live
    reader has read once it got ``until_deltas`` text deltas."""
    out: list[dict[str, Any]] = []
    params = {"stream": "true", **({"starting_after": str(starting_after)} if starting_after is not None else {})}
    deltas = 0
    timeout = 5 if until_deltas is None else 120  # a live reader waits for the model's tokens
    with httpx.stream("GET", f"{server.v1}/responses/{response_id}", params=params, timeout=timeout) as r:
        try:
            for line in r.iter_lines():
                if line.startswith("data: {"):
                    out.append(json.loads(line[6:]))
                    deltas += out[-1]["type"] == "response.output_text.delta"
                if until_deltas is not None and deltas >= until_deltas:
                    break
        except httpx.ReadTimeout:
            pass
    return out
