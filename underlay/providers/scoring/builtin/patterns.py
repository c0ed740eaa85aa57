"""Regular expressions from requests, run with a time limit.

Scoring takes patterns from clients (``parsing_regexes``, ``judge_score_regexes``, and a row's
``expected_answer`` for ``basic::regex_match``) and runs them on text the client also controls. Python's
``re`` has no time limit, so a pattern like ``(a+)+$`` on a long answer could hold the event loop for
minutes. The ``regex`` package (a dependency already, of tokenizers and sacrebleu) takes a ``timeout``;
a search that runs out of it counts as "no match" and says so, at a bounded cost per row.
"""

from __future__ import annotations

import functools
from typing import Any

SEARCH_TIMEOUT_S = 0.25
"""One search's limit: ordinary patterns on an answer take microseconds."""


class PatternError(ValueError):
    """A pattern that does not compile, or a search that ran out of time; the message says which."""


@functools.lru_cache(maxsize=512)
def compile_pattern(pattern: str) -> Any:
    """The compiled pattern (cached: a benchmark's rows often share one); :class:`PatternError` if invalid."""
    import regex  # on the first pattern: the scoring providers load at every start, most never see one

    try:
        return regex.compile(pattern)
    except regex.error as exc:
        raise PatternError(f"{pattern[:80]!r} is not a valid regular expression ({exc})") from None


def search(pattern: Any, text: str) -> Any:
    """``pattern.search(text)`` within :data:`SEARCH_TIMEOUT_S`; :class:`PatternError` when it runs out."""
    try:
        return pattern.search(text, timeout=SEARCH_TIMEOUT_S)
    except TimeoutError:
        raise PatternError(
            f"the pattern {pattern.pattern[:80]!r} took longer than {SEARCH_TIMEOUT_S}s on this text; "
            "simplify it (nested repeats such as (a+)+ backtrack without end)"
        ) from None


def first_group(pattern: Any, text: str) -> str | None:
    """Group 1 of the first match (the whole match when the pattern has no group), or None."""
    found = search(pattern, text)
    if not found:
        return None
    return str(found.group(1) if pattern.groups else found.group(0))
