"""OpenAI's own Batches API, for an OpenAI-compatible provider whose upstream has it (``remote::openai``).

This implements :class:`underlay.api.batches.NativeBatchProvider` over the upstream's ``/files`` and
``/batches`` endpoints: a multipart upload of the JSONL input (purpose ``batch``), ``POST /batches``,
``GET /batches/{id}``, ``POST /batches/{id}/cancel``, ``GET /batches`` (to find a batch again after a
crash in the middle of creating it) and ``GET /files/{id}/content`` for the output and error files.

Why a class of its own over the OpenAI-compatible base: vLLM, Ollama and most clones serve the
inference endpoints but no Batches API, so only a provider that opts in inherits this. What it shares
with the base is everything that matters for safety: the pooled HTTP client, typed errors naming the
provider, and credentials that never reach a message (every upstream text read here, error or file
line, has the key replaced before anyone sees it).

Every call uses the provider's *own* key (config or environment), never a per-request one: a batch
outlives the request that created it, and a key must not be stored with the batch to follow it later.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
from pydantic import ValidationError

from underlay.api.batches import NATIVE_BATCH_ENDPOINTS, Batch
from underlay.api.errors import UpstreamError, UpstreamTimeoutError
from underlay.providers.utils.openai_compat import Credential, OpenAICompatInferenceProvider
from underlay.providers.utils.upstream_http import Failure, LineReader, classify, describe

__all__ = ["OpenAIBatchesProvider"]

_FIND_PAGES = 5
"""Pages of ``GET /batches`` (100 each, newest first) searched for a batch lost in a crash mid-create."""


class OpenAIBatchesProvider(OpenAICompatInferenceProvider):
    """An OpenAI-compatible provider that also hands whole batches to its upstream's Batches API.

    The switch is the config's ``native_batches`` (absent: off). A batch goes upstream only while the
    provider holds a key of its own (or needs none): a key sent with one request cannot be kept for
    the hours a batch runs.
    """

    def native_batches_for(self, endpoint: str) -> bool:
        if not bool(getattr(self.config, "native_batches", False)) or endpoint not in NATIVE_BATCH_ENDPOINTS:
            return False
        return not self.requires_api_key or self._url_auth is not None or self._own_credential().value is not None

    async def upload_native_batch_input(self, filename: str, content: bytes) -> str:
        boundary = f"underlay-{secrets.token_hex(16)}"
        safe_name = filename.replace('"', "").replace("\r", "").replace("\n", "")
        body = b"".join(
            [
                f'--{boundary}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nbatch\r\n'.encode(),
                f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{safe_name}"\r\n'.encode(),
                b"Content-Type: application/jsonl\r\n\r\n",
                content,
                f"\r\n--{boundary}--\r\n".encode(),
            ]
        )
        uploaded = await self._batch_call(
            "POST", "files", data=body, content_type=f"multipart/form-data; boundary={boundary}"
        )
        file_id = uploaded.get("id") if isinstance(uploaded, dict) else None
        if not isinstance(file_id, str) or not file_id:
            raise UpstreamError(
                self.provider_id,
                f"malformed answer from {self._url('files')}: no file id",
                code="malformed_upstream_response",
            )
        return file_id

    async def create_native_batch(
        self, input_file_id: str, endpoint: str, completion_window: str, metadata: dict[str, str] | None
    ) -> Batch:
        payload: dict[str, Any] = {
            "input_file_id": input_file_id,
            "endpoint": endpoint,
            "completion_window": completion_window,
        }
        if metadata:
            payload["metadata"] = metadata
        # No retries here: a create that timed out may have succeeded, and a second one would run the
        # batch twice. The caller looks it up by its input file (find_native_batch) before trying again.
        return self._batch(await self._batch_call("POST", "batches", payload, retries=0), "batches")

    async def find_native_batch(self, input_file_id: str) -> Batch | None:
        after: str | None = None
        for _ in range(_FIND_PAGES):
            path = "batches?limit=100" + (f"&after={after}" if after else "")
            page = await self._batch_call("GET", path)
            data = page.get("data") if isinstance(page, dict) else None
            if not isinstance(data, list):
                raise UpstreamError(
                    self.provider_id,
                    f"malformed answer from {self._url('batches')}: expected {{'data': [...]}}",
                    code="malformed_upstream_response",
                )
            for item in data:
                if isinstance(item, dict) and item.get("input_file_id") == input_file_id:
                    return self._batch(item, "batches")
            if not page.get("has_more") or not data or not isinstance(data[-1], dict):
                return None
            after = str(data[-1].get("id") or "")
            if not after:
                return None
        return None

    async def retrieve_native_batch(self, batch_id: str) -> Batch:
        path = f"batches/{batch_id}"
        return self._batch(await self._batch_call("GET", path), path)

    async def cancel_native_batch(self, batch_id: str) -> Batch:
        path = f"batches/{batch_id}/cancel"
        return self._batch(await self._batch_call("POST", path), path)

    async def read_native_batch_file(self, file_id: str) -> AsyncIterator[dict[str, Any]]:
        path = f"files/{file_id}/content"
        url = self._url(path)
        credential = self._own_credential()
        response, credential = await self._send("GET", path, None, model=None, stream=False, credential=credential)
        lines = LineReader(response.content)
        number = 0
        try:
            while True:
                try:
                    text = await lines.readline()
                except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                    if classify(exc, 0.0, self.config.timeout.read) is Failure.READ_TIMEOUT:
                        raise UpstreamTimeoutError(
                            self.provider_id, f"{url} stalled (nothing for {self.config.timeout.read}s)"
                        ) from None
                    raise UpstreamError(self.provider_id, f"{url} broke off the file: {describe(exc)}") from None
                if text is None:
                    break
                number += 1
                if not text.strip():
                    continue
                try:
                    record = json.loads(self._without_key(text, credential))
                except ValueError:
                    record = None
                if not isinstance(record, dict):
                    raise UpstreamError(
                        self.provider_id,
                        f"line {number} of {url} is not a JSON object",
                        code="malformed_upstream_response",
                    )
                yield record
        finally:
            if response.content.at_eof():
                response.release()
            else:
                response.close()

    # -- helpers -----------------------------------------------------------------------------------

    async def _batch_call(
        self,
        method: str,
        path: str,
        payload: dict[str, Any] | None = None,
        *,
        data: bytes | None = None,
        content_type: str | None = None,
        retries: int | None = None,
    ) -> Any:
        """One JSON call with the provider's own key; the answer parsed with that key scrubbed out."""
        response, credential = await self._send(
            method,
            path,
            payload,
            model=None,
            stream=False,
            retries=retries,
            data=data,
            content_type=content_type,
            credential=self._own_credential(),
        )
        url = self._url(path)
        try:
            raw = await response.read()
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            response.close()
            raise UpstreamError(self.provider_id, f"{url} broke off its answer: {describe(exc)}") from None
        response.release()
        text = self._without_key(raw.decode("utf-8", "replace"), credential)
        return self._loads(text.encode(), credential, url)

    @staticmethod
    def _without_key(text: str, credential: Credential) -> str:
        """``text`` with the key replaced (whole bodies: unlike ``_scrub``, nothing is cut short)."""
        if credential.value and len(credential.value) >= 4:
            return text.replace(credential.value, "***")
        return text

    def _batch(self, body: Any, path: str) -> Batch:
        """An upstream batch object as :class:`Batch`; one that does not fit is the upstream's fault (502)."""
        try:
            return Batch.model_validate(body)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(part) for part in first["loc"]) or "body"
            raise UpstreamError(
                self.provider_id,
                f"malformed batch from {self._url(path)}: {where}: {first['msg']}",
                code="malformed_upstream_response",
            ) from None
