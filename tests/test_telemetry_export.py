"""The gateway's span and metric export (shadow/telemetry/export.py) without a proxy: the hand-written
OTLP encoder against the OpenTelemetry SDK's own encoder, the request histograms against the SDK's
aggregation, and the exporter threads against a real OTLP receiver or a recording `post`."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from pathlib import Path
from typing import Any

import duckdb
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans as sdk_encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags

from shadow.telemetry.export import (
    DURATION_BOUNDS_MS,
    ClientCall,
    MetricsExporter,
    OtlpPoster,
    RequestMetrics,
    SpanExporter,
    encode_item,
    encode_metrics,
    encode_resource,
    encode_spans,
)
from shadow.telemetry.tracing import TraceContext
from tests.upstream import ReceivedRequest, Response, Upstream, free_port

SAMPLED = TraceFlags(TraceFlags.SAMPLED)
RESOURCE = Resource.create({"service.name": "shadow-gateway", "service.instance.id": "gw-1"})
SCOPE = InstrumentationScope("shadow.gateway")

ROOT = TraceContext(trace_id=0x0AF7651916CD43DD8448EB211C80319C, parent_span_id=0, server_span_id=0xB7AD6B7169203331,
                    sampled=True, remote_parent=False)
CONTINUED = TraceContext(trace_id=0x4BF92F3577B34DA6A3CE929D0E0E4736, parent_span_id=0x00F067AA0BA902B7,
                         server_span_id=0x1111111111111111, sampled=True, remote_parent=True)


def sdk_span(name: str, kind: SpanKind, trace_id: int, span_id: int, parent: SpanContext | None, start: int,
             end: int, attributes: dict[str, Any], error: str | None, failed: bool) -> ReadableSpan:
    """A span as the gateway handed it to the SDK before the hand-written encoder."""
    return ReadableSpan(name, context=SpanContext(trace_id, span_id, is_remote=False, trace_flags=SAMPLED),
                        parent=parent, resource=RESOURCE, attributes=attributes, kind=kind,
                        instrumentation_scope=SCOPE,
                        status=Status(StatusCode.ERROR, error) if failed else Status(StatusCode.UNSET),
                        start_time=start, end_time=max(end, start))


def test_encoded_spans_are_what_the_sdk_encodes() -> None:
    primary = ClientCall(span_id=0x2222, role="primary", service="mono", method="GET",
                         start_ns=1_700_000_000_000_000_100, end_ns=1_700_000_000_002_000_000, status=200, error=None)
    copy = ClientCall(span_id=0x3333, role="candidate", service=None, method="POST",
                      start_ns=1_700_000_000_000_000_200, end_ns=1_700_000_000_000_000_100, status=None,
                      error="timed out")
    items = [
        (ROOT, "GET", "all", 200, None, 1_700_000_000_000_000_000, 1_700_000_000_003_000_000, primary),
        (CONTINUED, "PUT", None, 503, None, 1_700_000_000_000_000_000, 1_699_000_000_000_000_000, None),
        (CONTINUED, "GET", "api", None, "connection refused", 10, 20, None),
        (ROOT, copy),
    ]
    server = SpanContext(ROOT.trace_id, ROOT.server_span_id, is_remote=False, trace_flags=SAMPLED)
    remote = SpanContext(CONTINUED.trace_id, CONTINUED.parent_span_id, is_remote=True, trace_flags=SAMPLED)
    expected = [
        sdk_span("GET all", SpanKind.SERVER, ROOT.trace_id, ROOT.server_span_id, None, 1_700_000_000_000_000_000,
                 1_700_000_000_003_000_000, {"http.request.method": "GET", "http.route": "all",
                                             "http.response.status_code": 200}, None, False),
        sdk_span("GET mono (primary)", SpanKind.CLIENT, ROOT.trace_id, 0x2222, server, primary.start_ns,
                 primary.end_ns, {"shadow.role": "primary", "shadow.service": "mono",
                                  "http.response.status_code": 200}, None, False),
        sdk_span("PUT unrouted", SpanKind.SERVER, CONTINUED.trace_id, CONTINUED.server_span_id, remote,
                 1_700_000_000_000_000_000, 1_699_000_000_000_000_000,
                 {"http.request.method": "PUT", "http.response.status_code": 503}, None, True),
        sdk_span("GET api", SpanKind.SERVER, CONTINUED.trace_id, CONTINUED.server_span_id, remote, 10, 20,
                 {"http.request.method": "GET", "http.route": "api"}, "connection refused", True),
        sdk_span("POST upstream (candidate)", SpanKind.CLIENT, ROOT.trace_id, 0x3333, server, copy.start_ns,
                 copy.end_ns, {"shadow.role": "candidate"}, "timed out", True),
    ]
    ours = encode_spans([span for item in items for span in encode_item(item)],
                        resource=encode_resource(RESOURCE.attributes.items()), scope_name="shadow.gateway")
    theirs = sdk_encode_spans(expected)
    assert ExportTraceServiceRequest.FromString(ours) == theirs
    assert ours == theirs.SerializeToString()  # byte for byte, even


def test_cached_span_parts_never_mix_requests() -> None:
    """Names, attributes and status are cached per combination: an error's text is still each span's
    own, and ever new methods (a client's choice) keep the cache bounded."""
    from shadow.telemetry import export as telemetry_export

    items = [(ROOT, "GET", "api", None, "connection refused", 10, 20, None),
             (ROOT, "GET", "api", None, "timed out", 10, 20, None),
             (ROOT, "GET", "api", 200, None, 10, 20, None),
             (ROOT, ClientCall(span_id=5, role="candidate", service="next", method="GET", start_ns=1, end_ns=2,
                               status=None, error="reset")),
             (ROOT, ClientCall(span_id=6, role="candidate", service="next", method="GET", start_ns=1, end_ns=2,
                               status=None, error="refused"))]
    body = encode_spans([span for item in items for span in encode_item(item)], resource=b"", scope_name="s")
    spans = ExportTraceServiceRequest.FromString(body).resource_spans[0].scope_spans[0].spans
    assert [(s.status.code, s.status.message) for s in spans] == [
        (2, "connection refused"), (2, "timed out"), (0, ""), (2, "reset"), (2, "refused")]
    for n in range(telemetry_export._CACHE_LIMIT + 10):
        encode_item((ROOT, f"M{n}", "api", 200, None, 1, 2, None))
    assert len(telemetry_export._server_parts) <= telemetry_export._CACHE_LIMIT
    [last] = encode_item((ROOT, "M7", "api", 200, None, 1, 2, None))
    assert b"M7 api" in last


def test_resource_values_of_every_kind() -> None:
    attributes = {"s": "x", "b": True, "i": -3, "f": 0.5, "a": ("p", "q"), "big": 1 << 40}
    ours = encode_spans([], resource=encode_resource(attributes.items()), scope_name="s")
    theirs = sdk_encode_spans([sdk_span("n", SpanKind.SERVER, 1, 2, None, 1, 2, {}, None, False)])
    decoded = ExportTraceServiceRequest.FromString(ours).resource_spans[0].resource
    expected_resource = Resource(attributes)
    from opentelemetry.exporter.otlp.proto.common._internal import _encode_resource

    assert decoded == _encode_resource(expected_resource)
    assert theirs.resource_spans[0].scope_spans[0].scope.name == "shadow.gateway"


def test_the_exporter_batches_and_counts() -> None:
    bodies: list[bytes] = []
    answers = iter([503, 200, 400])  # retried, then sent; then refused for good
    done = threading.Event()

    def post(body: bytes) -> int:
        bodies.append(body)
        status = next(answers, 200)
        if len(bodies) >= 2:
            done.set()
        return status

    exporter = SpanExporter("http://unused/v1/traces", resource=b"", scope_name="s", post=post, max_batch=3,
                            max_queue=5, delay_s=30.0)
    for _ in range(3):  # the third fills a batch: the thread wakes without waiting for delay_s
        exporter.add((ROOT, "GET", "all", 200, None, 1, 2, None))
    assert done.wait(10)
    assert exporter.exported == 3 and len(bodies) == 2  # one retry after the 503
    assert len(ExportTraceServiceRequest.FromString(bodies[1]).resource_spans[0].scope_spans[0].spans) == 3
    for _ in range(7):
        exporter.add((ROOT, "GET", "all", 200, None, 1, 2, None))
    exporter.shutdown()  # sends what is queued
    assert exporter.dropped == 2  # max_queue 5
    assert exporter.failed == 3 and exporter.exported == 5  # the 400 batch is dropped, not retried


def test_the_poster_keeps_its_connection_and_recovers_from_a_closed_one() -> None:
    """The real HTTP path: POSTs with the OTLP headers over a kept-alive connection; `Connection:
    close` is honoured; a 503 is retried; a refused connection is reported, not raised."""
    statuses = iter([200, 200, 503, 200, 200])

    def handler(req: ReceivedRequest) -> Response:
        closing = len(upstream.received()) == 2  # the second answer closes its connection
        return next(statuses), ({"Connection": "close"} if closing else {}), b""

    stopping = threading.Event()
    with Upstream("collector", handler=handler) as upstream:
        poster = OtlpPoster(f"{upstream.url}/v1/traces?x=1", headers={"X-Api-Key": "k"}, timeout_s=5,
                            stopping=stopping)
        assert poster.send(b"one") is None and poster.send(b"two") is None
        assert poster.send(b"three") is None  # 503 first, then accepted on the retry
        poster.close()
    got = upstream.received()
    assert [r.body for r in got] == [b"one", b"two", b"three", b"three"]
    assert {(r.method, r.path) for r in got} == {("POST", "/v1/traces?x=1")}
    assert got[0].headers["content-type"] == "application/x-protobuf" and got[0].headers["x-api-key"] == "k"
    stopping.set()  # no backoff waits: one retry, then the reason
    refused = OtlpPoster(f"http://127.0.0.1:{free_port()}/v1/traces", headers=None, timeout_s=5, stopping=stopping)
    assert "ConnectionRefusedError" in (refused.send(b"x") or "")


class RawCollector:
    """A collector on a raw socket, scripted per connection: for each request on it, "ok" (answer 200,
    kept alive) or "hang" (never answer); after its script the connection is closed without notice."""

    def __init__(self, scripts: list[list[str]]) -> None:
        self.bodies: list[bytes] = []
        self.connections = 0
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self._done = threading.Event()
        threading.Thread(target=self._serve, args=(scripts,), daemon=True).start()

    def _serve(self, scripts: list[list[str]]) -> None:
        for script in scripts:
            try:
                conn, _addr = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._connection, args=(conn, script), daemon=True).start()

    def _connection(self, conn: socket.socket, script: list[str]) -> None:
        with conn:
            for action in script:
                data = b""
                while b"\r\n\r\n" not in data:
                    data += conn.recv(65536)
                head, _, body = data.partition(b"\r\n\r\n")
                length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                                  if line.lower().startswith(b"content-length")))
                while len(body) < length:
                    body += conn.recv(65536)
                self.bodies.append(body)
                if action == "hang":
                    self._done.wait(10)
                    return
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")

    def close(self) -> None:
        self._done.set()
        self.listener.close()


