"""LangChain (``langchain-openai``) runs unchanged against Underlay: only the base URL differs.

Real ``ChatOpenAI`` and ``OpenAIEmbeddings`` objects drive a real server on loopback with the embedded
Qwen 0.5B chat model (greedy decoding) and MiniLM embeddings: a ``@tool`` bound with ``bind_tools`` is
called, run and answered from (the loop a LangChain agent runs); the same call streams as chunks that add
up to the whole call; and retrieval works both ways a LangChain app does it, through LangChain's own
vector store on Underlay embeddings and through an Underlay vector store's search. ``tiktoken`` would
fetch its encodings from the internet, so the embeddings class is told not to count tokens client-side
(``check_embedding_ctx_length=False``) -- the server bounds its own input.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import openai
import pytest
from langchain_core.messages import AIMessageChunk, BaseMessage, HumanMessage, ToolMessage
from langchain_core.tools import tool
from langchain_core.vectorstores import InMemoryVectorStore
from langchain_openai import ChatOpenAI, OpenAIEmbeddings

from tests.integration.harness import MINILM, QWEN, RunningServer, local_config, start_server

pytestmark = pytest.mark.slow

ASK = "What's the weather in Paris right now?"
FACTS = [
    "Whiskers is the name of the cat that lives at the lighthouse. Whiskers is orange.",
    "A rocket reaches orbit by burning propellant in stages.",
    "Knead the bread dough for ten minutes, then let it rise for an hour.",
]


@tool
def get_weather(city: str) -> str:
    """Current weather for a city."""
    return f"It is sunny and 21 C in {city}."


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    config = local_config()
    config["apis"] = ["inference", "models", "files", "vector_io", "vector_stores"]
    config["providers"].update(
        {
            "files": [{"provider_id": "localfs", "provider_type": "inline::localfs", "config": {"root": "files"}}],
            "vector_io": [
                {"provider_id": "sqlite-vec", "provider_type": "inline::sqlite-vec", "config": {"db_path": "v.db"}}
            ],
        }
    )
    running = start_server(config, tmp_path_factory.mktemp("langchain"), timeout=300)
    yield running
    running.stop()


def _chat(server: RunningServer) -> ChatOpenAI:
    return ChatOpenAI(
        model=QWEN, base_url=server.v1, api_key="unused", temperature=0, max_tokens=200, max_retries=0, timeout=600
    )


def _embeddings(server: RunningServer) -> OpenAIEmbeddings:
    return OpenAIEmbeddings(
        model=MINILM, base_url=server.v1, api_key="unused", check_embedding_ctx_length=False, max_retries=0
    )


def test_bound_tool_is_called_run_and_answered_from(server: RunningServer) -> None:
    llm = _chat(server).bind_tools([get_weather])
    messages: list[BaseMessage] = [HumanMessage(ASK)]
    first = llm.invoke(messages)
    (call,) = first.tool_calls
    assert call["name"] == "get_weather" and "paris" in call["args"]["city"].lower(), first
    messages += [first, ToolMessage(get_weather.invoke(call["args"]), tool_call_id=call["id"])]
    answer = llm.invoke(messages)
    assert not answer.tool_calls and "21" in str(answer.content), answer


def test_streamed_tool_call_chunks_add_up_to_the_call(server: RunningServer) -> None:
    llm = _chat(server).bind_tools([get_weather])
    chunks = list(llm.stream([HumanMessage(ASK)]))
    assert len(chunks) > 1 and all(isinstance(c, AIMessageChunk) for c in chunks)
    whole = chunks[0]
    for chunk in chunks[1:]:
        whole += chunk
    (call,) = whole.tool_calls
    assert call["name"] == "get_weather" and "paris" in call["args"]["city"].lower(), whole
    assert whole.response_metadata.get("finish_reason") == "tool_calls"


def test_streamed_answer_arrives_in_pieces(server: RunningServer) -> None:
    pieces = [chunk.content for chunk in _chat(server).stream("Say hello in one short sentence.")]
    assert sum(1 for piece in pieces if piece) > 1
    assert "hello" in "".join(pieces).lower()


def test_langchain_vector_store_on_underlay_embeddings(server: RunningServer) -> None:
    embeddings = _embeddings(server)
    assert len(embeddings.embed_query("cat")) == 384  # MiniLM's width: the server's model, not a default
    store = InMemoryVectorStore.from_texts(FACTS, embeddings)
    (best,) = store.as_retriever(search_kwargs={"k": 1}).invoke("What colour is the lighthouse cat?")
    assert best.page_content == FACTS[0]
    prompt = f"Context: {best.page_content}\n\nQuestion: What colour is the lighthouse cat? Answer in one word."
    assert "orange" in str(_chat(server).invoke(prompt).content).lower()


def test_underlay_vector_store_search_feeds_a_langchain_chat(server: RunningServer) -> None:
    client = server.openai(timeout=600)
    files = [
        client.files.create(file=(f"fact{i}.txt", text.encode()), purpose="assistants") for i, text in enumerate(FACTS)
    ]
    store = client.vector_stores.create(name="facts", file_ids=[f.id for f in files])
    _wait(client, store.id)
    hits = client.vector_stores.search(store.id, query="What colour is the lighthouse cat?", max_num_results=1)
    (hit,) = hits.data
    text = hit.content[0].text
    assert "orange" in text
    question = "What colour is the lighthouse cat? Answer in one word."
    answer = _chat(server).invoke(f"Context: {text}\n\nQuestion: {question}")
    assert "orange" in str(answer.content).lower()


def _wait(client: openai.OpenAI, store_id: str) -> None:
    for _ in range(300):
        store = client.vector_stores.retrieve(store_id)
        if store.status != "in_progress":
            assert store.status == "completed" and store.file_counts.completed == len(FACTS), store
            return
        time.sleep(0.2)
    raise AssertionError(f"vector store {store_id} still in progress")
