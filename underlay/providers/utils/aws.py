"""Settings every AWS client of ours resolves the same way (S3 files, Bedrock guardrails)."""

from __future__ import annotations

import os
from typing import Protocol

from pydantic import SecretStr


class AwsCredentialSettings(Protocol):
    access_key_id: SecretStr | None
    secret_access_key: SecretStr | None
    session_token: SecretStr | None
    region: str | None


def client_credentials(settings: AwsCredentialSettings) -> dict[str, str]:
    """Keyword arguments for ``create_client``: the configured key pair (and session token), or nothing,
    so botocore falls back to its own chain (environment, profile, instance role)."""
    if not (settings.access_key_id and settings.secret_access_key):
        return {}
    credentials = {
        "aws_access_key_id": settings.access_key_id.get_secret_value(),
        "aws_secret_access_key": settings.secret_access_key.get_secret_value(),
    }
    if settings.session_token:
        credentials["aws_session_token"] = settings.session_token.get_secret_value()
    return credentials


def client_region(settings: AwsCredentialSettings) -> str:
    """The configured region, else AWS_REGION / AWS_DEFAULT_REGION, else us-east-1."""
    return settings.region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
