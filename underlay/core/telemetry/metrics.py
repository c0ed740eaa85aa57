"""Metrics: counters and histograms served as Prometheus text, and pushed over OTLP when configured.

Why our own aggregation for ``/metrics``: an OpenTelemetry SDK measurement costs ~15 µs (attribute
cleaning, hashing, locks), and a request makes several. Here a measurement on the request path is a
deque append; :meth:`Metrics.drain` folds the queue into plain dicts (about a microsecond each) every
flush interval and before every scrape. The OpenTelemetry SDK is used only when OTLP metric export is
configured, and then receives the same measurements during the drain, off the request path. The
registry is private, so several stacks in one process (tests) never collide.

``prometheus_client`` is imported by the first scrape, not at start-up: it only formats the text there,
and importing it cost every start about 9 ms of CPU (bench/startup.py).
"""

from __future__ import annotations

from bisect import bisect_left
from collections import deque
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry
    from prometheus_client.core import Metric

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
RATE_BUCKETS = (1, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000)
MAX_PENDING = 200_000
"""Measurements waiting for a drain past this are dropped (and counted) rather than growing memory."""

Labels = tuple[tuple[str, Any], ...]


class Instrument:
    """A counter or histogram: :meth:`add` / :meth:`record` queue; :meth:`apply` aggregates."""

    def __init__(
        self,
        owner: Metrics,
        name: str,
        description: str,
        *,
        unit: str = "",
        buckets: Sequence[float] | None = None,
    ) -> None:
        self.owner = owner
        self.name = name
        self.description = description
        self.unit = unit
        self.buckets = tuple(float(b) for b in buckets) if buckets is not None else None
        self._pending = owner._pending
        self.values: dict[Labels, Any] = {}
        self.otel: Any = None
        """The OpenTelemetry instrument fed during drains, when OTLP metric export is on."""

    def add(self, value: float, attributes: dict[str, Any]) -> None:
        if len(self._pending) < MAX_PENDING:
            self._pending.append((self, value, attributes))
        else:
            self.owner.dropped += 1

    record = add

    def apply(self, value: float, attributes: dict[str, Any]) -> None:
        key = tuple(sorted(attributes.items()))
        if self.buckets is None:
            self.values[key] = self.values.get(key, 0) + value
        else:
            state = self.values.get(key)
            if state is None:
                state = self.values[key] = [[0] * (len(self.buckets) + 1), 0.0, 0]
            state[0][bisect_left(self.buckets, value)] += 1  # a value equal to a bound falls in its bucket
            state[1] += value
            state[2] += 1
        if self.otel is not None:
            (self.otel.add if self.buckets is None else self.otel.record)(value, attributes)

    def family(self) -> Metric | None:
        if not self.values:
            return None
        from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily

        name = self.name.replace(".", "_")
        if self.unit == "s":
            name += "_seconds"
        first = next(iter(self.values))
        label_names = [_label(k) for k, _ in first]
        if self.buckets is None:
            counter = CounterMetricFamily(name, self.description, labels=label_names)
            for key, value in self.values.items():
                counter.add_metric([str(v) for _, v in key], value)
            return counter
        histogram = HistogramMetricFamily(name, self.description, labels=label_names)
        for key, (counts, total, count) in self.values.items():
            cumulative, buckets = 0, []
            for bound, n in zip(self.buckets, counts, strict=False):
                cumulative += n
                buckets.append((repr(bound), cumulative))
            buckets.append(("+Inf", count))
            histogram.add_metric([str(v) for _, v in key], buckets, total)
        return histogram


def _label(name: str) -> str:
    return name.replace(".", "_").replace("-", "_")


class _Collector:
    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterable[Metric]:
        self.metrics.drain()
        families = (i.family() for i in self.metrics.instruments)
        return [f for f in families if f is not None]


