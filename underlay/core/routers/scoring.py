"""The scoring router: the function registry (providers' built-ins plus users' own) and scoring.

Thin like the other routers: resolve each function, check the rows carry its columns, hand the rows to
its provider, aggregate. What is product logic lives elsewhere: the metrics in the providers, the
aggregates and their intervals in :mod:`underlay.core.score_aggregates`, ownership in the store.

``score-batch`` reads a dataset through the datasets router when that API is on (``datasets`` is an
optional dependency), page by page as the caller, so a dataset the caller cannot read is a 404 here too.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from underlay.api.datasets import (
    MAX_DATASET_ROWS,
    MAX_INLINE_ROWS,
    AppendRowsRequest,
    DatasetsApi,
    IterRowsQuery,
    RegisterDatasetRequest,
    RowsSource,
)
from underlay.api.errors import ConflictError, InvalidRequestError, NotFoundError
from underlay.api.scoring import (
    TEMPLATE_FIELDS,
    DeletedScoringFunction,
    LLMAsJudgeParams,
    RegexParserParams,
    RegisterScoringFunctionRequest,
    ScoreBatchRequest,
    ScoreBatchResponse,
    ScoreRequest,
    ScoreResponse,
    ScoringApi,
    ScoringFnParams,
    ScoringFunction,
    ScoringFunctionList,
    ScoringProvider,
    ScoringResult,
)
from underlay.core.score_aggregates import aggregate
from underlay.core.stores.scoring_functions import ScoringFunctionStore

PAGE_ROWS = 1_000
"""Rows read from a dataset per ``iterrows`` call."""


def _params_type(params: ScoringFnParams | None) -> str:
    return params.type if params is not None else "basic"


def _user_columns(params: LLMAsJudgeParams | RegexParserParams) -> list[str]:
    """The row fields a user's function reads: the template's fields, or the answer and reference."""
    if isinstance(params, LLMAsJudgeParams):
        template = params.prompt_template or ""
        return [f for f in TEMPLATE_FIELDS if "{" + f + "}" in template]
    return ["generated_answer", "expected_answer"]


def _merged(function: ScoringFunction, given: ScoringFnParams | None) -> ScoringFnParams | None:
    """The function's params with the fields the caller set in ``given`` on top."""
    if given is None:
        return function.params
    own = function.params
    if own is None:
        return given
    if own.type != given.type:
        raise InvalidRequestError(
            f"Scoring function '{function.identifier}' takes params of type '{own.type}', not '{given.type}'.",
            param=f"scoring_functions.{function.identifier}.type",
        )
    return own.model_copy(update={k: getattr(given, k) for k in given.model_fields_set if k != "type"})


def _check_columns(function: ScoringFunction, rows: list[dict[str, Any]]) -> None:
    for index, row in enumerate(rows):
        for column in function.required_columns:
            if row.get(column) is None:
                raise InvalidRequestError(
                    f"row {index} has no '{column}'; scoring function '{function.identifier}' needs "
                    f"{', '.join(function.required_columns)} in every row.",
                    param=f"input_rows[{index}].{column}",
                    code="missing_column",
                )


