"""One loaded llama.cpp context and the token loop that runs on it.

An :class:`Engine` wraps one ``llama_cpp.Llama``. A ``Llama`` is not thread-safe, so an engine is only
ever touched by the single worker thread of its slot (see ``pool``); nothing here locks.

The loop is ours rather than ``Llama.create_completion``'s so that we control what matters for an
API server: cancellation between tokens (a client that goes away frees the model within one token),
stop strings that never leak into the stream (text that could be the start of a stop string is held
back until it is clear), UTF-8 that is only released whole, logprobs from the last position's logits
only, and reuse of the KV cache for the prompt prefix a slot already evaluated (multi-turn chats and
``n`` > 1 re-evaluate only what changed).

It relies on a few attributes of ``Llama`` that are not public API (``_ctx``, ``_batch``,
``input_ids``, ``n_tokens``); llama-cpp-python is pinned for that reason.
"""

from __future__ import annotations

import codecs
import ctypes
import logging
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from underlay.providers.inline.inference.llama_cpp._lazy import llama_cpp
from underlay.providers.inline.inference.llama_cpp.chat_template import CHATML_TEMPLATE, ChatTemplate
from underlay.providers.inline.inference.llama_cpp.config import LlamaCppModelConfig
from underlay.providers.inline.inference.llama_cpp.loops import LoopGuard
from underlay.providers.inline.inference.llama_cpp.sampling import SamplingParams, TokenSampler, log_softmax_at
from underlay.providers.utils.llama_loader import load_llama

logger = logging.getLogger(__name__)

EngineFinish = Literal["stop", "length", "cancelled", "aborted"]


class ModelLoadError(RuntimeError):
    """llama.cpp could not load the file (missing, truncated, not GGUF, unsupported architecture)."""


@dataclass
class TokenLogprob:
    """One sampled (or prompt) token with its logprob and the most likely alternatives.

    ``offset`` is the character offset of the token's text within the text it belongs to (the
    completion, or the prompt for echoed prompt tokens).
    """

    token_id: int
    text: str
    raw: bytes
    logprob: float
    top: list[tuple[str, bytes, float]] = field(default_factory=list)
    offset: int = 0


@dataclass
class TextDelta:
    """Text that is final (no stop string can still claim it), with the logprobs of its tokens."""

    text: str
    logprobs: list[TokenLogprob] = field(default_factory=list)


@dataclass
class Generation:
    """The outcome of one completion: the text (stop string excluded) and why it ended."""

    text: str
    finish_reason: EngineFinish
    prompt_tokens: int
    completion_tokens: int
    logprobs: list[TokenLogprob] | None = None
    prompt_logprobs: list[TokenLogprob | None] | None = None
    seconds: float = 0.0
    #: Ended (as ``stop``) by the loop guard: the output had become one block repeated.
    looped: bool = False
    #: The stop string that ended the text, when one did (reported as ``stop_reason``, as vLLM does).
    stop_string: str | None = None


def _holdback(text: str, stops: list[str]) -> int:
    """How many trailing characters of ``text`` might be the start of a stop string."""
    longest = max((len(s) for s in stops), default=0)
    for k in range(min(longest - 1, len(text)), 0, -1):
        tail = text[-k:]
        if any(s.startswith(tail) for s in stops):
            return k
    return 0


def _find_stop(text: str, stops: list[str], start: int) -> int | None:
    hits = [i for s in stops if (i := text.find(s, start)) >= 0]
    return min(hits) if hits else None


