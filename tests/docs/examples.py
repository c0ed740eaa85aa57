"""Collect the code blocks of README.md and docs/**/*.md with the marks writers put before them.

Docs drift as the code grows, so every block is a test. Sybil's Markdown lexers find the fences and the
``<!-- example: KIND ... -->`` comments (a library that does this job well, rather than a parser of our
own); this module pairs each fence with the comment right before it and reads the mark. The marks are
documented for writers in docs/writing-docs.md.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from sybil import Document
from sybil.parsers.markdown.lexers import DirectiveInHTMLCommentLexer, FencedCodeBlockLexer

ROOT = Path(__file__).resolve().parents[2]
KINDS = {"config", "fragment", "run", "output", "needs", "placeholder", "text"}
_BETWEEN = re.compile(r"\s*-->\s*")


@dataclass
class Example:
    """One fenced block: where it is, its language and source, and the mark before it (if any)."""

    page: str
    line: int
    language: str
    source: str
    kind: str = ""
    options: dict[str, str] = field(default_factory=dict)
    flags: set[str] = field(default_factory=set)
    reason: str = ""
    index: int = 0

    @property
    def id(self) -> str:
        return f"{self.page}:{self.line}"


def pages() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def _mark(arguments: str) -> tuple[str, dict[str, str], set[str], str]:
    kind, _, rest = arguments.strip().partition(" ")
    if kind not in KINDS:
        raise ValueError(f"unknown example mark {kind!r}; use one of {', '.join(sorted(KINDS))}")
    if kind in ("needs", "placeholder", "text"):  # free text: what it needs, or why it is not code
        return kind, {}, set(), rest.strip()
    options: dict[str, str] = {}
    flags: set[str] = set()
    for word in shlex.split(rest):
        key, eq, value = word.partition("=")
        if eq:
            options[key] = value
        else:
            flags.add(key)
    return kind, options, flags, ""


def collect(path: Path) -> list[Example]:
    """The page's blocks in order, each with its mark; a mark not followed by a fence is an error."""
    text = path.read_text()
    document = Document(text, str(path))
    marks = list(DirectiveInHTMLCommentLexer("example")(document))
    fences = list(FencedCodeBlockLexer(r"[\w-]*")(document))
    relative = str(path.relative_to(ROOT))
    examples: list[Example] = []
    for index, fence in enumerate(fences):
        example = Example(
            page=relative,
            line=text.count("\n", 0, fence.start) + 1,
            language=str(fence.lexemes["language"]),
            source=str(fence.lexemes["source"]),
            index=index,
        )
        for mark in marks:
            if _BETWEEN.fullmatch(text, mark.end, fence.start):
                example.kind, example.options, example.flags, example.reason = _mark(str(mark.lexemes["arguments"]))
        examples.append(example)
    for mark in marks:
        if not any(_BETWEEN.fullmatch(text, mark.end, fence.start) for fence in fences):
            line = text.count("\n", 0, mark.start) + 1
            raise ValueError(f"{relative}:{line}: an example mark must sit right before a code fence")
    return examples


def collect_all() -> list[Example]:
    return [example for path in pages() for example in collect(path)]
