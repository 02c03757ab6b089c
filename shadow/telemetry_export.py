"""OpenTelemetry SDK wiring for the gateway: spans, metrics and logs exported over OTLP/HTTP.

`GatewayTelemetry` takes plain values (no proxy types): the addon calls `record_exchange` /
`record_mirror` once the client has its answer, with the ids it already decided and propagated
(shadow.telemetry), and the timestamps it measured. Spans are created after the fact with explicit
start and end times; a `PresetIds` id generator hands the SDK the pre-chosen span (and root trace)
ids, so what went upstream in `traceparent`, what the capture wrote and what is exported agree.
Batch processors and a periodic metric reader do the encoding and I/O on their own threads: the
event loop only records. Unsampled requests create no span at all (metrics still count them).
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, Status, StatusCode, TraceFlags

from shadow.telemetry import TelemetrySettings, TraceContext

__all__ = ["ClientCall", "GatewayTelemetry", "PresetIds"]

EXPORTED_LOGGERS = ("shadow", "addons")


class PresetIds(IdGenerator):
    """Returns the id set just before `start_span` (one use each), random ids otherwise."""

    def __init__(self) -> None:
        self.next_span_id = 0
        self.next_trace_id = 0
        self._rng = random.Random()

    def generate_span_id(self) -> int:
        value, self.next_span_id = self.next_span_id, 0
        return value or self._rng.getrandbits(64) or 1

    def generate_trace_id(self) -> int:
        value, self.next_trace_id = self.next_trace_id, 0
        return value or self._rng.getrandbits(128) or 1


@dataclass(frozen=True, slots=True)
class ClientCall:
    """One upstream call of a request: the primary's, or a mirror copy's."""

    span_id: int
    role: str  # primary | candidate | secondary
    service: str | None
    method: str
    url: str
    start_ns: int
    end_ns: int
    status: int | None
    error: str | None


class GatewayTelemetry:
    def __init__(self, settings: TelemetrySettings, *, gateway_id: str,
                 counters: Callable[[], dict[str, int]] | None = None) -> None:
        assert settings.endpoint is not None
        self.settings = settings
        headers = dict(settings.headers) or None
        resource = Resource.create({"service.name": settings.service_name, "service.instance.id": gateway_id})
        self.ids = PresetIds()
        self.tracer_provider = TracerProvider(resource=resource, id_generator=self.ids,
                                              sampler=ParentBased(TraceIdRatioBased(settings.sampling)))
        self.tracer_provider.add_span_processor(BatchSpanProcessor(
            OTLPSpanExporter(endpoint=f"{settings.endpoint}/v1/traces", headers=headers),
            max_queue_size=8192, schedule_delay_millis=1000))
        self.tracer = self.tracer_provider.get_tracer("shadow.gateway")
        self.meter_provider = MeterProvider(resource=resource, metric_readers=[PeriodicExportingMetricReader(
            OTLPMetricExporter(endpoint=f"{settings.endpoint}/v1/metrics", headers=headers),
            export_interval_millis=settings.export_interval_s * 1000)])
        meter = self.meter_provider.get_meter("shadow.gateway")
        self.requests = meter.create_counter("shadow.gateway.requests", unit="{request}",
                                             description="Client requests by router, service and status")
        self.duration = meter.create_histogram("shadow.gateway.request.duration", unit="ms",
                                               description="Client request duration at the gateway")
        self.upstream_duration = meter.create_histogram("shadow.gateway.upstream.duration", unit="ms",
                                                        description="Upstream call duration by role and service")
        self._counters = counters
        if counters is not None:
            meter.create_observable_counter("shadow.gateway.mirror.shed", [self._observe_shed], unit="{copy}",
                                            description="Mirror copies shed (max in flight reached)")
            meter.create_observable_gauge("shadow.gateway.counters", [self._observe_counters],
                                          description="The gateway's counters (capture, mirror, routing, "
                                                      "breaker/health where present), by name")
        self.logger_provider: LoggerProvider | None = None
        self._log_handler: LoggingHandler | None = None
        if settings.logs:
            self.logger_provider = LoggerProvider(resource=resource)
            self.logger_provider.add_log_record_processor(BatchLogRecordProcessor(
                OTLPLogExporter(endpoint=f"{settings.endpoint}/v1/logs", headers=headers)))
            self._log_handler = LoggingHandler(level=logging.WARNING, logger_provider=self.logger_provider)
            for name in EXPORTED_LOGGERS:
                logging.getLogger(name).addHandler(self._log_handler)

    # -- metrics callbacks (metric reader thread) -----------------------------------------------------
    def _observe_shed(self, _options: CallbackOptions) -> Iterable[Observation]:
        counters = self._counters() if self._counters else {}
        return [Observation(counters.get("mirror_shed", 0))]

    def _observe_counters(self, _options: CallbackOptions) -> Iterable[Observation]:
        counters = self._counters() if self._counters else {}
        return [Observation(v, {"counter": k}) for k, v in counters.items() if isinstance(v, int | float)]

    # -- recording (event loop, after the client's answer) -----------------------------------------
    def _start(self, name: str, kind: SpanKind, span_id: int, parent: SpanContext | None, start_ns: int,
               attributes: dict[str, Any], trace_id: int = 0) -> trace.Span:
        self.ids.next_span_id = span_id
        self.ids.next_trace_id = trace_id
        context = trace.set_span_in_context(NonRecordingSpan(parent)) if parent is not None else None
        return self.tracer.start_span(name, context=context, kind=kind, attributes=attributes,
                                      start_time=start_ns)

    def record_exchange(self, ctx: TraceContext, *, request_id: str, method: str, router: str | None,
                        service: str | None, status: int | None, error: str | None, start_ns: int,
                        end_ns: int, client: ClientCall | None) -> None:
        labels: dict[str, str | int] = {"router": router or "", "service": service or "", "status": status or 0}
        self.requests.add(1, labels)
        self.duration.record((end_ns - start_ns) / 1e6, labels)
        if client is not None:
            self.upstream_duration.record((client.end_ns - client.start_ns) / 1e6,
                                          {"role": client.role, "service": client.service or ""})
        if not ctx.sampled:
            return
        flags = TraceFlags(TraceFlags.SAMPLED)
        parent = (SpanContext(ctx.trace_id, ctx.parent_span_id, is_remote=True, trace_flags=flags)
                  if ctx.parent_span_id else None)
        attributes: dict[str, Any] = {"http.request.method": method, "shadow.request_id": request_id}
        if router:
            attributes["http.route"] = router
            attributes["shadow.router"] = router
        if status is not None:
            attributes["http.response.status_code"] = status
        server = self._start(f"{method} {router or 'unrouted'}", SpanKind.SERVER, ctx.server_span_id, parent,
                             start_ns, attributes, trace_id=ctx.trace_id)
        if error is not None or (status is not None and status >= 500):
            server.set_status(Status(StatusCode.ERROR, error))
        if client is not None:
            self._client_span(ctx, client, server.get_span_context())
        server.end(end_time=end_ns)

    def record_mirror(self, ctx: TraceContext, call: ClientCall) -> None:
        self.upstream_duration.record((call.end_ns - call.start_ns) / 1e6,
                                      {"role": call.role, "service": call.service or ""})
        if not ctx.sampled:
            return
        parent = SpanContext(ctx.trace_id, ctx.server_span_id, is_remote=False,
                             trace_flags=TraceFlags(TraceFlags.SAMPLED))
        self._client_span(ctx, call, parent)

    def _client_span(self, ctx: TraceContext, call: ClientCall, parent: SpanContext) -> None:
        attributes: dict[str, Any] = {"http.request.method": call.method, "url.full": call.url,
                                      "shadow.role": call.role}
        if call.service:
            attributes["shadow.service"] = call.service
        if call.status is not None:
            attributes["http.response.status_code"] = call.status
        span = self._start(f"{call.method} {call.service or 'upstream'} ({call.role})", SpanKind.CLIENT,
                           call.span_id, parent, call.start_ns, attributes)
        if call.error is not None or (call.status is not None and call.status >= 500):
            span.set_status(Status(StatusCode.ERROR, call.error))
        span.end(end_time=max(call.end_ns, call.start_ns))

    def shutdown(self) -> None:
        """Flush and stop the exporters (blocking: call off the event loop)."""
        if self._log_handler is not None:
            for name in EXPORTED_LOGGERS:
                logging.getLogger(name).removeHandler(self._log_handler)
        self.tracer_provider.shutdown()
        self.meter_provider.shutdown(timeout_millis=5_000)
        if self.logger_provider is not None:
            self.logger_provider.shutdown()
