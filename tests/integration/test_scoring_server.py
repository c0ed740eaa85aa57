"""Scoring on a real server with the embedded models: Qwen 0.5B as the judge, MiniLM for similarity.

Few rows: the same fact in other words, and a plainly wrong answer. What is checked is that the judge's
verdicts come back parsed, with the right answers accepted (the 0.5B judge also accepts many wrong
ones: ``bench/scoring.py`` reports its agreement with people), that
similarity ranks a paraphrase above an unrelated sentence, and that a RAG metric which needs both
models (``rag::answer_relevance``) returns the question the judge inferred and a similarity.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.integration.harness import MINILM, QWEN, RunningServer, local_config, start_server

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    config = local_config(apis=["inference", "models", "scoring"])
    config["providers"]["scoring"] = [
        {"provider_id": "basic", "provider_type": "inline::basic"},
        {
            "provider_id": "llm-as-judge",
            "provider_type": "inline::llm-as-judge",
            "config": {"default_judge_model": QWEN, "max_concurrency": 1},
        },
        {
            "provider_id": "embedding",
            "provider_type": "inline::embedding-similarity",
            "config": {"default_embedding_model": MINILM},
        },
        {
            "provider_id": "rag",
            "provider_type": "inline::rag",
            "config": {"default_judge_model": QWEN, "default_embedding_model": MINILM},
        },
    ]
    running = start_server(config, tmp_path_factory.mktemp("scoring-server"), timeout=300)
    yield running
    running.stop()


def _score(server: RunningServer, rows: list[dict[str, Any]], functions: dict[str, Any]) -> dict[str, Any]:
    response = httpx.post(
        f"{server.v1}/scoring/score", json={"input_rows": rows, "scoring_functions": functions}, timeout=900
    )
    assert response.status_code == 200, response.text
    results: dict[str, Any] = response.json()["results"]
    return results


def test_the_embedded_judge_grades_answers(server: RunningServer) -> None:
    rows = [
        {
            "input_query": "What is the capital of France?",
            "expected_answer": "Paris",
            "generated_answer": "It is Paris.",
        },
        {"input_query": "How many legs does a spider have?", "expected_answer": "8", "generated_answer": "Eight legs."},
        {"input_query": "What is the capital of Japan?", "expected_answer": "Tokyo", "generated_answer": "Madrid."},
        {"input_query": "What is 9 plus 10?", "expected_answer": "19", "generated_answer": "9 + 10 = 40."},
    ]
    result = _score(server, rows, {"llm-as-judge::correctness": None, "basic::subset_of": None})
    judged = result["llm-as-judge::correctness"]
    scores = [r["score"] for r in judged["score_rows"]]
    assert all(s in (0.0, 1.0, None) for s in scores), judged["score_rows"]
    assert all(r["judge_usage"]["completion_tokens"] > 0 for r in judged["score_rows"] if "judge_usage" in r)
    assert sum(1 for s in scores if s is not None) >= 3, judged["score_rows"]  # verdicts parsed
    # Qwen 0.5B accepts right answers but often accepts wrong ones too (bench/scoring.py measures how
    # often), so only the right answers' verdicts are pinned here.
    assert scores[0] == 1.0 and scores[1] == 1.0, judged["score_rows"]
    accuracy = judged["aggregated_results"]["accuracy"]
    assert accuracy["ci_method"] == "wilson" and 0 <= accuracy["ci95"][0] <= accuracy["ci95"][1] <= 1
    assert [r["score"] for r in result["basic::subset_of"]["score_rows"]] == [1.0, 0.0, 0.0, 0.0]


def test_similarity_and_answer_relevance_with_the_embedding_model(server: RunningServer) -> None:
    rows = [
        {"generated_answer": "The capital of France is Paris.", "expected_answer": "Paris is France's capital city."},
        {"generated_answer": "Bananas are rich in potassium.", "expected_answer": "Paris is France's capital city."},
    ]
    similar, unrelated = (
        r["score"] for r in _score(server, rows, {"embedding::similarity": None})["embedding::similarity"]["score_rows"]
    )
    assert similar > 0.7 and unrelated < 0.3 and similar > unrelated

    row = {
        "input_query": "Why do leaves change colour in autumn?",
        "generated_answer": "In autumn trees stop making "
        "chlorophyll, so the green fades and the yellow and orange pigments in the leaves show.",
    }
    relevance = _score(server, [row], {"rag::answer_relevance": None})["rag::answer_relevance"]["score_rows"][0]
    assert relevance["score"] is not None, relevance
    assert relevance["generated_question"].strip() and -1.0 <= relevance["score"] <= 1.0
    assert relevance["score"] > 0.3, relevance  # the inferred question is about leaves or autumn


def test_each_provider_lists_its_functions(server: RunningServer) -> None:
    listed = httpx.get(f"{server.v1}/scoring-functions", timeout=30).json()["data"]
    ids = {f["identifier"]: f["provider_id"] for f in listed}
    assert ids["rag::faithfulness"] == "rag" and ids["llm-as-judge::correctness"] == "llm-as-judge"
