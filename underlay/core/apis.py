"""The table of APIs: each API's route table, the APIs it needs, and how its router is built.

The stack builds routers in dependency order from this table and the server mounts the route tables
from it, so adding an API is one entry here plus its contract module and router. The table reaches the
stack the way an outside package's APIs do: through the ``underlay.apis`` entry-point group
(``pyproject.toml`` names :data:`API_TABLE`; see :mod:`underlay.core.api_plugins`). Each builder hands a
router everything it uses through its constructor, reading what was built before it through the
stack's typed accessors; nothing is set on a router after it is built.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from underlay.api import agents as agents_api
from underlay.api import batches as batches_api
from underlay.api import conversations as conversations_api
from underlay.api import datasets as datasets_api
from underlay.api import eval as eval_api
from underlay.api import evals as evals_api
from underlay.api import files as files_api
from underlay.api import fine_tuning as fine_tuning_api
from underlay.api import inference as inference_api
from underlay.api import messages as messages_api
from underlay.api import models as models_api
from underlay.api import post_training as post_training_api
from underlay.api import prompts as prompts_api
from underlay.api import responses as responses_api
from underlay.api import safety as safety_api
from underlay.api import scoring as scoring_api
from underlay.api import synthetic_data_generation as synthetic_data_generation_api
from underlay.api import telemetry as telemetry_api
from underlay.api import tool_runtime as tool_runtime_api
from underlay.api import vector_io as vector_io_api
from underlay.api import vector_stores as vector_stores_api
from underlay.api.routes import Route

if TYPE_CHECKING:
    from underlay.core.quotas.background import BackgroundCharger
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
    from underlay.core.stack import Stack

RouterT = TypeVar("RouterT")


@dataclass(frozen=True)
class ApiEntry:
    """One API: its route table, how its router is built, what it needs, and the version it is served under.

    ``version`` is the path prefix and says how stable the API is: ``v1`` (stable), ``v1beta``/``v1alpha``
    (may change). A route whose path does not already start with ``/<version>/`` is served under it, so
    an outside package writes ``/notes`` and gets ``/v1alpha/notes`` (the built-ins spell ``/v1/...`` out).
    """

    routes: list[Route]
    build_router: Callable[[Stack, dict[str, Any]], Awaitable[object]]
    depends_on: tuple[str, ...] = ()
    """APIs whose routers must exist first (they are switched on with this one)."""
    optional_depends_on: tuple[str, ...] = ()
    """APIs whose routers must exist first when they are switched on anyway (never switched on by this one)."""
    version: str = "v1"
    description: str = ""

    @property
    def stability(self) -> str:
        """``alpha``, ``beta`` or ``stable``, read from :attr:`version`."""
        return stability_of(self.version)


def stability_of(version: str) -> str:
    """``v1alpha`` → ``alpha``, ``v2beta1`` → ``beta``, ``v1`` → ``stable``."""
    for level in ("alpha", "beta"):
        if level in version:
            return level
    return "stable"


def _built(router: RouterT | None, api: str, needed_by: str) -> RouterT:
    """A router ``needed_by`` depends on; ``depends_on`` in the table guarantees it was built first."""
    if router is None:
        raise RuntimeError(f"the {needed_by} router is built after {api} (see depends_on in API_TABLE)")
    return router


async def _inference_router(stack: Stack, providers: dict[str, Any]) -> InferenceRouter:
    """The inference router, with the safety router for guardrails when that API is on.

    Guardrails make the two depend on each other: chat completions run shields, and model-backed shields
    (llama-guard, guard-prompt) run chat completions. So when safety is on it is built here, between
    an unguarded inference router, which those shields call (always with ``guardrails: []``), and the
    guarded one, which is the inference API's router. Both share the routing table, providers and store.
    """
    from underlay.core.routers.inference import InferenceRouter
    from underlay.core.routing.models import ModelsRoutingTable
    from underlay.core.stores.chat_completions import ChatCompletionStore

    settings = stack.config.inference
    models = ModelsRoutingTable(stack.kv(), providers, settings.model_discovery_timeout)
    stack.models = models
    await models.initialize([stack.configured_model(m) for m in stack.config.models])
    completions = ChatCompletionStore(stack.sql())
    await completions.initialize()
    agent_chat = None
    if "agents" in stack.apis:
        from underlay.core.agent_chat import AgentChat

        agent_chat = AgentChat(lambda: stack.responses_router)  # built after this router; looked up per call
    if "safety" not in stack.apis:
        return InferenceRouter(
            models, providers, completions, store_all=settings.store_chat_completions, agent_chat=agent_chat
        )
    unguarded = InferenceRouter(models, providers, completions, store_all=settings.store_chat_completions)
    stack.instrument_router("inference", unguarded)
    await stack.build_api("safety", deps={"inference": unguarded})
    safety = _built(stack.safety_router, "safety", "inference")
    return InferenceRouter(
        models,
        providers,
        completions,
        store_all=settings.store_chat_completions,
        safety=safety,
        agent_chat=agent_chat,
    )


async def _messages_router(stack: Stack, providers: dict[str, Any]) -> MessagesRouter:
    """Anthropic's Messages over the inference router (native providers are reached through its table)."""
    from underlay.core.routers.messages import MessagesRouter

    return MessagesRouter(_built(stack.inference_router, "inference", "messages"))


