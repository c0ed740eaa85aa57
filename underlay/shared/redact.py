"""Secret redaction for log lines, span attributes and error text, in bounded, linear work.

Why patterns and a list of known values: most secrets have a recognisable shape (``Bearer ...``,
``sk-...``, ``user:password@host``, ``api_key=...``, the provider-data header) but a password from the
run config may look like any word, so the values the config holds under secret-looking keys are
registered too and replaced wherever they appear.

Why a scanner and not one ``re.sub`` per shape: the text comes from clients (paths, model names,
headers, bodies) and Python's regex engine backtracks. A pattern that starts with an unanchored run
such as ``[A-Za-z0-9_-]*api_key`` re-reads a run of word characters from every starting position,
which is quadratic: a 3,000-character id held the event loop for 80 seconds. So every rule here is
*keyword first*: a search for a fixed set of literals finds where a secret could start (constant work
per character), and only there a small, bounded pattern checks what follows; values are single
possessive runs or the next closing quote, whose position is remembered so no character is read
twice for it. Each primitive reports how many characters it examined (:attr:`Redactor.scanned`), so
tests bound the work by counting, not by timing. And no text is scanned past :data:`MAX_TEXT`
characters (plus a little slack): longer text is cut, with a marker, after redaction.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterable, Iterator
from contextvars import ContextVar
from typing import Any

MASK = "***"

SECRET_WORDS = ("api_key", "api-key", "apikey", "password", "passwd", "token", "secret", "authorization", "credential")

MAX_TEXT = 16_384
"""Characters of one text that are redacted and kept; the rest is replaced by a marker."""

MAX_TRACEBACK = 65_536
"""Tracebacks get more room: their last lines (the innermost frame, the message) matter most."""

_SLACK = 256
"""Extra characters read past the cut so a secret straddling it is still recognised (then dropped)."""

_MAX_QUOTED = 4_096
"""A quoted value longer than this is treated as unquoted (masked up to the next delimiter)."""

_KEY_WINDOW = 40
"""How far past a keyword the ``: `` / ``=`` separator may be (quotes and up to 16 spaces either side)."""

# -- the primitives ------------------------------------------------------------------------------------


class _Scan:
    """One pass of one rule over one text; every read of the text goes through here and is counted."""

    __slots__ = ("text", "n", "chars", "_next")

    def __init__(self, text: str) -> None:
        self.text = text
        self.n = len(text)
        self.chars = 0
        self._next: dict[str, int] = {}

    def anchor(self, pattern: re.Pattern[str], pos: int) -> re.Match[str] | None:
        """The next keyword at or after ``pos`` (``pattern`` is a set of literals: constant work per character)."""
        match = pattern.search(self.text, pos)
        self.chars += (match.end() if match else self.n) - pos
        return match

    def small(self, pattern: re.Pattern[str], pos: int, window: int) -> re.Match[str] | None:
        """``pattern`` matched at ``pos`` without reading past ``pos + window``."""
        end = min(self.n, pos + window)
        self.chars += end - pos
        return pattern.match(self.text, pos, end)

    def run(self, pattern: re.Pattern[str], pos: int) -> int:
        """The end of the possessive character-class run ``pattern`` starting at ``pos``."""
        match = pattern.match(self.text, pos)
        end = match.end() if match else pos
        self.chars += end - pos + 1
        return end

    def closing(self, char: str, pos: int, limit: int) -> int:
        """Index of the first ``char`` at or after ``pos`` if it is within ``limit`` characters, else -1.

        The answer is remembered: the rules move forward only, so until ``pos`` passes the remembered
        position the text between is known not to hold ``char`` and is not read again.
        """
        known = self._next.get(char)
        if known is None or (known != -1 and known < pos):
            known = self.text.find(char, pos)
            self.chars += (known if known != -1 else self.n) - pos + 1
            self._next[char] = known
        return known if known != -1 and known - pos <= limit else -1


_Rule = Callable[[_Scan, re.Match[str]], "tuple[int, int, str] | None"]
"""Given the keyword found: (start, end, replacement) of the text to replace, or None."""

_SEPARATOR = re.compile(r"['\"]?\s{0,16}[:=]\s{0,16}")
_NOT_SPACE = re.compile(r"\S*+")
_TOKEN_CHARS = re.compile(r"[A-Za-z0-9._~+/=\-]*+")
_KEY_CHARS = re.compile(r"[A-Za-z0-9_\-]*+")
_VALUE_CHARS = re.compile(r"[^\s,;&}\]]*+")
_SPACES = re.compile(r"\s{1,16}")
_URL_USER = re.compile(r"[^/\s:@]*+")
_URL_PASSWORD = re.compile(r"[^/\s@]*+")


def _value_end(scan: _Scan, start: int, unquoted: re.Pattern[str], braces: bool = False) -> int:
    """End of the value at ``start``: through the closing quote (or brace), else the run ``unquoted``."""
    opener = scan.text[start : start + 1]
    closer = {'"': '"', "'": "'", "{": "}"}.get(opener) if opener else None
    if closer is not None and (opener != "{" or braces):
        found = scan.closing(closer, start + 1, _MAX_QUOTED)
        if found != -1:
            return found + 1
    return scan.run(unquoted, start)


def _provider_data(scan: _Scan, match: re.Match[str]) -> tuple[int, int, str] | None:
    """``X-Underlay-Provider-Data: {...}``: the per-request credentials header, whatever its value."""
    separator = scan.small(_SEPARATOR, match.end(), _KEY_WINDOW)
    if separator is None:
        return None
    start = separator.end()
    end = _value_end(scan, start, _NOT_SPACE, braces=True)
    return (start, end, MASK) if end > start else None


def _auth_scheme(scan: _Scan, match: re.Match[str]) -> tuple[int, int, str] | None:
    """``Bearer <token>`` / ``Basic <credentials>``."""
    spaces = scan.small(_SPACES, match.end(), 16)
    if spaces is None:
        return None
    end = scan.run(_TOKEN_CHARS, spaces.end())
    return (match.end(), end, " " + MASK) if end - spaces.end() >= 4 else None


def _key_prefix(scan: _Scan, match: re.Match[str]) -> tuple[int, int, str] | None:
    """``sk-...``, ``pk-...``, ``rk-...`` API keys."""
    end = scan.run(_KEY_CHARS, match.end())
    return (match.end(), end, MASK) if end - match.end() >= 6 else None


def _url_password(scan: _Scan, match: re.Match[str]) -> tuple[int, int, str] | None:
    """``scheme://user:password@host``: the password."""
    user_end = scan.run(_URL_USER, match.end())
    if scan.text[user_end : user_end + 1] != ":":
        return None
    end = scan.run(_URL_PASSWORD, user_end + 1)
    if end == user_end + 1 or scan.text[end : end + 1] != "@":
        return None
    return (user_end + 1, end, MASK)


