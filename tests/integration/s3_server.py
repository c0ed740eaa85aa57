"""A real S3 HTTP endpoint on loopback for the tests: moto's standalone server in a thread.

moto answers the same REST API as AWS S3 (multipart uploads included), so the ``remote::s3`` provider
is exercised over real HTTP exactly as it would talk to MinIO or AWS; stopping it is a real outage.
"""

from __future__ import annotations

from typing import Any

from tests.integration.harness import free_port

ACCESS_KEY = "underlay-test"
SECRET_KEY = "underlay-test-secret"


class MotoS3:
    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self._server: Any = None

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> MotoS3:
        from moto.server import ThreadedMotoServer

        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self._server.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None

    def client(self) -> Any:
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            region_name="us-east-1",
        )

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        reply = self.client().list_objects_v2(Bucket=bucket, Prefix=prefix)
        return [item["Key"] for item in reply.get("Contents", [])]

    def open_uploads(self, bucket: str) -> list[dict[str, Any]]:
        """Multipart uploads started and neither completed nor aborted (leftovers of failed uploads)."""
        return list(self.client().list_multipart_uploads(Bucket=bucket).get("Uploads", []))

    def provider_config(self, bucket: str, **overrides: Any) -> dict[str, Any]:
        config: dict[str, Any] = {
            "bucket": bucket,
            "prefix": "underlay/files/",
            "endpoint_url": self.endpoint_url,
            "access_key_id": ACCESS_KEY,
            "secret_access_key": SECRET_KEY,
            "create_bucket": True,
            "part_size": 5 * 1024 * 1024,
            "connect_timeout": 2,
            "max_attempts": 1,
        }
        config.update(overrides)
        return config
