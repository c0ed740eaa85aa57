"""Streaming ``multipart/form-data`` for routes that take a file: parsed as the body arrives.

Why not Starlette's ``request.form()``: it spools every file part to a temporary file (or memory) and
only returns once the whole body is read, so an upload would be stored twice and a handler could not
start writing to storage until the client finished. Here python-multipart's push parser is fed from
``request.stream()`` and turned into a pull-style event sequence: form fields are collected (small,
bounded), and the file part's bytes are handed to the handler one piece at a time, so memory stays
bounded by the size of one network read whatever the size of the file.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ValidationError

from underlay.api.errors import InvalidRequestError

MAX_FIELD_BYTES = 64 * 1024
"""Largest accepted non-file field: fields are small strings (purpose, expiry), never data."""

MAX_FIELDS = 64
FORM_OVERHEAD_BYTES = 1024 * 1024
"""Room for boundaries, part headers and fields on top of a route's file-size limit."""

_BRACKET_KEY = re.compile(r"^([a-zA-Z_][a-zA-Z0-9_]*)\[([^\]]+)\]$")

FormT = TypeVar("FormT", bound=BaseModel)


@dataclass
class Field:
    name: str
    value: str


@dataclass
class FileStart:
    name: str
    filename: str | None
    content_type: str | None


@dataclass
class Data:
    data: bytes


@dataclass
class PartEnd:
    pass


Event = Field | FileStart | Data | PartEnd


def boundary_of(content_type: str | None) -> bytes:
    """The boundary of a ``multipart/form-data`` content type; a 400 for anything else."""
    from python_multipart.multipart import parse_options_header

    ctype, options = parse_options_header(content_type or "")
    boundary = options.get(b"boundary")
    if ctype != b"multipart/form-data" or not boundary:
        raise InvalidRequestError(
            "This endpoint takes multipart/form-data (a 'file' part plus form fields); "
            f"got content type '{content_type or 'none'}'.",
            code="invalid_content_type",
        )
    return boundary


def _decode(raw: bytes) -> str:
    # Clients put raw UTF-8 in quoted header parameters; python-multipart hands them back as latin-1.
    return raw.decode("utf-8", errors="replace")


class MultipartEvents:
    """Pull parsed parts out of a byte stream: ``Field`` for complete small fields, and for a file part
    ``FileStart``, its ``Data`` pieces and ``PartEnd``. The body's end is the iterator's end.

    ``file_field`` names the part that is streamed; every other part is a field and must be small.
    """

    def __init__(self, source: AsyncIterator[bytes], boundary: bytes, file_field: str) -> None:
        self._source = source
        self._file_field = file_field
        self._pending: deque[Event] = deque()
        self._headers: dict[str, str] = {}
        self._header_field = bytearray()
        self._header_value = bytearray()
        self._streaming = False
        self._field_name = ""
        self._field_value = bytearray()
        self._fields = 0
        self._ended = False
        from python_multipart.multipart import MultipartParser

        self._parser = MultipartParser(
            boundary,
            callbacks={
                "on_part_begin": self._on_part_begin,
                "on_header_field": self._on_header_field,
                "on_header_value": self._on_header_value,
                "on_header_end": self._on_header_end,
                "on_headers_finished": self._on_headers_finished,
                "on_part_data": self._on_part_data,
                "on_part_end": self._on_part_end,
                "on_end": self._on_end,
            },
        )

    # -- parser callbacks (synchronous, called from inside parser.write) ---------------------------

    def _on_part_begin(self) -> None:
        self._headers = {}
        self._header_field.clear()
        self._header_value.clear()

    def _on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_field += data[start:end]

    def _on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def _on_header_end(self) -> None:
        self._headers[bytes(self._header_field).decode("latin-1").lower()] = bytes(self._header_value).decode("latin-1")
        self._header_field.clear()
        self._header_value.clear()

    def _on_headers_finished(self) -> None:
        from python_multipart.multipart import parse_options_header

        _, options = parse_options_header(self._headers.get("content-disposition", ""))
        name = _decode(options.get(b"name", b""))
        if not name:
            raise InvalidRequestError("A multipart part has no name in its Content-Disposition header.")
        raw_filename = options.get(b"filename")
        if name == self._file_field or raw_filename is not None:
            self._streaming = True
            filename = _decode(raw_filename) if raw_filename is not None else None
            self._pending.append(FileStart(name, filename, self._headers.get("content-type")))
        else:
            self._fields += 1
            if self._fields > MAX_FIELDS:
                raise InvalidRequestError(f"Too many form fields (more than {MAX_FIELDS}).")
            self._streaming = False
            self._field_name = name
            self._field_value.clear()

    def _on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self._streaming:
            self._pending.append(Data(data[start:end]))
            return
        self._field_value += data[start:end]
        if len(self._field_value) > MAX_FIELD_BYTES:
            raise InvalidRequestError(
                f"Form field '{self._field_name}' is longer than {MAX_FIELD_BYTES} bytes.", param=self._field_name
            )

    def _on_part_end(self) -> None:
        if self._streaming:
            self._pending.append(PartEnd())
        else:
            self._pending.append(Field(self._field_name, _decode(bytes(self._field_value))))
        self._streaming = False

    def _on_end(self) -> None:
        self._ended = True

    # -- the pull side ------------------------------------------------------------------------------

    async def __aiter__(self) -> AsyncIterator[Event]:
        from python_multipart.exceptions import MultipartParseError

        async for chunk in self._source:
            if not chunk:
                continue
            try:
                self._parser.write(chunk)
            except MultipartParseError as exc:
                raise InvalidRequestError(f"The multipart body is malformed: {exc}.") from None
            while self._pending:
                yield self._pending.popleft()
            if self._ended:
                break
        if not self._ended:
            raise InvalidRequestError(
                "The multipart body ended before its closing boundary; the upload was incomplete.",
                code="incomplete_upload",
            )


