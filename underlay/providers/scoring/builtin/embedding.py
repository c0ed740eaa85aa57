"""``inline::embedding-similarity``: cosine similarity of answer and reference embeddings.

The embeddings come from the inference API (any embedding model it serves, the embedded MiniLM in the
``local`` distribution), in batches. A batch whose embedding call still fails after the retries turns
its rows into error rows; the others keep their scores.
"""

from __future__ import annotations

import asyncio
import math
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from underlay.api.errors import InvalidRequestError, UnderlayError
from underlay.api.inference import EmbeddingsRequest, InferenceApi
from underlay.api.scoring import EmbeddingParams, ReturnType, ScoringFnParams, ScoringFunction
from underlay.providers.scoring.builtin.text import as_text, references


class EmbeddingConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    default_embedding_model: str | None = Field(default=None, max_length=256)
    batch_size: int = Field(default=64, ge=1, le=2048, description="Texts per embeddings call.")
    max_attempts: int = Field(default=3, ge=1, le=10)
    retry_delay_seconds: float = Field(default=0.5, ge=0, le=60)


def cosine(a: list[float], b: list[float]) -> float:
    dot = math.fsum(x * y for x, y in zip(a, b, strict=True))
    norm = math.sqrt(math.fsum(x * x for x in a)) * math.sqrt(math.fsum(y * y for y in b))
    return dot / norm if norm else 0.0


class EmbeddingFailed(Exception):
    pass


class Embedder:
    """Batched embeddings with retries; shared by this provider and the RAG metrics."""

    def __init__(self, provider_id: str, inference: InferenceApi, batch_size: int, attempts: int, delay: float):
        self.provider_id = provider_id
        self.inference = inference
        self.batch_size = batch_size
        self.attempts = attempts
        self.delay = delay

    async def embed_batch(self, model: str, texts: list[str]) -> list[list[float]]:
        last = "no attempt made"
        for attempt in range(self.attempts):
            if attempt:
                await asyncio.sleep(self.delay * attempt)
            try:
                reply = await self.inference.openai_embeddings(EmbeddingsRequest(model=model, input=texts))
            except UnderlayError as exc:
                if exc.status_code < 500:
                    raise
                last = exc.message
                continue
            ordered = sorted(reply.data, key=lambda e: e.index)
            vectors = [e.embedding for e in ordered]
            if len(vectors) != len(texts) or not all(isinstance(v, list) for v in vectors):
                raise EmbeddingFailed("the embedding model returned the wrong number or kind of vectors")
            return [v for v in vectors if isinstance(v, list)]
        raise EmbeddingFailed(f"embeddings failed after {self.attempts} attempts: {last}")

    async def embed(self, model: str, texts: list[str]) -> list[list[float] | str]:
        """A vector per text, or the error message for texts whose batch failed."""
        out: list[list[float] | str] = []
        for start in range(0, len(texts), self.batch_size):
            batch = texts[start : start + self.batch_size]
            try:
                out.extend(await self.embed_batch(model, batch))
            except EmbeddingFailed as exc:
                out.extend([str(exc)] * len(batch))
        return out


FUNCTION = ScoringFunction(
    identifier="embedding::similarity",
    provider_id="",
    provider_resource_id="embedding::similarity",
    description="Cosine similarity (-1..1) of the embeddings of generated_answer and expected_answer "
    "(the best reference when there are several).",
    return_type=ReturnType(type="number"),
    params=EmbeddingParams(aggregation_functions=["average"]),
    required_columns=["generated_answer", "expected_answer"],
)


class EmbeddingSimilarityProvider:
    user_params_types: tuple[str, ...] = ()

    def __init__(self, provider_id: str, config: EmbeddingConfig, inference: InferenceApi) -> None:
        self.provider_id = provider_id
        self.config = config
        self.embedder = Embedder(
            provider_id, inference, config.batch_size, config.max_attempts, config.retry_delay_seconds
        )

    async def initialize(self) -> None:
        return None

    async def shutdown(self) -> None:
        return None

    async def health(self) -> dict[str, Any]:
        return {"status": "ok"}

    async def list_functions(self) -> list[ScoringFunction]:
        return [FUNCTION.model_copy(update={"provider_id": self.provider_id})]

    async def score(
        self, function: ScoringFunction, params: ScoringFnParams | None, rows: list[dict[str, Any]]
    ) -> list[dict[str, Any]]:
        given = params.embedding_model if isinstance(params, EmbeddingParams) else None
        model = given or self.config.default_embedding_model
        if not model:
            raise InvalidRequestError(
                f"Scoring function '{function.identifier}' needs an embedding model: give params.embedding_model "
                f"or set default_embedding_model in provider '{self.provider_id}'.",
                param=f"scoring_functions.{function.identifier}.embedding_model",
            )
        texts: list[str] = []
        spans: list[tuple[int, int] | None] = []  # per row: where its answer and references sit in texts
        for row in rows:
            answer = as_text(row["generated_answer"])
            refs = [r for r in references(row["expected_answer"]) if r.strip()]
            if not answer.strip() or not refs:
                spans.append(None)
                continue
            spans.append((len(texts), len(refs)))
            texts.append(answer)
            texts.extend(refs)
        vectors = await self.embedder.embed(model, texts) if texts else []
        out: list[dict[str, Any]] = []
        for span in spans:
            if span is None:
                out.append({"score": None, "error": "generated_answer or expected_answer is empty"})
                continue
            first, count = span
            answer_vector = vectors[first]
            ref_vectors = vectors[first + 1 : first + 1 + count]
            failed = next((v for v in (answer_vector, *ref_vectors) if isinstance(v, str)), None)
            if failed is not None or isinstance(answer_vector, str):
                out.append({"score": None, "error": failed})
                continue
            out.append({"score": max(cosine(answer_vector, v) for v in ref_vectors if not isinstance(v, str))})
        return out


async def create_provider(
    provider_id: str, config: EmbeddingConfig, deps: dict[str, Any]
) -> EmbeddingSimilarityProvider:
    return EmbeddingSimilarityProvider(provider_id, config, deps["inference"])
