"""One stack's telemetry: its tracer (sampling, span processors, exporters), its metrics, its span store.

The stack starts this right after opening its stores and stops it before closing them, so buffered
spans are written on a graceful shutdown. With ``telemetry.enabled: false`` nothing here is created
and the stack's routers are left unwrapped and providers get no spans: the hot path pays nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

import underlay
from underlay.core.telemetry import instrument as instrument_module
from underlay.core.telemetry.config import TelemetryConfig
from underlay.core.telemetry.instrument import instrument
from underlay.core.telemetry.metrics import Metrics, otlp_meter_provider
from underlay.core.telemetry.span_store import SpanBuffer, SpanStore

log = logging.getLogger("underlay.telemetry")


TRACER_KEY = instrument_module.TRACER_KEY
"""The OpenTelemetry context key under which the current request's tracer travels.

Why not the global tracer provider: setting it switches on FastAPI's and Starlette's own
instrumentation (extra spans per request, on the hot path), and a process may hold several stacks
(tests). Code below the routers that cannot reach the stack (the remote adapters' HTTP client,
:mod:`underlay.providers.utils.openai_compat`) reads the tracer from the context under this key.
"""


class Telemetry:
    def __init__(self, config: TelemetryConfig, sqlstore: Any | None) -> None:
        self.config = config
        resource = Resource.create({"service.name": config.service_name, "service.version": underlay.__version__})
        self.provider = TracerProvider(
            resource=resource,
            sampler=ParentBased(TraceIdRatioBased(config.sample_rate)),
            shutdown_on_exit=False,
        )
        self.tracer = self.provider.get_tracer("underlay")
        self.store: SpanStore | None = None
        self.buffer: SpanBuffer | None = None
        if config.store_spans and sqlstore is not None:
            self.store = SpanStore(sqlstore, config.retention)
            self.buffer = SpanBuffer(self.store, config.flush_seconds, config.max_buffered_spans)
            self.provider.add_span_processor(self.buffer)  # type: ignore[arg-type]
        self.metrics = Metrics()
        otlp = config.otlp
        if otlp is not None:
            if otlp.traces:
                from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
                from opentelemetry.sdk.trace.export import BatchSpanProcessor

                exporter = OTLPSpanExporter(
                    endpoint=f"{otlp.endpoint}/v1/traces", headers=otlp.headers, timeout=otlp.timeout_seconds
                )
                self.provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=1000))
            if otlp.metrics:
                self.metrics.export_to(
                    otlp_meter_provider(
                        config.service_name,
                        otlp.endpoint,
                        otlp.headers,
                        otlp.timeout_seconds,
                        otlp.metrics_interval_seconds,
                    )
                )
        self._drainer: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if self.store is not None and self.buffer is not None:
            await self.store.initialize()
            self.buffer.start()
        self._drainer = asyncio.get_running_loop().create_task(self._drain_metrics(), name="underlay-metrics")

    async def _drain_metrics(self) -> None:
        """Apply queued measurements regularly, so OTLP pushes see them (scrapes drain on their own)."""
        while True:
            await asyncio.sleep(self.config.flush_seconds)
            self.metrics.drain()

    def instrument_router(self, api: str, router: Any) -> Any:
        if api == "telemetry":  # reading traces should not make more of them below the route span
            return router
        return instrument(router, self, layer="router", api=api)

    def instrument_provider(self, api: str, provider_id: str, provider: Any) -> Any:
        """``provider`` behind the provider boundary, traced by this telemetry (see :mod:`underlay.core.boundary`)."""
        from underlay.core.boundary import wrap_provider

        return wrap_provider(provider, api=api, provider_id=provider_id, telemetry=self)

    async def flush(self) -> None:
        """Write buffered spans now (tests and shutdown); exporters flush on their own schedule."""
        if self.buffer is not None:
            await self.buffer.flush()

    async def stop(self) -> None:
        if self._drainer is not None:
            self._drainer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._drainer
            self._drainer = None
        if self.buffer is not None:
            await self.buffer.stop()
        try:
            # Flushes the OTLP exporters (bounded by their timeout) in a thread, off the event loop.
            await asyncio.to_thread(self.provider.shutdown)
            self.metrics.drain()
            await asyncio.to_thread(self.metrics.shutdown)
        except Exception as exc:  # an unreachable collector must not fail the shutdown
            log.warning("telemetry exporters failed to shut down: %s", exc)


async def start_telemetry(config: TelemetryConfig, sqlstore: Any | None) -> Telemetry | None:
    """The stack's telemetry, started; ``None`` when the run config switches it off."""
    if not config.enabled:
        return None
    telemetry = Telemetry(config, sqlstore)
    await telemetry.start()
    return telemetry
