"""``inline::llm-as-judge``: a chat model served by the inference API grades each row.

A judge function is a prompt template (``{input_query}``, ``{generated_answer}``, ``{expected_answer}``,
``{context}``, filled by plain replacement so a template may hold JSON braces) and score regexes: the
first regex that matches the judge's answer gives the score (its group 1; a number when it reads as one).

Why a failing judge fails only its row: a long scoring run over a flaky or overloaded model should keep
every score it got. A call that fails with a server-side error or times out is retried
(``max_attempts``, with a growing pause); one that still fails, or an answer with no score, becomes a row
with ``score: null`` and ``error``, which the aggregates leave out and count. A client error from the
inference API (an unknown judge model, a refused request) is the same for every row, so it fails the
call at once with that error.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from underlay.api.errors import InvalidRequestError, UnderlayError
from underlay.api.inference import ChatCompletion, ChatCompletionRequest, InferenceApi, UserMessage
from underlay.api.scoring import (
    TEMPLATE_FIELDS,
    LLMAsJudgeParams,
    ReturnType,
    ScoringFnParams,
    ScoringFunction,
)
from underlay.providers.scoring.builtin.patterns import PatternError, compile_pattern, first_group

MAX_FEEDBACK_CHARS = 2_000
"""How much of the judge's answer a score row keeps."""

CORRECTNESS_TEMPLATE = """You grade an answer against a reference answer.

Question: {input_query}
Reference answer: {expected_answer}
Answer to grade: {generated_answer}

Does the answer to grade give the same answer as the reference? Ignore wording, style and length.
Reply with exactly one line: "Score: 1" if it does, "Score: 0" if it does not."""

SCORE_01 = [r"(?i)score\s*[:=]?\s*\**\s*([01])\b"]


class JudgeConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    default_judge_model: str | None = Field(
        default=None, max_length=256, description="Used when a call gives no params.judge_model."
    )
    max_tokens: int = Field(default=256, ge=1, le=4096, description="The judge's answer length.")
    max_attempts: int = Field(default=3, ge=1, le=10, description="Tries per judge call before the row errors.")
    retry_delay_seconds: float = Field(default=0.5, ge=0, le=60)
    timeout_seconds: float = Field(
        default=300, gt=0, le=3600, description="One judge call's limit, including any wait inside the model server."
    )
    max_concurrency: int = Field(
        default=2,
        ge=1,
        le=64,
        description="Judge calls in flight at once: 1 for a local model that serves one request at a time "
        "(queued calls would spend their timeout waiting), more for a remote service.",
    )


def fill(template: str, row: dict[str, Any]) -> str:
    """``template`` with each ``{field}`` replaced by the row's value (a list of contexts joined)."""
    out = template
    for name in TEMPLATE_FIELDS:
        key = "{" + name + "}"
        if key in out:
            value = row.get(name)
            text = "\n\n".join(str(v) for v in value) if isinstance(value, list) else str(value)
            out = out.replace(key, text)
    return out


def parse_score(answer: str, regexes: list[Any]) -> float | str | None:
    """The first pattern's group 1 (or whole match) as a number, else as a label; None when none match.
    Raises :class:`PatternError` when a pattern runs out of time on this answer."""
    for pattern in regexes:
        raw = first_group(pattern, answer)
        if raw is not None:
            try:
                return float(raw)
            except ValueError:
                return raw.strip()
    return None


async def all_rows(calls: list[Coroutine[Any, Any, dict[str, Any]]]) -> list[dict[str, Any]]:
    """Run the per-row calls; the first error that fails the call (a 4xx) cancels the rest and is raised."""
    try:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(call) for call in calls]
    except ExceptionGroup as failed:
        raise failed.exceptions[0] from None
    return [task.result() for task in tasks]


class JudgeFailed(Exception):
    """A judge call failed after its retries; the message goes into the row's ``error``."""


@dataclass
class Answer:
    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0


class Judge:
    """Chat calls with retries, a timeout and a concurrency limit; shared by the judge and RAG providers."""

    def __init__(self, provider_id: str, inference: InferenceApi, config: JudgeConfig) -> None:
        self.provider_id = provider_id
        self.inference = inference
        self.config = config
        self.slots = asyncio.Semaphore(config.max_concurrency)

    def model(self, given: str | None, function: ScoringFunction) -> str:
        model = given or self.config.default_judge_model
        if not model:
            raise InvalidRequestError(
                f"Scoring function '{function.identifier}' needs a judge model: give params.judge_model "
                f"(a chat model of GET /v1/models) or set default_judge_model in provider '{self.provider_id}'.",
                param=f"scoring_functions.{function.identifier}.judge_model",
            )
        return model

    async def ask(self, model: str, prompt: str, max_tokens: int | None = None) -> Answer:
        request = ChatCompletionRequest(
            model=model,
            messages=[UserMessage(content=prompt)],
            temperature=0,
            max_tokens=max_tokens or self.config.max_tokens,
        )
        last = "no attempt made"
        for attempt in range(self.config.max_attempts):
            if attempt:
                await asyncio.sleep(self.config.retry_delay_seconds * attempt)
            try:
                async with self.slots:
                    reply = await asyncio.wait_for(
                        self.inference.openai_chat_completion(request), self.config.timeout_seconds
                    )
            except UnderlayError as exc:
                if exc.status_code < 500:  # the same for every row: fail the call with it
                    raise
                last = exc.message
                continue
            except TimeoutError:
                last = f"the judge did not answer within {self.config.timeout_seconds:g} s"
                continue
            if not isinstance(reply, ChatCompletion):
                raise JudgeFailed("the judge model streamed; expected one chat completion")
            usage = reply.usage
            return Answer(
                reply.choices[0].message.content or "" if reply.choices else "",
                usage.prompt_tokens if usage else 0,
                usage.completion_tokens if usage else 0,
            )
        raise JudgeFailed(f"judge call failed after {self.config.max_attempts} attempts: {last}")


