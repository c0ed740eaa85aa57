"""OpenAI's own Batches API, for an OpenAI-compatible provider whose upstream has it (``remote::openai``,
``remote::azure-openai``), over a base that other batch wire formats reuse (``remote::anthropic``).

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

:class:`NativeBatchesBase` holds what does not depend on the upstream's batch wire format (the switch,
the key check, one JSON call, a JSONL file read line by line, the key scrubbed from both); an adapter
whose upstream speaks another format (Anthropic's Message Batches) implements the protocol's calls on
it. :class:`OpenAIBatchesProvider` is OpenAI's format, with hooks for an upstream that differs only in
addresses and names (Azure: ``api-version`` on every path, deployment names as ``model``).
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

__all__ = ["NativeBatchesBase", "OpenAIBatchesProvider"]

_FIND_PAGES = 5
"""Pages of ``GET /batches`` (100 each, newest first) searched for a batch lost in a crash mid-create."""


class NativeBatchesBase(OpenAICompatInferenceProvider):
    """An inference provider that hands whole batches to its upstream: the parts every batch wire shares.

    The switch is the config's ``native_batches`` (absent: off). A batch goes upstream only while the
    provider holds a credential of its own (or needs none): a key sent with one request cannot be kept
    for the hours a batch runs.
    """

    native_endpoints: tuple[str, ...] = NATIVE_BATCH_ENDPOINTS
    """The endpoints this upstream's batch API runs (a subset of ``NATIVE_BATCH_ENDPOINTS``)."""

    def native_batches_for(self, endpoint: str) -> bool:
        if not bool(getattr(self.config, "native_batches", False)) or endpoint not in self.native_endpoints:
            return False
        return not self.requires_api_key or self._url_auth is not None or self._has_batch_credential()

    def native_batch_accepts(self, endpoint: str, requests: list[tuple[str, dict[str, Any]]]) -> bool:
        return all(self.is_model_allowed(str(body.get("model"))) for _, body in requests)

    def _has_batch_credential(self) -> bool:
        """Whether the provider's own credential is there (a token fetched on first use counts)."""
        return self._own_credential().value is not None

    def _batch_path(self, path: str) -> str:
        """The path of one batch call as the upstream wants it (Azure adds its ``api-version``)."""
        return path

    async def _read_jsonl(self, path: str) -> AsyncIterator[dict[str, Any]]:
        """A JSONL file the upstream serves at ``path``, one parsed object per line, the key scrubbed out."""
        path = self._batch_path(path)
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
        path = self._batch_path(path)
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


class OpenAIBatchesProvider(NativeBatchesBase):
    """An OpenAI-compatible provider whose upstream has OpenAI's Files and Batches APIs."""

    def _native_endpoint(self, endpoint: str) -> str:
        """The batch's ``endpoint`` (and each line's ``url``) as the upstream names it."""
        return endpoint

    def _native_content(self, content: bytes) -> bytes:
        """The JSONL to upload: Underlay's lines as they are (Azure renames models and urls)."""
        return content

    async def upload_native_batch_input(self, filename: str, content: bytes) -> str:
        content = self._native_content(content)
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
                f"malformed answer from {self._url(self._batch_path('files'))}: no file id",
                code="malformed_upstream_response",
            )
        return file_id

    async def create_native_batch(
        self,
        input_file_id: str,
        endpoint: str,
        completion_window: str,
        metadata: dict[str, str] | None,
        content: bytes,
    ) -> Batch:
        payload: dict[str, Any] = {
            "input_file_id": input_file_id,
            "endpoint": self._native_endpoint(endpoint),
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
                    f"malformed answer from {self._url(self._batch_path('batches'))}: expected {{'data': [...]}}",
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

    def read_native_batch_file(self, file_id: str) -> AsyncIterator[dict[str, Any]]:
        return self._read_jsonl(f"files/{file_id}/content")

    # -- helpers -----------------------------------------------------------------------------------

    def _batch(self, body: Any, path: str) -> Batch:
        """An upstream batch object as :class:`Batch`; one that does not fit is the upstream's fault (502)."""
        try:
            return Batch.model_validate(body)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(part) for part in first["loc"]) or "body"
            raise UpstreamError(
                self.provider_id,
                f"malformed batch from {self._url(self._batch_path(path))}: {where}: {first['msg']}",
                code="malformed_upstream_response",
            ) from None
