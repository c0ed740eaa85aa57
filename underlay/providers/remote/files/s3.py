"""``remote::s3``: file bytes in any S3-compatible object store (AWS S3, MinIO, Ceph, R2, ...).

Uploads stream: bytes are gathered into parts of ``part_size`` and sent with S3's multipart upload as
each part fills, so memory per upload is one part, whatever the file size; a file smaller than one
part is a single PutObject. A failed or cancelled upload aborts its multipart upload, so nothing is
left in the bucket. Downloads stream the object body as it arrives.

Credentials come from the config (``access_key_id`` / ``secret_access_key``, secrets) or, when those
are unset, from the usual AWS sources (``AWS_ACCESS_KEY_ID``..., profiles, instance roles). The client
is aiobotocore's (botocore on aiohttp), so no request ever blocks the event loop.

Failures name the provider: unreachable endpoint 503, timeouts 504, anything S3 answers with an
error (access denied, no such bucket) 502.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Iterator
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from underlay.api.errors import ProviderError, ServiceUnavailableError, UpstreamError, UpstreamTimeoutError
from underlay.api.files import check_storage_key
from underlay.providers.utils.aws import client_credentials, client_region

log = logging.getLogger("underlay.files.s3")

_MIN_PART_BYTES = 5 * 1024 * 1024  # S3's smallest part (all but the last)
_NOT_FOUND = {"NoSuchKey", "404", "NotFound"}
_UNAVAILABLE = {"SlowDown", "ServiceUnavailable", "503", "InternalError", "500", "RequestTimeout"}


class Config(BaseModel):
    """A bucket (and optional key prefix) on an S3-compatible endpoint."""

    model_config = ConfigDict(extra="forbid")

    bucket: str = Field(min_length=3, description="Bucket that holds the files.")
    prefix: str = Field(default="", description="Prepended to every object key, e.g. 'underlay/files/'.")
    endpoint_url: str | None = Field(
        default=None, description="For S3-compatible services, e.g. http://127.0.0.1:9000; unset for AWS."
    )
    region: str | None = Field(default=None, description="Region; else AWS_REGION / AWS_DEFAULT_REGION / us-east-1.")
    access_key_id: SecretStr | None = Field(default=None, description="Unset: the AWS credential chain.")
    secret_access_key: SecretStr | None = Field(default=None, description="Unset: the AWS credential chain.")
    session_token: SecretStr | None = None
    addressing_style: Literal["auto", "path", "virtual"] | None = Field(
        default=None, description="Unset: 'path' with endpoint_url (what most S3 clones want), else 'auto'."
    )
    create_bucket: bool = Field(default=False, description="Create the bucket at start-up if it is missing.")
    part_size: int = Field(
        default=8 * 1024 * 1024, ge=_MIN_PART_BYTES, description="Multipart upload part size (memory per upload)."
    )
    read_chunk_bytes: int = Field(default=256 * 1024, ge=4096, description="Size of the pieces sent to clients.")
    connect_timeout: float = Field(default=10.0, gt=0)
    read_timeout: float = Field(default=60.0, gt=0)
    max_attempts: int = Field(
        default=3, ge=1, description="Attempts per request, the first included (standard retry mode)."
    )
    max_connections: int = Field(default=50, ge=1)

    @field_validator("access_key_id", "secret_access_key", "session_token", "endpoint_url", "region", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: Any) -> Any:
        """``${env.X:=}`` yields ""; that means "use the default" (AWS's chain, endpoint, region)."""
        return value or None


class S3FilesProvider:
    def __init__(self, provider_id: str, config: Config) -> None:
        self.provider_id = provider_id
        self.config = config
        self._client: Any = None
        self._exit = contextlib.AsyncExitStack()

    # -- errors -------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _errors(self, action: str, *, missing_is_not_found: bool = False) -> Iterator[None]:
        """botocore's failures → our provider errors; everything else (the upload source's) passes.

        With ``missing_is_not_found`` a missing key is ``FileNotFoundError`` (the provider contract).
        """
        from botocore.exceptions import (
            BotoCoreError,
            ClientError,
            ConnectTimeoutError,
            HTTPClientError,
            NoCredentialsError,
            PartialCredentialsError,
            ReadTimeoutError,
        )
        from botocore.exceptions import ConnectionError as BotoConnectionError

        where = f"bucket '{self.config.bucket}'" + (
            f" at {self.config.endpoint_url}" if self.config.endpoint_url else ""
        )
        try:
            yield
        except ClientError as exc:
            error = exc.response.get("Error", {})
            code = str(error.get("Code", ""))
            message = error.get("Message") or code
            if code in _NOT_FOUND and missing_is_not_found:
                raise FileNotFoundError(message) from exc
            if code in _UNAVAILABLE:
                raise ServiceUnavailableError(
                    self.provider_id, f"S3 could not {action} in {where} ({code}: {message}).", code="s3_unavailable"
                ) from exc
            raise UpstreamError(
                self.provider_id, f"S3 refused to {action} in {where} ({code}: {message}).", code="s3_error"
            ) from exc
        except (ConnectTimeoutError, ReadTimeoutError) as exc:
            raise UpstreamTimeoutError(
                self.provider_id, f"S3 did not answer in time to {action} in {where}.", code="s3_timeout"
            ) from exc
        except (BotoConnectionError, HTTPClientError) as exc:
            raise ServiceUnavailableError(
                self.provider_id, f"cannot reach S3 to {action} in {where}: {exc}", code="s3_unreachable"
            ) from exc
        except (NoCredentialsError, PartialCredentialsError) as exc:
            raise ServiceUnavailableError(
                self.provider_id,
                "no S3 credentials; set access_key_id and secret_access_key in its config or AWS_ACCESS_KEY_ID "
                "and AWS_SECRET_ACCESS_KEY in the environment.",
                code="s3_no_credentials",
            ) from exc
        except BotoCoreError as exc:
            raise UpstreamError(self.provider_id, f"S3 failed to {action} in {where}: {exc}", code="s3_error") from exc

    def _key(self, key: str) -> str:
        return f"{self.config.prefix}{check_storage_key(key)}"

    # -- lifecycle ----------------------------------------------------------------------------------

    async def initialize(self) -> None:
        from aiobotocore.config import AioConfig
        from aiobotocore.session import get_session

        c = self.config
        style = c.addressing_style or ("path" if c.endpoint_url else "auto")
        client_config = AioConfig(
            connect_timeout=c.connect_timeout,
            read_timeout=c.read_timeout,
            retries={"total_max_attempts": c.max_attempts, "mode": "standard"},
            max_pool_connections=c.max_connections,
            s3={"addressing_style": style},
            # Checksums only where S3 requires them: many S3-compatible stores reject the newer defaults.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        credentials = client_credentials(c)
        region = self._region = client_region(c)
        self._client = await self._exit.enter_async_context(
            get_session().create_client(
                "s3", endpoint_url=c.endpoint_url, region_name=region, config=client_config, **credentials
            )
        )
        # botocore asks for "Expect: 100-continue" on uploads, and aiohttp waits for the 100 with no
        # timeout: an endpoint that accepts the connection but never answers would hang the upload.
        # Without it the read timeout covers the wait for the response.
        self._client.meta.events.register_last("before-sign.s3", _drop_expect_header)
        try:
            await self._check_bucket()
        except ProviderError as exc:
            # The store may come back; requests report it (503) until then rather than the server not starting.
            log.warning("%s", exc.message)

    async def _check_bucket(self) -> None:
        from botocore.exceptions import ClientError

        try:
            with self._errors("find the bucket"):
                await self._client.head_bucket(Bucket=self.config.bucket)
            return
        except UpstreamError as exc:
            cause = exc.__cause__
            missing = isinstance(cause, ClientError) and str(cause.response.get("Error", {}).get("Code")) in (
                "404",
                "NoSuchBucket",
                "NotFound",
            )
            if not (missing and self.config.create_bucket):
                raise
        params: dict[str, Any] = {"Bucket": self.config.bucket}
        if self._region != "us-east-1":
            params["CreateBucketConfiguration"] = {"LocationConstraint": self._region}
        with self._errors("create the bucket"):
            await self._client.create_bucket(**params)
        log.info("created bucket %s", self.config.bucket)

    async def shutdown(self) -> None:
        await self._exit.aclose()
        self._client = None

    async def health(self) -> dict[str, Any]:
        try:
            with self._errors("find the bucket"):
                await self._client.head_bucket(Bucket=self.config.bucket)
        except ProviderError as exc:
            return {"status": "Error", "message": exc.message}
        return {"status": "OK"}

    # -- bytes --------------------------------------------------------------------------------------

    async def put(self, key: str, chunks: AsyncIterator[bytes]) -> int:
        object_key = self._key(key)
        bucket = self.config.bucket
        part_size = self.config.part_size
        buffer = bytearray()
        size = 0
        upload_id: str | None = None
        parts: list[dict[str, Any]] = []

        async def send_part(data: bytes) -> None:
            nonlocal upload_id
            if upload_id is None:
                with self._errors("start an upload"):
                    created = await self._client.create_multipart_upload(Bucket=bucket, Key=object_key)
                upload_id = created["UploadId"]
            number = len(parts) + 1
            with self._errors("upload a part"):
                reply = await self._client.upload_part(
                    Bucket=bucket, Key=object_key, UploadId=upload_id, PartNumber=number, Body=data
                )
            parts.append({"ETag": reply["ETag"], "PartNumber": number})

        try:
            async for chunk in chunks:  # the source's own errors (413, disconnect) pass through as they are
                buffer += chunk
                size += len(chunk)
                while len(buffer) >= part_size:
                    part = bytes(buffer[:part_size])
                    del buffer[:part_size]
                    await send_part(part)
            if upload_id is None:
                with self._errors("store a file"):
                    await self._client.put_object(Bucket=bucket, Key=object_key, Body=bytes(buffer))
            else:
                if buffer:
                    await send_part(bytes(buffer))
                with self._errors("finish an upload"):
                    await self._client.complete_multipart_upload(
                        Bucket=bucket, Key=object_key, UploadId=upload_id, MultipartUpload={"Parts": parts}
                    )
        except BaseException:
            if upload_id is not None:
                await asyncio.shield(self._abort(object_key, upload_id))
            raise
        return size

    async def _abort(self, object_key: str, upload_id: str) -> None:
        try:
            with self._errors("abort an upload"):
                await self._client.abort_multipart_upload(Bucket=self.config.bucket, Key=object_key, UploadId=upload_id)
        except ProviderError as exc:
            # The bucket's lifecycle rules (AbortIncompleteMultipartUpload) are the backstop for this.
            log.warning("could not abort multipart upload of %s: %s", object_key, exc.message)

    async def open(self, key: str) -> AsyncIterator[bytes]:
        with self._errors("read a file", missing_is_not_found=True):
            reply = await self._client.get_object(Bucket=self.config.bucket, Key=self._key(key))
        return self._stream(reply["Body"])

    async def _stream(self, body: Any) -> AsyncIterator[bytes]:
        async with body:
            while True:
                with self._errors("read a file"):
                    chunk = await body.read(self.config.read_chunk_bytes)
                if not chunk:
                    return
                yield chunk

    async def delete(self, key: str) -> None:
        with self._errors("delete a file"):
            await self._client.delete_object(Bucket=self.config.bucket, Key=self._key(key))


def _drop_expect_header(request: Any, **_: Any) -> None:
    if "Expect" in request.headers:
        del request.headers["Expect"]


async def create_provider(provider_id: str, config: Config, deps: dict[str, Any]) -> S3FilesProvider:
    return S3FilesProvider(provider_id, config)