async def _models_router(stack: Stack, providers: dict[str, Any]) -> ModelsRouter:
    from underlay.core.routers.models import ModelsRouter

    return ModelsRouter(_built(stack.models, "inference", "models"))


async def _files_router(stack: Stack, providers: dict[str, Any]) -> FilesRouter:
    from underlay.core.config import ConfigError
    from underlay.core.routers.files import FilesRouter
    from underlay.core.stores.files import FileStore

    if not providers:
        raise ConfigError(
            f"{stack.config.source}: providers.files: the files API needs a provider; add "
            "{provider_id: localfs, provider_type: inline::localfs, config: {root: files}}"
        )
    store = FileStore(stack.sql())
    await store.initialize()
    router = FilesRouter(store, providers, stack.config.files)
    await router.initialize()
    return router


async def _vector_io_router(stack: Stack, providers: dict[str, Any]) -> VectorIORouter:
    from underlay.core.routers.vector_io import VectorIORouter
    from underlay.core.stores.vector_stores import VectorStoreRows

    router = VectorIORouter(providers, VectorStoreRows(stack.sql()), stack.inference_router)
    await router.initialize()
    return router


async def _vector_stores_router(stack: Stack, providers: dict[str, Any]) -> VectorStoresRouter:
    from underlay.core.routers.vector_stores import VectorStoresRouter

    settings = stack.config.vector_stores
    vector_io = _built(stack.vector_io_router, "vector_io", "vector_stores")
    router = VectorStoresRouter(
        vector_io.rows,
        vector_io,
        _built(stack.inference_router, "inference", "vector_stores"),
        stack.files_router,
        stack.job_runner(),
        default_embedding_model=settings.default_embedding_model,
        rewrite_model=settings.rewrite_model,
        embed_batch_size=settings.embed_batch_size,
        max_attempts=settings.max_attempts,
    )
    await router.initialize()
    return router


async def _conversations_router(stack: Stack, providers: dict[str, Any]) -> ConversationsRouter:
    from underlay.core.routers.conversations import ConversationsRouter
    from underlay.core.stores.conversations import ConversationStore

    store = ConversationStore(stack.sql())
    await store.initialize()
    return ConversationsRouter(store)


async def _prompts_router(stack: Stack, providers: dict[str, Any]) -> PromptsRouter:
    from underlay.core.routers.prompts import PromptsRouter
    from underlay.core.stores.prompts import PromptStore

    store = PromptStore(stack.sql())
    await store.initialize()
    return PromptsRouter(store)


async def _agents_router(stack: Stack, providers: dict[str, Any]) -> AgentsRouter:
    from underlay.core.routers.agents import AgentsRouter
    from underlay.core.stores.agents import AgentStore

    store = AgentStore(stack.sql())
    await store.initialize()
    return AgentsRouter(store)


def _batch_charger(stack: Stack) -> BackgroundCharger | None:
    """With quotas on, a batch's lines spend the owner's token budget like live requests."""
    from underlay.core.quotas.background import BackgroundCharger

    quotas = stack.config.server.quotas
    if quotas is None or stack.kvstore is None:
        return None
    return BackgroundCharger(quotas, stack.kvstore)


