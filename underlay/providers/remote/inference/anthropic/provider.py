"""``remote::anthropic``: Anthropic's Messages API, for chat completions and natively for ``/v1/messages``.

What it shares with the OpenAI-compatible adapters (:mod:`underlay.providers.utils.openai_compat`):
the pooled HTTP client, retries before any byte of an answer, credentials from the request's provider
data, the config or ``ANTHROPIC_API_KEY``, and the mapping of upstream statuses (429 → 429 with
``Retry-After``, a refused key → 502 naming the provider, never the key). What differs:

- the key goes in ``x-api-key`` with an ``anthropic-version`` header, not ``Authorization``;
- chat completions are translated to Messages and back (:mod:`.wire`);
- Anthropic's 529 (overloaded) becomes 503, and an ``error`` event in its stream a typed error;
- it speaks Messages natively (:class:`~underlay.api.messages.MessagesProvider`): the messages router
  hands it ``/v1/messages`` and ``count_tokens`` requests as the client sent them;
- no legacy completions or embeddings: Anthropic has neither;
- a chat batch whose lines all name its models goes to Anthropic's Message Batches API (``native_batches``,
  on by default), translated line by line as live requests are (:mod:`.batches`).
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
from pydantic import Field, SecretStr, TypeAdapter, ValidationError, field_validator

from underlay.api.batches import Batch
from underlay.api.errors import (
    ConflictError,
    InvalidRequestError,
    RateLimitedError,
    ServiceUnavailableError,
    UnderlayError,
    UpstreamError,
    UpstreamTimeoutError,
)
from underlay.api.inference import (
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChoiceDelta,
    ChunkChoice,
    Completion,
    CompletionRequest,
    DiscoveredModel,
    EmbeddingsRequest,
    EmbeddingsResponse,
    ToolCallDelta,
)
from underlay.api.messages import (
    ContentBlockDeltaEvent,
    ContentBlockStartEvent,
    CountTokensRequest,
    ErrorEvent,
    Message,
    MessageDeltaEvent,
    MessagesRequest,
    MessageStartEvent,
    MessageStopEvent,
    MessageStreamEvent,
    TokenCount,
    ToolUseBlock,
)
from underlay.api.messages import Usage as MessagesUsage
from underlay.providers.remote.inference.anthropic.batches import (
    ENDPOINT,
    batch_from_anthropic,
    input_reference,
    parse_reference,
    requests_from_lines,
    result_record,
    results_file,
    translate_line,
)
from underlay.providers.remote.inference.anthropic.wire import (
    FINISH_REASONS,
    chat_usage,
    completion_from_message,
    messages_payload,
)
from underlay.providers.utils.openai_batches import NativeBatchesBase
from underlay.providers.utils.openai_compat import (
    Credential,
    OpenAICompatSettings,
    check_http_url,
)
from underlay.providers.utils.upstream_http import Failure, LineReader, classify, describe

DEFAULT_BASE_URL = "https://api.anthropic.com/v1"
ANTHROPIC_VERSION = "2023-06-01"

_EVENT = TypeAdapter[MessageStreamEvent](MessageStreamEvent)
_FIND_PAGES = 5
"""Pages of ``GET /v1/messages/batches`` (100 each, newest first) searched after a crash mid-create."""
_CLOCK_SKEW = 120
"""Seconds Anthropic's clock may be behind this one when looking for a batch created since its input."""


