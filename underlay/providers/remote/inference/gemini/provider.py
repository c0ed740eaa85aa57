"""``remote::gemini``: Google's Gemini through its native Generative Language API (``v1beta``).

Why native rather than Google's OpenAI-compatible endpoint: the native API reports errors as
``google.rpc.Status`` with machine-readable details (``RetryInfo`` for throttling, ``ErrorInfo`` for a
bad key), carries thought signatures and safety finish reasons, and is the API Google documents
first. The transport (pooled aiohttp session, retries before any body byte, timeouts, credential
choice, scrubbing the key from quoted messages) is the OpenAI-compatible base's; this module states
the endpoints, the ``x-goog-api-key`` header, Gemini's error mapping and its stream, and
:mod:`.wire` translates the bodies.

Endpoints: ``GET models`` (paged), ``POST models/{m}:generateContent``,
``POST models/{m}:streamGenerateContent?alt=sse`` and ``POST models/{m}:batchEmbedContents``.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

import aiohttp
from pydantic import Field, ValidationError

from underlay.api.errors import (
    InvalidRequestError,
    NotFoundError,
    RateLimitedError,
    ServiceUnavailableError,
    UnauthenticatedError,
    UnderlayError,
    UpstreamError,
    UpstreamTimeoutError,
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
from underlay.providers.remote.inference.gemini.wire import (
    EMBED_TASK_TYPES,
    candidate_parts,
    chat_request,
    completion_from_response,
    completion_id,
    finish_reason,
    model_path,
    parse_duration,
    usage_from_metadata,
)
from underlay.providers.utils.openai_compat import (
    Credential,
    OpenAICompatConfig,
    OpenAICompatInferenceProvider,
    floats_to_base64,
    retry_after_seconds,
)
from underlay.providers.utils.upstream_http import Failure, LineReader, classify, describe

__all__ = ["Config", "GeminiInferenceProvider", "create_provider"]

DEFAULT_BASE_URL = "https://generativelanguage.googleapis.com/v1beta"
_MAX_PAGES = 20  # 20 pages of 1000 models: far beyond Google's catalogue, but bounded
_EMBED_BATCH = 100  # batchEmbedContents takes at most 100 requests
_MAX_QUOTED = 500

log = logging.getLogger(__name__)


class Config(OpenAICompatConfig):
    """Gemini: only ``api_key`` (or ``GEMINI_API_KEY``) is usually needed."""

    base_url: str = Field(
        default=DEFAULT_BASE_URL,
        description="The Generative Language API's base URL, ending in the API version (a stand-in's for tests).",
    )


class GeminiInferenceProvider(OpenAICompatInferenceProvider):
    api_key_env = "GEMINI_API_KEY"
    provider_data_key = "gemini_api_key"
    requires_api_key = True

    # -- the key travels in x-goog-api-key ---------------------------------------------------------

    def _headers(self, credential: Credential, *, stream: bool) -> dict[str, str]:
        headers = super()._headers(Credential(None, credential.source, credential.origin), stream=stream)
        if credential.value:
            headers["x-goog-api-key"] = credential.value
        return headers

    # -- models ------------------------------------------------------------------------------------

    async def health(self) -> dict[str, Any]:
        try:
            await self._request_json("GET", "models?pageSize=1", retries=0)
        except UnderlayError as exc:
            return {"status": "error", "message": exc.message}
        return {"status": "ok"}

    async def list_provider_models(self) -> list[DiscoveredModel]:
        """Every model that can chat or embed, through ``GET models`` and its page tokens."""
        found: list[DiscoveredModel] = []
        token = ""
        for _ in range(_MAX_PAGES):
            path = "models?pageSize=1000" + (f"&pageToken={quote(token, safe='')}" if token else "")
            body = await self._request_json("GET", path)
            models = body.get("models", []) if isinstance(body, dict) else None
            if not isinstance(models, list):
                raise UpstreamError(
                    self.provider_id, f"malformed model list from {self._url('models')}: expected {{'models': [...]}}"
                )
            found.extend(m for m in map(self._discovered, models) if m is not None)
            token = body.get("nextPageToken") or ""
            if not isinstance(token, str) or not token:
                break
        return found

    def _discovered(self, item: Any) -> DiscoveredModel | None:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            return None
        name = item["name"].removeprefix("models/")
        methods = item.get("supportedGenerationMethods")
        methods = methods if isinstance(methods, list) else []
        chats, embeds = "generateContent" in methods, "embedContent" in methods or "batchEmbedContents" in methods
        if not (chats or embeds) or not self.is_model_allowed(name):
            return None
        metadata: dict[str, Any] = {}
        if isinstance(item.get("inputTokenLimit"), int):
            metadata["context_length"] = item["inputTokenLimit"]
        if isinstance(item.get("outputTokenLimit"), int):
            metadata["max_output_tokens"] = item["outputTokenLimit"]
        if isinstance(item.get("displayName"), str):
            metadata["display_name"] = item["displayName"]
        return DiscoveredModel(provider_resource_id=name, model_type="llm" if chats else "embedding", metadata=metadata)

    # -- chat --------------------------------------------------------------------------------------

    async def openai_chat_completion(
        self, params: ChatCompletionRequest
    ) -> ChatCompletion | AsyncIterator[ChatCompletionChunk]:
        self._check_model(params.model)
        target = model_path(params.model)
        body = chat_request(params)
        if params.stream:
            path = f"{target}:streamGenerateContent?alt=sse"
            response, credential = await self._send("POST", path, body, model=params.model, stream=True)
            if "text/event-stream" not in response.headers.get("content-type", ""):
                text = await self._read_and_close(response)
                raise UpstreamError(
                    self.provider_id,
                    f"{self._url(path)} did not stream: {self._scrub(text, credential) or 'an empty body'}",
                    code="malformed_upstream_response",
                )
            include_usage = bool(params.stream_options and params.stream_options.include_usage)
            return GeminiStream(self, response, credential, params.model, path, include_usage)
        answer = await self._request_json("POST", f"{target}:generateContent", body, model=params.model)
        if not isinstance(answer, dict):
            raise UpstreamError(self.provider_id, "malformed generateContent answer: expected an object")
        return self._parse(ChatCompletion, completion_from_response(answer, params.model), f"{target}:generateContent")

    async def openai_completion(self, params: CompletionRequest) -> Completion | AsyncIterator[Completion]:
        raise InvalidRequestError(
            "remote::gemini serves chat completions and embeddings, not legacy completions; "
            "send the prompt to /v1/chat/completions as a user message",
            code="unsupported_by_provider",
        )

    # -- embeddings --------------------------------------------------------------------------------

    async def openai_embeddings(self, params: EmbeddingsRequest) -> EmbeddingsResponse:
        """``batchEmbedContents`` in batches of 100; Gemini reports no token counts for embeddings, so
        usage is zero rather than a guess."""
        self._check_model(params.model)
        target = model_path(params.model)
        texts = [params.input] if isinstance(params.input, str) else params.input
        if not texts or not all(isinstance(t, str) for t in texts):
            raise InvalidRequestError(
                "remote::gemini embeds text: input must be a string or a list of strings", param="input"
            )
        task_type = (params.model_extra or {}).get("task_type")
        if task_type is not None and task_type not in EMBED_TASK_TYPES:
            raise InvalidRequestError(
                f"task_type must be one of {', '.join(sorted(EMBED_TASK_TYPES))}", param="task_type"
            )
        vectors: list[list[float]] = []
        for start in range(0, len(texts), _EMBED_BATCH):
            requests = []
            for text in texts[start : start + _EMBED_BATCH]:
                one: dict[str, Any] = {"model": target, "content": {"parts": [{"text": text}]}}
                if params.dimensions is not None:
                    one["outputDimensionality"] = params.dimensions
                if task_type is not None:
                    one["taskType"] = task_type
                requests.append(one)
            body = await self._request_json(
                "POST", f"{target}:batchEmbedContents", {"requests": requests}, model=params.model
            )
            vectors.extend(self._vectors(body, len(requests)))
        data = [
            {
                "object": "embedding",
                "index": i,
                "embedding": floats_to_base64(v) if params.encoding_format == "base64" else v,
            }
            for i, v in enumerate(vectors)
        ]
        payload = {
            "object": "list",
            "data": data,
            "model": params.model,
            "usage": {"prompt_tokens": 0, "total_tokens": 0},
        }
        return self._parse(EmbeddingsResponse, payload, f"{target}:batchEmbedContents")

    def _vectors(self, body: Any, expected: int) -> list[list[float]]:
        embeddings = body.get("embeddings") if isinstance(body, dict) else None
        if not isinstance(embeddings, list) or len(embeddings) != expected:
            raise UpstreamError(
                self.provider_id,
                f"malformed batchEmbedContents answer: expected {expected} embeddings",
                code="malformed_upstream_response",
            )
        vectors = []
        for item in embeddings:
            values = item.get("values") if isinstance(item, dict) else None
            if not isinstance(values, list) or not all(isinstance(v, int | float) for v in values):
                raise UpstreamError(
                    self.provider_id,
                    "malformed embedding: expected numeric 'values'",
                    code="malformed_upstream_response",
                )
            vectors.append([float(v) for v in values])
        return vectors

    # -- errors ------------------------------------------------------------------------------------

    def _status_error(
        self, response: aiohttp.ClientResponse, text: str, credential: Credential, url: str, model: str | None
    ) -> UnderlayError:
        """Map a ``google.rpc.Status`` error body by its status name; anything else as the base does."""
        error = google_error(text)
        if error is None:
            return super()._status_error(response, text, credential, url, model)
        retry_after = retry_after_seconds(response.headers)
        return self.map_google_error(error, response.status, credential, model, retry_after)

    def map_google_error(
        self,
        error: dict[str, Any],
        http_status: int,
        credential: Credential,
        model: str | None,
        retry_after: float | None = None,
    ) -> UnderlayError:
        pid = self.provider_id
        status = str(error.get("status") or "")
        message = self._scrub(str(error.get("message") or "no message"), credential)
        said = f"Gemini said {http_status} {status}: {message}".replace("  ", " ")
        reasons = {d.get("reason") for d in _details(error, "ErrorInfo")}
        if (
            status in ("UNAUTHENTICATED", "PERMISSION_DENIED")
            or http_status in (401, 403)
            or reasons
            & {
                "API_KEY_INVALID",
                "API_KEY_EXPIRED",
                "API_KEY_SERVICE_BLOCKED",
            }
        ):
            if credential.source == "request":
                return UnauthenticatedError(
                    f"Provider '{pid}' rejected the API key from {credential.origin}; {said}",
                    code="upstream_rejected_credentials",
                )
            why = (
                f"no API key was sent; set {self._where_keys_come_from()}"
                if credential.source == "none"
                else f"the key from {credential.origin} was refused"
            )
            return UpstreamError(
                pid, f"the upstream rejected the credentials ({why}); {said}", code="upstream_auth_failed"
            )
        if status == "RESOURCE_EXHAUSTED" or http_status == 429:
            for info in _details(error, "RetryInfo"):
                retry_after = parse_duration(info.get("retryDelay")) or retry_after
            headers = {"Retry-After": str(max(1, round(retry_after)))} if retry_after is not None else {}
            return RateLimitedError(f"Provider '{pid}' is rate limited upstream; {said}", headers=headers)
        if status == "NOT_FOUND" or http_status == 404:
            if model:
                return NotFoundError("Model", model, hint=f"Provider '{pid}': {said}", param="model")
            return NotFoundError("Upstream resource", "", hint=f"Provider '{pid}': {said}")
        if status == "FAILED_PRECONDITION":
            # E.g. the free tier in an unsupported region or billing off: the operator's to fix.
            return UpstreamError(pid, f"the upstream refused the project's setup; {said}", code="upstream_precondition")
        if status in ("INVALID_ARGUMENT", "OUT_OF_RANGE") or 400 <= http_status < 500:
            field = next(
                (v.get("field") for d in _details(error, "BadRequest") for v in d.get("fieldViolations") or []),
                None,
            )
            return InvalidRequestError(
                f"Provider '{pid}' rejected the request; {said}", param=field if isinstance(field, str) else None
            )
        if status == "UNAVAILABLE" or http_status == 503:
            return ServiceUnavailableError(pid, f"the upstream is unavailable; {said}")
        if status == "DEADLINE_EXCEEDED" or http_status == 504:
            return UpstreamTimeoutError(pid, f"the upstream timed out; {said}")
        return UpstreamError(pid, f"the upstream failed; {said}")


def google_error(text: str) -> dict[str, Any] | None:
    """The ``error`` object of a ``google.rpc.Status`` body (Gemini sends it alone or in a list)."""
    try:
        body = json.loads(text) if text else None
    except ValueError:
        return None
    if isinstance(body, list) and body:
        body = body[0]
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict) and ("status" in error or "code" in error) and "message" in error:
        return error
    return None


def _details(error: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    details = error.get("details")
    return [
        d
        for d in (details if isinstance(details, list) else [])
        if isinstance(d, dict) and str(d.get("@type", "")).endswith(f"google.rpc.{kind}")
    ]


class GeminiStream:
    """``streamGenerateContent?alt=sse`` as OpenAI chat completion chunks.

    Each event is a whole ``GenerateContentResponse`` holding the next piece of text (function calls
    arrive whole); the last carries ``finishReason``. Gemini sends no ``[DONE]``: the body ends. A body
    that ends before a finish reason, a broken connection or an ``error`` event is raised as a typed
    error, which the server turns into the stream's error event. It owns the HTTP response and
    releases it at the end, on error, or on ``aclose()``.
    """

    def __init__(
        self,
        provider: GeminiInferenceProvider,
        response: aiohttp.ClientResponse,
        credential: Credential,
        model: str,
        path: str,
        include_usage: bool,
    ) -> None:
        self._provider = provider
        self._response = response
        self._credential = credential
        self._model = model
        self._url = provider._url(path)
        self._include_usage = include_usage
        self._lines = LineReader(response.content)
        self._pending: list[ChatCompletionChunk] = []
        self._closed = False
        self._finished: set[int] = set()
        self._started: set[int] = set()
        self._calls: dict[int, int] = {}  # candidate index -> tool calls emitted so far
        self._usage: dict[str, Any] | None = None
        self._id = ""
        self._created = 0

    def __aiter__(self) -> GeminiStream:
        return self

    async def __anext__(self) -> ChatCompletionChunk:
        while not self._pending:
            if self._closed:
                raise StopAsyncIteration
            await self._read_event()
        return self._pending.pop(0)

    async def _read_event(self) -> None:
        pid = self._provider.provider_id
        try:
            data = await self._next_data()
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            await self.aclose()
            read = self._provider.config.timeout.read
            if classify(exc, 0.0, read) is Failure.READ_TIMEOUT:
                raise UpstreamTimeoutError(pid, f"{self._url} stalled mid-stream (nothing for {read}s)") from None
            raise UpstreamError(pid, f"{self._url} broke off the stream: {describe(exc)}") from None
        if data is None:
            await self.aclose()
            if not self._finished:
                raise UpstreamError(pid, f"{self._url} ended the stream before the response was complete")
            if self._include_usage and self._usage is not None:
                self._pending.append(self._chunk([], usage=self._usage))
            return
        try:
            event = json.loads(data)
        except ValueError:
            await self.aclose()
            snippet = self._provider._scrub(data, self._credential)[:_MAX_QUOTED]
            raise UpstreamError(
                pid, f"{self._url} sent a malformed stream event: {snippet}", code="malformed_upstream_response"
            ) from None
        error = google_error(data) if isinstance(event, dict) and "error" in event else None
        if error is not None or not isinstance(event, dict):
            await self.aclose()
            if error is None:
                raise UpstreamError(pid, f"{self._url} sent a stream event that is not an object")
            raw_code = error.get("code")
            code = raw_code if isinstance(raw_code, int) else 500
            mapped = self._provider.map_google_error(error, code, self._credential, self._model)
            raise UpstreamError(pid, f"the upstream failed mid-stream: {mapped.message}") from None
        self._on_event(event)

    def _on_event(self, event: dict[str, Any]) -> None:
        if not self._id:
            self._id, self._created = completion_id(event), _now()
        usage = usage_from_metadata(event.get("usageMetadata"))
        if usage is not None:
            self._usage = usage  # cumulative: the last one counts
        candidates = event.get("candidates")
        if not isinstance(candidates, list) or not candidates:
            block = (
                (event.get("promptFeedback") or {}).get("blockReason")
                if isinstance(event.get("promptFeedback"), dict)
                else None
            )
            if block:
                self._finished.add(0)
                self._pending.append(
                    self._chunk([{"index": 0, "delta": {"role": "assistant"}, "finish_reason": "content_filter"}])
                )
            return
        choices = []
        for position, candidate in enumerate(candidates):
            if not isinstance(candidate, dict):
                continue
            raw_index = candidate.get("index")
            index = raw_index if isinstance(raw_index, int) else position
            text, calls = candidate_parts(candidate)
            delta: dict[str, Any] = {}
            if index not in self._started:
                self._started.add(index)
                delta["role"] = "assistant"
            if text:
                delta["content"] = text
            if calls:
                first = self._calls.get(index, 0)
                delta["tool_calls"] = [{"index": first + i, **call} for i, call in enumerate(calls)]
                self._calls[index] = first + len(calls)
            reason = finish_reason(candidate.get("finishReason"), self._calls.get(index, 0) > 0)
            if reason is not None:
                self._finished.add(index)
            if delta or reason:
                choices.append({"index": index, "delta": delta, "finish_reason": reason})
        if choices:
            self._pending.append(self._chunk(choices))

    def _chunk(self, choices: list[dict[str, Any]], usage: dict[str, Any] | None = None) -> ChatCompletionChunk:
        body: dict[str, Any] = {
            "id": self._id or completion_id({}),
            "object": "chat.completion.chunk",
            "created": self._created or _now(),
            "model": self._model,
            "choices": choices,
        }
        if usage is not None:
            body["usage"] = usage
        try:
            return ChatCompletionChunk.model_validate(body)
        except ValidationError as exc:
            raise UpstreamError(
                self._provider.provider_id,
                f"{self._url} sent an event that does not fit a chat chunk: {exc.errors()[0]['msg']}",
                code="malformed_upstream_response",
            ) from None

    async def _next_data(self) -> str | None:
        """The data of the next SSE event, or None at the end of the body."""
        lines: list[str] = []
        while True:
            line = await self._lines.readline()
            if line is None:
                return "\n".join(lines) if lines else None
            if not line:
                if lines:
                    return "\n".join(lines)
                continue
            field, _, value = line.partition(":")
            if field == "data":
                lines.append(value[1:] if value.startswith(" ") else value)

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._response.content.at_eof():
            self._response.release()
        else:
            self._response.close()


def _now() -> int:
    return int(time.time())


async def create_provider(provider_id: str, config: Config, deps: dict[str, Any]) -> GeminiInferenceProvider:
    return GeminiInferenceProvider(provider_id, config)
