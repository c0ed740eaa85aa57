"""The SDK's own resources, shape by shape, against the real app in process (``AsyncUnderlay`` over the
harness's ASGI transport), and ``Underlay.in_process`` (a stack served on a loopback thread).

Real components throughout: the echo provider (an installed plugin) for chat and embeddings (``echo-embed``,
8 dimensions), the ``pii`` shield, sqlite-vec vector stores, the builtin ``file_search`` tool and a real
MCP fixture server (a subprocess) for tool groups. The real-server test is
``tests/integration/test_client_sdk.py``.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from openai import pagination

from tests.inprocess.harness import InProcessServer, echo_config, serve_in_process
from tests.integration.harness import free_port
from tests.integration.mcp_fixtures import McpFixtureServer
from underlay import AsyncUnderlay, Underlay
from underlay.api.models import OpenAIModel
from underlay.api.providers import ProviderInfo
from underlay.api.safety import DeletedShield, RunShieldResponse, ShieldMessage, ShieldObject
from underlay.api.telemetry import Span, SpanTree, Trace
from underlay.api.tool_runtime import ToolDef, ToolGroup, ToolGroupDeleted, ToolInvocationResult
from underlay.api.vector_io import Chunk, InsertChunksResponse, QueryChunksResponse
from underlay.core.config import ConfigError

ECHO = {"provider_id": "echo", "provider_type": "remote::echo-test", "config": {}}
DEAD = f"http://127.0.0.1:{free_port()}/v1"
"""A closed loopback port: the upstream of the ``down`` shield, which the server answers with a real 503."""


def sdk_config(state_dir: Path) -> dict[str, Any]:
    return echo_config(
        state_dir,
        apis=["inference", "models", "files", "vector_io", "vector_stores", "tool_runtime", "safety", "telemetry"],
        providers={
            "inference": [ECHO],
            "files": [{"provider_id": "localfs", "provider_type": "inline::localfs", "config": {"root": "files"}}],
            "vector_io": [
                {"provider_id": "sqlite-vec", "provider_type": "inline::sqlite-vec", "config": {"db_path": "v.db"}}
            ],
            "tool_runtime": [
                {"provider_id": "file-search", "provider_type": "builtin::file_search"},
                {"provider_id": "mcp", "provider_type": "remote::model-context-protocol"},
            ],
            "safety": [
                {"provider_id": "pii", "provider_type": "inline::pii"},
                {"provider_id": "dead", "provider_type": "remote::passthrough", "config": {"base_url": DEAD}},
            ],
        },
        shields=[{"shield_id": "pii", "provider_id": "pii"}, {"shield_id": "down", "provider_id": "dead"}],
        vector_stores={"default_embedding_model": "echo/echo-embed"},
        telemetry={"flush_seconds": 0.05},
    )


@pytest.fixture(scope="module")
def mcp_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[McpFixtureServer]:
    server = McpFixtureServer(tmp_path_factory.mktemp("sdk-mcp"), name="sdk-fixture").start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
async def app(tmp_path_factory: pytest.TempPathFactory, echo_plugin: Path) -> AsyncIterator[InProcessServer]:
    async with serve_in_process(sdk_config(tmp_path_factory.mktemp("sdk-state"))) as served:
        yield served


@pytest.fixture
def client(app: InProcessServer) -> AsyncUnderlay:
    return AsyncUnderlay(base_url=app.v1, max_retries=0, http_client=app.http)


async def _store_with_chunks(client: AsyncUnderlay, name: str) -> str:
    store = await client.vector_stores.create(name=name)
    chunks: list[Chunk | dict[str, Any]] = [
        Chunk(chunk_id="c1", document_id="doc-cats", content="cats sleep all afternoon", attributes={"kind": "pet"}),
        {"chunk_id": "c2", "document_id": "doc-rust", "content": "rust borrows are checked", "attributes": {}},
    ]
    inserted = await client.vector_io.insert(vector_store_id=store.id, chunks=chunks)
    assert isinstance(inserted, InsertChunksResponse) and (inserted.vector_store_id, inserted.inserted) == (store.id, 2)
    return store.id


async def test_models_register_describe_and_openais_own_methods(client: AsyncUnderlay) -> None:
    registered = await client.models.register(
        model_id="sdk-alias-model", provider_id="echo", provider_model_id="echo", aliases=["sdk-alias-2"]
    )
    assert isinstance(registered, OpenAIModel)
    assert (registered.id, registered.provider_id, registered.aliases) == ("sdk-alias-model", "echo", ["sdk-alias-2"])
    described = await client.models.describe("sdk-alias-model")
    assert isinstance(described, OpenAIModel) and described.aliases == ["sdk-alias-2"]
    assert described.model_type == "llm" and described.provider_resource_id == "echo"
    listed = await client.models.list()  # OpenAI's own method and page type
    assert isinstance(listed, pagination.AsyncPage) and "sdk-alias-model" in [m.id for m in listed.data]
    assert isinstance(listed.data[0], openai.types.Model)
    deleted = await client.models.delete("sdk-alias-model")
    assert deleted.deleted is True
    with pytest.raises(openai.NotFoundError, match="sdk-alias-model"):
        await client.models.describe("sdk-alias-model")


async def test_shields_and_run_shield(client: AsyncUnderlay) -> None:
    page = await client.shields.list()
    assert isinstance(page, pagination.AsyncPage)
    assert [(s.id, s.provider_id) for s in page.data] == [("down", "dead"), ("pii", "pii")]
    assert isinstance(page.data[1], ShieldObject)
    made = await client.shields.register(shield_id="sdk-pii", provider_id="pii", params={"entities": ["email"]})
    assert isinstance(made, ShieldObject) and (made.id, made.params) == ("sdk-pii", {"entities": ["email"]})
    assert (await client.shields.retrieve("sdk-pii")).provider_shield_id == "sdk-pii"
    assert [s.id async for s in client.shields.list()] == ["down", "pii", "sdk-pii"]  # auto-paging iteration

    flagged = await client.safety.run_shield(
        shield_id="sdk-pii", messages=[ShieldMessage(role="user", content="write to ada@example.com")]
    )
    assert isinstance(flagged, RunShieldResponse) and flagged.violation is not None
    assert (
        flagged.violation.violation_level == "error"
        and "pii:email" in flagged.violation.metadata["underlay_categories"]
    )
    clean = await client.safety.run_shield(shield_id="pii", messages=[{"role": "user", "content": "hello there"}])
    assert clean.violation is None

    gone = await client.shields.delete("sdk-pii")
    assert isinstance(gone, DeletedShield) and gone.deleted
    with pytest.raises(openai.NotFoundError, match="sdk-pii"):
        await client.shields.retrieve("sdk-pii")
    with pytest.raises(openai.BadRequestError) as caught:  # the server's 400, naming the field
        await client.safety.run_shield(shield_id="pii", messages=[])
    assert caught.value.body["param"] == "messages"  # type: ignore[index]


async def test_upstream_failures_are_retried_as_openai_calls_are(app: InProcessServer) -> None:
    """The server's 503 (the shield's upstream is down) is retried by the client's own ``max_retries``, then
    raised as ``openai.InternalServerError`` naming the provider: our resources use OpenAI's machinery."""
    client = AsyncUnderlay(base_url=app.v1, max_retries=2, http_client=app.http)
    tag = f"retry-{time.monotonic_ns()}"
    with pytest.raises(openai.InternalServerError) as caught:
        await client.safety.run_shield(
            shield_id="down", messages=[{"role": "user", "content": "x"}], extra_headers={"x-request-id": tag}
        )
    assert caught.value.status_code == 503 and "dead" in caught.value.message
    sent = caught.value.response.request.headers
    assert sent["x-stainless-retry-count"] == "2" and sent["x-request-id"] == tag  # the third try, our header