class Config(OpenAICompatSettings):
    """Anthropic: only ``api_key`` (or ``ANTHROPIC_API_KEY``) is usually needed."""

    base_url: str = Field(default=DEFAULT_BASE_URL, description="Anthropic's API root, ending in /v1.")
    api_key: SecretStr | None = Field(default=None, description="The Anthropic API key (a secret).")
    anthropic_version: str = Field(default=ANTHROPIC_VERSION, max_length=32, description="anthropic-version header.")
    default_max_tokens: int = Field(
        default=4096,
        ge=1,
        le=1_000_000,
        description="max_tokens for a chat request that sets none (Anthropic needs one).",
    )
    native_batches: bool = Field(
        default=True,
        description=(
            "Pass a chat batch whose lines all name this provider's models to Anthropic's Message Batches API "
            "(its batch pricing and limits apply) instead of running its lines one by one; false runs them here."
        ),
    )

    @field_validator("base_url")
    @classmethod
    def _check_base_url(cls, value: str) -> str:
        return check_http_url(value)

    def endpoint(self) -> str:
        return self.base_url.rstrip("/")

    def configured_api_key(self) -> str | None:
        return self.api_key.get_secret_value() if self.api_key else None


class AnthropicInferenceProvider(NativeBatchesBase):
    api_key_env = "ANTHROPIC_API_KEY"
    provider_data_key = "anthropic_api_key"
    requires_api_key = True
    native_endpoints = (ENDPOINT,)

    def __init__(self, provider_id: str, config: Config) -> None:
        super().__init__(provider_id, config)
        self.anthropic = config

    # -- wire details ------------------------------------------------------------------------------

    def _headers(self, credential: Credential, *, stream: bool) -> dict[str, str]:
        headers = super()._headers(credential, stream=stream)
        if credential.value and headers.get("Authorization") == f"Bearer {credential.value}":
            del headers["Authorization"]
            headers["x-api-key"] = credential.value
        headers["anthropic-version"] = self.anthropic.anthropic_version
        return headers

    def _status_error(
        self, response: aiohttp.ClientResponse, text: str, credential: Credential, url: str, model: str | None
    ) -> UnderlayError:
        if response.status == 529:
            return ServiceUnavailableError(
                self.provider_id, f"Anthropic is overloaded (529); try again shortly: {self._scrub(text, credential)}"
            )
        return super()._status_error(response, text, credential, url, model)

    # -- models ------------------------------------------------------------------------------------

    async def list_provider_models(self) -> list[DiscoveredModel]:
        """``GET /v1/models`` (up to 1000 models, Anthropic's page limit), filtered by the allow list."""
        body = await self._request_json("GET", "models?limit=1000")
        return self._models_from_openai_list(body, f"{self.base_url}/models")

    # -- chat completions, translated --------------------------------------------------------------

    async def openai_chat_completion(
        self, params: ChatCompletionRequest
    ) -> ChatCompletion | AsyncIterator[ChatCompletionChunk]:
        self._check_model(params.model)
        payload = messages_payload(params, self.provider_id, self.anthropic.default_max_tokens)
        if params.stream:
            events = await self._event_stream("messages", payload, params.model)
            include_usage = bool(params.stream_options and params.stream_options.include_usage)
            return _chunks_from_events(events, params.model, include_usage)
        message = await self._request_model(Message, "messages", payload, params.model)
        return completion_from_message(message, int(time.time()))

    async def openai_completion(self, params: CompletionRequest) -> Completion | AsyncIterator[Completion]:
        raise InvalidRequestError(
            f"Provider '{self.provider_id}' (Anthropic) has no legacy completions; use /v1/chat/completions "
            "or /v1/messages.",
            param="model",
        )

    async def openai_embeddings(self, params: EmbeddingsRequest) -> EmbeddingsResponse:
        raise InvalidRequestError(
            f"Provider '{self.provider_id}' (Anthropic) has no embedding models; pick one from another provider.",
            param="model",
        )

    # -- Messages, natively ------------------------------------------------------------------------

    async def create_message(self, params: MessagesRequest) -> Message | AsyncIterator[MessageStreamEvent]:
        """The client's request as it came (only ``model`` renamed); the answer as Anthropic sent it."""
        self._check_model(params.model)
        payload = _as_sent(params)
        if params.stream:
            return await self._event_stream("messages", payload, params.model)
        return await self._request_model(Message, "messages", payload, params.model)

    async def count_message_tokens(self, params: CountTokensRequest) -> TokenCount:
        self._check_model(params.model)
        return await self._request_model(TokenCount, "messages/count_tokens", _as_sent(params), params.model)

    # -- Message Batches (the native batch seam) -----------------------------------------------------

    def native_batch_accepts(self, endpoint: str, requests: list[tuple[str, dict[str, Any]]]) -> bool:
        """Only if every custom_id can be spelt for Anthropic and every line translates as a live one would
        (a model Anthropic cannot batch answers in its results, as it would live)."""
        if endpoint != ENDPOINT or not super().native_batch_accepts(endpoint, requests):
            return False
        try:
            for custom_id, body in requests:
                translate_line(custom_id, body, self.provider_id, self.anthropic.default_max_tokens)
        except InvalidRequestError:
            return False
        return True

    async def upload_native_batch_input(self, filename: str, content: bytes) -> str:
        """Nothing to upload (the create call carries the requests): a reference for ``find_native_batch``."""
        count = sum(1 for line in content.splitlines() if line.strip())
        return input_reference(content, count, int(time.time()))

    async def create_native_batch(
        self,
        input_file_id: str,
        endpoint: str,
        completion_window: str,
        metadata: dict[str, str] | None,
        content: bytes,
    ) -> Batch:
        """``POST /v1/messages/batches`` with every line translated; Anthropic keeps no metadata, so it stays here."""
        requests = requests_from_lines(content, self.provider_id, self.anthropic.default_max_tokens)
        # No retries: a create that timed out may have succeeded (find_native_batch decides what comes next).
        body = await self._batch_call("POST", "messages/batches", {"requests": requests}, retries=0)
        return self._message_batch(body, "messages/batches")

    async def find_native_batch(self, input_file_id: str) -> Batch | None:
        """After a crash mid-create: ``None`` if no batch of that size was made since; else refuse to guess.

        Anthropic's batches carry no input file or metadata to match, so a batch of the same number of
        requests created since the input was prepared may be this one: it is named, and not sent again.
        """
        reference = parse_reference(input_file_id)
        if reference is None:
            return None
        count, made_at = reference
        since = made_at - _CLOCK_SKEW
        candidates: list[str] = []
        after: str | None = None
        for _ in range(_FIND_PAGES):
            page = await self._batch_call("GET", "messages/batches?limit=100" + (f"&after_id={after}" if after else ""))
            data = page.get("data") if isinstance(page, dict) else None
            if not isinstance(data, list):
                raise UpstreamError(
                    self.provider_id,
                    f"malformed answer from {self._url('messages/batches')}: expected {{'data': [...]}}",
                    code="malformed_upstream_response",
                )
            older = False
            for item in data:
                try:
                    found = batch_from_anthropic(item)
                except ValueError:
                    continue
                if found.created_at < since:
                    older = True
                elif found.request_counts.total == count:
                    candidates.append(found.id)
            after = page.get("last_id") if isinstance(page.get("last_id"), str) else None
            if older or not page.get("has_more") or not after:
                break
        if not candidates:
            return None
        raise ConflictError(
            f"Provider '{self.provider_id}': the server stopped while creating this batch at Anthropic, and "
            f"Anthropic cannot be asked which batch that was; {', '.join(candidates[:5])} "
            f"({count} requests, created since) may be it. It was not sent again, so it never runs twice: "
            "check that batch in Anthropic's console, or create this batch again.",
            code="native_batch_unknown",
        )

    async def retrieve_native_batch(self, batch_id: str) -> Batch:
        path = f"messages/batches/{batch_id}"
        return self._message_batch(await self._batch_call("GET", path), path)

    async def cancel_native_batch(self, batch_id: str) -> Batch:
        path = f"messages/batches/{batch_id}/cancel"
        return self._message_batch(await self._batch_call("POST", path), path)

    async def read_native_batch_file(self, file_id: str) -> AsyncIterator[dict[str, Any]]:
        """The batch's results (``GET .../results``), the succeeded or the other lines, as OpenAI's lines."""
        try:
            batch_id, succeeded = results_file(file_id)
        except ValueError as exc:
            raise UpstreamError(self.provider_id, str(exc), code="malformed_upstream_response") from None
        created = int(time.time())
        async for item in self._read_jsonl(f"messages/batches/{batch_id}/results"):
            ok, record = result_record(item, batch_id, self.provider_id, created)
            if ok is succeeded:
                yield record

    def _message_batch(self, body: Any, path: str) -> Batch:
        try:
            return batch_from_anthropic(body)
        except ValueError as exc:
            raise UpstreamError(
                self.provider_id,
                f"malformed message batch from {self._url(path)}: {exc}",
                code="malformed_upstream_response",
            ) from None

    # -- streaming ---------------------------------------------------------------------------------

    async def _event_stream(self, path: str, payload: dict[str, Any], model: str) -> AsyncIterator[MessageStreamEvent]:
        """Send, check the status (errors before the stream are ordinary HTTP errors), return the events."""
        response, credential = await self._send("POST", path, payload, model=model, stream=True)
        content_type = response.headers.get("content-type", "")
        if "text/event-stream" not in content_type:
            body = await self._read_and_close(response)
            raise UpstreamError(
                self.provider_id,
                f"{self._url(path)} did not stream (content-type '{content_type}'): "
                f"{self._scrub(body, credential) or 'an empty body'}",
                code="malformed_upstream_response",
            )
        return self._events(response, credential, self._url(path))

    async def _events(
        self, response: aiohttp.ClientResponse, credential: Credential, url: str
    ) -> AsyncIterator[MessageStreamEvent]:
        """Anthropic's SSE events as typed events, until ``message_stop``; a cut or an ``error`` event raises."""
        reader = LineReader(response.content)
        data: list[str] = []
        finished = False
        try:
            while True:
                try:
                    line = await reader.readline()
                except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                    raise self._cut(exc, url) from None
                if line is None:
                    break
                if line.startswith("data:"):
                    data.append(line[5:].lstrip(" "))
                    continue
                if line or not data:
                    continue  # "event:" names repeat the payload's type; comments and blank lines pass
                event = self._event(data, credential, url)
                data = []
                if event is None:
                    continue
                if isinstance(event, ErrorEvent):
                    raise self._stream_error(event, credential)
                yield event
                if isinstance(event, MessageStopEvent):
                    finished = True
                    break
            if not finished:
                raise UpstreamError(self.provider_id, f"{url} ended its stream before message_stop")
        finally:
            if finished:
                response.release()
            else:
                response.close()

    def _event(self, data: list[str], credential: Credential, url: str) -> MessageStreamEvent | None:
        raw = "\n".join(data)
        try:
            value = json.loads(raw)
        except ValueError:
            raise UpstreamError(
                self.provider_id,
                f"{url} sent an event that is not JSON: {self._scrub(raw, credential)}",
                code="malformed_upstream_response",
            ) from None
        if not isinstance(value, dict) or value.get("type") not in _KNOWN_EVENTS:
            return None  # a newer event type: skipped, as Anthropic asks clients to do
        try:
            return _EVENT.validate_python(value)
        except ValidationError as exc:
            first = exc.errors()[0]
            raise UpstreamError(
                self.provider_id,
                f"{url} sent a malformed {value.get('type')} event: {first['msg']}",
                code="malformed_upstream_response",
            ) from None

    def _stream_error(self, event: ErrorEvent, credential: Credential) -> UnderlayError:
        kind, message = event.error.type, self._scrub(event.error.message, credential)
        said = f"Anthropic's stream said {kind}: {message}"
        if kind == "overloaded_error":
            return ServiceUnavailableError(self.provider_id, said)
        if kind == "rate_limit_error":
            return RateLimitedError(f"Provider '{self.provider_id}' is rate limited upstream; {said}")
        return UpstreamError(self.provider_id, said)

    def _cut(self, exc: BaseException, url: str) -> UnderlayError:
        if classify(exc, 0.0, self.config.timeout.read) is Failure.READ_TIMEOUT:
            return UpstreamTimeoutError(
                self.provider_id, f"{url} went quiet mid-stream (nothing for {self.config.timeout.read}s)"
            )
        return UpstreamError(self.provider_id, f"{url} broke off its stream: {describe(exc)}")


