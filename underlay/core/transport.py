"""Transport settings: TLS and mutual TLS for the server (``server.tls`` in the run config).

Paths are checked when the config loads, so a missing or unreadable file stops ``underlay run`` with one
line naming the key before anything starts; whether the files hold a usable certificate and key is
checked when the server builds its TLS context (:mod:`underlay.server.tls`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


def readable_file(value: str) -> str:
    """``value`` with ``~`` expanded, if it names a readable file; otherwise a message saying what is wrong."""
    path = Path(value).expanduser()
    if not path.exists():
        raise ValueError(f"no such file {str(path)!r}")
    if not path.is_file():
        raise ValueError(f"{str(path)!r} is not a file")
    if not os.access(path, os.R_OK):
        raise ValueError(f"{str(path)!r} is not readable by this user")
    return str(path)


class TlsConfig(BaseModel):
    """Serve HTTPS; with ``client_auth`` also ask clients for a certificate signed by ``ca_certs`` (mTLS)."""

    model_config = ConfigDict(extra="forbid")

    certfile: str = Field(description="PEM server certificate (chain), leaf first.")
    keyfile: str = Field(description="PEM private key of the certificate, unencrypted; keep it readable only to you.")
    ca_certs: str | None = Field(
        default=None, description="PEM bundle of the CAs whose client certificates are accepted (mTLS)."
    )
    client_auth: Literal["none", "optional", "required"] = Field(
        default="none",
        description="none: no client certificates; optional: verify one if sent; required: refuse clients without.",
    )

    @field_validator("certfile", "keyfile", "ca_certs")
    @classmethod
    def _readable(cls, value: str | None) -> str | None:
        return None if value is None else readable_file(value)

    @model_validator(mode="after")
    def _ca_for_client_auth(self) -> TlsConfig:
        if self.client_auth != "none" and self.ca_certs is None:
            raise ValueError(f"client_auth: {self.client_auth} needs ca_certs, the CA bundle that signs client certs")
        return self
