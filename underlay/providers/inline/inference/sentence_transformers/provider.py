"""The ``inline::sentence-transformers`` provider: embedding models run in this process.

Why in-process: the default distribution must embed offline with nothing else running, and the
vector-store ingestion path calls embeddings in bulk, so a hop to another service would cost more
than the model. The price is that encoding is CPU work that blocks, so it never runs on the event
loop: each model has one worker thread that owns it (requests for one model are serialised there,
which also keeps torch/onnxruntime from oversubscribing the CPU), and the loop only queues work
and hands back results.

Concurrent requests for one model are merged (:class:`_ModelRunner`): while a job runs, new
requests wait in a queue, and the next job takes all of them at once. Merging costs an idle server
nothing (a lone request starts at once) and under load gives the length-sorted pass planner more
inputs to pack tightly.

Models load lazily, on the first request, inside the worker thread: an idle server never imports
torch or onnxruntime and holds no weights.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
from collections import deque
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

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
    Embedding,
    EmbeddingsRequest,
    EmbeddingsResponse,
    EmbeddingsUsage,
)
from underlay.providers.inline.inference.sentence_transformers.card import ModelCard, read_card
from underlay.providers.inline.inference.sentence_transformers.config import (
    SentenceTransformersConfig,
    SentenceTransformersModelConfig,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    import numpy as np

    from underlay.providers.inline.inference.sentence_transformers.backends import Backend, Encoded

logger = logging.getLogger(__name__)

PROVIDER_TYPE = "inline::sentence-transformers"
_OFFLINE_ENV = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE")
_MERGE_FACTOR = 8  # a merged job takes up to batch_size * this many inputs


def _cache_root(configured: str | None) -> Path:
    if configured:
        return Path(configured).expanduser()
    from underlay.shared.packaged_models import default_cache_dir

    return default_cache_dir()


@dataclass(eq=False)
class _Request:
    """One queued request: what to embed and how to shape the answer."""

    texts: list[str]
    model: str
    dimensions: int | None
    encoding_format: Literal["float", "base64"]
    future: asyncio.Future[EmbeddingsResponse] = field(repr=False)


class _ModelRunner:
    """One model: its worker thread, its lazily loaded backend and its queue of waiting requests."""

    def __init__(self, provider_id: str, config: SentenceTransformersModelConfig, cache_dir: str | None) -> None:
        self.provider_id = provider_id
        self.config = config
        self.cache_dir = cache_dir
        self.backend: Backend | None = None
        self._executor = ThreadPoolExecutor(1, thread_name_prefix=f"embed-{config.name}")
        self._pending: deque[_Request] = deque()
        self._drainer: asyncio.Task[None] | None = None
        self._closed = False
        self.jobs = 0  # jobs run, for health and tests (merging shows as fewer jobs than requests)

    # -- loading (worker thread) -------------------------------------------------------------------

    def model_dir(self) -> Path:
        """The directory to load; packaged models are sha256-verified on first use (a second or so)."""
        if self.config.packaged:
            from underlay.shared.packaged_models import resolve_model_path

            try:
                return Path(resolve_model_path(self.config.packaged, cache_dir=self.cache_dir))
            except UnderlayError as exc:
                raise ServiceUnavailableError(
                    self.provider_id,
                    f"model '{self.config.name}' is not available: {exc.message}",
                    code="model_unavailable",
                ) from exc
        assert self.config.path is not None
        path = Path(self.config.path).expanduser()
        if not (path / "config.json").is_file() and not (path / "modules.json").is_file():
            raise ServiceUnavailableError(
                self.provider_id,
                f"model '{self.config.name}': {path} is not a sentence-transformers directory (no config.json "
                "or modules.json). Point 'path' at a saved model, or use 'packaged: all-minilm-l6-v2'.",
                code="model_unavailable",
            )
        return path

    def _load(self) -> Backend:
        for name in _OFFLINE_ENV:  # before transformers/huggingface_hub are first imported
            os.environ[name] = "1"
        model_dir = self.model_dir()
        backend = self._load_backend(model_dir)
        logger.info(
            "loaded embedding model %s from %s (backend=%s, dimension=%d, max_seq_length=%d)",
            self.config.name,
            model_dir,
            backend.name,
            backend.dimension,
            backend.max_seq_length,
        )
        return backend

    def _load_backend(self, model_dir: Path) -> Backend:
        choice = self.config.backend
        if choice in ("auto", "onnx"):
            reason = _onnx_unavailable(model_dir)
            if reason is None:
                try:
                    from underlay.providers.inline.inference.sentence_transformers.backends import OnnxBackend

                    return OnnxBackend(model_dir, self.config, _cache_root(self.cache_dir))
                except Exception as exc:
                    if choice == "onnx":
                        raise
                    logger.warning("model %s: ONNX backend failed (%s); using torch", self.config.name, exc)
            elif choice == "onnx":
                raise ServiceUnavailableError(
                    self.provider_id,
                    f"model '{self.config.name}' cannot use backend 'onnx': {reason}. Use backend 'torch' or 'auto'.",
                    code="model_load_failed",
                )
            else:
                logger.info("model %s: not using ONNX (%s); using torch", self.config.name, reason)
        try:
            from underlay.providers.inline.inference.sentence_transformers.backends import TorchBackend
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ServiceUnavailableError(
                self.provider_id,
                f"model '{self.config.name}' needs sentence-transformers and torch (pip install "
                f"'underlay[local]'), or onnxruntime and onnx for backend 'onnx': {exc}",
                code="model_load_failed",
            ) from exc
        return TorchBackend(model_dir, self.config)

    def ensure_loaded(self) -> Backend:
        """Runs on the worker thread; a failure is not cached, so the next request retries."""
        if self.backend is None:
            try:
                self.backend = self._load()
            except UnderlayError:
                raise
            except ImportError as exc:
                raise ServiceUnavailableError(
                    self.provider_id,
                    f"model '{self.config.name}' cannot load: {exc}. Install 'underlay[local]'.",
                    code="model_load_failed",
                ) from exc
            except Exception as exc:
                logger.error("embedding model %s failed to load", self.config.name, exc_info=exc)
                raise ServiceUnavailableError(
                    self.provider_id,
                    f"model '{self.config.name}' could not be loaded: {type(exc).__name__}: {exc}",
                    code="model_load_failed",
                ) from exc
        return self.backend

    # -- jobs (worker thread) ----------------------------------------------------------------------

    def _job(self, batch: list[_Request]) -> list[EmbeddingsResponse | UnderlayError]:
        """Embed every request of ``batch`` in one go; per-request errors are returned, not raised."""
        backend = self.ensure_loaded()
        self.jobs += 1
        results: list[EmbeddingsResponse | UnderlayError | None] = [None] * len(batch)
        accepted: list[tuple[int, list[Encoded]]] = []
        for n, request in enumerate(batch):
            if request.dimensions is not None:
                # Checked again against the loaded model: the card may not have known its size.
                dim_error = dimensions_error(request.dimensions, backend.dimension, self.config)
                if dim_error:
                    results[n] = dim_error
                    continue
            encoded = backend.encode_texts(request.texts)
            too_long = next((i for i, e in enumerate(encoded) if e.truncated), None)
            if too_long is not None and not self.config.truncate_inputs:
                results[n] = InvalidRequestError(
                    f"input[{too_long}] is {encoded[too_long].full_length} tokens; model '{request.model}' reads "
                    f"at most {backend.max_seq_length} (special tokens included) and this provider is "
                    "configured to refuse longer inputs (truncate_inputs: false). Split the text into chunks.",
                    param="input",
                    code="input_too_long",
                )
                continue
            accepted.append((n, encoded))
        flat = [e for _, encoded in accepted for e in encoded]
        vectors = backend.embed(flat) if flat else None
        start = 0
        for n, encoded in accepted:
            assert vectors is not None
            rows = vectors[start : start + len(encoded)]
            start += len(encoded)
            results[n] = _response(batch[n], rows, encoded)
        assert all(r is not None for r in results)
        return results  # type: ignore[return-value]

    # -- queueing (event loop) ---------------------------------------------------------------------

    async def submit(self, request: _Request) -> EmbeddingsResponse:
        """Queue ``request``, start a drainer if none runs, and wait for the answer."""
        if self._closed:
            raise ServiceUnavailableError(self.provider_id, "the provider is shutting down", code="shutting_down")
        self._pending.append(request)
        if self._drainer is None or self._drainer.done():
            self._drainer = asyncio.get_running_loop().create_task(self._drain(), name=f"embed-{self.config.name}")
        return await request.future

    def _take(self) -> list[_Request]:
        """The next job: waiting requests in arrival order, up to about ``batch_size * 8`` inputs
        (a single larger request goes alone). Requests whose caller went away are dropped."""
        limit = self.config.batch_size * _MERGE_FACTOR
        batch: list[_Request] = []
        count = 0
        while self._pending:
            request = self._pending[0]
            if request.future.done():  # cancelled by a disconnected client
                self._pending.popleft()
                continue
            if batch and count + len(request.texts) > limit:
                break
            batch.append(self._pending.popleft())
            count += len(request.texts)
        return batch

    async def _drain(self) -> None:
        """Run jobs until the queue is empty. Not tied to any one request, so a client that
        disconnects never cancels work (or answers) that other requests share."""
        loop = asyncio.get_running_loop()
        while batch := self._take():
            try:
                results: Sequence[EmbeddingsResponse | UnderlayError] = await loop.run_in_executor(
                    self._executor, self._job, batch
                )
            except asyncio.CancelledError:
                for request in batch:
                    if not request.future.done():
                        request.future.set_exception(
                            ServiceUnavailableError(self.provider_id, "the provider shut down", code="shutting_down")
                        )
                raise
            except Exception as exc:
                error = _translate(self.provider_id, exc)
                results = [error] * len(batch)
            for request, result in zip(batch, results, strict=True):
                if request.future.done():
                    continue
                if isinstance(result, BaseException):
                    request.future.set_exception(result)
                else:
                    request.future.set_result(result)

    async def warm(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self._executor, self.ensure_loaded)

    async def close(self) -> None:
        self._closed = True
        if self._drainer is not None and not self._drainer.done():
            self._drainer.cancel()
        while self._pending:
            request = self._pending.popleft()
            if not request.future.done():
                request.future.set_exception(
                    ServiceUnavailableError(self.provider_id, "the provider shut down", code="shutting_down")
                )
        backend, self.backend = self.backend, None
        if backend is not None:
            backend.close()
        self._executor.shutdown(wait=False, cancel_futures=True)

    @property
    def waiting(self) -> int:
        return sum(1 for r in self._pending if not r.future.done())


def _onnx_unavailable(model_dir: Path) -> str | None:
    """Why the ONNX backend cannot serve ``model_dir`` here, or None."""
    import importlib.util

    missing = [m for m in ("onnxruntime", "onnx", "tokenizers", "safetensors") if importlib.util.find_spec(m) is None]
    if missing:
        return f"{', '.join(missing)} not installed"
    from underlay.providers.inline.inference.sentence_transformers.onnx_graph import unsupported_reason

    return unsupported_reason(model_dir)


def dimensions_error(requested: int, native: int, model: SentenceTransformersModelConfig) -> InvalidRequestError | None:
    """None when ``dimensions`` can be served, else the 400 explaining the model's size."""
    if requested == native or (requested < native and model.truncate_dimensions):
        return None
    hint = (
        "Omit 'dimensions' or pass the native size."
        if requested > native
        else "This model was not trained for shortened vectors (it is not a Matryoshka model), so cutting "
        "them would hurt retrieval; omit 'dimensions', or set truncate_dimensions: true on the model if "
        "you accept that."
    )
    return InvalidRequestError(
        f"Model '{model.name}' returns {native}-dimensional vectors; dimensions={requested} is not supported. {hint}",
        param="dimensions",
        code="unsupported_dimensions",
    )


