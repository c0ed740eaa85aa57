"""Pieces shared by the chat and legacy completion paths: request checks, sampling, job events."""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace

from underlay.api.errors import InvalidRequestError
from underlay.providers.inline.inference.llama_cpp.config import LlamaCppModelConfig
from underlay.providers.inline.inference.llama_cpp.engine import Engine, Generation, TextDelta
from underlay.providers.inline.inference.llama_cpp.sampling import SamplingParams

logger = logging.getLogger(__name__)

#: Attempts for outputs that must validate (required tool calls, strict JSON schemas) when the
#: grammar cannot guarantee it; later attempts sample at ``RETRY_TEMPERATURE`` with another seed,
#: since a greedy retry would only repeat the same mistake.
MAX_ATTEMPTS = 3
RETRY_TEMPERATURE = 0.7


@dataclass
class PromptReady:
    """First event of every job: the prompt fit and generation is starting."""

    prompt_tokens: int
    texts: list[str] | None = None


@dataclass
class ChoiceDelta:
    """Final text of choice ``index`` (streaming only)."""

    index: int
    delta: TextDelta


@dataclass
class ChoiceRestart:
    """Choice ``index`` is being generated again; forget what was held of it (streaming only)."""

    index: int


@dataclass
class ChoiceDone:
    """Choice ``index`` finished (streaming only)."""

    index: int
    generation: Generation


def parse_logit_bias(bias: dict[str, float] | None) -> dict[int, float]:
    """OpenAI's ``{"token id": bias}`` as ints; a key that is not a token id is a 400."""
    out: dict[int, float] = {}
    for key, value in (bias or {}).items():
        try:
            token = int(key)
        except ValueError:
            raise InvalidRequestError(
                f"logit_bias keys must be token ids (integers as strings); got {key!r}.", param="logit_bias"
            ) from None
        if not -100 <= value <= 100:
            raise InvalidRequestError(
                f"logit_bias values must be between -100 and 100; token {key} has {value}.", param="logit_bias"
            )
        out[token] = float(value)
    return out


def check_logit_bias(bias: dict[int, float], engine: Engine) -> None:
    """Token ids must exist in this model's vocabulary (known only once the model is loaded)."""
    bad = [t for t in bias if not 0 <= t < engine.n_vocab]
    if bad:
        raise InvalidRequestError(
            f"logit_bias names token id {bad[0]}, but model '{engine.config.name}' has token ids "
            f"0..{engine.n_vocab - 1}.",
            param="logit_bias",
        )


def check_fits(n_prompt: int, engine: Engine, param: str) -> None:
    """A prompt must leave room for at least one generated token."""
    if n_prompt >= engine.n_ctx:
        raise InvalidRequestError(
            f"The prompt is {n_prompt} tokens, but model '{engine.config.name}' has a context length of "
            f"{engine.n_ctx} tokens for prompt and completion together. Shorten the input, or raise "
            "n_ctx for this model in the provider config.",
            param=param,
            code="context_length_exceeded",
        )


def sampling_params(
    config: LlamaCppModelConfig,
    *,
    temperature: float | None,
    top_p: float | None,
    seed: int | None,
    presence_penalty: float | None,
    frequency_penalty: float | None,
    logit_bias: dict[int, float],
    grammar: str | None,
    n_ctx: int,
) -> SamplingParams:
    """Request parameters over the model's defaults; ``top_k``/``min_p`` always come from config."""
    return SamplingParams(
        temperature=config.temperature if temperature is None else temperature,
        top_p=1.0 if top_p is None else top_p,
        top_k=config.top_k,
        min_p=config.min_p,
        seed=seed,
        presence_penalty=presence_penalty or 0.0,
        frequency_penalty=frequency_penalty or 0.0,
        penalty_last_n=n_ctx,
        logit_bias=logit_bias,
        grammar=grammar,
    )


def for_attempt(params: SamplingParams, choice: int, attempt: int) -> SamplingParams:
    """Sampling for choice ``choice``, attempt ``attempt``.

    With a seed, choice i uses ``seed + i`` so that ``n`` > 1 gives different but reproducible
    choices, and a retry shifts it further; without one every run draws a fresh seed.
    """
    seed = params.seed
    if seed is not None:
        seed = seed + choice + 7919 * attempt
    if attempt == 0:
        return replace(params, seed=seed)
    return replace(params, seed=seed, temperature=max(params.temperature, RETRY_TEMPERATURE))
