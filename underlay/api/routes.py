"""Route tables: each API declares its HTTP surface as data, and the server builds endpoints from it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from pydantic import BaseModel

__all__ = ["BinaryContent", "Handler", "MultipartUpload", "Route", "WireDialect"]

FormT = TypeVar("FormT", bound=BaseModel, covariant=True)

Handler = Callable[..., Awaitable[Any]]
"""A route's handler: a method of the API's router Protocol (``ModelsApi.list_models``), never a string,
so the type checker sees a missing or misspelled one. The server calls the method of that name on the
running router."""


@dataclass(frozen=True)
class WireDialect:
    """How a family of routes that speaks another vendor's protocol differs from OpenAI's on the wire.

    Why data on the route rather than code in the server: errors on such a route come from every layer
    (body limit, auth, quotas, validation, the router, a stream that breaks), and each must reach the
    client in the shape its SDK parses. The server applies the dialect around all of them at once.
    """

    name: str
    error_body: Callable[[int, str, str], tuple[int, dict[str, Any]]]
    """``(status, our error type, message)`` → ``(status, body)`` in the dialect's error shape."""
    named_events: bool = False
    """SSE frames carry ``event: <payload.type>``, a failure is an ``error`` event, and no ``[DONE]`` ends it."""
    api_key_header: str | None = None
    """A (lower-case) header that carries the API key when ``Authorization: Bearer`` is absent."""
    check_headers: Callable[[Mapping[str, str]], str | None] | None = None
    """Given the request's (lower-case) headers, a message to refuse it with (400), or None."""


@dataclass(frozen=True)
class Route:
    """One HTTP endpoint of an API.

    The server calls ``handler`` (a method of the API's router Protocol) on the API's router with the path
    parameters as keyword arguments,
    plus ``params=<body model>`` when ``body`` is set and ``query=<query model>`` when ``query`` is set.
    When ``streaming`` is true and the handler returns an async iterator, the server sends SSE.

    When ``multipart`` is true the request is ``multipart/form-data`` with one file part named
    ``file_field``; ``body`` is then the model of the other form fields (``a[b]=c`` keys become nested
    objects, as OpenAI's SDK sends them) and the handler gets ``upload=<MultipartUpload>`` instead of
    ``params``. The body is parsed as it arrives, so the file is never held in memory.
    ``dialect`` marks a route that speaks another vendor's wire protocol (see :class:`WireDialect`).
    ``body_limit_setting`` names a run-config integer (dotted, e.g. ``files.max_upload_bytes``) that
    replaces ``server.max_request_bytes`` for this route, for routes whose bodies are meant to be big.
    A handler may return :class:`BinaryContent` to send raw bytes instead of JSON.
    """

    method: str
    path: str
    handler: Handler
    body: type[BaseModel] | None = None
    query: type[BaseModel] | None = None
    response: type | None = None
    streaming: bool = False
    summary: str = ""
    tags: tuple[str, ...] = field(default_factory=tuple)
    status_code: int = 200
    multipart: bool = False
    file_field: str = "file"
    body_limit_setting: str | None = None
    dialect: WireDialect | None = None


class MultipartUpload(Protocol[FormT]):
    """What a multipart route's handler receives: the file part as a stream, and the form fields.

    Why two views of the fields: the body is read once, in order, and the file is streamed to storage
    as it arrives, so fields sent *after* the file part are only known once the file has been read.
    ``early`` is the validated form when every required field came before the file (the usual order,
    and the one OpenAI's SDK uses) so a handler can reject bad input before storing anything; it is
    ``None`` otherwise. The server has already refused fields that were present but invalid.
    """

    filename: str
    content_type: str | None

    @property
    def early(self) -> FormT | None:
        """The form, when it was complete before the file part; else ``None``."""
        ...

    def chunks(self) -> AsyncIterator[bytes]:
        """The file part's bytes, in pieces as they arrive; iterate it once."""
        ...

    async def form(self) -> FormT:
        """Read the rest of the body (after ``chunks`` is exhausted) and validate every form field.

        Raises the API's invalid-request error naming the field when the form is incomplete or wrong.
        """
        ...


@dataclass
class BinaryContent:
    """Raw bytes for the client (a file download), streamed with a known type, name and size."""

    chunks: AsyncIterator[bytes]
    media_type: str = "application/octet-stream"
    filename: str | None = None
    size: int | None = None