def _translate(provider_id: str, exc: BaseException) -> UnderlayError:
    if isinstance(exc, UnderlayError):
        return exc
    logger.error("embedding provider %s failed", provider_id, exc_info=exc)
    return UpstreamError(provider_id, f"local embedding failed: {type(exc).__name__}: {exc}")


def _response(request: _Request, rows: np.ndarray, encoded: Sequence[Encoded]) -> EmbeddingsResponse:
    """Shape vectors as the request asked: cut to ``dimensions`` (re-normalised), float or base64."""
    import numpy as np

    if request.dimensions is not None and request.dimensions < rows.shape[1]:
        rows = rows[:, : request.dimensions]
        norms = np.linalg.norm(rows, axis=1, keepdims=True)
        rows = rows / np.maximum(norms, 1e-12)
    rows = np.ascontiguousarray(rows, dtype="<f4")  # little-endian float32: what base64 clients decode
    data: list[Embedding] = []
    for index, row in enumerate(rows):
        value: list[float] | str
        if request.encoding_format == "base64":
            value = base64.b64encode(row.tobytes()).decode("ascii")
        else:
            value = row.tolist()  # float32 -> float is exact, so float and base64 agree bit for bit
        data.append(Embedding.model_construct(object="embedding", index=index, embedding=value))
    tokens = sum(len(e.ids) for e in encoded)
    return EmbeddingsResponse(
        data=data, model=request.model, usage=EmbeddingsUsage(prompt_tokens=tokens, total_tokens=tokens)
    )