async def test_providers_list(client: AsyncUnderlay) -> None:
    page = await client.providers.list()
    assert isinstance(page, pagination.AsyncPage) and all(isinstance(p, ProviderInfo) for p in page.data)
    assert ("safety", "pii", "inline::pii") in [(p.api, p.provider_id, p.provider_type) for p in page.data]


async def test_vector_io_insert_and_query(client: AsyncUnderlay) -> None:
    store_id = await _store_with_chunks(client, "sdk-vio")
    found = await client.vector_io.query(vector_store_id=store_id, query="cats", search_mode="keyword")
    assert isinstance(found, QueryChunksResponse)
    assert [r.chunk.chunk_id for r in found.data] == ["c1"] and isinstance(found.data[0].chunk, Chunk)
    filtered = await client.vector_io.query(
        vector_store_id=store_id,
        query="checked borrows",
        max_num_results=5,
        filters={"type": "eq", "key": "kind", "value": "pet"},
    )
    assert [r.chunk.chunk_id for r in filtered.data] == ["c1"]
    with pytest.raises(openai.BadRequestError, match="query"):
        await client.vector_io.query(vector_store_id=store_id, search_mode="keyword")
    with pytest.raises(openai.NotFoundError):
        await client.vector_io.query(vector_store_id="vs_missing", query="x")


