"""``remote::azure-openai``: Azure OpenAI deployments, through the shared OpenAI-compatible base.

What differs from OpenAI's own API:

- **Addresses.** Each model is a *deployment* of one resource:
  ``{azure_endpoint}/openai/deployments/{deployment}/chat/completions?api-version=...`` (the classic form), or
  with ``api_style: v1`` the newer ``{azure_endpoint}/openai/v1/chat/completions`` with the deployment as
  ``model``. ``deployments`` maps the model names clients use to deployment names (a name with no entry
  is its own deployment); only the mapped names are listed, because the data plane cannot list
  deployments.
- **Credentials.** An ``api-key`` header (config, ``AZURE_OPENAI_API_KEY``, or ``azure_openai_api_key``
  in the provider-data header), or a Microsoft Entra ID bearer token: a static one
  (``ad_token`` / ``AZURE_OPENAI_AD_TOKEN``) or one obtained by the client-credentials flow against a
  configurable token endpoint and cached until shortly before it expires.
- **Errors.** A prompt or completion stopped by Azure's content filter is a 400 naming the filtered
  categories (code ``content_filter``); a 429 always carries ``Retry-After``. Streams open with a
  chunk holding only ``prompt_filter_results`` and no choices; it is dropped.
- **Batches.** With ``native_batches`` on, a chat or embeddings batch on this provider's models goes to
  Azure's Batch API, which is OpenAI's Files and Batches wire under ``/openai`` (so the shared
  :class:`~underlay.providers.utils.openai_batches.OpenAIBatchesProvider` speaks it): each call carries
  ``api-version``, the endpoint and each line's ``url`` drop the ``/v1`` prefix, and each line's ``model``
  is a Global Batch deployment (``batch_deployments``; a name with no entry keeps the batch here when
  that map is set, else uses its ordinary deployment). An uploaded input file is ``pending`` until Azure
  has checked it; the batch is created once it is ``processed``. Batches use the provider's own credential: its
  key, a static Entra ID token, or one from the client-credentials flow, never a request's key.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import AsyncIterator
from typing import Any, Literal, TypeVar
from urllib.parse import quote

import aiohttp
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from underlay.api.errors import (
    InvalidRequestError,
    RateLimitedError,
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
from underlay.providers.utils.openai_batches import OpenAIBatchesProvider
from underlay.providers.utils.openai_compat import (
    Credential,
    OpenAICompatSettings,
    SSEStream,
    check_http_url,
    floats_to_base64,
    guess_model_type,
)
from underlay.providers.utils.upstream_http import describe

DEFAULT_API_VERSION = "2024-10-21"
DEFAULT_SCOPE = "https://cognitiveservices.azure.com/.default"
_TOKEN_MARGIN = 60.0  # renew a token this many seconds before Azure says it expires
_FILE_WAIT_SECONDS = 300.0  # how long an uploaded batch input file may stay pending before the upload is retried
_ENTRA = "entra"

T = TypeVar("T", bound=BaseModel)


class EntraClientCredentials(BaseModel):
    """A Microsoft Entra ID app registration allowed to call the resource (role Cognitive Services OpenAI User)."""

    model_config = ConfigDict(extra="forbid")

    tenant_id: str = Field(min_length=1, max_length=128)
    client_id: str = Field(min_length=1, max_length=128)
    client_secret: SecretStr
    scope: str = Field(default=DEFAULT_SCOPE, max_length=512)
    token_url: str | None = Field(
        default=None,
        description="Unset: https://login.microsoftonline.com/{tenant_id}/oauth2/v2.0/token (sovereign clouds, tests).",
    )

    def url(self) -> str:
        return self.token_url or f"https://login.microsoftonline.com/{quote(self.tenant_id)}/oauth2/v2.0/token"


class Config(OpenAICompatSettings):
    """Where the Azure OpenAI resource is, how to authenticate, and which deployments to serve."""

    azure_endpoint: str = Field(
        default_factory=lambda: os.environ.get("AZURE_OPENAI_ENDPOINT", ""),
        validate_default=True,
        description="The resource, e.g. https://my-resource.openai.azure.com (default: $AZURE_OPENAI_ENDPOINT).",
    )
    api_key: SecretStr | None = Field(default=None, description="The resource key (a secret); sent as api-key.")
    ad_token: SecretStr | None = Field(
        default=None, description="A static Entra ID bearer token (default: $AZURE_OPENAI_AD_TOKEN)."
    )
    entra: EntraClientCredentials | None = Field(
        default=None, description="Get Entra ID tokens by the client-credentials flow (used when no key is set)."
    )
    api_version: str = Field(
        default_factory=lambda: os.environ.get("AZURE_OPENAI_API_VERSION", "") or DEFAULT_API_VERSION,
        max_length=64,
        description="The api-version query parameter of the deployments form.",
    )
    api_style: Literal["deployments", "v1"] = Field(
        default="deployments", description="'deployments': /openai/deployments/{name}/...; 'v1': /openai/v1/..."
    )
    deployments: dict[str, str] = Field(
        default_factory=dict,
        description="Model name → deployment name; also 'name=deployment,other' as one string (from an env var).",
    )
    native_batches: bool = Field(
        default=False,
        description=(
            "Pass a chat or embeddings batch whose lines all name this provider's models to Azure's Batch API "
            "(Global Batch deployments, batch pricing) instead of running its lines one by one here."
        ),
    )
    batch_deployments: dict[str, str] = Field(
        default_factory=dict,
        description=(
            "Model name → Global Batch deployment for native batches (same string form as deployments). Set: "
            "a batch naming a model without an entry runs here. Empty: batches use the ordinary deployments."
        ),
    )

    @field_validator("azure_endpoint")
    @classmethod
    def _check_endpoint(cls, value: str) -> str:
        if not value:
            raise ValueError(
                "Azure OpenAI needs an endpoint: set azure_endpoint in the config or the AZURE_OPENAI_ENDPOINT "
                "environment variable (https://<resource>.openai.azure.com)"
            )
        return check_http_url(value).rstrip("/").removesuffix("/openai")

    @field_validator("deployments", "batch_deployments", mode="before")
    @classmethod
    def _from_string(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        mapping: dict[str, str] = {}
        for item in value.split(","):
            name, _, deployment = item.strip().partition("=")
            if name.strip():
                mapping[name.strip()] = deployment.strip() or name.strip()
        return mapping

    def endpoint(self) -> str:
        """``{resource}/openai`` (the deployments form) or ``{resource}/openai/v1``."""
        root = f"{self.azure_endpoint}/openai"
        return f"{root}/v1" if self.api_style == "v1" else root

    def configured_api_key(self) -> str | None:
        return self.api_key.get_secret_value() if self.api_key else None


class AzureOpenAIInferenceProvider(OpenAIBatchesProvider):
    api_key_env = "AZURE_OPENAI_API_KEY"
    provider_data_key = "azure_openai_api_key"
    requires_api_key = True
    native_endpoints = ("/v1/chat/completions", "/v1/embeddings")
    config: Config

    def __init__(self, provider_id: str, config: Config) -> None:
        super().__init__(provider_id, config)
        self._token: str | None = None
        self._token_expires = 0.0
        self._token_lock = asyncio.Lock()

    # -- addresses ---------------------------------------------------------------------------------

    def deployment(self, model: str) -> str:
        return self.config.deployments.get(model, model)

    def _operation_url(self, operation: str, model: str) -> str:
        if self.config.api_style == "v1":
            return f"{self.base_url}/{operation}"
        deployment = quote(self.deployment(model), safe="")
        version = quote(self.config.api_version, safe="")
        return f"{self.base_url}/deployments/{deployment}/{operation}?api-version={version}"

    # -- batches (OpenAI's wire under /openai; only addresses and names differ) ---------------------

    def native_batch_accepts(self, endpoint: str, requests: list[tuple[str, dict[str, Any]]]) -> bool:
        """Every model has a batch deployment (when they are mapped), and it is one and the same: Azure
        wants one Global Batch deployment on every line of a file."""
        models = {str(body.get("model")) for _, body in requests}
        if not super().native_batch_accepts(endpoint, requests):
            return False
        if self.config.batch_deployments and not models <= self.config.batch_deployments.keys():
            return False
        return len({self.batch_deployment(model) for model in models}) == 1

    def batch_deployment(self, model: str) -> str:
        return self.config.batch_deployments.get(model) or self.deployment(model)

    def _batch_path(self, path: str) -> str:
        if self.config.api_style == "v1":
            return path
        return f"{path}{'&' if '?' in path else '?'}api-version={quote(self.config.api_version, safe='')}"

    def _native_endpoint(self, endpoint: str) -> str:
        return endpoint.removeprefix("/v1")  # Azure's batch endpoints are /chat/completions, /embeddings

    def _native_content(self, content: bytes) -> bytes:
        out = bytearray()
        for raw in content.splitlines():
            if not raw.strip():
                continue
            item = json.loads(raw)
            item["url"] = self._native_endpoint(str(item.get("url", "")))
            body = item.get("body")
            if isinstance(body, dict) and isinstance(body.get("model"), str):
                body["model"] = self.batch_deployment(body["model"])
            out += json.dumps(item, separators=(",", ":")).encode() + b"\n"
        return bytes(out)

    def _has_batch_credential(self) -> bool:
        return self._own_credential().value is not None or self.config.entra is not None

    async def upload_native_batch_input(self, filename: str, content: bytes) -> str:
        """Upload, then wait until Azure has checked the file (``pending`` → ``processed``): a batch can
        only be created over a processed file."""
        file_id = await super().upload_native_batch_input(filename, content)
        path, delay = f"files/{file_id}", 0.25
        deadline = time.monotonic() + _FILE_WAIT_SECONDS
        while True:
            body = await self._batch_call("GET", path)
            status = body.get("status") if isinstance(body, dict) else None
            if status in ("processed", None):  # None: no status reported, nothing to wait for
                return file_id
            if status in ("error", "failed", "deleted"):
                details = str(body.get("status_details") or "no details")[:300]
                raise InvalidRequestError(
                    f"Provider '{self.provider_id}': Azure refused the batch input file {file_id} ({status}): "
                    f"{details}",
                    code="invalid_batch_input",
                )
            if time.monotonic() >= deadline:
                raise ServiceUnavailableError(
                    self.provider_id,
                    f"Azure was still processing the batch input file {file_id} after {_FILE_WAIT_SECONDS:.0f}s",
                    code="upstream_file_pending",
                )
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    def _payload(self, params: BaseModel) -> dict[str, Any]:
        payload = params.model_dump(mode="json", exclude_none=True, by_alias=True)
        payload["model"] = self.deployment(str(payload["model"]))
        return payload

    # -- models ------------------------------------------------------------------------------------

    async def list_provider_models(self) -> list[DiscoveredModel]:
        """The configured names: Azure's data plane lists base models, not this resource's deployments."""
        return [
            DiscoveredModel(
                provider_resource_id=name,
                model_type="embedding" if "embed" in f"{name} {deployment}".lower() else guess_model_type(name),
                metadata={"deployment": deployment},
            )
            for name, deployment in self.config.deployments.items()
            if self.is_model_allowed(name)
        ]

    async def health(self) -> dict[str, Any]:
        """Whether the resource answers its model listing with these credentials (one attempt)."""
        url = f"{self.base_url}/models"
        if self.config.api_style == "deployments":
            url += f"?api-version={quote(self.config.api_version, safe='')}"
        try:
            await self._request_json("GET", url, retries=0)
        except UnderlayError as exc:
            return {"status": "error", "message": exc.message}
        return {"status": "ok"}

    # -- inference ---------------------------------------------------------------------------------

    async def openai_chat_completion(
        self, params: ChatCompletionRequest
    ) -> ChatCompletion | AsyncIterator[ChatCompletionChunk]:
        self._check_model(params.model)
        url = self._operation_url("chat/completions", params.model)
        payload = self._payload(params)
        if params.stream:
            return await self._stream(url, payload, params.model, ChatCompletionChunk)
        completion = await self._request_model(ChatCompletion, url, payload, params.model)
        completion.model = params.model
        return completion

    async def openai_completion(self, params: CompletionRequest) -> Completion | AsyncIterator[Completion]:
        self._check_model(params.model)
        url = self._operation_url("completions", params.model)
        payload = self._payload(params)
        if params.stream:
            return await self._stream(url, payload, params.model, Completion)
        return await self._request_model(Completion, url, payload, params.model)

    async def openai_embeddings(self, params: EmbeddingsRequest) -> EmbeddingsResponse:
        self._check_model(params.model)
        url = self._operation_url("embeddings", params.model)
        body = await self._request_json("POST", url, self._payload(params), model=params.model)
        response = self._parse(EmbeddingsResponse, body, "embeddings")
        response.model = params.model
        if params.encoding_format == "base64":
            for item in response.data:
                if isinstance(item.embedding, list):
                    item.embedding = floats_to_base64(item.embedding)
        return response

    async def _stream(self, path: str, payload: dict[str, Any], model: str, chunk_model: type[T]) -> SSEStream[T]:
        return _AzureSSEStream.adopt(await super()._stream(path, payload, model, chunk_model))

    # -- credentials -------------------------------------------------------------------------------

    def _own_credential(self) -> Credential:
        """The provider's key (config, env); else a static Entra token; else the cached client-credentials one."""
        credential = super()._own_credential()
        if credential.value is not None:
            return credential
        static = self.config.ad_token.get_secret_value() if self.config.ad_token else None
        if static:
            return Credential(static, _ENTRA, "the ad_token in the provider's config")
        if os.environ.get("AZURE_OPENAI_AD_TOKEN"):
            return Credential(
                os.environ["AZURE_OPENAI_AD_TOKEN"], _ENTRA, "the AZURE_OPENAI_AD_TOKEN environment variable"
            )
        if self.config.entra is not None and self._token:
            return Credential(self._token, _ENTRA, f"an Entra ID token for client {self.config.entra.client_id}")
        return credential

    def _where_keys_come_from(self) -> str:
        return (
            f"{super()._where_keys_come_from()}, an Entra ID token (ad_token or AZURE_OPENAI_AD_TOKEN), "
            "or entra client credentials in its config"
        )

    def _headers(self, credential: Credential, *, stream: bool) -> dict[str, str]:
        headers = super()._headers(credential, stream=stream)
        if credential.value and credential.source != _ENTRA:
            headers.pop("Authorization", None)
            headers["api-key"] = credential.value
        return headers

    def _scrub(self, text: str, credential: Credential) -> str:
        secret = self.config.entra.client_secret.get_secret_value() if self.config.entra else ""
        if len(secret) >= 4:
            text = text.replace(secret, "***")
        return super()._scrub(text, credential)

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
        """With client credentials and no key, make sure the token is fresh before the call picks it."""
        chosen = credential or self._credential()
        if self.config.entra is not None and not self._static_token() and chosen.value in (None, self._token):
            await self._ensure_token()
            chosen = self._own_credential() if credential is not None else self._credential()
        return await super()._send(
            method,
            path,
            payload,
            model=model,
            stream=stream,
            retries=retries,
            data=data,
            content_type=content_type,
            credential=chosen,
        )

    def _static_token(self) -> bool:
        return bool(self.config.ad_token or os.environ.get("AZURE_OPENAI_AD_TOKEN"))

    async def _ensure_token(self) -> None:
        """Fetch a token by the client-credentials flow unless the cached one is still good."""
        if self._token and time.monotonic() < self._token_expires:
            return
        async with self._token_lock:
            if self._token and time.monotonic() < self._token_expires:
                return
            self._token, lifetime = await self._fetch_token()
            self._token_expires = time.monotonic() + max(0.0, lifetime - _TOKEN_MARGIN)

    async def _fetch_token(self) -> tuple[str, float]:
        entra = self.config.entra
        assert entra is not None
        form = {
            "grant_type": "client_credentials",
            "client_id": entra.client_id,
            "client_secret": entra.client_secret.get_secret_value(),
            "scope": entra.scope,
        }
        none = Credential(None, "none", "")
        pid, url = self.provider_id, entra.url()
        try:
            async with self._http().post(url, data=form, allow_redirects=False, proxy=self._proxy) as response:
                text = (await response.read()).decode("utf-8", "replace")
                status = response.status
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise UpstreamError(pid, f"cannot get an Entra ID token from {url}: {describe(exc)}") from None
        try:
            body = json.loads(text)
        except ValueError:
            body = {}
        if status != 200 or not isinstance(body, dict) or not isinstance(body.get("access_token"), str):
            reason = body.get("error_description") or body.get("error") if isinstance(body, dict) else None
            said = self._scrub(str(reason or text or status), none)
            raise UpstreamError(
                pid,
                f"Entra ID refused the client credentials of client {entra.client_id} ({status}): {said}",
                code="upstream_auth_failed",
            )
        try:
            lifetime = float(body.get("expires_in", 3600))
        except (TypeError, ValueError):
            lifetime = 3600.0
        return body["access_token"], lifetime

    # -- errors ------------------------------------------------------------------------------------

    def _status_error(
        self, response: aiohttp.ClientResponse, text: str, credential: Credential, url: str, model: str | None
    ) -> UnderlayError:
        filtered = _content_filter_error(text) if response.status == 400 else None
        if filtered is not None:
            return filtered
        if response.status in (401, 403) and credential.source == _ENTRA and self.config.entra is not None:
            self._token, self._token_expires = None, 0.0  # a revoked token: fetch a fresh one next time
        error = super()._status_error(response, text, credential, url, model)
        if isinstance(error, RateLimitedError) and "Retry-After" not in error.headers:
            error.headers["Retry-After"] = "1"
        return error