async def _batches_router(stack: Stack, providers: dict[str, Any]) -> BatchesRouter:
    """Each batchable endpoint maps to the API serving it live; a line is run by that API's router.

    The inference providers with their own Batches API (:class:`NativeBatchProvider`) and the models
    routing table let the router pass a whole batch to such a provider; the router never learns which
    provider classes those are.
    """
    from underlay.core.routers.batches import BatchesRouter, Endpoint
    from underlay.core.stores.batches import BatchStore

    settings = stack.config.batches
    native = {
        provider_id: provider
        for provider_id, provider in stack.providers.get("inference", {}).items()
        if isinstance(provider, batches_api.NativeBatchProvider)
    }
    chat_needs_underlay = stack.config.inference.store_chat_completions or (
        "safety" in stack.apis and bool(stack.config.safety.default_guardrails)
    )

    endpoints: dict[str, Endpoint] = {}
    for api in stack.apis:
        entry = API_TABLE.get(api)
        for route in entry.routes if entry is not None else ():
            if route.method == "POST" and route.path in batches_api.BATCH_ENDPOINTS and route.body is not None:
                endpoints[route.path] = Endpoint(api, route)
    router = BatchesRouter(
        BatchStore(stack.sql()),
        _built(stack.files_router, "files", "batches"),
        stack.job_runner(),
        endpoints,
        stack.routers.get,
        concurrency=settings.concurrency,
        max_lines=settings.max_lines,
        charger=_batch_charger(stack),
        native=native,
        resolve_model=stack.models.get if stack.models is not None else None,
        chat_needs_underlay=chat_needs_underlay,
        poll_seconds=settings.native_poll_seconds,
    )
    await router.initialize()
    return router


async def _datasets_router(stack: Stack, providers: dict[str, Any]) -> DatasetsRouter:
    """Providers that keep rows in the SQL store get the row store (``attach``), as Responses gets its store."""
    from underlay.core.routers.datasets import DatasetsRouter
    from underlay.core.stores.datasets import DatasetRowStore, DatasetStore

    store = DatasetStore(stack.sql())
    await store.initialize()
    rows = DatasetRowStore(stack.sql())
    await rows.initialize()
    for provider in providers.values():
        attach = getattr(provider, "attach", None)
        if attach is not None:
            attach(rows)
    return DatasetsRouter(store, providers, stack.files_router)


async def _synthetic_data_generation_router(stack: Stack, providers: dict[str, Any]) -> SyntheticDataGenerationRouter:
    from underlay.core.routers.synthetic_data_generation import SyntheticDataGenerationRouter

    return SyntheticDataGenerationRouter(
        _built(stack.inference_router, "inference", "synthetic_data_generation"),
        _built(stack.datasets_router, "datasets", "synthetic_data_generation"),
        stack.vector_stores_router,
    )


async def _tool_runtime_router(stack: Stack, providers: dict[str, Any]) -> ToolRuntimeRouter:
    from underlay.core.routers.tool_runtime import ToolRuntimeRouter
    from underlay.core.routing.tool_groups import ToolGroupsRoutingTable

    table = ToolGroupsRoutingTable(stack.kv(), providers)
    await table.initialize(stack.config.tool_groups, stack.config.source)
    return ToolRuntimeRouter(table, providers)


async def _responses_router(stack: Stack, providers: dict[str, Any]) -> ResponsesRouter:
    from underlay.core.config import ConfigError
    from underlay.core.routers.responses import ResponsesRouter
    from underlay.core.stores.responses import ResponseStore

    if not providers:
        raise ConfigError(
            f"{stack.config.source}: providers.responses: the responses API needs a provider; add "
            "{provider_id: builtin, provider_type: inline::builtin}"
        )
    store = ResponseStore(stack.sql())
    await store.initialize()
    jobs = stack.job_runner()
    for provider in providers.values():  # the routers it uses came with its deps (all built before it)
        provider.attach(store, jobs)
    return ResponsesRouter(providers, agents=stack.agents_router)


async def _safety_router(stack: Stack, providers: dict[str, Any]) -> SafetyRouter:
    """Built by :func:`_inference_router` (guardrails need it there), after the unguarded inference router."""
    from underlay.api.safety import Shield
    from underlay.core.routers.safety import SafetyRouter
    from underlay.core.routing.shields import ShieldsRoutingTable

    table = ShieldsRoutingTable(stack.kv(), providers)
    await table.initialize(
        [
            Shield(
                identifier=s.shield_id,
                provider_id=s.provider_id,
                provider_resource_id=s.provider_shield_id or s.shield_id,
                params=s.params,
            )
            for s in stack.config.shields
        ]
    )
    return SafetyRouter(table, providers, stack.config.safety)


async def _scoring_router(stack: Stack, providers: dict[str, Any]) -> ScoringRouter:
    """Built-in functions come from the providers; ``score-batch`` reads datasets when that API is on."""
    from underlay.core.routers.scoring import ScoringRouter
    from underlay.core.stores.scoring_functions import ScoringFunctionStore

    store = ScoringFunctionStore(stack.sql())
    await store.initialize()
    router = ScoringRouter(store, providers, datasets=stack.datasets_router)
    await router.initialize()
    return router