async def test_tool_groups_tools_and_invocation(client: AsyncUnderlay, mcp_server: McpFixtureServer) -> None:
    groups = await client.toolgroups.list()
    assert isinstance(groups, pagination.AsyncPage) and "builtin::file_search" in [g.identifier for g in groups.data]
    made = await client.toolgroups.register(toolgroup_id="sdk-mcp", mcp_endpoint={"uri": mcp_server.url})
    assert isinstance(made, ToolGroup) and made.mcp_endpoint is not None and made.mcp_endpoint.uri == mcp_server.url
    assert (await client.toolgroups.retrieve("sdk-mcp")).transport == "streamable_http"

    tools = await client.tools.list(toolgroup_id="sdk-mcp")
    assert isinstance(tools.data[0], ToolDef) and {"add", "echo"} <= {t.name for t in tools.data}
    assert (await client.tools.retrieve("add")).input_schema["required"] == ["a", "b"]
    runtime = await client.tool_runtime.list_tools(mcp_endpoint=mcp_server.url)
    assert "echo" in [t.name for t in runtime.data]

    added = await client.tool_runtime.invoke_tool(tool_name="add", kwargs={"a": 2, "b": 3}, toolgroup_id="sdk-mcp")
    assert isinstance(added, ToolInvocationResult) and added.text() == "5" and not added.is_error
    failed = await client.tool_runtime.invoke_tool(tool_name="explode", kwargs={"message": "kaboom"})
    assert failed.is_error and failed.error_code == "tool_error" and "kaboom" in (failed.error_message or "")

    store_id = await _store_with_chunks(client, "sdk-tools")
    searched = await client.tool_runtime.invoke_tool(
        tool_name="file_search", kwargs={"query": "cats", "vector_store_ids": [store_id]}
    )
    assert "cats sleep all afternoon" in searched.text()

    gone = await client.toolgroups.unregister("sdk-mcp")
    assert isinstance(gone, ToolGroupDeleted) and gone.id == "sdk-mcp"
    with pytest.raises(openai.NotFoundError):
        await client.tool_runtime.invoke_tool(tool_name="add", kwargs={"a": 1, "b": 1}, toolgroup_id="sdk-mcp")


async def _traces_of(client: AsyncUnderlay, route: str, count: int) -> list[Trace]:
    deadline = time.monotonic() + 20
    while True:
        page = await client.telemetry.traces.list(route=route, limit=100)
        if len(page.data) >= count or time.monotonic() > deadline:
            return page.data
        await asyncio.sleep(0.05)


