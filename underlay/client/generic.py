"""``client.api(name)``: any API the server loads through ``underlay.apis``, as an SDK resource.

Why generic: an API from an outside package (``underlay_notes``) gets routes, auth, quotas and spans
from the server without a line of Underlay code, and it should get the SDK the same way. Its route
table already says everything a resource needs: each handler's name becomes a method, and the route's
method, path, body or query model, response model and streaming flag say how to call it.

Two sources for that table, in order:

- typed: the API's package is importable here, so its ``underlay.apis`` entry point gives the route
  table itself; answers are validated into its pydantic models and stream events into the handler's
  declared event type;
- untyped: it is not (or ``typed=False``), so the server's ``/v1/inspect/routes`` and ``/openapi.json``
  describe the routes (the operation id carries the handler name) and answers are plain JSON.

Calls go through the ``openai`` client's own request machinery (``_get``/``_post``/``_delete``), so
retries, timeouts, the API key and the error envelope → ``openai.NotFoundError`` & co. are the same as
for every other resource. Routes are served under their API's version (``/v1alpha/notes``), so the
URL is built from the client's origin rather than its ``/v1`` base.
"""

from __future__ import annotations

import asyncio
import collections.abc
import functools
import re
import threading
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any
from urllib.parse import quote

import openai
import pydantic
from openai._models import FinalRequestOptions

from underlay.client._wire import body_of, options_of

__all__ = ["ApiResource", "AsyncApiResource", "Operation", "local_operations"]

_OPTIONS = ("extra_headers", "extra_query", "extra_body", "timeout")
_PARAM = re.compile(r"\{(\w+)(:path)?\}")
_MAX_NAME = 64


@dataclass(frozen=True)
class Operation:
    """One route of an API, as the SDK calls it: ``name`` is its handler's name."""

    name: str
    method: str
    path: str
    """The served path, version prefix included (``/v1alpha/notes/{note_id}``)."""
    takes_body: bool
    streaming: bool
    response: Any = None
    """What the answer is validated into; ``None``: plain JSON."""
    event: Any = None
    """What each stream event is validated into; ``None``: plain JSON."""
    always_streams: bool = False
    """A streaming route either always streams (``stream_note``) or only when the call says
    ``stream=True`` (``openai_chat_completion``), as its handler's return type shows."""
    summary: str = ""

    def streams(self, fields: Mapping[str, Any]) -> bool:
        return self.streaming and (self.always_streams or fields.get("stream") is True)

    @property
    def path_params(self) -> tuple[str, ...]:
        return tuple(m.group(1) for m in _PARAM.finditer(self.path))

    def url_path(self, values: Mapping[str, Any]) -> str:
        """The path with each ``{param}`` percent-encoded (a ``{param:path}`` keeps its slashes)."""

        def fill(match: re.Match[str]) -> str:
            return quote(str(values[match.group(1)]), safe="/" if match.group(2) else "")

        return _PARAM.sub(fill, self.path)


# ---- where the route table comes from --------------------------------------------------------------------


def _returns(handler: Any) -> tuple[Any, Any, bool]:
    """``(answer type, event type, always streams)`` from a handler's return annotation
    (``-> Note``, ``-> AsyncIterator[X]`` or ``-> Answer | AsyncIterator[X]``); ``None`` for what it
    cannot read."""
    try:
        returned = typing.get_type_hints(handler).get("return")
    except Exception:
        return None, None, False
    members = typing.get_args(returned) if typing.get_origin(returned) in (typing.Union, types.UnionType) else ()
    answers, events = [], []
    for member in members or (returned,):
        if typing.get_origin(member) in (collections.abc.AsyncIterator, collections.abc.AsyncIterable):
            events.append(typing.get_args(member)[0])
        else:
            answers.append(member)
    answer = answers[0] if len(answers) == 1 else None
    return answer, (events[0] if events else None), bool(events) and not answers


@functools.cache
def _local_tables() -> dict[str, list[Operation]]:
    """Every API this process can import through ``underlay.apis``, as operations; a broken plugin is skipped
    (the server reports it), since the SDK then falls back to the server's description."""
    from underlay.core.api_plugins import ENTRY_POINT_GROUP, ApiCatalog

    catalog = ApiCatalog()
    for point in entry_points(group=ENTRY_POINT_GROUP):
        try:
            loaded = point.load()
            if callable(loaded) and not hasattr(loaded, "routes"):
                loaded = loaded()
            for name, entry in loaded.items() if isinstance(loaded, Mapping) else [(point.name, loaded)]:
                catalog.add(name, entry, point.value)
        except Exception:
            continue
    tables: dict[str, list[Operation]] = {}
    for name, source in catalog.apis.items():
        operations = []
        for route in source.entry.routes:
            answer, event, always = _returns(route.handler)
            response = route.response or answer
            operations.append(
                Operation(
                    name=route.handler.__name__,
                    method=route.method,
                    path=route.path,
                    takes_body=route.body is not None,
                    streaming=route.streaming,
                    response=response if isinstance(response, type) or typing.get_origin(response) else None,
                    event=event,
                    always_streams=route.streaming and always,
                    summary=route.summary,
                )
            )
        tables[name] = operations
    return tables