async def _fine_tuning_router(stack: Stack, providers: dict[str, Any]) -> FineTuningRouter:
    """Trainers are its providers; a succeeded job's model is served by an inference provider that loads files."""
    from underlay.core.config import ConfigError
    from underlay.core.routers.fine_tuning import FineTuningRouter
    from underlay.core.serving import ModelServing
    from underlay.core.stores.fine_tuning import FineTuningStore

    if not providers:
        raise ConfigError(
            f"{stack.config.source}: providers.fine_tuning: the fine_tuning API needs a trainer; add "
            "{provider_id: huggingface, provider_type: inline::huggingface}"
        )
    serving = None
    if stack.models is not None:
        serving = ModelServing(stack.providers.get("inference", {}), stack.models)
    inference = stack.providers.get("inference", {}) if stack.models is not None else {}
    for provider_id, trainer in providers.items():  # a trainer upstream names where its tuned models are served
        target = trainer.serving_provider() if isinstance(trainer, fine_tuning_api.UpstreamTrainer) else None
        if target is not None and target not in inference:
            raise ConfigError(
                f"{stack.config.source}: providers.fine_tuning ({provider_id}): inference_provider_id '{target}' "
                f"is not an inference provider here; add a remote::openai inference provider with provider_id "
                f"'{target}', or set inference_provider_id: null to leave tuned models unlisted"
            )
    router = FineTuningRouter(
        FineTuningStore(stack.sql()),
        _built(stack.files_router, "files", "fine_tuning"),
        stack.job_runner(),
        providers,
        stack.config.state_path("fine_tuning"),
        serving,
    )
    await router.initialize()
    return router


async def _post_training_router(stack: Stack, providers: dict[str, Any]) -> PostTrainingRouter:
    """A view over the fine-tuning router (same jobs, trainers and lane); datasets are read when that API is on."""
    from underlay.core.routers.post_training import PostTrainingRouter

    return PostTrainingRouter(
        _built(stack.fine_tuning_router, "fine_tuning", "post_training"),
        _built(stack.files_router, "files", "post_training"),
        stack.datasets_router,
    )


async def _evals_router(stack: Stack, providers: dict[str, Any]) -> EvalsRouter:
    """Runs sample and judge through the inference and responses routers; file rows come through files."""
    from underlay.core.routers.evals import EvalsRouter
    from underlay.core.stores.evals import EvalStore

    router = EvalsRouter(
        EvalStore(stack.sql()),
        stack.job_runner(),
        inference=_built(stack.inference_router, "inference", "evals"),
        responses=stack.responses_router,
        files=stack.files_router,
    )
    await router.initialize()
    return router


async def _eval_router(stack: Stack, providers: dict[str, Any]) -> EvalRouter:
    """Benchmarks and eval jobs: rows sampled through inference or responses, graded by scoring functions."""
    from underlay.core.routers.eval import EvalRouter
    from underlay.core.stores.eval_jobs import EvalJobStore

    router = EvalRouter(
        EvalJobStore(stack.sql()),
        stack.job_runner(),
        _built(stack.scoring_router, "scoring", "eval"),
        inference=stack.inference_router,
        responses=stack.responses_router,
        datasets=stack.datasets_router,
    )
    await router.initialize()
    return router


async def _telemetry_router(stack: Stack, providers: dict[str, Any]) -> TelemetryRouter:
    from underlay.core.routers.telemetry import TelemetryRouter

    return TelemetryRouter(stack.telemetry)


