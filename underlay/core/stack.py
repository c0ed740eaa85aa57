"""The running stack: storage, providers, routing tables and one router per API.

``Stack.start`` turns a validated :class:`RunConfig` into live objects; configuration problems found
here (an unknown provider type, a bad provider config, a missing extra) raise :class:`ConfigError`
with one line naming the key and the fix.
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel, TypeAdapter, ValidationError

from underlay.api.errors import ServiceUnavailableError, UnderlayError, UpstreamTimeoutError
from underlay.api.models import Model
from underlay.api.providers import ProviderSpec
from underlay.core.api_plugins import check as check_apis
from underlay.core.api_plugins import discover as discover_apis
from underlay.core.apis import ApiEntry
from underlay.core.boundary import wrap_provider
from underlay.core.config import ConfigError, RunConfig, validation_error_line
from underlay.core.jobs import JobRunner
from underlay.core.registry import available_providers, import_object
from underlay.core.routing.models import ModelsRoutingTable

if TYPE_CHECKING:
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
    from underlay.core.storage.kvstore import KVStore
    from underlay.core.storage.sqlstore import SqlStore
    from underlay.core.telemetry.runtime import Telemetry

log = logging.getLogger("underlay.stack")

RouterT = TypeVar("RouterT")


def _with_state_dir(config: RunConfig, store: dict[str, Any]) -> dict[str, Any]:
    """Relative SQLite paths live in the run config's state directory."""
    store = dict(store)
    path = store.get("path")
    if store.get("type") == "sqlite" and isinstance(path, str) and path != ":memory:":
        expanded = os.path.expanduser(path)
        if not os.path.isabs(expanded):
            store["path"] = str(config.state_path(expanded))
    return store


