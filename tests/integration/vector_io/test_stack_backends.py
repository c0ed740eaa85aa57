"""Every vector backend behind the Vector Stores API of a real server, driven by the openai SDK.

One Underlay server holds one vector-io provider per backend (sqlite-vec as the reference, pgvector on
the session's pgserver PostgreSQL, a Chroma server, and the embedded Qdrant, Chroma and Milvus); the
same files go into one vector store per backend (``provider_id`` at creation), and the same client
code must get the same answers from each: the same files in the same order with equal scores for
semantic search, and the same best file for keyword and hybrid search and for an attribute filter.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from tests.integration.harness import MINILM, RunningServer, local_config, start_server
from tests.integration.vector_io.servers import SERVERS

pytestmark = pytest.mark.slow

FILES = {
    "volcano.txt": ("Volcanoes erupt when magma rises through cracks in the crust.", {"kind": "earth"}),
    "glacier.txt": ("Glaciers carve valleys as they slowly slide downhill under their own weight.", {"kind": "ice"}),
    "desert.txt": ("Deserts receive less than 250 millimetres of rain each year.", {"kind": "earth"}),
    "reef.txt": ("Coral reefs are built by tiny animals that secrete limestone skeletons.", {"kind": "sea"}),
}


def _providers() -> list[dict[str, Any]]:
    chroma = SERVERS.chroma()
    return [
        {"provider_id": "sqlite-vec", "provider_type": "inline::sqlite-vec", "config": {"db_path": "vec.db"}},
        {
            "provider_id": "pgvector",
            "provider_type": "remote::pgvector",
            "config": {"dsn": SERVERS.postgres().uri, "pool_max_size": 4},
        },
        {
            "provider_id": "chroma-server",
            "provider_type": "remote::chromadb",
            "config": {"url": f"http://{chroma.host}:{chroma.port}", "keyword_db_path": "chroma_server_keyword.db"},
        },
        {"provider_id": "chromadb", "provider_type": "inline::chromadb", "config": {"path": "chroma"}},
        {"provider_id": "qdrant", "provider_type": "inline::qdrant", "config": {"path": "qdrant"}},
        {"provider_id": "milvus", "provider_type": "inline::milvus", "config": {"db_path": "milvus.db"}},
    ]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    config = local_config()
    config["apis"] = ["inference", "models", "files", "vector_io", "vector_stores"]
    inference = [p for p in config["providers"]["inference"] if p["provider_id"] == "sentence-transformers"]
    config["providers"] = {
        "inference": inference,
        "files": [{"provider_id": "localfs", "provider_type": "inline::localfs", "config": {"root": "files"}}],
        "vector_io": _providers(),
    }
    config["jobs"] = {"workers": 2, "lease_seconds": 2, "poll_seconds": 0.1}
    running = start_server(config, tmp_path_factory.mktemp("vector-backends"), timeout=300)
    yield running
    running.stop()


def _wait_completed(client: openai.OpenAI, store_id: str, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while client.vector_stores.retrieve(store_id).status != "completed":
        assert time.monotonic() < deadline, f"vector store {store_id} did not complete"
        time.sleep(0.1)


def _search(server: RunningServer, store_id: str, **body: Any) -> list[tuple[str, float]]:
    response = httpx.post(f"{server.v1}/vector_stores/{store_id}/search", json=body, timeout=120)
    assert response.status_code == 200, response.text
    return [(r["filename"], r["score"]) for r in response.json()["data"]]


def test_every_backend_answers_like_sqlite_vec(server: RunningServer) -> None:
    client = server.openai(timeout=120)
    file_ids = {
        name: client.files.create(file=(name, text.encode()), purpose="assistants").id
        for name, (text, _) in FILES.items()
    }
    answers: dict[str, dict[str, Any]] = {}
    for provider in _providers():
        backend = provider["provider_id"]
        store = client.vector_stores.create(
            name=backend, extra_body={"provider_id": backend, "embedding_model": MINILM}
        )
        assert (store.model_extra or {})["provider_id"] == backend
        for name, (_, attributes) in FILES.items():
            client.vector_stores.files.create(vector_store_id=store.id, file_id=file_ids[name], attributes=attributes)
        _wait_completed(client, store.id)
        answers[backend] = {
            "vector": _search(server, store.id, query="ice moving down a mountain", max_num_results=4),
            "keyword": _search(server, store.id, query="limestone skeletons", search_mode="keyword")[:1],
            "hybrid": _search(server, store.id, query="rain in the desert", search_mode="hybrid")[:1],
            "filtered": _search(
                server,
                store.id,
                query="ice moving down a mountain",
                filters={"type": "eq", "key": "kind", "value": "earth"},
            ),
        }
        client.vector_stores.delete(store.id)
    reference = answers.pop("sqlite-vec")
    assert reference["vector"][0][0] == "glacier.txt" and reference["keyword"][0][0] == "reef.txt"
    assert {name for name, _ in reference["filtered"]} == {"volcano.txt", "desert.txt"}
    for backend, got in answers.items():
        for kind in ("vector", "filtered"):
            assert [n for n, _ in got[kind]] == [n for n, _ in reference[kind]], (backend, kind)
            assert [s for _, s in got[kind]] == pytest.approx([s for _, s in reference[kind]], abs=1e-3), backend
        assert [n for n, _ in got["keyword"]] == [n for n, _ in reference["keyword"]], backend
        assert [n for n, _ in got["hybrid"]] == [n for n, _ in reference["hybrid"]], backend