API_TABLE: dict[str, ApiEntry] = {
    "inference": ApiEntry(inference_api.ROUTES, _inference_router),
    "models": ApiEntry(models_api.ROUTES, _models_router, depends_on=("inference",)),
    "messages": ApiEntry(messages_api.ROUTES, _messages_router, depends_on=("inference",)),
    "files": ApiEntry(files_api.ROUTES, _files_router),
    "vector_io": ApiEntry(vector_io_api.ROUTES, _vector_io_router, depends_on=("inference",)),
    "vector_stores": ApiEntry(
        vector_stores_api.ROUTES, _vector_stores_router, depends_on=("inference", "files", "vector_io")
    ),
    "conversations": ApiEntry(conversations_api.ROUTES, _conversations_router),
    "prompts": ApiEntry(prompts_api.ROUTES, _prompts_router),
    "agents": ApiEntry(agents_api.ROUTES, _agents_router),
    # Lines run through the routers of the endpoints they name, looked up when each line runs.
    "batches": ApiEntry(
        batches_api.ROUTES,
        _batches_router,
        depends_on=("files",),
        optional_depends_on=("inference", "responses", "safety"),
    ),
    # The routers its provider may use are built first, so they reach it with its deps at construction.
    "responses": ApiEntry(
        responses_api.ROUTES,
        _responses_router,
        depends_on=("inference", "conversations"),
        optional_depends_on=("vector_stores", "tool_runtime", "files", "safety", "prompts", "agents"),
    ),
    # builtin::file_search searches vector stores when that API is on; without it the tool says so.
    "tool_runtime": ApiEntry(tool_runtime_api.ROUTES, _tool_runtime_router, optional_depends_on=("vector_stores",)),
    "safety": ApiEntry(safety_api.ROUTES, _safety_router, depends_on=("inference",)),
    "telemetry": ApiEntry(telemetry_api.ROUTES, _telemetry_router),
    # OpenAI's Evals: runs are bulk-lane jobs on the eval engine; samples and judges go through these routers.
    # Benchmarks (shipped ones in the package, users' over their eval datasets) and durable eval jobs.
    "eval": ApiEntry(
        eval_api.ROUTES,
        _eval_router,
        depends_on=("scoring",),
        optional_depends_on=("inference", "responses", "datasets", "agents"),
        version="v1alpha",
        description="Benchmarks and eval jobs: a model or an agent measured on a dataset with scoring functions",
    ),
    "evals": ApiEntry(
        evals_api.ROUTES,
        _evals_router,
        depends_on=("inference",),
        optional_depends_on=("files", "responses", "agents"),
        description="OpenAI Evals: evals, runs (durable, resumable jobs) and per-row output items",
    ),
    # Training runs as durable jobs in the training lane; a tuned model is served through inference.
    "fine_tuning": ApiEntry(
        fine_tuning_api.ROUTES,
        _fine_tuning_router,
        depends_on=("files",),
        optional_depends_on=("inference", "datasets"),
        description="OpenAI fine-tuning jobs: LoRA training as durable jobs, tuned models served at once",
    ),
    # Llama Stack's post-training routes over the fine-tuning engine: training data comes from datasets.
    "post_training": ApiEntry(
        post_training_api.ROUTES,
        _post_training_router,
        depends_on=("fine_tuning", "files"),
        optional_depends_on=("datasets",),
        version="v1alpha",
        description="Post-training: supervised fine-tuning and DPO on a dataset, as fine-tuning jobs",
    ),
    # Routes are /datasets and /datasetio/...; file-... sources are read through the files API when it is on.
    "datasets": ApiEntry(
        datasets_api.ROUTES,
        _datasets_router,
        optional_depends_on=("files",),
        version="v1beta",
        description="Datasets: register, list, delete; iterrows and append-rows",
    ),
    # Pairs written by a model from documents, dialogs or a vector store's files, saved as a dataset.
    "synthetic_data_generation": ApiEntry(
        synthetic_data_generation_api.ROUTES,
        _synthetic_data_generation_router,
        depends_on=("inference", "datasets"),
        optional_depends_on=("vector_stores",),
    ),
    # Providers' built-ins plus users' functions; judge and embedding functions call inference, and
    # score-batch reads datasets, when those APIs are on.
    "scoring": ApiEntry(
        scoring_api.ROUTES,
        _scoring_router,
        optional_depends_on=("inference", "datasets"),
        description="Scoring functions, score and score-batch",
    ),
}


def api_order(apis: list[str], table: Mapping[str, ApiEntry] | None = None) -> list[str]:
    """``apis`` plus their dependencies, dependencies first (optional ones too, when switched on).

    ``table`` is every known API (built-in and from packages); the built-ins alone by default.
    """
    known = API_TABLE if table is None else table
    ordered: list[str] = []
    enabled: set[str] = set()

    def enable(api: str) -> None:
        if api in enabled or api not in known:
            return
        enabled.add(api)
        for dep in known[api].depends_on:
            enable(dep)

    for api in apis:
        enable(api)

    def visit(api: str) -> None:
        if api in ordered or api not in known:
            return
        for dep in known[api].depends_on:
            visit(dep)
        for dep in known[api].optional_depends_on:
            if dep in enabled:
                visit(dep)
        ordered.append(api)

    for api in apis:
        visit(api)
    return ordered
