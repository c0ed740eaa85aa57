"""Synthetic data on a real server with the embedded models, and the loop it exists for.

The loop: a file goes into a vector store; ``/v1/synthetic-data-generation/generate`` reads the store's
chunks and has Qwen 0.5B write question/answer pairs (JSON-schema constrained), judged by the same model,
deduplicated, saved as an ``eval/question-answer`` dataset; then a ``file_search`` agent (the Responses
API) answers each question from the store, and the Scoring API grades its answers against the dataset's.
What is checked is the plumbing and the shapes (a 0.5B model's pairs are not graded for quality): a
saved dataset whose rows name the file they came from, answers for every row, one score per row.
Token budgets are small: two shared cores.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.integration.harness import QWEN, RunningServer, local_config, start_server

pytestmark = pytest.mark.slow

DOC = (
    "The lighthouse on Karsk Island was built in 1872 from grey granite. It is 31 metres tall and its lamp "
    "can be seen from 40 kilometres away. The last keeper, Ingrid Holm, left in 1985 when the light was "
    "automated. Today the keeper's cottage is a small museum open from May to September."
)


def _config() -> dict[str, Any]:
    config = local_config()
    config["apis"] = [
        "inference", "models", "files", "vector_io", "vector_stores", "conversations", "responses",
        "datasets", "synthetic_data_generation", "scoring",
    ]  # fmt: skip
    config["providers"].update(
        {
            "files": [{"provider_id": "localfs", "provider_type": "inline::localfs", "config": {"root": "files"}}],
            "vector_io": [
                {"provider_id": "sqlite-vec", "provider_type": "inline::sqlite-vec", "config": {"db_path": "v.db"}}
            ],
            "responses": [{"provider_id": "builtin", "provider_type": "inline::builtin", "config": {}}],
            "datasets": [{"provider_id": "localfs-datasets", "provider_type": "inline::localfs", "config": {}}],
            "scoring": [{"provider_id": "basic", "provider_type": "inline::basic", "config": {}}],
        }
    )
    return config


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    running = start_server(_config(), tmp_path_factory.mktemp("synthetic"), timeout=300)
    yield running
    running.stop()


def _post(server: RunningServer, path: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(f"{server.base_url}{path}", json=body, timeout=600)


def test_bad_requests_cost_no_model_time(server: RunningServer) -> None:
    both = _post(
        server,
        "/v1/synthetic-data-generation/generate",
        {"model": QWEN, "documents": ["x"], "dialogs": [[{"role": "user", "content": "hi"}]]},
    )
    assert both.status_code == 400 and "exactly one of" in both.json()["error"]["message"]
    unknown = _post(server, "/v1/synthetic-data-generation/generate", {"model": QWEN, "vector_store_id": "vs_missing"})
    assert unknown.status_code == 404 and "vs_missing" in unknown.json()["error"]["message"]
    missing = _post(
        server, "/v1/synthetic-data-generation/generate", {"model": QWEN, "documents": ["x"], "append_to": "nope"}
    )
    assert missing.status_code == 404 and "nope" in missing.json()["error"]["message"]
    big = _post(
        server, "/v1/synthetic-data-generation/generate", {"model": QWEN, "documents": ["x"], "max_pairs": 1000}
    )
    assert big.status_code == 400 and "max_pairs" in (big.json()["error"]["param"] or "")


@pytest.mark.timeout(1800)  # four model calls and an ingestion; minutes on a loaded 2-core machine
def test_generate_from_a_vector_store_filter_by_a_judge_and_save(server: RunningServer) -> None:
    client = server.openai(timeout=600)
    file_id = client.files.create(file=("lighthouse.txt", DOC.encode()), purpose="assistants").id
    store = client.vector_stores.create(name="lighthouse", file_ids=[file_id])
    deadline = time.monotonic() + 180
    while client.vector_stores.retrieve(store.id).status != "completed":
        assert time.monotonic() < deadline, "ingestion did not finish"
        time.sleep(0.5)

    generated = _post(
        server,
        "/v1/synthetic-data-generation/generate",
        {
            "model": QWEN,
            "vector_store_id": store.id,
            "max_sources": 1,
            "pairs_per_source": 1,
            "filter": {"judge_model": QWEN, "min_score": 1},
            "seed": 3,
            "temperature": 0,
            "dataset_id": "lighthouse-eval",
        },
    )
    assert generated.status_code == 200, generated.text
    result = generated.json()
    stats = result["statistics"]
    assert stats["sources"] == 1 and stats["failed_sources"] == 0
    assert stats["generated"] == 1 and stats["kept"] == len(result["synthetic_data"]) >= 1
    assert stats["kept"] + stats["dropped_duplicates"] + stats["dropped_by_judge"] == stats["generated"]
    assert result["dataset_id"] == "lighthouse-eval"
    for pair in result["synthetic_data"]:
        assert pair["source"] == file_id and pair["input_query"] and pair["expected_answer"]
        assert pair["score"] in (1, 2, 3, 4, 5)

    dataset = httpx.get(f"{server.base_url}/v1beta/datasets/lighthouse-eval", timeout=30).json()
    assert dataset["purpose"] == "eval/question-answer" and dataset["row_count"] == stats["kept"]
    assert dataset["metadata"]["generated_by"] == "synthetic-data-generation"
    rows = httpx.get(f"{server.base_url}/v1beta/datasetio/iterrows/lighthouse-eval", timeout=30).json()["data"]
    assert [r["input_query"] for r in rows] == [p["input_query"] for p in result["synthetic_data"]]

    # Evaluating a file_search agent on this set through the eval API (the second half of the loop) runs in
    # tests/integration/test_eval_server.py::test_generated_eval_set_measures_a_file_search_agent.


@pytest.mark.timeout(1200)
def test_documents_without_saving_and_dedup(server: RunningServer) -> None:
    body = {
        "model": QWEN,
        "documents": [DOC, DOC],  # the same text twice: the same questions, dropped as duplicates
        "pairs_per_source": 1,
        "seed": 11,
        "temperature": 0,
        "save": False,
    }
    result = _post(server, "/v1/synthetic-data-generation/generate", body)
    assert result.status_code == 200, result.text
    data = result.json()
    assert data["dataset_id"] is None
    stats = data["statistics"]
    assert stats["sources"] == 2 and stats["generated"] == 2
    assert stats["dropped_duplicates"] == 1 and stats["kept"] == 1
    assert data["synthetic_data"][0]["source"] == "documents[0]"
