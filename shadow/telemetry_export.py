"""OpenTelemetry wiring for the gateway: spans, metrics and logs exported over OTLP/HTTP.

`GatewayTelemetry` takes plain values (no proxy types): the addon calls `record_exchange` /
`record_mirror` once the client has its answer, with the ids and the sampling decision it already
made and propagated (shadow.telemetry), and the timestamps it measured.

Spans are finished facts by then, so they skip the SDK altogether: the event loop appends one tuple
per request (or mirror copy) to `SpanExporter`'s queue, and its thread turns batches into OTLP/protobuf bytes with a
small hand-written encoder (`encode_spans`: the same message the SDK's exporter sends, checked
against the SDK's encoder in the tests) and POSTs them to `/v1/traces`. Measured in-process
(bench/telemetry_spans.py, two spans per request): the SDK path cost ≈ 52 µs per request in the
proxy's process (≈ 5 building `ReadableSpan`s for its `BatchSpanProcessor` on the event loop, ≈ 46
encoding on its thread, same GIL); this one ≈ 11 (0.2 on the loop, the rest encoding). Metrics
(one histogram record per request; the request counter is a plain dict read by an observable
instrument at export time) and logs stay on the SDK. Unsampled requests create no span.
"""

from __future__ import annotations

import collections
import logging
import struct
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource

from shadow.telemetry import TelemetrySettings, TraceContext

__all__ = ["ClientCall", "GatewayTelemetry", "SpanExporter", "encode_spans"]

EXPORTED_LOGGERS = ("shadow", "addons")
log = logging.getLogger(__name__)


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


# -- OTLP/protobuf encoding of spans -----------------------------------------------------------------
# Field tags of opentelemetry/proto/trace/v1/trace.proto and common.proto ((number << 3) | wire type).
_SPAN_KIND_SERVER, _SPAN_KIND_CLIENT = 2, 3
_STATUS_ERROR = 2
_FLAG_HAS_IS_REMOTE, _FLAG_IS_REMOTE = 0x100, 0x200  # SpanFlags, as the SDK's encoder sets them
_SMALL_VARINTS = [bytes([n]) for n in range(0x80)]
_U64 = struct.Struct("<Q")
_U32 = struct.Struct("<I")
_F64 = struct.Struct("<d")


def _varint(value: int) -> bytes:
    if 0 <= value < 0x80:
        return _SMALL_VARINTS[value]
    value &= 0xFFFF_FFFF_FFFF_FFFF  # int64 fields: negative values as two's complement
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _field(tag: bytes, payload: bytes) -> bytes:
    return tag + _varint(len(payload)) + payload


def _any_value(value: Any) -> bytes:
    """AnyValue: string 1, bool 2, int 3, double 4, array 5 (bytes of the message, untagged)."""
    if isinstance(value, str):
        return _field(b"\x0a", value.encode("utf-8"))
    if isinstance(value, bool):
        return b"\x10" + _SMALL_VARINTS[int(value)]
    if isinstance(value, int):
        return b"\x18" + _varint(value)
    if isinstance(value, float):
        return b"\x21" + _F64.pack(value)
    if isinstance(value, list | tuple):
        return _field(b"\x2a", b"".join(_field(b"\x0a", _any_value(v)) for v in value))
    return _field(b"\x0a", str(value).encode("utf-8"))


def _key_value(key: str, value: Any) -> bytes:
    return _field(b"\x0a", key.encode("utf-8")) + _field(b"\x12", _any_value(value))


def _span(trace_id: int, span_id: int, parent_id: int, parent_remote: bool, name: str, kind: int,
          start_ns: int, end_ns: int, attributes: Sequence[tuple[str, Any]], failed: bool,
          message: str | None) -> bytes:
    parts = [b"\x0a\x10", trace_id.to_bytes(16, "big"), b"\x12\x08", span_id.to_bytes(8, "big")]
    if parent_id:
        parts += (b"\x22\x08", parent_id.to_bytes(8, "big"))
    parts += (_field(b"\x2a", name.encode("utf-8")), b"\x30", _varint(kind), b"\x39", _U64.pack(start_ns),
              b"\x41", _U64.pack(max(end_ns, start_ns)))
    for key, value in attributes:
        parts.append(_field(b"\x4a", _key_value(key, value)))
    if failed:
        status = (_field(b"\x12", message.encode("utf-8")) if message else b"") + b"\x18" + _SMALL_VARINTS[_STATUS_ERROR]
        parts.append(_field(b"\x7a", status))
    else:
        parts.append(b"\x7a\x00")  # the SDK always sends a status; UNSET is the empty message
    parts += (b"\x85\x01", _U32.pack(_FLAG_HAS_IS_REMOTE | (_FLAG_IS_REMOTE if parent_remote else 0)))
    return b"".join(parts)