def test_the_poster_reconnects_when_an_idle_connection_was_dropped() -> None:
    """A collector that drops idle kept-alive connections (without `Connection: close`): the next
    POST fails on the dead connection and goes out at once on a new one, not after a backoff."""
    collector = RawCollector([["ok"], ["ok"], ["ok"]])
    poster = OtlpPoster(f"http://127.0.0.1:{collector.port}/v1/traces", headers=None, timeout_s=5,
                        stopping=threading.Event())
    try:
        assert poster.send(b"first") is None
        time.sleep(0.1)  # the server has closed the connection by now
        started = time.monotonic()
        assert poster.send(b"second") is None
        assert time.monotonic() - started < 0.4  # the backoff (0.5 s) was not needed
    finally:
        poster.close()
        collector.close()
    assert collector.bodies == [b"first", b"second"] and collector.connections == 2


def test_a_timeout_on_a_kept_connection_is_not_resent_at_once() -> None:
    """Only a connection the collector closed is retried at once: a POST that timed out may have
    been received, so it waits for `send`'s retry (here, shutting down: one retry, no backoff)."""
    collector = RawCollector([["ok", "hang"], ["hang"], ["hang"]])
    stopping = threading.Event()
    poster = OtlpPoster(f"http://127.0.0.1:{collector.port}/v1/traces", headers=None, timeout_s=0.3,
                        stopping=stopping)
    try:
        assert poster.send(b"first") is None
        stopping.set()
        assert "timed out" in (poster.send(b"second") or "")
    finally:
        poster.close()
        collector.close()
    assert collector.bodies == [b"first", b"second", b"second"] and collector.connections == 2


