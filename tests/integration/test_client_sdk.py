"""The SDK against a real ``underlay run`` on loopback: one walk through chat, a vector store, a shield,
the tool runtime and the traces, all through ``underlay.Underlay`` (sync) and ``AsyncUnderlay``.

Real components: the server is a subprocess started as a user starts it; chat is the echo provider (an
installed plugin), embeddings the embedded MiniLM model, files on disk, sqlite-vec, the ``pii`` shield,
the builtin ``file_search`` tool, and spans read back from the server's own store.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from tests.integration.harness import MINILM, RunningServer, local_config, start_server
from underlay import AsyncUnderlay, Underlay
from underlay.api.telemetry import Trace

DOCUMENTS = {
    "otters.txt": "Sea otters hold hands while they sleep so they do not drift apart.",
    "kettles.txt": "A kettle switches itself off when the water reaches a rolling boil.",
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, external_provider_path: Path) -> Iterator[RunningServer]:
    embeddings = [p for p in local_config()["providers"]["inference"] if p["provider_id"] == "sentence-transformers"]
    config = {
        "apis": ["inference", "models", "files", "vector_io", "vector_stores", "tool_runtime", "safety", "telemetry"],
        "providers": {
            "inference": [{"provider_id": "echo", "provider_type": "remote::echo-test", "config": {}}, *embeddings],
            "files": [{"provider_id": "localfs", "provider_type": "inline::localfs", "config": {"root": "files"}}],
            "vector_io": [
                {"provider_id": "sqlite-vec", "provider_type": "inline::sqlite-vec", "config": {"db_path": "v.db"}}
            ],
            "tool_runtime": [{"provider_id": "file-search", "provider_type": "builtin::file_search"}],
            "safety": [{"provider_id": "pii", "provider_type": "inline::pii"}],
        },
        "shields": [{"shield_id": "pii", "provider_id": "pii"}],
        "vector_stores": {"default_embedding_model": MINILM},
        "jobs": {"workers": 1, "poll_seconds": 0.1},
        "telemetry": {"flush_seconds": 0.1},
    }
    running = start_server(
        config, tmp_path_factory.mktemp("sdk"), extra_pythonpath=[external_provider_path], timeout=300
    )
    yield running
    running.stop()


def test_sdk_walkthrough_against_a_real_server(server: RunningServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UNDERLAY_BASE_URL", server.v1)  # the SDK's own default, as a user configures it
    monkeypatch.setenv("OPENAI_API_KEY", "sk-not-for-underlay")
    with Underlay(max_retries=0, timeout=120) as client:
        assert client.api_key == "none"  # OPENAI_API_KEY is for OpenAI, never sent here
        answer = client.chat.completions.create(model="echo", messages=[{"role": "user", "content": "hello sdk"}])
        assert answer.choices[0].message.content == "echo: hello sdk"
        streamed = client.chat.completions.create(
            model="echo", messages=[{"role": "user", "content": "in pieces"}], stream=True
        )
        assert "".join(c.choices[0].delta.content or "" for c in streamed if c.choices) == "echo: in pieces"

        file_ids = [client.files.create(file=(n, t.encode()), purpose="assistants").id for n, t in DOCUMENTS.items()]
        store = client.vector_stores.create(name="sdk-notes", file_ids=file_ids)
        deadline = time.monotonic() + 180
        while client.vector_stores.retrieve(store.id).status != "completed":
            assert time.monotonic() < deadline, "the vector store did not finish ingesting"
            time.sleep(0.2)
        hits = client.vector_io.query(vector_store_id=store.id, query="how do otters sleep?", max_num_results=1)
        assert "otters" in hits.data[0].chunk.content
        searched = client.tool_runtime.invoke_tool(
            tool_name="file_search", kwargs={"query": "when does a kettle stop?", "vector_store_ids": [store.id]}
        )
        assert not searched.is_error and "rolling boil" in searched.text()

        verdict = client.safety.run_shield(
            shield_id="pii", messages=[{"role": "user", "content": "call me on +1 415 555 0100"}]
        )
        assert verdict.violation is not None and verdict.violation.violation_level == "error"
        with pytest.raises(openai.NotFoundError, match="no-such-shield"):
            client.safety.run_shield(shield_id="no-such-shield", messages=[{"role": "user", "content": "x"}])

        deadline = time.monotonic() + 20
        while not (traces := client.telemetry.traces.list(route="/v1/tool-runtime/invoke").data):
            assert time.monotonic() < deadline, "no trace of the tool call"
            time.sleep(0.1)
        assert isinstance(traces[0], Trace) and traces[0].http_status == 200
        spans = client.telemetry.traces.spans(traces[0].id).data
        assert any(s.attributes.get("gen_ai.tool.name") == "file_search" for s in spans)


async def test_async_client_against_a_real_server(server: RunningServer) -> None:
    async with AsyncUnderlay(base_url=server.v1, max_retries=0) as client:
        shields = [s.id async for s in client.shields.list()]
        assert shields == ["pii"]
        answer = await client.chat.completions.create(model="echo", messages=[{"role": "user", "content": "async"}])
        assert answer.choices[0].message.content == "echo: async"
        assert {g.identifier async for g in client.toolgroups.list()} == {"builtin::file_search"}
