"""The ``remote::openai`` trainer: OpenAI's Files and fine-tuning endpoints, as an :class:`UpstreamTrainer`.

What it calls, as OpenAI documents them: ``POST /files`` (multipart, purpose ``fine-tune``),
``POST /fine_tuning/jobs``, ``GET /fine_tuning/jobs`` (to find a job again after a crash in the middle of
creating it), ``GET /fine_tuning/jobs/{id}``, ``POST /fine_tuning/jobs/{id}/cancel|pause|resume``,
``GET /fine_tuning/jobs/{id}/events`` and ``/checkpoints``, and ``GET /files/{id}`` plus ``/content`` for a
finished job's result files. The router (:mod:`underlay.core.routers.fine_tuning_upstream`) decides when.

What it shares with the OpenAI-compatible inference adapters is their HTTP client
(:class:`~underlay.providers.utils.openai_compat.OpenAICompatInferenceProvider`): the pooled session,
retries with backoff on connection failures and 429/5xx (never for a create, which may have succeeded),
timeouts, and each upstream failure turned into a typed error naming the provider (502, 503, 504, or the
upstream's own 4xx). Every call uses the provider's own key (config or environment): a job outlives the
request that created it. Each answer has that key replaced before it is parsed, and the texts that reach
a job (event messages, the error of a failed job) also pass through Underlay's secret redaction, since an
upstream may quote a credential back.
"""

from __future__ import annotations

import json
import re
import secrets
from typing import Any
from urllib.parse import quote, urlencode

import aiohttp
from pydantic import ValidationError

from underlay.api.errors import (
    NotFoundError,
    ServiceUnavailableError,
    UnauthenticatedError,
    UnderlayError,
    UpstreamError,
    UpstreamTimeoutError,
)
from underlay.api.fine_tuning import (
    CheckpointMetrics,
    CreateFineTuningJobRequest,
    FineTuningJobCheckpoint,
    FineTuningJobEvent,
    FineTuningJobEventList,
    TrainingPlan,
    UpstreamJob,
)
from underlay.providers.remote.post_training.openai import Config
from underlay.providers.utils.openai_compat import Credential, OpenAICompatConfig, OpenAICompatInferenceProvider
from underlay.providers.utils.upstream_http import Failure, classify, describe
from underlay.shared.redact import redact

PROVIDER_TYPE = "remote::openai"
FIND_PAGES = 5
"""Pages of ``GET /fine_tuning/jobs`` (100 each, newest first) searched for a job lost in a crash mid-create."""
MAX_RESULT_BYTES = 32 * 2**20
"""A result file (OpenAI's is a step-metrics CSV) larger than this is not copied."""
_LEVELS = {"info": "info", "warn": "warn", "warning": "warn", "error": "error"}
_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


class _Upstream(OpenAICompatInferenceProvider):
    """The HTTP client: the adapters' base, with OpenAI's key variable, and no key taken from a request."""

    api_key_env = "OPENAI_API_KEY"
    requires_api_key = True


