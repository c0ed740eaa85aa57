"""``inline::rag``: RAG metrics computed with a judge model and an embedding model.

Our own compact versions of the usual definitions, each a handful of short yes/no judge calls so that a
small local model can answer them:

- ``rag::faithfulness``: the share of the answer's statements (its sentences, at most
  :data:`MAX_STATEMENTS`) that the judge finds supported by the context.
- ``rag::answer_relevance``: the judge writes the question the answer responds to; the score is the
  cosine similarity of its embedding with the real question's (an answer that wanders gets a question
  unlike the one asked).
- ``rag::context_precision``: the judge marks each retrieved passage useful or not for reaching the
  reference answer; the score is their average precision, so useful passages ranked first score higher.
- ``rag::context_recall``: the share of the reference answer's statements the judge can attribute to
  the context.

Each row's details (statements and verdicts, the generated question) come back in its score row.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import Field

from underlay.api.errors import InvalidRequestError
from underlay.api.inference import InferenceApi
from underlay.api.scoring import RagParams, ReturnType, ScoringFnParams, ScoringFunction
from underlay.providers.scoring.builtin.embedding import Embedder, cosine
from underlay.providers.scoring.builtin.judge import Judge, JudgeConfig, JudgeFailed, all_rows
from underlay.providers.scoring.builtin.text import as_text

MAX_STATEMENTS = 8
"""Statements judged per answer or reference: bounds the judge calls one row costs."""
MAX_PASSAGES = 10
MAX_CONTEXT_CHARS = 8_000
_SENTENCE = re.compile(r"(?<=[.!?])\s+")
_VERDICT = re.compile(r"(?i)\b(yes|no)\b")


class RagConfig(JudgeConfig):
    default_embedding_model: str | None = Field(default=None, max_length=256)
    embed_batch_size: int = Field(default=64, ge=1, le=2048)


def statements(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCE.split(text.strip()) if s.strip()][:MAX_STATEMENTS]


def passages(context: Any) -> list[str]:
    if isinstance(context, list):
        return [as_text(c) for c in context if as_text(c).strip()][:MAX_PASSAGES]
    text = as_text(context)
    return [text] if text.strip() else []


def verdict(answer: str) -> bool:
    found = _VERDICT.search(answer)
    if found is None:
        raise JudgeFailed(f"the judge gave no yes/no verdict: {answer[:80]!r}")
    return found.group(1).lower() == "yes"


SUPPORTED = """Context:
{context}

Statement: {statement}

Is the statement supported by the context above? Reply with one word: yes or no."""

USEFUL = """Question: {question}
Reference answer: {reference}

Passage:
{passage}

Is this passage useful for arriving at the reference answer to the question? Reply with one word: yes or no."""

QUESTION = """Here is an answer:

{answer}

