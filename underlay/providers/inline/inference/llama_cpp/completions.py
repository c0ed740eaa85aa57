"""Legacy text completions (``/v1/completions``) on an engine.

Same three steps as chat (plan on the loop, job on the model's thread, shape on the loop). What is
particular here:

* prompts may be a string, a list of strings, token ids or lists of token ids; each prompt gets
  ``n`` choices, numbered ``prompt_index * n + j`` as OpenAI does;
* ``suffix`` means fill-in-the-middle and needs the model's FIM tokens (Qwen2.5-Coder has them);
  other models get a 400 rather than a completion that ignores the suffix;
* ``echo`` returns the prompt before the completion, and with ``logprobs`` also scores the prompt
  tokens (the first has none), which costs one extra pass keeping every position's logits;
* ``best_of`` > ``n`` samples more candidates and keeps those with the highest mean token logprob.
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from underlay.api.errors import InvalidRequestError
from underlay.api.ids import new_id, now
from underlay.api.inference import Completion, CompletionChoice, CompletionLogprobs, CompletionRequest, Usage
from underlay.providers.inline.inference.llama_cpp.common import (
    ChoiceDelta,
    ChoiceDone,
    PromptReady,
    check_fits,
    check_logit_bias,
    for_attempt,
    parse_logit_bias,
    sampling_params,
)
from underlay.providers.inline.inference.llama_cpp.config import LlamaCppModelConfig
from underlay.providers.inline.inference.llama_cpp.engine import Engine, Generation
from underlay.providers.inline.inference.llama_cpp.engine import TokenLogprob as EngineLogprob
from underlay.providers.inline.inference.llama_cpp.pool import Emit, JobHandle
from underlay.providers.inline.inference.llama_cpp.sampling import SamplingParams

Prompt = str | list[int]


@dataclass
class CompletionPlan:
    params: CompletionRequest
    config: LlamaCppModelConfig
    prompts: list[Prompt]
    sampling: SamplingParams
    logit_bias: dict[int, float]
    n: int
    best_of: int
    max_tokens: int | None
    stop: list[str]
    logprobs: int | None
    echo: bool
    suffix: str | None
    stream: bool
    include_usage: bool


@dataclass
class PromptResult:
    text: str
    tokens: int
    choices: list[Generation] = field(default_factory=list)
    prompt_logprobs: list[EngineLogprob | None] | None = None


def _prompts(prompt: str | list[str] | list[int] | list[list[int]]) -> list[Prompt]:
    if isinstance(prompt, str):
        return [prompt]
    if not prompt:
        raise InvalidRequestError("prompt must not be an empty list.", param="prompt")
    if all(isinstance(p, int) for p in prompt):
        return [list(prompt)]  # type: ignore[arg-type]
    return list(prompt)  # type: ignore[arg-type]


def plan_completion(params: CompletionRequest, config: LlamaCppModelConfig) -> CompletionPlan:
    """Resolve the request; problems found here are 400s naming the field."""
    n = params.n or 1
    best_of = params.best_of or n
    if best_of < n:
        raise InvalidRequestError(f"best_of ({best_of}) must be at least n ({n}).", param="best_of")
    if params.stream and best_of > n:
        raise InvalidRequestError("best_of cannot be larger than n when streaming.", param="best_of")
    bias = parse_logit_bias(params.logit_bias)
    stream = bool(params.stream)
    return CompletionPlan(
        params=params,
        config=config,
        prompts=_prompts(params.prompt),
        sampling=sampling_params(
            config,
            temperature=params.temperature,
            top_p=params.top_p,
            seed=params.seed,
            presence_penalty=params.presence_penalty,
            frequency_penalty=params.frequency_penalty,
            logit_bias=bias,
            grammar=None,
            n_ctx=config.n_ctx,
        ),
        logit_bias=bias,
        n=n,
        best_of=best_of,
        max_tokens=params.max_tokens,
        stop=[s for s in params.stop_list if s],
        logprobs=params.logprobs,
        echo=bool(params.echo),
        suffix=params.suffix,
        stream=stream,
        include_usage=bool(stream and params.stream_options and params.stream_options.include_usage),
    )


def _tokens(plan: CompletionPlan, engine: Engine, index: int, prompt: Prompt) -> tuple[list[int], str]:
    """Token ids and text of one prompt (wrapped in FIM tokens when there is a suffix)."""
    param = "prompt" if len(plan.prompts) == 1 else f"prompt[{index}]"
    if isinstance(prompt, list):
        bad = [t for t in prompt if not 0 <= t < engine.n_vocab]
        if bad:
            raise InvalidRequestError(
                f"{param} holds token id {bad[0]}, outside model '{plan.config.name}''s vocabulary "
                f"(0..{engine.n_vocab - 1}).",
                param=param,
            )
        text = engine.detokenize(prompt)
        tokens = list(prompt)
        if plan.suffix is not None:
            tokens = _fim(plan, engine, tokens)
    else:
        text = prompt
        if plan.suffix is not None:
            tokens = _fim(plan, engine, engine.tokenize(prompt, add_bos=False))
        else:
            tokens = engine.tokenize(prompt)
    if not tokens:
        if engine.bos_id < 0:
            raise InvalidRequestError(f"{param} is empty and the model has no start token to begin from.", param=param)
        tokens = [engine.bos_id]
    check_fits(len(tokens), engine, param)
    return tokens, text


def _fim(plan: CompletionPlan, engine: Engine, prefix: list[int]) -> list[int]:
    if engine.fim_tokens is None:
        raise InvalidRequestError(
            f"Model '{plan.config.name}' does not support suffix: it has no fill-in-the-middle tokens. "
            "Leave out suffix, or use a code model with FIM tokens such as qwen2.5-coder-0.5b-instruct.",
            param="suffix",
            code="suffix_not_supported",
        )
    pre, suf, mid = engine.fim_tokens
    suffix_tokens = engine.tokenize(plan.suffix or "", add_bos=False, special=False)
    head = [engine.bos_id] if engine.add_bos else []
    return head + [pre] + prefix + [suf] + suffix_tokens + [mid]


def _mean_logprob(gen: Generation) -> float:
    lps = [e.logprob for e in gen.logprobs or []]
    return sum(lps) / len(lps) if lps else 0.0


def completion_job(plan: CompletionPlan) -> Callable[[Engine, Emit, threading.Event], list[PromptResult]]:
    """The work to run on the model's thread for ``plan``."""

    def job(engine: Engine, emit: Emit, cancel: threading.Event) -> list[PromptResult]:
        check_logit_bias(plan.logit_bias, engine)
        prepared = [_tokens(plan, engine, i, p) for i, p in enumerate(plan.prompts)]
        emit(PromptReady(sum(len(t) for t, _ in prepared), texts=[text for _, text in prepared]))
        ranking = plan.best_of > plan.n
        want_lp = plan.logprobs if plan.logprobs is not None else (0 if ranking else None)
        results: list[PromptResult] = []
        for p_index, (tokens, text) in enumerate(prepared):
            result = PromptResult(text=text, tokens=len(tokens))
            for j in range(plan.best_of):
                index = p_index * plan.n + j
                score_prompt = plan.echo and plan.logprobs is not None and j == 0
                on_delta = (lambda d, index=index: emit(ChoiceDelta(index, d))) if plan.stream else None
                gen = engine.generate(
                    tokens,
                    for_attempt(plan.sampling, p_index * plan.best_of + j, 0),
                    max_tokens=plan.max_tokens,
                    stop=plan.stop,
                    cancel=cancel,
                    logprobs=want_lp,
                    prompt_logprobs=plan.logprobs if score_prompt else None,
                    on_delta=on_delta,
                )
                if score_prompt:
                    result.prompt_logprobs = gen.prompt_logprobs
                result.choices.append(gen)
                if plan.stream:
                    emit(ChoiceDone(index, gen))
                if gen.finish_reason == "cancelled":
                    results.append(result)
                    return results
            if ranking:
                ranked = sorted(result.choices, key=_mean_logprob, reverse=True)
                result.choices = ranked[: plan.n]
            results.append(result)
        return results

    return job


