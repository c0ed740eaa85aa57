"""The steps of synthetic data generation, each a small function: sources, generation, dedup, judging.

Kept apart from the router so each step can be read, tested and swapped alone: a scoring function of
the Scoring API can replace :func:`judge_pair` later without touching generation, and :func:`dedup`
is pure. Every model call goes through the inference router as the caller (model access policy,
guardrails, quotas and spans apply), with a JSON schema as ``response_format`` so even a small local
model answers in shape.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

from underlay.api.errors import UpstreamError
from underlay.api.inference import ChatCompletion, ChatCompletionRequest, content_text
from underlay.api.synthetic_data_generation import DialogMessage

Chat = Callable[[ChatCompletionRequest], Awaitable[Any]]
"""The inference router's ``openai_chat_completion``."""

PASSAGE_CHARS = 1_500
"""How much text one generation call reads: enough for a few facts, small enough for a 0.5B model."""


@dataclass(frozen=True)
class Source:
    """One text pairs are written from, and how a row names it (``documents[0]``, ``file-...``)."""

    ref: str
    text: str


@dataclass(frozen=True)
class Pair:
    question: str
    answer: str
    source: Source
    score: int | None = None


def document_sources(documents: list[str]) -> list[Source]:
    return [Source(f"documents[{i}]", text) for i, text in enumerate(documents)]


def dialog_sources(dialogs: list[list[DialogMessage]]) -> list[Source]:
    return [
        Source(f"dialogs[{i}]", "\n".join(f"{m.role}: {m.content}" for m in dialog)) for i, dialog in enumerate(dialogs)
    ]


def passages(ref: str, chunks: Iterable[str], limit: int) -> list[Source]:
    """A file's chunks joined into passages of about :data:`PASSAGE_CHARS`, at most ``limit`` of them."""
    out: list[Source] = []
    current = ""
    for chunk in chunks:
        if current and len(current) + len(chunk) > PASSAGE_CHARS:
            out.append(Source(ref, current))
            current = ""
            if len(out) >= limit:
                return out
        current = f"{current}\n{chunk}" if current else chunk
    if current and len(out) < limit:
        out.append(Source(ref, current[: PASSAGE_CHARS * 2]))
    return out


def _schema(name: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"type": "json_schema", "json_schema": {"name": name, "schema": schema, "strict": True}}


def _pairs_schema(n: int) -> dict[str, Any]:
    pair = {
        "type": "object",
        "properties": {"question": {"type": "string"}, "answer": {"type": "string"}},
        "required": ["question", "answer"],
        "additionalProperties": False,
    }
    return {
        "type": "object",
        "properties": {"pairs": {"type": "array", "items": pair, "minItems": 1, "maxItems": n}},
        "required": ["pairs"],
        "additionalProperties": False,
    }


_SCORE_SCHEMA = {
    "type": "object",
    "properties": {"score": {"type": "integer", "enum": [1, 2, 3, 4, 5]}},
    "required": ["score"],
    "additionalProperties": False,
}


async def _json_reply(chat: Chat, request: dict[str, Any], model: str) -> Any:
    reply = await chat(ChatCompletionRequest.model_validate(request))
    if not isinstance(reply, ChatCompletion):
        raise UpstreamError(model, "streamed an answer; expected one chat completion")
    text = content_text(reply.choices[0].message.content) if reply.choices else ""
    try:
        return json.loads(text)
    except ValueError:
        raise UpstreamError(model, f"did not answer in JSON ({text[:120]!r})") from None


async def generate_pairs(
    chat: Chat, model: str, source: Source, n: int, *, temperature: float, seed: int | None
) -> list[Pair]:
    """Up to ``n`` pairs the model writes from ``source``; blank or malformed pairs are left out."""
    prompt = (
        f"Read the text below and write {n} question-and-answer pair{'s' if n > 1 else ''} that test "
        "understanding of it. Each question must be answerable from the text alone; each answer is short "
        'and taken from the text. Reply in JSON: {"pairs": [{"question": ..., "answer": ...}]}.\n\n'
        f"Text:\n{source.text}"
    )
    request: dict[str, Any] = {
        "model": model,
        "messages": [{"role": "user", "content": prompt}],
        "temperature": temperature,
        "max_tokens": 120 * n + 60,
        "response_format": _schema("qa_pairs", _pairs_schema(n)),
    }
    if seed is not None:
        request["seed"] = seed
    data = await _json_reply(chat, request, model)
    items = data.get("pairs") if isinstance(data, dict) else None
    out: list[Pair] = []
    for item in items if isinstance(items, list) else []:
        if not isinstance(item, dict):
            continue
        question, answer = item.get("question"), item.get("answer")
        if isinstance(question, str) and isinstance(answer, str) and question.strip() and answer.strip():
            out.append(Pair(question.strip()[:2000], answer.strip()[:2000], source))
    return out[:n]


def normalised(text: str) -> str:
    """Case, accents, punctuation and spacing folded away: two wordings of one question compare equal."""
    folded = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode().lower()
    return " ".join(re.sub(r"[^a-z0-9]+", " ", folded).split())


def dedup(pairs: list[Pair]) -> list[Pair]:
    """The first pair of each normalised question, in order."""
    seen: set[str] = set()
    kept: list[Pair] = []
    for pair in pairs:
        key = normalised(pair.question)
        if key and key not in seen:
            seen.add(key)
            kept.append(pair)
    return kept


async def judge_pair(chat: Chat, model: str, pair: Pair) -> int:
    """A 1-5 grade: is the answer correct and supported by the source text?"""
    prompt = (
        "Grade the answer to the question using only the source text. 5: correct and fully supported; "
        '3: partly right or vague; 1: wrong or not in the text. Reply in JSON: {"score": <1-5>}.\n\n'
        f"Source text:\n{pair.source.text}\n\nQuestion: {pair.question}\nAnswer: {pair.answer}"
    )
    request = {
        "model": model,
        "messages": [{"role": "user", "content": prompt}],
        "temperature": 0,
        "max_tokens": 20,
        "response_format": _schema("grade", _SCORE_SCHEMA),
    }
    data = await _json_reply(chat, request, model)
    score = data.get("score") if isinstance(data, dict) else None
    if not isinstance(score, int) or not 1 <= score <= 5:
        raise UpstreamError(model, f"graded outside 1-5 ({str(score)[:40]})")
    return score