class Engine:
    """A loaded model in one llama.cpp context."""

    def __init__(self, path: Path, config: LlamaCppModelConfig) -> None:
        self.path = path
        self.config = config
        try:
            self._llama = load_llama(
                config.extra_buffer_types,
                model_path=str(path),
                n_ctx=config.n_ctx,
                n_batch=config.n_batch,
                n_ubatch=config.n_batch,
                n_threads=config.n_threads,
                n_threads_batch=config.n_threads,
                logits_all=False,
                use_mmap=True,
                verbose=False,
            )
        except (ValueError, RuntimeError, OSError, AssertionError) as exc:
            raise ModelLoadError(str(exc) or type(exc).__name__) from exc
        llama = self._llama
        self.vocab = llama._model.vocab
        self.n_vocab = int(llama_cpp.llama_vocab_n_tokens(self.vocab))
        self.n_ctx = int(llama.n_ctx())
        self.metadata: dict[str, str] = dict(llama.metadata)
        self._pieces: dict[int, bytes] = {}
        self._saved_prompt: list[int] | None = None
        self._saved_logits: np.ndarray | None = None
        self._reuse_prefix = not (getattr(llama, "_is_recurrent", False) or getattr(llama, "_is_hybrid", False))
        bos = llama_cpp.llama_vocab_bos(self.vocab)
        eos = llama_cpp.llama_vocab_eos(self.vocab)
        self.bos_id = int(bos)
        self.add_bos = bool(llama_cpp.llama_vocab_get_add_bos(self.vocab)) and bos >= 0
        self.bos_text = self.piece(bos, special=True).decode("utf-8", "replace") if bos >= 0 else ""
        eos_text = self.piece(eos, special=True).decode("utf-8", "replace") if eos >= 0 else ""
        source = config.chat_template or self.metadata.get("tokenizer.chat_template")
        if not source:
            logger.warning("model %s has no chat template; using ChatML", config.name)
            source = CHATML_TEMPLATE
        try:
            self.template = ChatTemplate(source, bos_token=self.bos_text, eos_token=eos_text)
        except ValueError as exc:
            self.close()
            raise ModelLoadError(f"chat template of model '{config.name}': {exc}") from exc
        fim = (
            llama_cpp.llama_vocab_fim_pre(self.vocab),
            llama_cpp.llama_vocab_fim_suf(self.vocab),
            llama_cpp.llama_vocab_fim_mid(self.vocab),
        )
        self.fim_tokens: tuple[int, int, int] | None = fim if all(t >= 0 for t in fim) else None

    # ----------------------------------------------------------------------------------------------
    # Vocabulary

    def piece(self, token: int, *, special: bool = False) -> bytes:
        """The bytes a token stands for (control tokens are empty unless ``special``)."""
        key = token if not special else -token - 1
        cached = self._pieces.get(key)
        if cached is not None:
            return cached
        size = 64
        while True:
            buf = ctypes.create_string_buffer(size)
            n = llama_cpp.llama_token_to_piece(self.vocab, token, buf, size, 0, special)
            if n >= 0:
                out = buf.raw[:n]
                break
            size = -n + 1
        self._pieces[key] = out
        return out

    def tokenize(self, text: str, *, special: bool = True, add_bos: bool | None = None) -> list[int]:
        """Token ids of ``text``; special-token text (``<|im_start|>``) maps to those tokens.

        A BOS token is added when the model wants one and the text does not already start with it
        (templates often write it themselves).
        """
        if add_bos is None:
            add_bos = self.add_bos and not (self.bos_text and text.startswith(self.bos_text))
        return self._llama.tokenize(text.encode("utf-8"), add_bos=add_bos, special=special)

    def detokenize(self, tokens: list[int]) -> str:
        return b"".join(self.piece(t) for t in tokens).decode("utf-8", "replace")

    def is_eog(self, token: int) -> bool:
        return bool(llama_cpp.llama_vocab_is_eog(self.vocab, token))

    def token_text(self, raw: bytes) -> str:
        """How a token's bytes are shown in logprobs (a partial UTF-8 sequence as ``\\xNN`` escapes)."""
        return raw.decode("utf-8", "backslashreplace")

    # ----------------------------------------------------------------------------------------------
    # Evaluation

    def _last_logits(self) -> np.ndarray:
        ptr = llama_cpp.llama_get_logits_ith(self._llama.ctx, -1)
        return np.ctypeslib.as_array(ptr, shape=(self.n_vocab,))

    def _prefill(self, tokens: list[int], cancel: threading.Event) -> np.ndarray | None:
        """Evaluate the prompt; return the logits for the first sample, or None if cancelled.

        Work already in the KV cache is reused, but only in ways that give bit-identical logits to a
        fresh evaluation, so that an answer never depends on what the slot did before (the same seed
        and input must give the same output, whichever request came first):

        * the exact prompt of the previous request: its KV entries and saved last logits are reused
          as they are (this is what makes ``n`` > 1 and retries cheap);
        * a shared prefix: reused in whole ``n_batch`` chunks only, because a fresh evaluation also
          runs in those chunks and llama.cpp's arithmetic depends on how tokens are batched.
        """
        llama = self._llama
        step = self.config.n_batch
        if self._saved_logits is not None and self._saved_prompt == tokens and llama.n_tokens >= len(tokens):
            llama.n_tokens = len(tokens)  # ``eval`` drops the KV cache from here on
            return self._saved_logits
        self._saved_prompt, self._saved_logits = None, None
        common = 0
        cached = llama.n_tokens
        if cached and self._reuse_prefix:
            n = min(cached, len(tokens))
            diff = np.nonzero(llama.input_ids[:n] != np.asarray(tokens[:n], dtype=llama.input_ids.dtype))[0]
            common = int(diff[0]) if diff.size else n
        # Whole chunks only, and at least one token left to evaluate so fresh logits exist.
        common = (min(common, len(tokens) - 1) // step) * step
        if common == 0:
            llama.reset()
        else:
            llama.n_tokens = common
        for i in range(common, len(tokens), step):
            if cancel.is_set():
                return None
            llama.eval(tokens[i : i + step])
        logits = self._last_logits().copy()
        self._saved_prompt, self._saved_logits = list(tokens), logits
        return logits

    def _prefill_scored(
        self, tokens: list[int], top_n: int, cancel: threading.Event
    ) -> list[TokenLogprob | None] | None:
        """Evaluate the whole prompt keeping every position's logits, to score the prompt tokens.

        Only used for ``echo`` with ``logprobs``; the first token has no logprob (nothing predicts it).
        """
        llama = self._llama
        llama.reset()
        self._saved_prompt, self._saved_logits = None, None
        scored: list[TokenLogprob | None] = [None]
        offset = len(self.piece(tokens[0]).decode("utf-8", "replace"))
        step = self.config.n_batch
        for start in range(0, len(tokens), step):
            if cancel.is_set():
                return None
            batch = tokens[start : start + step]
            n_past = llama.n_tokens
            llama._ctx.kv_cache_seq_rm(-1, n_past, -1)
            llama._batch.set_batch(batch=batch, n_past=n_past, logits_all=True)
            llama._ctx.decode(llama._batch)
            llama.input_ids[n_past : n_past + len(batch)] = batch
            llama.n_tokens += len(batch)
            for j in range(len(batch)):
                nxt = start + j + 1
                if nxt >= len(tokens):
                    break
                ptr = llama_cpp.llama_get_logits_ith(llama.ctx, j)
                logits = np.ctypeslib.as_array(ptr, shape=(self.n_vocab,))
                entry = self._logprob_entry(logits, tokens[nxt], top_n, offset)
                scored.append(entry)
                offset += len(entry.raw.decode("utf-8", "replace"))
        self._saved_prompt, self._saved_logits = list(tokens), self._last_logits().copy()
        return scored

    def _logprob_entry(self, logits: np.ndarray, token: int, top_n: int, offset: int) -> TokenLogprob:
        chosen, top = log_softmax_at(logits, token, top_n)
        raw = self.piece(token)
        top_entries = []
        for tid, lp in top:
            traw = self.piece(tid)
            top_entries.append((self.token_text(traw), traw, lp))
        return TokenLogprob(
            token_id=token, text=self.token_text(raw), raw=raw, logprob=chosen, top=top_entries, offset=offset
        )

    # ----------------------------------------------------------------------------------------------
    # Generation

    def generate(
        self,
        prompt_tokens: list[int],
        params: SamplingParams,
        *,
        max_tokens: int | None,
        stop: list[str],
        cancel: threading.Event,
        logprobs: int | None = None,
        prompt_logprobs: int | None = None,
        on_delta: Callable[[TextDelta], None] | None = None,
        watch: Callable[[str], bool] | None = None,
        loop_guard: LoopGuard | None = None,
    ) -> Generation:
        """Complete ``prompt_tokens``; the caller has checked that the prompt fits the context.

        ``max_tokens`` None means "until the context is full"; any limit is clamped to the room left,
        and hitting it ends with ``length``. ``logprobs`` (None = off) is the number of alternatives per
        token. ``on_delta`` receives text as soon as it is final; the returned text is the same text in
        one piece. A set ``cancel`` ends the loop before the next token. ``watch`` sees the text after
        every token; returning True ends the generation with ``aborted`` (the caller will redo it).
        ``loop_guard`` sees every token; when it reports a loop the generation ends with ``stop``
        (and ``looped`` set), the text as written so far.
        """
        started = time.perf_counter()
        n_prompt = len(prompt_tokens)
        room = self.n_ctx - n_prompt
        limit = room if max_tokens is None else min(max_tokens, room)
        scored: list[TokenLogprob | None] | None = None
        first_logits: np.ndarray | None
        if prompt_logprobs is not None:
            scored = self._prefill_scored(prompt_tokens, prompt_logprobs, cancel)
            first_logits = self._saved_logits if scored is not None else None
        else:
            first_logits = self._prefill(prompt_tokens, cancel)
        if first_logits is None:
            return Generation("", "cancelled", n_prompt, 0, seconds=time.perf_counter() - started)

        seed = params.seed if params.seed is not None else secrets.randbits(32)
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        text = ""
        released = 0
        emitted_lp = 0
        cut: int | None = None
        entries: list[TokenLogprob] = []
        longest_stop = max((len(s) for s in stop), default=0)
        finish: EngineFinish = "length"
        n_gen = 0
        looped = False

        def release(upto: int) -> None:
            nonlocal released, emitted_lp
            if on_delta is None or upto <= released:
                return
            k = emitted_lp
            while k < len(entries) and entries[k].offset < upto:
                k += 1
            on_delta(TextDelta(text[released:upto], entries[emitted_lp:k]))
            released, emitted_lp = upto, k

        with TokenSampler(self._llama.model, self.vocab, self.n_vocab, params, seed) as sampler:
            while n_gen < limit:
                if cancel.is_set():
                    finish = "cancelled"
                    break
                logits = first_logits if n_gen == 0 else self._last_logits()
                token = sampler.sample(logits)
                if token is None or self.is_eog(token):
                    finish = "stop"
                    break
                sampler.accept(token)
                n_gen += 1
                before = len(text)
                text += decoder.decode(self.piece(token))
                if logprobs is not None:
                    entries.append(self._logprob_entry(logits, token, logprobs, before))
                if watch is not None and watch(text):
                    finish = "aborted"
                    break
                if loop_guard is not None and loop_guard.add(token, text):
                    finish, looped = "stop", True
                    break
                if stop:
                    cut = _find_stop(text, stop, max(0, before - longest_stop + 1))
                    if cut is not None:
                        finish = "stop"
                        break
                    release(len(text) - _holdback(text, stop))
                else:
                    release(len(text))
                if n_gen >= limit:
                    break
                self._llama.eval([token])
        text += decoder.decode(b"", final=True)
        if stop and cut is None:
            cut = _find_stop(text, stop, 0)
            if cut is not None:
                finish = "stop"
        stop_string = None
        if cut is not None:
            stop_string = next((s for s in stop if text.startswith(s, cut)), None)
            text = text[:cut]
            entries = [e for e in entries if e.offset < cut]
        release(len(text))
        return Generation(
            text=text,
            finish_reason=finish,
            prompt_tokens=n_prompt,
            completion_tokens=n_gen,
            logprobs=entries if logprobs is not None else None,
            prompt_logprobs=scored,
            seconds=time.perf_counter() - started,
            looped=looped,
            stop_string=stop_string,
        )

    def close(self) -> None:
        llama = getattr(self, "_llama", None)
        if llama is not None:
            try:
                llama.close()
            except Exception:  # noqa: BLE001 - best effort while shutting down
                logger.debug("closing llama failed", exc_info=True)
            self._llama = None  # type: ignore[assignment]
