"""Graders: what turns one row (its ``item`` and, when the run sampled, its ``sample``) into a verdict.

A grader is anything with a ``name``, a ``type`` and ``async grade(namespaces) -> GradeResult``
(:class:`Grader`). The four OpenAI testing criteria are built here from their contract models by
:func:`build_grader`; another API (the extended eval API's scoring functions, for one) adds its own
graders by implementing the same protocol, and the run loop (:mod:`.runner`) cannot tell them apart.

Failures have two kinds. A :class:`RowError` with ``retryable=False`` is the row's own fault (a template
reference it lacks): retrying cannot help, so the row ends ``error`` at once. Anything else (a judge
model that is down, a judge answer that does not parse) is retried by the run loop within its limits,
then only that row ends ``error``; the run goes on.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from underlay.api.evals import (
    LabelModelGrader,
    ScoreModelGrader,
    StringCheckGrader,
    TestingCriterion,
    TextSimilarityGrader,
    message_text,
)
from underlay.api.inference import ChatCompletion, ChatCompletionRequest
from underlay.core.eval_engine.metrics import cosine, text_score
from underlay.core.eval_engine.templates import TemplateError, render

ChatFn = Callable[[ChatCompletionRequest], Awaitable[Any]]
"""A chat completion call (the inference router's ``openai_chat_completion``)."""
EmbedFn = Callable[[list[str]], Awaitable[list[list[float]]]]
"""Embeds texts with the run's embedding model (for ``cosine``)."""
JUDGE_MAX_TOKENS = 96


class RowError(Exception):
    """A failure of one row; ``retryable`` says whether trying again may help."""

    def __init__(self, code: str, message: str, *, retryable: bool = True) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.retryable = retryable


@dataclass
class GradeResult:
    """One grader's verdict; ``sample`` keeps a judge's own answer and usage for the output item."""

    name: str
    type: str
    score: float
    passed: bool
    sample: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "type": self.type,
            "score": self.score,
            "passed": self.passed,
            "sample": self.sample,
            **self.extra,
        }


@dataclass(frozen=True)
class RowInput:
    """One row as graders and candidates see it: its position, ``item``, ``sample`` and call tags."""

    index: int
    item: dict[str, Any]
    sample: dict[str, Any] | None = None
    tags: Mapping[str, str] = field(default_factory=dict)
    """Metadata for model calls made for this row (run and row ids), so they can be found and counted."""

    @property
    def namespaces(self) -> dict[str, Any]:
        return {"item": self.item, "sample": self.sample}


class Grader(Protocol):
    name: str
    type: str

    async def grade(self, row: RowInput) -> GradeResult: ...


def _render(template: str, namespaces: Mapping[str, Any]) -> str:
    try:
        return render(template, namespaces)
    except TemplateError as exc:
        raise RowError("invalid_template_reference", str(exc), retryable=False) from None


class StringCheck:
    def __init__(self, spec: StringCheckGrader) -> None:
        self.spec = spec
        self.name = spec.name
        self.type: str = spec.type

    async def grade(self, row: RowInput) -> GradeResult:
        namespaces = row.namespaces
        value = _render(self.spec.input, namespaces)
        reference = _render(self.spec.reference, namespaces)
        op = self.spec.operation
        if op == "eq":
            ok = value == reference
        elif op == "ne":
            ok = value != reference
        elif op == "like":
            ok = reference in value
        else:
            ok = reference.lower() in value.lower()
        return GradeResult(self.name, self.type, 1.0 if ok else 0.0, ok)


class TextSimilarity:
    def __init__(self, spec: TextSimilarityGrader, embed: EmbedFn | None) -> None:
        self.spec = spec
        self.name = spec.name
        self.type: str = spec.type
        self.embed = embed

    async def grade(self, row: RowInput) -> GradeResult:
        namespaces = row.namespaces
        value = _render(self.spec.input, namespaces)
        reference = _render(self.spec.reference, namespaces)
        metric = self.spec.evaluation_metric
        if metric == "cosine":
            if self.embed is None:
                raise RowError("no_embedding_model", "cosine similarity needs an embedding model", retryable=False)
            vectors = await self.embed([value, reference])
            score = cosine(vectors[0], vectors[1])
        else:
            score = text_score(metric, value, reference)
        score = round(score, 6)
        return GradeResult(self.name, self.type, score, score >= self.spec.pass_threshold)


def _judge_messages(spec: LabelModelGrader | ScoreModelGrader, namespaces: Mapping[str, Any]) -> list[dict[str, str]]:
    return [{"role": m.role, "content": _render(message_text(m.content), namespaces)} for m in spec.input]