Write the one question this answer responds to. Reply with the question only."""


def _function(fn_id: str, description: str, columns: list[str], aggregation: str = "average") -> ScoringFunction:
    return ScoringFunction(
        identifier=fn_id,
        provider_id="",
        provider_resource_id=fn_id,
        description=description,
        return_type=ReturnType(type="number"),
        params=RagParams(aggregation_functions=[aggregation]),  # type: ignore[list-item]
        required_columns=columns,
    )


FUNCTIONS: list[ScoringFunction] = [
    _function(
        "rag::faithfulness",
        "Share of the answer's statements supported by the context (judge).",
        ["generated_answer", "context"],
    ),
    _function(
        "rag::answer_relevance",
        "Cosine similarity of the question and the question the judge infers from the answer.",
        ["input_query", "generated_answer"],
    ),
    _function(
        "rag::context_precision",
        "Average precision of the passages the judge finds useful for the reference answer.",
        ["input_query", "expected_answer", "context"],
    ),
    _function(
        "rag::context_recall",
        "Share of the reference answer's statements the judge attributes to the context.",
        ["expected_answer", "context"],
    ),
]


class RagScoringProvider:
    user_params_types: tuple[str, ...] = ()

    def __init__(self, provider_id: str, config: RagConfig, inference: InferenceApi) -> None:
        self.provider_id = provider_id
        self.config = config
        self.judge = Judge(provider_id, inference, config)
        self.embedder = Embedder(
            provider_id, inference, config.embed_batch_size, config.max_attempts, config.retry_delay_seconds
        )

    async def initialize(self) -> None:
        return None

    async def shutdown(self) -> None:
        return None

    async def health(self) -> dict[str, Any]:
        return {"status": "ok"}

    async def list_functions(self) -> list[ScoringFunction]:
        return [f.model_copy(update={"provider_id": self.provider_id}) for f in FUNCTIONS]

    async def _yes(self, model: str, prompt: str) -> bool:
        return verdict((await self.judge.ask(model, prompt, max_tokens=16)).text)

    async def _share(self, model: str, context: str, texts: list[str]) -> dict[str, Any]:
        if not texts:
            return {"score": None, "error": "no statements to check"}
        found = [await self._yes(model, SUPPORTED.format(context=context, statement=s)) for s in texts]
        return {
            "score": sum(found) / len(found),
            "statements": [{"statement": s, "supported": v} for s, v in zip(texts, found, strict=True)],
        }

    async def _precision(self, model: str, row: dict[str, Any]) -> dict[str, Any]:
        chunks = passages(row["context"])
        if not chunks:
            return {"score": None, "error": "context is empty"}
        useful = [
            await self._yes(
                model,
                USEFUL.format(
                    question=as_text(row["input_query"]),
                    reference=as_text(row["expected_answer"]),
                    passage=c[:MAX_CONTEXT_CHARS],
                ),
            )
            for c in chunks
        ]
        hits = 0
        total = 0.0
        for rank, hit in enumerate(useful, start=1):
            if hit:
                hits += 1
                total += hits / rank
        return {"score": total / hits if hits else 0.0, "useful": useful}

    async def _relevance(self, model: str, embedding_model: str, row: dict[str, Any]) -> dict[str, Any]:
        asked = as_text(row["input_query"])
        answer = as_text(row["generated_answer"])
        if not answer.strip() or not asked.strip():
            return {"score": None, "error": "input_query or generated_answer is empty"}
        inferred = (await self.judge.ask(model, QUESTION.format(answer=answer[:MAX_CONTEXT_CHARS]), 64)).text.strip()
        if not inferred:
            return {"score": None, "error": "the judge wrote no question"}
        first, second = await self.embedder.embed(embedding_model, [inferred, asked])
        if isinstance(first, str) or isinstance(second, str):
            return {"score": None, "error": first if isinstance(first, str) else second}
        return {"score": cosine(first, second), "generated_question": inferred}

    async def score(
        self, function: ScoringFunction, params: ScoringFnParams | None, rows: list[dict[str, Any]]
    ) -> list[dict[str, Any]]:
        rag = params if isinstance(params, RagParams) else RagParams()
        model = self.judge.model(rag.judge_model, function)
        name = function.provider_resource_id
        embedding_model = rag.embedding_model or self.config.default_embedding_model
        if name == "rag::answer_relevance" and not embedding_model:
            raise InvalidRequestError(
                f"Scoring function '{name}' needs an embedding model: give params.embedding_model or set "
                f"default_embedding_model in provider '{self.provider_id}'.",
                param=f"scoring_functions.{function.identifier}.embedding_model",
            )

        async def one(row: dict[str, Any]) -> dict[str, Any]:
            try:
                if name == "rag::faithfulness":
                    context = "\n\n".join(passages(row["context"]))[:MAX_CONTEXT_CHARS]
                    return await self._share(model, context, statements(as_text(row["generated_answer"])))
                if name == "rag::context_recall":
                    context = "\n\n".join(passages(row["context"]))[:MAX_CONTEXT_CHARS]
                    return await self._share(model, context, statements(as_text(row["expected_answer"])))
                if name == "rag::context_precision":
                    return await self._precision(model, row)
                if name == "rag::answer_relevance" and embedding_model:
                    return await self._relevance(model, embedding_model, row)
            except JudgeFailed as exc:
                return {"score": None, "error": str(exc)}
            raise InvalidRequestError(f"Provider '{self.provider_id}' has no scoring function '{name}'.")

        return await all_rows([one(row) for row in rows])


async def create_provider(provider_id: str, config: RagConfig, deps: dict[str, Any]) -> RagScoringProvider:
    return RagScoringProvider(provider_id, config, deps["inference"])
