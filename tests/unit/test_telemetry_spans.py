"""Spans around router and provider calls, metrics and their Prometheus text, and the config section.

The router and provider here are small classes of the shapes the stack wraps (async methods, a method
that returns a stream, an async-generator method); spans are captured with the SDK's in-memory exporter.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from pydantic import BaseModel, ValidationError

from underlay.api.errors import UpstreamError
from underlay.core.telemetry.config import TelemetryConfig
from underlay.core.telemetry.runtime import Telemetry


class Params(BaseModel):
    model: str
    stream: bool = False


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int


class Answer(BaseModel):
    model: str
    usage: Usage


class Chunk(BaseModel):
    text: str
    usage: Usage | None = None


class Provider:
    async def initialize(self) -> None:
        return None

    async def chat(self, params: Params) -> Answer | AsyncIterator[Chunk]:
        if params.model == "broken":
            raise UpstreamError("p1", "the upstream said no")
        if params.stream:
            return self._stream()
        return Answer(model=params.model, usage=Usage(prompt_tokens=3, completion_tokens=7))

    async def _stream(self) -> AsyncIterator[Chunk]:
        await asyncio.sleep(0.01)
        for word in ("a", "b", "c"):
            yield Chunk(text=word)
        yield Chunk(text="", usage=Usage(prompt_tokens=2, completion_tokens=3))

    async def words(self, n: int) -> AsyncIterator[str]:
        for i in range(n):
            yield str(i)

    def sync_helper(self) -> int:
        return 1


class Router:
    def __init__(self, provider: Provider) -> None:
        self.provider = provider

    async def chat(self, params: Params) -> Any:
        return await self.provider.chat(params.model_copy(update={"model": params.model.split("/", 1)[-1]}))

    async def invoke_tool(self, tool_name: str, kwargs: dict[str, Any]) -> str:
        return f"{tool_name}({kwargs})"


@pytest.fixture
def setup() -> tuple[Telemetry, InMemorySpanExporter, Router, Provider]:
    telemetry = Telemetry(TelemetryConfig(store_spans=False), None)
    exporter = InMemorySpanExporter()
    telemetry.provider.add_span_processor(SimpleSpanProcessor(exporter))
    provider = telemetry.instrument_provider("inference", "p1", Provider())
    router = telemetry.instrument_router("inference", Router(provider))
    return telemetry, exporter, router, provider


async def test_router_and_provider_spans_nest_with_usage(setup: Any) -> None:
    telemetry, exporter, router, provider = setup
    assert isinstance(provider, Provider) and provider.sync_helper() == 1  # still the same object and class
    with telemetry.tracer.start_as_current_span("route") as route:
        answer = await router.chat(Params(model="p1/m"))
    assert answer.usage.completion_tokens == 7
    spans = {s.name: s for s in exporter.get_finished_spans()}
    router_span, provider_span = spans["router inference.chat"], spans["provider p1.chat"]
    assert router_span.parent.span_id == route.get_span_context().span_id
    assert provider_span.parent.span_id == router_span.context.span_id
    assert router_span.attributes["gen_ai.request.model"] == "p1/m"
    assert provider_span.attributes["gen_ai.request.model"] == "m"
    assert provider_span.attributes["underlay.provider_id"] == "p1"
    assert provider_span.attributes["gen_ai.usage.input_tokens"] == 3
    assert provider_span.attributes["gen_ai.usage.output_tokens"] == 7
    assert "underlay.provider_id" not in router_span.attributes
    assert "provider p1.initialize" not in spans  # lifecycle methods are left alone


async def test_a_stream_keeps_its_span_open_until_the_end(setup: Any) -> None:
    telemetry, exporter, router, _ = setup
    stream = await router.chat(Params(model="p1/m", stream=True))
    assert exporter.get_finished_spans() == ()  # nothing ends before the stream does
    chunks = [chunk async for chunk in stream]
    assert [c.text for c in chunks] == ["a", "b", "c", ""]
    spans = {s.name: s for s in exporter.get_finished_spans()}
    provider_span = spans["provider p1.chat"]
    assert provider_span.attributes["underlay.stream.chunks"] == 4
    assert provider_span.attributes["gen_ai.usage.output_tokens"] == 3
    ttft = provider_span.attributes["underlay.time_to_first_token_ms"]
    assert 5 <= ttft <= provider_span.attributes["underlay.latency_ms"]  # the stream slept 10 ms first
    text = telemetry.metrics.prometheus_text().decode()
    assert 'underlay_inference_time_to_first_token_seconds_count{model="m",provider="p1"} 1.0' in text
    assert 'underlay_inference_tokens_total{model="m",provider="p1",type="completion"} 3.0' in text


async def test_a_stream_abandoned_early_still_ends_its_span(setup: Any) -> None:
    _, exporter, router, _ = setup
    stream = await router.chat(Params(model="p1/m", stream=True))
    async for _chunk in stream:
        break
    await stream.aclose()
    names = {s.name for s in exporter.get_finished_spans()}
    assert {"router inference.chat", "provider p1.chat"} <= names


async def test_errors_mark_spans_and_still_raise(setup: Any) -> None:
    telemetry, exporter, router, _ = setup
    with pytest.raises(UpstreamError):
        await router.chat(Params(model="p1/broken"))
    spans = exporter.get_finished_spans()
    assert len(spans) == 2
    for span in spans:
        assert span.status.status_code.name == "ERROR" and "the upstream said no" in span.status.description
        assert span.events[0].name == "exception"
        assert span.events[0].attributes["exception.type"] == "UpstreamError"
    text = telemetry.metrics.prometheus_text().decode()
    assert (
        'underlay_call_duration_seconds_count{api="inference",method="chat",outcome="error",provider="p1"} 1.0' in text
    )


async def test_error_text_in_spans_is_masked(setup: Any) -> None:
    telemetry, exporter, _, _ = setup

    class Leaky:
        async def call(self) -> None:
            raise RuntimeError("upstream rejected key sk-live-abcdef123456")

    leaky = telemetry.instrument_provider("inference", "leaky", Leaky())
    with pytest.raises(UpstreamError):  # the provider boundary maps it; the span keeps the original
        await leaky.call()
    span = exporter.get_finished_spans()[0]
    assert span.events[0].attributes["exception.type"] == "RuntimeError"
    assert "abcdef123456" not in span.status.description and "sk-***" in span.status.description
    assert "abcdef123456" not in span.events[0].attributes["exception.message"]


async def test_tool_spans_name_the_tool_and_its_server(setup: Any) -> None:
    telemetry, exporter, _, _ = setup

    class Connection(BaseModel):
        name: str

    class Context(BaseModel):
        connection: Connection

    class Mcp:
        async def invoke_tool(self, tool_name: str, kwargs: dict[str, Any], context: Context) -> str:
            return "done"

    mcp = telemetry.instrument_provider("tool_runtime", "mcp", Mcp())
    await mcp.invoke_tool("search", {}, Context(connection=Connection(name="http://u:pw-1234@tools/mcp")))
    span = exporter.get_finished_spans()[0]
    assert span.name == "provider mcp.invoke_tool" and span.attributes["gen_ai.tool.name"] == "search"
    assert span.attributes["underlay.tool.server"] == "http://u:***@tools/mcp"


async def test_async_generator_methods_and_tool_calls(setup: Any) -> None:
    telemetry, exporter, router, provider = setup
    assert [w async for w in provider.words(3)] == ["0", "1", "2"]
    assert await router.invoke_tool("get_weather", {"city": "Oslo"}) == "get_weather({'city': 'Oslo'})"
    spans = {s.name: s for s in exporter.get_finished_spans()}
    assert spans["provider p1.words"].attributes["underlay.stream.chunks"] == 3
    assert spans["router inference.invoke_tool"].attributes["gen_ai.tool.name"] == "get_weather"


async def test_tool_and_vector_metrics_count_at_the_router(setup: Any) -> None:
    telemetry, _, _, _ = setup

    class ToolResult(BaseModel):
        error_code: str | None = None

    class Tools:
        async def invoke_tool(self, tool_name: str, kwargs: dict[str, Any]) -> ToolResult:
            if tool_name == "bad":
                raise RuntimeError("boom")
            return ToolResult(error_code="tool_error" if tool_name == "refuses" else None)

    class Vectors:
        async def query_chunks(self, params: Params) -> list[str]:
            return []

    tools = telemetry.instrument_router("tool_runtime", Tools())
    vectors = telemetry.instrument_router("vector_io", Vectors())
    await tools.invoke_tool("add", {})
    await tools.invoke_tool("add", {})
    with pytest.raises(RuntimeError):
        await tools.invoke_tool("bad", {})
    await tools.invoke_tool("refuses", {})
    await vectors.query_chunks(Params(model="x"))
    text = telemetry.metrics.prometheus_text().decode()
    assert 'underlay_tool_calls_total{outcome="ok",tool="add"} 2.0' in text
    assert 'underlay_tool_calls_total{outcome="error",tool="bad"} 1.0' in text
    assert 'underlay_tool_calls_total{outcome="error",tool="refuses"} 1.0' in text
    assert 'underlay_vector_operations_total{operation="query_chunks",outcome="ok"} 1.0' in text


def test_histograms_render_cumulative_buckets() -> None:
    telemetry = Telemetry(TelemetryConfig(store_spans=False), None)
    labels = {"http.route": "/v1/models", "http.request.method": "GET", "http.response.status_code": 200}
    for seconds in (0.002, 0.002, 0.3):
        telemetry.metrics.request_duration.record(seconds, labels)
    telemetry.metrics.requests.add(3, labels)
    lines = telemetry.metrics.prometheus_text().decode().splitlines()
    series = 'http_request_method="GET",http_response_status_code="200",http_route="/v1/models"'
    assert f"underlay_requests_total{{{series}}} 3.0" in lines
    assert f'underlay_request_duration_seconds_bucket{{{series},le="0.001"}} 0.0' in lines
    assert f'underlay_request_duration_seconds_bucket{{{series},le="0.0025"}} 2.0' in lines
    assert f'underlay_request_duration_seconds_bucket{{{series},le="0.5"}} 3.0' in lines
    assert f'underlay_request_duration_seconds_bucket{{{series},le="+Inf"}} 3.0' in lines
    assert f"underlay_request_duration_seconds_count{{{series}}} 3.0" in lines
    assert "# TYPE underlay_request_duration_seconds histogram" in lines


def test_two_stacks_keep_separate_metrics() -> None:
    first = Telemetry(TelemetryConfig(store_spans=False), None)
    second = Telemetry(TelemetryConfig(store_spans=False), None)
    first.metrics.tool_calls.add(1, {"tool": "t", "outcome": "ok"})
    assert "underlay_tool_calls_total" in first.metrics.prometheus_text().decode()
    assert "underlay_tool_calls_total" not in second.metrics.prometheus_text().decode()


@pytest.mark.parametrize(
    ("section", "field"),
    [
        ({"sample_rate": 1.5}, "sample_rate"),
        ({"otlp": {"endpoint": "127.0.0.1:4318"}}, "endpoint"),
        ({"metrics_path": "metrics"}, "metrics_path"),
        ({"retention": {"max_spans": 0}}, "max_spans"),
        ({"exporter": "jaeger"}, "exporter"),
    ],
)
def test_config_mistakes_name_the_field(section: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as info:
        TelemetryConfig.model_validate(section)
    assert field in str(info.value)


def test_otlp_endpoint_loses_its_trailing_slash() -> None:
    config = TelemetryConfig.model_validate({"otlp": {"endpoint": "http://127.0.0.1:4318/"}})
    assert config.otlp is not None and config.otlp.endpoint == "http://127.0.0.1:4318"


async def test_a_sampled_out_trace_makes_no_spans_but_still_counts() -> None:
    telemetry = Telemetry(TelemetryConfig(store_spans=False, sample_rate=0.0), None)
    exporter = InMemorySpanExporter()
    telemetry.provider.add_span_processor(SimpleSpanProcessor(exporter))
    provider = telemetry.instrument_provider("inference", "p1", Provider())
    router = telemetry.instrument_router("inference", Router(provider))
    with telemetry.tracer.start_as_current_span("route") as route:
        assert not route.is_recording()
        await router.chat(Params(model="p1/m"))
    assert exporter.get_finished_spans() == ()
    text = telemetry.metrics.prometheus_text().decode()
    assert 'underlay_inference_tokens_total{model="m",provider="p1",type="completion"} 7.0' in text
