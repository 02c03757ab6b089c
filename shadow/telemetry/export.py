"""OpenTelemetry wiring for the gateway: spans, metrics and logs exported over OTLP/HTTP.

`GatewayTelemetry` takes plain values (no proxy types): the addon calls `record_exchange` /
`record_mirror` once the response (or a mirror copy's result) is in, with the ids and the sampling
decision it already made and propagated (shadow.telemetry.tracing), and the timestamps it measured.

Spans are finished facts by then, so they skip the SDK altogether: the event loop appends one tuple
per request (or mirror copy) to `SpanExporter`'s queue, and its thread turns batches into
OTLP/protobuf bytes with a small hand-written encoder (`encode_spans`: the same message the SDK's
exporter sends, checked byte for byte against the SDK's encoder in the tests; the parts of a span
that depend only on method, route or service and status are cached) and POSTs them to
`/v1/traces`. Measured in-process (bench/telemetry_spans.py, two spans per request): the SDK path
cost ≈ 52 µs per request in the proxy's process (≈ 5 building `ReadableSpan`s for its
`BatchSpanProcessor` on the event loop, ≈ 46 encoding on its thread, same GIL); this one ≈ 3.3 (0.2
on the loop, the rest encoding). Unsampled requests create no span. Metrics skip the SDK too: requests and their durations are counted into
plain histograms on the loop (`RequestMetrics`, ≈ 0.5 µs per request against the SDK instrument's
≈ 9) and a thread encodes them with opentelemetry-proto once per export interval. Logs (WARNING and
up, rare) stay on the SDK.
"""

from __future__ import annotations

import bisect
import collections
import http.client
import logging
import math
import struct
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple
from urllib.parse import urlsplit

from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, InstrumentationScope, KeyValue
from opentelemetry.proto.metrics.v1 import metrics_pb2
from opentelemetry.proto.resource.v1 import resource_pb2
from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
from opentelemetry.sdk.resources import Resource

from shadow.gateway.mirror import RateLimitedLog
from shadow.telemetry.tracing import TelemetrySettings, TraceContext

__all__ = ["ClientCall", "GatewayTelemetry", "MetricsExporter", "RequestMetrics", "SpanExporter", "encode_metrics",
           "encode_spans"]

SCOPE = "shadow.gateway"

EXPORTED_LOGGERS = ("shadow", "addons")
log = logging.getLogger(__name__)


class ClientCall(NamedTuple):
    """One upstream call of a request: the primary's, or a mirror copy's. (A NamedTuple: made on the
    event loop per call, at half a frozen dataclass's cost.)"""

    span_id: int
    role: str  # primary | candidate | secondary
    service: str | None
    method: str
    start_ns: int
    end_ns: int
    status: int | None
    error: str | None
    # A model call (shadow.ai.semconv): the span's name and gen_ai.* attributes; such spans differ per
    # call (token counts), so they are encoded whole rather than from the cached parts.
    genai_name: str | None = None
    genai: tuple[tuple[str, Any], ...] = ()


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


# A span's bytes, in field order: ids (trace 1, span 2, parent 4), then what depends only on the
# request's method, router or service, role and status (name 5 and kind 6: the "head"; attributes 9
# and, for an error without a message, status 15: the "tail"), then the times (7, 8) between them
# and the flags (16) last. Head and tail are cached per combination, so encoding a span is a
# struct pack of the ids and times and a join: ≈ 4× fewer instructions than building every field
# (callgrind, docs/benchmarks.md), which mattered because the exporter thread shares the GIL with
# the event loop.
_IDS = struct.Struct(">HQQHQ")  # tag 1 len 16, trace id (2 × 64 bits), tag 2 len 8, span id
_IDS_PARENT = struct.Struct(">HQQHQHQ")  # ... and tag 4 len 8, parent span id
_TIMES = struct.Struct("<BQBQ")  # tag 7 start (fixed64), tag 8 end
_FLAGS_LOCAL = b"\x85\x01" + _U32.pack(_FLAG_HAS_IS_REMOTE)
_FLAGS_REMOTE = b"\x85\x01" + _U32.pack(_FLAG_HAS_IS_REMOTE | _FLAG_IS_REMOTE)
_STATUS_UNSET = b"\x7a\x00"  # the SDK always sends a status; UNSET is the empty message
_STATUS_ERROR_NO_MESSAGE = _field(b"\x7a", b"\x18" + _SMALL_VARINTS[_STATUS_ERROR])
_MASK_64 = (1 << 64) - 1
_CACHE_LIMIT = 4096  # combinations kept; a client sending ever new methods only makes the cache restart

