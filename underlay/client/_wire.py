"""How the SDK's own resources speak to the server through the ``openai`` client's request machinery.

Why not a second HTTP layer: the ``openai`` client already owns retries, timeouts, headers, the API key
and the mapping of error envelopes to ``openai.NotFoundError`` and friends. Our resources only say which
route to call and which contract model to read the answer into; ``self._get``/``self._post``/... do the
rest, so an Underlay call fails and retries exactly as an OpenAI one does.

Three pieces live here:

- :func:`route_path`: the method and path of a route, read from the contract's route table (the handler
  names it), so the client cannot drift from the server's paths.
- :func:`parsed`: a ``cast_to`` for a contract model. The ``openai`` client refuses plain pydantic models
  and only *constructs* (never validates) its own; a class with a ``build`` hook makes it validate the
  body into the contract model, nested models included, and a mismatch surfaces as
  ``openai.APIResponseValidationError``.
- Page types: the ``openai`` SDK's own pages (``SyncPage``, ``SyncCursorPage`` and their async twins),
  subclassed only to validate each item into its contract model.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any, Generic, TypedDict, TypeVar, cast
from urllib.parse import quote

import openai
import pydantic
from openai import pagination

from underlay.api.routes import Handler, Route

__all__ = [
    "AsyncCursorPage",
    "AsyncPage",
    "RequestOptions",
    "SyncCursorPage",
    "SyncPage",
    "body_of",
    "options_of",
    "parsed",
    "query_of",
    "route_path",
    "sends",
]

M = TypeVar("M", bound=pydantic.BaseModel)
T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])


class RequestOptions(TypedDict, total=False):
    """Per-call options every resource method takes, as the ``openai`` SDK's methods do."""

    extra_headers: Mapping[str, str] | None
    extra_query: Mapping[str, object] | None
    extra_body: Mapping[str, object] | None
    timeout: float | openai.Timeout | None | openai.NotGiven


def _route_tables() -> list[Route]:
    from underlay.api import models, safety, telemetry, tool_runtime, vector_io

    return [*models.ROUTES, *safety.ROUTES, *telemetry.ROUTES, *tool_runtime.ROUTES, *vector_io.ROUTES]


@functools.cache
def _routes_by_handler() -> dict[Handler, Route]:
    return {route.handler: route for route in _route_tables()}


def route_path(handler: Handler, **params: str) -> tuple[str, str]:
    """``(method, path)`` of the route whose handler is ``handler``, relative to the client's ``/v1`` base.

    Path parameters are percent-encoded; a ``{name:path}`` parameter keeps its slashes, since ids such
    as ``llama-cpp/qwen`` are routed whole by the server.
    """
    route = _routes_by_handler()[handler]
    path = route.path
    for name, value in params.items():
        if f"{{{name}:path}}" in path:
            path = path.replace(f"{{{name}:path}}", quote(value, safe="/"))
        else:
            path = path.replace(f"{{{name}}}", quote(value, safe=""))
    return route.method, path.removeprefix("/v1")


@functools.cache
def _builder(model: type[pydantic.BaseModel]) -> type[openai.BaseModel]:
    def build(cls: type[Any], *, response: Any, data: object) -> pydantic.BaseModel:
        return model.model_validate(data)

    return type(f"Parsed{model.__name__}", (openai.BaseModel,), {"build": classmethod(build)})


def parsed(model: type[M]) -> type[M]:
    """A ``cast_to`` that makes the ``openai`` client validate the body into ``model`` (see module doc)."""
    return cast(type[M], _builder(model))


class _Validated:
    """Mixin for page types: validate the whole page (each item into its contract model)."""

    @classmethod
    def build(cls, *, response: Any, data: object) -> Any:
        return cast(Any, cls).model_validate(data)


class SyncPage(_Validated, pagination.SyncPage[T], Generic[T]):
    """The ``openai`` SDK's one-page list (``{"object": "list", "data": [...]}``), items validated."""


class AsyncPage(_Validated, pagination.AsyncPage[T], Generic[T]):
    """The async twin of :class:`SyncPage`."""


class SyncCursorPage(_Validated, pagination.SyncCursorPage[T], Generic[T]):
    """The ``openai`` SDK's cursor page (``has_more``, next page ``after`` the last id), items validated."""


class AsyncCursorPage(_Validated, pagination.AsyncCursorPage[T], Generic[T]):
    """The async twin of :class:`SyncCursorPage`."""


def _dump(value: Any) -> Any:
    if isinstance(value, pydantic.BaseModel):
        return value.model_dump(mode="json", exclude_unset=True, by_alias=True)
    if isinstance(value, list | tuple):
        return [_dump(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _dump(v) for k, v in value.items()}
    return value


def body_of(**fields: Any) -> dict[str, Any]:
    """A JSON body from keyword arguments: ``omit`` ones left out, contract models dumped as JSON.

    The server validates the body into its request model and answers a mistake with a 400 naming the
    field (``openai.BadRequestError``); the client does not validate it a second time.
    """
    return {name: _dump(value) for name, value in fields.items() if not isinstance(value, openai.Omit)}


def query_of(**fields: Any) -> dict[str, Any]:
    """Query parameters, ``omit`` ones left out."""
    return body_of(**fields)


def options_of(options: RequestOptions, query: Mapping[str, Any] | None = None) -> Any:
    """The ``openai`` client's request options from a method's ``**options`` (and its query)."""
    from openai._base_client import make_request_options

    return make_request_options(
        query=dict(query) if query else None,
        extra_headers=cast(Any, options.get("extra_headers")),
        extra_query=cast(Any, options.get("extra_query")),
        extra_body=cast(Any, options.get("extra_body")),
        timeout=options.get("timeout", openai.NOT_GIVEN),
    )


def sends(model: type[pydantic.BaseModel]) -> Callable[[F], F]:
    """Mark a method whose keyword arguments are ``model``'s fields (its request body or query).

    ``tests/unit/test_client_contract.py`` checks every marked method against its model, so a field
    added to the contract and missing from the SDK (or misspelled) fails a test, not a user.
    """

    def mark(method: F) -> F:
        cast(Any, method).__underlay_request__ = model
        return method

    return mark