async def test_telemetry_traces_pages_spans_and_tree(client: AsyncUnderlay) -> None:
    for _ in range(3):
        await client.chat.completions.create(model="echo", messages=[{"role": "user", "content": "trace me"}])
    traces = await _traces_of(client, "/v1/chat/completions", 3)
    assert len(traces) >= 3 and all(isinstance(t, Trace) for t in traces)

    first = await client.telemetry.traces.list(route="/v1/chat/completions", limit=1)
    assert isinstance(first, pagination.AsyncCursorPage) and first.has_more and len(first.data) == 1
    second = await first.get_next_page()  # OpenAI's cursor paging: after the last id
    assert second.data[0].id != first.data[0].id
    walked = [t.id async for t in client.telemetry.traces.list(route="/v1/chat/completions", limit=1)]
    assert walked[:3] == [t.id for t in traces[:3]]

    trace = await client.telemetry.traces.retrieve(traces[0].id)
    assert (trace.route, trace.http_status, trace.status) == ("/v1/chat/completions", 200, "ok")
    named = await client.telemetry.traces.list(model="echo", limit=100)  # the model the request named
    assert trace.model == "echo" and trace.id in {t.id for t in named.data}
    assert not (await client.telemetry.traces.list(model="no-such-model")).data
    spans = await client.telemetry.traces.spans(trace.id)
    assert all(isinstance(s, Span) for s in spans.data) and {"route", "router", "provider"} <= {
        s.layer for s in spans.data
    }
    tree = await client.telemetry.spans.tree(trace.root_span_id, max_depth=1)
    assert isinstance(tree, SpanTree) and tree.span.span_id == trace.root_span_id
    assert tree.children and all(isinstance(c, SpanTree) and not c.children for c in tree.children)
    with pytest.raises(openai.NotFoundError):
        await client.telemetry.traces.retrieve("0" * 32)
    with pytest.raises(openai.BadRequestError, match="limit"):
        await client.telemetry.traces.list(limit=1000)


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def test_in_process_sync_client_streams_and_stops(tmp_path: Path, echo_plugin: Path) -> None:
    with Underlay.in_process(sdk_config(tmp_path / "state"), max_retries=0) as client:
        server = client._underlay_server
        assert server is not None and str(client.base_url) == f"http://127.0.0.1:{server.port}/v1/"
        stream = client.chat.completions.create(
            model="echo", messages=[{"role": "user", "content": "one two three"}], stream=True
        )
        pieces = [c.choices[0].delta.content or "" for c in stream if c.choices]
        assert len(pieces) > 1 and "".join(pieces) == "echo: one two three"
        assert client.safety.run_shield(shield_id="pii", messages=[{"role": "user", "content": "hi"}]).violation is None
        assert [s.id for s in client.shields.list()] == ["down", "pii"]
        # The server's end of each connection has Nagle off; with it on, every call waited ~44 ms for the
        # client's delayed ACK (bench/sdk_in_process.py shows the figures).
        connections = list(server._server.server_state.connections)
        assert connections and all(
            c.transport.get_extra_info("socket").getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) for c in connections
        )
        port = server.port
    assert not _listening(port) and not server._thread.is_alive()  # the stack stopped with the client


async def test_in_process_async_client(tmp_path: Path, echo_plugin: Path) -> None:
    client = await asyncio.to_thread(AsyncUnderlay.in_process, sdk_config(tmp_path / "state"), max_retries=0)
    server = client._underlay_server
    assert server is not None
    async with client:
        answer = await client.chat.completions.create(model="echo", messages=[{"role": "user", "content": "hey"}])
        assert answer.choices[0].message.content == "echo: hey"
    assert not _listening(server.port) and not server._thread.is_alive()


def test_in_process_config_mistakes_are_one_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        Underlay.in_process({"state_dir": str(tmp_path), "apis": ["inference", "nonsense"]})
    assert "\n" not in str(caught.value) and "nonsense" in str(caught.value)
    with pytest.raises(ConfigError, match="no such distribution"):
        Underlay.in_process("no-such-distro")
