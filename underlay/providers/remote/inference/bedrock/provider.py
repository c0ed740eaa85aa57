"""``remote::bedrock``: Amazon Bedrock's Converse / ConverseStream for chat, InvokeModel for embeddings.

The client is aiobotocore's ``bedrock-runtime`` (the same AWS credential chain and SigV4 signing as the
S3 files provider and the Bedrock guardrail shield), so calls never block the event loop, and
ConverseStream's ``application/vnd.amazon.eventstream`` frames are decoded, CRCs checked, by botocore's
own event-stream parser. The request and answer mapping lives in
:mod:`underlay.providers.remote.inference.bedrock.converse`.

Embeddings go through InvokeModel with each family's own body: Titan text embeddings take one
``inputText`` per call (calls run concurrently, bounded), Cohere's take up to 96 ``texts`` per call.

Failures name the provider and never quote a credential: throttling is 429 with ``Retry-After``,
refused credentials 502, a ``ValidationException`` 400, a model not ready or the service unavailable
503, a model timeout 504; a stream that breaks off after its first chunk raises from the iterator, which
the server turns into the front door's error event.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Iterator
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from underlay.api.errors import (
    ConfigError,
    InvalidRequestError,
    NotFoundError,
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
    Completion,
    CompletionRequest,
    DiscoveredModel,
    Embedding,
    EmbeddingsRequest,
    EmbeddingsResponse,
    EmbeddingsUsage,
)
from underlay.providers.remote.inference.bedrock.converse import (
    StreamTranslator,
    completion_from_converse,
    converse_request,
)
from underlay.providers.utils.aws import client_credentials, client_region
from underlay.providers.utils.openai_compat import floats_to_base64, guess_model_type

log = logging.getLogger("underlay.inference.bedrock")

_THROTTLED = {"throttlingexception", "toomanyrequestsexception", "servicequotaexceededexception"}
_AUTH = {
    "accessdeniedexception",
    "unrecognizedclientexception",
    "invalidsignatureexception",
    "signaturedoesnotmatch",
    "expiredtokenexception",
    "incompletesignature",
    "missingauthenticationtoken",
    "invalidclienttokenid",
}
_UNAVAILABLE = {"modelnotreadyexception", "serviceunavailableexception"}
_TIMEOUT = {"modeltimeoutexception"}
_COHERE_BATCH = 96
_MAX_INPUTS = 2048  # OpenAI's own limit per embeddings request
_MAX_QUOTED = 500


class BedrockModel(BaseModel):
    """One Bedrock model (or inference profile) this provider serves."""

    model_config = ConfigDict(extra="forbid")

    model_id: str = Field(
        min_length=1, max_length=256, description="e.g. anthropic.claude-3-5-haiku-20241022-v1:0 or an ARN."
    )
    model_type: Literal["llm", "embedding"] | None = Field(
        default=None, description="Unset: 'embedding' when the id contains 'embed', else 'llm'."
    )


class Config(BaseModel):
    """Where Bedrock is, which credentials sign the calls, and which models to offer."""

    model_config = ConfigDict(extra="forbid")

    region: str | None = Field(default=None, description="Unset: AWS_REGION / AWS_DEFAULT_REGION / us-east-1.")
    endpoint_url: str | None = Field(default=None, description="Override the bedrock-runtime endpoint (VPC, tests).")
    access_key_id: SecretStr | None = Field(default=None, description="Unset: the AWS credential chain.")
    secret_access_key: SecretStr | None = Field(default=None, description="Unset: the AWS credential chain.")
    session_token: SecretStr | None = None
    models: list[BedrockModel] = Field(default_factory=list, description="The models to list and serve.")
    discover_models: bool = Field(
        default=False,
        description="Also list the region's on-demand text and embedding models (Bedrock's ListFoundationModels).",
    )
    control_endpoint_url: str | None = Field(
        default=None, description="Override the bedrock (control plane) endpoint used by discover_models."
    )
    connect_timeout: float = Field(default=5.0, gt=0)
    read_timeout: float = Field(default=120.0, gt=0, description="Each wait for data, the gap between chunks too.")
    max_attempts: int = Field(default=3, ge=1, le=10, description="Total attempts per call (botocore's retries).")
    throttle_retry_after: int = Field(
        default=5, ge=1, le=3600, description="Retry-After (seconds) sent with a 429 when Bedrock names none."
    )
    embedding_concurrency: int = Field(default=8, ge=1, le=64, description="Titan calls in flight per request.")
    cohere_input_type: Literal["search_document", "search_query", "classification", "clustering"] = Field(
        default="search_document", description="Cohere's input_type for embeddings."
    )

    @field_validator("endpoint_url", "control_endpoint_url", "region", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("models", mode="before")
    @classmethod
    def _from_string(cls, value: Any) -> Any:
        """``"id-1,id-2"`` (as an environment variable gives it) → one entry per id."""
        if isinstance(value, str):
            return [{"model_id": item.strip()} for item in value.split(",") if item.strip()]
        return value


class BedrockInferenceProvider:
    """Chat completions and embeddings on Amazon Bedrock."""

    def __init__(self, provider_id: str, config: Config) -> None:
        self.provider_id = provider_id
        self.config = config
        self._exit = contextlib.AsyncExitStack()
        self._client: Any = None
        self._region = "us-east-1"
        self._secrets = [s.get_secret_value() for s in (config.secret_access_key, config.session_token) if s]

    # -- lifecycle ---------------------------------------------------------------------------------

    async def initialize(self) -> None:
        """Create the bedrock-runtime client; nothing is sent, so an absent service does not block startup."""
        if self._client is None:
            self._client = await self._exit.enter_async_context(self._create_client("bedrock-runtime"))

    def _create_client(self, service: str, endpoint_url: str | None = None) -> Any:
        try:
            from aiobotocore.config import AioConfig
            from aiobotocore.session import get_session
        except ImportError:  # pragma: no cover - depends on the install
            raise ConfigError(
                f"providers.inference[{self.provider_id}]: remote::bedrock needs aiobotocore; "
                "pip install 'aiobotocore==3.10.0' (or the s3 extra)"
            ) from None
        c = self.config
        self._region = client_region(c)
        client_config = AioConfig(
            connect_timeout=c.connect_timeout,
            read_timeout=c.read_timeout,
            retries={"total_max_attempts": c.max_attempts, "mode": "standard"},
        )
        return get_session().create_client(
            service,
            endpoint_url=endpoint_url if service == "bedrock" else c.endpoint_url,
            region_name=self._region,
            config=client_config,
            **client_credentials(c),
        )

    async def shutdown(self) -> None:
        self._client = None
        await self._exit.aclose()

    async def health(self) -> dict[str, Any]:
        return {"status": "OK", "region": self._region}

    def _runtime(self) -> Any:
        if self._client is None:
            raise ServiceUnavailableError(self.provider_id, "the Bedrock client is not initialized")
        return self._client

    # -- models ------------------------------------------------------------------------------------

    async def list_provider_models(self) -> list[DiscoveredModel]:
        """The configured models, plus (with ``discover_models``) the region's on-demand ones."""
        found = {
            m.model_id: DiscoveredModel(
                provider_resource_id=m.model_id, model_type=m.model_type or guess_model_type(m.model_id)
            )
            for m in self.config.models
        }
        if self.config.discover_models:
            for model in await self._foundation_models():
                found.setdefault(model.provider_resource_id, model)
        return list(found.values())

    async def _foundation_models(self) -> list[DiscoveredModel]:
        async with self._create_client("bedrock", self.config.control_endpoint_url) as control:
            with self._errors("listing foundation models"):
                answer = await control.list_foundation_models(byInferenceType="ON_DEMAND")
        models: list[DiscoveredModel] = []
        for summary in answer.get("modelSummaries") or []:
            outputs = summary.get("outputModalities") or []
            model_id = summary.get("modelId")
            if not isinstance(model_id, str):
                continue
            if "EMBEDDING" in outputs:
                models.append(DiscoveredModel(provider_resource_id=model_id, model_type="embedding"))
            elif "TEXT" in outputs:
                metadata = {"owned_by": summary["providerName"]} if summary.get("providerName") else {}
                models.append(DiscoveredModel(provider_resource_id=model_id, model_type="llm", metadata=metadata))
        return models

    # -- chat --------------------------------------------------------------------------------------

    async def openai_chat_completion(
        self, params: ChatCompletionRequest
    ) -> ChatCompletion | AsyncIterator[ChatCompletionChunk]:
        """Converse, or ConverseStream with ``stream``: the stream's opening is awaited here, so a refusal
        is an ordinary HTTP error and only failures after the first event come from the iterator."""
        request = converse_request(params)
        client = self._runtime()
        where = f"model '{params.model}'"
        if not params.stream:
            with self._errors(where, model=params.model):
                answer = await client.converse(modelId=params.model, **request)
            return completion_from_converse(answer, params.model)
        with self._errors(where, model=params.model):
            answer = await client.converse_stream(modelId=params.model, **request)
        include_usage = bool(params.stream_options and params.stream_options.include_usage)
        return self._chunks(answer["stream"], StreamTranslator(params.model, include_usage), where)

    async def _chunks(
        self, stream: Any, translator: StreamTranslator, where: str
    ) -> AsyncIterator[ChatCompletionChunk]:
        try:
            with self._errors(where, streaming=True):
                async for event in stream:
                    chunk = translator.translate(event)
                    if chunk is not None:
                        yield chunk
            if not translator.finished:
                raise UpstreamError(
                    self.provider_id,
                    f"Bedrock ended the stream for {where} before the message was complete",
                    code="upstream_stream_cut",
                )
        finally:
            close = getattr(stream, "close", None)
            if close is not None:
                with contextlib.suppress(Exception):
                    result = close()
                    if asyncio.iscoroutine(result):
                        await result

    async def openai_completion(self, params: CompletionRequest) -> Completion | AsyncIterator[Completion]:
        raise InvalidRequestError(
            f"Provider '{self.provider_id}' (Bedrock) serves chat completions only; use /v1/chat/completions.",
            param="model",
        )

    # -- embeddings --------------------------------------------------------------------------------

    async def openai_embeddings(self, params: EmbeddingsRequest) -> EmbeddingsResponse:
        """Titan (one text a call) or Cohere (96 texts a call) embeddings through InvokeModel."""
        texts = _texts(params.input)
        model = params.model
        family = _embedding_family(model)
        if family == "titan":
            gate = asyncio.Semaphore(self.config.embedding_concurrency)

            async def one(text: str) -> tuple[list[list[float]], int]:
                async with gate:
                    return await self._titan(model, text, params.dimensions)

            results = await asyncio.gather(*(one(t) for t in texts))
        else:
            batches = [texts[i : i + _COHERE_BATCH] for i in range(0, len(texts), _COHERE_BATCH)]
            results = await asyncio.gather(*(self._cohere(model, batch, params.dimensions) for batch in batches))
        vectors = [vector for batch_vectors, _ in results for vector in batch_vectors]
        tokens = sum(count for _, count in results)
        if len(vectors) != len(texts):
            raise UpstreamError(
                self.provider_id,
                f"Bedrock returned {len(vectors)} embeddings for {len(texts)} inputs from model '{model}'",
                code="malformed_upstream_response",
            )
        data = [
            Embedding(index=i, embedding=floats_to_base64(v) if params.encoding_format == "base64" else v)
            for i, v in enumerate(vectors)
        ]
        return EmbeddingsResponse(
            data=data, model=model, usage=EmbeddingsUsage(prompt_tokens=tokens, total_tokens=tokens)
        )

    async def _titan(self, model: str, text: str, dimensions: int | None) -> tuple[list[list[float]], int]:
        body: dict[str, Any] = {"inputText": text}
        if dimensions is not None:
            if "v2" not in model:
                raise InvalidRequestError(
                    f"'{model}' has a fixed size; dimensions needs amazon.titan-embed-text-v2:0.", param="dimensions"
                )
            if dimensions not in (256, 512, 1024):
                raise InvalidRequestError("Titan v2 embeddings have 256, 512 or 1024 dimensions.", param="dimensions")
            body["dimensions"] = dimensions
        answer, header_tokens = await self._invoke(model, body)
        vector = answer.get("embedding")
        if not _is_vector(vector):
            raise self._malformed(model, "no 'embedding' list of numbers")
        tokens = answer.get("inputTextTokenCount")
        return [vector], int(tokens) if isinstance(tokens, int) else header_tokens

    async def _cohere(self, model: str, texts: list[str], dimensions: int | None) -> tuple[list[list[float]], int]:
        body: dict[str, Any] = {
            "texts": texts,
            "input_type": self.config.cohere_input_type,
            "embedding_types": ["float"],
        }
        if dimensions is not None:
            if "v4" not in model:
                raise InvalidRequestError(
                    f"'{model}' has a fixed size; dimensions needs cohere.embed-v4:0.", param="dimensions"
                )
            body["output_dimension"] = dimensions
        answer, header_tokens = await self._invoke(model, body)
        embeddings = answer.get("embeddings")
        if isinstance(embeddings, dict):
            embeddings = embeddings.get("float")
        if not isinstance(embeddings, list) or not all(_is_vector(v) for v in embeddings):
            raise self._malformed(model, "no 'embeddings' list of vectors")
        return embeddings, header_tokens

    async def _invoke(self, model: str, body: dict[str, Any]) -> tuple[dict[str, Any], int]:
        """One InvokeModel call: the JSON answer and the input token count Bedrock reports in a header."""
        with self._errors(f"model '{model}'", model=model):
            response = await self._runtime().invoke_model(
                modelId=model, body=json.dumps(body).encode(), contentType="application/json", accept="application/json"
            )
            raw = await response["body"].read()
        try:
            answer = json.loads(raw)
        except ValueError:
            raise self._malformed(model, "an answer that is not JSON") from None
        if not isinstance(answer, dict):
            raise self._malformed(model, "an answer that is not a JSON object")
        headers = (response.get("ResponseMetadata") or {}).get("HTTPHeaders") or {}
        try:
            tokens = int(headers.get("x-amzn-bedrock-input-token-count", 0))
        except ValueError:
            tokens = 0
        return answer, tokens

    def _malformed(self, model: str, what: str) -> UpstreamError:
        return UpstreamError(
            self.provider_id, f"Bedrock sent {what} for model '{model}'", code="malformed_upstream_response"
        )

    # -- errors ------------------------------------------------------------------------------------

    def _scrub(self, text: str) -> str:
        for secret in self._secrets:
            if len(secret) >= 4:
                text = text.replace(secret, "***")
        if self.config.access_key_id:
            text = text.replace(self.config.access_key_id.get_secret_value(), "***")
        return text if len(text) <= _MAX_QUOTED else text[:_MAX_QUOTED] + "…"

    @contextlib.contextmanager
    def _errors(self, where: str, *, model: str | None = None, streaming: bool = False) -> Iterator[None]:
        """botocore's failures → Underlay's typed errors, naming this provider and never a credential."""
        from botocore.exceptions import (
            BotoCoreError,
            ClientError,
            ConnectTimeoutError,
            EndpointConnectionError,
            NoCredentialsError,
            PartialCredentialsError,
            ReadTimeoutError,
        )

        pid = self.provider_id
        try:
            yield
        except UnderlayError:
            raise
        except ClientError as exc:
            raise self._client_error(exc.response, where, model, streaming) from None
        except (ConnectTimeoutError, EndpointConnectionError) as exc:
            raise ServiceUnavailableError(
                pid, f"cannot reach Bedrock for {where}: {self._scrub(str(exc))}", code="upstream_unreachable"
            ) from None
        except ReadTimeoutError:
            raise UpstreamTimeoutError(
                pid, f"Bedrock stopped answering for {where} (nothing for {self.config.read_timeout}s)"
            ) from None
        except (NoCredentialsError, PartialCredentialsError):
            raise UpstreamError(
                pid,
                "no AWS credentials: set access_key_id and secret_access_key in its config, or AWS_ACCESS_KEY_ID "
                "and AWS_SECRET_ACCESS_KEY (or a profile or role) in the environment",
                code="upstream_auth_failed",
            ) from None
        except BotoCoreError as exc:
            verb = "broke off the stream" if streaming else "failed"
            raise UpstreamError(pid, f"Bedrock {verb} for {where}: {self._scrub(str(exc))}") from None
        except Exception as exc:
            # Mid-stream, a dropped connection surfaces as aiohttp's payload errors and a damaged frame as
            # botocore's event-stream parser errors (a CRC mismatch...): either way the stream is lost.
            if not streaming:
                raise
            log.warning("provider %s: stream for %s failed: %s: %s", pid, where, type(exc).__name__, exc)
            raise UpstreamError(
                pid, f"Bedrock broke off the stream for {where}: {type(exc).__name__}", code="upstream_stream_cut"
            ) from None

    def _client_error(self, response: dict[str, Any], where: str, model: str | None, streaming: bool) -> UnderlayError:
        pid = self.provider_id
        error = response.get("Error") or {}
        metadata = response.get("ResponseMetadata") or {}
        status = metadata.get("HTTPStatusCode")
        code = str(error.get("Code") or status or "error")
        message = self._scrub(str(error.get("Message") or code))
        said = f"Bedrock said {code}: {message}"
        kind = code.lower()
        if kind in _UNAVAILABLE:  # ModelNotReadyException arrives as a 429, but waiting is not throttling
            return ServiceUnavailableError(pid, f"Bedrock cannot serve {where} now; {said}")
        if kind in _TIMEOUT:
            return UpstreamTimeoutError(pid, f"Bedrock timed out on {where}; {said}")
        if kind in _THROTTLED or status == 429:
            headers = metadata.get("HTTPHeaders") or {}
            after = headers.get("retry-after")
            seconds = after if isinstance(after, str) and after.isdigit() else str(self.config.throttle_retry_after)
            return RateLimitedError(
                f"Provider '{pid}' is rate limited upstream for {where}; {said}",
                headers={"Retry-After": seconds},
                code="upstream_rate_limited",
            )
        if kind in _AUTH or status in (401, 403):
            return UpstreamError(
                pid, f"Bedrock refused the AWS credentials for {where}; {said}", code="upstream_auth_failed"
            )
        if kind == "resourcenotfoundexception" and model is not None:
            return NotFoundError("Model", model, hint=f"Provider '{pid}': {said}", param="model")
        if kind == "validationexception" or (isinstance(status, int) and 400 <= status < 500 and not streaming):
            return InvalidRequestError(f"Provider '{pid}' rejected the request for {where}; {said}")
        if status == 503:
            return ServiceUnavailableError(pid, f"Bedrock cannot serve {where} now; {said}")
        if status == 504:
            return UpstreamTimeoutError(pid, f"Bedrock timed out on {where}; {said}")
        verb = "failed mid-stream" if streaming else "failed"
        return UpstreamError(pid, f"Bedrock {verb} for {where}; {said}")


def _texts(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if not all(isinstance(v, str) for v in value):
        raise InvalidRequestError("Bedrock embeddings take text; token arrays are not supported.", param="input")
    if len(value) > _MAX_INPUTS:  # Titan costs one call per text: bound the work one request can cause
        raise InvalidRequestError(
            f"At most {_MAX_INPUTS} inputs per request (got {len(value)}); split the batch.", param="input"
        )
    return list(value)


def _embedding_family(model: str) -> Literal["titan", "cohere"]:
    name = model.lower()
    if "titan-embed" in name:
        return "titan"
    if "cohere.embed" in name:
        return "cohere"
    raise InvalidRequestError(
        f"Bedrock embeddings support Titan (amazon.titan-embed-*) and Cohere (cohere.embed-*) models, not '{model}'.",
        param="model",
    )


def _is_vector(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(x, int | float) for x in value)


async def create_provider(provider_id: str, config: Config, deps: dict[str, Any]) -> BedrockInferenceProvider:
    return BedrockInferenceProvider(provider_id, config)
