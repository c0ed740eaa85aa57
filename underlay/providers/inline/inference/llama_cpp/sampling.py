"""Choosing the next token: llama.cpp's sampler chain, grammar constraints and logprobs.

We do not use ``Llama.create_completion``: it needs ``logits_all=True`` (one row of vocabulary-sized
logits per context position, about 2.5 GB for Qwen at 4096 tokens) for logprobs, it applies a grammar
to the whole vocabulary at every step, and it hides the knobs we need. Instead each generation builds
a small sampler from llama.cpp's C samplers and reads the last position's logits directly.

Grammar constraints use rejection sampling, as llama.cpp's own ``common_sampler`` does: sample
without the grammar, check only the chosen token against it, and only when it is rejected look for
allowed tokens (first among the model's favourites, then over the whole vocabulary) and sample
again. With a 150k-token vocabulary the full check costs hundreds of milliseconds per token on a
small CPU, while the single-token check is nearly free and accepts the first choice most of the
time, because the model usually wants to write what the grammar allows.

Everything here runs on the model's worker thread; none of it is thread-safe.
"""

from __future__ import annotations

import ctypes
import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from underlay.providers.inline.inference.llama_cpp._lazy import llama_cpp

_TOKEN_DATA_DTYPE = np.dtype([("id", np.int32), ("logit", np.float32), ("p", np.float32)], align=True)


#: After the grammar rejects the sampled token, this many of the most likely tokens are checked one by
#: one before falling back to a pass over the whole vocabulary. Sampling then draws from the allowed
#: ones among them, which differs from an exact grammar-first draw only by the (tiny) probability of
#: tokens outside the model's top 64.
_SHORTLIST = 64


class GrammarError(ValueError):
    """llama.cpp refused a grammar (it logs the parse error; we only learn that it failed)."""


@dataclass(frozen=True)
class SamplingParams:
    """Everything that decides how one completion is sampled.

    ``temperature`` 0 means greedy decoding (then ``top_p``/``top_k``/``min_p`` and the seed do not
    matter). ``seed`` None draws a fresh random seed. Penalties follow OpenAI: presence subtracts a
    constant from every token already generated, frequency subtracts per occurrence.
    """

    temperature: float = 0.8
    top_p: float = 0.95
    top_k: int = 40
    min_p: float = 0.05
    seed: int | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    penalty_last_n: int = 4096
    logit_bias: Mapping[int, float] = field(default_factory=dict)
    grammar: str | None = None
    #: When set, ``grammar`` is lazy: it constrains nothing until one of these tokens is sampled, and
    #: from then on applies starting with that token's text (how ``auto`` tool calls are constrained).
    grammar_trigger_tokens: tuple[int, ...] = ()


def _grammar_sampler(
    vocab: llama_cpp.llama_vocab_p, grammar: str, trigger_tokens: tuple[int, ...]
) -> llama_cpp.llama_sampler_p | None:
    text = grammar.encode("utf-8")
    if not trigger_tokens:
        return llama_cpp.llama_sampler_init_grammar(vocab, text, b"root")
    # Trigger tokens only, no trigger patterns: a pattern match hands the grammar whatever text
    # follows it in the same token, which the grammar may not accept, and llama.cpp aborts on that.
    tokens = (llama_cpp.llama_token * len(trigger_tokens))(*trigger_tokens)
    patterns = (ctypes.c_char_p * 1)()
    return llama_cpp.llama_sampler_init_grammar_lazy_patterns(
        vocab, text, b"root", patterns, 0, tokens, len(trigger_tokens)
    )


