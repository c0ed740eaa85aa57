"""The OpenAI Agents SDK (``openai-agents``) runs unchanged against Underlay: only the base URL differs.

A real Agents SDK ``Agent`` and ``Runner`` drive a real server on loopback with the embedded Qwen 0.5B
model (greedy decoding), for the three things an agent framework needs from us: a function tool called
and its result turned into an answer (over Responses and over Chat Completions, plain and streamed), and
retrieval with the SDK's ``FileSearchTool`` over an Underlay vector store embedded with MiniLM. Tracing
is switched off: the SDK would otherwise export spans to OpenAI's cloud, and these tests are offline.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from agents import (
    Agent,
    FileSearchTool,
    ModelSettings,
    OpenAIChatCompletionsModel,
    OpenAIResponsesModel,
    Runner,
    function_tool,
    set_tracing_disabled,
)
from agents.items import MessageOutputItem, ToolCallItem, ToolCallOutputItem
from openai import AsyncOpenAI

from tests.integration.harness import QWEN, RunningServer, local_config, start_server

pytestmark = pytest.mark.slow

ASK = "What's the weather in Paris right now?"
CAT = b"Whiskers is the name of the cat that lives at the lighthouse. Whiskers is orange."


@function_tool
def get_weather(city: str) -> str:
    """Current weather for a city."""
    return f"It is sunny and 21 C in {city}."


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    set_tracing_disabled(True)
    config = local_config()
    config["apis"] = ["inference", "models", "files", "vector_io", "vector_stores", "tool_runtime", "responses"]
    config["providers"].update(
        {
            "files": [{"provider_id": "localfs", "provider_type": "inline::localfs", "config": {"root": "files"}}],
            "vector_io": [
                {"provider_id": "sqlite-vec", "provider_type": "inline::sqlite-vec", "config": {"db_path": "v.db"}}
            ],
            "tool_runtime": [{"provider_id": "mcp", "provider_type": "remote::model-context-protocol", "config": {}}],
            "responses": [{"provider_id": "builtin", "provider_type": "inline::builtin", "config": {}}],
        }
    )
    running = start_server(config, tmp_path_factory.mktemp("agents-sdk"), timeout=300)
    yield running
    running.stop()


def _client(server: RunningServer) -> AsyncOpenAI:
    return AsyncOpenAI(base_url=server.v1, api_key="unused", max_retries=0, timeout=600)


def _kinds(items: list[object]) -> list[str]:
    return [type(item).__name__ for item in items]


@pytest.mark.parametrize("model_class", [OpenAIResponsesModel, OpenAIChatCompletionsModel])
def test_function_tool_is_called_and_its_result_answers(server: RunningServer, model_class: type) -> None:
    agent = Agent(
        name="weather",
        instructions="Use tools to answer.",
        tools=[get_weather],
        model=model_class(model=QWEN, openai_client=_client(server)),
        model_settings=ModelSettings(temperature=0, max_tokens=200),
    )
    result = asyncio.run(Runner.run(agent, ASK))
    calls = [item for item in result.new_items if isinstance(item, ToolCallItem)]
    outputs = [item for item in result.new_items if isinstance(item, ToolCallOutputItem)]
    assert len(calls) == 1 and len(outputs) == 1, _kinds(result.new_items)
    assert "Paris" in str(outputs[0].output)
    assert isinstance(result.new_items[-1], MessageOutputItem)
    assert "21" in str(result.final_output), result.final_output


def test_streamed_run_reports_the_tool_call_and_the_answer(server: RunningServer) -> None:
    agent = Agent(
        name="weather",
        instructions="Use tools to answer.",
        tools=[get_weather],
        model=OpenAIResponsesModel(model=QWEN, openai_client=_client(server)),
        model_settings=ModelSettings(temperature=0, max_tokens=200),
    )

    async def run() -> tuple[list[str], list[str], str]:
        streamed = Runner.run_streamed(agent, ASK)
        names, deltas = [], []
        async for event in streamed.stream_events():
            if event.type == "run_item_stream_event":
                names.append(event.name)
            elif event.type == "raw_response_event" and event.data.type == "response.output_text.delta":
                deltas.append(event.data.delta)
        return names, deltas, str(streamed.final_output)

    names, deltas, final = asyncio.run(run())
    assert names[:2] == ["tool_called", "tool_output"], names
    assert "message_output_created" in names
    assert len(deltas) > 1 and "".join(deltas) == final
    assert "21" in final


def test_file_search_tool_reads_an_underlay_vector_store(server: RunningServer) -> None:
    client = _client(server)

    async def run() -> tuple[list[str], str]:
        file = await client.files.create(file=("cats.txt", CAT), purpose="assistants")
        store = await client.vector_stores.create(name="cats", file_ids=[file.id])
        for _ in range(300):
            store = await client.vector_stores.retrieve(store.id)
            if store.status != "in_progress":
                break
            await asyncio.sleep(0.2)
        assert store.status == "completed" and store.file_counts.completed == 1, store
        agent = Agent(
            name="librarian",
            instructions="Answer from the files.",
            tools=[FileSearchTool(vector_store_ids=[store.id], max_num_results=2)],
            model=OpenAIResponsesModel(model=QWEN, openai_client=client),
            model_settings=ModelSettings(temperature=0, max_tokens=150, tool_choice="file_search"),
        )
        result = await Runner.run(agent, "What colour is the lighthouse cat?")
        return _kinds(result.new_items), str(result.final_output)

    kinds, final = asyncio.run(run())
    assert kinds[0] == "ToolCallItem" and kinds[-1] == "MessageOutputItem", kinds
    assert "orange" in final.lower(), final
