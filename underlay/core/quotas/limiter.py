"""Admit or refuse a request against its subject's budgets, and charge tokens once a call has used them.

A *subject* is whom a budget belongs to: an authenticated principal (by id, never by token) or, when
auth is off, the client's IP address. Requests are counted on admission; tokens are charged after the
model call reports its usage, so a subject whose token budget is spent is refused from the next request.

Admission increments the request counters of every limited window and reads (adds 0 to) the token
counters in one batch. A request over any limit is refused and its request increments are taken back,
so refused attempts do not eat into the daily budget while a per-minute limit holds the client back.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from underlay.api.errors import RateLimitedError
from underlay.core.quotas.config import QuotaConfig, QuotaLimits
from underlay.core.quotas.counters import Counters, Increment
from underlay.core.quotas.windows import WINDOWS, Window, format_duration, retry_after

_EXPIRY_MARGIN_S = 60.0
"""Counters outlive their window a little, so a clock slightly behind another replica's still finds them."""


@dataclass(frozen=True)
class Subject:
    key: str
    """Stable counter-key part: ``p:<principal id>`` or ``ip:<address>``."""
    label: str
    """For messages: ``principal 'alice'`` or ``client 127.0.0.1``."""
    principal_id: str
    attributes: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def principal(cls, principal_id: str, attributes: dict[str, Any]) -> Subject:
        return cls(f"p:{principal_id}", f"principal '{principal_id}'", principal_id, attributes)

    @classmethod
    def client(cls, address: str) -> Subject:
        return cls(f"ip:{address}", f"client {address}", "anonymous")


@dataclass(frozen=True)
class WindowUsage:
    metric: str  # "requests" or "tokens"
    window: Window
    limit: int
    used: int
    reset_in: float

    @property
    def remaining(self) -> int:
        return max(0, self.limit - self.used)

    @property
    def setting(self) -> str:
        return f"{self.metric}_per_{self.window.name}"


@dataclass
class Decision:
    usage: list[WindowUsage]
    refused: list[WindowUsage]
    subject: Subject

    def headers(self) -> list[tuple[bytes, bytes]]:
        """OpenAI's ``x-ratelimit-*`` headers, per metric for its tightest window (fewest left, then soonest reset)."""
        out: list[tuple[bytes, bytes]] = []
        for metric in ("requests", "tokens"):
            windows = [u for u in self.usage if u.metric == metric]
            if not windows:
                continue
            tightest = min(windows, key=lambda u: (u.remaining, u.reset_in))
            out += [
                (f"x-ratelimit-limit-{metric}".encode(), str(tightest.limit).encode()),
                (f"x-ratelimit-remaining-{metric}".encode(), str(tightest.remaining).encode()),
                (f"x-ratelimit-reset-{metric}".encode(), format_duration(tightest.reset_in).encode()),
            ]
        if self.refused:
            wait = max(u.reset_in for u in self.refused)
            out.append((b"retry-after", str(retry_after(wait)).encode()))
        return out

    def error(self) -> RateLimitedError:
        worst = max(self.refused, key=lambda u: u.reset_in)
        spent = "used" if worst.metric == "tokens" else "made"
        message = (
            f"Rate limit reached for {self.subject.label}: {worst.used} {worst.metric} {spent} "
            f"this {worst.window.name} of {worst.limit} allowed (server.quotas {worst.setting}). "
            f"Try again in {retry_after(worst.reset_in)}s, or ask the operator for a higher limit."
        )
        code = "rate_limit_exceeded" if worst.metric == "requests" else "tokens_exceeded"
        return RateLimitedError(message, code=code)


def _limit(limits: QuotaLimits, metric: str, window: Window) -> int | None:
    value: int | None = getattr(limits, f"{metric}_per_{window.name}")
    return value


class QuotaLimiter:
    def __init__(self, config: QuotaConfig, counters: Counters, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.counters = counters
        self._clock = clock

    def _key(self, subject: Subject, metric: str, window: Window, now: float) -> str:
        return f"{self.config.key_prefix}:{subject.key}:{metric}:{window.name}:{window.index(now)}"

    def _slots(self, subject: Subject, metric: str, now: float) -> list[tuple[Window, int, str]]:
        limits = self.config.limits_for(subject.principal_id, subject.attributes)
        slots = []
        for window in WINDOWS:
            limit = _limit(limits, metric, window)
            if limit is not None:
                slots.append((window, limit, self._key(subject, metric, window, now)))
        return slots

    async def admit(self, subject: Subject) -> Decision:
        """Count this request and decide; raises :class:`QuotaBackendError` when the counters are unreachable."""
        now = self._clock()
        requests = self._slots(subject, "requests", now)
        tokens = self._slots(subject, "tokens", now)
        if not requests and not tokens:
            return Decision([], [], subject)
        increments = [Increment(key, 1, w.reset_in(now) + _EXPIRY_MARGIN_S) for w, _, key in requests]
        increments += [Increment(key, 0, w.reset_in(now) + _EXPIRY_MARGIN_S) for w, _, key in tokens]
        values = await self.counters.add(increments)
        usage = [
            WindowUsage(metric, window, limit, value, window.reset_in(now))
            for (metric, (window, limit, _)), value in zip(
                [("requests", s) for s in requests] + [("tokens", s) for s in tokens], values, strict=True
            )
        ]
        # A request fits while the count including it is within the limit; tokens are charged after the
        # call, so a token budget is spent once the total reaches the limit.
        over = [u.used > u.limit if u.metric == "requests" else u.used >= u.limit for u in usage]
        if any(over) and requests:
            # Take the refused request back out of the counts, so it costs nothing in any window.
            await self.counters.add([Increment(key, -1, w.reset_in(now) + _EXPIRY_MARGIN_S) for w, _, key in requests])
            usage = [replace(u, used=u.used - 1) if u.metric == "requests" else u for u in usage]
        refused = [u for u, is_over in zip(usage, over, strict=True) if is_over]
        return Decision(usage, refused, subject)

    async def charge(self, subject: Subject, tokens: int) -> None:
        """Add the tokens a finished call used to every limited token window of ``subject``."""
        if tokens <= 0:
            return
        now = self._clock()
        slots = self._slots(subject, "tokens", now)
        if slots:
            await self.counters.add([Increment(key, tokens, w.reset_in(now) + _EXPIRY_MARGIN_S) for w, _, key in slots])
