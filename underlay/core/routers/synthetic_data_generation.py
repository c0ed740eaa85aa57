"""The synthetic data generation router: gather sources, generate, filter, save (see :mod:`underlay.core.synthesis`).

It owns no state: the model calls go through the inference router, the vector store is read through
the vector stores router and the result is saved through the datasets router, all as the caller, so
a caller can only read stores it may read and only writes datasets it owns. A source whose model call
fails (an answer that is not JSON) is counted in ``failed_sources`` and the run goes on; a failure that
no retry of another source can fix (an unknown model, a refused request) stops the run with its error.
"""

from __future__ import annotations

from underlay.api.datasets import AppendRowsRequest, RegisterDatasetRequest, RowsSource
from underlay.api.errors import InvalidRequestError, ProviderError
from underlay.api.synthetic_data_generation import (
    GenerateRequest,
    GenerationStatistics,
    SyntheticDataGenerationApi,
    SyntheticDataResponse,
    SyntheticPair,
)
from underlay.api.vector_stores import VectorStoreFileListQuery
from underlay.core import synthesis
from underlay.core.routers.datasets import DatasetsRouter
from underlay.core.routers.inference import InferenceRouter
from underlay.core.routers.vector_stores import VectorStoresRouter


class SyntheticDataGenerationRouter(SyntheticDataGenerationApi):
    def __init__(
        self, inference: InferenceRouter, datasets: DatasetsRouter, vector_stores: VectorStoresRouter | None
    ) -> None:
        self.inference = inference
        self.datasets = datasets
        self.vector_stores = vector_stores

    async def _sources(self, params: GenerateRequest) -> list[synthesis.Source]:
        if params.documents is not None:
            return synthesis.document_sources(params.documents)
        if params.dialogs is not None:
            return synthesis.dialog_sources(params.dialogs)
        if self.vector_stores is None:
            raise InvalidRequestError(
                "This server does not run the vector stores API; send documents instead of vector_store_id.",
                param="vector_store_id",
            )
        store_id = params.vector_store_id or ""
        listed = await self.vector_stores.list_vector_store_files(
            store_id, VectorStoreFileListQuery(limit=100, order="asc", filter="completed")
        )
        sources: list[synthesis.Source] = []
        for item in listed.data:
            content = await self.vector_stores.retrieve_vector_store_file_content(store_id, item.id)
            left = params.max_sources - len(sources)
            sources.extend(synthesis.passages(item.id, (part.text for part in content.data), left))
            if len(sources) >= params.max_sources:
                break
        if not sources:
            raise InvalidRequestError(
                f"Vector store '{store_id}' has no processed file to generate from; add files and wait until their "
                "status is completed.",
                param="vector_store_id",
            )
        return sources

    async def generate(self, params: GenerateRequest) -> SyntheticDataResponse:
        if params.append_to is not None:
            await self.datasets.get_dataset(params.append_to)  # 404 before any model time
        sources = await self._sources(params)
        chat = self.inference.openai_chat_completion
        generated: list[synthesis.Pair] = []
        failed = 0
        for source in sources:
            if len(generated) >= params.max_pairs:
                break
            try:
                pairs = await synthesis.generate_pairs(
                    chat,
                    params.model,
                    source,
                    params.pairs_per_source,
                    temperature=params.temperature,
                    seed=params.seed,
                )
            except ProviderError:
                failed += 1
                continue
            generated.extend(pairs)
        generated = generated[: params.max_pairs]
        kept = synthesis.dedup(generated) if params.filter.dedup else list(generated)
        duplicates = len(generated) - len(kept)
        dropped_by_judge = 0
        if params.filter.judge_model is not None:
            graded: list[synthesis.Pair] = []
            for pair in kept:
                try:
                    score = await synthesis.judge_pair(chat, params.filter.judge_model, pair)
                except ProviderError:  # an unreadable grade keeps nothing it cannot vouch for
                    score = 0
                if score >= params.filter.min_score:
                    graded.append(synthesis.Pair(pair.question, pair.answer, pair.source, score))
                else:
                    dropped_by_judge += 1
            kept = graded
        rows = [
            SyntheticPair(input_query=p.question, expected_answer=p.answer, source=p.source.ref, score=p.score)
            for p in kept
        ]
        dataset_id = await self._save(params, rows) if params.save and rows else None
        return SyntheticDataResponse(
            model=params.model,
            synthetic_data=rows,
            statistics=GenerationStatistics(
                sources=len(sources),
                failed_sources=failed,
                generated=len(generated),
                dropped_duplicates=duplicates,
                dropped_by_judge=dropped_by_judge,
                kept=len(rows),
            ),
            dataset_id=dataset_id,
        )

    async def _save(self, params: GenerateRequest, rows: list[SyntheticPair]) -> str:
        records = [row.model_dump(exclude_none=True) for row in rows]
        if params.append_to is not None:
            await self.datasets.append_rows(params.append_to, AppendRowsRequest(rows=records))
            return params.append_to
        metadata = dict(params.metadata or {})
        for key, value in (("generated_by", "synthetic-data-generation"), ("model", params.model[:512])):
            if len(metadata) < 16:
                metadata.setdefault(key, value)
        dataset = await self.datasets.register_dataset(
            RegisterDatasetRequest(
                purpose="eval/question-answer",
                source=RowsSource(rows=records),
                dataset_id=params.dataset_id,
                metadata=metadata,
            )
        )
        return dataset.identifier
