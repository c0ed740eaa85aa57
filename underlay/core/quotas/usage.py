"""Token usage reported by model calls, collected per request for the quota layer to charge.

The quota middleware opens a :class:`UsageLedger` for each metered request; the provider boundary
(:mod:`underlay.core.boundary`) passes every inference provider result through :func:`metered`, which
adds the reported usage to the ledger (for a stream, as its usage chunk goes by). The middleware
charges the total once the response has been sent. Calls made outside a metered request (background
jobs, quotas off) pass through untouched.

Streams: a client that did not ask for usage still costs tokens, so :func:`with_stream_usage` asks the
provider for the usage chunk and :func:`metered` keeps it from a client that did not ask for it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, TypeVar

from underlay.api.inference import StreamOptions

T = TypeVar("T")


@dataclass
class UsageLedger:
    tokens: int = 0


ledger_var: ContextVar[UsageLedger | None] = ContextVar("underlay_usage_ledger", default=None)


def usage_tokens(usage: Any) -> int:
    """Total tokens in an OpenAI usage object (chat, completions, embeddings or Responses shapes)."""
    if usage is None:
        return 0
    total = getattr(usage, "total_tokens", None)
    if isinstance(total, int):
        return total
    parts = ("prompt_tokens", "completion_tokens", "input_tokens", "output_tokens")
    return sum(value for name in parts if isinstance(value := getattr(usage, name, None), int))


def _client_wants_usage(request: Any) -> bool:
    options = getattr(request, "stream_options", None)
    return bool(options is not None and getattr(options, "include_usage", False))


def with_stream_usage(request: T) -> T:
    """``request``, asking for the stream's usage chunk when this request is metered and the client did not."""
    if ledger_var.get() is None or not getattr(request, "stream", False) or _client_wants_usage(request):
        return request
    copy: T = request.model_copy(update={"stream_options": StreamOptions(include_usage=True)})  # type: ignore[attr-defined]
    return copy


def metered(result: T, request: Any = None) -> T:
    """Record the usage ``result`` reports for the current request; streams are wrapped to record as they go.

    ``request`` is the client's request: a usage-only chunk the client did not ask for is not passed on.
    """
    ledger = ledger_var.get()
    if ledger is None:
        return result
    if hasattr(result, "__aiter__"):
        return _metered_stream(result, ledger, keep_usage=request is None or _client_wants_usage(request))  # type: ignore[return-value]
    ledger.tokens += usage_tokens(getattr(result, "usage", None))
    return result


async def _metered_stream(stream: Any, ledger: UsageLedger, keep_usage: bool) -> AsyncIterator[Any]:
    try:
        async for chunk in stream:
            usage = getattr(chunk, "usage", None)
            if usage is not None:
                ledger.tokens += usage_tokens(usage)
                if not keep_usage and not getattr(chunk, "choices", None):
                    continue
            yield chunk
    finally:
        aclose = getattr(stream, "aclose", None)
        if aclose is not None:
            await aclose()
