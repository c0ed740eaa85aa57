"""Guardrails for chat completions: shields on the input before the model runs and on the output as it streams.

Why a refusal is a normal completion: OpenAI reports a refused answer as ``message.refusal`` (with
``content`` null) and ``finish_reason: content_filter``, so clients that already handle OpenAI's
refusals handle ours, and a stream ends cleanly instead of breaking mid-answer.

Streaming holds back just enough text to judge it: chunks are released once the text up to a sentence
end (or ``stream_buffer_chars`` characters) has passed every shield. Each check sees the whole answer
so far, so a finding that spans two sentences is still caught.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Literal

from underlay.api.errors import InvalidRequestError
from underlay.api.ids import new_id, now
from underlay.api.inference import (
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    Choice,
    ChoiceDelta,
    ChunkChoice,
    ResponseMessage,
    content_text,
)
from underlay.api.safety import SafetyViolation, ShieldMessage

if TYPE_CHECKING:
    from underlay.core.routers.safety import SafetyRouter

DEFAULT_REFUSAL = "I can't help with that: the request or the answer was blocked by a safety shield."
_SENTENCE_END = re.compile(r"[.!?\n]\s*$|[.!?]\s")


def refusal_text(violation: SafetyViolation) -> str:
    return violation.user_message or DEFAULT_REFUSAL


class Guard:
    """The guardrails of one request: which shields, and the safety router that runs them."""

    def __init__(self, safety: SafetyRouter, shield_ids: list[str], buffer_chars: int) -> None:
        self.safety = safety
        self.shield_ids = shield_ids
        self.buffer_chars = buffer_chars

    @classmethod
    def for_request(
        cls, safety: SafetyRouter | None, params: ChatCompletionRequest
    ) -> tuple[Guard | None, ChatCompletionRequest]:
        """The request's guard (``guardrails`` extra, else the configured default) and the request without it."""
        extra = dict(params.__pydantic_extra__ or {})
        requested = extra.pop("guardrails", None)
        if requested is not None:
            params = params.model_copy()
            params.__pydantic_extra__ = extra
        if requested is not None and (
            not isinstance(requested, list) or not all(isinstance(s, str) for s in requested)
        ):
            raise InvalidRequestError("guardrails must be a list of shield ids.", param="guardrails")
        if safety is None:
            if requested:
                raise InvalidRequestError(
                    "guardrails need the safety API; add safety to apis and register shields.", param="guardrails"
                )
            return None, params
        ids = requested if requested is not None else list(safety.settings.default_guardrails)
        if not ids:
            return None, params
        return cls(safety, ids, safety.settings.stream_buffer_chars), params

    async def check_input(self, params: ChatCompletionRequest) -> SafetyViolation | None:
        messages = [
            ShieldMessage(role=m.role, content=content_text(getattr(m, "content", None))) for m in params.messages
        ]
        return await self.safety.check(self.shield_ids, messages)

    async def check_output(self, params: ChatCompletionRequest, text: str) -> SafetyViolation | None:
        messages = [
            ShieldMessage(role=m.role, content=content_text(getattr(m, "content", None))) for m in params.messages
        ]
        return await self.safety.check(self.shield_ids, [*messages, ShieldMessage(role="assistant", content=text)])

    def refused_completion(self, model: str, violation: SafetyViolation) -> ChatCompletion:
        return ChatCompletion(
            id=new_id("chatcmpl"),
            created=now(),
            model=model,
            choices=[
                Choice(
                    index=0,
                    message=ResponseMessage(content=None, refusal=refusal_text(violation)),
                    finish_reason="content_filter",
                )
            ],
        )

    async def refused_stream(self, model: str, violation: SafetyViolation) -> AsyncIterator[ChatCompletionChunk]:
        completion_id, created = new_id("chatcmpl"), now()
        yield ChatCompletionChunk(
            id=completion_id,
            created=created,
            model=model,
            choices=[ChunkChoice(index=0, delta=ChoiceDelta(role="assistant", refusal=refusal_text(violation)))],
        )
        yield ChatCompletionChunk(
            id=completion_id,
            created=created,
            model=model,
            choices=[ChunkChoice(index=0, delta=ChoiceDelta(), finish_reason="content_filter")],
        )

    async def guard_completion(self, params: ChatCompletionRequest, result: ChatCompletion) -> ChatCompletion:
        for choice in result.choices:
            text = choice.message.content or ""
            if not text:
                continue
            violation = await self.check_output(params, text)
            if violation is not None:
                choice.message.content = None
                choice.message.tool_calls = None
                choice.message.refusal = refusal_text(violation)
                choice.finish_reason = "content_filter"
        return result

    async def guard_stream(
        self, params: ChatCompletionRequest, chunks: AsyncIterator[ChatCompletionChunk]
    ) -> AsyncIterator[ChatCompletionChunk]:
        """Release chunks once the text they carry has passed; on a violation send the refusal and stop."""
        held: list[ChatCompletionChunk] = []
        text: dict[int, str] = {}
        checked: dict[int, int] = {}
        last: ChatCompletionChunk | None = None
        released = False

        async def passes(index: int) -> SafetyViolation | None:
            checked[index] = len(text[index])
            return await self.check_output(params, text[index])

        try:
            async for chunk in chunks:
                last = chunk
                finishing = any(c.finish_reason for c in chunk.choices) or not chunk.choices
                held.append(chunk)
                for choice in chunk.choices:
                    if choice.delta.content:
                        text[choice.index] = text.get(choice.index, "") + choice.delta.content
                for index, so_far in text.items():
                    pending = so_far[checked.get(index, 0) :]
                    if not pending:
                        continue
                    if finishing or len(pending) >= self.buffer_chars or _SENTENCE_END.search(pending):
                        violation = await passes(index)
                        if violation is not None:
                            async for refusal in self._refuse(chunk, index, violation, first=not released):
                                yield refusal
                            return
                if all(checked.get(i, 0) == len(t) for i, t in text.items()):
                    for ready in held:
                        released = True
                        yield ready
                    held = []
            for index, so_far in text.items():  # an upstream that ends without a finish chunk
                if checked.get(index, 0) < len(so_far):
                    violation = await passes(index)
                    if violation is not None and last is not None:
                        async for refusal in self._refuse(last, index, violation, first=not released):
                            yield refusal
                        return
            for ready in held:
                yield ready
        finally:
            aclose = getattr(chunks, "aclose", None)
            if aclose is not None:
                await aclose()

    async def _refuse(
        self, like: ChatCompletionChunk, index: int, violation: SafetyViolation, *, first: bool
    ) -> AsyncIterator[ChatCompletionChunk]:
        """The refusal delta (with the role when it is the stream's first chunk), then the finish."""
        refusal = ChoiceDelta(role="assistant" if first else None, refusal=refusal_text(violation))
        steps: tuple[tuple[ChoiceDelta, Literal["content_filter"] | None], ...] = (
            (refusal, None),
            (ChoiceDelta(), "content_filter"),
        )
        for delta, finish in steps:
            yield ChatCompletionChunk(
                id=like.id,
                created=like.created,
                model=like.model,
                choices=[ChunkChoice(index=index, delta=delta, finish_reason=finish)],
            )
