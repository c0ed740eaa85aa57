"""Guardrail mechanics without a server: timeouts and the failure policy, and stream buffering."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from underlay.api.inference import ChatCompletionChunk, ChatCompletionRequest, ChoiceDelta, ChunkChoice
from underlay.api.safety import RunShieldResponse, SafetyViolation, Shield, ShieldMessage
from underlay.core.config import SafetySettings
from underlay.core.guardrails import Guard
from underlay.core.routers.safety import SafetyRouter
from underlay.core.routing.shields import ShieldsRoutingTable


class _MemoryKV:
    def __init__(self) -> None:
        self.data: dict[str, str] = {}

    async def values_in_range(self, start: str, end: str) -> list[str]:
        return [v for k, v in sorted(self.data.items()) if start <= k < end]

    async def get(self, key: str) -> str | None:
        return self.data.get(key)

    async def set(self, key: str, value: str) -> None:
        self.data[key] = value

    async def delete(self, key: str) -> None:
        self.data.pop(key, None)


class _Slow:
    async def run_shield(self, shield: Shield, messages: list[ShieldMessage], params: dict[str, Any]) -> Any:
        await asyncio.sleep(5)
        return RunShieldResponse()


class _Word:
    """Flags any message containing ``bad``."""

    async def run_shield(self, shield: Shield, messages: list[ShieldMessage], params: dict[str, Any]) -> Any:
        if any("bad" in m.text() for m in messages):
            return RunShieldResponse(violation=SafetyViolation(user_message="no"))
        return RunShieldResponse()


async def _router(policy: str = "closed") -> SafetyRouter:
    providers = {"slow": _Slow(), "word": _Word()}
    table = ShieldsRoutingTable(_MemoryKV(), providers)
    await table.initialize(
        [
            Shield(identifier="slow", provider_id="slow", provider_resource_id="slow"),
            Shield(
                identifier="slow-open",
                provider_id="slow",
                provider_resource_id="slow",
                params={"failure_policy": "open"},
            ),
            Shield(identifier="word", provider_id="word", provider_resource_id="word"),
        ]
    )
    settings = SafetySettings(failure_policy=policy, shield_timeout_seconds=0.05, stream_buffer_chars=10)  # type: ignore[arg-type]
    return SafetyRouter(table, providers, settings)


def test_timeout_follows_the_policy() -> None:
    async def go() -> None:
        router = await _router()
        message = [ShieldMessage(role="user", content="hi")]
        closed = await router.check(["slow"], message)
        assert closed is not None and "safety check" in (closed.user_message or "")
        assert await router.check(["slow-open"], message) is None
        assert (await router.check(["slow-open", "word"], [ShieldMessage(role="user", content="bad")])) is not None
        opened = await _router("open")
        assert await opened.check(["slow"], message) is None

    asyncio.run(go())


def _chunks(words: list[str]) -> AsyncIterator[ChatCompletionChunk]:
    async def gen() -> AsyncIterator[ChatCompletionChunk]:
        for word in words:
            yield ChatCompletionChunk(
                id="c", created=0, model="m", choices=[ChunkChoice(index=0, delta=ChoiceDelta(content=word))]
            )
        yield ChatCompletionChunk(
            id="c", created=0, model="m", choices=[ChunkChoice(index=0, delta=ChoiceDelta(), finish_reason="stop")]
        )

    return gen()


def _guarded(words: list[str]) -> list[ChatCompletionChunk]:
    async def go() -> list[ChatCompletionChunk]:
        router = await _router()
        request = ChatCompletionRequest(model="m", messages=[{"role": "user", "content": "q"}])  # type: ignore[list-item]
        guard = Guard(router, ["word"], buffer_chars=10)
        return [c async for c in guard.guard_stream(request, _chunks(words))]

    return asyncio.run(go())


def test_stream_releases_checked_text_and_stops_at_the_violation() -> None:
    out = _guarded(["Fine. ", "Still ", "fine. ", "Now ", "bad ", "stuff."])
    text = "".join(c.choices[0].delta.content or "" for c in out)
    assert text == "Fine. Still fine. "
    assert out[-2].choices[0].delta.refusal == "no" and out[-1].choices[0].finish_reason == "content_filter"


def test_stream_without_violation_is_unchanged() -> None:
    words = ["a long run of words ", "without any sentence end ", "at all"]
    out = _guarded(words)
    assert "".join(c.choices[0].delta.content or "" for c in out) == "".join(words)
    assert out[-1].choices[0].finish_reason == "stop"
