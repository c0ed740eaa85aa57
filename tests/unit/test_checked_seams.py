"""The seams between the contract, the routers and the server are ones the type checker can see.

Each API's route table names its handlers as methods of the API's router Protocol (not strings), and
each router subclasses that Protocol, so a missing, misspelled or mis-typed handler fails ``mypy``
(see ``test_static_checks``) instead of a request. These tests pin that shape, and show on a small
module that mypy does reject both mistakes.
"""

from __future__ import annotations

import inspect
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from underlay.api import (
    agents,
    batches,
    conversations,
    datasets,
    evals,
    files,
    fine_tuning,
    inference,
    messages,
    models,
    post_training,
    prompts,
    responses,
    safety,
    scoring,
    synthetic_data_generation,
    telemetry,
    tool_runtime,
    vector_io,
    vector_stores,
)
from underlay.api import eval as eval_api
from underlay.core.apis import API_TABLE
from underlay.core.routers.agents import AgentsRouter
from underlay.core.routers.batches import BatchesRouter
from underlay.core.routers.conversations import ConversationsRouter
from underlay.core.routers.datasets import DatasetsRouter
from underlay.core.routers.eval import EvalRouter
from underlay.core.routers.evals import EvalsRouter
from underlay.core.routers.files import FilesRouter
from underlay.core.routers.fine_tuning import FineTuningRouter
from underlay.core.routers.inference import InferenceRouter
from underlay.core.routers.messages import MessagesRouter
from underlay.core.routers.models import ModelsRouter
from underlay.core.routers.post_training import PostTrainingRouter
from underlay.core.routers.prompts import PromptsRouter
from underlay.core.routers.responses import ResponsesRouter
from underlay.core.routers.safety import SafetyRouter
from underlay.core.routers.scoring import ScoringRouter
from underlay.core.routers.synthetic_data_generation import SyntheticDataGenerationRouter
from underlay.core.routers.telemetry import TelemetryRouter
from underlay.core.routers.tool_runtime import ToolRuntimeRouter
from underlay.core.routers.vector_io import VectorIORouter
from underlay.core.routers.vector_stores import VectorStoresRouter

ROOT = Path(__file__).resolve().parents[2]

SEAMS: dict[str, tuple[type, type]] = {
    "inference": (inference.InferenceApi, InferenceRouter),
    "models": (models.ModelsApi, ModelsRouter),
    "messages": (messages.MessagesApi, MessagesRouter),
    "files": (files.FilesApi, FilesRouter),
    "fine_tuning": (fine_tuning.FineTuningApi, FineTuningRouter),
    "post_training": (post_training.PostTrainingApi, PostTrainingRouter),
    "vector_io": (vector_io.VectorIOApi, VectorIORouter),
    "vector_stores": (vector_stores.VectorStoresApi, VectorStoresRouter),
    "conversations": (conversations.ConversationsApi, ConversationsRouter),
    "prompts": (prompts.PromptsApi, PromptsRouter),
    "agents": (agents.AgentsApi, AgentsRouter),
    "batches": (batches.BatchesApi, BatchesRouter),
    "responses": (responses.ResponsesApi, ResponsesRouter),
    "tool_runtime": (tool_runtime.ToolRuntimeApi, ToolRuntimeRouter),
    "safety": (safety.SafetyApi, SafetyRouter),
    "telemetry": (telemetry.TelemetryApi, TelemetryRouter),
    "datasets": (datasets.DatasetsApi, DatasetsRouter),
    "scoring": (scoring.ScoringApi, ScoringRouter),
    "evals": (evals.EvalsApi, EvalsRouter),
    "eval": (eval_api.EvalApi, EvalRouter),
    "synthetic_data_generation": (synthetic_data_generation.SyntheticDataGenerationApi, SyntheticDataGenerationRouter),
}


def test_every_api_has_a_seam() -> None:
    assert set(SEAMS) == set(API_TABLE)


@pytest.mark.parametrize("api", sorted(SEAMS))
def test_route_handlers_are_methods_of_the_api_protocol(api: str) -> None:
    protocol, _ = SEAMS[api]
    for route in API_TABLE[api].routes:
        assert callable(route.handler), f"{api} {route.method} {route.path}: handler is {route.handler!r}"
        assert route.handler.__qualname__ == f"{protocol.__name__}.{route.handler.__name__}", route.path
        assert getattr(protocol, route.handler.__name__) is route.handler


@pytest.mark.parametrize("api", sorted(SEAMS))
def test_router_implements_the_api_protocol(api: str) -> None:
    protocol, router = SEAMS[api]
    assert protocol in router.__mro__, f"{router.__name__} does not subclass {protocol.__name__}"
    for route in API_TABLE[api].routes:
        name = route.handler.__name__
        # The router's own method serves the route, not the Protocol's empty stub.
        assert getattr(router, name) is not getattr(protocol, name), f"{router.__name__}.{name} is not implemented"


def test_mypy_rejects_a_misspelled_handler_and_a_missing_method(tmp_path: Path) -> None:
    module = tmp_path / "seam_mistakes.py"
    module.write_text(
        textwrap.dedent(
            """
            from underlay.api.models import DeletedModel, ModelList, ModelsApi, OpenAIModel, RegisterModelRequest
            from underlay.api.routes import Route

            ROUTES = [Route("GET", "/v1/models", ModelsApi.list_modles)]


            class Router(ModelsApi):
                async def list_models(self) -> ModelList:
                    return ModelList(data=[])

                async def retrieve_model(self, model_id: str) -> OpenAIModel:
                    raise NotImplementedError

                async def register_model(self, params: RegisterModelRequest) -> OpenAIModel:
                    raise NotImplementedError

                async def delete_modle(self, model_id: str) -> DeletedModel:
                    raise NotImplementedError


            router = Router()
            """
        )
    )
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-error-summary", str(module)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=540,
        check=False,
    )
    report = result.stdout + result.stderr
    assert result.returncode == 1, report
    assert 'has no attribute "list_modles"' in report, report
    assert 'Cannot instantiate abstract class "Router" with abstract attribute "delete_model"' in report, report


def test_the_openai_provider_implements_the_native_batch_seam() -> None:
    """``NativeBatchProvider`` is a seam too: the batches router finds such providers by ``isinstance``, so
    the provider's methods must keep the protocol's names and signatures (the router calls no others)."""
    from underlay.providers.remote.inference.openai import Config, OpenAIInferenceProvider

    provider = OpenAIInferenceProvider("openai", Config(api_key="sk-seam-check"))
    assert isinstance(provider, batches.NativeBatchProvider)
    members = [name for name in vars(batches.NativeBatchProvider) if not name.startswith("_")]
    assert "create_native_batch" in members and "read_native_batch_file" in members
    for name in members:
        expected = inspect.signature(getattr(batches.NativeBatchProvider, name))
        assert inspect.signature(getattr(OpenAIInferenceProvider, name)) == expected, name
    assert provider.native_batches_for("/v1/chat/completions")
    assert not provider.native_batches_for("/v1/responses")
    switched_off = OpenAIInferenceProvider("openai", Config(api_key="sk-seam-check", native_batches=False))
    assert not switched_off.native_batches_for("/v1/chat/completions")