def _server_span(ctx: TraceContext, method: str, router: str | None, status: int | None,
                 error: str | None, start_ns: int, end_ns: int) -> bytes:
    # Few attributes: encoding them is most of the export's cost; the rest (URL, headers, request id)
    # is in the capture row that shares the trace and span ids.
    attributes: list[tuple[str, Any]] = [("http.request.method", method)]
    if router:
        attributes.append(("http.route", router))
    if status is not None:
        attributes.append(("http.response.status_code", status))
    return _span(ctx.trace_id, ctx.server_span_id, ctx.parent_span_id, ctx.parent_span_id != 0,
                 f"{method} {router or 'unrouted'}",
                 _SPAN_KIND_SERVER, start_ns, end_ns, attributes,
                 error is not None or (status is not None and status >= 500), error)


def _client_span(ctx: TraceContext, call: ClientCall) -> bytes:
    """A client span for one upstream call (the primary's or a mirror copy's), child of the server span."""
    attributes: list[tuple[str, Any]] = [("shadow.role", call.role)]
    if call.service:
        attributes.append(("shadow.service", call.service))
    if call.status is not None:
        attributes.append(("http.response.status_code", call.status))
    return _span(ctx.trace_id, call.span_id, ctx.server_span_id, False,
                 f"{call.method} {call.service or 'upstream'} ({call.role})", _SPAN_KIND_CLIENT, call.start_ns,
                 call.end_ns, attributes, call.error is not None or (call.status is not None and call.status >= 500),
                 call.error)


# What the event loop queues (plain tuples: the cheapest thing to build there):
#   (ctx, method, router, status, error, start_ns, end_ns, primary ClientCall | None)  a request, or
#   (ctx, ClientCall)                                                                  a mirror copy.
SpanItem = tuple[Any, ...]


def encode_item(item: SpanItem) -> list[bytes]:
    """The encoded span(s) of one queued item."""
    if len(item) == 2:
        return [_client_span(item[0], item[1])]
    ctx, method, router, status, error, start_ns, end_ns, client = item
    out = [_server_span(ctx, method, router, status, error, start_ns, end_ns)]
    if client is not None:
        out.append(_client_span(ctx, client))
    return out


def encode_resource(attributes: Iterable[tuple[str, Any]]) -> bytes:
    """A `Resource` message (the bytes `encode_spans` takes)."""
    return b"".join(_field(b"\x0a", _key_value(k, v)) for k, v in attributes)


def encode_spans(spans: Iterable[bytes], *, resource: bytes, scope_name: str) -> bytes:
    """An ExportTraceServiceRequest: one resource, one instrumentation scope, the encoded spans."""
    scope_spans = _field(b"\x0a", _field(b"\x0a", scope_name.encode("utf-8"))) + b"".join(
        _field(b"\x12", span) for span in spans)
    resource_spans = _field(b"\x0a", resource) + _field(b"\x12", scope_spans)
    return _field(b"\x0a", resource_spans)


