"""OpenTelemetry SDK wiring for the gateway: spans, metrics and logs exported over OTLP/HTTP.

`GatewayTelemetry` takes plain values (no proxy types): the addon calls `record_exchange` /
`record_mirror` once the client has its answer, with the ids and the sampling decision it already
made and propagated (shadow.telemetry), and the timestamps it measured.

Spans are finished facts by then, so they are handed to the SDK's `BatchSpanProcessor` (and its
OTLP/HTTP exporter) as `ReadableSpan`s built directly, skipping the tracer's per-span machinery
(sampler, live-span locks, attribute re-validation): measured in-process, that machinery cost ≈ 35 µs
per span, most of the telemetry's cost on a proxy doing ≈ 1 ms of work per request. The processor's
thread batches, encodes and exports. Metrics: one histogram record per request; the request counter
is a plain dict read by an observable instrument at export time. Unsampled requests create no span.
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags

from shadow.telemetry import TelemetrySettings, TraceContext

__all__ = ["ClientCall", "GatewayTelemetry"]

EXPORTED_LOGGERS = ("shadow", "addons")
_SAMPLED = TraceFlags(TraceFlags.SAMPLED)
_UNSET = Status(StatusCode.UNSET)


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
        self.resource = resource
        self.scope = InstrumentationScope("shadow.gateway")
        self.span_processor = BatchSpanProcessor(
            OTLPSpanExporter(endpoint=f"{settings.endpoint}/v1/traces", headers=headers),
            max_queue_size=8192, schedule_delay_millis=1000, max_export_batch_size=1024)
        self.meter_provider = MeterProvider(resource=resource, metric_readers=[PeriodicExportingMetricReader(
            OTLPMetricExporter(endpoint=f"{settings.endpoint}/v1/metrics", headers=headers),
            export_interval_millis=settings.export_interval_s * 1000)])
        meter = self.meter_provider.get_meter("shadow.gateway")
        # Counted in a plain dict on the event loop, read by the metric reader's thread (a dict read
        # racing an increment sees the old or the new value; both are valid cumulative counts).
        self.request_counts: collections.Counter[tuple[str, str, int]] = collections.Counter()
        meter.create_observable_counter("shadow.gateway.requests", [self._observe_requests], unit="{request}",
                                        description="Client requests by router, service and status")
        self.duration = meter.create_histogram("shadow.gateway.request.duration", unit="ms",
                                               description="Client request duration at the gateway, by router, "
                                                           "service and status")
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
    def _observe_requests(self, _options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(n, {"router": r, "service": svc, "status": st})
                for (r, svc, st), n in list(self.request_counts.items())]

    def _observe_shed(self, _options: CallbackOptions) -> Iterable[Observation]:
        counters = self._counters() if self._counters else {}
        return [Observation(counters.get("mirror_shed", 0))]

    def _observe_counters(self, _options: CallbackOptions) -> Iterable[Observation]:
        counters = self._counters() if self._counters else {}
        return [Observation(v, {"counter": k}) for k, v in counters.items() if isinstance(v, int | float)]

    # -- recording (event loop, after the client's answer) -----------------------------------------
    def _emit(self, name: str, kind: SpanKind, trace_id: int, span_id: int, parent: SpanContext | None,
              start_ns: int, end_ns: int, attributes: dict[str, Any], error: str | None, failed: bool) -> None:
        status = Status(StatusCode.ERROR, error) if failed else _UNSET
        self.span_processor.on_end(ReadableSpan(
            name, context=SpanContext(trace_id, span_id, is_remote=False, trace_flags=_SAMPLED), parent=parent,
            resource=self.resource, attributes=attributes, kind=kind, instrumentation_scope=self.scope,
            status=status, start_time=start_ns, end_time=max(end_ns, start_ns)))

    def record_exchange(self, ctx: TraceContext, *, method: str, router: str | None,
                        service: str | None, status: int | None, error: str | None, start_ns: int,
                        end_ns: int, client: ClientCall | None) -> None:
        key = (router or "", service or "", status or 0)
        self.request_counts[key] += 1
        self.duration.record((end_ns - start_ns) / 1e6, {"router": key[0], "service": key[1], "status": key[2]})
        if not ctx.sampled:
            return
        parent = (SpanContext(ctx.trace_id, ctx.parent_span_id, is_remote=True, trace_flags=_SAMPLED)
                  if ctx.parent_span_id else None)
        # Few attributes: encoding them is most of the export's cost (≈ 33 µs for a span with five); the
        # rest (URL, headers, request id) is in the capture row that shares the trace and span ids.
        attributes: dict[str, Any] = {"http.request.method": method}
        if router:
            attributes["http.route"] = router
        if status is not None:
            attributes["http.response.status_code"] = status
        self._emit(f"{method} {router or 'unrouted'}", SpanKind.SERVER, ctx.trace_id, ctx.server_span_id, parent,
                   start_ns, end_ns, attributes, error, error is not None or (status is not None and status >= 500))
        if client is not None:
            self.record_mirror(ctx, client)

    def record_mirror(self, ctx: TraceContext, call: ClientCall) -> None:
        """A client span for one upstream call (the primary's or a mirror copy's), child of the server span."""
        if not ctx.sampled:
            return
        parent = SpanContext(ctx.trace_id, ctx.server_span_id, is_remote=False, trace_flags=_SAMPLED)
        attributes: dict[str, Any] = {"shadow.role": call.role}
        if call.service:
            attributes["shadow.service"] = call.service
        if call.status is not None:
            attributes["http.response.status_code"] = call.status
        self._emit(f"{call.method} {call.service or 'upstream'} ({call.role})", SpanKind.CLIENT, ctx.trace_id,
                   call.span_id, parent, call.start_ns, call.end_ns, attributes, call.error,
                   call.error is not None or (call.status is not None and call.status >= 500))

    def shutdown(self) -> None:
        """Flush and stop the exporters (blocking: call off the event loop)."""
        if self._log_handler is not None:
            for name in EXPORTED_LOGGERS:
                logging.getLogger(name).removeHandler(self._log_handler)
        self.span_processor.shutdown()
        self.meter_provider.shutdown(timeout_millis=5_000)
        if self.logger_provider is not None:
            self.logger_provider.shutdown()