async def _ask_judge(
    chat: ChatFn, model: str, messages: list[dict[str, str]], schema: dict[str, Any], extra: Mapping[str, Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """One structured-output call to the judge; (parsed answer, sample record). Unparseable → retryable."""
    request = ChatCompletionRequest.model_validate(
        {
            "model": model,
            "messages": messages,
            "max_tokens": JUDGE_MAX_TOKENS,
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "verdict", "schema": schema, "strict": True},
            },
            **extra,
        }
    )
    reply = await chat(request)
    if not isinstance(reply, ChatCompletion):
        raise RowError("judge_streamed", f"judge model '{model}' streamed; one completion was expected")
    text = reply.choices[0].message.content or "" if reply.choices else ""
    usage = reply.usage.model_dump() if reply.usage is not None else {}
    record = {"model": model, "output": text[:4000], "usage": usage}
    try:
        answer = json.loads(text)
    except ValueError:
        raise RowError(
            "judge_unparseable", f"judge model '{model}' answered with text that is not JSON: {text[:200]!r}"
        ) from None
    if not isinstance(answer, dict):
        raise RowError("judge_unparseable", f"judge model '{model}' answered {text[:200]!r}, not a JSON object")
    return answer, record


class LabelModel:
    def __init__(self, spec: LabelModelGrader, chat: ChatFn, metadata: Mapping[str, str]) -> None:
        self.spec = spec
        self.name = spec.name
        self.type: str = spec.type
        self.chat = chat
        self.metadata = dict(metadata)

    async def grade(self, row: RowInput) -> GradeResult:
        namespaces = row.namespaces
        labels = self.spec.labels
        messages = _judge_messages(self.spec, namespaces)
        messages.append(
            {
                "role": "system",
                "content": 'Answer with a JSON object {"label": ...} whose label is exactly one of: '
                + ", ".join(json.dumps(label) for label in labels),
            }
        )
        schema = {
            "type": "object",
            "properties": {"label": {"type": "string", "enum": labels}},
            "required": ["label"],
            "additionalProperties": False,
        }
        answer, record = await _ask_judge(
            self.chat,
            self.spec.model,
            messages,
            schema,
            {"metadata": {**self.metadata, **row.tags, "grader": self.name[:400]}},
        )
        label = answer.get("label")
        if label not in labels:
            raise RowError(
                "judge_invalid_label",
                f"judge model '{self.spec.model}' chose {str(label)[:80]!r}, not one of the labels",
            )
        passed = label in self.spec.passing_labels
        return GradeResult(self.name, self.type, 1.0 if passed else 0.0, passed, sample=record, extra={"label": label})


class ScoreModel:
    def __init__(self, spec: ScoreModelGrader, chat: ChatFn, metadata: Mapping[str, str]) -> None:
        self.spec = spec
        self.name = spec.name
        self.type: str = spec.type
        self.chat = chat
        self.metadata = dict(metadata)

    async def grade(self, row: RowInput) -> GradeResult:
        namespaces = row.namespaces
        low, high = self.spec.range or (0.0, 1.0)
        messages = _judge_messages(self.spec, namespaces)
        messages.append(
            {"role": "system", "content": f'Answer with a JSON object {{"score": <number from {low:g} to {high:g}>}}.'}
        )
        schema = {
            "type": "object",
            "properties": {"score": {"type": "number"}},
            "required": ["score"],
            "additionalProperties": False,
        }
        extra: dict[str, Any] = {"metadata": {**self.metadata, **row.tags, "grader": self.name[:400]}}
        params = self.spec.sampling_params
        if params is not None:
            extra.update(
                {
                    k: v
                    for k, v in {"temperature": params.temperature, "top_p": params.top_p, "seed": params.seed}.items()
                    if v is not None
                }
            )
        answer, record = await _ask_judge(self.chat, self.spec.model, messages, schema, extra)
        score = answer.get("score")
        if isinstance(score, bool) or not isinstance(score, int | float) or not low <= float(score) <= high:
            raise RowError(
                "judge_invalid_score",
                f"judge model '{self.spec.model}' scored {str(score)[:40]}, outside {low:g}..{high:g}",
            )
        threshold = self.spec.pass_threshold if self.spec.pass_threshold is not None else (low + high) / 2
        return GradeResult(self.name, self.type, float(score), float(score) >= threshold, sample=record)


def build_grader(
    criterion: TestingCriterion, *, chat: ChatFn | None, embed: EmbedFn | None, metadata: Mapping[str, str]
) -> Grader:
    """The grader for one testing criterion; ``metadata`` tags a judge's chat calls (run and row)."""
    if isinstance(criterion, StringCheckGrader):
        return StringCheck(criterion)
    if isinstance(criterion, TextSimilarityGrader):
        return TextSimilarity(criterion, embed)
    if chat is None:
        raise RowError("no_inference", f"grader '{criterion.name}' needs the inference API", retryable=False)
    if isinstance(criterion, LabelModelGrader):
        return LabelModel(criterion, chat, metadata)
    return ScoreModel(criterion, chat, metadata)
