"""Fixed counting windows aligned to the clock, and the duration format of OpenAI's rate-limit headers.

Why fixed, clock-aligned windows: a counter key names its window (``...:minute:29388214``), so every
server process and replica computes the same key for the same moment and one atomic increment is the
whole protocol. The known cost: a client may spend a full window's budget at the end of one minute and
again at the start of the next. A sliding log would close that gap at the price of one stored entry
per request; for budgets in requests and tokens per minute and day the fixed window is the usual trade.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Window:
    name: str
    seconds: int

    def index(self, now: float) -> int:
        """Which window ``now`` (Unix seconds) falls in; minutes and days start on UTC boundaries."""
        return int(now // self.seconds)

    def reset_in(self, now: float) -> float:
        """Seconds until the window holding ``now`` ends and its counter starts again from zero."""
        return (self.index(now) + 1) * self.seconds - now


MINUTE = Window("minute", 60)
DAY = Window("day", 86_400)
WINDOWS = (MINUTE, DAY)


def format_duration(seconds: float) -> str:
    """``17ms``, ``1.5s``, ``6m0s``, ``3h2m1s``: the form OpenAI uses in ``x-ratelimit-reset-*``."""
    if seconds < 1:
        return f"{max(0, math.ceil(seconds * 1000))}ms"
    if seconds < 60:
        text = f"{seconds:.3f}".rstrip("0").rstrip(".")
        return f"{text}s"
    whole = math.ceil(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    return f"{minutes}m{secs}s"


def retry_after(seconds: float) -> int:
    """Whole seconds for ``Retry-After`` (never 0: a client retrying at once would only be refused again)."""
    return max(1, math.ceil(seconds))
