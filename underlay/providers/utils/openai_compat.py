"""The shared base of every remote inference adapter that speaks OpenAI's HTTP API.

vLLM, llama.cpp's servers, Ollama, OpenAI itself and most hosted services expose the same
``/models``, ``/chat/completions``, ``/completions`` and ``/embeddings`` endpoints. They differ only in
where they live, where their credentials come from, and a few quirks, so each adapter module states
just that and inherits everything else from :class:`OpenAICompatInferenceProvider`:

- one pooled ``aiohttp.ClientSession`` per provider (created in ``initialize``, closed in ``shutdown``;
  see :mod:`underlay.providers.utils.upstream_http` for why aiohttp);
  we do not use the ``openai`` SDK because we need exact control over retries, streaming and how each
  upstream failure becomes one of Underlay's typed errors;
- retries with exponential backoff and jitter on connection failures and on 429/500/502/503/504, but
  only before any byte of the response body was consumed, so a stream is never replayed;
- credentials from the per-request provider data (which wins), the config, or an environment variable;
  secrets are never logged and are scrubbed from upstream messages we quote;
- an optional allow list: a model outside it is neither listed nor served;
- upstream errors mapped to the same status class, with a message naming the provider and quoting the
  upstream.
"""

from __future__ import annotations

import asyncio
import base64
import email.utils
import fnmatch
import json
import logging
import os
import random
import struct
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, TypeVar
from urllib.parse import unquote, urlsplit, urlunsplit

import aiohttp
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_core import to_json

