"""Secret redaction for log lines, span attributes and error text.

Why patterns and a list of known values: most secrets have a recognisable shape (``Bearer ...``,
``sk-...``, ``user:password@host``, ``api_key=...``, the provider-data header) but a password from the
run config may look like any word, so the values the config holds under secret-looking keys are
registered too and replaced wherever they appear.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

MASK = "***"

SECRET_WORDS = ("api_key", "api-key", "apikey", "password", "passwd", "token", "secret", "authorization", "credential")

# The key must end in the secret word: ``access_token`` is a secret, ``prompt_tokens`` is not.
_KEY_NAMES = r"[A-Za-z0-9_\-]*(?:api[_-]?key|password|passwd|token|secret|authorization|credentials?)"
_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # The per-request credentials header, whatever its value looks like (usually a JSON object).
    (re.compile(r"(?i)(x-underlay-provider-data['\"]?\s*[:=]\s*)(\{.*?\}|'[^']*'|\"[^\"]*\"|\S+)"), r"\1" + MASK),
    (re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=\-]{4,}"), r"\1 " + MASK),
    (re.compile(r"\b(sk|pk|rk)-[A-Za-z0-9_\-]{6,}"), r"\1-" + MASK),
    # scheme://user:password@host
    (re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*://[^/\s:@]*):[^/\s@]+@"), r"\1:" + MASK + "@"),
    # "api_key": "value", api_key=value, password: value, 'token': 'value'
    (
        re.compile(r"(?i)(['\"]?" + _KEY_NAMES + r"['\"]?\s*[:=]\s*)(\"[^\"]*\"|'[^']*'|[^\s,;&}\]]+)"),
        r"\1" + MASK,
    ),
)


class Redactor:
    """Replaces secrets in text; known secret values are added with :meth:`add`."""

    def __init__(self, known: Iterable[str] = ()) -> None:
        self._known: set[str] = set()
        self._known_pattern: re.Pattern[str] | None = None
        self.add(*known)

    def add(self, *values: str) -> None:
        """Remember literal secrets (shorter than 4 characters they would mask ordinary words, so skip)."""
        fresh = {v for v in values if isinstance(v, str) and len(v) >= 4}
        if fresh - self._known:
            self._known |= fresh
            ordered = sorted(self._known, key=len, reverse=True)
            self._known_pattern = re.compile("|".join(re.escape(v) for v in ordered))

    def add_from_config(self, value: Any, secret_words: Iterable[str] = SECRET_WORDS) -> None:
        """Register every string held under a secret-looking key anywhere in ``value``."""
        words = tuple(secret_words)
        for key, item in _walk(value):
            if isinstance(item, str) and key is not None and any(w in key.lower() for w in words):
                self.add(item)

    def __call__(self, text: str) -> str:
        if self._known_pattern is not None:
            text = self._known_pattern.sub(MASK, text)
        for pattern, replacement in _PATTERNS:
            text = pattern.sub(replacement, text)
        return text


def _walk(value: Any, key: str | None = None) -> Iterable[tuple[str | None, Any]]:
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _walk(v, str(k))
    elif isinstance(value, list | tuple):
        for v in value:
            yield from _walk(v, key)
    else:
        yield key, value


redactor = Redactor()
"""The process's redactor: logging and span attributes use it; the stack registers config secrets."""


def redact(text: str) -> str:
    return redactor(text)


def record_error(span: Any, error: BaseException) -> str:
    """Add the ``exception`` event to ``span`` with secrets masked; returns the masked one-line message.

    Why not the SDK's ``record_exception``: it stores the raw message and the whole stack trace, and an
    upstream's error text can quote a key. Spans leave the process (OTLP) and are served back (the
    telemetry API), so they get the same masking as log lines.
    """
    message = redactor(f"{type(error).__name__}: {error}")
    span.add_event(
        "exception",
        {"exception.type": type(error).__name__, "exception.message": redactor(str(error)), "exception.escaped": True},
    )
    return message
