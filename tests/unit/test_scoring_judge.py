"""The judge and RAG providers' own logic: templates, score parsing, retries and error rows.

The inference API here is :class:`FaultyInference`, a fault-injecting fake (named as such): it answers
like a judge that echoes its prompt, and fails on demand — once, always, or with a client error — which
no real model can be made to do per row. The providers on the embedded model run in
``tests/integration/test_scoring_server.py``.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from underlay.api.errors import NotFoundError, UpstreamError
from underlay.api.inference import (
    ChatCompletion,
    ChatCompletionRequest,
    Choice,
    Embedding,
    EmbeddingsRequest,
    EmbeddingsResponse,
    EmbeddingsUsage,
    ResponseMessage,
    Usage,
)
from underlay.api.scoring import LLMAsJudgeParams, RagParams
from underlay.providers.scoring.builtin import rag as rag_module
from underlay.providers.scoring.builtin.judge import JudgeConfig, JudgeScoringProvider, fill, parse_score
from underlay.providers.scoring.builtin.patterns import compile_pattern
from underlay.providers.scoring.builtin.rag import RagConfig, RagScoringProvider, statements


class FaultyInference:
    """Fault injection: a prompt containing FAIL-ONCE fails on its first call, FAIL-ALWAYS on every call;
    the model ``missing`` is a 404. Otherwise the answer is ``reply(prompt)``."""

    def __init__(self, reply: Any = None) -> None:
        self.calls: Counter[str] = Counter()
        self.reply = reply or (lambda prompt: prompt)

    async def openai_chat_completion(self, params: ChatCompletionRequest) -> ChatCompletion:
        if params.model == "missing":
            raise NotFoundError("Model", params.model, param="model")
        prompt = str(params.messages[-1].content)
        self.calls[prompt] += 1
        if "FAIL-ALWAYS" in prompt or ("FAIL-ONCE" in prompt and self.calls[prompt] == 1):
            raise UpstreamError("fake", "injected failure")
        answer = self.reply(prompt)
        return ChatCompletion(
            id="c",
            created=0,
            model=params.model,
            choices=[Choice(index=0, message=ResponseMessage(content=answer), finish_reason="stop")],
            usage=Usage(prompt_tokens=len(prompt.split()), completion_tokens=3, total_tokens=len(prompt.split()) + 3),
        )

    async def openai_embeddings(self, params: EmbeddingsRequest) -> EmbeddingsResponse:
        texts = [params.input] if isinstance(params.input, str) else params.input
        vectors = [[1.0, 0.0] if "sky" in str(t).lower() else [0.0, 1.0] for t in texts]
        return EmbeddingsResponse(
            data=[Embedding(index=i, embedding=v) for i, v in enumerate(vectors)],
            model=params.model,
            usage=EmbeddingsUsage(prompt_tokens=1, total_tokens=1),
        )


def _judge(inference: FaultyInference, **config: Any) -> JudgeScoringProvider:
    settings = JudgeConfig(default_judge_model="judge", retry_delay_seconds=0, **config)
    return JudgeScoringProvider("judge", settings, inference)  # type: ignore[arg-type]


def test_fill_and_parse() -> None:
    row = {"input_query": "q", "generated_answer": "a", "context": ["c1", "c2"]}
    assert fill('{"q": "{input_query}"} {generated_answer} {context}', row) == '{"q": "q"} a c1\n\nc2'
    regexes = [compile_pattern(r"Score: (\d+)"), compile_pattern(r"Verdict: (\w+)")]
    assert parse_score("... Score: 8", regexes) == 8.0
    assert parse_score("Verdict: pass", regexes) == "pass"
    assert parse_score("nothing", regexes) is None


async def test_a_failing_judge_call_is_retried_then_fails_only_its_row() -> None:
    inference = FaultyInference()
    provider = _judge(inference, max_attempts=2)
    function = (await provider.list_functions())[0]
    params = LLMAsJudgeParams(prompt_template="{generated_answer} Score: 1", judge_score_regexes=[r"Score: (\d)"])
    rows = [{"generated_answer": "fine"}, {"generated_answer": "FAIL-ONCE"}, {"generated_answer": "FAIL-ALWAYS"}]
    out = await provider.score(function, params, rows)
    assert out[0]["score"] == 1.0 and out[1]["score"] == 1.0  # the second succeeded on its retry
    assert out[2]["score"] is None and "after 2 attempts" in out[2]["error"] and "injected failure" in out[2]["error"]
    assert inference.calls["FAIL-ONCE Score: 1"] == 2 and inference.calls["FAIL-ALWAYS Score: 1"] == 2


async def test_a_client_error_from_inference_fails_the_call() -> None:
    provider = _judge(FaultyInference())
    function = (await provider.list_functions())[0]
    params = LLMAsJudgeParams(
        judge_model="missing", prompt_template="{generated_answer}", judge_score_regexes=[r"(\d)"]
    )
    with pytest.raises(NotFoundError):
        await provider.score(function, params, [{"generated_answer": "1"}])


async def test_correctness_judge_template_and_parser() -> None:
    provider = _judge(FaultyInference(reply=lambda p: "Score: 1" if "Reference answer: Paris" in p else "Score: 0"))
    function = next(f for f in await provider.list_functions() if f.identifier == "llm-as-judge::correctness")
    rows = [
        {"input_query": "Capital?", "generated_answer": "It is Paris", "expected_answer": "Paris"},
        {"input_query": "Capital?", "generated_answer": "Lyon", "expected_answer": "Rome"},
    ]
    out = await provider.score(function, function.params, rows)
    assert [r["score"] for r in out] == [1.0, 0.0]
    assert out[0]["judge_usage"]["completion_tokens"] == 3


def test_statements_split_and_bound() -> None:
    assert statements("One. Two! Three? four") == ["One.", "Two!", "Three?", "four"]
    assert len(statements(" ".join(f"S{i}." for i in range(20)))) == rag_module.MAX_STATEMENTS


async def test_rag_metrics_from_verdicts_and_embeddings() -> None:
    def reply(prompt: str) -> str:
        if prompt.startswith("Here is an answer"):
            return "What colour is the sky?"
        if "Statement:" in prompt:
            return "Yes." if "blue" in prompt.split("Statement:")[1] else "No"
        return "yes" if "Passage:\nsky facts" in prompt else "no"

    config = RagConfig(default_judge_model="judge", default_embedding_model="embed", retry_delay_seconds=0)
    provider = RagScoringProvider("rag", config, FaultyInference(reply))  # type: ignore[arg-type]
    functions = {f.identifier: f for f in await provider.list_functions()}
    row = {
        "input_query": "Why is the sky blue?",
        "generated_answer": "The sky is blue. It is made of cheese.",
        "expected_answer": "Rayleigh scattering makes it blue. Short waves scatter more.",
        "context": ["unrelated passage", "sky facts"],
    }
    faithful = (await provider.score(functions["rag::faithfulness"], RagParams(), [row]))[0]
    assert faithful["score"] == 0.5 and [s["supported"] for s in faithful["statements"]] == [True, False]
    recall = (await provider.score(functions["rag::context_recall"], RagParams(), [row]))[0]
    assert recall["score"] == 0.5
    precision = (await provider.score(functions["rag::context_precision"], RagParams(), [row]))[0]
    assert precision["useful"] == [False, True] and precision["score"] == pytest.approx(0.5)  # 1 hit at rank 2
    relevance = (await provider.score(functions["rag::answer_relevance"], RagParams(), [row]))[0]
    assert relevance["generated_question"] == "What colour is the sky?" and relevance["score"] == pytest.approx(1.0)


async def test_rag_row_without_a_verdict_is_an_error_row() -> None:
    config = RagConfig(default_judge_model="judge", retry_delay_seconds=0)
    provider = RagScoringProvider("rag", config, FaultyInference(lambda p: "maybe"))  # type: ignore[arg-type]
    function = next(f for f in await provider.list_functions() if f.identifier == "rag::faithfulness")
    out = await provider.score(function, None, [{"generated_answer": "A claim.", "context": "ctx"}])
    assert out[0]["score"] is None and "no yes/no verdict" in out[0]["error"]
