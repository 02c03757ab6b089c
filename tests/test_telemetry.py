"""Gateway telemetry end to end: a real mitmdump with telemetry on and its embedded OTLP receiver, two
upstreams that read `traceparent` and export their own spans with the real OpenTelemetry SDK (OTLP/HTTP,
protobuf). Checks the trace tree across gateway and services, the capture's ids, and the metrics."""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import duckdb
import httpx
import orjson
import pytest
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import SpanKind
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from shadow.errors import ConfigError
from shadow.gateway.config import parse_config
from shadow.telemetry.tracing import continue_or_start, format_traceparent, ratio_sampled
from tests.conftest import GatewayProcess
from tests.upstream import ReceivedRequest, Response, Upstream, free_port

CLIENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN = "00f067aa0ba902b7"
UNSAMPLED_TRACE = "0af7651916cd43dd8448eb211c80319c"


def traced_app(name: str, provider: TracerProvider) -> Callable[[ReceivedRequest], Response]:
    """An upstream service instrumented with the SDK: continues the incoming trace, spends a db call."""
    tracer = provider.get_tracer(name)
    propagator = TraceContextTextMapPropagator()

    def handle(req: ReceivedRequest) -> Response:
        context = propagator.extract(req.headers)
        with (tracer.start_as_current_span(f"{name} handle", context=context, kind=SpanKind.SERVER),
              tracer.start_as_current_span("db.query", kind=SpanKind.CLIENT) as db):
            db.set_attribute("db.system", "sqlite")
        return 200, {"Content-Type": "application/json"}, orjson.dumps({"svc": name})

    return handle


def _rows(con: duckdb.DuckDBPyConnection, query: str) -> list[dict[str, Any]]:
    cur = con.execute(query)
    cols = [d[0] for d in cur.description]
    return [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]


def _view(con: duckdb.DuckDBPyConnection, name: str, folder: Path) -> None:
    con.execute(f"CREATE VIEW {name} AS SELECT * FROM read_parquet('{folder}/**/*.parquet', "
                "hive_partitioning=true, union_by_name=true)")