def _logprobs(entries: list[EngineLogprob | None], *, shift: int = 0, top: int) -> CompletionLogprobs:
    out = CompletionLogprobs(top_logprobs=[])
    for e in entries:
        if e is None:  # the first prompt token: nothing predicts it
            out.tokens.append("")
            out.token_logprobs.append(None)
            assert out.top_logprobs is not None
            out.top_logprobs.append(None)
            out.text_offset.append(shift)
            continue
        out.tokens.append(e.text)
        out.token_logprobs.append(e.logprob)
        alternatives = {t: lp for t, _, lp in e.top[:top]}
        alternatives.setdefault(e.text, e.logprob)  # OpenAI always includes the sampled token
        assert out.top_logprobs is not None
        out.top_logprobs.append(alternatives)
        out.text_offset.append(shift + e.offset)
    return out


def _choice_logprobs(plan: CompletionPlan, result: PromptResult, gen: Generation) -> CompletionLogprobs | None:
    """Logprobs of one choice: the completion's tokens, preceded by the prompt's when echoing."""
    if plan.logprobs is None:
        return None
    shift = len(result.text) if plan.echo else 0
    completion = _logprobs(gen.logprobs or [], shift=shift, top=plan.logprobs)
    if not plan.echo:
        return completion
    prompt = _logprobs(result.prompt_logprobs or [], top=plan.logprobs)
    if prompt.tokens and prompt.token_logprobs[0] is None:  # the unscored first token still has a text
        end = prompt.text_offset[1] if len(prompt.text_offset) > 1 else len(result.text)
        prompt.tokens[0] = result.text[:end]
    return CompletionLogprobs(
        tokens=prompt.tokens + completion.tokens,
        token_logprobs=prompt.token_logprobs + completion.token_logprobs,
        top_logprobs=(prompt.top_logprobs or []) + (completion.top_logprobs or []),
        text_offset=prompt.text_offset + completion.text_offset,
    )


