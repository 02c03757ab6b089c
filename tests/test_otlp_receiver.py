"""The OTLP receiver: a real aiohttp server on 127.0.0.1, fed by the real OpenTelemetry SDK exporter
(protobuf) and by hand-made JSON/protobuf/gzip payloads; spans read back through the store."""

from __future__ import annotations

import asyncio
import gzip
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import duckdb
import httpx
import orjson
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span

from shadow.capture.store import open_store
from shadow.telemetry.otlp_decode import hex_ids_to_base64, parse_traces
from shadow.telemetry.receiver import OtlpReceiver, parse_listen
from tests.conftest import shadow_cli

PB = {"Content-Type": "application/x-protobuf"}
JS = {"Content-Type": "application/json"}


class ReceiverThread:
    """An OtlpReceiver on its own event loop in a thread (as the CLI runs it, minus the signals)."""

    def __init__(self, capture: Path, **kwargs: object) -> None:
        self.receiver = OtlpReceiver(capture, **kwargs)  # type: ignore[arg-type]
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.port = asyncio.run_coroutine_threadsafe(self.receiver.start("127.0.0.1", 0), self.loop).result(10)
        self.url = f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        if not self.loop.is_running():
            return
        asyncio.run_coroutine_threadsafe(self.receiver.stop(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[ReceiverThread]:
    r = ReceiverThread(tmp_path / "cap", max_body_bytes=64 * 1024)
    yield r
    r.stop()


def _span(trace: bytes, span: bytes, name: str, parent: bytes = b"", start: int = 1_700_000_000_000_000_000,
          dur_ns: int = 5_000_000) -> Span:
    return Span(trace_id=trace, span_id=span, parent_span_id=parent, name=name, kind=Span.SPAN_KIND_SERVER,
                start_time_unix_nano=start, end_time_unix_nano=start + dur_ns,
                attributes=[KeyValue(key="http.route", value=AnyValue(string_value="/x"))])


def _request(*spans: Span, service: str = "orders") -> ExportTraceServiceRequest:
    req = ExportTraceServiceRequest()
    rs: ResourceSpans = req.resource_spans.add()
    rs.resource.attributes.append(KeyValue(key="service.name", value=AnyValue(string_value=service)))
    ss: ScopeSpans = rs.scope_spans.add()
    ss.scope.name = "test"
    ss.spans.extend(spans)
    return req


def _spans(capture: Path) -> list[dict[str, object]]:
    with open_store_spans(capture) as con:
        rows = con.execute("SELECT * FROM spans ORDER BY start_ts, name").fetchall()
        cols = [d[0] for d in con.description]
    return [dict(zip(cols, r, strict=True)) for r in rows]


def open_store_spans(capture: Path) -> duckdb.DuckDBPyConnection:
    """The spans view (the store needs an exchanges folder; a receiver-only capture has none)."""
    con = duckdb.connect()
    con.execute(f"CREATE VIEW spans AS SELECT * FROM read_parquet('{capture}/spans/**/*.parquet', "
                "hive_partitioning=true, union_by_name=true)")
    return con


def test_json_hex_ids_become_the_right_bytes() -> None:
    trace_hex, span_hex = "5b8efff798038103d269b633813fc60c", "eee19b7ec3c1b174"
    doc = {"resourceSpans": [{"scopeSpans": [{"spans": [
        {"traceId": trace_hex, "spanId": span_hex, "parentSpanId": "", "name": "a",
         "startTimeUnixNano": "1700000000000000000", "endTimeUnixNano": "1700000000005000000"}]}]}]}
    req = parse_traces(orjson.dumps(doc), json=True)
    span = req.resource_spans[0].scope_spans[0].spans[0]
    assert span.trace_id.hex() == trace_hex and span.span_id.hex() == span_hex
    assert hex_ids_to_base64({"traceId": "zz"}) == {"traceId": "zz"}  # not hex: left for the validator


def test_sdk_exporter_protobuf_spans_land_in_capture(receiver: ReceiverThread, tmp_path: Path) -> None:
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(resource=Resource.create({"service.name": "test-app"}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=receiver.url + "/v1/traces")))
    tracer = provider.get_tracer("test-app")
    from opentelemetry.trace import SpanKind

    with (tracer.start_as_current_span("handle", kind=SpanKind.SERVER),
          tracer.start_as_current_span("db.query") as child):
        child.set_attribute("db.system", "sqlite")
    assert provider.force_flush(10_000)
    provider.shutdown()
    receiver.stop()
    rows = {r["name"]: r for r in _spans(tmp_path / "cap")}
    assert set(rows) == {"handle", "db.query"}
    assert rows["db.query"]["parent_span_id"] == rows["handle"]["span_id"]
    assert rows["handle"]["parent_span_id"] is None
    assert rows["handle"]["trace_id"] == rows["db.query"]["trace_id"]
    assert len(str(rows["handle"]["trace_id"])) == 32
    assert rows["handle"]["kind"] == "server" and rows["db.query"]["service_name"] == "test-app"
    assert orjson.loads(str(rows["db.query"]["attributes"])) == {"db.system": "sqlite"}
    assert receiver.receiver.counters.spans_accepted == 2


def test_payload_variants_and_errors(receiver: ReceiverThread, tmp_path: Path) -> None:
    t1, t2 = bytes.fromhex("11" * 16), bytes.fromhex("22" * 16)
    with httpx.Client(base_url=receiver.url, timeout=30.0) as client:
        # protobuf, gzip-encoded; answered in protobuf
        body = gzip.compress(_request(_span(t1, b"\x01" * 8, "pb-gzip")).SerializeToString())
        r = client.post("/v1/traces", content=body, headers={**PB, "Content-Encoding": "gzip"})
        assert r.status_code == 200 and r.headers["content-type"].startswith("application/x-protobuf")
        assert not ExportTraceServiceResponse.FromString(r.content).HasField("partial_success")

        # JSON with hex ids; answered in JSON
        doc = {"resourceSpans": [{"resource": {"attributes": [{"key": "service.name",
                                                                "value": {"stringValue": "js"}}]},
                                  "scopeSpans": [{"spans": [
                                      {"traceId": t2.hex(), "spanId": "02" * 8, "name": "json-root",
                                       "kind": 2, "startTimeUnixNano": "1700000000000000000",
                                       "endTimeUnixNano": "1700000000010000000"},
                                      {"traceId": t2.hex(), "spanId": "03" * 8, "parentSpanId": "02" * 8,
                                       "name": "json-child", "startTimeUnixNano": "1700000000001000000",
                                       "endTimeUnixNano": "1700000000002000000"}]}]}]}
        r = client.post("/v1/traces", content=orjson.dumps(doc), headers=JS)
        assert r.status_code == 200 and r.headers["content-type"].startswith("application/json")
        assert r.json() == {}
        # JSON, gzip
        r = client.post("/v1/traces", content=gzip.compress(orjson.dumps(doc)),
                        headers={**JS, "Content-Encoding": "gzip"})
        assert r.status_code == 200  # all duplicates of the previous post: acknowledged, stored once

        # malformed spans: wrong id lengths → partial_success, the good span kept
        bad = _request(_span(t1, b"\x04" * 8, "good"), _span(t1[:8], b"\x05" * 8, "short-trace"),
                       _span(t1, b"\x06" * 4, "short-span"))
        r = client.post("/v1/traces", content=bad.SerializeToString(), headers=PB)
        assert r.status_code == 200
        ps = ExportTraceServiceResponse.FromString(r.content).partial_success
        assert ps.rejected_spans == 2 and "trace_id must be 16 bytes" in ps.error_message
        bad_json = {"resourceSpans": [{"scopeSpans": [{"spans": [
            {"traceId": "abcd", "spanId": "07" * 8, "name": "short-json"}]}]}]}
        r = client.post("/v1/traces", content=orjson.dumps(bad_json), headers=JS)
        assert r.json()["partialSuccess"]["rejectedSpans"] == "1"

        # undecodable → 400; oversized → 413 (declared, and a gzip bomb); wrong type → 415
        assert client.post("/v1/traces", content=b"\xff\x00garbage", headers=PB).status_code == 400
        assert client.post("/v1/traces", content=b"{not json", headers=JS).status_code == 400
        assert client.post("/v1/traces", content=b"x", headers={**PB, "Content-Encoding": "gzip"}).status_code == 400
        assert client.post("/v1/traces", content=b"\0" * (65 * 1024), headers=PB).status_code == 413
        bomb = gzip.compress(b"\0" * (1024 * 1024))
        assert client.post("/v1/traces", content=bomb, headers={**PB, "Content-Encoding": "gzip"}).status_code == 413
        assert client.post("/v1/traces", content=b"x", headers={"Content-Type": "text/plain"}).status_code == 415

        # metrics and logs are acknowledged (empty exports are valid)
        assert client.post("/v1/metrics", content=b"", headers=PB).status_code == 200
        assert client.post("/v1/logs", content=b"{}", headers=JS).json() == {}
    receiver.stop()
    rows = _spans(tmp_path / "cap")
    names = sorted(str(r["name"]) for r in rows)
    assert names == ["good", "json-child", "json-root", "pb-gzip"]
    child = next(r for r in rows if r["name"] == "json-child")
    assert child["trace_id"] == t2.hex() and child["parent_span_id"] == "02" * 8
    c = receiver.receiver.counters
    assert (c.spans_duplicate, c.spans_rejected, c.too_large, c.log_requests) == (2, 3, 2, 1)


def test_full_queue_answers_503_and_the_retry_is_stored(tmp_path: Path) -> None:
    """Spans refused by a full capture queue are not remembered as seen: the exporter's retry lands."""
    r = ReceiverThread(tmp_path / "cap", max_queue=2)
    try:
        spans = [_span(b"\x0a" * 16, bytes([i + 1]) * 8, f"s{i}") for i in range(5)]
        body = _request(*spans).SerializeToString()
        with httpx.Client(base_url=r.url, timeout=30.0) as client:
            first = client.post("/v1/traces", content=body, headers=PB)
            assert first.status_code == 503 and r.receiver.counters.shed == 3
            for _ in range(50):  # the writer thread drains the queue within ~0.1 s
                retry = client.post("/v1/traces", content=body, headers=PB)
                if retry.status_code == 200:
                    break
                time.sleep(0.05)
            assert retry.status_code == 200
    finally:
        r.stop()
    assert sorted(str(s["name"]) for s in _spans(tmp_path / "cap")) == [f"s{i}" for i in range(5)]


def test_spans_view_in_store(receiver: ReceiverThread, tmp_path: Path) -> None:
    """A capture with exchanges gets a `spans` view from the spans/ folder the receiver writes."""
    from tests.synthetic_capture import EndpointTraffic, write_capture

    capture = tmp_path / "cap"
    write_capture(capture, [EndpointTraffic(n=10)])
    with httpx.Client(base_url=receiver.url, timeout=30.0) as client:
        r = client.post("/v1/traces", headers=PB, content=_request(
            _span(b"\x09" * 16, b"\x09" * 8, "x")).SerializeToString())
        assert r.status_code == 200
    receiver.stop()
    with open_store(capture) as store:
        assert "spans" in store.tables()
        assert store.con.execute("SELECT count(DISTINCT (trace_id, span_id)) FROM spans").fetchone() == (1,)


def test_listen_address_and_cli_errors(tmp_path: Path) -> None:
    assert parse_listen("127.0.0.1:4318") == ("127.0.0.1", 4318)
    assert parse_listen("[::1]:0") == ("::1", 0)
    with pytest.raises(Exception, match="HOST:PORT"):
        parse_listen("localhost")
    result = shadow_cli("otlp-receiver", "-o", str(tmp_path / "c"), "--listen", "nowhere")
    assert result.returncode == 2 and "HOST:PORT" in result.stderr and "Traceback" not in result.stderr


def test_concurrent_large_posts_are_bounded_and_told_to_retry(tmp_path: Path) -> None:
    """Issue 17 item 4, against a real `shadow otlp-receiver` process: 40 connections each post a
    valid 7.5 MB export and stop half-way. At most 4 x 8 MB (4 x --max-body-bytes) are read and
    decoded at once: 4 requests are admitted, the other 36 are answered 503 with Retry-After at once,
    unread; the admitted ones are stored once their bodies arrive. RSS stays bounded."""
    from tests.bigbody import RssSampler, rss_bytes
    from tests.upstream import free_port

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "shadow.cli", "otlp-receiver", "-o", str(tmp_path / "cap"),
                             "--listen", f"127.0.0.1:{port}"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    socks: list[socket.socket] = []
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, "receiver did not start"
                time.sleep(0.05)
        big = _span(b"\x01" * 16, b"\x02" * 8, "big")
        big.attributes.append(KeyValue(key="blob", value=AnyValue(string_value="z" * (7 * 1024 * 1024 + 512 * 1024))))
        payload = _request(big).SerializeToString()
        head = (f"POST /v1/traces HTTP/1.1\r\nHost: r\r\nContent-Type: application/x-protobuf\r\n"
                f"Content-Length: {len(payload)}\r\n\r\n").encode()
        half = len(payload) // 2
        before = rss_bytes(proc.pid)
        answers: dict[int, bytes] = {}
        with RssSampler(proc.pid) as rss:
            for _ in range(40):
                sock = socket.create_connection(("127.0.0.1", port), timeout=30)
                sock.sendall(head + payload[:half])
                socks.append(sock)

            def collect(until: int) -> None:
                end = time.monotonic() + 30
                while len(answers) < until and time.monotonic() < end:
                    pending = [s for s in socks if s.fileno() not in answers]
                    for s in select.select(pending, [], [], 0.5)[0]:
                        data = b""
                        while b"\r\n\r\n" not in data and (chunk := s.recv(65536)):
                            data += chunk
                        answers[s.fileno()] = data

            collect(36)  # the turned-away ones answer before their bodies are sent
            refused = dict(answers)
            for sock in socks:
                if sock.fileno() not in answers:
                    sock.sendall(payload[half:])
            collect(40)
        statuses = sorted(a.split(b" ", 2)[1].decode() for a in answers.values())
        assert statuses == ["200"] * 4 + ["503"] * 36, statuses
        assert all(b"503" in a.split(b"\r\n", 1)[0] and b"\r\nretry-after: 1\r\n" in a.lower()
                   for a in refused.values())
        assert rss.peak - before < 250 * 1024 * 1024, f"receiver RSS grew by {(rss.peak - before) >> 20} MB"
    finally:
        for sock in socks:
            sock.close()
        proc.send_signal(signal.SIGINT)
        _out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert b"36 requests turned away busy" in err