def _key_value(scan: _Scan, match: re.Match[str]) -> tuple[int, int, str] | None:
    """``"api_key": "value"``, ``api_key=value``, ``password: value``, ``'token': 'value'``.

    The keyword must end the key (``access_token`` is a secret, ``prompt_tokens`` is not): the
    separator has to follow it at once.
    """
    separator = scan.small(_SEPARATOR, match.end(), _KEY_WINDOW)
    if separator is None:
        return None
    start = separator.end()
    end = _value_end(scan, start, _VALUE_CHARS)
    if end <= start:
        return None
    quote = scan.text[start]
    if quote in "'\"" and end - start >= 2 and scan.text[end - 1] == quote:
        return (start, end, quote + MASK + quote)
    return (start, end, MASK)


_RULES: tuple[tuple[str, re.Pattern[str], _Rule], ...] = (
    ("provider_data", re.compile(r"(?i)x-underlay-provider-data"), _provider_data),
    ("auth_scheme", re.compile(r"(?i)\b(?:bearer|basic)"), _auth_scheme),
    ("key_prefix", re.compile(r"\b(?:sk|pk|rk)-"), _key_prefix),
    ("url_password", re.compile(r"://"), _url_password),
    (
        "key_value",
        re.compile(r"(?i)api[_-]?key|password|passwd|token|secret|authorization|credentials?"),
        _key_value,
    ),
)
RULE_NAMES = ("known", *(name for name, _, _ in _RULES))


def _apply(text: str, anchor: re.Pattern[str], rule: _Rule) -> tuple[str, int]:
    """One rule over ``text``, left to right: the new text and the characters examined."""
    scan = _Scan(text)
    out: list[str] = []
    done = pos = 0
    while pos < scan.n:
        match = scan.anchor(anchor, pos)
        if match is None:
            break
        found = rule(scan, match)
        if found is None:
            pos = match.end()
            continue
        start, end, replacement = found
        out += (text[done:start], replacement)
        done = pos = max(end, match.end())
    if not out:
        return text, scan.chars
    out.append(text[done:])
    return "".join(out), scan.chars


