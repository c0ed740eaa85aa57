"""Moved to :mod:`underlay.shared.redact`: the MCP provider redacts too, and a provider may not import the
control plane. These names are re-exported so old imports keep working."""

from underlay.shared.redact import (
    MASK,
    MAX_TEXT,
    MAX_TRACEBACK,
    RULE_NAMES,
    SECRET_WORDS,
    Redactor,
    record_error,
    redact,
    redactor,
    request_secrets,
)

__all__ = [
    "MASK",
    "MAX_TEXT",
    "MAX_TRACEBACK",
    "RULE_NAMES",
    "Redactor",
    "SECRET_WORDS",
    "record_error",
    "redact",
    "redactor",
    "request_secrets",
]