def _as_sent(params: CountTokensRequest) -> dict[str, Any]:
    """The body as the client sent it: the fields it set (unknown ones too), no defaults of ours added."""
    payload = params.model_dump(mode="json", exclude_unset=True, by_alias=True)
    payload["model"] = params.model
    return payload


_KNOWN_EVENTS = frozenset(
    {
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
        "ping",
        "error",
    }
)


async def _chunks_from_events(
    events: AsyncIterator[MessageStreamEvent], model: str, include_usage: bool
) -> AsyncIterator[ChatCompletionChunk]:
    """Anthropic's events as chat chunks: text deltas as content, tool_use blocks as tool-call deltas."""
    completion_id, created = "", int(time.time())
    usage = MessagesUsage(input_tokens=0, output_tokens=0)
    tool_index: dict[int, int] = {}  # content block index → chat tool-call index
    finish: str | None = None
    stop_string: str | None = None

    def chunk(delta: ChoiceDelta, finish_reason: Any = None, **extra: Any) -> ChatCompletionChunk:
        choice = ChunkChoice(index=0, delta=delta, finish_reason=finish_reason, **extra)
        return ChatCompletionChunk(id=completion_id, created=created, model=model, choices=[choice])

    try:
        async for event in events:
            if isinstance(event, MessageStartEvent):
                completion_id = event.message.id
                usage = event.message.usage
                yield chunk(ChoiceDelta(role="assistant", content=""))
            elif isinstance(event, ContentBlockStartEvent):
                block = event.content_block
                if isinstance(block, ToolUseBlock):
                    tool_index[event.index] = len(tool_index)
                    call = ToolCallDelta(
                        index=tool_index[event.index],
                        id=block.id,
                        type="function",
                        function={"name": block.name, "arguments": ""},
                    )
                    yield chunk(ChoiceDelta(tool_calls=[call]))
                elif getattr(block, "text", ""):
                    yield chunk(ChoiceDelta(content=block.text))  # type: ignore[union-attr]
            elif isinstance(event, ContentBlockDeltaEvent):
                delta = event.delta if isinstance(event.delta, dict) else event.delta.model_dump()
                if delta.get("type") == "text_delta" and delta.get("text"):
                    yield chunk(ChoiceDelta(content=delta["text"]))
                elif delta.get("type") == "input_json_delta" and event.index in tool_index:
                    call = ToolCallDelta(
                        index=tool_index[event.index], function={"arguments": delta.get("partial_json") or ""}
                    )
                    yield chunk(ChoiceDelta(tool_calls=[call]))
            elif isinstance(event, MessageDeltaEvent):
                finish = FINISH_REASONS.get(event.delta.stop_reason or "end_turn", "stop")
                if event.delta.stop_reason == "stop_sequence":
                    stop_string = event.delta.stop_sequence
                usage = usage.model_copy(update={"output_tokens": event.usage.output_tokens})
                if event.usage.input_tokens is not None:
                    usage = usage.model_copy(update={"input_tokens": event.usage.input_tokens})
            elif isinstance(event, MessageStopEvent):
                extra = {"stop_reason": stop_string} if stop_string else {}
                yield chunk(ChoiceDelta(), finish or "stop", **extra)
                if include_usage:
                    yield ChatCompletionChunk(
                        id=completion_id, created=created, model=model, choices=[], usage=chat_usage(usage)
                    )
    finally:
        aclose = getattr(events, "aclose", None)
        if aclose is not None:
            await aclose()


async def create_provider(provider_id: str, config: Config, deps: dict[str, Any]) -> AnthropicInferenceProvider:
    return AnthropicInferenceProvider(provider_id, config)
