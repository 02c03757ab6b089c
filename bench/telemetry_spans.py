"""The gateway's span path, in-process: what a traced request costs on the event loop and on the
exporter's thread, the OpenTelemetry SDK's path against shadow.telemetry.export's.

    .venv/bin/python bench/telemetry_spans.py [--requests 5000] [--rounds 7]

Per request: one server span and the primary's client span (mode pass+tel of bench/gateway.py).
- SDK: `ReadableSpan`s built and handed to a `BatchSpanProcessor` (what the gateway did before), then
  the SDK's OTLP encoder (`encode_spans(...).SerializeToString()`, what its exporter thread runs).
- shadow: `SpanExporter.add` of one tuple (the event loop's part), then `encode_item` + `encode_spans`
  (the exporter thread's part). Both produce the same bytes (tests/test_telemetry_export.py).
- proto messages: the library alternative to the hand encoder for the thread's part, the same
  tuples made into opentelemetry-proto message classes (protobuf's upb runtime) and serialized.
- metrics: one request-duration record on the event loop, the SDK's histogram instrument against
  shadow.telemetry.export.RequestMetrics (encoding happens once per export interval, not per request).
Nothing is sent: the processors' exporters point at a closed port and are never flushed. CPU time
(process_time), best round of `--rounds` (other load on a shared machine only adds time).
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()

    import logging

    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans as sdk_encode
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import ReadableSpan
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
    from opentelemetry.sdk.util.instrumentation import InstrumentationScope
    from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags

    from shadow.telemetry import export as te
    from shadow.telemetry.tracing import continue_or_start

    logging.disable(logging.WARNING)
    resource = Resource.create({"service.name": "shadow-gateway", "service.instance.id": "bench"})
    scope = InstrumentationScope("shadow.gateway")
    sampled = TraceFlags(TraceFlags.SAMPLED)
    unset = Status(StatusCode.UNSET)

    class Nowhere(SpanExporter):
        def export(self, spans: Any) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    rng = random.Random(1)
    n = args.requests
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    histogram = MeterProvider(metric_readers=[InMemoryMetricReader()]).get_meter("m").create_histogram(
        "shadow.gateway.request.duration", unit="ms")

    def calls(ctxs: list[Any]) -> list[Any]:
        return [te.ClientCall(span_id=rng.getrandbits(63) + 1, role="primary", service="mono", method="GET",
                              start_ns=1_700_000_000_000_000_000,
                              end_ns=1_700_000_000_001_000_000, status=200, error=None) for _ in ctxs]

    best: dict[str, float] = {}

    def keep(name: str, seconds: float) -> None:
        best[name] = min(best.get(name, float("inf")), seconds / n * 1e6)

    for _ in range(args.rounds):
        ctxs = [continue_or_start(None, 1.0, rng) for _ in range(n)]
        clients = calls(ctxs)
        # SDK path, event loop: two ReadableSpans to the batch processor.
        processor = BatchSpanProcessor(Nowhere(), max_queue_size=2 * n + 10, schedule_delay_millis=3_600_000,
                                       max_export_batch_size=2 * n + 10)
        built: list[Any] = []
        t0 = time.process_time()
        for ctx, call in zip(ctxs, clients, strict=True):
            server = ReadableSpan("GET all", context=SpanContext(ctx.trace_id, ctx.server_span_id, is_remote=False,
                                                                 trace_flags=sampled),
                                  parent=None, resource=resource, kind=SpanKind.SERVER, instrumentation_scope=scope,
                                  attributes={"http.request.method": "GET", "http.route": "all",
                                              "http.response.status_code": 200},
                                  status=unset, start_time=1, end_time=2)
            client = ReadableSpan("GET mono (primary)", context=SpanContext(ctx.trace_id, call.span_id,
                                                                            is_remote=False, trace_flags=sampled),
                                  parent=SpanContext(ctx.trace_id, ctx.server_span_id, is_remote=False,
                                                     trace_flags=sampled),
                                  resource=resource, kind=SpanKind.CLIENT, instrumentation_scope=scope,
                                  attributes={"shadow.role": "primary", "shadow.service": "mono",
                                              "http.response.status_code": 200},
                                  status=unset, start_time=call.start_ns, end_time=call.end_ns)
            processor.on_end(server)
            processor.on_end(client)
            built += (server, client)
        keep("SDK: event loop", time.process_time() - t0)
        t0 = time.process_time()
        sdk_bytes = sdk_encode(built).SerializeToString()
        keep("SDK: exporter thread (encode)", time.process_time() - t0)
        processor.shutdown()
        # shadow.telemetry.export: one tuple on the loop, everything else on the thread.
        exporter = te.SpanExporter("http://127.0.0.1:9/v1/traces", resource=te.encode_resource(
            resource.attributes.items()), scope_name="shadow.gateway", max_queue=2 * n + 10, delay_s=3600.0,
            post=lambda body: 200)
        t0 = time.process_time()
        for ctx, call in zip(ctxs, clients, strict=True):
            exporter.add((ctx, "GET", "all", 200, None, 1, 2, call))
        keep("shadow: event loop", time.process_time() - t0)
        items = list(exporter._queue)
        exporter._queue.clear()
        t0 = time.process_time()
        ours = te.encode_spans([span for item in items for span in te.encode_item(item)],
                               resource=exporter.resource, scope_name="shadow.gateway")
        keep("shadow: exporter thread (encode)", time.process_time() - t0)
        exporter.shutdown()
        assert len(ours) == len(sdk_bytes)  # same message (ids differ only in value)
        # The library alternative for the thread's part: the same tuples made into opentelemetry-proto
        # messages (protobuf's upb runtime) and serialized. It decides whether hand-encoding pays.
        t0 = time.process_time()
        library_bytes = proto_encode(items, resource.attributes.items(), "shadow.gateway")
        keep("proto messages: exporter thread", time.process_time() - t0)
        assert len(library_bytes) == len(sdk_bytes)
        # Metrics, event loop: one duration record per request into the SDK's histogram instrument
        # (what the gateway did before) against shadow's plain histograms (RequestMetrics).
        durations = [rng.uniform(0.5, 80.0) for _ in range(n)]
        statuses = [200 if i % 10 else 500 for i in range(n)]
        t0 = time.process_time()
        for ms, status in zip(durations, statuses, strict=True):
            histogram.record(ms, {"router": "all", "service": "mono", "status": status})
        keep("metrics, SDK histogram: event loop", time.process_time() - t0)
        ours_metrics = te.RequestMetrics()
        t0 = time.process_time()
        for ms, status in zip(durations, statuses, strict=True):
            ours_metrics.record(("all", "mono", status), ms)
        keep("metrics, shadow: event loop", time.process_time() - t0)
    for name, us in best.items():
        print(f"{name:34s} {us:6.1f} µs per request{'' if name.startswith('metrics') else ' (2 spans)'}")
    print(f"{'SDK total':34s} {best['SDK: event loop'] + best['SDK: exporter thread (encode)']:6.1f}")
    print(f"{'shadow total':34s} {best['shadow: event loop'] + best['shadow: exporter thread (encode)']:6.1f}")
    print(f"{'tuples + proto messages total':34s} "
          f"{best['shadow: event loop'] + best['proto messages: exporter thread']:6.1f}")


def proto_encode(items: list[Any], resource: Any, scope_name: str) -> bytes:
    """The queued request tuples as an ExportTraceServiceRequest built from opentelemetry-proto's
    message classes: the spans `shadow.telemetry.export.encode_item` writes by hand."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue, InstrumentationScope, KeyValue
    from opentelemetry.proto.resource.v1.resource_pb2 import Resource
    from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span, Status

    def kv(key: str, value: Any) -> KeyValue:
        any_value = AnyValue(string_value=value) if isinstance(value, str) else AnyValue(int_value=value)
        return KeyValue(key=key, value=any_value)

    spans = []
    for ctx, method, router, status, _error, start_ns, end_ns, call in items:
        trace_id, server_id = ctx.trace_id.to_bytes(16, "big"), ctx.server_span_id.to_bytes(8, "big")
        spans.append(Span(trace_id=trace_id, span_id=server_id, name=f"{method} {router}", kind=Span.SPAN_KIND_SERVER,
                          start_time_unix_nano=start_ns, end_time_unix_nano=end_ns, status=Status(), flags=0x100,
                          attributes=[kv("http.request.method", method), kv("http.route", router),
                                      kv("http.response.status_code", status)]))
        spans.append(Span(trace_id=trace_id, span_id=call.span_id.to_bytes(8, "big"), parent_span_id=server_id,
                          name=f"{call.method} {call.service} ({call.role})", kind=Span.SPAN_KIND_CLIENT,
                          start_time_unix_nano=call.start_ns, end_time_unix_nano=call.end_ns, status=Status(),
                          flags=0x100, attributes=[kv("shadow.role", call.role), kv("shadow.service", call.service),
                                                   kv("http.response.status_code", call.status)]))
    request = ExportTraceServiceRequest(resource_spans=[ResourceSpans(
        resource=Resource(attributes=[kv(k, v) for k, v in resource]),
        scope_spans=[ScopeSpans(scope=InstrumentationScope(name=scope_name), spans=spans)])])
    return request.SerializeToString()


if __name__ == "__main__":
    main()
