"""Server-sent events: typed events in, ``data:`` frames out; a failure mid-stream becomes an error event.

Frames that are ready together are written together: a pump task drains the event iterator into a
queue and the writer joins whatever is queued into one write. An upstream that sends a burst of
chunks then costs one socket write instead of one per chunk, and a token-by-token local model is
never delayed, because the writer flushes as soon as the queue is empty.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from pydantic_core import to_json

from underlay.api.errors import UnderlayError, UpstreamError
from underlay.api.routes import WireDialect
from underlay.server.errors import masked_envelope

log = logging.getLogger("underlay.sse")

_DONE = b"data: [DONE]\n\n"
_END = object()


def _frame(payload: Any) -> bytes:
    event_type = getattr(payload, "type", None) if _sequence_number(payload) is not None else None
    head = f"event: {event_type}\n".encode() if isinstance(event_type, str) else b""
    return head + b"data: " + to_json(payload, by_alias=True) + b"\n\n"


def _sequence_number(payload: Any) -> Any:
    """``payload.sequence_number`` or None, without a failed attribute lookup for models that lack it.

    A miss on a pydantic model costs about 2 µs (it raises and catches inside); a chat stream asks once
    per chunk, so a model class without the field is answered from its field table and extras.
    """
    cls, name = type(payload), "sequence_number"
    fields = getattr(cls, "__pydantic_fields__", None)
    if fields is not None and name not in fields and not any(name in k.__dict__ for k in cls.__mro__):
        extra = getattr(payload, "__pydantic_extra__", None)
        return extra.get(name) if extra else None
    return getattr(payload, name, None)


def _named_frame(payload: Any) -> bytes:
    """A dialect's frame: every event is named by its ``type`` (Anthropic's Messages stream)."""
    return b"event: " + str(payload.type).encode() + b"\ndata: " + to_json(payload, by_alias=True) + b"\n\n"


def _error_frame(exc: BaseException, dialect: WireDialect | None = None) -> bytes:
    if not isinstance(exc, UnderlayError):
        log.error("stream failed: %s: %s", type(exc).__name__, exc)
        exc = UpstreamError("stream", f"{type(exc).__name__}: {exc}")
    envelope = masked_envelope(exc)
    if dialect is not None and dialect.named_events:
        error = envelope["error"]
        _, body = dialect.error_body(exc.status_code, str(error["type"]), str(error["message"]))
        return b"event: error\ndata: " + to_json(body) + b"\n\n"
    return b"data: " + to_json(envelope) + b"\n\n"


async def sse_frames(
    events: AsyncIterator[Any], *, done_marker: bool = True, dialect: WireDialect | None = None
) -> AsyncIterator[bytes]:
    """Encode events; never let an exception cut the connection.

    With a ``dialect`` of named events, each frame is named by its payload's ``type``, a failure is the
    dialect's ``error`` event, and no ``[DONE]`` marker ends the stream.
    """
    named = dialect is not None and dialect.named_events
    frame = _named_frame if named else _frame
    if named:
        done_marker = False
    queue: asyncio.Queue[Any] = asyncio.Queue(maxsize=256)

    async def pump() -> None:
        try:
            async for event in events:
                await queue.put(event)
            await queue.put(_END)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # the stream already began: report, don't drop the connection
            await queue.put(exc)

    task = asyncio.create_task(pump())
    try:
        finished = False
        while not finished:
            item = await queue.get()
            parts: list[bytes] = []
            while True:
                if item is _END:
                    if done_marker:
                        parts.append(_DONE)
                    finished = True
                elif isinstance(item, BaseException):
                    parts.append(_error_frame(item, dialect))
                    finished = True
                else:
                    parts.append(frame(item))
                if finished or queue.empty():
                    break
                item = queue.get_nowait()
            yield b"".join(parts)
    finally:
        if not task.done():
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
        aclose = getattr(events, "aclose", None)
        if aclose is not None:
            with contextlib.suppress(Exception):
                await aclose()