class TokenSampler:
    """Picks tokens for one generation; owns the native sampler objects and frees them on close.

    State (RNG, penalty history, grammar position) lives here, so a new sampler per generation keeps
    concurrent-looking requests on one model from influencing each other.
    """

    def __init__(
        self,
        model: llama_cpp.llama_model_p,
        vocab: llama_cpp.llama_vocab_p,
        n_vocab: int,
        params: SamplingParams,
        seed: int,
    ) -> None:
        self._n_vocab = n_vocab
        self._chain = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())
        self._grammar = None
        assert _TOKEN_DATA_DTYPE.itemsize == ctypes.sizeof(llama_cpp.llama_token_data)
        self._candidates = np.zeros(n_vocab, dtype=_TOKEN_DATA_DTYPE)
        self._ids = np.arange(n_vocab, dtype=np.int32)
        self._single = (llama_cpp.llama_token_data * 1)()
        try:
            self._build_chain(params, seed)
            if params.grammar:
                grammar = _grammar_sampler(vocab, params.grammar, params.grammar_trigger_tokens)
                if not grammar:
                    raise GrammarError("llama.cpp could not parse the decoding grammar")
                self._grammar = grammar
        except BaseException:
            self.close()
            raise

    def _add(self, sampler: llama_cpp.llama_sampler_p) -> None:
        llama_cpp.llama_sampler_chain_add(self._chain, sampler)

    def _build_chain(self, params: SamplingParams, seed: int) -> None:
        if params.logit_bias:
            items = list(params.logit_bias.items())
            arr = (llama_cpp.llama_logit_bias * len(items))()
            for i, (token, bias) in enumerate(items):
                arr[i].token = token
                # OpenAI: -100 bans a token outright; llama.cpp adds the bias to the logit, so make it so.
                arr[i].bias = -math.inf if bias <= -100 else bias
            self._add(llama_cpp.llama_sampler_init_logit_bias(self._n_vocab, len(items), arr))
        if params.presence_penalty or params.frequency_penalty:
            # The binding declares a leading ``n_vocab`` that current llama.cpp no longer takes; passing
            # the window twice is right under either signature (x86-64 passes ints and floats apart).
            window = params.penalty_last_n
            self._add(
                llama_cpp.llama_sampler_init_penalties(
                    window, window, 1.0, params.frequency_penalty, params.presence_penalty
                )
            )
        if params.temperature <= 0:
            self._add(llama_cpp.llama_sampler_init_greedy())
            return
        if params.top_k > 0:
            self._add(llama_cpp.llama_sampler_init_top_k(params.top_k))
        if params.top_p < 1.0:
            self._add(llama_cpp.llama_sampler_init_top_p(params.top_p, 1))
        if params.min_p > 0:
            self._add(llama_cpp.llama_sampler_init_min_p(params.min_p, 1))
        self._add(llama_cpp.llama_sampler_init_temp(params.temperature))
        self._add(llama_cpp.llama_sampler_init_dist(seed & 0xFFFFFFFF))

    def _fill(self, logits: np.ndarray) -> llama_cpp.llama_token_data_array:
        cand = self._candidates
        cand["id"] = self._ids
        cand["logit"] = logits
        cand["p"] = 0.0
        return llama_cpp.llama_token_data_array(
            data=cand.ctypes.data_as(ctypes.POINTER(llama_cpp.llama_token_data)),
            size=self._n_vocab,
            selected=-1,
            sorted=False,
        )

    def _fill_subset(self, logits: np.ndarray, ids: list[int]) -> llama_cpp.llama_token_data_array:
        cand = self._candidates[: len(ids)]
        idx = np.asarray(ids, dtype=np.int32)
        cand["id"] = idx
        cand["logit"] = logits[idx]
        cand["p"] = 0.0
        return llama_cpp.llama_token_data_array(
            data=cand.ctypes.data_as(ctypes.POINTER(llama_cpp.llama_token_data)),
            size=len(ids),
            selected=-1,
            sorted=False,
        )

    @staticmethod
    def _selected(arr: llama_cpp.llama_token_data_array) -> int:
        return int(arr.data[arr.selected].id)

    def _grammar_allows(self, token: int) -> bool:
        self._single[0].id = token
        self._single[0].logit = 1.0
        self._single[0].p = 0.0
        arr = llama_cpp.llama_token_data_array(data=self._single, size=1, selected=-1, sorted=False)
        llama_cpp.llama_sampler_apply(self._grammar, ctypes.byref(arr))
        return not math.isinf(self._single[0].logit)

    def sample(self, logits: np.ndarray) -> int | None:
        """The next token from the last position's raw logits, or None when the grammar allows nothing.

        Does not accept the token; call :meth:`accept` once the caller decides to keep it (it must not
        for an end-of-generation token, which a completed grammar has no state for).
        """
        arr = self._fill(logits)
        llama_cpp.llama_sampler_apply(self._chain, ctypes.byref(arr))
        token = self._selected(arr)
        if self._grammar is None or self._grammar_allows(token):
            return token
        # Rejected. Usually one of the model's next few favourites is allowed: check those one by one
        # and sample among the allowed ones, before paying for a pass over the whole vocabulary.
        k = min(_SHORTLIST, self._n_vocab)
        shortlist = np.argpartition(-logits, k - 1)[:k]
        allowed = [int(t) for t in shortlist if self._grammar_allows(int(t))]
        if allowed:
            arr = self._fill_subset(logits, allowed)
        else:
            arr = self._fill(logits)
            llama_cpp.llama_sampler_apply(self._grammar, ctypes.byref(arr))
            if not np.isfinite(self._candidates["logit"][: arr.size]).any():
                return None
        llama_cpp.llama_sampler_apply(self._chain, ctypes.byref(arr))
        return self._selected(arr)

    def accept(self, token: int) -> None:
        """Advance penalties and grammar past ``token``."""
        llama_cpp.llama_sampler_accept(self._chain, token)
        if self._grammar is not None:
            llama_cpp.llama_sampler_accept(self._grammar, token)

    def close(self) -> None:
        if self._chain is not None:
            llama_cpp.llama_sampler_free(self._chain)
            self._chain = None
        if self._grammar is not None:
            llama_cpp.llama_sampler_free(self._grammar)
            self._grammar = None

    def __enter__(self) -> TokenSampler:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def log_softmax_at(logits: np.ndarray, token: int, top_n: int) -> tuple[float, list[tuple[int, float]]]:
    """The logprob of ``token`` and the ``top_n`` most likely tokens with theirs, from raw logits.

    These are the model's own probabilities (before penalties, bias, temperature or grammar), which is
    what OpenAI reports and what makes logprobs comparable across sampling settings.
    """
    lg = logits.astype(np.float64, copy=False)
    peak = float(lg.max())
    lse = peak + math.log(float(np.exp(lg - peak).sum()))
    chosen = float(lg[token]) - lse
    top: list[tuple[int, float]] = []
    if top_n > 0:
        n = min(top_n, lg.shape[0])
        idx = np.argpartition(-lg, n - 1)[:n]
        idx = idx[np.argsort(-lg[idx], kind="stable")]
        top = [(int(i), float(lg[i]) - lse) for i in idx]
    return chosen, top
