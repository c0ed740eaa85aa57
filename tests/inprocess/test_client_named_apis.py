"""The SDK's named generic resources (``client.prompts``, ``client.agents``, ``client.eval``,
``client.datasets``, ``client.scoring``, ``client.post_training``, ``client.synthetic_data_generation``)
against the real app in process.

Real components: the app over ``httpx.ASGITransport`` for ``AsyncUnderlay``, and ``Underlay.in_process``
(a stack served on a loopback thread) for the sync client; the echo provider (an installed plugin) is the
eval candidate, ``inline::localfs`` holds dataset rows and ``inline::basic`` scores them. No model loads.
What is checked: each accessor is ``client.api(name)``, its methods are the API's route handlers, and its
answers are instances of the API's own pydantic models.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import openai
import pytest

from tests.inprocess.harness import InProcessServer, echo_config, serve_in_process
from underlay import AsyncUnderlay, Underlay
from underlay.api.agents import AgentList, AgentObject
from underlay.api.datasets import Dataset, DatasetList, IterRowsResponse
from underlay.api.eval import Benchmark, EvaluateResponse
from underlay.api.prompts import Prompt, PromptDeleted, PromptList
from underlay.api.scoring import ScoreResponse, ScoringFunction
from underlay.client.client import NAMED_APIS
from underlay.client.generic import ApiResource, AsyncApiResource, local_operations

QA = [
    {"input_query": "Capital of France?", "generated_answer": "Paris", "expected_answer": "Paris"},
    {"input_query": "2 + 2?", "generated_answer": "5", "expected_answer": "4"},
    {"input_query": "Colour of the sky?", "generated_answer": "blue", "expected_answer": "blue"},
]


def named_config(state_dir: Path) -> dict[str, Any]:
    config = echo_config(state_dir, apis=["inference", "models", "prompts", "agents", "datasets", "scoring", "eval"])
    config["providers"]["datasets"] = [{"provider_id": "localfs", "provider_type": "inline::localfs"}]
    config["providers"]["scoring"] = [{"provider_id": "basic", "provider_type": "inline::basic"}]
    return config


@pytest.fixture(scope="module")
async def app(tmp_path_factory: pytest.TempPathFactory, echo_plugin: Path) -> AsyncIterator[InProcessServer]:
    async with serve_in_process(named_config(tmp_path_factory.mktemp("named-apis"))) as served:
        yield served


@pytest.fixture
def client(app: InProcessServer) -> AsyncUnderlay:
    return AsyncUnderlay(base_url=app.v1, max_retries=0, http_client=app.http)


def _unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def test_each_named_resource_is_the_generic_one_with_the_apis_route_handlers() -> None:
    sync, asynchronous = Underlay(base_url="http://h:1/v1"), AsyncUnderlay(base_url="http://h:1/v1")
    for name in NAMED_APIS:
        # A name the openai client already has would hide OpenAI's resource (or ours): neither may happen.
        assert not hasattr(openai.OpenAI, name) and not hasattr(openai.AsyncOpenAI, name), name
        resource, twin = getattr(sync, name), getattr(asynchronous, name)
        assert isinstance(resource, ApiResource) and resource is sync.api(name), name
        assert isinstance(twin, AsyncApiResource) and twin is asynchronous.api(name), name
        table = local_operations(name)
        assert table, name
        assert set(resource.operations) == {op.name for op in table} and resource.typed, name
    # OpenAI's own resources with neighbouring names stay OpenAI's.
    assert isinstance(sync.evals, openai.resources.Evals)
    assert isinstance(sync.fine_tuning, openai.resources.FineTuning)
    assert isinstance(asynchronous.batches, openai.resources.AsyncBatches)
    # The routes that only the named accessors reach (no hand-written copy) are all there.
    assert {"supervised_fine_tune", "preference_optimize", "job_status", "job_artifacts"} <= set(
        sync.post_training.operations
    )
    assert set(sync.synthetic_data_generation.operations) == {"generate"}


async def test_prompts_create_list_retrieve_and_delete(client: AsyncUnderlay) -> None:
    made = await client.prompts.create_prompt(prompt="Help {{ customer }}.", metadata={"team": "support"})
    assert isinstance(made, Prompt) and made.version == 1 and made.variables == ["customer"]
    listed = await client.prompts.list_prompts()
    assert isinstance(listed, PromptList) and made.id in [p.id for p in listed.data]
    again = await client.prompts.retrieve_prompt(prompt_id=made.id)
    assert isinstance(again, Prompt) and again.prompt == "Help {{ customer }}."
    second = await client.prompts.create_prompt_version(prompt_id=made.id, prompt="Be brief, {{customer}}.")
    assert isinstance(second, Prompt) and second.version == 2 and second.is_default
    gone = await client.prompts.delete_prompt(prompt_id=made.id)
    assert isinstance(gone, PromptDeleted) and gone.deleted
    with pytest.raises(openai.NotFoundError, match=made.id):
        await client.prompts.retrieve_prompt(prompt_id=made.id)
    with pytest.raises(openai.BadRequestError) as caught:  # the server validates and names the field
        await client.prompts.create_prompt(prompt="x", colour="blue")
    assert caught.value.body["param"] == "colour"  # type: ignore[index]


async def test_agents_deploy_and_list(client: AsyncUnderlay) -> None:
    name = _unique("support")
    first = await client.agents.deploy_agent(name=name, model="echo/echo", instructions="v1")
    assert isinstance(first, AgentObject) and first.version == 1 and first.definition.instructions == "v1"
    second = await client.agents.deploy_agent({"name": name, "model": "echo/echo", "instructions": "v2"})
    assert isinstance(second, AgentObject) and second.version == 2 and second.id == first.id
    listed = await client.agents.list_agents()
    assert isinstance(listed, AgentList)
    assert [(a.name, a.version) for a in listed.data if a.name == name] == [(name, 2)]
    versions = await client.agents.list_agent_versions(agent_name=name)
    assert sorted(a.version for a in versions.data) == [1, 2]


async def test_datasets_register_and_iterate_rows(client: AsyncUnderlay) -> None:
    dataset_id = _unique("qa")
    made = await client.datasets.register_dataset(
        dataset_id=dataset_id, purpose="eval/question-answer", source={"type": "rows", "rows": QA}
    )
    assert isinstance(made, Dataset) and made.identifier == dataset_id
    listed = await client.datasets.list_datasets()
    assert isinstance(listed, DatasetList) and dataset_id in [d.identifier for d in listed.data]
    page = await client.datasets.iterrows(dataset_id=dataset_id, limit=2)
    assert isinstance(page, IterRowsResponse) and page.data == QA[:2] and page.next_start_index == 2
    rest = await client.datasets.iterrows(dataset_id=dataset_id, start_index=page.next_start_index)
    assert rest.data == QA[2:] and rest.next_start_index is None


async def test_scoring_scores_rows_with_a_basic_function(client: AsyncUnderlay) -> None:
    equality = await client.scoring.get_scoring_function(scoring_fn_id="basic::equality")
    assert isinstance(equality, ScoringFunction) and equality.provider_id == "basic"
    scored = await client.scoring.score(input_rows=QA, scoring_functions={"basic::equality": None})
    assert isinstance(scored, ScoreResponse)
    result = scored.results["basic::equality"]
    assert [row["score"] for row in result.score_rows] == [1.0, 0.0, 1.0]


async def test_eval_registers_a_benchmark_and_evaluates_rows(client: AsyncUnderlay) -> None:
    dataset_id, benchmark_id = _unique("eval-qa"), _unique("bench")
    await client.datasets.register_dataset(
        dataset_id=dataset_id, purpose="eval/question-answer", source={"type": "rows", "rows": QA[:1]}
    )
    benchmark = await client.eval.register_benchmark(
        benchmark_id=benchmark_id, dataset_id=dataset_id, scoring_functions=["basic::subset_of"]
    )
    assert isinstance(benchmark, Benchmark) and benchmark.identifier == benchmark_id
    rows = [{"input_query": "yes", "expected_answer": "yes"}, {"input_query": "no", "expected_answer": "yes"}]
    result = await client.eval.evaluate_rows(
        benchmark_id=benchmark_id,
        input_rows=rows,
        benchmark_config={"eval_candidate": {"type": "model", "model": "echo/echo"}},
    )
    assert isinstance(result, EvaluateResponse)
    assert [g["status"] for g in result.generations] == ["pass", "fail"]


def test_sync_client_over_a_served_stack(tmp_path: Path, echo_plugin: Path) -> None:
    with Underlay.in_process(named_config(tmp_path / "state"), max_retries=0) as client:
        made = client.prompts.create_prompt(prompt="Hello {{name}}.")
        assert isinstance(made, Prompt)
        assert [p.id for p in client.prompts.list_prompts().data] == [made.id]
        assert client.prompts.retrieve_prompt(prompt_id=made.id).prompt == "Hello {{name}}."
        agent = client.agents.deploy_agent(name="helper", model="echo/echo", instructions="be kind")
        assert isinstance(agent, AgentObject)
        assert [a.name for a in client.agents.list_agents().data] == ["helper"]
        client.datasets.register_dataset(
            dataset_id="qa", purpose="eval/question-answer", source={"type": "rows", "rows": QA}
        )
        rows = client.datasets.iterrows(dataset_id="qa")
        assert isinstance(rows, IterRowsResponse) and rows.data == QA
        scored = client.scoring.score(input_rows=rows.data, scoring_functions={"basic::equality": None})
        assert isinstance(scored, ScoreResponse)
        assert scored.results["basic::equality"].aggregated_results["accuracy"]["accuracy"] == pytest.approx(2 / 3)
