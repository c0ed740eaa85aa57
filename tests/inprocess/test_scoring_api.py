"""The Scoring API in process: the function registry, scoring rows, two tenants, score-batch over a dataset
and bad input.

The app runs the real providers ``inline::basic``, ``inline::llm-as-judge`` and
``inline::embedding-similarity`` over the echo plugin, which answers a chat with ``echo: <last user
message>`` and embeds a text as a hash: so a judge template that ends in ``Grade: {generated_answer}``
gets its own grade back, and what these tests check is the plumbing (templates filled, scores parsed,
rows aligned, owners kept apart), not a model's judgement. The embedded model as a judge runs in
``tests/integration/test_scoring_server.py``.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.inprocess.harness import InProcessServer, echo_config, serve_in_process

KEYS = {"alice": ("sk-alice-scoring", ["team-a"]), "bob": ("sk-bob-scoring", ["team-b"])}


def _auth() -> dict[str, Any]:
    keys = [
        {"sha256": hashlib.sha256(key.encode()).hexdigest(), "principal": name, "attributes": {"teams": teams}}
        for name, (key, teams) in KEYS.items()
    ]
    return {"auth": {"providers": [{"type": "api_keys", "keys": keys}]}, "max_request_bytes": 4 * 1024 * 1024}


@pytest.fixture(scope="module")
async def app(echo_plugin: Path, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[InProcessServer]:
    config = echo_config(
        tmp_path_factory.mktemp("inprocess-scoring"),
        apis=["inference", "models", "datasets", "scoring"],
        server=_auth(),
    )
    config["providers"]["datasets"] = [{"provider_id": "localfs", "provider_type": "inline::localfs"}]
    config["providers"]["scoring"] = [
        {"provider_id": "basic", "provider_type": "inline::basic"},
        {
            "provider_id": "judge",
            "provider_type": "inline::llm-as-judge",
            "config": {"default_judge_model": "echo/echo", "retry_delay_seconds": 0},
        },
        {
            "provider_id": "embedding",
            "provider_type": "inline::embedding-similarity",
            "config": {"default_embedding_model": "echo/echo-embed"},
        },
    ]
    async with serve_in_process(config) as server:
        yield server


def _as(who: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {KEYS[who][0]}"}


def _ok(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()
    return data


def _error(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    return error


QA = [
    {"input_query": "Capital of France?", "generated_answer": "Paris", "expected_answer": "Paris"},
    {"input_query": "2 + 2?", "generated_answer": "5", "expected_answer": "4"},
    {"input_query": "Colour of the sky?", "generated_answer": "The sky is blue", "expected_answer": "blue"},
]


async def test_built_ins_are_listed_with_their_providers(app: InProcessServer) -> None:
    listed = _ok(await app.http.get("/v1/scoring-functions", headers=_as("alice")))["data"]
    by_id = {f["identifier"]: f for f in listed}
    assert by_id["basic::equality"]["provider_id"] == "basic"
    assert by_id["llm-as-judge::correctness"]["provider_id"] == "judge"
    assert by_id["embedding::similarity"]["params"]["type"] == "embedding"
    assert by_id["basic::f1"]["required_columns"] == ["generated_answer", "expected_answer"]
    one = _ok(await app.http.get("/v1/scoring-functions/basic::bleu", headers=_as("alice")))
    assert one["identifier"] == "basic::bleu" and one["type"] == "scoring_function"


async def test_score_rows_with_basic_functions_and_aggregates(app: InProcessServer) -> None:
    body = {
        "input_rows": QA,
        "scoring_functions": {
            "basic::equality": None,
            "basic::subset_of": {"type": "basic", "aggregation_functions": ["accuracy", "categorical_count"]},
            "basic::f1": None,
        },
    }
    results = _ok(await app.http.post("/v1/scoring/score", json=body, headers=_as("alice")))["results"]
    equality = results["basic::equality"]
    assert [r["score"] for r in equality["score_rows"]] == [1.0, 0.0, 0.0]
    accuracy = equality["aggregated_results"]["accuracy"]
    assert accuracy["accuracy"] == pytest.approx(1 / 3) and accuracy["num_total"] == 3
    low, high = accuracy["ci95"]
    assert 0 <= low < 1 / 3 < high <= 1 and accuracy["ci_method"] == "wilson"
    subset = results["basic::subset_of"]
    assert [r["score"] for r in subset["score_rows"]] == [1.0, 0.0, 1.0]
    assert subset["aggregated_results"]["categorical_count"]["categorical_count"] == {"1.0": 2, "0.0": 1}
    f1 = results["basic::f1"]
    assert f1["score_rows"][2]["score"] == pytest.approx(0.5) and "average" in f1["aggregated_results"]


async def test_a_judge_function_of_your_own_and_two_tenants(app: InProcessServer) -> None:
    judge = {
        "scoring_fn_id": "grader",
        "description": "reads the grade the row states",
        "params": {
            "type": "llm_as_judge",
            "prompt_template": "Question: {input_query}\nGrade: {generated_answer}",
            "judge_score_regexes": [r"Grade:\s*(\d+)"],
            "aggregation_functions": ["average", "median"],
        },
    }
    made = _ok(await app.http.post("/v1/scoring-functions", json=judge, headers=_as("alice")))
    assert made["provider_id"] == "judge" and made["source"] == "api"
    assert made["required_columns"] == ["input_query", "generated_answer"]

    rows = [{"input_query": "q1", "generated_answer": "7"}, {"input_query": "q2", "generated_answer": "no digits"}]
    result = _ok(
        await app.http.post(
            "/v1/scoring/score", json={"input_rows": rows, "scoring_functions": {"grader": None}}, headers=_as("alice")
        )
    )["results"]["grader"]
    first, second = result["score_rows"]
    assert first["score"] == 7.0 and first["judge_feedback"] == "echo: Question: q1\nGrade: 7"
    assert first["judge_usage"]["completion_tokens"] > 0
    assert second["score"] is None and "judge_score_regexes" in second["error"]
    assert result["error_count"] == 1
    assert result["aggregated_results"]["average"]["average"] == 7.0
    assert result["aggregated_results"]["average"]["num_errors"] == 1

    # Bob neither sees nor uses Alice's function, and may register his own under the same id.
    bob_list = _ok(await app.http.get("/v1/scoring-functions", headers=_as("bob")))["data"]
    assert "grader" not in {f["identifier"] for f in bob_list}
    _error(await app.http.get("/v1/scoring-functions/grader", headers=_as("bob")), 404)
    error = _error(
        await app.http.post(
            "/v1/scoring/score", json={"input_rows": rows, "scoring_functions": {"grader": None}}, headers=_as("bob")
        ),
        404,
    )
    assert "grader" in error["message"]
    _error(await app.http.delete("/v1/scoring-functions/grader", headers=_as("bob")), 404)
    regex = {
        "scoring_fn_id": "grader",
        "params": {
            "type": "regex_parser",
            "parsing_regexes": [r"Final:\s*(\w+)"],
            "aggregation_functions": ["accuracy"],
        },
    }
    bobs = _ok(await app.http.post("/v1/scoring-functions", json=regex, headers=_as("bob")))
    assert bobs["provider_id"] == "basic"
    scored = _ok(
        await app.http.post(
            "/v1/scoring/score",
            json={
                "input_rows": [{"generated_answer": "Final: yes", "expected_answer": "yes"}],
                "scoring_functions": {"grader": None},
            },
            headers=_as("bob"),
        )
    )["results"]["grader"]
    assert scored["score_rows"][0] == {"score": 1.0, "parsed_answer": "yes"}
    assert (
        _ok(await app.http.get("/v1/scoring-functions/grader", headers=_as("alice")))["params"]["type"]
        == "llm_as_judge"
    )

    again = _error(await app.http.post("/v1/scoring-functions", json=judge, headers=_as("alice")), 409)
    assert again["code"] == "scoring_function_exists"
    deleted = _ok(await app.http.delete("/v1/scoring-functions/grader", headers=_as("alice")))
    assert deleted == {"id": "grader", "object": "scoring_function.deleted", "deleted": True}
    _error(await app.http.get("/v1/scoring-functions/grader", headers=_as("alice")), 404)
    assert (
        _ok(await app.http.get("/v1/scoring-functions/grader", headers=_as("bob")))["params"]["type"] == "regex_parser"
    )
    _ok(await app.http.delete("/v1/scoring-functions/grader", headers=_as("bob")))


async def test_built_in_judge_with_params_given_per_call(app: InProcessServer) -> None:
    rows = [{"input_query": "q", "generated_answer": "Score: 1", "expected_answer": "x"}]
    params = {"type": "llm_as_judge", "prompt_template": "{generated_answer}", "judge_score_regexes": [r"Score: (\d)"]}
    result = _ok(
        await app.http.post(
            "/v1/scoring/score",
            json={"input_rows": rows, "scoring_functions": {"llm-as-judge::base": params}},
            headers=_as("alice"),
        )
    )["results"]["llm-as-judge::base"]
    assert result["score_rows"][0]["score"] == 1.0
    unknown_model = {**params, "judge_model": "no-such-model"}
    error = _error(
        await app.http.post(
            "/v1/scoring/score",
            json={"input_rows": rows, "scoring_functions": {"llm-as-judge::base": unknown_model}},
            headers=_as("alice"),
        ),
        404,
    )
    assert "no-such-model" in error["message"]


async def test_embedding_similarity(app: InProcessServer) -> None:
    rows = [
        {"generated_answer": "same text", "expected_answer": "same text"},
        {"generated_answer": "one thing", "expected_answer": "another"},
        {"generated_answer": "", "expected_answer": "empty answer"},
    ]
    result = _ok(
        await app.http.post(
            "/v1/scoring/score",
            json={"input_rows": rows, "scoring_functions": {"embedding::similarity": None}},
            headers=_as("alice"),
        )
    )["results"]["embedding::similarity"]
    scores = [r["score"] for r in result["score_rows"]]
    assert scores[0] == pytest.approx(1.0) and scores[1] < 0.99 and scores[2] is None
    assert result["error_count"] == 1 and result["aggregated_results"]["average"]["num_total"] == 2


async def test_score_batch_reads_a_dataset_and_saves_results(app: InProcessServer) -> None:
    dataset = _ok(
        await app.http.post(
            "/v1beta/datasets",
            json={
                "purpose": "eval/question-answer",
                "source": {"type": "rows", "rows": QA},
                "dataset_id": "qa-scoring",
            },
            headers=_as("alice"),
        )
    )
    body = {
        "dataset_id": dataset["identifier"],
        "scoring_functions": {"basic::equality": None},
        "save_results_dataset": True,
    }
    batch = _ok(await app.http.post("/v1/scoring/score-batch", json=body, headers=_as("alice")))
    assert [r["score"] for r in batch["results"]["basic::equality"]["score_rows"]] == [1.0, 0.0, 0.0]
    saved = batch["dataset_id"]
    rows = _ok(await app.http.get(f"/v1beta/datasetio/iterrows/{saved}", headers=_as("alice")))["data"]
    assert rows[0]["basic::equality"] == {"score": 1.0} and rows[1]["input_query"] == "2 + 2?"
    # Bob cannot score Alice's dataset.
    _error(await app.http.post("/v1/scoring/score-batch", json=body, headers=_as("bob")), 404)


async def test_bad_input_is_a_clear_400(app: InProcessServer) -> None:
    async def post(body: dict[str, Any]) -> dict[str, Any]:
        return _error(await app.http.post("/v1/scoring/score", json=body, headers=_as("alice")), 400)

    missing = await post({"input_rows": [{"generated_answer": "x"}], "scoring_functions": {"basic::equality": None}})
    assert missing["param"] == "input_rows[0].expected_answer" and missing["code"] == "missing_column"
    wrong_type = await post(
        {"input_rows": QA, "scoring_functions": {"basic::equality": {"type": "llm_as_judge", "judge_model": "m"}}}
    )
    assert "takes params of type 'basic'" in wrong_type["message"]
    no_functions = await post({"input_rows": QA, "scoring_functions": {}})
    assert "scoring_functions" in str(no_functions["param"])
    too_many = await post(
        {
            "input_rows": [{"generated_answer": "a", "expected_answer": "a"}] * 10_001,
            "scoring_functions": {"basic::f1": None},
        }
    )
    assert "input_rows" in str(too_many["param"])
    huge_row = await post(
        {
            "input_rows": [{"generated_answer": "a" * 70_000, "expected_answer": "a"}],
            "scoring_functions": {"basic::f1": None},
        }
    )
    assert "65536" in huge_row["message"]
    bad_aggregation = await post(
        {"input_rows": QA, "scoring_functions": {"basic::f1": {"type": "basic", "aggregation_functions": ["mode"]}}}
    )
    assert "aggregation_functions" in str(bad_aggregation["param"])

    async def register(body: dict[str, Any]) -> dict[str, Any]:
        return _error(await app.http.post("/v1/scoring-functions", json=body, headers=_as("alice")), 400)

    bad_regex = await register(
        {"scoring_fn_id": "r1", "params": {"type": "regex_parser", "parsing_regexes": ["(unclosed"]}}
    )
    assert "not a valid regular expression" in bad_regex["message"]
    bad_field = await register(
        {
            "scoring_fn_id": "j1",
            "params": {"type": "llm_as_judge", "prompt_template": "{answer}", "judge_score_regexes": ["(\\d)"]},
        }
    )
    assert "unknown template field {answer}" in bad_field["message"]
    no_regexes = await register(
        {"scoring_fn_id": "j2", "params": {"type": "llm_as_judge", "prompt_template": "{generated_answer}"}}
    )
    assert "judge_score_regexes" in no_regexes["message"]
    bad_id = await register(
        {"scoring_fn_id": "has space", "params": {"type": "regex_parser", "parsing_regexes": ["x"]}}
    )
    assert bad_id["param"] == "scoring_fn_id"
    built_in = _error(
        await app.http.post(
            "/v1/scoring-functions",
            json={"scoring_fn_id": "basic::f1", "params": {"type": "regex_parser", "parsing_regexes": ["x"]}},
            headers=_as("alice"),
        ),
        409,
    )
    assert "built-in" in built_in["message"]
    cannot_delete = _error(await app.http.delete("/v1/scoring-functions/basic::f1", headers=_as("alice")), 400)
    assert "built-in" in cannot_delete["message"]
    unknown = _error(
        await app.http.post(
            "/v1/scoring/score", json={"input_rows": QA, "scoring_functions": {"nope": None}}, headers=_as("alice")
        ),
        404,
    )
    assert "nope" in unknown["message"]


async def test_score_batch_without_the_datasets_api(tmp_path: Path, echo_plugin: Path) -> None:
    config = {
        "state_dir": str(tmp_path),
        "apis": ["scoring"],
        "providers": {"scoring": [{"provider_id": "basic", "provider_type": "inline::basic"}]},
    }
    async with serve_in_process(config) as server:
        body = {"dataset_id": "anything", "scoring_functions": {"basic::equality": None}}
        error = _error(await server.http.post("/v1/scoring/score-batch", json=body), 400)
        assert "datasets API is not enabled" in error["message"] and error["param"] == "dataset_id"
        judge = {
            "scoring_fn_id": "j",
            "params": {
                "type": "llm_as_judge",
                "prompt_template": "{generated_answer}",
                "judge_score_regexes": ["(\\d)"],
            },
        }
        error = _error(await server.http.post("/v1/scoring-functions", json=judge), 400)
        assert "inline::llm-as-judge" in error["message"]