class SpanExporter:
    """Finished spans from the event loop, batched, encoded and POSTed by one thread (OTLP/HTTP).

    `add` never blocks: past `max_queue` queued items it drops and counts (`dropped`). Every
    `delay_s` (sooner when `max_batch` items wait) the thread sends batches; a 429/502/503/504 or a
    connection error is retried twice with backoff, then the batch is dropped and counted (`failed`).
    """

    RETRYABLE = frozenset({429, 502, 503, 504})

    def __init__(self, url: str, *, resource: bytes, scope_name: str, headers: dict[str, str] | None = None,
                 max_queue: int = 8192, max_batch: int = 512, delay_s: float = 1.0, timeout_s: float = 10.0,
                 post: Callable[[bytes], int] | None = None) -> None:
        self.url, self.resource, self.scope_name = url, resource, scope_name
        self.max_queue, self.max_batch, self.delay_s, self.timeout_s = max_queue, max_batch, delay_s, timeout_s
        self.headers = {"Content-Type": "application/x-protobuf", **(headers or {})}
        self.exported = self.dropped = self.failed = 0  # spans / items / spans
        self._post = post or self._http_post
        self._session: Any = None
        self._queue: collections.deque[SpanItem] = collections.deque()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._last_warning = 0.0
        self._thread = threading.Thread(target=self._run, name="shadow span exporter", daemon=True)
        self._thread.start()

    def add(self, item: SpanItem) -> None:
        queue = self._queue
        if len(queue) >= self.max_queue:
            self.dropped += 1
            return
        queue.append(item)  # deque appends and pops are atomic: no lock with the thread
        if len(queue) == self.max_batch:
            self._wake.set()

    def _run(self) -> None:
        while not self._stopping.is_set():
            self._wake.wait(self.delay_s)
            self._wake.clear()
            self._drain()
        self._drain()

    def _drain(self) -> None:
        queue = self._queue
        while queue:
            batch: list[bytes] = []
            try:
                while queue and len(batch) < self.max_batch:
                    batch += encode_item(queue.popleft())
            except Exception as exc:  # an unexpected value: lose this batch, never the thread
                self.failed += len(batch)
                self._warn(f"encoding spans failed: {exc!r}")
                continue
            self._send(encode_spans(batch, resource=self.resource, scope_name=self.scope_name), len(batch))

    def _send(self, body: bytes, count: int) -> None:
        reason = ""
        for attempt in range(3):
            status: int | None = None
            try:
                status = self._post(body)
            except Exception as exc:  # connection refused, timeout...
                reason = repr(exc)
            else:
                reason = f"HTTP {status}"
                if 200 <= status < 300:
                    self.exported += count
                    return
            if (status is not None and status not in self.RETRYABLE) or attempt == 2:
                break
            if self._stopping.wait(0.5 * 2 ** attempt) and attempt >= 1:
                break  # shutting down: one retry, then give up
        self.failed += count
        self._warn(f"exporting {count} spans to {self.url} failed ({reason}); dropped")

    def _http_post(self, body: bytes) -> int:
        if self._session is None:
            import requests

            self._session = requests.Session()
        status: int = self._session.post(self.url, data=body, headers=self.headers, timeout=self.timeout_s).status_code
        return status

    def _warn(self, message: str) -> None:
        now = time.monotonic()
        if now - self._last_warning >= 60.0:  # at most one line a minute
            self._last_warning = now
            log.warning(f"shadow gateway: telemetry: {message}")

    def shutdown(self, timeout_s: float = 10.0) -> None:
        """Send what is queued, then stop the thread (blocking: call off the event loop)."""
        self._stopping.set()
        self._wake.set()
        self._thread.join(timeout_s)
        if self._session is not None:
            self._session.close()


class GatewayTelemetry:
    def __init__(self, settings: TelemetrySettings, *, gateway_id: str,
                 counters: Callable[[], dict[str, int]] | None = None) -> None:
        assert settings.endpoint is not None
        self.settings = settings
        headers = dict(settings.headers) or None
        resource = Resource.create({"service.name": settings.service_name, "service.instance.id": gateway_id})
        self.resource = resource
        self.spans = SpanExporter(f"{settings.endpoint}/v1/traces", headers=headers, scope_name="shadow.gateway",
                                  resource=encode_resource(resource.attributes.items()))
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
    def record_exchange(self, ctx: TraceContext, *, method: str, router: str | None,
                        service: str | None, status: int | None, error: str | None, start_ns: int,
                        end_ns: int, client: ClientCall | None) -> None:
        key = (router or "", service or "", status or 0)
        self.request_counts[key] += 1
        self.duration.record((end_ns - start_ns) / 1e6, {"router": key[0], "service": key[1], "status": key[2]})
        if ctx.sampled:  # the spans are built on the exporter's thread
            self.spans.add((ctx, method, router, status, error, start_ns, end_ns, client))

    def record_mirror(self, ctx: TraceContext, call: ClientCall) -> None:
        """A client span for one upstream call (the primary's or a mirror copy's), child of the server span."""
        if ctx.sampled:
            self.spans.add((ctx, call))

    def shutdown(self) -> None:
        """Flush and stop the exporters (blocking: call off the event loop)."""
        if self._log_handler is not None:
            for name in EXPORTED_LOGGERS:
                logging.getLogger(name).removeHandler(self._log_handler)
        self.spans.shutdown()
        self.meter_provider.shutdown(timeout_millis=5_000)
        if self.logger_provider is not None:
            self.logger_provider.shutdown()