class ScoringRouter(ScoringApi):
    def __init__(
        self,
        store: ScoringFunctionStore,
        providers: dict[str, ScoringProvider],
        datasets: DatasetsApi | None = None,
    ) -> None:
        self.store = store
        self.providers = providers
        self.datasets = datasets
        self.builtins: dict[str, ScoringFunction] = {}

    async def initialize(self) -> None:
        """Index every provider's built-in functions; two providers offering one id is a start-up error."""
        for provider_id, provider in self.providers.items():
            for function in await provider.list_functions():
                if function.identifier in self.builtins:
                    other = self.builtins[function.identifier].provider_id
                    raise ConflictError(
                        f"scoring function '{function.identifier}' is offered by both '{other}' and "
                        f"'{provider_id}'; configure one of them"
                    )
                self.builtins[function.identifier] = function.model_copy(update={"provider_id": provider_id})

    # -- the registry -----------------------------------------------------------------------------

    async def list_scoring_functions(self) -> ScoringFunctionList:
        return ScoringFunctionList(data=[*self.builtins.values(), *await self.store.list()])

    async def _function(self, fn_id: str, param: str = "scoring_fn_id") -> ScoringFunction:
        found = self.builtins.get(fn_id)
        if found is not None:
            return found
        function = await self.store.get(fn_id, param=param)
        if function.provider_id not in self.providers:
            raise InvalidRequestError(
                f"Scoring function '{fn_id}' runs on provider '{function.provider_id}', which is not configured "
                "now; register it again for one of: " + ", ".join(sorted(self.providers)),
                param=param,
            )
        return function

    async def get_scoring_function(self, scoring_fn_id: str) -> ScoringFunction:
        return await self._function(scoring_fn_id)

    def _provider_for(self, kind: str, provider_id: str | None) -> str:
        accepting = [p for p, provider in self.providers.items() if kind in provider.user_params_types]
        if provider_id is not None:
            if provider_id not in self.providers:
                raise InvalidRequestError(
                    f"No scoring provider '{provider_id}'; configured: {', '.join(sorted(self.providers)) or 'none'}.",
                    param="provider_id",
                )
            if provider_id not in accepting:
                raise InvalidRequestError(
                    f"Scoring provider '{provider_id}' does not run {kind} functions; "
                    f"use one of: {', '.join(accepting) or 'none is configured'}.",
                    param="provider_id",
                )
            return provider_id
        if not accepting:
            raise InvalidRequestError(
                f"No configured scoring provider runs {kind} functions; add "
                f"{'inline::llm-as-judge' if kind == 'llm_as_judge' else 'inline::basic'} to providers.scoring.",
                param="params.type",
            )
        return accepting[0]

    async def register_scoring_function(self, params: RegisterScoringFunctionRequest) -> ScoringFunction:
        fn_id = params.scoring_fn_id
        if fn_id in self.builtins:
            raise ConflictError(
                f"'{fn_id}' is a built-in scoring function; pick another id.",
                param="scoring_fn_id",
                code="scoring_function_exists",
            )
        provider_id = self._provider_for(params.params.type, params.provider_id)
        function = ScoringFunction(
            identifier=fn_id,
            provider_id=provider_id,
            provider_resource_id=params.provider_scoring_fn_id or fn_id,
            description=params.description,
            return_type=params.return_type,
            params=params.params,
            required_columns=_user_columns(params.params),
            source="api",
            metadata=dict(params.metadata),
        )
        return await self.store.create(function)

    async def unregister_scoring_function(self, scoring_fn_id: str) -> DeletedScoringFunction:
        if scoring_fn_id in self.builtins:
            raise InvalidRequestError(
                f"'{scoring_fn_id}' is a built-in scoring function of provider "
                f"'{self.builtins[scoring_fn_id].provider_id}'; only registered functions can be deleted.",
                param="scoring_fn_id",
            )
        await self.store.delete(scoring_fn_id)
        return DeletedScoringFunction(id=scoring_fn_id)

    # -- scoring ----------------------------------------------------------------------------------

    async def score_rows(
        self, rows: list[dict[str, Any]], functions: Mapping[str, ScoringFnParams | None]
    ) -> dict[str, ScoringResult]:
        if not functions:
            raise InvalidRequestError("Name at least one scoring function.", param="scoring_functions")
        plan: list[tuple[str, ScoringFunction, ScoringFnParams | None]] = []
        for fn_id, given in functions.items():
            function = await self._function(fn_id, param="scoring_functions")
            merged = _merged(function, given)
            _check_columns(function, rows)
            plan.append((fn_id, function, merged))

        async def run(function: ScoringFunction, params: ScoringFnParams | None) -> ScoringResult:
            score_rows = await self.providers[function.provider_id].score(function, params, rows)
            if len(score_rows) != len(rows):
                raise InvalidRequestError(  # a provider bug; say which, rather than misalign rows
                    f"scoring provider '{function.provider_id}' returned {len(score_rows)} rows for {len(rows)}"
                )
            names = params.aggregation_functions if params is not None else []
            return ScoringResult(
                score_rows=score_rows,
                aggregated_results=aggregate(names, score_rows, rows),
                error_count=sum(1 for r in score_rows if r.get("score") is None),
            )

        results = await asyncio.gather(*(run(function, params) for _, function, params in plan))
        return {fn_id: result for (fn_id, _, _), result in zip(plan, results, strict=True)}

    async def score(self, params: ScoreRequest) -> ScoreResponse:
        return ScoreResponse(results=await self.score_rows(params.input_rows, params.scoring_functions))

    async def _dataset_rows(self, datasets: DatasetsApi, dataset_id: str) -> list[dict[str, Any]]:
        try:
            await datasets.get_dataset(dataset_id)
        except NotFoundError as exc:
            exc.param = "dataset_id"
            raise
        rows: list[dict[str, Any]] = []
        start: int | None = 0
        while start is not None and len(rows) < MAX_DATASET_ROWS:
            page = await datasets.iterrows(dataset_id, IterRowsQuery(start_index=start, limit=PAGE_ROWS))
            rows.extend(page.data)
            start = page.next_start_index
        if not rows:
            raise InvalidRequestError(f"Dataset '{dataset_id}' has no rows to score.", param="dataset_id")
        return rows

    async def score_batch(self, params: ScoreBatchRequest) -> ScoreBatchResponse:
        datasets = self.datasets
        if datasets is None:
            raise InvalidRequestError(
                "The datasets API is not enabled on this server; add datasets to apis (or score rows "
                "directly with POST /v1/scoring/score).",
                param="dataset_id",
            )
        rows = await self._dataset_rows(datasets, params.dataset_id)
        results = await self.score_rows(rows, params.scoring_functions)
        saved = None
        if params.save_results_dataset:
            saved = await self._save(datasets, rows, results)
        return ScoreBatchResponse(dataset_id=saved, results=results)

    @staticmethod
    async def _save(datasets: DatasetsApi, rows: list[dict[str, Any]], results: dict[str, ScoringResult]) -> str:
        """A new free-form dataset: each input row plus one column per function holding its score row."""
        out = [
            {**row, **{fn_id: result.score_rows[index] for fn_id, result in results.items()}}
            for index, row in enumerate(rows)
        ]
        dataset = await datasets.register_dataset(
            RegisterDatasetRequest(
                purpose="free-form", source=RowsSource(rows=out[:MAX_INLINE_ROWS]), metadata={"source": "scoring"}
            )
        )
        for start in range(MAX_INLINE_ROWS, len(out), MAX_INLINE_ROWS):
            await datasets.append_rows(dataset.identifier, AppendRowsRequest(rows=out[start : start + MAX_INLINE_ROWS]))
        return dataset.identifier
