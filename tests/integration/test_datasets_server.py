"""Datasets on a real server: a file uploaded with the ``openai`` SDK, registered by its id, paged over HTTP;
then the ``underlay datasets`` CLI against the same server (upload, list, show, delete, and a bad row's
one-line error with exit code 1).

No model is loaded (``apis: [files, datasets]``); synthetic generation on the embedded model is in
``tests/integration/test_synthetic_data.py``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.integration.harness import RunningServer, start_server

ROWS = [
    {"input_query": "Which planet is the largest?", "expected_answer": "Jupiter"},
    {"input_query": "Which planet is closest to the sun?", "expected_answer": "Mercury"},
    {"input_query": "Which planet has the most visible rings?", "expected_answer": "Saturn"},
]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    config = {
        "apis": ["files", "datasets"],
        "providers": {
            "files": [{"provider_id": "localfs", "provider_type": "inline::localfs", "config": {}}],
            "datasets": [{"provider_id": "localfs-datasets", "provider_type": "inline::localfs", "config": {}}],
        },
    }
    running = start_server(config, tmp_path_factory.mktemp("datasets-server"))
    try:
        yield running
    finally:
        running.stop()


def _jsonl(rows: list[dict[str, str]]) -> bytes:
    return b"".join(json.dumps(row).encode() + b"\n" for row in rows)


def test_files_upload_register_and_iterrows(server: RunningServer) -> None:
    client = server.openai()
    uploaded = client.files.create(file=("planets.jsonl", _jsonl(ROWS)), purpose="user_data")
    registered = httpx.post(
        f"{server.base_url}/v1beta/datasets",
        json={
            "purpose": "eval/question-answer",
            "source": {"type": "uri", "uri": uploaded.id},
            "dataset_id": "planets",
        },
        timeout=30,
    )
    assert registered.status_code == 200, registered.text
    assert registered.json()["row_count"] == 3
    seen: list[dict[str, str]] = []
    start: int | None = 0
    while start is not None:
        page = httpx.get(
            f"{server.base_url}/v1beta/datasetio/iterrows/planets",
            params={"start_index": start, "limit": 2},
            timeout=30,
        ).json()
        seen.extend(page["data"])
        start = page["next_start_index"]
    assert seen == ROWS
    routes = httpx.get(f"{server.v1}/inspect/routes", timeout=30).json()["data"]
    paths = {(r["method"], r["path"], r["stability"]) for r in routes if r["api"] == "datasets"}
    assert ("GET", "/v1beta/datasetio/iterrows/{dataset_id}", "beta") in paths
    assert ("POST", "/v1beta/datasets", "beta") in paths


def _cli(server: RunningServer, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "UNDERLAY_BASE_URL": server.base_url}
    return subprocess.run(
        [sys.executable, "-m", "underlay", "datasets", *args], capture_output=True, text=True, env=env, timeout=120
    )


def test_cli_upload_list_show_delete(server: RunningServer, tmp_path: Path) -> None:
    source = tmp_path / "planets.csv"
    source.write_text(
        "input_query,expected_answer\n" + "".join(f'"{r["input_query"]}",{r["expected_answer"]}\n' for r in ROWS)
    )
    uploaded = _cli(server, "upload", str(source), "--purpose", "eval/question-answer", "--id", "planets-cli")
    assert uploaded.returncode == 0, uploaded.stderr
    assert uploaded.stdout.strip() == "planets-cli  eval/question-answer  3 rows"

    listed = _cli(server, "list")
    assert listed.returncode == 0, listed.stderr
    header, *lines = listed.stdout.splitlines()
    assert header.split() == ["ID", "PURPOSE", "ROWS", "PROVIDER"]
    assert ["planets-cli", "eval/question-answer", "3", "localfs-datasets"] in [line.split() for line in lines]

    shown = _cli(server, "show", "planets-cli", "--rows", "2", "--json")
    assert shown.returncode == 0, shown.stderr
    data = json.loads(shown.stdout)
    assert data["dataset"]["identifier"] == "planets-cli" and data["rows"] == ROWS[:2]

    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(_jsonl([ROWS[0], {"input_query": "no answer"}]))
    refused = _cli(server, "upload", str(bad), "--purpose", "eval/question-answer")
    assert refused.returncode == 1 and refused.stdout == ""
    (line,) = refused.stderr.splitlines()
    assert line.startswith("error: POST /v1beta/datasets returned 400: row 2, field 'expected_answer'"), line
    assert "Traceback" not in refused.stderr

    assert _cli(server, "delete", "planets-cli").stdout.strip() == "deleted planets-cli"
    gone = _cli(server, "show", "planets-cli")
    assert gone.returncode == 1 and "404" in gone.stderr and "planets-cli" in gone.stderr
    # The CLI removed its uploaded copies: only the SDK's upload of the other test may remain.
    files = server.openai().files.list().data
    assert all(f.filename != "planets.csv" and f.filename != "bad.jsonl" for f in files)