def _usage(results: list[PromptResult]) -> Usage:
    prompt = sum(r.tokens for r in results)
    completion = sum(g.completion_tokens for r in results for g in r.choices)
    return Usage(prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion)


def _finish(reason: str) -> str:
    return "length" if reason == "length" else "stop"


def build_completion(plan: CompletionPlan, results: list[PromptResult]) -> Completion:
    """The non-streaming response."""
    choices = []
    for p_index, result in enumerate(results):
        for j, gen in enumerate(result.choices):
            text = (result.text + gen.text) if plan.echo else gen.text
            choices.append(
                CompletionChoice(
                    index=p_index * plan.n + j,
                    text=text,
                    finish_reason=_finish(gen.finish_reason),  # type: ignore[arg-type]
                    logprobs=_choice_logprobs(plan, result, gen),
                )
            )
    return Completion(id=new_id("cmpl"), created=now(), model=plan.params.model, choices=choices, usage=_usage(results))


async def stream_completion(
    plan: CompletionPlan, handle: JobHandle[list[PromptResult]], ready: PromptReady
) -> AsyncIterator[Completion]:
    """Streamed completions; closing the iterator cancels generation and frees the model.

    With ``echo`` each choice starts with its prompt text; prompt-token logprobs are only in
    non-streamed responses.
    """
    cid, created, model = new_id("cmpl"), now(), plan.params.model

    def chunk(
        index: int, text: str, *, finish: str | None = None, logprobs: CompletionLogprobs | None = None
    ) -> Completion:
        return Completion(
            id=cid,
            created=created,
            model=model,
            choices=[
                CompletionChoice(
                    index=index,
                    text=text,
                    finish_reason=finish,  # type: ignore[arg-type]
                    logprobs=logprobs,
                )
            ],
        )

    echoed: set[int] = set()
    try:
        async for event in handle.events():
            if not isinstance(event, ChoiceDelta | ChoiceDone):
                continue
            index = event.index
            if plan.echo and index not in echoed:
                echoed.add(index)
                prompt_text = ready.texts[index // plan.n] if ready.texts else ""
                if prompt_text:
                    yield chunk(index, prompt_text)
            if isinstance(event, ChoiceDelta):
                shift = len(ready.texts[index // plan.n]) if plan.echo and ready.texts else 0
                lp = (
                    _logprobs(event.delta.logprobs, shift=shift, top=plan.logprobs)
                    if plan.logprobs is not None
                    else None
                )
                yield chunk(index, event.delta.text, logprobs=lp)
            else:
                yield chunk(index, "", finish=_finish(event.generation.finish_reason))
        results = await handle.result()
        if plan.include_usage:
            yield Completion(id=cid, created=created, model=model, choices=[], usage=_usage(results))
    finally:
        handle.cancel()
