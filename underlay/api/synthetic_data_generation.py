"""Synthetic data generation: question/answer pairs written by a model from documents, dialogs or the files
of a vector store, filtered, and saved as an ``eval/question-answer`` dataset.

``POST /v1/synthetic-data-generation/generate`` runs the whole loop in one request: gather the sources
(texts given inline, transcripts, or the chunks of a vector store's files), ask ``model`` for pairs as JSON
(constrained by a JSON schema, so a small local model still answers in shape), drop duplicates (by
normalised question), optionally ask ``filter.judge_model`` to grade each pair 1-5 against its source and
keep those at or above ``filter.min_score``, then register the survivors with the Datasets API.

Why one bounded request and not a job: the sizes below keep a run to a few dozen model calls, which a
client can wait for, and the result is a dataset id to use at once (an eval run, a fine-tuning job). A
bigger set is several requests, each appending its pairs to a dataset of the caller's (``append_to``).
"""

from __future__ import annotations

from typing import Literal, Protocol

from pydantic import ConfigDict, Field, field_validator, model_validator

from underlay.api.base import ApiModel
from underlay.api.datasets import DATASET_ID_PATTERN
from underlay.api.response_items import check_metadata
from underlay.api.routes import Route

__all__ = [
    "DialogMessage",
    "GenerateRequest",
    "GenerationStatistics",
    "MAX_PAIRS",
    "MAX_SOURCES",
    "MAX_SOURCE_CHARS",
    "PairFilter",
    "ROUTES",
    "SyntheticDataGenerationApi",
    "SyntheticDataResponse",
    "SyntheticPair",
]

MAX_SOURCES = 20
"""Texts one request reads (documents, dialogs or vector-store passages): one model call each."""
MAX_SOURCE_CHARS = 20_000
MAX_PAIRS = 100
MAX_PAIRS_PER_SOURCE = 5


class DialogMessage(ApiModel):
    model_config = ConfigDict(extra="forbid")

    role: Literal["system", "user", "assistant"]
    content: str = Field(max_length=MAX_SOURCE_CHARS)


class PairFilter(ApiModel):
    """What survives: duplicates are dropped (``dedup``); with ``judge_model``, so are pairs it grades
    below ``min_score`` (1-5: is the answer right and supported by the source?)."""

    model_config = ConfigDict(extra="forbid")

    dedup: bool = True
    judge_model: str | None = Field(default=None, min_length=1, max_length=256)
    min_score: int = Field(default=3, ge=1, le=5)


class GenerateRequest(ApiModel):
    """Exactly one of ``documents``, ``dialogs`` and ``vector_store_id``."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(min_length=1, max_length=256, description="The chat model that writes the pairs.")
    documents: list[str] | None = Field(default=None, min_length=1, max_length=MAX_SOURCES)
    dialogs: list[list[DialogMessage]] | None = Field(default=None, min_length=1, max_length=MAX_SOURCES)
    vector_store_id: str | None = Field(default=None, min_length=1, max_length=256)
    max_sources: int = Field(default=10, ge=1, le=MAX_SOURCES, description="Passages read from the vector store.")
    pairs_per_source: int = Field(default=2, ge=1, le=MAX_PAIRS_PER_SOURCE)
    max_pairs: int = Field(default=20, ge=1, le=MAX_PAIRS)
    filter: PairFilter = Field(default_factory=PairFilter)
    temperature: float = Field(default=0.2, ge=0, le=2)
    seed: int | None = Field(default=None, ge=0, le=2**31 - 1)
    save: bool = Field(default=True, description="Register the pairs as an eval/question-answer dataset.")
    dataset_id: str | None = Field(default=None, pattern=DATASET_ID_PATTERN, max_length=128)
    append_to: str | None = Field(
        default=None, pattern=DATASET_ID_PATTERN, max_length=128, description="Append to this dataset instead."
    )
    metadata: dict[str, str] | None = None

    _metadata = field_validator("metadata")(check_metadata)

    @field_validator("documents")
    @classmethod
    def _documents(cls, value: list[str] | None) -> list[str] | None:
        for index, text in enumerate(value or []):
            if not text.strip() or len(text) > MAX_SOURCE_CHARS:
                raise ValueError(f"documents[{index}] must be non-blank text of at most {MAX_SOURCE_CHARS} characters")
        return value

    @field_validator("dialogs")
    @classmethod
    def _dialogs(cls, value: list[list[DialogMessage]] | None) -> list[list[DialogMessage]] | None:
        for index, dialog in enumerate(value or []):
            if not dialog or len(dialog) > 100:
                raise ValueError(f"dialogs[{index}] must hold 1 to 100 messages")
        return value

    @model_validator(mode="after")
    def _one_source(self) -> GenerateRequest:
        given = [name for name in ("documents", "dialogs", "vector_store_id") if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of documents, dialogs and vector_store_id")
        if self.dataset_id is not None and self.append_to is not None:
            raise ValueError("give dataset_id (a new dataset) or append_to (an existing one), not both")
        return self


class SyntheticPair(ApiModel):
    """One kept pair, in the ``eval/question-answer`` row shape plus where it came from."""

    input_query: str
    expected_answer: str
    source: str
    score: int | None = None


class GenerationStatistics(ApiModel):
    sources: int
    failed_sources: int = 0
    generated: int
    dropped_duplicates: int = 0
    dropped_by_judge: int = 0
    kept: int


class SyntheticDataResponse(ApiModel):
    object: Literal["synthetic_data.generation"] = "synthetic_data.generation"
    model: str
    synthetic_data: list[SyntheticPair]
    statistics: GenerationStatistics
    dataset_id: str | None = None
    """The dataset the pairs were saved to (``None`` when ``save`` was false)."""


class SyntheticDataGenerationApi(Protocol):
    async def generate(self, params: GenerateRequest) -> SyntheticDataResponse:
        """Generate, filter and (by default) save pairs, as the current principal."""
        ...


ROUTES: list[Route] = [
    Route(
        "POST",
        "/v1/synthetic-data-generation/generate",
        SyntheticDataGenerationApi.generate,
        body=GenerateRequest,
        response=SyntheticDataResponse,
        summary="Generate question/answer pairs from documents, dialogs or a vector store, and save them",
        tags=("synthetic-data-generation",),
    )
]