from underlay.api.context import PROVIDER_DATA_HEADER, get_provider_data, request_id_var
from underlay.api.errors import (
    ConflictError,
    InvalidRequestError,
    NotFoundError,
    PayloadTooLargeError,
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
from underlay.providers.utils.upstream_http import Failure, LineReader, classify, describe, env_proxy, new_session

__all__ = [
    "CONTEXT_LENGTH_KEYS",
    "Credential",
    "OpenAICompatConfig",
    "OpenAICompatInferenceProvider",
    "OpenAICompatSettings",
    "REQUEST_ID_HEADER",
    "RETRYABLE_STATUSES",
    "SSEStream",
    "TimeoutSettings",
    "body_message",
    "check_http_url",
    "floats_to_base64",
    "guess_model_type",
    "normalize_finish_reasons",
    "retry_after_seconds",
    "upstream_message",
    "with_v1",
]

log = logging.getLogger(__name__)

#: Statuses that usually mean "try again shortly"; anything else is the upstream's final answer.
RETRYABLE_STATUSES = frozenset({429, 500, 502, 503, 504})

#: Carries Underlay's request id upstream, for correlating logs.
REQUEST_ID_HEADER = "X-Underlay-Request-ID"

#: Keys under which OpenAI-compatible servers report a model's context window in ``/models``.
CONTEXT_LENGTH_KEYS = ("context_length", "max_model_len", "context_window", "max_context_length")

_FINISH_REASONS = frozenset({"stop", "length", "tool_calls", "content_filter", "function_call"})
_COMPLETION_FINISH_REASONS = frozenset({"stop", "length", "content_filter"})
_MAX_QUOTED = 500
_MAX_BACKOFF = 30.0

T = TypeVar("T", bound=BaseModel)


# ---------------------------------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------------------------------


class TimeoutSettings(BaseModel):
    """How long to wait for the upstream, in seconds.

    ``connect`` bounds opening a connection (short: an unreachable host should fail fast as 503);
    ``read`` bounds each wait for data, i.e. the time to first byte of a non-streaming answer and the
    gap between two chunks of a stream (long: generation is slow). A bare number sets ``read``.
    """

    model_config = ConfigDict(extra="forbid")

    connect: float = Field(default=5.0, gt=0)
    read: float = Field(default=120.0, gt=0)

    @model_validator(mode="before")
    @classmethod
    def _from_number(cls, value: Any) -> Any:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return {"read": float(value), "connect": min(5.0, float(value))}
        return value


class OpenAICompatSettings(BaseModel):
    """Knobs every OpenAI-compatible adapter shares; adapters add where the upstream lives.

    Subclasses implement :meth:`endpoint` (the base URL that ends just before ``/models``) and, when
    they hold a credential, :meth:`configured_api_key`.
    """

    model_config = ConfigDict(extra="forbid")

    api_key_env: str | None = Field(
        default=None,
        description="Environment variable holding the API key; defaults to the adapter's (e.g. OPENAI_API_KEY).",
    )
    provider_data_key: str | None = Field(
        default=None,
        description=(
            f"Key of the {PROVIDER_DATA_HEADER} header that carries a per-request API key; defaults "
            "to the adapter's (e.g. openai_api_key). Give each of several same-type providers its own."
        ),
    )
    timeout: TimeoutSettings = Field(default_factory=TimeoutSettings)
    max_retries: int = Field(default=2, ge=0, le=10, description="Retries after the first attempt.")
    backoff: float = Field(default=0.5, ge=0, description="Base delay in seconds, doubled on each retry.")
    max_retry_after: float = Field(
        default=10.0,
        ge=0,
        description="Honour an upstream Retry-After up to this many seconds; a longer one is returned as 429.",
    )
    allowed_models: list[str] | None = Field(
        default=None,
        description="Models this provider may list and serve (exact names or shell-style globs); None allows all.",
    )
    extra_headers: dict[str, str] = Field(
        default_factory=dict, description="Sent with every request. Put secrets in api_key, not here."
    )

    def endpoint(self) -> str:
        """The upstream's OpenAI base URL (``.../v1``), without a trailing slash."""
        raise NotImplementedError

    def configured_api_key(self) -> str | None:
        """The credential written in the config, if the adapter has one."""
        return None


class OpenAICompatConfig(OpenAICompatSettings):
    """Config for adapters addressed by a full ``base_url`` (OpenAI, passthrough)."""

    base_url: str = Field(description="The OpenAI-compatible base URL, e.g. https://api.openai.com/v1.")
    api_key: SecretStr | None = Field(default=None, description="The upstream API key (a secret).")

    @field_validator("base_url")
    @classmethod
    def _check_base_url(cls, value: str) -> str:
        return check_http_url(value)

    def endpoint(self) -> str:
        return self.base_url.rstrip("/")

    def configured_api_key(self) -> str | None:
        return self.api_key.get_secret_value() if self.api_key else None


def check_http_url(value: str) -> str:
    """Reject anything but an absolute http(s) URL, so a typo fails at config load, not on first use."""
    parts = urlsplit(value.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"'{value}' is not an http(s) URL such as http://127.0.0.1:8000/v1")
    return value.strip()


def with_v1(url: str) -> str:
    """Append ``/v1`` to a bare server URL (``http://host:8000``); keep any explicit path as given.

    vLLM and llama.cpp users write either form, and only the bare form is ambiguous.
    """
    url = url.rstrip("/")
    return url if urlsplit(url).path not in ("", "/") else f"{url}/v1"


# ---------------------------------------------------------------------------------------------------
# The provider
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Credential:
    """The API key chosen for one request and where it came from (for messages; never the value)."""

    value: str | None
    source: str  # "request", "config", "env" or "none"
    origin: str


class OpenAICompatInferenceProvider:
    """An inference provider backed by an OpenAI-compatible HTTP server.

    Adapters subclass this, set the class attributes below and override the small hooks
    (``_chat_payload``, ``_embeddings_body``, ``_include_model``, ``list_provider_models``) only where
    their upstream differs.
    """

    #: Environment variable consulted when neither the request nor the config carries a key.
    api_key_env: ClassVar[str | None] = None
    #: Key of the per-request provider data holding an API key.
    provider_data_key: ClassVar[str | None] = None
    #: Refuse to call the upstream without a key (it would only answer 401).
    requires_api_key: ClassVar[bool] = False
    #: Send ``Connection: close`` on streaming requests (for servers that drop the connection after).
    close_after_stream: ClassVar[bool] = False

    def __init__(self, provider_id: str, config: OpenAICompatSettings) -> None:
        self.provider_id = provider_id
        self.config = config
        # Credentials in the URL (user:password@host) become basic auth, so no error or log shows them.
        self.base_url, self._url_auth = _split_userinfo(config.endpoint().rstrip("/"))
        self._client: aiohttp.ClientSession | None = None
        self._proxy = env_proxy(self.base_url)  # HTTP(S)_PROXY / NO_PROXY, as httpx honoured them

    # -- lifecycle ---------------------------------------------------------------------------------

    async def initialize(self) -> None:
        """Open the pooled HTTP client; no request is made, so an absent upstream does not block startup."""
        if self._client is None:
            self._client = self._new_client()

    async def shutdown(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            await client.close()

    async def health(self) -> dict[str, Any]:
        """Whether the upstream answers ``GET /models`` now (one attempt, no retries)."""
        try:
            await self._request_json("GET", "models", retries=0)
        except UnderlayError as exc:
            return {"status": "error", "message": exc.message}
        return {"status": "ok"}

    def _new_client(self) -> aiohttp.ClientSession:
        # The pool wait is bounded by the read timeout: a full pool means other generations are running.
        # Every open connection may stay idle in the pool, so a burst never reopens connections.
        timeout = self.config.timeout
        return new_session(timeout.connect, timeout.read, self.base_url)

    def _http(self) -> aiohttp.ClientSession:
        if self._client is None:  # used before initialize(): be forgiving rather than crash
            self._client = self._new_client()
        return self._client

    # -- models ------------------------------------------------------------------------------------

    async def list_provider_models(self) -> list[DiscoveredModel]:
        """The upstream's ``GET /models``, filtered by the allow list."""
        body = await self._request_json("GET", "models")
        return self._models_from_openai_list(body, f"{self.base_url}/models")

    def _models_from_openai_list(self, body: Any, url: str) -> list[DiscoveredModel]:
        data = body.get("data") if isinstance(body, dict) else None
        if not isinstance(data, list):
            raise UpstreamError(self.provider_id, f"malformed model list from {url}: expected {{'data': [...]}}")
        found: list[DiscoveredModel] = []
        for item in data:
            if not isinstance(item, dict) or not isinstance(item.get("id"), str) or not item["id"]:
                continue
            model_id: str = item["id"]
            if not self.is_model_allowed(model_id) or not self._include_model(model_id):
                continue
            metadata: dict[str, Any] = {}
            for key in CONTEXT_LENGTH_KEYS:
                if isinstance(item.get(key), int) and item[key] > 0:
                    metadata["context_length"] = item[key]
                    break
            if isinstance(item.get("owned_by"), str):
                metadata["owned_by"] = item["owned_by"]
            found.append(
                DiscoveredModel(
                    provider_resource_id=model_id,
                    model_type=guess_model_type(model_id),
                    metadata=metadata,
                )
            )
        return found

    def _include_model(self, model_id: str) -> bool:
        """Adapters drop listed models that cannot serve chat or embeddings (e.g. image models)."""
        return True

    def is_model_allowed(self, model_id: str) -> bool:
        allowed = self.config.allowed_models
        if allowed is None:
            return True
        return any(model_id == pattern or fnmatch.fnmatchcase(model_id, pattern) for pattern in allowed)

    def _check_model(self, model_id: str) -> None:
        if not self.is_model_allowed(model_id):
            raise NotFoundError(
                "Model",
                model_id,
                hint=f"Provider '{self.provider_id}' only serves {', '.join(self.config.allowed_models or [])}.",
                param="model",
            )

    # -- inference ---------------------------------------------------------------------------------

    async def openai_chat_completion(
        self, params: ChatCompletionRequest
    ) -> ChatCompletion | AsyncIterator[ChatCompletionChunk]:
        """Chat completion; with ``stream`` the upstream's status is checked before the iterator returns,
        so refusals surface as ordinary HTTP errors and only mid-stream failures come from the iterator."""
        self._check_model(params.model)
        payload = self._chat_payload(params)
        if params.stream:
            return await self._stream("chat/completions", payload, params.model, ChatCompletionChunk)
        return await self._request_model(ChatCompletion, "chat/completions", payload, params.model)

    async def openai_completion(self, params: CompletionRequest) -> Completion | AsyncIterator[Completion]:
        """Legacy text completion; streamed chunks are ``Completion`` objects, as in OpenAI's API."""
        self._check_model(params.model)
        payload = self._completion_payload(params)
        if params.stream:
            return await self._stream("completions", payload, params.model, Completion)
        return await self._request_model(Completion, "completions", payload, params.model)

    async def openai_embeddings(self, params: EmbeddingsRequest) -> EmbeddingsResponse:
        """Embeddings; float vectors are base64-encoded here when the client asked for base64 and the
        upstream ignored it, so clients always get the encoding they requested."""
        self._check_model(params.model)
        payload = params.model_dump(mode="json", exclude_none=True, by_alias=True)
        body = await self._request_json("POST", "embeddings", payload, model=params.model)
        body = self._embeddings_body(body)
        response = self._parse(EmbeddingsResponse, body, "embeddings")
        if params.encoding_format == "base64":
            for item in response.data:
                if isinstance(item.embedding, list):
                    item.embedding = floats_to_base64(item.embedding)
        return response

    def _chat_payload(self, params: ChatCompletionRequest) -> dict[str, Any]:
        """The JSON body for ``/chat/completions``; unknown request fields pass through untouched."""
        return params.model_dump(mode="json", exclude_none=True, by_alias=True)

    def _completion_payload(self, params: CompletionRequest) -> dict[str, Any]:
        return params.model_dump(mode="json", exclude_none=True, by_alias=True)

    def _embeddings_body(self, body: Any) -> Any:
        """Hook for upstreams whose embeddings response needs reshaping before validation."""
        return body

    # -- parsing -----------------------------------------------------------------------------------

    def _parse(self, model: type[T], body: Any, path: str) -> T:
        """Validate an upstream body against the contract; a mismatch is the upstream's fault (502)."""
        try:
            return model.model_validate(normalize_finish_reasons(model, body))
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(part) for part in first["loc"]) or "body"
            raise UpstreamError(
                self.provider_id,
                f"malformed response from {self._url(path)}: {where}: {first['msg']}",
                code="malformed_upstream_response",
            ) from None

    # -- credentials -------------------------------------------------------------------------------

    def _credential(self) -> Credential:
        """Pick the API key: the request's provider data, else the config, else the environment."""
        data_key = self.config.provider_data_key or self.provider_data_key
        if data_key:
            value = get_provider_data().get(data_key)
            if isinstance(value, str) and value:
                return Credential(value, "request", f"the '{data_key}' key of the {PROVIDER_DATA_HEADER} header")
        return self._own_credential()

    def _own_credential(self) -> Credential:
        """The provider's own key (config, else environment), never a request's: work that outlives the
        request (a batch passed upstream, polled for hours) must use one key from start to end."""
        configured = self.config.configured_api_key()
        if configured:
            return Credential(configured, "config", "the provider's config")
        env_name = self.config.api_key_env or self.api_key_env
        if env_name and os.environ.get(env_name):
            return Credential(os.environ[env_name], "env", f"the {env_name} environment variable")
        return Credential(None, "none", "no API key")

    def _where_keys_come_from(self) -> str:
        places = ["api_key in its config"]
        env_name = self.config.api_key_env or self.api_key_env
        if env_name:
            places.append(f"the {env_name} environment variable")
        data_key = self.config.provider_data_key or self.provider_data_key
        if data_key:
            places.append(f"'{data_key}' in the {PROVIDER_DATA_HEADER} header")
        return ", ".join(places[:-1]) + f" or {places[-1]}" if len(places) > 1 else places[0]

    def _headers(self, credential: Credential, *, stream: bool) -> dict[str, str]:
        headers = {"Accept": "text/event-stream" if stream else "application/json", **self.config.extra_headers}
        if credential.value:
            headers["Authorization"] = f"Bearer {credential.value}"
        request_id = request_id_var.get()
        if request_id:
            # Our own header name: llama-cpp-python's server rejects (400) any X-Request-ID that is not
            # a UUID, and other upstreams may treat that standard header as theirs to assign.
            headers.setdefault(REQUEST_ID_HEADER, request_id)
        if stream and self.close_after_stream:
            headers["Connection"] = "close"
        if self._url_auth is not None:  # credentials in the URL win, as they would in a browser
            headers["Authorization"] = self._url_auth
        return headers

    def _scrub(self, text: str, credential: Credential) -> str:
        """Remove the key from upstream text we are about to quote (some servers echo it back)."""
        if credential.value and len(credential.value) >= 4:
            text = text.replace(credential.value, "***")
        if len(text) > _MAX_QUOTED:
            text = text[:_MAX_QUOTED] + "…"
        return text

    # -- HTTP --------------------------------------------------------------------------------------

    def _url(self, path: str) -> str:
        if path.startswith(("http://", "https://")):
            return path
        return f"{self.base_url}/{path.lstrip('/')}"

    async def _request_json(
        self,
        method: str,
        path: str,
        payload: dict[str, Any] | None = None,
        *,
        model: str | None = None,
        retries: int | None = None,
    ) -> Any:
        """Send a request and return its JSON body, with retries and typed errors."""
        raw, credential = await self._request_raw(method, path, payload, model=model, retries=retries)
        return self._loads(raw, credential, self._url(path))

    async def _request_model(self, model_type: type[T], path: str, payload: dict[str, Any], model: str) -> T:
        """POST and validate the answer straight from its bytes (one pass, no intermediate dicts).

        Only an answer that does not fit the contract as sent (say, a finish reason of the upstream's
        own) takes the slower road through :meth:`_parse`, which repairs what it can or names the fault.
        """
        raw, credential = await self._request_raw("POST", path, payload, model=model)
        try:
            return model_type.model_validate_json(raw)
        except ValidationError:
            pass
        return self._parse(model_type, self._loads(raw, credential, self._url(path)), path)

    def _loads(self, raw: bytes, credential: Credential, url: str) -> Any:
        try:
            return json.loads(raw)
        except ValueError:
            snippet = self._scrub(raw.decode("utf-8", "replace").strip(), credential) or "an empty body"
            raise UpstreamError(
                self.provider_id,
                f"{url} answered with something other than JSON: {snippet}",
                code="malformed_upstream_response",
            ) from None

    async def _request_raw(
        self,
        method: str,
        path: str,
        payload: dict[str, Any] | None = None,
        *,
        model: str | None = None,
        retries: int | None = None,
    ) -> tuple[bytes, Credential]:
        response, credential = await self._send(method, path, payload, model=model, stream=False, retries=retries)
        url = self._url(path)
        try:
            raw = await response.read()
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            response.close()
            if classify(exc, 0.0, self.config.timeout.read) is Failure.READ_TIMEOUT:
                raise UpstreamTimeoutError(
                    self.provider_id, f"{url} stopped sending its answer (nothing for {self.config.timeout.read}s)"
                ) from None
            raise UpstreamError(self.provider_id, f"{url} broke off its answer: {describe(exc)}") from None
        response.release()
        return raw, credential

    async def _send(
        self,
        method: str,
        path: str,
        payload: dict[str, Any] | None,
        *,
        model: str | None,
        stream: bool,
        retries: int | None = None,
        data: bytes | None = None,
        content_type: str | None = None,
        credential: Credential | None = None,
    ) -> tuple[aiohttp.ClientResponse, Credential]:
        """Send until a response's status is final; return it unread (the caller owns releasing it).

        Only the status line and headers have been received when this returns, which is what makes it
        safe to retry: nothing of the body has reached the caller. ``data`` (with its ``content_type``) is
        a body other than JSON, such as a multipart upload; ``credential`` overrides the usual choice.
        """
        credential = credential or self._credential()
        if credential.value is None and self.requires_api_key:
            raise UnauthenticatedError(
                f"Provider '{self.provider_id}' needs an API key: set {self._where_keys_come_from()}.",
                code="missing_provider_api_key",
            )
        url = self._url(path)
        headers = self._headers(credential, stream=stream)
        body: bytes | None = data
        if payload is not None:
            body = to_json(payload)
            headers["Content-Type"] = "application/json"
        elif data is not None and content_type:
            headers["Content-Type"] = content_type
        max_retries = self.config.max_retries if retries is None else retries
        session = self._http()
        attempt = 0
        while True:
            started = time.monotonic()
            try:
                response = await _send_traced(
                    session, method, url, body, headers, self._proxy, self.provider_id, attempt
                )
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                failure = classify(exc, time.monotonic() - started, self.config.timeout.read)
                if failure in (Failure.CONNECT, Failure.CONNECT_TIMEOUT) and attempt < max_retries:
                    reason = "connect timed out" if failure is Failure.CONNECT_TIMEOUT else describe(exc)
                    attempt = await self._pause(attempt, max_retries, url, reason)
                    continue
                if failure is Failure.DROPPED and attempt < max(max_retries, 1):
                    # The connection dropped before any response (often a pooled keep-alive connection the
                    # server had already closed): always worth one more try, even with max_retries 0.
                    attempt = await self._pause(attempt, max(max_retries, 1), url, describe(exc), delay=0.0)
                    continue
                raise self._transport_error(exc, failure, url) from None

            status = response.status
            if status in RETRYABLE_STATUSES and attempt < max_retries:
                delay = self._retry_delay(response.headers, attempt)
                if delay is not None:
                    response.close()
                    attempt = await self._pause(attempt, max_retries, url, f"HTTP {status}", delay=delay)
                    continue
            if status >= 300:
                text = await self._read_and_close(response)
                raise self._status_error(response, text, credential, url, model)
            return response, credential

    async def _pause(self, attempt: int, limit: int, url: str, reason: str, *, delay: float | None = None) -> int:
        wait = self._backoff(attempt) if delay is None else delay
        log.warning(
            "provider %s: %s from %s; retry %d of %d in %.2fs",
            self.provider_id,
            reason,
            url,
            attempt + 1,
            limit,
            wait,
        )
        if wait > 0:
            await asyncio.sleep(wait)
        return attempt + 1

    def _backoff(self, attempt: int) -> float:
        """Exponential backoff with jitter, so many clients retrying together do not stampede."""
        ceiling = min(self.config.backoff * (2**attempt), _MAX_BACKOFF)
        return ceiling * random.uniform(0.5, 1.0)

    def _retry_delay(self, headers: Mapping[str, str], attempt: int) -> float | None:
        """Seconds to wait before retrying, or None when the upstream asked for longer than we wait."""
        after = retry_after_seconds(headers)
        if after is None:
            return self._backoff(attempt)
        return after if after <= self.config.max_retry_after else None

    # -- error mapping -----------------------------------------------------------------------------

    def _transport_error(self, exc: BaseException, failure: Failure, url: str) -> UnderlayError:
        pid, timeout = self.provider_id, self.config.timeout
        if failure is Failure.CONNECT_TIMEOUT:
            return ServiceUnavailableError(
                pid,
                f"cannot reach {self.base_url}: no connection within {timeout.connect}s",
                code="upstream_unreachable",
            )
        if failure is Failure.POOL_TIMEOUT:
            return ServiceUnavailableError(
                pid, f"all connections to {self.base_url} stayed busy for {timeout.read}s", code="upstream_busy"
            )
        if failure is Failure.READ_TIMEOUT:
            return UpstreamTimeoutError(pid, f"{url} did not answer within {timeout.read}s")
        if failure is Failure.CONNECT:
            return ServiceUnavailableError(
                pid, f"cannot reach {self.base_url}: {describe(exc)}", code="upstream_unreachable"
            )
        return UpstreamError(pid, f"{url} closed the connection without answering: {describe(exc)}")

    def _status_error(
        self, response: aiohttp.ClientResponse, text: str, credential: Credential, url: str, model: str | None
    ) -> UnderlayError:
        """Turn an upstream error status into the typed error of the same class, quoting the upstream."""
        pid, status = self.provider_id, response.status
        if status < 400:
            location = response.headers.get("location", "elsewhere")
            return UpstreamError(
                pid, f"{url} redirected ({status}) to {location}; set the provider's URL to the final address"
            )
        message, param = upstream_message(text, response.reason)
        message = self._scrub(message, credential)
        said = f"upstream said {status}: {message}"
        if status in (401, 403):
            if credential.source == "request":
                return UnauthenticatedError(
                    f"Provider '{pid}' rejected the API key from {credential.origin}; {said}",
                    code="upstream_rejected_credentials",
                )
            if credential.source == "none":
                why = f"no API key was sent; set {self._where_keys_come_from()}"
            else:
                why = f"the key from {credential.origin} was refused"
            return UpstreamError(
                pid, f"the upstream rejected the credentials ({why}); {said}", code="upstream_auth_failed"
            )
        if status == 404:
            if model and (model in message or "model" in message.lower()):
                return NotFoundError("Model", model, hint=f"Provider '{pid}' {said}", param="model")
            return NotFoundError("Upstream endpoint", url, hint=f"Provider '{pid}' {said}")
        if status == 429:
            headers = {}
            after = retry_after_seconds(response.headers)
            if after is not None:
                headers["Retry-After"] = str(max(1, round(after)))
            return RateLimitedError(f"Provider '{pid}' is rate limited upstream; {said}", headers=headers)
        if status == 408:
            return UpstreamTimeoutError(pid, f"{url} timed out; {said}")
        if status == 409:
            return ConflictError(f"Provider '{pid}' {said}")
        if status == 413:
            return PayloadTooLargeError(f"Provider '{pid}' says the request is too large; {said}")
        if 400 <= status < 500:
            return InvalidRequestError(f"Provider '{pid}' rejected the request; {said}", param=param)
        if status == 503:
            return ServiceUnavailableError(pid, f"the upstream is unavailable; {said}")
        if status == 504:
            return UpstreamTimeoutError(pid, f"the upstream timed out; {said}")
        return UpstreamError(pid, f"the upstream failed; {said}")

    # -- streaming ---------------------------------------------------------------------------------

    async def _stream(self, path: str, payload: dict[str, Any], model: str, chunk_model: type[T]) -> SSEStream[T]:
        response, credential = await self._send("POST", path, payload, model=model, stream=True)
        content_type = response.headers.get("content-type", "")
        if "text/event-stream" not in content_type:
            # Some servers answer an error (or ignore ``stream``) with plain JSON and status 200.
            body = await self._read_and_close(response)
            message = self._scrub(body_message(body) or body, credential) or "an empty body"
            raise UpstreamError(
                self.provider_id,
                f"{self._url(path)} did not stream (content-type '{content_type}'): {message}",
                code="malformed_upstream_response",
            )
        return SSEStream(self, response, chunk_model, path, credential)

    async def _read_and_close(self, response: aiohttp.ClientResponse) -> str:
        """The body as text (empty if it cannot be read), the connection released or closed."""
        try:
            text = (await response.read()).decode("utf-8", "replace").strip()
        except (aiohttp.ClientError, TimeoutError, OSError):
            response.close()
            return ""
        response.release()
        return text


def _split_userinfo(url: str) -> tuple[str, str | None]:
    """``scheme://user:pw@host/...`` → (``scheme://host/...``, a basic ``Authorization`` value)."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url, None
    user, password = unquote(parts.username or ""), unquote(parts.password or "")
    token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
    netloc = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=netloc)).rstrip("/"), f"Basic {token}"


async def _send_traced(
    session: aiohttp.ClientSession,
    method: str,
    url: str,
    body: bytes | None,
    headers: dict[str, str],
    proxy: str | None,
    provider_id: str,
    attempt: int,
) -> aiohttp.ClientResponse:
    """One request inside an upstream span (to the response headers; the body is the caller's).

    The tracer travels in the OpenTelemetry context (set by the server's telemetry layer, see
    ``underlay.core.telemetry.runtime.TRACER_KEY``); with telemetry off, or OpenTelemetry absent, this
    is a plain send.
    """
    tracer = _otel_context.get_value(_TRACER_KEY) if _otel_context is not None else None
    if tracer is None:
        return await session.request(method, url, data=body, headers=headers, allow_redirects=False, proxy=proxy)
    parts = urlsplit(url)
    with tracer.start_as_current_span(
        f"{method} {parts.path}",
        kind=_CLIENT_KIND,
        attributes={
            "underlay.layer": "upstream",
            "underlay.provider_id": provider_id,
            "http.request.method": method,
            "server.address": parts.hostname or "",
            "server.port": parts.port or (443 if parts.scheme == "https" else 80),
            "url.path": parts.path,
            "http.request.resend_count": attempt,
        },
    ) as span:
        response = await session.request(method, url, data=body, headers=headers, allow_redirects=False, proxy=proxy)
        span.set_attribute("http.response.status_code", response.status)
        return response


_TRACER_KEY = "underlay.tracer"
try:
    from opentelemetry import context as _otel_context
    from opentelemetry.trace import SpanKind as _SpanKind

    _CLIENT_KIND: Any = _SpanKind.CLIENT
except ImportError:  # telemetry is optional for providers
    _otel_context = None  # type: ignore[assignment]
    _CLIENT_KIND = None


class SSEStream(Generic[T]):
    """An async iterator of typed chunks read from an upstream's server-sent events.

    It owns the HTTP response: it releases it at ``[DONE]`` or the end of the body, closes it on any
    error or on an early ``aclose()`` (callers that stop early must call it). A failure here is raised
    as a typed error and never retried, because the caller may already have forwarded earlier chunks.
    """

    def __init__(
        self,
        provider: OpenAICompatInferenceProvider,
        response: aiohttp.ClientResponse,
        chunk_model: type[T],
        path: str,
        credential: Credential,
    ) -> None:
        self._provider = provider
        self._response = response
        self._chunk_model = chunk_model
        self._path = path
        self._url = provider._url(path)
        self._credential = credential
        self._lines = LineReader(response.content)
        self._closed = False
        self._finished = False  # saw a finish_reason or usage, so a missing [DONE] is tolerable

    def __aiter__(self) -> SSEStream[T]:
        return self

    async def __anext__(self) -> T:
        if self._closed:
            raise StopAsyncIteration
        pid = self._provider.provider_id
        try:
            data = await self._next_data()
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            await self.aclose()
            if classify(exc, 0.0, self._provider.config.timeout.read) is Failure.READ_TIMEOUT:
                raise UpstreamTimeoutError(
                    pid, f"{self._url} stalled mid-stream (nothing for {self._provider.config.timeout.read}s)"
                ) from None
            raise UpstreamError(pid, f"{self._url} broke off the stream: {describe(exc)}") from None
        if data is None:
            await self.aclose()
            if self._finished:
                raise StopAsyncIteration
            raise UpstreamError(pid, f"{self._url} ended the stream before the response was complete")
        if data == "[DONE]":
            await self._drain()
            await self.aclose()
            raise StopAsyncIteration
        if '"error"' not in data:
            # The common case, validated straight from the text; anything unusual takes the slow road.
            try:
                chunk = self._chunk_model.model_validate_json(data)
            except ValidationError:
                pass
            else:
                if not self._finished and (
                    getattr(chunk, "usage", None) is not None
                    or any(getattr(c, "finish_reason", None) for c in getattr(chunk, "choices", None) or ())
                ):
                    self._finished = True
                return chunk
        return await self._slow_chunk(data)

    async def _slow_chunk(self, data: str) -> T:
        """Parse an event as a dict first: error events, and chunks that need repairs or fail validation."""
        pid = self._provider.provider_id
        try:
            event = json.loads(data)
        except ValueError:
            await self.aclose()
            snippet = self._provider._scrub(data, self._credential)
            raise UpstreamError(
                pid, f"{self._url} sent a malformed stream event: {snippet}", code="malformed_upstream_response"
            ) from None
        if isinstance(event, dict) and "error" in event and "choices" not in event:
            await self.aclose()
            message = self._provider._scrub(body_message(event) or data, self._credential)
            raise UpstreamError(pid, f"the upstream failed mid-stream: {message}")
        try:
            chunk = self._provider._parse(self._chunk_model, event, self._path)
        except UnderlayError:
            await self.aclose()
            raise
        if isinstance(event, dict) and (
            event.get("usage") or any(c.get("finish_reason") for c in event.get("choices") or [] if isinstance(c, dict))
        ):
            self._finished = True
        return chunk

    async def _next_data(self) -> str | None:
        """The data of the next SSE event (multi-line data joined), or None at the end of the body."""
        lines: list[str] = []
        event_name = ""
        readline = self._lines.readline
        while True:
            line = await readline()
            if line is None:
                if not lines:
                    return None
                break
            if not line:
                if lines:
                    break
                continue
            if line[0] == ":":
                continue  # comment / keep-alive ping
            field, _, value = line.partition(":")
            if value and value[0] == " ":
                value = value[1:]
            if field == "data":
                lines.append(value)
            elif field == "event":
                event_name = value
        data = lines[0] if len(lines) == 1 else "\n".join(lines)
        if event_name == "error" and not data.lstrip().startswith("{"):
            return json.dumps({"error": {"message": data}})
        return data

    async def _drain(self) -> None:
        """Read what follows ``[DONE]`` (normally just the end of the body) so the keep-alive
        connection goes back to the pool instead of being dropped; give up quickly if it doesn't end."""
        try:
            async with asyncio.timeout(0.5):
                await self._lines.drain()
        except (TimeoutError, aiohttp.ClientError, OSError):
            pass

    async def aclose(self) -> None:
        """Release the upstream connection (back to the pool only if the body was read to its end)."""
        if self._closed:
            return
        self._closed = True
        if self._response.content.at_eof():
            self._response.release()
        else:
            self._response.close()


# ---------------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------------


def guess_model_type(model_id: str) -> str:
    """Listings rarely say what a model does; an "embed" in the name is the one reliable hint."""
    return "embedding" if "embed" in model_id.lower() else "llm"


def retry_after_seconds(headers: Mapping[str, str]) -> float | None:
    """Seconds from ``retry-after-ms`` or ``Retry-After`` (delta seconds or an HTTP date).

    ``headers`` must look names up case-insensitively (aiohttp's and httpx's headers both do).
    """
    millis = headers.get("retry-after-ms")
    if millis:
        try:
            return max(0.0, float(millis) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def body_message(body: Any) -> str:
    """The human message inside an error body, in the shapes OpenAI, FastAPI and others use."""
    if isinstance(body, str):
        try:
            body = json.loads(body)
        except ValueError:
            return ""
    if not isinstance(body, dict):
        return ""
    error = body.get("error")
    if isinstance(error, dict) and error.get("message"):
        return str(error["message"])
    if isinstance(error, str) and error:
        return error
    detail = body.get("detail")
    if isinstance(detail, str) and detail:
        return detail
    if isinstance(detail, list) and detail:
        parts = []
        for item in detail:
            if isinstance(item, dict):
                loc = ".".join(str(p) for p in item.get("loc", []) if p != "body")
                parts.append(f"{loc}: {item.get('msg', '')}" if loc else str(item.get("msg", "")))
        return "; ".join(parts)
    if isinstance(body.get("message"), str):
        return body["message"]
    return ""


def upstream_message(text: str, reason: str | None) -> tuple[str, str | None]:
    """The upstream's error message and offending parameter, falling back to the raw text."""
    param = None
    try:
        body = json.loads(text) if text else None
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        candidate = body["error"].get("param")
        param = candidate if isinstance(candidate, str) else None
    message = body_message(body) if body is not None else ""
    return (message or text or reason or "no message"), param


def normalize_finish_reasons(model: type[BaseModel], body: Any) -> Any:
    """Map finish reasons outside OpenAI's set (``abort``, ``error``, ``eos``…) to ``stop``.

    Servers invent their own; refusing the whole response for that would fail a finished generation.
    """
    if not isinstance(body, dict) or not isinstance(body.get("choices"), list):
        return body
    allowed = _COMPLETION_FINISH_REASONS if model is Completion else _FINISH_REASONS
    for choice in body["choices"]:
        if isinstance(choice, dict):
            reason = choice.get("finish_reason")
            if reason is not None and reason not in allowed:
                choice["finish_reason"] = "stop"
    return body


def floats_to_base64(vector: list[float]) -> str:
    """Encode a vector the way OpenAI's ``encoding_format=base64`` does: little-endian float32."""
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")