class Stack:
    def __init__(self, config: RunConfig) -> None:
        self.config = config
        self.registry: dict[tuple[str, str], ProviderSpec] = {}
        self.providers: dict[str, dict[str, Any]] = {}
        self.provider_specs: dict[str, ProviderSpec] = {}
        self.routers: dict[str, object] = {}
        """Each switched-on API's router by API name, for dispatch by name (the server's routes); code that
        needs one router uses the typed accessors below (``stack.inference_router`` ...)."""
        self.apis: list[str] = []
        """The switched-on APIs (the configured ones and their dependencies) in build order."""
        self.api_table: dict[str, ApiEntry] = {}
        """Every known API, built-in or from a package (``underlay.apis`` entry points, ``apis_dir``)."""
        self.kvstore: KVStore | None = None
        self.sqlstore: SqlStore | None = None
        self.models: ModelsRoutingTable | None = None
        self.jobs: JobRunner | None = None
        self.telemetry: Telemetry | None = None
        """The stack's :class:`underlay.core.telemetry.runtime.Telemetry`; ``None`` when switched off."""
        self.started = False
        """True once :meth:`start` finished: a stack whose start failed stops quietly (its error is the one line)."""

    async def start(self) -> None:
        from underlay.core.storage.kvstore import KVStoreConfig, kvstore_from_config
        from underlay.core.storage.sqlstore import SqlStoreConfig, sqlstore_from_config

        source = self.config.source
        kv_config = self._validate(
            KVStoreConfig, _with_state_dir(self.config, self.config.storage.kvstore), "storage.kvstore"
        )
        sql_config = self._validate(
            SqlStoreConfig, _with_state_dir(self.config, self.config.storage.sqlstore), "storage.sqlstore"
        )
        self.kvstore = await kvstore_from_config(kv_config)
        self.sqlstore = await sqlstore_from_config(sql_config)
        from underlay.core.telemetry.runtime import start_telemetry

        self.telemetry = await start_telemetry(self.config.telemetry, self.sqlstore)
        self.registry = available_providers()
        for api in self.config.providers:
            if api not in self.config.apis:
                raise ConfigError(f"{source}: providers.{api}: API '{api}' is not listed in apis; add it to apis")
        catalog = discover_apis(self.config)  # a missing or broken API package is one line here
        self.apis = check_apis(self.config, catalog)
        self.api_table = catalog.table
        for spec in catalog.providers:  # providers an apis_dir package brings for its API
            self.registry.setdefault((spec.api, spec.provider_type), spec)
        for api in self.apis:
            if api not in self.routers:  # a builder may have built one it depends on (inference builds safety)
                await self.build_api(api)
        if self.jobs is not None:
            await self.jobs.start()  # after every router registered its job kinds
        self.started = True

    async def build_api(self, api: str, deps: dict[str, object] | None = None) -> object:
        """Instantiate ``api``'s providers and build its router, once its dependencies are built.

        Routers get what they depend on through their constructors (see :mod:`underlay.core.apis`), so a
        router is complete when it is registered here and nothing is patched onto it afterwards.
        ``deps`` gives its providers routers that are not registered yet (the unguarded inference router
        the safety API's model-backed shields call, built before the guarded one that chat uses).
        """
        providers = await self._instantiate(api, deps or {})
        router = await self.api_table[api].build_router(self, providers)
        self.instrument_router(api, router)
        self.routers[api] = router
        return router

    def instrument_router(self, api: str, router: object) -> None:
        """Spans around every router call (see telemetry.instrument), when telemetry is on."""
        if self.telemetry is not None:
            self.telemetry.instrument_router(api, router)

    def kv(self) -> KVStore:
        """The KV store; opened by :meth:`start` before any router is built."""
        if self.kvstore is None:
            raise RuntimeError("the stack's KV store opens in Stack.start")
        return self.kvstore

    def sql(self) -> SqlStore:
        """The SQL store; opened by :meth:`start` before any router is built."""
        if self.sqlstore is None:
            raise RuntimeError("the stack's SQL store opens in Stack.start")
        return self.sqlstore

    def _router(self, api: str, kind: type[RouterT]) -> RouterT | None:
        router = self.routers.get(api)
        if router is None:
            return None
        if not isinstance(router, kind):
            raise TypeError(f"the {api} router is a {type(router).__name__}, not a {kind.__name__}")
        return router

    # One typed accessor per API: None when the API is off. (The imports are deferred so that importing
    # the stack does not import every router.)

    @property
    def inference_router(self) -> InferenceRouter | None:
        from underlay.core.routers.inference import InferenceRouter

        return self._router("inference", InferenceRouter)

    @property
    def models_router(self) -> ModelsRouter | None:
        from underlay.core.routers.models import ModelsRouter

        return self._router("models", ModelsRouter)

    @property
    def files_router(self) -> FilesRouter | None:
        from underlay.core.routers.files import FilesRouter

        return self._router("files", FilesRouter)

    @property
    def vector_io_router(self) -> VectorIORouter | None:
        from underlay.core.routers.vector_io import VectorIORouter

        return self._router("vector_io", VectorIORouter)

    @property
    def vector_stores_router(self) -> VectorStoresRouter | None:
        from underlay.core.routers.vector_stores import VectorStoresRouter

        return self._router("vector_stores", VectorStoresRouter)

    @property
    def conversations_router(self) -> ConversationsRouter | None:
        from underlay.core.routers.conversations import ConversationsRouter

        return self._router("conversations", ConversationsRouter)

    @property
    def responses_router(self) -> ResponsesRouter | None:
        from underlay.core.routers.responses import ResponsesRouter

        return self._router("responses", ResponsesRouter)

    @property
    def tool_runtime_router(self) -> ToolRuntimeRouter | None:
        from underlay.core.routers.tool_runtime import ToolRuntimeRouter

        return self._router("tool_runtime", ToolRuntimeRouter)

    @property
    def safety_router(self) -> SafetyRouter | None:
        from underlay.core.routers.safety import SafetyRouter

        return self._router("safety", SafetyRouter)

    @property
    def prompts_router(self) -> PromptsRouter | None:
        from underlay.core.routers.prompts import PromptsRouter

        return self._router("prompts", PromptsRouter)

    @property
    def messages_router(self) -> MessagesRouter | None:
        from underlay.core.routers.messages import MessagesRouter

        return self._router("messages", MessagesRouter)

    @property
    def agents_router(self) -> AgentsRouter | None:
        from underlay.core.routers.agents import AgentsRouter

        return self._router("agents", AgentsRouter)

    @property
    def batches_router(self) -> BatchesRouter | None:
        from underlay.core.routers.batches import BatchesRouter

        return self._router("batches", BatchesRouter)

    @property
    def eval_router(self) -> EvalRouter | None:
        from underlay.core.routers.eval import EvalRouter

        return self._router("eval", EvalRouter)

    @property
    def evals_router(self) -> EvalsRouter | None:
        from underlay.core.routers.evals import EvalsRouter

        return self._router("evals", EvalsRouter)

    @property
    def fine_tuning_router(self) -> FineTuningRouter | None:
        from underlay.core.routers.fine_tuning import FineTuningRouter

        return self._router("fine_tuning", FineTuningRouter)

    @property
    def post_training_router(self) -> PostTrainingRouter | None:
        from underlay.core.routers.post_training import PostTrainingRouter

        return self._router("post_training", PostTrainingRouter)

    @property
    def datasets_router(self) -> DatasetsRouter | None:
        from underlay.core.routers.datasets import DatasetsRouter

        return self._router("datasets", DatasetsRouter)

    @property
    def scoring_router(self) -> ScoringRouter | None:
        from underlay.core.routers.scoring import ScoringRouter

        return self._router("scoring", ScoringRouter)

    @property
    def synthetic_data_generation_router(self) -> SyntheticDataGenerationRouter | None:
        from underlay.core.routers.synthetic_data_generation import SyntheticDataGenerationRouter

        return self._router("synthetic_data_generation", SyntheticDataGenerationRouter)

    @property
    def telemetry_router(self) -> TelemetryRouter | None:
        from underlay.core.routers.telemetry import TelemetryRouter

        return self._router("telemetry", TelemetryRouter)

    def job_runner(self) -> JobRunner:
        """The process's durable-job runner, created on first use; it starts once all routers are built."""
        if self.jobs is None:
            settings = self.config.jobs
            self.jobs = JobRunner(
                self.sql(),
                workers=settings.workers,
                reserved=settings.reserved_workers,
                lease_seconds=settings.lease_seconds,
                poll_seconds=settings.poll_seconds,
                poll_max_seconds=settings.poll_max_seconds,
            )
        return self.jobs

    @staticmethod
    def configured_model(registration: Any) -> Model:
        return Model(
            identifier=registration.model_id,
            provider_id=registration.provider_id,
            provider_resource_id=registration.provider_model_id or registration.model_id,
            model_type=registration.model_type,
            aliases=registration.aliases,
            metadata=registration.metadata,
            source="config",
        )

    def _validate(self, schema: Any, data: Any, key: str) -> Any:
        try:
            return TypeAdapter(schema).validate_python(data)
        except ValidationError as exc:
            model = schema if isinstance(schema, type) and issubclass(schema, BaseModel) else BaseModel
            raise ConfigError(validation_error_line(self.config.source, exc, model, prefix=key)) from None

    async def _instantiate(self, api: str, extra_deps: dict[str, object]) -> dict[str, Any]:
        source = self.config.source
        instances: dict[str, Any] = {}
        for index, entry in enumerate(self.config.providers.get(api, [])):
            key = f"providers.{api}[{index}]"
            spec = self.registry.get((api, entry.provider_type))
            if spec is None:
                known = sorted(t for a, t in self.registry if a == api)
                raise ConfigError(
                    f"{source}: {key}.provider_type: unknown provider type '{entry.provider_type}' for {api}; "
                    f"use one of: {', '.join(known)}"
                )
            try:
                config_class = import_object(spec.config_class)
                factory = import_object(spec.factory)
            except ImportError as exc:
                extra = f"pip install 'underlay[{','.join(spec.extras)}]'" if spec.extras else "install its package"
                raise ConfigError(
                    f"{source}: {key}.provider_type: {entry.provider_type} needs a missing package "
                    f"({exc.name or exc}); {extra}"
                ) from None
            try:
                # The state directory reaches config validators, so relative paths can resolve under it.
                provider_config = config_class.model_validate(
                    entry.config, context={"state_dir": str(self.config.state_path(""))}
                )
            except ValidationError as exc:
                raise ConfigError(validation_error_line(source, exc, config_class, prefix=f"{key}.config")) from None
            built = {**self.routers, **extra_deps}
            wanted = (*spec.api_dependencies, *spec.optional_api_dependencies)
            deps = {dep: built[dep] for dep in wanted if dep in built}
            try:
                instance = await factory(entry.provider_id, provider_config, deps)
                await instance.initialize()
            except UnderlayError as exc:  # an expected start-up failure: unreachable server, missing file
                raise ConfigError(_start_failure_line(source, key, entry.provider_type, exc)) from None
            # The one provider boundary: spans, usage figures and foreign exceptions mapped to typed errors.
            instances[entry.provider_id] = wrap_provider(
                instance, api=api, provider_id=entry.provider_id, telemetry=self.telemetry
            )
            self.provider_specs[entry.provider_id] = spec
        self.providers[api] = instances
        return instances

    async def stop(self) -> None:
        if self.jobs is not None:
            await self.jobs.stop()  # interrupted jobs keep their lease and resume on the next start
        for api, router in reversed(list(self.routers.items())):
            shutdown = getattr(router, "shutdown", None)  # routers with background tasks stop them first
            if shutdown is not None:
                try:
                    await shutdown()
                except Exception as exc:
                    log.warning("router %s failed to shut down: %s", api, exc)
        if self.models is not None:
            await self.models.shutdown()
        if self.telemetry is not None:
            await self.telemetry.stop()  # writes buffered spans while the SQL store is still open
        for instances in self.providers.values():
            for provider_id, instance in instances.items():
                try:
                    await instance.shutdown()
                except Exception as exc:  # shutdown must reach every provider
                    log.warning("provider %s failed to shut down: %s", provider_id, exc)
        for store in (self.kvstore, self.sqlstore):
            if store is not None:
                await store.close()
        if self.started:
            log.info("stack stopped: routers, providers and stores shut down")
        self.started = False

    def provider_infos(self) -> list[dict[str, Any]]:
        """Every configured provider with its config, secrets redacted."""
        out = []
        for api, entries in self.config.providers.items():
            for entry in entries:
                spec = self.provider_specs.get(entry.provider_id)
                secret_words = spec.secret_fields if spec else ("api_key", "password", "token", "secret")
                out.append(
                    {
                        "api": api,
                        "provider_id": entry.provider_id,
                        "provider_type": entry.provider_type,
                        "config": redact(entry.config, secret_words),
                    }
                )
        return out


def _start_failure_line(source: str, key: str, provider_type: str, exc: UnderlayError) -> str:
    """One bounded line for a provider that could not start.

    Provider messages may carry an upstream's multi-line text (PostgreSQL adds DETAIL and HINT lines);
    the CLI promises one line, so whitespace is folded and the text is capped.
    """
    message = " ".join(exc.message.split())
    if len(message) > 600:
        message = message[:600] + "..."
    line = f"{source}: {key}: {provider_type} did not start: {message}"
    if isinstance(exc, ServiceUnavailableError | UpstreamTimeoutError):
        line += f"; check that the service runs and {key}.config points at it"
    return line


def redact(value: Any, secret_words: tuple[str, ...]) -> Any:
    if isinstance(value, dict):
        return {
            k: ("********" if v and any(w in str(k).lower() for w in secret_words) else redact(v, secret_words))
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [redact(v, secret_words) for v in value]
    if isinstance(value, str):  # secrets inside other values: user:password@ in URLs, sk-... keys
        from underlay.shared.redact import redact as redact_text

        return redact_text(value)
    return value
