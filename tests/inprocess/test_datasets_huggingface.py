"""``remote::huggingface`` in process: a dataset saved with the ``datasets`` library's ``save_to_disk`` in a
temporary directory (no hub is reachable here, and the provider never tries one), registered as
``huggingface://<name>``, paged with iterrows, checked against its purpose, and read-only.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import datasets
import httpx
import pytest

from tests.inprocess.harness import InProcessServer, serve_in_process

QA = [{"input_query": f"Colour number {i}?", "expected_answer": c} for i, c in enumerate(["red", "green", "blue"])]


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("hf-datasets")
    datasets.Dataset.from_list(QA).save_to_disk(str(root / "colours"))
    datasets.DatasetDict(
        {"train": datasets.Dataset.from_list(QA[:2]), "test": datasets.Dataset.from_list(QA[2:])}
    ).save_to_disk(str(root / "splits"))
    datasets.Dataset.from_list([{"text": "no question here"}]).save_to_disk(str(root / "plain"))
    return root


@pytest.fixture(scope="module")
async def app(saved: Path, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[InProcessServer]:
    config = {
        "state_dir": str(tmp_path_factory.mktemp("inprocess-hf")),
        "apis": ["datasets"],
        "providers": {
            "datasets": [
                {"provider_id": "localfs-datasets", "provider_type": "inline::localfs", "config": {}},
                {"provider_id": "hf", "provider_type": "remote::huggingface", "config": {"allowed_dirs": [str(saved)]}},
            ]
        },
    }
    async with serve_in_process(config) as server:
        yield server


async def _register(app: InProcessServer, uri: str, purpose: str = "eval/question-answer") -> httpx.Response:
    body = {"purpose": purpose, "source": {"type": "uri", "uri": uri}, "provider_id": "hf"}
    return await app.http.post("/v1beta/datasets", json=body)


def _ok(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()
    return data


async def test_saved_dataset_registers_and_pages(app: InProcessServer) -> None:
    created = _ok(await _register(app, "huggingface://colours"))
    assert created["provider_id"] == "hf" and created["row_count"] == 3
    dataset_id = created["identifier"]
    page = _ok(await app.http.get(f"/v1beta/datasetio/iterrows/{dataset_id}", params={"limit": 2}))
    assert page == {"data": QA[:2], "next_start_index": 2}
    rest = _ok(await app.http.get(f"/v1beta/datasetio/iterrows/{dataset_id}", params={"start_index": 2}))
    assert rest == {"data": QA[2:], "next_start_index": None}

    split = _ok(await _register(app, "huggingface://splits?split=test"))
    assert split["row_count"] == 1
    rows = _ok(await app.http.get(f"/v1beta/datasetio/iterrows/{split['identifier']}"))
    assert rows["data"] == QA[2:]

    refused = await app.http.post(f"/v1beta/datasetio/append-rows/{dataset_id}", json={"rows": QA[:1]})
    assert refused.status_code == 400 and "read-only" in refused.json()["error"]["message"]
    assert _ok(await app.http.delete(f"/v1beta/datasets/{dataset_id}"))["deleted"] is True


@pytest.mark.parametrize(
    ("uri", "words"),
    [
        ("huggingface://plain", ["row 1", "'input_query'"]),
        ("huggingface://splits?split=validation", ["no split 'validation'", "train", "test"]),
        ("huggingface://missing", ["No dataset named 'missing'"]),
        ("huggingface://../etc", ["looks like huggingface://"]),
        ("huggingface:///etc/passwd", ["No dataset named"]),
        ("file:///etc/passwd", ["registers huggingface://"]),
    ],
)
async def test_bad_uris_and_rows_are_clear_400s(app: InProcessServer, uri: str, words: list[str]) -> None:
    response = await _register(app, uri)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    for word in words:
        assert word in error["message"], error
    assert "root:" not in error["message"]