# (method, router, status) or (method, service, role, status) → (head, tail without an error message)
_server_parts: dict[tuple[Any, ...], tuple[bytes, bytes]] = {}
_client_parts: dict[tuple[Any, ...], tuple[bytes, bytes]] = {}


def _span_parts(cache: dict[tuple[Any, ...], tuple[bytes, bytes]], key: tuple[Any, ...], name: str, kind: int,
                attributes: Sequence[tuple[str, Any]], error: str | None, status: int | None) -> tuple[bytes, bytes]:
    """Encode a combination's head and tail and keep them in `cache` under `key`."""
    failed = error is not None or (status is not None and status >= 500)
    head = _field(b"\x2a", name.encode("utf-8")) + b"\x30" + _varint(kind)
    tail = b"".join(_field(b"\x4a", _key_value(k, v)) for k, v in attributes)
    if len(cache) >= _CACHE_LIMIT:
        cache.clear()
    parts = cache[key] = head, tail + (_STATUS_ERROR_NO_MESSAGE if failed else _STATUS_UNSET)
    return parts


def _span(trace_id: int, span_id: int, parent_id: int, flags: bytes, parts: tuple[bytes, bytes],
          start_ns: int, end_ns: int, message: str | None) -> bytes:
    """A Span message; `message`: an error's text (the cached tail then gets its status replaced)."""
    if parent_id:
        ids = _IDS_PARENT.pack(0x0A10, trace_id >> 64, trace_id & _MASK_64, 0x1208, span_id, 0x2208, parent_id)
    else:
        ids = _IDS.pack(0x0A10, trace_id >> 64, trace_id & _MASK_64, 0x1208, span_id)
    head, tail = parts
    if message:
        tail = tail[:-len(_STATUS_ERROR_NO_MESSAGE)] + _field(
            b"\x7a", _field(b"\x12", message.encode("utf-8")) + b"\x18" + _SMALL_VARINTS[_STATUS_ERROR])
    return b"".join((ids, head, _TIMES.pack(0x39, start_ns, 0x41, max(end_ns, start_ns)), tail, flags))


def _server_span(ctx: TraceContext, method: str, router: str | None, status: int | None,
                 error: str | None, start_ns: int, end_ns: int) -> bytes:
    # Few attributes: the rest (URL, headers, request id) is in the capture row that shares the
    # trace and span ids.
    key = (method, router, status, error is not None)
    parts = _server_parts.get(key)
    if parts is None:
        attributes: list[tuple[str, Any]] = [("http.request.method", method)]
        if router:
            attributes.append(("http.route", router))
        if status is not None:
            attributes.append(("http.response.status_code", status))
        parts = _span_parts(_server_parts, key, f"{method} {router or 'unrouted'}", _SPAN_KIND_SERVER,
                            attributes, error, status)
    return _span(ctx.trace_id, ctx.server_span_id, ctx.parent_span_id,
                 _FLAGS_REMOTE if ctx.parent_span_id else _FLAGS_LOCAL, parts, start_ns, end_ns, error)


def _client_attributes(call: ClientCall) -> list[tuple[str, Any]]:
    attributes: list[tuple[str, Any]] = [("shadow.role", call.role)]
    if call.service:
        attributes.append(("shadow.service", call.service))
    if call.status is not None:
        attributes.append(("http.response.status_code", call.status))
    return attributes