class Redactor:
    """Replaces secrets in text; known secret values are added with :meth:`add`.

    :attr:`scanned` adds up, per rule, the characters each rule examined since creation (or the last
    :meth:`reset_counts`); :attr:`largest` is the longest text any rule was given. Both exist so tests
    can prove the work is bounded and linear without timing anything.
    """

    def __init__(self, known: Iterable[str] = ()) -> None:
        self._known: set[str] = set()
        self._known_pattern: re.Pattern[str] | None = None
        self._longest = 0
        self.scanned: dict[str, int] = dict.fromkeys(RULE_NAMES, 0)
        self.largest = 0
        self.add(*known)

    def add(self, *values: str) -> None:
        """Remember literal secrets (shorter than 4 characters they would mask ordinary words, so skip)."""
        fresh = {v for v in values if isinstance(v, str) and len(v) >= 4}
        if fresh - self._known:
            self._known |= fresh
            self._longest = max(map(len, self._known))
            self._known_pattern = _literal_pattern(frozenset(self._known))

    def add_from_config(self, value: Any, secret_words: Iterable[str] = SECRET_WORDS) -> None:
        """Register every string held under a secret-looking key anywhere in ``value``."""
        words = tuple(secret_words)
        for key, item in _walk(value):
            if isinstance(item, str) and key is not None and any(w in key.lower() for w in words):
                self.add(item)

    def reset_counts(self) -> None:
        self.scanned = dict.fromkeys(RULE_NAMES, 0)
        self.largest = 0

    def __call__(self, text: str, limit: int = MAX_TEXT, extra: Iterable[str] = ()) -> str:
        """``text`` with secrets masked, cut to about ``limit`` characters with a marker when longer.

        ``extra``: literal secrets only this caller knows (a request's own credentials), masked on top
        of the known ones, as are those of :func:`request_secrets` in the current context.

        A secret that straddles the cut is still masked: redaction reads a little past it (at least
        the longest known secret), and the unmasked tail of what was read is dropped, not shown.
        """
        values = _request_secrets.get()
        if extra:
            values = values | frozenset(v for v in extra if isinstance(v, str) and len(v) >= 4)
        own = _literal_pattern(values) if values else None
        if len(text) <= limit:
            return self._redact(text, own)
        slack = max(_SLACK, self._longest, max(map(len, values), default=0))
        head = self._redact(text[: limit + slack], own)
        kept = head[: max(0, min(limit, len(head) - slack))]
        return f"{kept}… [cut: {len(text)} characters in all]"

    def _redact(self, text: str, own: re.Pattern[str] | None = None) -> str:
        self.largest = max(self.largest, len(text))
        for literals in (own, self._known_pattern):
            if literals is not None:
                self.scanned["known"] += len(text)
                text = literals.sub(MASK, text)
        for name, anchor, rule in _RULES:
            text, chars = _apply(text, anchor, rule)
            self.scanned[name] += chars
        return text


def _literal_pattern(values: frozenset[str]) -> re.Pattern[str]:
    """One pattern for a set of literal secrets, longest first (so a secret containing another is masked
    whole). A set of literals: the engine tries each at each position and never backtracks further."""
    return re.compile("|".join(re.escape(v) for v in sorted(values, key=len, reverse=True)))


_request_secrets: ContextVar[frozenset[str]] = ContextVar("underlay_request_secrets", default=frozenset())


@contextlib.contextmanager
def request_secrets(values: Iterable[str]) -> Iterator[None]:
    """Mask ``values`` too in everything redacted in this context (log lines included), for as long as
    the block runs: a request's own credentials, which no config lists (an MCP tool's per-request
    authorization or headers). Shorter than 4 characters they would mask ordinary words, so skipped."""
    fresh = frozenset(v for v in values if isinstance(v, str) and len(v) >= 4)
    token = _request_secrets.set(_request_secrets.get() | fresh)
    try:
        yield
    finally:
        _request_secrets.reset(token)


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


def redact(text: str, limit: int = MAX_TEXT, extra: Iterable[str] = ()) -> str:
    return redactor(text, limit, extra)


def record_error(span: Any, error: BaseException) -> str:
    """Add the ``exception`` event to ``span`` with secrets masked; returns the masked one-line message.

    Why not the SDK's ``record_exception``: it stores the raw message and the whole stack trace, and an
    upstream's error text can quote a key. Spans leave the process (OTLP) and are served back (the
    telemetry API), so they get the same masking (and the same size bound) as log lines.
    """
    text = redactor(str(error))
    span.add_event(
        "exception",
        {"exception.type": type(error).__name__, "exception.message": text, "exception.escaped": True},
    )
    return f"{type(error).__name__}: {text}"
