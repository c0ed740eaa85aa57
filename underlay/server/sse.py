"""Server-sent events: typed events in, ``data:`` frames out; a failure mid-stream becomes an error event."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

from pydantic_core import to_json

from underlay.api.errors import UnderlayError, UpstreamError

log = logging.getLogger("underlay.sse")


def _frame(payload: Any, event: str | None = None) -> bytes:
    head = f"event: {event}\n".encode() if event else b""
    return head + b"data: " + to_json(payload, by_alias=True) + b"\n\n"


async def sse_frames(events: AsyncIterator[Any], *, done_marker: bool = True) -> AsyncIterator[bytes]:
    """Encode events; never let an exception cut the connection."""
    try:
        async for event in events:
            event_type = (
                getattr(event, "type", None) if getattr(event, "sequence_number", None) is not None else None
            )
            yield _frame(event, event_type if isinstance(event_type, str) else None)
    except UnderlayError as exc:
        yield _frame(exc.to_envelope())
        return
    except Exception as exc:  # the stream already began: report, don't drop the connection
        log.exception("stream failed")
        yield _frame(UpstreamError("stream", f"{type(exc).__name__}: {exc}").to_envelope())
        return
    finally:
        aclose = getattr(events, "aclose", None)
        if aclose is not None:
            await aclose()
    if done_marker:
        yield b"data: [DONE]\n\n"
