"""Spans around router and provider calls: the machinery, and its use on routers.

Providers are reached through :class:`underlay.core.boundary.ProviderHandle`, which calls
:func:`traced_call` for each of their async methods (and maps their exceptions). Routers are our own
classes and are still wrapped in place by :func:`instrument`: each public ``async`` method on the
*instance* is replaced with a traced one, which keeps ``isinstance`` and identity intact. A method that
returns an async iterator (a stream) keeps its span open until the stream ends, which is where time to
first token and tokens per second are measured.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode
from pydantic import BaseModel

from underlay.core.telemetry.redact import record_error, redact

if TYPE_CHECKING:
    from underlay.core.telemetry.runtime import Telemetry

TRACER_KEY = "underlay.tracer"  # see underlay.core.telemetry.runtime.TRACER_KEY

SKIP = frozenset(
    {"initialize", "shutdown", "attach", "health", "list_provider_models", "start", "stop", "close", "aclose"}
)
"""Lifecycle methods: they run at start-up or shutdown, outside any request, and would only add noise."""

VECTOR_OPERATIONS = frozenset({"insert_chunks", "query_chunks", "delete_chunks", "embed"})


def instrument(obj: Any, telemetry: Telemetry, *, layer: str, api: str, provider_id: str | None = None) -> Any:
    """Wrap ``obj``'s public async methods in spans (in place); returns ``obj``."""
    cls = type(obj)
    for name in dir(cls):
        if name.startswith("_") or name in SKIP:
            continue
        attr = inspect.getattr_static(cls, name, None)
        if isinstance(attr, staticmethod | classmethod | property):
            continue
        if not (inspect.iscoroutinefunction(attr) or inspect.isasyncgenfunction(attr)):
            continue
        bound = getattr(obj, name)
        wrapped = traced_call(bound, name, telemetry, layer=layer, api=api, provider_id=provider_id)
        try:
            setattr(obj, name, wrapped)
        except (AttributeError, TypeError):  # __slots__ or a frozen object: leave it untraced
            continue
    return obj


def _request_attributes(args: tuple[Any, ...], kwargs: dict[str, Any], method: str) -> dict[str, Any]:
    """Cheap attributes from the call's arguments: the model and the tool name when present."""
    attributes: dict[str, Any] = {}
    params = kwargs.get("params")
    if params is None and args and isinstance(args[0], BaseModel):
        params = args[0]
    model = getattr(params, "model", None) if params is not None else None
    if isinstance(model, str):
        attributes["gen_ai.request.model"] = model
    if "tool" in method:
        tool_name = kwargs.get("tool_name")
        if tool_name is None and args and isinstance(args[0], str):
            tool_name = args[0]
        if tool_name is None and params is not None:
            tool_name = getattr(params, "tool_name", None)
        if isinstance(tool_name, str):
            attributes["gen_ai.tool.name"] = tool_name
        context = kwargs.get("context") or (args[2] if len(args) > 2 else None)
        connection = getattr(context, "connection", None)
        server = getattr(connection, "name", None)
        if isinstance(server, str):  # the MCP server a tool call goes to (its URL or configured name)
            attributes["underlay.tool.server"] = redact(server)
    return attributes


def _usage(result: Any) -> tuple[int | None, int | None]:
    usage = getattr(result, "usage", None)
    if usage is None:
        return None, None
    prompt = getattr(usage, "prompt_tokens", None)
    completion = getattr(usage, "completion_tokens", None)
    if prompt is None:
        prompt = getattr(usage, "input_tokens", None)
    if completion is None:
        completion = getattr(usage, "output_tokens", None)
    return prompt, completion


def is_stream(result: Any) -> bool:
    """Whether a call's result is a stream (an async iterator) rather than a value."""
    # The isinstance test first: a missed attribute on a pydantic model costs microseconds (it raises inside).
    return not isinstance(result, BaseModel | dict | list | str | bytes) and hasattr(result, "__aiter__")


def _model_attribute(obj: Any, name: str) -> Any:
    """``getattr(obj, name, None)``, answered from a pydantic model's field table and extras when it lacks
    the field, instead of paying for the failed lookup on every call."""
    cls = type(obj)
    fields = getattr(cls, "__pydantic_fields__", None)
    if fields is not None and name not in fields and not any(name in k.__dict__ for k in cls.__mro__):
        extra = getattr(obj, "__pydantic_extra__", None)
        return extra.get(name) if extra else None
    return getattr(obj, name, None)