def _judge_function(fn_id: str, description: str, params: LLMAsJudgeParams, columns: list[str]) -> ScoringFunction:
    return ScoringFunction(
        identifier=fn_id,
        provider_id="",
        provider_resource_id=fn_id,
        description=description,
        return_type=ReturnType(type="number"),
        params=params,
        required_columns=columns,
    )


FUNCTIONS: list[ScoringFunction] = [
    _judge_function(
        "llm-as-judge::base",
        "Your own judge: give params.prompt_template and params.judge_score_regexes when scoring.",
        LLMAsJudgeParams(),
        [],
    ),
    _judge_function(
        "llm-as-judge::correctness",
        "1 when the judge finds generated_answer gives the same answer as expected_answer, else 0.",
        LLMAsJudgeParams(
            prompt_template=CORRECTNESS_TEMPLATE,
            judge_score_regexes=SCORE_01,
            max_tokens=16,  # one line: "Score: 1"
            aggregation_functions=["accuracy"],
        ),
        ["input_query", "generated_answer", "expected_answer"],
    ),
]


class JudgeScoringProvider:
    user_params_types: tuple[str, ...] = ("llm_as_judge",)

    def __init__(self, provider_id: str, config: JudgeConfig, inference: InferenceApi) -> None:
        self.provider_id = provider_id
        self.config = config
        self.judge = Judge(provider_id, inference, config)

    async def initialize(self) -> None:
        return None

    async def shutdown(self) -> None:
        return None

    async def health(self) -> dict[str, Any]:
        return {"status": "ok"}

    async def list_functions(self) -> list[ScoringFunction]:
        return [f.model_copy(update={"provider_id": self.provider_id}) for f in FUNCTIONS]

    async def score(
        self, function: ScoringFunction, params: ScoringFnParams | None, rows: list[dict[str, Any]]
    ) -> list[dict[str, Any]]:
        if not isinstance(params, LLMAsJudgeParams):
            raise InvalidRequestError(
                f"Scoring function '{function.identifier}' takes llm_as_judge params.",
                param=f"scoring_functions.{function.identifier}",
            )
        where = f"scoring_functions.{function.identifier}"
        if not params.prompt_template:
            raise InvalidRequestError(
                f"Scoring function '{function.identifier}' needs params.prompt_template.", param=where
            )
        if not params.judge_score_regexes:
            raise InvalidRequestError(
                f"Scoring function '{function.identifier}' needs params.judge_score_regexes.", param=where
            )
        template = params.prompt_template
        for index, row in enumerate(rows):
            for name in TEMPLATE_FIELDS:
                if "{" + name + "}" in template and row.get(name) is None:
                    raise InvalidRequestError(
                        f"row {index} has no '{name}', which the judge template of '{function.identifier}' uses.",
                        param=f"input_rows[{index}].{name}",
                        code="missing_column",
                    )
        model = self.judge.model(params.judge_model, function)
        regexes = [compile_pattern(r) for r in params.judge_score_regexes]

        async def one(row: dict[str, Any]) -> dict[str, Any]:
            try:
                answer = await self.judge.ask(model, fill(template, row), params.max_tokens)
            except JudgeFailed as exc:
                return {"score": None, "error": str(exc)}
            try:
                score = parse_score(answer.text, regexes)
            except PatternError as exc:
                return {"score": None, "judge_feedback": answer.text[:MAX_FEEDBACK_CHARS], "error": str(exc)}
            out: dict[str, Any] = {
                "score": score,
                "judge_feedback": answer.text[:MAX_FEEDBACK_CHARS],
                "judge_usage": {"prompt_tokens": answer.prompt_tokens, "completion_tokens": answer.completion_tokens},
            }
            if score is None:
                out["error"] = "the judge's answer matched none of judge_score_regexes"
            return out

        return await all_rows([one(row) for row in rows])


async def create_provider(provider_id: str, config: JudgeConfig, deps: dict[str, Any]) -> JudgeScoringProvider:
    return JudgeScoringProvider(provider_id, config, deps["inference"])
