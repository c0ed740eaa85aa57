"""The provider boundary: every provider instance is reached through one :class:`ProviderHandle`.

Why one boundary: a provider is code written by many hands (third parties too) that talks to things
we do not control. What must happen around *every* call to it — a telemetry span with its usage
figures, and turning a foreign exception (an ``httpx`` timeout, a driver's ``OSError``, a bug's
``KeyError``) into one of our typed errors naming the provider — is done here once, instead of by
patching instances and by a ``try/except`` copied into each router. Routers then hold only routing and
product logic.

The stack wraps each instance when it builds it (:func:`wrap_provider`). The handle exposes the
provider's attributes and methods unchanged; ``isinstance`` answers for the provider's class, and
``handle.inner`` is the provider itself for the rare code that needs the object.

Error policy, per API (:data:`PASS_THROUGH`, :data:`CONTRACT_ERRORS`):

- Our typed errors (:class:`UnderlayError`) pass through untouched.
- A timeout becomes 504, a refused or dropped connection 503, anything else 502; each names the provider.
- ``tool_runtime`` and ``responses`` providers keep their exceptions: the tool-runtime router turns a
  tool's failure into a tool result (the model reads it), and the Responses provider is our own loop,
  whose failures are already typed.
- A files provider's ``FileNotFoundError`` is part of its contract (content missing from storage) and
  reaches the router as is.
"""

from __future__ import annotations

import inspect
import logging
import sys
from collections.abc import AsyncIterator, Callable
from functools import cache
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar, cast

from underlay.api.errors import ServiceUnavailableError, UnderlayError, UpstreamError, UpstreamTimeoutError
from underlay.core.quotas.usage import metered, with_stream_usage
from underlay.core.telemetry.instrument import SKIP, is_stream, traced_call

if TYPE_CHECKING:
    from underlay.core.telemetry.runtime import Telemetry

log = logging.getLogger("underlay.providers")

P = TypeVar("P")

PASS_THROUGH = frozenset({"tool_runtime", "responses"})
"""APIs whose routers handle their providers' own exceptions (see the module docstring)."""

CONTRACT_ERRORS: dict[str, tuple[type[BaseException], ...]] = {"files": (FileNotFoundError,)}
"""Exceptions an API's provider contract names, which reach the router unmapped."""

METERED: dict[str, frozenset[str]] = {
    "inference": frozenset({"openai_chat_completion", "openai_completion", "openai_embeddings"})
}
"""Methods whose reported token usage is charged to the current request's quota ledger.

The charge wraps the traced call, so the span and the token metrics still see a stream's usage chunk
that only the quota asked for (see :func:`underlay.core.quotas.usage.with_stream_usage`).
"""

MAX_DETAIL = 2000
"""The most characters of a foreign exception's text that reach an error message (bounded work, bounded echo)."""

Mapper = Callable[[Exception], BaseException]


def _transport_errors() -> tuple[tuple[type[BaseException], ...], tuple[type[BaseException], ...]]:
    """(timeouts, network failures), httpx's among them once something has imported httpx.

    Why not ``import httpx`` at the top: this module is on every start's path and httpx costs about
    0.1 CPU second to import; an httpx exception cannot exist before httpx is imported.
    """
    httpx = sys.modules.get("httpx")
    if httpx is None:
        return (TimeoutError,), (ConnectionError,)
    return (TimeoutError, httpx.TimeoutException), (ConnectionError, httpx.NetworkError)


def provider_failure(provider_id: str, exc: Exception) -> UnderlayError:
    """``exc`` as one of our errors naming ``provider_id``; our own errors pass through unchanged."""
    if isinstance(exc, UnderlayError):
        return exc
    text = str(exc)
    if len(text) > MAX_DETAIL:
        text = f"{text[:MAX_DETAIL]}… ({len(text)} characters)"
    detail = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    timeouts, network = _transport_errors()
    if isinstance(exc, timeouts):
        log.warning("provider %s did not answer in time: %s", provider_id, detail)
        return UpstreamTimeoutError(provider_id, f"did not answer in time ({detail})")
    if isinstance(exc, network):
        log.warning("provider %s cannot be reached: %s", provider_id, detail)
        return ServiceUnavailableError(provider_id, f"cannot be reached ({detail})")
    log.error("provider %s failed", provider_id, exc_info=exc)  # a bug or an unexpected answer: keep the trace
    return UpstreamError(provider_id, detail)


def error_mapper(api: str, provider_id: str) -> Mapper | None:
    """How foreign exceptions from ``api``'s provider ``provider_id`` are mapped; ``None``: left alone."""
    if api in PASS_THROUGH:
        return None
    kept = CONTRACT_ERRORS.get(api, ())

    def mapped(exc: Exception) -> BaseException:
        if kept and isinstance(exc, kept):
            return exc
        return provider_failure(provider_id, exc)

    return mapped


