"""Metrics: OpenTelemetry instruments, rendered as Prometheus text and optionally pushed over OTLP.

Why OpenTelemetry instruments with our own Prometheus rendering: one set of instruments feeds both
the pull endpoint (``GET /metrics``) and an OTLP collector, and the rendering needs nothing but
``prometheus-client``'s text writer over a private registry (so several stacks in one process, as in
tests, never collide in a global registry).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Sequence
from typing import Any

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    Histogram,
    MetricReader,
    MetricsData,
    Sum,
)
from opentelemetry.sdk.resources import Resource
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
RATE_BUCKETS = (1, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000)


class PullReader(MetricReader):
    """A reader that collects on demand (a Prometheus scrape), cumulative like Prometheus expects."""

    def __init__(self) -> None:
        super().__init__()
        self._latest: MetricsData | None = None

    def _receive_metrics(self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any) -> None:
        self._latest = metrics_data

    def read(self) -> MetricsData | None:
        self._latest = None
        self.collect()
        return self._latest

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        return None


def _prom_name(name: str, unit: str) -> str:
    base = name.replace(".", "_").replace("-", "_")
    if unit == "s" and not base.endswith("_seconds"):
        base += "_seconds"
    return base


def _label_items(attributes: Any) -> tuple[list[str], list[str]]:
    keys = sorted(attributes or {})
    return [k.replace(".", "_") for k in keys], [str(attributes[k]) for k in keys]


def _families(data: MetricsData | None) -> Iterable[Metric]:
    if data is None:
        return
    for resource_metrics in data.resource_metrics:
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                yield from _family(metric)


def _family(metric: Any) -> Iterable[Metric]:
    name = _prom_name(metric.name, metric.unit or "")
    points = list(metric.data.data_points)
    if not points:
        return
    labels, _ = _label_items(points[0].attributes)
    if isinstance(metric.data, Histogram):
        family: Metric = HistogramMetricFamily(name, metric.description or metric.name, labels=labels)
        for point in points:
            cumulative, buckets = 0, []
            for bound, count in zip(point.explicit_bounds, point.bucket_counts, strict=False):
                cumulative += count
                buckets.append((_float_text(bound), cumulative))
            buckets.append(("+Inf", point.count))
            family.add_metric(_label_items(point.attributes)[1], buckets, point.sum)  # type: ignore[attr-defined]
        yield family
    elif isinstance(metric.data, Sum) and metric.data.is_monotonic:
        family = CounterMetricFamily(name, metric.description or metric.name, labels=labels)
        for point in points:
            family.add_metric(_label_items(point.attributes)[1], point.value)  # type: ignore[attr-defined]
        yield family
    else:
        family = GaugeMetricFamily(name, metric.description or metric.name, labels=labels)
        for point in points:
            family.add_metric(_label_items(point.attributes)[1], point.value)  # type: ignore[attr-defined]
        yield family


def _float_text(value: float) -> str:
    return repr(float(value))


class _Collector:
    def __init__(self, reader: PullReader) -> None:
        self.reader = reader

    def collect(self) -> Iterable[Metric]:
        return list(_families(self.reader.read()))


class Deferred:
    """An instrument whose measurements are queued on the request path and applied later.

    Why: an OpenTelemetry SDK measurement costs ~15 µs (attribute hashing, locks), several per request;
    a deque append costs well under one. :meth:`Metrics.drain` applies the queue every flush interval
    and before every scrape, so figures lag by at most ``telemetry.flush_seconds``.
    """

    __slots__ = ("_apply", "_pending", "_owner")

    def __init__(self, apply: Any, owner: Metrics) -> None:
        self._apply = apply
        self._owner = owner
        self._pending = owner._pending

    def add(self, value: float, attributes: dict[str, Any]) -> None:
        pending = self._pending
        if len(pending) < MAX_PENDING:
            pending.append((self._apply, value, attributes))
        else:
            self._owner.dropped += 1

    record = add


MAX_PENDING = 200_000


class Metrics:
    """The instruments every layer records into, and the Prometheus text of their current values."""

    def __init__(self, service_name: str = "underlay", extra_readers: Sequence[MetricReader] = ()) -> None:
        self._pending: deque[tuple[Any, float, dict[str, Any]]] = deque()
        self.dropped = 0
        self._reader = PullReader()
        self.provider = MeterProvider(
            metric_readers=[self._reader, *extra_readers],
            resource=Resource.create({"service.name": service_name}),
            shutdown_on_exit=False,
        )
        meter = self.provider.get_meter("underlay")

        def counter(name: str, description: str) -> Deferred:
            return Deferred(meter.create_counter(name, description=description).add, self)

        def histogram(name: str, description: str, buckets: Sequence[float], unit: str = "") -> Deferred:
            created = meter.create_histogram(
                name, unit=unit, description=description, explicit_bucket_boundaries_advisory=buckets
            )
            return Deferred(created.record, self)

        self.requests = counter("underlay.requests", "HTTP requests by route and status.")
        self.request_duration = histogram(
            "underlay.request.duration",
            "HTTP request latency (to the end of the body, streams included).",
            LATENCY_BUCKETS,
            unit="s",
        )
        self.call_duration = histogram(
            "underlay.call.duration",
            "Provider call latency by API, provider, method and outcome.",
            LATENCY_BUCKETS,
            "s",
        )
        self.time_to_first_token = histogram(
            "underlay.inference.time_to_first_token",
            "Streamed completions: time from the call to the first chunk.",
            LATENCY_BUCKETS,
            unit="s",
        )
        self.tokens_per_second = histogram(
            "underlay.inference.tokens_per_second", "Completion tokens per second of generation.", RATE_BUCKETS
        )
        self.tokens = counter("underlay.inference.tokens", "Tokens by model and type.")
        self.tool_calls = counter("underlay.tool.calls", "Tool calls by tool and outcome.")
        self.vector_operations = counter("underlay.vector.operations", "Vector store operations by outcome.")
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_Collector(self._reader))  # type: ignore[arg-type]

    def drain(self) -> int:
        """Apply every queued measurement; returns how many."""
        pending = self._pending
        count = len(pending)
        for _ in range(count):
            apply, value, attributes = pending.popleft()
            apply(value, attributes)
        return count

    def prometheus_text(self) -> bytes:
        self.drain()
        return generate_latest(self.registry)

    def shutdown(self) -> None:
        self.drain()
        self.provider.shutdown()


def otlp_metric_reader(endpoint: str, headers: dict[str, str], timeout: float, interval: float) -> MetricReader:
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
    from opentelemetry.sdk.metrics import Counter
    from opentelemetry.sdk.metrics import Histogram as HistogramInstrument
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader

    exporter = OTLPMetricExporter(
        endpoint=f"{endpoint}/v1/metrics",
        headers=headers,
        timeout=timeout,
        preferred_temporality={
            Counter: AggregationTemporality.CUMULATIVE,
            HistogramInstrument: AggregationTemporality.CUMULATIVE,
        },
    )
    return PeriodicExportingMetricReader(exporter, export_interval_millis=interval * 1000)