def form_data(fields: dict[str, str]) -> dict[str, Any]:
    """Flat form fields → the nested shape models validate (``expires_after[seconds]`` → nested)."""
    data: dict[str, Any] = {}
    for key, value in fields.items():
        match = _BRACKET_KEY.match(key)
        if match:
            nested = data.setdefault(match.group(1), {})
            if isinstance(nested, dict):
                nested[match.group(2)] = value
        else:
            data[key] = value
    return data


class StreamedUpload(Generic[FormT]):
    """The server's :class:`underlay.api.routes.MultipartUpload`: the file part of an event stream."""

    def __init__(
        self,
        events: AsyncIterator[Event],
        start: FileStart,
        fields: dict[str, str],
        model: type[FormT],
        early: FormT | None,
    ) -> None:
        self._events = events
        self.filename = start.filename or "upload"
        self.content_type = start.content_type
        self._fields = fields
        self._model = model
        self._early = early
        self._file_done = False

    @property
    def early(self) -> FormT | None:
        return self._early

    async def chunks(self) -> AsyncIterator[bytes]:
        if self._file_done:
            raise RuntimeError("The file part has already been read.")
        async for event in self._events:
            if isinstance(event, Data):
                if event.data:
                    yield event.data
            elif isinstance(event, PartEnd):
                self._file_done = True
                return
        raise InvalidRequestError("The multipart body ended inside the file part.", code="incomplete_upload")

    async def form(self) -> FormT:
        if not self._file_done:
            raise RuntimeError("Read the file part (chunks()) before the rest of the form.")
        async for event in self._events:
            if isinstance(event, Field):
                self._fields[event.name] = event.value
            elif isinstance(event, FileStart):
                raise InvalidRequestError(
                    f"Only one file part is accepted; got a second one named '{event.name}'.", param=event.name
                )
        return validate_form(self._model, self._fields)


def validate_form(model: type[FormT], fields: dict[str, str]) -> FormT:
    """Validate collected fields, raising a 400 that names the first bad field."""
    from underlay.server.errors import validation_message

    try:
        return model.model_validate(form_data(fields))
    except ValidationError as exc:
        message, param = validation_message(list(exc.errors()))
        raise InvalidRequestError(message, param=param) from None


def early_form(model: type[FormT], fields: dict[str, str]) -> FormT | None:
    """The form if the fields seen so far make a valid one; ``None`` if only missing fields stop it.

    A field that is present but wrong is refused at once (a 400 before any byte is stored); a missing
    one may still come after the file part.
    """
    from underlay.server.errors import validation_message

    try:
        return model.model_validate(form_data(fields))
    except ValidationError as exc:
        present = [e for e in exc.errors() if e.get("type") != "missing"]
        if present:
            message, param = validation_message(list(present))
            raise InvalidRequestError(message, param=param) from None
        return None


async def _request_body(request: Any) -> AsyncIterator[bytes]:
    """``request.stream()``, with a client that went away mid-upload as a typed error (nothing to log)."""
    from starlette.requests import ClientDisconnect

    try:
        async for chunk in request.stream():
            yield chunk
    except ClientDisconnect:
        raise InvalidRequestError(
            "The client disconnected before the upload finished.", code="client_disconnected"
        ) from None


async def multipart_call(request: Any, route: Any, handler: Any, kwargs: dict[str, Any]) -> Any:
    """Parse up to the file part, then call ``handler(upload=..., **kwargs)`` with the rest streaming.

    Fields before the file part are checked at once, so a bad ``purpose`` costs no storage; a body
    with no file part is refused after its fields are checked (the fields' errors are more useful).
    """
    boundary = boundary_of(request.headers.get("content-type"))
    events = aiter(MultipartEvents(_request_body(request), boundary, route.file_field))
    fields: dict[str, str] = {}
    start: FileStart | None = None
    async for event in events:
        if isinstance(event, Field):
            fields[event.name] = event.value
        elif isinstance(event, FileStart):
            if event.name != route.file_field:
                raise InvalidRequestError(
                    f"Unexpected file part '{event.name}'; send the file as '{route.file_field}'.", param=event.name
                )
            start = event
            break
    model = route.body
    if start is None:
        if model is not None:
            validate_form(model, fields)
        raise InvalidRequestError(f"Missing required parameter: '{route.file_field}'.", param=route.file_field)
    early = early_form(model, fields) if model is not None else None
    upload: StreamedUpload[Any] = StreamedUpload(events, start, fields, model or BaseModel, early)
    return await handler(upload=upload, **kwargs)