def _client_span(ctx: TraceContext, call: ClientCall) -> bytes:
    """A client span for one upstream call (the primary's or a mirror copy's), child of the server span."""
    key = (call.method, call.service, call.role, call.status, call.error is not None)
    if call.genai:  # a model call: its own name and attributes, never cached
        parts = _span_parts({}, key, call.genai_name or f"{call.method} {call.service or 'upstream'}",
                            _SPAN_KIND_CLIENT, [*_client_attributes(call), *call.genai], call.error, call.status)
    else:
        parts = _client_parts.get(key) or _span_parts(
            _client_parts, key, f"{call.method} {call.service or 'upstream'} ({call.role})", _SPAN_KIND_CLIENT,
            _client_attributes(call), call.error, call.status)
    return _span(ctx.trace_id, call.span_id, ctx.server_span_id, _FLAGS_LOCAL, parts, call.start_ns, call.end_ns,
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


class OtlpPoster:
    """POSTs OTLP/protobuf bodies to one URL over a kept-alive connection (blocking: exporter threads only).
    A 429/502/503/504 or a connection error is retried twice with backoff (cut short when `stopping`).

    http.client, not requests: per POST of 20 kB, ≈ 0.12 ms of the calling thread's CPU against ≈ 0.5
    for a requests `Session.post` (proxy environment and netrc lookups, adapters) and for httpx
    (bench/otlp_post.py); the exporter threads take that CPU from the proxy's process."""

    RETRYABLE = frozenset({429, 502, 503, 504})

    def __init__(self, url: str, *, headers: dict[str, str] | None, timeout_s: float, stopping: threading.Event,
                 post: Callable[[bytes], int] | None = None) -> None:
        self.url, self.timeout_s, self.stopping = url, timeout_s, stopping
        self.headers = {"Content-Type": "application/x-protobuf", **(headers or {})}
        self._post = post or self._http_post
        parts = urlsplit(url)
        self._target = (parts.scheme, parts.hostname or "", parts.port, (parts.path or "/") +
                        (f"?{parts.query}" if parts.query else ""))
        self._conn: http.client.HTTPConnection | None = None

    def send(self, body: bytes) -> str | None:
        """None once the body is accepted, else why it was not (after the retries)."""
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
                    return None
            if (status is not None and status not in self.RETRYABLE) or attempt == 2:
                break
            if self.stopping.wait(0.5 * 2 ** attempt) and attempt >= 1:
                break  # shutting down: one retry, then give up
        return reason

    def _http_post(self, body: bytes) -> int:
        reused = self._conn is not None
        try:
            return self._request(body)
        except (ConnectionResetError, BrokenPipeError, http.client.RemoteDisconnected):
            # A kept-alive connection the other end closed while idle: once more, at once, on a new one.
            # (A timeout or any other error is left to `send`'s backoff.)
            self.close()
            if not reused:
                raise
        except (OSError, http.client.HTTPException):
            self.close()
            raise
        try:
            return self._request(body)
        except (OSError, http.client.HTTPException):
            self.close()
            raise

    def _request(self, body: bytes) -> int:
        scheme, host, port, path = self._target
        if self._conn is None:
            connection = http.client.HTTPSConnection if scheme == "https" else http.client.HTTPConnection
            self._conn = connection(host, port, timeout=self.timeout_s)
        self._conn.request("POST", path, body=body, headers=self.headers)
        response = self._conn.getresponse()
        response.read()
        if response.will_close:
            self.close()
        return response.status

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def _warn_once_a_minute() -> RateLimitedLog:
    return RateLimitedLog(lambda message: log.warning(f"shadow gateway: telemetry: {message}"), interval_s=60.0)


class SpanExporter:
    """Finished spans from the event loop, batched, encoded and POSTed by one thread (OTLP/HTTP).

    `add` never blocks: past `max_queue` queued items it drops and counts (`dropped`). The thread
    sends a batch whenever `max_batch` items (requests or mirror copies: one or two spans each) wait,
    and what is left once `delay_s` passes without a full batch; a batch the endpoint does not accept
    after the poster's retries is dropped and counted (`failed`). Items that arrive while a batch is
    being sent wait for the next full batch or tick: sending them at once made a stream of small
    requests (17 a second instead of 4 at 600 mirrored requests a second, ≈ 2 ms of the proxy's CPU
    each under load).
    """

    def __init__(self, url: str, *, resource: bytes, scope_name: str, headers: dict[str, str] | None = None,
                 max_queue: int = 8192, max_batch: int = 256, delay_s: float = 1.0, timeout_s: float = 10.0,
                 post: Callable[[bytes], int] | None = None) -> None:
        self.url, self.resource, self.scope_name = url, resource, scope_name
        self.max_queue, self.max_batch, self.delay_s = max_queue, max_batch, delay_s
        self.exported = self.dropped = self.failed = 0  # spans / items / spans
        self._queue: collections.deque[SpanItem] = collections.deque()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._poster = OtlpPoster(url, headers=headers, timeout_s=timeout_s, stopping=self._stopping, post=post)
        self._warn = _warn_once_a_minute()
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
            full = self._wake.wait(self.delay_s)
            self._wake.clear()
            self._drain(partial=not full)
        self._drain(partial=True)

    def _drain(self, *, partial: bool) -> None:
        """Send the full batches waiting, then, when `partial`, the rest."""
        queue = self._queue
        while len(queue) >= self.max_batch or (partial and queue):
            batch: list[bytes] = []
            try:
                for _ in range(min(self.max_batch, len(queue))):
                    batch += encode_item(queue.popleft())
            except Exception as exc:  # an unexpected value: lose this batch, never the thread
                self.failed += len(batch)
                self._warn(f"encoding spans failed: {exc!r}")
                continue
            reason = self._poster.send(encode_spans(batch, resource=self.resource, scope_name=self.scope_name))
            if reason is None:
                self.exported += len(batch)
            else:
                self.failed += len(batch)
                self._warn(f"exporting {len(batch)} spans to {self.url} failed ({reason}); dropped")

    def shutdown(self, timeout_s: float = 10.0) -> None:
        """Send what is queued, then stop the thread (blocking: call off the event loop)."""
        self._stopping.set()
        self._wake.set()
        self._thread.join(timeout_s)
        self._poster.close()


# -- metrics --------------------------------------------------------------------------------------------
# Aggregated on the event loop in plain Python (a histogram record ≈ 0.7 µs against the SDK
# instrument's ≈ 8, bench/telemetry_spans.py), encoded with opentelemetry-proto once per export
# interval on the metrics thread (not a per-request cost, so the library's messages, not a hand encoder).

# The SDK's default explicit bucket boundaries (ms): what the gateway's histogram had under the SDK.
DURATION_BOUNDS_MS = (0.0, 5.0, 10.0, 25.0, 50.0, 75.0, 100.0, 250.0, 500.0, 750.0, 1000.0, 2500.0, 5000.0,
                      7500.0, 10000.0)

MetricKey = tuple[str, str, int]  # router, service, status (0: no answer)


class _Buckets:
    __slots__ = ("buckets", "count", "max", "min", "sum")

    def __init__(self) -> None:
        self.count, self.sum, self.min, self.max = 0, 0.0, math.inf, -math.inf
        self.buckets = [0] * (len(DURATION_BOUNDS_MS) + 1)


@dataclass(frozen=True)
class HistogramPoint:
    key: MetricKey
    count: int
    sum: float
    min: float
    max: float
    bucket_counts: tuple[int, ...]


class RequestMetrics:
    """Requests and their durations by (router, service, status), cumulative since start.

    `record` runs on the event loop; `snapshot` on the metrics thread. A lock (uncontended ≈ 0.1 µs)
    keeps a histogram's count, sum and buckets consistent with each other in a snapshot."""

    def __init__(self) -> None:
        self._histograms: dict[MetricKey, _Buckets] = {}
        self._lock = threading.Lock()

    def record(self, key: MetricKey, duration_ms: float) -> None:
        with self._lock:
            h = self._histograms.get(key)
            if h is None:
                h = self._histograms[key] = _Buckets()
            h.count += 1
            h.sum += duration_ms
            if duration_ms < h.min:
                h.min = duration_ms
            if duration_ms > h.max:
                h.max = duration_ms
            # Bucket i holds (bounds[i-1], bounds[i]]: the first bound ≥ the value.
            h.buckets[bisect.bisect_left(DURATION_BOUNDS_MS, duration_ms)] += 1

    def snapshot(self) -> list[HistogramPoint]:
        with self._lock:
            return [HistogramPoint(k, h.count, h.sum, h.min, h.max, tuple(h.buckets))
                    for k, h in self._histograms.items()]


def _proto_value(value: Any) -> AnyValue:
    if isinstance(value, bool):
        return AnyValue(bool_value=value)
    if isinstance(value, int):
        return AnyValue(int_value=value)
    if isinstance(value, float):
        return AnyValue(double_value=value)
    return AnyValue(string_value=str(value))


def _proto_attributes(attributes: Iterable[tuple[str, Any]]) -> list[KeyValue]:
    return [KeyValue(key=k, value=_proto_value(v)) for k, v in attributes]


def _gauge_point(name: str, value: float, now_ns: int) -> metrics_pb2.NumberDataPoint:
    point = metrics_pb2.NumberDataPoint(attributes=_proto_attributes([("counter", name)]), time_unix_nano=now_ns)
    if isinstance(value, int):
        point.as_int = value
    else:
        point.as_double = value
    return point


def encode_metrics(*, resource: Iterable[tuple[str, Any]], scope_name: str, start_ns: int, now_ns: int,
                   requests: Sequence[HistogramPoint], counters: Mapping[str, float] | None) -> bytes:
    """An ExportMetricsServiceRequest with the gateway's metrics (cumulative since `start_ns`):
    shadow.gateway.requests (sum), shadow.gateway.request.duration (histogram, ms) by router, service
    and status; with `counters`, shadow.gateway.mirror.shed (sum) and shadow.gateway.counters (gauge)."""
    def attrs(key: MetricKey) -> list[KeyValue]:
        return _proto_attributes((("router", key[0]), ("service", key[1]), ("status", key[2])))

    cumulative = metrics_pb2.AGGREGATION_TEMPORALITY_CUMULATIVE
    metrics = [
        metrics_pb2.Metric(
            name="shadow.gateway.requests", unit="{request}",
            description="Client requests by router, service and status",
            sum=metrics_pb2.Sum(aggregation_temporality=cumulative, is_monotonic=True, data_points=[
                metrics_pb2.NumberDataPoint(attributes=attrs(p.key), start_time_unix_nano=start_ns,
                                            time_unix_nano=now_ns, as_int=p.count) for p in requests])),
        metrics_pb2.Metric(
            name="shadow.gateway.request.duration", unit="ms",
            description="Client request duration at the gateway, by router, service and status",
            histogram=metrics_pb2.Histogram(aggregation_temporality=cumulative, data_points=[
                metrics_pb2.HistogramDataPoint(
                    attributes=attrs(p.key), start_time_unix_nano=start_ns, time_unix_nano=now_ns,
                    count=p.count, sum=p.sum, min=p.min, max=p.max, bucket_counts=p.bucket_counts,
                    explicit_bounds=DURATION_BOUNDS_MS) for p in requests])),
    ]
    if counters is not None:
        metrics.append(metrics_pb2.Metric(
            name="shadow.gateway.mirror.shed", unit="{copy}", description="Mirror copies shed (max in flight reached)",
            sum=metrics_pb2.Sum(aggregation_temporality=cumulative, is_monotonic=True, data_points=[
                metrics_pb2.NumberDataPoint(start_time_unix_nano=start_ns, time_unix_nano=now_ns,
                                            as_int=int(counters.get("mirror_shed", 0)))])))
        metrics.append(metrics_pb2.Metric(
            name="shadow.gateway.counters",
            description="The gateway's counters (capture, mirror, routing, breaker/health where present), by name",
            gauge=metrics_pb2.Gauge(data_points=[_gauge_point(k, v, now_ns) for k, v in counters.items()
                                                 if isinstance(v, int | float) and not isinstance(v, bool)])))
    request = ExportMetricsServiceRequest(resource_metrics=[metrics_pb2.ResourceMetrics(
        resource=resource_pb2.Resource(attributes=_proto_attributes(resource)),
        scope_metrics=[metrics_pb2.ScopeMetrics(scope=InstrumentationScope(name=scope_name), metrics=metrics)])])
    return request.SerializeToString()


class MetricsExporter:
    """Every `interval_s`, and once more at shutdown, POSTs `collect()` (an encoded metrics request)."""

    def __init__(self, url: str, *, collect: Callable[[], bytes], interval_s: float,
                 headers: dict[str, str] | None = None, timeout_s: float = 10.0,
                 post: Callable[[bytes], int] | None = None) -> None:
        self.url, self.collect, self.interval_s = url, collect, interval_s
        self.exported = self.failed = 0  # export requests
        self._stopping = threading.Event()
        self._poster = OtlpPoster(url, headers=headers, timeout_s=timeout_s, stopping=self._stopping, post=post)
        self._warn = _warn_once_a_minute()
        self._thread = threading.Thread(target=self._run, name="shadow metrics exporter", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stopping.wait(self.interval_s):
            self._export()
        self._export()

    def _export(self) -> None:
        try:
            body = self.collect()
        except Exception as exc:  # never the thread
            self.failed += 1
            self._warn(f"collecting metrics failed: {exc!r}")
            return
        reason = self._poster.send(body)
        if reason is None:
            self.exported += 1
        else:
            self.failed += 1
            self._warn(f"exporting metrics to {self.url} failed ({reason})")

    def shutdown(self, timeout_s: float = 10.0) -> None:
        """Export once more, then stop the thread (blocking: call off the event loop)."""
        self._stopping.set()
        self._thread.join(timeout_s)
        self._poster.close()


class GatewayTelemetry:
    def __init__(self, settings: TelemetrySettings, *, gateway_id: str,
                 counters: Callable[[], dict[str, int]] | None = None) -> None:
        assert settings.endpoint is not None
        self.settings = settings
        headers = dict(settings.headers) or None
        resource = Resource.create({"service.name": settings.service_name, "service.instance.id": gateway_id})
        self.resource = resource
        self.spans = SpanExporter(f"{settings.endpoint}/v1/traces", headers=headers, scope_name=SCOPE,
                                  resource=encode_resource(resource.attributes.items()))
        self.requests = RequestMetrics()
        self._counters = counters
        self._start_ns = time.time_ns()
        self.metrics = MetricsExporter(f"{settings.endpoint}/v1/metrics", collect=self._collect_metrics,
                                       interval_s=settings.export_interval_s, headers=headers)
        self.logger_provider: LoggerProvider | None = None
        self._log_handler: LoggingHandler | None = None
        if settings.logs:
            self.logger_provider = LoggerProvider(resource=resource)
            self.logger_provider.add_log_record_processor(BatchLogRecordProcessor(
                OTLPLogExporter(endpoint=f"{settings.endpoint}/v1/logs", headers=headers)))
            self._log_handler = LoggingHandler(level=logging.WARNING, logger_provider=self.logger_provider)
            for name in EXPORTED_LOGGERS:
                logging.getLogger(name).addHandler(self._log_handler)

    def _collect_metrics(self) -> bytes:
        """The metrics thread's payload: the request histograms and the gateway's counters, now."""
        return encode_metrics(resource=self.resource.attributes.items(), scope_name=SCOPE, start_ns=self._start_ns,
                              now_ns=time.time_ns(), requests=self.requests.snapshot(),
                              counters=self._counters() if self._counters is not None else None)

    # -- recording (event loop, after the client's answer) -----------------------------------------
    def record_exchange(self, ctx: TraceContext, *, method: str, router: str | None,
                        service: str | None, status: int | None, error: str | None, start_ns: int,
                        end_ns: int, client: ClientCall | None) -> None:
        self.requests.record((router or "", service or "", status or 0), (end_ns - start_ns) / 1e6)
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
        self.metrics.shutdown()
        if self.logger_provider is not None:
            self.logger_provider.shutdown()
