"""Identifier helpers: OpenAI-style prefixed random ids."""

from __future__ import annotations

import secrets
import time

__all__ = ["new_id", "now"]


def new_id(prefix: str, nbytes: int = 12) -> str:
    """A random id such as ``chatcmpl-3f9a...``; ``prefix`` includes no separator."""
    return f"{prefix}-{secrets.token_hex(nbytes)}"


def now() -> int:
    """Seconds since the epoch, the unit OpenAI uses for ``created``."""
    return int(time.time())