def test_gateway_trace_tree_capture_ids_and_metrics(tmp_path: Path) -> None:
    receiver_port = free_port()
    endpoint = f"http://127.0.0.1:{receiver_port}"
    providers = {name: TracerProvider(resource=Resource.create({"service.name": name})) for name in ("mono", "next")}
    for p in providers.values():
        p.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint + "/v1/traces")))
    capture = tmp_path / "cap"
    with (Upstream("mono", handler=traced_app("mono", providers["mono"])) as mono,
          Upstream("next", handler=traced_app("next", providers["next"])) as nxt):
        cfg = tmp_path / "gw.yaml"
        cfg.write_text(f"""
http:
  routers:
    all: {{rule: "PathPrefix(`/`)", service: m}}
  services:
    mono: {{loadBalancer: {{servers: [{{url: "{mono.url}"}}]}}}}
    next: {{loadBalancer: {{servers: [{{url: "{nxt.url}"}}]}}}}
    m: {{mirroring: {{service: mono, mirrors: [{{name: next, percent: 100}}]}}}}
shadow:
  capture: {{dir: {capture}}}
  mirroring: {{resend: {{enabled: false}}}}  # exact row and span counts: no zero-config secondary
  telemetry:
    endpoint: {endpoint}
    exportInterval: 500ms
    receiver: {{listen: "127.0.0.1:{receiver_port}"}}
""")
        gw = GatewayProcess(cfg).start()
        try:
            assert gw.wait_for_output("OTLP receiver on", timeout=10), gw.output()
            with httpx.Client(base_url=gw.url, timeout=30.0) as client:
                r1 = client.get("/api/orders/1")  # no incoming trace: the gateway starts one
                r2 = client.get("/api/orders/2", headers={"traceparent": f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"})
                # the client decided not to sample: the gateway follows (parent-based), exports nothing
                r3 = client.get("/api/orders/3", headers={"traceparent": f"00-{UNSAMPLED_TRACE}-{CLIENT_SPAN}-00"})
            assert r1.status_code == r2.status_code == r3.status_code == 200
            nxt.wait_for(3)
            unsampled = next(r for r in mono.received() if r.path == "/api/orders/3").headers["traceparent"]
            assert unsampled.startswith(f"00-{UNSAMPLED_TRACE}-") and unsampled.endswith("-00")
            for p in providers.values():
                assert p.force_flush(10_000)
            # A rejected reload logs an error: the gateway exports it as an OTLP log record.
            good = cfg.read_text()
            cfg.write_text(good.replace("routers:", "routers: [", 1))
            assert gw.wait_for_output("config reload rejected", timeout=10), gw.output()
        finally:
            assert gw.stop() == 0, gw.output()
            for p in providers.values():
                p.shutdown()

    con = duckdb.connect()
    _view(con, "exchanges", capture / "exchanges")
    _view(con, "spans", capture / "spans")
    _view(con, "metrics", capture / "metrics")
    rows = _rows(con, "SELECT role, path, trace_id, span_id FROM exchanges ORDER BY path, role")
    assert len(rows) == 6
    unsampled_rows = [r for r in rows if r["path"] == "/api/orders/3"]
    assert {r["trace_id"] for r in unsampled_rows} == {UNSAMPLED_TRACE}
    assert len({r["span_id"] for r in unsampled_rows}) == 2 and CLIENT_SPAN not in {r["span_id"] for r in unsampled_rows}
    by = {(r["path"], r["role"]): r for r in rows}
    spans = _rows(con, "SELECT * FROM spans")
    by_id = {s["span_id"]: s for s in spans}
    assert len(by_id) == len(spans)  # no duplicates
    assert not [s for s in spans if s["trace_id"] == UNSAMPLED_TRACE]

    for path, incoming in (("/api/orders/1", None), ("/api/orders/2", CLIENT_SPAN)):
        primary, candidate = by[(path, "primary")], by[(path, "candidate")]
        trace_id = primary["trace_id"]
        assert candidate["trace_id"] == trace_id and primary["span_id"] != candidate["span_id"]
        if incoming:
            assert trace_id == CLIENT_TRACE
        in_trace = [s for s in spans if s["trace_id"] == trace_id]
        # gateway server span (+ 2 client spans) and, per upstream, its server span and db span
        assert len(in_trace) == 7, in_trace
        server = next(s for s in in_trace if s["service_name"] == "shadow-gateway" and s["kind"] == "server")
        assert server["parent_span_id"] == incoming
        for row, app in ((primary, "mono"), (candidate, "next")):
            client_span = by_id[row["span_id"]]  # the capture row's span is the gateway's client span
            assert client_span["kind"] == "client" and client_span["service_name"] == "shadow-gateway"
            assert client_span["parent_span_id"] == server["span_id"]
            app_span = next(s for s in in_trace if s["service_name"] == app and s["kind"] == "server")
            assert app_span["parent_span_id"] == row["span_id"]
            db = next(s for s in in_trace if s["service_name"] == app and s["name"] == "db.query")
            assert db["parent_span_id"] == app_span["span_id"]

    # The analyzers see each call's own spans: the service's entry span and its db call, per role.
    from analyzers.spans import call_span_times
    from shadow.capture.store import open_store

    with open_store(capture) as store:
        assert {"spans", "metrics"} <= set(store.tables())
        times = call_span_times(store.con)
    assert sorted(times[times["span"] == "db.query"]["role"]) == ["candidate"] * 2 + ["primary"] * 2
    assert set(times[times["role"] == "candidate"]["services"]) == {"next"}

    stats = [orjson.loads(p.read_bytes()) for p in (capture / "_stats").glob("*.spans.json")]
    assert len(stats) == 1 and stats[0]["otlp_log_records"] >= 1 and stats[0]["otlp_spans_rejected"] == 0

    metrics = _rows(con, "SELECT name, attributes, value, count FROM metrics")
    names = {m["name"] for m in metrics}
    assert {"shadow.gateway.requests", "shadow.gateway.request.duration", "shadow.gateway.mirror.shed"} <= names
    final = max((m for m in metrics if m["name"] == "shadow.gateway.requests"), key=lambda m: m["value"] or 0)
    # every request counts, sampled or not
    assert final["value"] == 3 and orjson.loads(final["attributes"])["router"] == "all"


def test_trace_context_continue_start_and_sampling() -> None:
    rng = random.Random(1)
    ctx = continue_or_start(f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-00", 1.0, rng)
    assert (f"{ctx.trace_id:032x}", f"{ctx.parent_span_id:016x}", ctx.sampled) == (CLIENT_TRACE, CLIENT_SPAN, False)
    for bad in ("", "garbage", f"ff-{CLIENT_TRACE}-{CLIENT_SPAN}-01", f"00-{'0' * 32}-{CLIENT_SPAN}-01"):
        fresh = continue_or_start(bad, 1.0, rng)
        assert fresh.parent_span_id == 0 and fresh.sampled and not fresh.remote_parent
    assert format_traceparent(1, 2, True) == f"00-{1:032x}-{2:016x}-01"
    # The ratio decision is the SDK's TraceIdRatioBased one: about `ratio` of random ids pass.
    share = sum(ratio_sampled(rng.getrandbits(128), 0.25) for _ in range(4000)) / 4000
    assert 0.2 < share < 0.3
    assert not continue_or_start(None, 0.0, rng).sampled


def test_telemetry_config_errors() -> None:
    base = 'http: {routers: {}, services: {}}\nshadow:\n  telemetry: '
    assert parse_config(base + "{}").shadow.telemetry.endpoint is None
    with pytest.raises(ConfigError, match=r":3: shadow.telemetry.sampling: must be between 0 and 1"):
        parse_config(base + "{endpoint: 'http://x:4318', sampling: 1.5}")
    with pytest.raises(ConfigError, match=r"shadow.telemetry.endpoint: must be an http"):
        parse_config(base + "{endpoint: 'x:4318'}")
    with pytest.raises(ConfigError, match=r"shadow.telemetry.receiver.listen: .*HOST:PORT"):
        parse_config(base + "{receiver: {listen: nowhere}}")
    with pytest.raises(ConfigError, match=r"shadow.telemetry.smapling: unknown key"):
        parse_config(base + "{smapling: 1}")