class _Call:
    """What one traced call knows, shared by the plain and the streaming paths."""

    __slots__ = ("telemetry", "span", "layer", "api", "method", "provider_id", "attributes", "started")

    def __init__(
        self,
        telemetry: Telemetry,
        span: Any,
        layer: str,
        api: str,
        method: str,
        provider_id: str | None,
        attributes: dict[str, Any],
    ) -> None:
        self.telemetry = telemetry
        self.span = span
        self.layer = layer
        self.api = api
        self.method = method
        self.provider_id = provider_id
        self.attributes = attributes
        self.started = time.perf_counter()

    def finish(
        self,
        error: BaseException | None,
        result: Any = None,
        first_item_at: float | None = None,
        items: int | None = None,
    ) -> None:
        ended = time.perf_counter()
        elapsed = ended - self.started
        span = self.span
        prompt, completion = _usage(result)
        model = self.attributes.get("gen_ai.request.model")
        metrics = self.telemetry.metrics
        if span.is_recording():
            found: dict[str, Any] = {"underlay.latency_ms": round(elapsed * 1000, 3)}
            if prompt is not None:
                found["gen_ai.usage.input_tokens"] = prompt
            if completion is not None:
                found["gen_ai.usage.output_tokens"] = completion
            response_model = getattr(result, "model", None)
            if isinstance(response_model, str):
                found["gen_ai.response.model"] = response_model
            if first_item_at is not None:
                found["underlay.time_to_first_token_ms"] = round((first_item_at - self.started) * 1000, 3)
            if items is not None:
                found["underlay.stream.chunks"] = items
            span.set_attributes(found)
            if error is not None:
                span.set_status(Status(StatusCode.ERROR, record_error(span, error)))
        outcome = "error" if error is not None else "ok"
        tool_error = _model_attribute(result, "error_code") if error is None else None
        if isinstance(tool_error, str) and tool_error:  # a tool that failed answers with an error result
            outcome = "error"
            if span.is_recording():
                span.set_attribute("underlay.tool.error_code", tool_error)
        if self.layer == "provider":  # a router's time is its provider's plus a lookup: not worth a series
            metrics.call_duration.record(
                elapsed,
                {"api": self.api, "provider": self.provider_id or "", "method": self.method, "outcome": outcome},
            )
        # Per-model figures once per call chain: at the provider, the layer that talks to the model.
        if self.layer == "provider" and self.api == "inference":
            labels = {"model": model or "", "provider": self.provider_id or ""}
            if prompt:
                metrics.tokens.add(prompt, {**labels, "type": "prompt"})
            if completion:
                metrics.tokens.add(completion, {**labels, "type": "completion"})
            if first_item_at is not None:
                metrics.time_to_first_token.record(first_item_at - self.started, labels)
            generating = ended - (first_item_at if first_item_at is not None else self.started)
            if completion and generating > 0:
                metrics.tokens_per_second.record(completion / generating, labels)
        if self.layer == "router":
            if self.api == "tool_runtime" and self.method == "invoke_tool":
                tool = self.attributes.get("gen_ai.tool.name", "")
                metrics.tool_calls.add(1, {"tool": tool, "outcome": outcome})
            elif self.api == "vector_io" and self.method in VECTOR_OPERATIONS:
                metrics.vector_operations.add(1, {"operation": self.method, "outcome": outcome})
        span.end()


def traced_call(
    fn: Callable[..., Any],
    method: str,
    telemetry: Telemetry,
    *,
    layer: str,
    api: str,
    provider_id: str | None,
    errors: Callable[[Exception], BaseException] | None = None,
) -> Callable[..., Any]:
    """``fn`` with a span around each call (and around the stream it returns, to its end).

    ``errors`` maps an exception the call raises to the one its caller sees; the span records the
    original, so a trace shows what really failed.
    """
    tracer = telemetry.tracer
    name = f"{layer} {provider_id or api}.{method}"
    static: dict[str, Any] = {"underlay.layer": layer, "underlay.api": api}
    if provider_id is not None:
        static["underlay.provider_id"] = provider_id

    def begin(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[_Call, Any]:
        attributes = _request_attributes(args, kwargs, method)
        parent = trace.get_current_span()
        if not parent.is_recording() and parent.get_span_context().is_valid:
            # A sampled-out trace: its spans would not record anyway; keep only the timing for metrics.
            return _Call(telemetry, trace.INVALID_SPAN, layer, api, method, provider_id, attributes), None
        span = tracer.start_span(name, kind=SpanKind.INTERNAL, attributes={**static, **attributes})
        ctx = None
        if otel_context.get_value(TRACER_KEY) is None:  # outside a request (a job): carry the tracer down
            ctx = otel_context.set_value(TRACER_KEY, tracer)
        token = otel_context.attach(trace.set_span_in_context(span, ctx))
        return _Call(telemetry, span, layer, api, method, provider_id, attributes), token

    if inspect.isasyncgenfunction(fn):

        def traced_gen(*args: Any, **kwargs: Any) -> AsyncIterator[Any]:
            call, token = begin(args, kwargs)
            if token is not None:
                otel_context.detach(token)
            return relay_stream(call, fn(*args, **kwargs), errors)

        traced_gen.__wrapped__ = fn  # type: ignore[attr-defined]
        return traced_gen

    async def traced(*args: Any, **kwargs: Any) -> Any:
        call, token = begin(args, kwargs)
        try:
            result = await fn(*args, **kwargs)
        except BaseException as exc:
            if token is not None:
                otel_context.detach(token)
            call.finish(exc)
            if errors is not None and isinstance(exc, Exception):
                mapped = errors(exc)
                if mapped is not exc:
                    raise mapped from None
            raise
        if token is not None:
            otel_context.detach(token)
        if is_stream(result):
            return relay_stream(call, result, errors)
        call.finish(None, result)
        return result

    traced.__wrapped__ = fn  # type: ignore[attr-defined]
    return traced


async def relay_stream(
    call: _Call, stream: Any, errors: Callable[[Exception], BaseException] | None = None
) -> AsyncIterator[Any]:
    """Pass a stream through, keeping its span open until it ends (or the client goes away).

    An exception mid-stream ends the span with it, then reaches the consumer through ``errors``.
    """
    first_at: float | None = None
    items = 0
    last: Any = None
    error: BaseException | None = None
    try:
        async for item in stream:
            if first_at is None:
                first_at = time.perf_counter()
            items += 1
            if getattr(item, "usage", None) is not None:
                last = item
            yield item
    except BaseException as exc:
        if not isinstance(exc, GeneratorExit):
            error = exc
        if errors is not None and isinstance(exc, Exception):
            mapped = errors(exc)
            if mapped is not exc:
                raise mapped from None
        raise
    finally:
        aclose = getattr(stream, "aclose", None)
        if aclose is not None:
            try:
                await aclose()
            except Exception:  # closing a broken stream must not hide why it broke
                pass
        call.finish(error, last, first_at, items)