@cache
def _boundary_methods(cls: type) -> tuple[tuple[str, bool], ...]:
    """The public async methods of ``cls`` that go through the boundary: (name, is an async generator)."""
    found = []
    for name in dir(cls):
        if name.startswith("_") or name in SKIP:
            continue
        attr = inspect.getattr_static(cls, name, None)
        if isinstance(attr, staticmethod | classmethod | property):
            continue
        if inspect.isasyncgenfunction(attr):
            found.append((name, True))
        elif inspect.iscoroutinefunction(attr):
            found.append((name, False))
    return tuple(found)


class ProviderHandle:
    """A provider seen through the boundary; attribute reads and writes reach the provider itself."""

    def __init__(self, inner: Any, *, api: str, provider_id: str, telemetry: Telemetry | None = None) -> None:
        object.__setattr__(self, "_handle_inner", inner)
        object.__setattr__(self, "_handle_api", api)
        object.__setattr__(self, "_handle_provider_id", provider_id)
        errors = error_mapper(api, provider_id)
        inner_class: type = type(inner)
        for name, is_generator in _boundary_methods(inner_class):
            bound = getattr(inner, name)
            method = bound
            if telemetry is not None:
                method = traced_call(
                    bound, name, telemetry, layer="provider", api=api, provider_id=provider_id, errors=errors
                )
            elif errors is not None:
                method = _guarded_generator(bound, errors) if is_generator else _guarded(bound, errors)
            if name in METERED.get(api, ()) and not is_generator:
                method = _metering(method)
            if method is not bound:  # else the provider's own bound method is found through __getattr__
                object.__setattr__(self, name, method)  # found before __getattr__: no lookup cost per call

    @property
    def inner(self) -> Any:
        """The provider object itself."""
        return object.__getattribute__(self, "_handle_inner")

    @property  # type: ignore[misc]
    def __class__(self) -> type:  # noqa: D105 - isinstance(handle, ProviderClass) keeps working
        return type(object.__getattribute__(self, "_handle_inner"))

    def __getattr__(self, name: str) -> Any:
        return getattr(object.__getattribute__(self, "_handle_inner"), name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(object.__getattribute__(self, "_handle_inner"), name, value)

    def __repr__(self) -> str:
        inner = object.__getattribute__(self, "_handle_inner")
        return f"<ProviderHandle {object.__getattribute__(self, '_handle_provider_id')} of {inner!r}>"


def wrap_provider(inner: P, *, api: str, provider_id: str, telemetry: Telemetry | None = None) -> P:
    """``inner`` behind the boundary, typed as the provider it stands for."""
    return cast(P, ProviderHandle(inner, api=api, provider_id=provider_id, telemetry=telemetry))


def unwrap(provider: Any) -> Any:
    """The provider object behind a handle (or ``provider`` itself when it is not wrapped)."""
    return provider.inner if type(provider) is ProviderHandle else provider


def _raise_mapped(exc: Exception, errors: Mapper) -> NoReturn:
    mapped = errors(exc)
    if mapped is exc:
        raise exc
    raise mapped from None


def _metering(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` charging the usage it reports to the current request (streams as their usage chunk passes).

    Its first argument is the request; inside a metered request a stream is asked for its usage chunk,
    which reaches the client only when the client asked for it.
    """

    async def charged(params: Any, *args: Any, **kwargs: Any) -> Any:
        return metered(await fn(with_stream_usage(params), *args, **kwargs), params)

    charged.__wrapped__ = fn  # type: ignore[attr-defined]
    return charged


def _guarded(fn: Callable[..., Any], errors: Mapper) -> Callable[..., Any]:
    """``fn`` (a coroutine function) with foreign exceptions mapped, its returned stream included."""

    async def guarded(*args: Any, **kwargs: Any) -> Any:
        try:
            result = await fn(*args, **kwargs)
        except Exception as exc:
            _raise_mapped(exc, errors)
        if is_stream(result):
            return _guard_stream(result, errors)
        return result

    guarded.__wrapped__ = fn  # type: ignore[attr-defined]
    return guarded


def _guarded_generator(fn: Callable[..., Any], errors: Mapper) -> Callable[..., Any]:
    def guarded(*args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        return _guard_stream(fn(*args, **kwargs), errors)

    guarded.__wrapped__ = fn  # type: ignore[attr-defined]
    return guarded


async def _guard_stream(stream: Any, errors: Mapper) -> AsyncIterator[Any]:
    """Pass a stream through; a foreign exception mid-stream is mapped like one before it."""
    try:
        async for item in stream:
            yield item
    except Exception as exc:
        _raise_mapped(exc, errors)
    finally:
        aclose = getattr(stream, "aclose", None)
        if aclose is not None:
            try:
                await aclose()
            except Exception:  # closing a broken stream must not hide why it broke
                pass
