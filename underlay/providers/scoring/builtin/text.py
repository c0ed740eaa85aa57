"""Answer normalisers and parsers the text metrics share: pure functions, no model.

Why our own normaliser rather than a library's: the rules are short and the exact-match path must score
tens of thousands of rows a second, so it is plain ``str`` work with precompiled tables and patterns.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from fractions import Fraction
from typing import Any

_PUNCTUATION = str.maketrans("", "", string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def as_text(value: Any) -> str:
    return value if isinstance(value, str) else str(value)


def references(value: Any) -> list[str]:
    """``expected_answer`` as a list of references: a string is one, a list is several."""
    if isinstance(value, list):
        return [as_text(v) for v in value] or [""]
    return [as_text(value)]


def normalise(text: str) -> str:
    """Lower case, no punctuation, no articles, single spaces (the usual answer normalisation for QA)."""
    return " ".join(_ARTICLES.sub(" ", text.lower().translate(_PUNCTUATION)).split())


def token_f1(prediction: str, reference: str) -> float:
    """Token-overlap F1 of the normalised texts (1.0 when both are empty)."""
    predicted = normalise(prediction).split()
    expected = normalise(reference).split()
    if not predicted or not expected:
        return float(predicted == expected)
    common = sum((Counter(predicted) & Counter(expected)).values())
    if common == 0:
        return 0.0
    precision = common / len(predicted)
    recall = common / len(expected)
    return 2 * precision * recall / (precision + recall)


# ---- multiple choice ------------------------------------------------------------------------------

CHOICE_REGEXES: tuple[re.Pattern[str], ...] = (
    re.compile(r"\b(?i:answer)\s*(?i:is|:)?\s*(?i:option\s*)?[:：]?\s*\**\(?([A-J])\)?\**(?![A-Za-z])"),
    re.compile(r"\b(?i:option|choice)\s*\(?([A-J])\)?(?![A-Za-z])"),
    re.compile(r"^\s*\**\(?([A-J])\)?\**(?:[.):\s]|$)"),
)
"""Where a model states its choice, most explicit first: "The answer is (B)", "Option C", "D. ..."."""


def parse_choice(text: str) -> str | None:
    """The capital letter a model chose (a lower-case "a" is a word, not a choice)."""
    for pattern in CHOICE_REGEXES:
        found = pattern.search(text)
        if found:
            return found.group(1)
    return None


def expected_choice(value: Any) -> str:
    text = as_text(value).strip().strip("()*. ").upper()
    return text[:1] if len(text) > 1 and not text[1].isalpha() else text


# ---- math answers ---------------------------------------------------------------------------------

_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?(?:/\d+)?")
_ANSWER_IS = re.compile(r"(?i)(?:final answer|answer)\s*(?:is|:)\s*(.+)")
_FRAC = re.compile(r"\\[dt]?frac\{([^{}]+)\}\{([^{}]+)\}")
_TEXT = re.compile(r"\\(?:text|mathrm|mbox)\{([^{}]*)\}")


def last_boxed(text: str) -> str | None:
    """The content of the last ``\\boxed{...}`` (nested braces kept), or ``None``."""
    start = text.rfind("\\boxed{")
    if start < 0:
        return None
    depth = 0
    begin = start + len("\\boxed{")
    for index in range(begin - 1, len(text)):
        char = text[index]
        if char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
            if depth == 0:
                return text[begin:index]
    return None


def extract_math_answer(text: str) -> str | None:
    """The answer a solution states: the last ``\\boxed{}``, else "the answer is X", else its last number."""
    boxed = last_boxed(text)
    if boxed is not None:
        return boxed
    stated = _ANSWER_IS.findall(text)
    if stated:
        return stated[-1].strip().splitlines()[0]
    numbers = _NUMBER.findall(text)
    return numbers[-1] if numbers else None


def normalise_math(text: str) -> str:
    """A canonical spelling: no ``$``, spaces, ``\\left``/``\\right``, units in ``\\text{}``, trailing dot;
    ``\\frac{a}{b}`` as ``a/b``; thousands separators dropped."""
    value = _TEXT.sub(r"\1", text)
    for token in ("$", "\\left", "\\right", "\\!", "\\,", "\\;", "^\\circ", "^{\\circ}", "\\%", "%"):
        value = value.replace(token, "")
    value = _FRAC.sub(r"(\1)/(\2)", value)
    value = "".join(value.split()).rstrip(".")
    if re.fullmatch(r"-?\d{1,3}(,\d{3})+(\.\d+)?", value):
        value = value.replace(",", "")
    return value


def math_value(text: str) -> Fraction | None:
    """The number a normalised answer spells (``3``, ``-0.5``, ``(3)/(4)``, ``3/4``), or ``None``."""
    candidate = text.replace("(", "").replace(")", "")
    try:
        return Fraction(candidate)
    except (ValueError, ZeroDivisionError):
        return None


def math_equal(predicted: str, expected: str) -> bool:
    a, b = normalise_math(predicted), normalise_math(expected)
    if a == b:
        return True
    x, y = math_value(a), math_value(b)
    return x is not None and y is not None and abs(x - y) <= Fraction(1, 10**9) * max(1, abs(y))