class OpenAIFineTuningProvider:
    def __init__(self, provider_id: str, config: Config) -> None:
        self.provider_id = provider_id
        self.config = config
        self.poll_seconds = config.poll_seconds
        self._http = _Upstream(
            provider_id,
            OpenAICompatConfig(
                base_url=config.base_url,
                api_key=config.api_key,
                api_key_env=config.api_key_env,
                timeout=config.timeout,
                max_retries=config.max_retries,
                backoff=config.backoff,
                extra_headers=config.extra_headers,
            ),
        )

    # -- lifecycle -----------------------------------------------------------------------------------

    async def initialize(self) -> None:
        await self._http.initialize()  # no request: an absent upstream does not stop the server starting

    async def shutdown(self) -> None:
        await self._http.shutdown()

    async def health(self) -> dict[str, Any]:
        if not self._has_key():
            return {"status": "error", "message": self._missing_key().message}
        try:
            await self._call("GET", "fine_tuning/jobs?limit=1", retries=0)
        except UnderlayError as exc:
            return {"status": "error", "message": exc.message}
        return {"status": "ok"}

    # -- what the router asks before a job exists ---------------------------------------------------

    def base_models(self) -> list[str]:
        return list(self.config.models)

    def methods(self) -> list[str]:
        return list(self.config.methods)

    def serving_provider(self) -> str | None:
        return self.config.inference_provider_id

    async def check(self, plan: TrainingPlan) -> None:
        if not self._has_key():
            raise self._missing_key()

    # -- files and jobs ------------------------------------------------------------------------------

    async def upload_upstream_file(self, filename: str, content: bytes) -> str:
        boundary = f"underlay-{secrets.token_hex(16)}"
        safe_name = _SAFE_NAME.sub("_", filename) or "training.jsonl"
        body = b"".join(
            [
                f'--{boundary}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nfine-tune\r\n'.encode(),
                f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{safe_name}"\r\n'.encode(),
                b"Content-Type: application/jsonl\r\n\r\n",
                content,
                f"\r\n--{boundary}--\r\n".encode(),
            ]
        )
        uploaded = await self._call(
            "POST", "files", data=body, content_type=f"multipart/form-data; boundary={boundary}"
        )
        file_id = uploaded.get("id") if isinstance(uploaded, dict) else None
        if not isinstance(file_id, str) or not file_id:
            raise self._malformed("files", "no file id")
        return file_id

    async def create_upstream_job(self, request: CreateFineTuningJobRequest) -> UpstreamJob:
        payload = request.model_dump(mode="json", exclude_none=True)
        # No retries: a create that timed out may have succeeded; the router looks the job up before another.
        return self._job(await self._call("POST", "fine_tuning/jobs", payload, retries=0), "fine_tuning/jobs")

    async def find_upstream_job(self, training_file: str) -> UpstreamJob | None:
        after: str | None = None
        for _ in range(FIND_PAGES):
            query = {"limit": 100, **({"after": after} if after else {})}
            page = await self._call("GET", f"fine_tuning/jobs?{urlencode(query)}")
            data = page.get("data") if isinstance(page, dict) else None
            if not isinstance(data, list):
                raise self._malformed("fine_tuning/jobs", "expected {'data': [...]}")
            for item in data:
                if isinstance(item, dict) and item.get("training_file") == training_file:
                    return self._job(item, "fine_tuning/jobs")
            if not page.get("has_more") or not data or not isinstance(data[-1], dict):
                return None
            after = str(data[-1].get("id") or "")
            if not after:
                return None
        return None

    async def retrieve_upstream_job(self, upstream_id: str) -> UpstreamJob:
        path = self._job_path(upstream_id)
        return self._job(await self._call("GET", path, job=upstream_id), path)

    async def cancel_upstream_job(self, upstream_id: str) -> UpstreamJob:
        return await self._action(upstream_id, "cancel")

    async def pause_upstream_job(self, upstream_id: str) -> UpstreamJob:
        return await self._action(upstream_id, "pause")

    async def resume_upstream_job(self, upstream_id: str) -> UpstreamJob:
        return await self._action(upstream_id, "resume")

    async def list_upstream_events(self, upstream_id: str, after: str | None, limit: int) -> FineTuningJobEventList:
        query: dict[str, Any] = {"limit": limit, **({"after": after} if after else {})}
        path = f"{self._job_path(upstream_id)}/events"
        page = await self._call("GET", f"{path}?{urlencode(query)}", job=upstream_id)
        data = page.get("data") if isinstance(page, dict) else None
        if not isinstance(data, list):
            raise self._malformed(path, "expected {'data': [...]}")
        events = [self._event(item, path) for item in data]
        return FineTuningJobEventList(data=events, has_more=bool(page.get("has_more")))

    async def list_upstream_checkpoints(self, upstream_id: str) -> list[FineTuningJobCheckpoint]:
        path = f"{self._job_path(upstream_id)}/checkpoints"
        page = await self._call("GET", f"{path}?limit=100", job=upstream_id)
        data = page.get("data") if isinstance(page, dict) else None
        if not isinstance(data, list):
            raise self._malformed(path, "expected {'data': [...]}")
        return [self._checkpoint(item, path) for item in data]

    async def read_upstream_file(self, file_id: str) -> tuple[str, bytes]:
        path = f"files/{quote(file_id, safe='')}"
        meta = await self._call("GET", path)
        name = meta.get("filename") if isinstance(meta, dict) else None
        filename = _SAFE_NAME.sub("_", name) if isinstance(name, str) and name else f"{file_id}.bin"
        credential = self._http._own_credential()
        try:
            response, _ = await self._http._send(
                "GET", f"{path}/content", None, model=None, stream=False, credential=credential
            )
        except (NotFoundError, UnauthenticatedError) as exc:
            raise self._mapped(exc, None) from None
        url = self._http._url(f"{path}/content")
        content = b""
        try:
            async for chunk in response.content.iter_chunked(65536):
                content += chunk
                if len(content) > MAX_RESULT_BYTES:
                    break
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            response.close()
            if classify(exc, 0.0, self.config.timeout.read) is Failure.READ_TIMEOUT:
                raise UpstreamTimeoutError(self.provider_id, f"{url} stalled") from None
            raise UpstreamError(self.provider_id, f"{url} broke off the file: {describe(exc)}") from None
        response.close()
        if len(content) > MAX_RESULT_BYTES:
            raise UpstreamError(
                self.provider_id, f"result file {file_id} is over {MAX_RESULT_BYTES} bytes", code="result_too_large"
            )
        return filename, content

    # -- helpers -------------------------------------------------------------------------------------

    @staticmethod
    def _job_path(upstream_id: str) -> str:
        return f"fine_tuning/jobs/{quote(upstream_id, safe='')}"

    async def _action(self, upstream_id: str, action: str) -> UpstreamJob:
        path = f"{self._job_path(upstream_id)}/{action}"
        return self._job(await self._call("POST", path, job=upstream_id), path)

    def _has_key(self) -> bool:
        return self._http._url_auth is not None or self._http._own_credential().value is not None

    def _missing_key(self) -> ServiceUnavailableError:
        return ServiceUnavailableError(
            self.provider_id,
            f"{PROVIDER_TYPE} needs an API key: set api_key in the provider's config or the "
            f"{self.config.api_key_env} environment variable",
            code="missing_provider_api_key",
        )

    def _mapped(self, exc: UnderlayError, job: str | None) -> UnderlayError:
        """An upstream 404 or credential refusal as the provider's failure (502/503), not the client's."""
        if isinstance(exc, UnauthenticatedError):
            return self._missing_key()
        if job is not None:
            return UpstreamError(
                self.provider_id,
                f"the upstream has no fine-tuning job {job} ({exc.message})",
                code="upstream_job_missing",
            )
        return UpstreamError(self.provider_id, exc.message, code="upstream_not_found")

    async def _call(
        self,
        method: str,
        path: str,
        payload: dict[str, Any] | None = None,
        *,
        data: bytes | None = None,
        content_type: str | None = None,
        retries: int | None = None,
        job: str | None = None,
    ) -> Any:
        """One JSON call with the provider's own key; the answer parsed with that key replaced."""
        credential = self._http._own_credential()
        try:
            response, credential = await self._http._send(
                method,
                path,
                payload,
                model=None,
                stream=False,
                retries=retries,
                data=data,
                content_type=content_type,
                credential=credential,
            )
        except (NotFoundError, UnauthenticatedError) as exc:
            raise self._mapped(exc, job) from None
        url = self._http._url(path)
        try:
            raw = await response.read()
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            response.close()
            if classify(exc, 0.0, self.config.timeout.read) is Failure.READ_TIMEOUT:
                raise UpstreamTimeoutError(self.provider_id, f"{url} stopped sending its answer") from None
            raise UpstreamError(self.provider_id, f"{url} broke off its answer: {describe(exc)}") from None
        response.release()
        text = _without_key(raw.decode("utf-8", "replace"), credential)
        try:
            return json.loads(text)
        except ValueError:
            snippet = redact(text.strip()[:300]) or "an empty body"
            raise self._malformed(path, f"not JSON: {snippet}") from None

    def _malformed(self, path: str, what: str) -> UpstreamError:
        return UpstreamError(
            self.provider_id,
            f"malformed answer from {self._http._url(path)}: {what}",
            code="malformed_upstream_response",
        )

    def _job(self, body: Any, path: str) -> UpstreamJob:
        if not isinstance(body, dict):
            raise self._malformed(path, "expected a fine_tuning.job object")
        item = dict(body)
        error = item.get("error")
        if isinstance(error, dict) and error.get("message"):
            item["error"] = {
                "code": str(error.get("code") or "upstream_job_failed"),
                "message": redact(str(error["message"])),
                "param": error.get("param") if isinstance(error.get("param"), str) else None,
            }
        else:
            item["error"] = None
        for key in ("hyperparameters", "method"):
            if not isinstance(item.get(key), dict):
                item[key] = None
        if not isinstance(item.get("result_files"), list):
            item["result_files"] = []
        try:
            return UpstreamJob.model_validate(item)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(part) for part in first["loc"]) or "body"
            raise self._malformed(path, f"{where}: {first['msg']}") from None

    def _event(self, item: Any, path: str) -> FineTuningJobEvent:
        if not isinstance(item, dict) or not item.get("id"):
            raise self._malformed(path, "an event without an id")
        kind = item.get("type")
        data = item.get("data")
        return FineTuningJobEvent(
            id=str(item["id"]),
            created_at=_int(item.get("created_at")),
            level=_LEVELS.get(str(item.get("level")), "info"),  # type: ignore[arg-type]
            message=redact(str(item.get("message") or ""), limit=4000),
            data=data if isinstance(data, dict) and data else None,
            type="metrics" if kind == "metrics" else "message",
        )

    def _checkpoint(self, item: Any, path: str) -> FineTuningJobCheckpoint:
        if not isinstance(item, dict) or not item.get("id"):
            raise self._malformed(path, "a checkpoint without an id")
        metrics = item.get("metrics") if isinstance(item.get("metrics"), dict) else {}
        try:
            parsed = CheckpointMetrics.model_validate(metrics)
        except ValidationError:
            parsed = CheckpointMetrics()
        return FineTuningJobCheckpoint(
            id=str(item["id"]),
            created_at=_int(item.get("created_at")),
            fine_tuned_model_checkpoint=str(item.get("fine_tuned_model_checkpoint") or ""),
            fine_tuning_job_id=str(item.get("fine_tuning_job_id") or ""),
            metrics=parsed,
            step_number=_int(item.get("step_number")),
        )


def _int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


def _without_key(text: str, credential: Credential) -> str:
    if credential.value and len(credential.value) >= 4:
        return text.replace(credential.value, "***")
    return text