class SentenceTransformersInferenceProvider:
    """Embeddings on local sentence-embedding models; chat and completions are refused."""

    def __init__(self, provider_id: str, config: SentenceTransformersConfig) -> None:
        self.provider_id = provider_id
        self.config = config
        self._runners: dict[str, _ModelRunner] = {
            m.name: _ModelRunner(provider_id, m, config.cache_dir) for m in config.models
        }
        self._cards: dict[str, ModelCard] = {}

    # -- lifecycle ---------------------------------------------------------------------------------

    async def initialize(self) -> None:
        """With ``preload``, load every model now so a missing or broken one fails start-up."""
        if self.config.preload:
            for name, runner in self._runners.items():
                logger.info("preloading embedding model %s", name)
                await runner.warm()

    async def shutdown(self) -> None:
        runners, self._runners = list(self._runners.values()), {}
        for runner in runners:
            await runner.close()

    async def health(self) -> dict[str, Any]:
        return {
            "status": "OK",
            "models": {
                name: {
                    "loaded": runner.backend is not None,
                    "backend": runner.backend.name if runner.backend else None,
                    "waiting": runner.waiting,
                }
                for name, runner in self._runners.items()
            },
        }

    # -- models ------------------------------------------------------------------------------------

    def card(self, model: SentenceTransformersModelConfig) -> ModelCard:
        """Dimension and input limit without loading weights: config, then catalog, then the
        directory's JSON files (a loaded backend's own figures win once it exists)."""
        runner = self._runners.get(model.name)
        if runner is not None and runner.backend is not None:
            return ModelCard(runner.backend.dimension, runner.backend.max_seq_length)
        cached = self._cards.get(model.name)
        if cached is None:
            dimension: int | None = None
            max_seq: int | None = None
            if model.packaged:
                from underlay.shared.packaged_models import get_packaged_model

                try:
                    packaged = get_packaged_model(model.packaged)
                    dimension, max_seq = packaged.embedding_dimension, packaged.context_length
                except UnderlayError:
                    pass
            elif model.path:
                found = read_card(Path(model.path).expanduser())
                dimension, max_seq = found.dimension, found.max_seq_length
            cached = ModelCard(dimension, max_seq)
            self._cards[model.name] = cached
        dimension = model.embedding_dimension or cached.dimension
        max_seq = cached.max_seq_length
        if model.max_seq_length:
            max_seq = min(model.max_seq_length, max_seq) if max_seq else model.max_seq_length
        return ModelCard(dimension, max_seq)

    async def list_provider_models(self) -> list[DiscoveredModel]:
        out = []
        for model in self.config.models:
            card = await asyncio.to_thread(self.card, model)
            meta: dict[str, Any] = {"provider_type": PROVIDER_TYPE}
            if card.dimension:
                meta["embedding_dimension"] = card.dimension
            if card.max_seq_length:
                meta["context_length"] = card.max_seq_length
            if model.packaged:
                meta["packaged_model"] = model.packaged
            out.append(DiscoveredModel(provider_resource_id=model.name, model_type="embedding", metadata=meta))
        return out

    def _runner(self, name: str) -> _ModelRunner:
        runner = self._runners.get(name)
        if runner is None:
            served = ", ".join(self._runners) or "none"
            raise NotFoundError("Model", name, hint=f"Provider '{self.provider_id}' serves: {served}.", param="model")
        return runner

    # -- API ---------------------------------------------------------------------------------------

    async def openai_embeddings(self, params: EmbeddingsRequest) -> EmbeddingsResponse:
        runner = self._runner(params.model)
        model = runner.config
        texts = _texts(params.input, params.model)
        if len(texts) > model.max_inputs:
            raise InvalidRequestError(
                f"input has {len(texts)} items; at most {model.max_inputs} are accepted in one request. "
                "Send them in several requests.",
                param="input",
                code="too_many_inputs",
            )
        native = self.card(model).dimension
        if params.dimensions is not None and native is not None:
            error = dimensions_error(params.dimensions, native, model)
            if error:
                raise error
        loop = asyncio.get_running_loop()
        request = _Request(
            texts=texts,
            model=params.model,
            dimensions=params.dimensions,
            encoding_format=params.encoding_format or "float",
            future=loop.create_future(),
        )
        return await runner.submit(request)

    async def openai_chat_completion(
        self, params: ChatCompletionRequest
    ) -> ChatCompletion | AsyncIterator[ChatCompletionChunk]:
        raise self._embeddings_only(params.model, "chat completions")

    async def openai_completion(self, params: CompletionRequest) -> Completion | AsyncIterator[Completion]:
        raise self._embeddings_only(params.model, "text completions")

    def _embeddings_only(self, model: str, what: str) -> InvalidRequestError:
        return InvalidRequestError(
            f"Model '{model}' is an embedding model served by '{self.provider_id}' ({PROVIDER_TYPE}), which "
            f"serves embeddings only, not {what}. Use it with POST /v1/embeddings, and pick a chat model "
            "(e.g. one from inline::llama-cpp) for this request.",
            param="model",
            code="embeddings_only",
        )


def _texts(value: str | list[str] | list[int] | list[list[int]], model: str) -> list[str]:
    """The request's inputs as strings; token arrays and empty strings are refused up front."""
    if isinstance(value, str):
        return [value]
    if any(not isinstance(item, str) for item in value):
        raise InvalidRequestError(
            f"input holds token ids, but model '{model}' takes text: token ids from another tokenizer (such as "
            "tiktoken's) mean nothing to its WordPiece vocabulary. Send strings instead (with LangChain's "
            "OpenAIEmbeddings, set check_embedding_ctx_length=False).",
            param="input",
            code="token_input_unsupported",
        )
    texts = [item for item in value if isinstance(item, str)]
    empty = next((i for i, t in enumerate(texts) if not t), None)
    if empty is not None:
        raise InvalidRequestError(f"input[{empty}] is an empty string; every input must have text.", param="input")
    return texts