def _content_filter_error(text: str) -> UnderlayError | None:
    """Azure's content-filter refusal as a 400 naming the filtered categories, else None."""
    try:
        body = json.loads(text)
    except ValueError:
        return None
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict) or error.get("code") != "content_filter":
        return None
    inner = error.get("innererror") if isinstance(error.get("innererror"), dict) else {}
    results = inner.get("content_filter_result") or inner.get("content_filter_results") or {}
    categories = sorted(
        f"{name} ({item.get('severity')})" if item.get("severity") else name
        for name, item in results.items()
        if isinstance(item, dict) and (item.get("filtered") or item.get("detected") and item.get("filtered") is None)
    )
    reason = ", ".join(categories) or "unspecified category"
    message = str(error.get("message") or "")[:300]
    return InvalidRequestError(
        f"Azure OpenAI's content filter blocked the request: {reason}. {message}".strip(),
        param=error.get("param") if isinstance(error.get("param"), str) else "messages",
        code="content_filter",
    )


class _AzureSSEStream(SSEStream[T]):
    """The shared SSE reader, minus Azure's events that carry only content-filter annotations.

    Azure opens a stream with ``{"id": "", "object": "", "choices": [], "prompt_filter_results": [...]}``,
    which is no chat completion chunk (its ``object`` is empty), so it is dropped before validation.
    """

    @classmethod
    def adopt(cls, stream: SSEStream[T]) -> _AzureSSEStream[T]:
        adopted = cls.__new__(cls)
        adopted.__dict__.update(stream.__dict__)
        return adopted

    async def _next_data(self) -> str | None:
        while True:
            data = await super()._next_data()
            if data is None or '"prompt_filter_results"' not in data or not _annotations_only(data):
                return data


def _annotations_only(data: str) -> bool:
    try:
        event = json.loads(data)
    except ValueError:
        return False
    return isinstance(event, dict) and not event.get("choices") and not event.get("usage") and not event.get("error")


async def create_provider(provider_id: str, config: Config, deps: dict[str, Any]) -> AzureOpenAIInferenceProvider:
    return AzureOpenAIInferenceProvider(provider_id, config)
