"""Turns ``server.tls`` into uvicorn's SSL options, after proving the files make a working TLS context.

uvicorn would fail on a bad certificate or a key that does not match with an SSL traceback; loading
them here first turns that into one line naming the key to fix.
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

from underlay.core.config import ConfigError, RunConfig
from underlay.core.transport import TlsConfig

_CERT_REQS = {"none": ssl.CERT_NONE, "optional": ssl.CERT_OPTIONAL, "required": ssl.CERT_REQUIRED}


def check_tls_files(tls: TlsConfig, source: str) -> None:
    """Load the certificate, key and CA bundle into a throwaway context; raise ConfigError on any problem."""
    problem = _pem_problem(tls.certfile, "CERTIFICATE", "certfile") or _pem_problem(
        tls.keyfile, "PRIVATE KEY", "keyfile"
    )
    if problem is not None:
        key, reason = problem
        raise ConfigError(f"{source}: server.tls.{key}: {reason}")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(tls.certfile, tls.keyfile)
    except (ssl.SSLError, OSError, ValueError) as exc:
        raise ConfigError(
            f"{source}: server.tls.certfile/keyfile: cannot load {tls.certfile} with {tls.keyfile} "
            f"({_reason(exc)}); give a PEM certificate and its matching unencrypted PEM key"
        ) from None
    if tls.ca_certs is not None:
        try:
            context.load_verify_locations(cafile=tls.ca_certs)
        except (ssl.SSLError, OSError, ValueError) as exc:
            raise ConfigError(
                f"{source}: server.tls.ca_certs: cannot load {tls.ca_certs} ({_reason(exc)}); "
                "give a PEM bundle of CA certificates"
            ) from None


def _pem_problem(path: str, label: str, key: str) -> tuple[str, str] | None:
    """What is wrong with a file that should hold a PEM ``label`` block, in words; None if it looks right."""
    try:
        text = Path(path).read_text(errors="replace")
    except OSError as exc:
        return key, f"cannot read {path} ({exc.strerror or exc}); fix the path or its permissions"
    if f"{label}-----" not in text:
        return key, f"{path} holds no PEM {label.lower()} ('-----BEGIN ...{label}-----'); point it at one"
    if "ENCRYPTED" in text and label == "PRIVATE KEY":
        return key, f"{path} is encrypted; give the server an unencrypted key readable only by its user"
    return None


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError) and exc.reason:
        return str(exc.reason).lower().replace("_", " ")
    return str(exc) or type(exc).__name__


def uvicorn_ssl_options(config: RunConfig) -> dict[str, Any]:
    """Keyword arguments for ``uvicorn.Config``: empty when the server speaks plain HTTP."""
    tls = config.server.tls
    if tls is None:
        return {}
    check_tls_files(tls, config.source)
    options: dict[str, Any] = {
        "ssl_certfile": tls.certfile,
        "ssl_keyfile": tls.keyfile,
        "ssl_cert_reqs": _CERT_REQS[tls.client_auth],
    }
    if tls.ca_certs is not None:
        options["ssl_ca_certs"] = tls.ca_certs
    return options