def local_operations(api: str) -> list[Operation] | None:
    """The typed operations of ``api`` when its package is importable here, else ``None``.

    A name not found reads the entry points again (once per call), so a package installed or put on
    ``sys.path`` after the first lookup is still found."""
    if api not in _local_tables():
        _local_tables.cache_clear()
    return _local_tables().get(api)


def _remote_operations(api: str, routes: Any, spec: Any) -> list[Operation]:
    """Untyped operations of ``api`` from ``/v1/inspect/routes`` and ``/openapi.json`` (as parsed JSON).

    FastAPI names an operation ``<endpoint>_<path>_<method>`` and the server names an endpoint
    ``<api>_<handler>``, so the handler name is what lies between.
    """
    paths = spec.get("paths", {}) if isinstance(spec, Mapping) else {}
    operations = []
    for row in routes.get("data", []) if isinstance(routes, Mapping) else []:
        if not isinstance(row, Mapping) or row.get("api") != api:
            continue
        method, path = str(row["method"]), str(row["path"])
        plain = path.replace(":path}", "}")  # OpenAPI writes {id:path} as {id}
        described = paths.get(plain, {}).get(method.lower(), {})
        operation_id = str(described.get("operationId", ""))
        tail = re.sub(r"\W", "_", plain) + "_" + method.lower()
        name = operation_id.removeprefix(f"{api}_").removesuffix(tail)
        if not name or name == operation_id:
            continue
        operations.append(
            Operation(
                name=name,
                method=method,
                path=path,
                takes_body="requestBody" in described,
                streaming=bool(row.get("streaming")),
                always_streams="requestBody" not in described,  # a body says stream=true when it wants events
                summary=str(row.get("summary", "")),
            )
        )
    return operations


def _check_name(api: str) -> None:
    if not isinstance(api, str) or not re.fullmatch(r"[a-z][a-z0-9_]*", api) or len(api) > _MAX_NAME:
        raise ValueError(f"API name {api[:_MAX_NAME]!r} must be lower-case letters, digits and _ (at most 64)")


# ---- how a call is made -----------------------------------------------------------------------------------


@functools.cache
def _cast(response: Any) -> Any:
    """A ``cast_to`` that validates into ``response`` (any type pydantic knows), or ``object`` for raw JSON."""
    if response is None:
        return object
    adapter = pydantic.TypeAdapter(response)

    def build(cls: type[Any], *, response: Any, data: object) -> Any:
        return adapter.validate_python(data)

    label = getattr(response, "__name__", "Event")
    return type(f"Parsed{label}", (openai.BaseModel,), {"build": classmethod(build)})


@dataclass(frozen=True)
class _Request:
    method: str
    url: str
    body: dict[str, Any] | None
    options: Any
    cast_to: Any
    streaming: bool


def _request(base_url: Any, api: str, op: Operation, params: Any, kwargs: dict[str, Any]) -> _Request:
    """Split a call's arguments into path values, body or query, and request options."""
    options = {key: kwargs.pop(key) for key in _OPTIONS if key in kwargs}
    values: dict[str, Any] = {}
    for name in op.path_params:
        if name not in kwargs:
            raise TypeError(f"{api}.{op.name}() needs the keyword argument {name!r} (the path {op.path})")
        values[name] = kwargs.pop(name)
    if isinstance(params, pydantic.BaseModel):
        params = params.model_dump(mode="json", exclude_unset=True, by_alias=True)
    fields = body_of(**{**dict(params or {}), **kwargs})
    origin = str(base_url).rstrip("/").removesuffix("/v1")
    url = origin + op.url_path(values)
    streams = op.streams(fields)
    cast_to = _cast(op.event if streams else op.response)
    if op.takes_body:
        return _Request(op.method, url, fields, options_of(options), cast_to, streams)
    return _Request(op.method, url, None, options_of(options, fields), cast_to, streams)