def test_spans_reach_a_real_otlp_receiver(tmp_path: Path) -> None:
    from shadow.telemetry.receiver import OtlpReceiver

    port = free_port()
    loop = asyncio.new_event_loop()
    receiver = OtlpReceiver(tmp_path, segment_seconds=0.2)
    started = threading.Event()

    def serve() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(receiver.start("127.0.0.1", port))
        started.set()
        loop.run_forever()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    assert started.wait(10)
    try:
        exporter = SpanExporter(f"http://127.0.0.1:{port}/v1/traces", scope_name="shadow.gateway",
                                resource=encode_resource(RESOURCE.attributes.items()), delay_s=0.05)
        exporter.add((CONTINUED, "GET", "all", 200, None, 1_700_000_000_000_000_000, 1_700_000_000_001_000_000,
                      None))
        deadline = time.monotonic() + 10
        while exporter.exported < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        exporter.shutdown()
        assert exporter.exported == 1 and exporter.failed == 0
    finally:
        asyncio.run_coroutine_threadsafe(receiver.stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
    rows = duckdb.connect().execute(
        f"select trace_id, span_id, parent_span_id, name from read_parquet('{tmp_path}/spans/**/*.parquet', "
        "union_by_name=true, hive_partitioning=true)").fetchall()
    assert rows == [(f"{CONTINUED.trace_id:032x}", f"{CONTINUED.server_span_id:016x}",
                     f"{CONTINUED.parent_span_id:016x}", "GET all")]


# -- metrics ---------------------------------------------------------------------------------------------

DURATIONS = [0.0, 0.2, 5.0, 5.000001, 9.9, 10.0, 74.0, 250.0, 999.5, 10_000.0, 25_000.0, 3.3]


def test_request_histograms_bucket_as_the_sdk_does() -> None:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    reader = InMemoryMetricReader()
    sdk = MeterProvider(metric_readers=[reader]).get_meter("m").create_histogram("d", unit="ms")
    ours = RequestMetrics()
    for i, ms in enumerate(DURATIONS):
        status = 200 if i % 3 else 500
        sdk.record(ms, {"router": "all", "service": "mono", "status": status})
        ours.record(("all", "mono", status), ms)
    expected = {point.attributes["status"]: point for metric in reader.get_metrics_data().resource_metrics[0]
                .scope_metrics[0].metrics for point in metric.data.data_points}
    points = {p.key[2]: p for p in ours.snapshot()}
    assert set(points) == set(expected) == {200, 500}
    for status, point in points.items():
        sdk_point = expected[status]
        assert (point.count, point.min, point.max) == (sdk_point.count, sdk_point.min, sdk_point.max)
        assert point.sum == sdk_point.sum
        assert list(point.bucket_counts) == list(sdk_point.bucket_counts)
        assert tuple(sdk_point.explicit_bounds) == DURATION_BOUNDS_MS


def test_encoded_metrics_decode_into_the_receivers_rows() -> None:
    from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest

    from shadow.telemetry.otlp_decode import metric_rows

    metrics = RequestMetrics()
    for ms in (3.0, 12.0, 12.0):
        metrics.record(("all", "mono", 200), ms)
    metrics.record(("", "", 0), 2.0)  # no router, no answer
    body = encode_metrics(resource=RESOURCE.attributes.items(), scope_name="shadow.gateway", start_ns=1, now_ns=2,
                          requests=metrics.snapshot(), counters={"mirror_shed": 4, "sealed_rows": 9, "ratio": 0.5})
    rows = metric_rows(ExportMetricsServiceRequest.FromString(body))
    by = {(r["name"], r["attributes"]): r for r in rows}
    ok = '{"router":"all","service":"mono","status":200}'
    assert by[("shadow.gateway.requests", ok)]["value"] == 3
    duration = by[("shadow.gateway.request.duration", ok)]
    assert duration["kind"] == "histogram" and duration["count"] == 3 and duration["sum"] == 27.0
    assert duration["bucket_counts"][1] == 1 and duration["bucket_counts"][3] == 2  # (0, 5] and (10, 25]
    assert duration["explicit_bounds"] == list(DURATION_BOUNDS_MS)
    assert by[("shadow.gateway.requests", '{"router":"","service":"","status":0}')]["value"] == 1
    assert by[("shadow.gateway.mirror.shed", "{}")]["value"] == 4
    assert by[("shadow.gateway.counters", '{"counter":"sealed_rows"}')]["value"] == 9
    assert by[("shadow.gateway.counters", '{"counter":"ratio"}')]["value"] == 0.5
    assert {r["service_name"] for r in rows} == {"shadow-gateway"} and {r["ts"] for r in rows} == {2}


def test_the_metrics_exporter_posts_each_interval_and_at_shutdown() -> None:
    bodies: list[bytes] = []
    answers = iter([200, 400])
    twice = threading.Event()

    def post(body: bytes) -> int:
        bodies.append(body)
        if len(bodies) == 2:
            twice.set()
        return next(answers, 200)

    collected = iter(range(1000))
    exporter = MetricsExporter("http://unused/v1/metrics", collect=lambda: str(next(collected)).encode(),
                               interval_s=0.05, post=post)
    assert twice.wait(10)
    exporter.shutdown()
    assert exporter.exported >= 1 and exporter.failed == 1  # the 400 is not retried
    assert bodies[:2] == [b"0", b"1"] and len(bodies) == exporter.exported + exporter.failed  # + the final one


def test_a_failing_collect_is_counted_and_the_thread_goes_on() -> None:
    calls: list[int] = []

    def collect() -> bytes:
        calls.append(1)
        if len(calls) == 1:
            raise ValueError("boom")
        return b"ok"

    posted: list[bytes] = []

    def post(body: bytes) -> int:
        posted.append(body)
        return 200

    exporter = MetricsExporter("http://unused/v1/metrics", collect=collect, interval_s=0.02, post=post)
    deadline = time.monotonic() + 10
    while not posted and time.monotonic() < deadline:
        time.sleep(0.01)
    exporter.shutdown()
    assert exporter.failed == 1 and posted and posted[0] == b"ok"
