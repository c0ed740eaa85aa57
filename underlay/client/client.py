"""``Underlay`` and ``AsyncUnderlay``: the ``openai`` clients, pointed at Underlay, plus its own APIs.

Why subclasses rather than wrappers: every OpenAI resource (chat, responses, files, vector stores,
conversations, moderations ...) keeps the SDK's own types, streaming, paging, retries and exceptions,
and code written for ``openai.OpenAI`` takes an ``Underlay`` unchanged. Underlay's own APIs are added as
resources that speak through the same client (see :mod:`underlay.client._wire`).

Defaults differ from OpenAI's on purpose: the base URL is ``UNDERLAY_BASE_URL`` or a local server
(``http://127.0.0.1:8321/v1``), and the key is ``UNDERLAY_API_KEY`` or ``"none"``; ``OPENAI_API_KEY`` is
never read, so an OpenAI key is not sent to an Underlay server by accident.

Two kinds of resource for Underlay's APIs: hand-shaped ones (``models``, ``shields``, ``vector_io`` ...)
whose methods read like OpenAI's, and named generic ones (``prompts``, ``agents``, ``eval``, ``datasets``,
``scoring``, ``post_training``, ``synthetic_data_generation``) that are ``client.api(name)`` under a
name: their methods are the API's route handlers and their answers the API's own pydantic models, so
nothing of those APIs is written a second time here. The names avoid the ``openai`` client's own
(``evals``, ``fine_tuning``, ``batches`` stay OpenAI's).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self, TypeAlias

import openai
from openai._compat import cached_property

from underlay.client.generic import ApiResource, AsyncApiResource
from underlay.client.resources.models import AsyncUnderlayModels, UnderlayModels
from underlay.client.resources.providers import AsyncProviders, Providers
from underlay.client.resources.safety import AsyncShields, AsyncUnderlaySafety, Shields, UnderlaySafety
from underlay.client.resources.telemetry import AsyncTelemetry, Telemetry
from underlay.client.resources.tools import (
    AsyncToolGroups,
    AsyncToolRuntime,
    AsyncTools,
    ToolGroups,
    ToolRuntime,
    Tools,
)
from underlay.client.resources.vector_io import AsyncVectorIO, VectorIO

if TYPE_CHECKING:
    from underlay.client.in_process import InProcessServer
    from underlay.core.config import RunConfig

__all__ = ["DEFAULT_BASE_URL", "NAMED_APIS", "AsyncUnderlay", "Underlay"]

DEFAULT_BASE_URL = "http://127.0.0.1:8321/v1"
ConfigSource: TypeAlias = "str | Path | Mapping[str, Any] | RunConfig"

NAMED_APIS = ("prompts", "agents", "eval", "datasets", "scoring", "post_training", "synthetic_data_generation")
"""The APIs each client offers as an attribute of the same name, typed by ``client.api(name)``."""


def _base_url(given: Any) -> Any:
    if given is None or isinstance(given, openai.NotGiven):
        return os.environ.get("UNDERLAY_BASE_URL") or DEFAULT_BASE_URL
    return given


def _api_key(given: Any) -> Any:
    return given if given is not None else os.environ.get("UNDERLAY_API_KEY") or "none"


class Underlay(openai.OpenAI):
    """The ``openai`` client for an Underlay server, with Underlay's own APIs beside OpenAI's.

    ``Underlay.in_process("local")`` starts a stack in this process and talks to it (see
    :meth:`in_process`); ``close()`` (or leaving a ``with`` block) stops it.
    """

    _underlay_server: InProcessServer | None = None

    def __init__(self, *, api_key: Any = None, base_url: Any = None, **kwargs: Any) -> None:
        super().__init__(api_key=_api_key(api_key), base_url=_base_url(base_url), **kwargs)

    @classmethod
    def in_process(cls, config: ConfigSource = "local", *, env: Mapping[str, str] | None = None, **kwargs: Any) -> Self:
        """Start the stack of ``config`` (a distribution name, a YAML path, a config dict or a parsed
        config) in this process, served on a free loopback port by a thread of its own, and return a
        client for it. ``env`` resolves ``${env.NAME}`` (default: this process's environment). Blocks
        until the stack is up; a broken config raises its one-line ``ConfigError``."""
        from underlay.client.in_process import InProcessServer

        server = InProcessServer.start(config, env=env)
        try:
            client = cls(base_url=server.v1, **kwargs)
        except BaseException:
            server.stop()
            raise
        client._underlay_server = server
        return client

    def close(self) -> None:
        """Close the connections, and stop the in-process stack when this client started one."""
        try:
            super().close()
        finally:
            server, self._underlay_server = self._underlay_server, None
            if server is not None:
                server.stop()

    def api(self, name: str, *, typed: bool = True) -> ApiResource:
        """Any API the server loads through ``underlay.apis`` (built-in or from a package), its route
        handlers as methods: ``client.api("notes").create_note(title=..., text=...)``. Typed by the API's
        own models when its package is importable here (``typed=False``: plain JSON, from the server's
        description). See :mod:`underlay.client.generic`."""
        cache: dict[tuple[str, bool], ApiResource] = self.__dict__.setdefault("_underlay_apis", {})
        if (name, typed) not in cache:
            cache[(name, typed)] = ApiResource(self, name, typed=typed)
        return cache[(name, typed)]

    @cached_property
    def models(self) -> UnderlayModels:
        """OpenAI's Models resource plus ``register`` and ``describe``."""
        return UnderlayModels(self)

    @cached_property
    def safety(self) -> UnderlaySafety:
        """OpenAI's safety resource plus ``run_shield``."""
        return UnderlaySafety(self)

    @cached_property
    def shields(self) -> Shields:
        return Shields(self)

    @cached_property
    def toolgroups(self) -> ToolGroups:
        return ToolGroups(self)

    @cached_property
    def tools(self) -> Tools:
        return Tools(self)

    @cached_property
    def tool_runtime(self) -> ToolRuntime:
        return ToolRuntime(self)

    @cached_property
    def vector_io(self) -> VectorIO:
        return VectorIO(self)

    @cached_property
    def telemetry(self) -> Telemetry:
        return Telemetry(self)

    @cached_property
    def providers(self) -> Providers:
        return Providers(self)

    # ---- named generic resources: ``client.api(name)`` under the API's name --------------------------------

    @property
    def prompts(self) -> ApiResource:
        """The Prompts API: ``create_prompt``, ``list_prompts``, ``retrieve_prompt``, versions, ``delete_prompt``."""
        return self.api("prompts")

    @property
    def agents(self) -> ApiResource:
        """The Agents API: ``deploy_agent``, ``list_agents``, ``retrieve_agent``, versions, ``delete_agent``."""
        return self.api("agents")

    @property
    def eval(self) -> ApiResource:
        """The benchmark eval API (``/v1alpha/eval``): benchmarks, eval jobs and their results. OpenAI's
        Evals stay at ``client.evals``."""
        return self.api("eval")

    @property
    def datasets(self) -> ApiResource:
        """The Datasets API: ``register_dataset``, ``list_datasets``, ``get_dataset``, ``iterrows``, ``append_rows``."""
        return self.api("datasets")

    @property
    def scoring(self) -> ApiResource:
        """Scoring and scoring functions: ``score``, ``score_batch``, ``list_scoring_functions`` ..."""
        return self.api("scoring")

    @property
    def post_training(self) -> ApiResource:
        """The post-training API (``/v1alpha/post-training``). OpenAI's fine-tuning stays at ``client.fine_tuning``."""
        return self.api("post_training")

    @property
    def synthetic_data_generation(self) -> ApiResource:
        """The synthetic data generation API: ``generate``."""
        return self.api("synthetic_data_generation")


class AsyncUnderlay(openai.AsyncOpenAI):
    """The async twin of :class:`Underlay`."""

    _underlay_server: InProcessServer | None = None

    def __init__(self, *, api_key: Any = None, base_url: Any = None, **kwargs: Any) -> None:
        super().__init__(api_key=_api_key(api_key), base_url=_base_url(base_url), **kwargs)

    @classmethod
    def in_process(cls, config: ConfigSource = "local", *, env: Mapping[str, str] | None = None, **kwargs: Any) -> Self:
        """As :meth:`Underlay.in_process`. It blocks while the stack starts; from a running event loop,
        call it through ``await asyncio.to_thread(AsyncUnderlay.in_process, ...)``."""
        from underlay.client.in_process import InProcessServer

        server = InProcessServer.start(config, env=env)
        try:
            client = cls(base_url=server.v1, **kwargs)
        except BaseException:
            server.stop()
            raise
        client._underlay_server = server
        return client

    async def close(self) -> None:
        """Close the connections, and stop the in-process stack when this client started one."""
        try:
            await super().close()
        finally:
            server, self._underlay_server = self._underlay_server, None
            if server is not None:
                await asyncio.to_thread(server.stop)

    def api(self, name: str, *, typed: bool = True) -> AsyncApiResource:
        """As :meth:`Underlay.api`; each method is awaited."""
        cache: dict[tuple[str, bool], AsyncApiResource] = self.__dict__.setdefault("_underlay_apis", {})
        if (name, typed) not in cache:
            cache[(name, typed)] = AsyncApiResource(self, name, typed=typed)
        return cache[(name, typed)]

    @cached_property
    def models(self) -> AsyncUnderlayModels:
        """OpenAI's Models resource plus ``register`` and ``describe``."""
        return AsyncUnderlayModels(self)

    @cached_property
    def safety(self) -> AsyncUnderlaySafety:
        """OpenAI's safety resource plus ``run_shield``."""
        return AsyncUnderlaySafety(self)

    @cached_property
    def shields(self) -> AsyncShields:
        return AsyncShields(self)

    @cached_property
    def toolgroups(self) -> AsyncToolGroups:
        return AsyncToolGroups(self)

    @cached_property
    def tools(self) -> AsyncTools:
        return AsyncTools(self)

    @cached_property
    def tool_runtime(self) -> AsyncToolRuntime:
        return AsyncToolRuntime(self)

    @cached_property
    def vector_io(self) -> AsyncVectorIO:
        return AsyncVectorIO(self)

    @cached_property
    def telemetry(self) -> AsyncTelemetry:
        return AsyncTelemetry(self)

    @cached_property
    def providers(self) -> AsyncProviders:
        return AsyncProviders(self)

    # ---- named generic resources: ``client.api(name)`` under the API's name --------------------------------

    @property
    def prompts(self) -> AsyncApiResource:
        """The Prompts API: ``create_prompt``, ``list_prompts``, ``retrieve_prompt``, versions, ``delete_prompt``."""
        return self.api("prompts")

    @property
    def agents(self) -> AsyncApiResource:
        """The Agents API: ``deploy_agent``, ``list_agents``, ``retrieve_agent``, versions, ``delete_agent``."""
        return self.api("agents")

    @property
    def eval(self) -> AsyncApiResource:
        """The benchmark eval API (``/v1alpha/eval``): benchmarks, eval jobs and their results. OpenAI's
        Evals stay at ``client.evals``."""
        return self.api("eval")

    @property
    def datasets(self) -> AsyncApiResource:
        """The Datasets API: ``register_dataset``, ``list_datasets``, ``get_dataset``, ``iterrows``, ``append_rows``."""
        return self.api("datasets")

    @property
    def scoring(self) -> AsyncApiResource:
        """Scoring and scoring functions: ``score``, ``score_batch``, ``list_scoring_functions`` ..."""
        return self.api("scoring")

    @property
    def post_training(self) -> AsyncApiResource:
        """The post-training API (``/v1alpha/post-training``). OpenAI's fine-tuning stays at ``client.fine_tuning``."""
        return self.api("post_training")

    @property
    def synthetic_data_generation(self) -> AsyncApiResource:
        """The synthetic data generation API: ``generate``."""
        return self.api("synthetic_data_generation")
