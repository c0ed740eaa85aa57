"""The ``inline::llama-cpp`` inference provider: GGUF models in this process, one pool per model.

Why in-process: the default distribution must work offline with nothing else installed or running,
and a model in the server's own process costs no extra hop, no port and no second service to
supervise. The price is that model work must never run on the event loop: every call into llama.cpp
happens on a model slot's worker thread (see ``pool``), so health checks and other requests keep
being served while a model is busy.

This module only wires things together: it maps ``params.model`` to a pool, turns model-loading
failures into 503s that say what to run, and hands each API call to ``chat`` or ``completions``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from underlay.api.errors import (
    InvalidRequestError,
    NotFoundError,
    ServiceUnavailableError,
    UnderlayError,
    UpstreamError,
)
from underlay.api.inference import (
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    Completion,
    CompletionRequest,
    DiscoveredModel,
    EmbeddingsRequest,
    EmbeddingsResponse,
)
from underlay.providers.inline.inference.llama_cpp.config import LlamaCppConfig, LlamaCppModelConfig
from underlay.providers.inline.inference.llama_cpp.gguf import GGUFError, read_metadata
from underlay.providers.inline.inference.llama_cpp.pool import JobHandle, ModelPool

# The generation modules (templates, sampling, numpy, llama.cpp) load with the first request, not at
# start-up: listing models needs only the config and the GGUF header.
if TYPE_CHECKING:
    from underlay.providers.inline.inference.llama_cpp.common import PromptReady
    from underlay.providers.inline.inference.llama_cpp.engine import Engine

logger = logging.getLogger(__name__)

PROVIDER_TYPE = "inline::llama-cpp"
R = TypeVar("R")


class LlamaCppInferenceProvider:
    """Chat and legacy completions on local GGUF models (no embeddings)."""

    def __init__(self, provider_id: str, config: LlamaCppConfig) -> None:
        self.provider_id = provider_id
        self.config = config
        self._pools: dict[str, ModelPool] = {
            model.name: ModelPool(
                model.name,
                lambda model=model: self._load(model),
                max_concurrent=config.max_concurrent_per_model,
                max_queued=config.max_queued_per_model,
            )
            for model in config.models
        }
        self._added: set[str] = set()
        """Models added at run time (:meth:`add_model`), not from the config."""

    # ----------------------------------------------------------------------------------------------
    # Lifecycle

    async def initialize(self) -> None:
        """With ``preload``, load every model now, so that a broken file fails start-up loudly."""
        if self.config.preload:
            for name, pool in self._pools.items():
                logger.info("preloading model %s", name)
                with self._errors():
                    await pool.warm()

    async def shutdown(self) -> None:
        """Stop generations in flight and free every model."""
        pools, self._pools = list(self._pools.values()), {}
        for pool in pools:
            await pool.close()

    async def health(self) -> dict[str, Any]:
        return {
            "status": "OK",
            "models": {
                name: {"loaded": pool.loaded, "busy": pool.busy, "waiting": pool.waiting}
                for name, pool in self._pools.items()
            },
        }

    # ----------------------------------------------------------------------------------------------
    # Models

    def _packaged_hint(self, model: LlamaCppModelConfig) -> str:
        if model.packaged:
            return f"Run `underlay models pull {model.packaged}` and restart."
        return "Point 'path' at a complete GGUF file, or use a packaged model (`underlay models pull NAME`)."

    def _resolve_path(self, model: LlamaCppModelConfig) -> Path:
        if model.packaged:
            from underlay.shared.packaged_models import resolve_model_path

            try:
                return resolve_model_path(model.packaged, cache_dir=self.config.cache_dir)
            except UnderlayError as exc:
                raise ServiceUnavailableError(
                    self.provider_id, f"model '{model.name}' is not available: {exc.message}", code="model_unavailable"
                ) from exc
        assert model.path is not None
        path = Path(model.path).expanduser()
        if not path.is_file():
            raise ServiceUnavailableError(
                self.provider_id,
                f"model '{model.name}': no GGUF file at {path}. {self._packaged_hint(model)}",
                code="model_unavailable",
            )
        return path

    def _load(self, model: LlamaCppModelConfig) -> Engine:
        """Runs on the slot's worker thread: find (maybe assemble) the file, then load it."""
        from underlay.providers.inline.inference.llama_cpp.engine import Engine, ModelLoadError

        path = self._resolve_path(model)
        try:
            engine = Engine(path, model)
        except ModelLoadError as exc:
            raise ServiceUnavailableError(
                self.provider_id,
                f"model '{model.name}' could not be loaded from {path} ({exc}); the file may be truncated or "
                f"not a GGUF llama.cpp supports. {self._packaged_hint(model)}",
                code="model_load_failed",
            ) from exc
        logger.info("loaded model %s from %s (n_ctx=%d)", model.name, path, engine.n_ctx)
        return engine

    def _model(self, name: str) -> tuple[LlamaCppModelConfig, ModelPool]:
        config = self.config.model(name)
        pool = self._pools.get(name)
        if config is None or pool is None:
            served = ", ".join(m.name for m in self.config.models) or "none"
            raise NotFoundError("Model", name, hint=f"Provider '{self.provider_id}' serves: {served}.", param="model")
        return config, pool

    def _metadata(self, model: LlamaCppModelConfig) -> dict[str, Any]:
        """What listing shows, from the catalog or the GGUF header; never loads weights."""
        meta: dict[str, Any] = {"context_length": model.n_ctx, "provider_type": PROVIDER_TYPE}
        template = model.chat_template
        if model.packaged:
            from underlay.shared.packaged_models import get_packaged_model

            try:
                packaged = get_packaged_model(model.packaged)
            except UnderlayError:
                packaged = None
            if packaged is not None:
                meta.update(
                    packaged_model=packaged.name,
                    family=packaged.upstream.split("/")[-1],
                    quantization=packaged.quantization,
                    trained_context_length=packaged.context_length,
                    supports_tools=packaged.supports_tools if template is None else "tools" in template,
                    license=packaged.license,
                )
                return meta
        if model.path:
            try:
                header = read_metadata(
                    Path(model.path).expanduser(),
                    ["general.name", "general.architecture", "general.basename", "tokenizer.chat_template"]
                    + [f"{a}.context_length" for a in ("llama", "qwen2", "gemma3", "phi3", "mistral")],
                )
            except (OSError, GGUFError) as exc:
                meta["available"] = False
                meta["error"] = str(exc)
                return meta
            arch = header.get("general.architecture")
            meta["family"] = header.get("general.basename") or header.get("general.name") or arch
            meta["architecture"] = arch
            trained = header.get(f"{arch}.context_length")
            if trained:
                meta["trained_context_length"] = int(trained)
            if template is None:
                template = header.get("tokenizer.chat_template")
        meta["supports_tools"] = bool(template and "tools" in template)
        return meta

    async def add_model(self, name: str, path: str) -> None:
        """Serve a GGUF file made at run time (a fine-tuned model) as ``name``, without a restart.

        The file is loaded once here, on a worker thread, so a broken file is refused now instead of
        on the first request; the model then loads again lazily in its pool like any configured one.
        Adding a name that is already served with the same file does nothing.
        """
        existing = self.config.model(name)
        if existing is not None:
            if existing.path == path:
                return
            raise InvalidRequestError(f"Model '{name}' is already served from another file.", param="model")
        template = self.config.models[0] if self.config.models else None
        model = LlamaCppModelConfig(
            name=name,
            path=path,
            n_ctx=min(template.n_ctx, 4096) if template else 2048,
            n_threads=template.n_threads if template else LlamaCppModelConfig(name=name, path=path).n_threads,
        )
        await asyncio.to_thread(self._check_loads, model)
        self.config.models.append(model)
        self._added.add(name)
        self._pools[name] = ModelPool(
            name,
            lambda: self._load(model),
            max_concurrent=self.config.max_concurrent_per_model,
            max_queued=self.config.max_queued_per_model,
        )

    def _check_loads(self, model: LlamaCppModelConfig) -> None:
        engine = self._load(model)
        close = getattr(engine, "close", None)
        if callable(close):
            close()

    async def remove_model(self, name: str) -> None:
        """Stop serving a model added with :meth:`add_model` (configured models stay)."""
        model = self.config.model(name)
        if model is None:
            return
        self.config.models.remove(model)
        self._added.discard(name)
        pool = self._pools.pop(name, None)
        if pool is not None:
            await pool.close()

    async def list_provider_models(self) -> list[DiscoveredModel]:
        out = []
        for model in self.config.models:
            if model.name in self._added:  # listed by whoever added it (the models table has it already)
                continue
            meta = await asyncio.to_thread(self._metadata, model)
            out.append(DiscoveredModel(provider_resource_id=model.name, model_type="llm", metadata=meta))
        return out

    # ----------------------------------------------------------------------------------------------
    # Running jobs

    def _translate(self, exc: Exception) -> UnderlayError:
        """The typed error to raise for an exception from model work (never let a raw one escape)."""
        from underlay.providers.inline.inference.llama_cpp.sampling import GrammarError

        if isinstance(exc, UnderlayError):
            return exc
        if isinstance(exc, GrammarError):
            return InvalidRequestError(
                f"The request's tools or response_format produced a grammar llama.cpp rejects: {exc}",
                param="response_format",
            )
        logger.error("llama.cpp provider %s failed", self.provider_id, exc_info=exc)
        return UpstreamError(self.provider_id, f"local inference failed: {type(exc).__name__}: {exc}")

    @contextlib.contextmanager
    def _errors(self) -> Iterator[None]:
        """Re-raise anything from model work as the API's typed errors (never a raw exception)."""
        try:
            yield
        except StopAsyncIteration:
            raise
        except Exception as exc:
            translated = self._translate(exc)
            if translated is exc:
                raise
            raise translated from exc

    async def _start(self, pool: ModelPool, job: Any) -> tuple[JobHandle[Any], PromptReady]:
        """Submit ``job`` and wait until its prompt is accepted, so request errors are raised here,
        before a stream has begun."""
        from underlay.providers.inline.inference.llama_cpp.common import PromptReady

        handle: JobHandle[Any] = await pool.submit(job)
        try:
            first = await handle.next_event()
            if not isinstance(first, PromptReady):
                await handle.result()
                raise UpstreamError(self.provider_id, "generation ended before it started")
            return handle, first
        except BaseException:
            handle.cancel()
            raise

    async def _stream(self, source: AsyncIterator[R]) -> AsyncIterator[R]:
        """Pass a stream through, typing errors raised after it began; closing it closes the source."""
        try:
            while True:
                try:
                    with self._errors():
                        item = await source.__anext__()
                except StopAsyncIteration:
                    return
                yield item
        finally:
            await source.aclose()  # type: ignore[attr-defined]

    # ----------------------------------------------------------------------------------------------
    # API

    async def openai_chat_completion(
        self, params: ChatCompletionRequest
    ) -> ChatCompletion | AsyncIterator[ChatCompletionChunk]:
        from underlay.providers.inline.inference.llama_cpp import chat

        with self._errors():
            config, pool = self._model(params.model)
            plan = chat.plan_chat(params, config, self.provider_id)
            handle, _ = await self._start(pool, chat.chat_job(plan))
            if plan.stream:
                return self._stream(chat.stream_chunks(plan, handle))
            return chat.build_completion(plan, await handle.result())

    async def openai_completion(self, params: CompletionRequest) -> Completion | AsyncIterator[Completion]:
        from underlay.providers.inline.inference.llama_cpp import completions

        with self._errors():
            config, pool = self._model(params.model)
            plan = completions.plan_completion(params, config)
            handle, ready = await self._start(pool, completions.completion_job(plan))
            if plan.stream:
                return self._stream(completions.stream_completion(plan, handle, ready))
            return completions.build_completion(plan, await handle.result())

    async def openai_embeddings(self, params: EmbeddingsRequest) -> EmbeddingsResponse:
        raise InvalidRequestError(
            f"Provider '{self.provider_id}' ({PROVIDER_TYPE}) serves chat and text completions only, not "
            "embeddings. Register an embedding model from an embedding provider such as "
            "inline::sentence-transformers (e.g. all-minilm-l6-v2) and use that model id.",
            param="model",
            code="embeddings_not_supported",
        )