def _describe(api: str, operations: list[Operation]) -> dict[str, Operation]:
    if not operations:
        raise LookupError(f"API '{api}' has no routes on this server; GET /v1/inspect/routes lists what it serves")
    return {op.name: op for op in operations}


def _unknown(api: str, name: str, operations: Mapping[str, Operation]) -> AttributeError:
    return AttributeError(f"API '{api}' has no route handler {name!r}; it has: {', '.join(sorted(operations))}")


class ApiResource:
    """One API of the server; each route handler is a method (``notes.create_note(title=..., text=...)``).

    A method takes the path parameters and the body (or query) fields as keyword arguments, or a request
    model (or dict) as its one positional argument, plus the ``openai`` SDK's ``extra_headers``,
    ``extra_query``, ``extra_body`` and ``timeout``. A streaming route returns an ``openai.Stream`` of
    events; everything else returns the answer.
    """

    def __init__(self, client: openai.OpenAI, api: str, *, typed: bool = True) -> None:
        _check_name(api)
        self._client, self._api, self._typed = client, api, typed
        self._operations: dict[str, Operation] | None = None
        self._lock = threading.Lock()

    @property
    def operations(self) -> dict[str, Operation]:
        """The API's routes by handler name (read once, from the package or from the server)."""
        with self._lock:
            if self._operations is None:
                local = local_operations(self._api) if self._typed else None
                if local is None:
                    routes = self._client.get("/inspect/routes", cast_to=object)
                    spec = self._client.get(self._origin() + "/openapi.json", cast_to=object)
                    local = _remote_operations(self._api, routes, spec)
                self._operations = _describe(self._api, local)
            return self._operations

    @property
    def typed(self) -> bool:
        """Whether answers are validated into the API's own models (its package is importable here)."""
        return any(op.response is not None or op.event is not None for op in self.operations.values())

    def _origin(self) -> str:
        return str(self._client.base_url).rstrip("/").removesuffix("/v1")

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        operations = self.operations
        if name not in operations:
            raise _unknown(self._api, name, operations)
        op = operations[name]

        def call(params: Any = None, /, **kwargs: Any) -> Any:
            request = _request(self._client.base_url, self._api, op, params, kwargs)
            return self._client.request(
                request.cast_to,
                FinalRequestOptions.construct(
                    method=request.method.lower(),
                    url=request.url,
                    json_data=request.body,
                    **request.options,
                ),
                stream=request.streaming,
                stream_cls=openai.Stream[request.cast_to] if request.streaming else None,
            )

        call.__name__ = call.__qualname__ = name
        call.__doc__ = op.summary or f"{op.method} {op.path}"
        return call

    def __dir__(self) -> list[str]:
        return sorted({*super().__dir__(), *self.operations})

    def __repr__(self) -> str:
        return f"<ApiResource {self._api}>"


class AsyncApiResource:
    """The async twin of :class:`ApiResource`: ``await notes.create_note(...)``; a streaming route gives
    an ``openai.AsyncStream`` (``async for event in await notes.stream_note(note_id=...)``)."""

    def __init__(self, client: openai.AsyncOpenAI, api: str, *, typed: bool = True) -> None:
        _check_name(api)
        self._client, self._api, self._typed = client, api, typed
        self._operations: dict[str, Operation] | None = None
        self._lock = asyncio.Lock()

    async def operations(self) -> dict[str, Operation]:
        """The API's routes by handler name (read once, from the package or from the server)."""
        async with self._lock:
            if self._operations is None:
                local = local_operations(self._api) if self._typed else None
                if local is None:
                    origin = str(self._client.base_url).rstrip("/").removesuffix("/v1")
                    routes = await self._client.get("/inspect/routes", cast_to=object)
                    spec = await self._client.get(origin + "/openapi.json", cast_to=object)
                    local = _remote_operations(self._api, routes, spec)
                self._operations = _describe(self._api, local)
            return self._operations

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)

        async def call(params: Any = None, /, **kwargs: Any) -> Any:
            operations = await self.operations()
            if name not in operations:
                raise _unknown(self._api, name, operations)
            request = _request(self._client.base_url, self._api, operations[name], params, kwargs)
            return await self._client.request(
                request.cast_to,
                FinalRequestOptions.construct(
                    method=request.method.lower(),
                    url=request.url,
                    json_data=request.body,
                    **request.options,
                ),
                stream=request.streaming,
                stream_cls=openai.AsyncStream[request.cast_to] if request.streaming else None,
            )

        call.__name__ = call.__qualname__ = name
        return call

    def __repr__(self) -> str:
        return f"<AsyncApiResource {self._api}>"