class Metrics:
    """The instruments every layer records into, and the Prometheus text of their current values."""

    def __init__(self) -> None:
        self._pending: deque[tuple[Instrument, float, dict[str, Any]]] = deque()
        self.dropped = 0
        self.instruments: list[Instrument] = []
        self.provider: Any = None

        def make(name: str, description: str, unit: str = "", buckets: Sequence[float] | None = None) -> Instrument:
            instrument = Instrument(self, name, description, unit=unit, buckets=buckets)
            self.instruments.append(instrument)
            return instrument

        self.requests = make("underlay.requests", "HTTP requests by route and status.")
        self.request_duration = make(
            "underlay.request.duration", "HTTP request latency (streams to their end).", "s", LATENCY_BUCKETS
        )
        self.call_duration = make(
            "underlay.call.duration", "Provider call latency by API, provider and method.", "s", LATENCY_BUCKETS
        )
        self.time_to_first_token = make(
            "underlay.inference.time_to_first_token",
            "Streamed completions: time from the call to the first chunk.",
            "s",
            LATENCY_BUCKETS,
        )
        self.tokens_per_second = make(
            "underlay.inference.tokens_per_second", "Completion tokens per second of generation.", "", RATE_BUCKETS
        )
        self.tokens = make("underlay.inference.tokens", "Tokens by model and type.")
        self.tool_calls = make("underlay.tool.calls", "Tool calls by tool and outcome.")
        self.vector_operations = make("underlay.vector.operations", "Vector store operations by outcome.")
        self._registry: CollectorRegistry | None = None

    @property
    def registry(self) -> CollectorRegistry:
        """The private Prometheus registry whose one collector reports these instruments (built on first use)."""
        if self._registry is None:
            from prometheus_client import CollectorRegistry

            self._registry = CollectorRegistry(auto_describe=False)
            self._registry.register(_Collector(self))
        return self._registry

    def export_to(self, provider: Any) -> None:
        """Also feed an OpenTelemetry ``MeterProvider`` (whose readers push over OTLP)."""
        self.provider = provider
        meter = provider.get_meter("underlay")
        for instrument in self.instruments:
            if instrument.buckets is None:
                instrument.otel = meter.create_counter(instrument.name, description=instrument.description)
            else:
                instrument.otel = meter.create_histogram(
                    instrument.name,
                    unit=instrument.unit,
                    description=instrument.description,
                    explicit_bucket_boundaries_advisory=instrument.buckets,
                )

    def drain(self) -> int:
        """Apply every queued measurement; returns how many."""
        pending = self._pending
        count = len(pending)
        for _ in range(count):
            instrument, value, attributes = pending.popleft()
            instrument.apply(value, attributes)
        return count

    def prometheus_text(self) -> bytes:
        from prometheus_client import generate_latest

        return generate_latest(self.registry)

    def shutdown(self) -> None:
        self.drain()
        if self.provider is not None:
            self.provider.shutdown()


def otlp_meter_provider(
    service_name: str, endpoint: str, headers: dict[str, str], timeout: float, interval: float
) -> Any:
    """A ``MeterProvider`` that pushes cumulative metrics to ``{endpoint}/v1/metrics`` every ``interval``."""
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
    from opentelemetry.sdk.metrics import Counter, Histogram, MeterProvider
    from opentelemetry.sdk.metrics.export import AggregationTemporality, PeriodicExportingMetricReader
    from opentelemetry.sdk.resources import Resource

    exporter = OTLPMetricExporter(
        endpoint=f"{endpoint}/v1/metrics",
        headers=headers,
        timeout=timeout,
        preferred_temporality={
            Counter: AggregationTemporality.CUMULATIVE,
            Histogram: AggregationTemporality.CUMULATIVE,
        },
    )
    reader = PeriodicExportingMetricReader(exporter, export_interval_millis=interval * 1000)
    return MeterProvider(
        metric_readers=[reader], resource=Resource.create({"service.name": service_name}), shutdown_on_exit=False
    )
