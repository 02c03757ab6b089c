"""The demo services' own spans: real service processes exporting with the real OpenTelemetry SDK
to a real OTLP receiver on 127.0.0.1, joined to the caller's trace by `traceparent`."""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import duckdb
import httpx
import pytest

from shadow.demo.processes import Supervisor, service_argv
from shadow.demo.tracing import ENDPOINT_ENV
from shadow.telemetry.receiver import OtlpReceiver

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"


class ReceiverThread:
    """An OtlpReceiver on its own event loop in a thread."""

    def __init__(self, capture: Path) -> None:
        self.receiver = OtlpReceiver(capture)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        port = asyncio.run_coroutine_threadsafe(self.receiver.start("127.0.0.1", 0), self.loop).result(10)
        self.url = f"http://127.0.0.1:{port}"

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.receiver.stop(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


@pytest.fixture(scope="module")
def traced_spans(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[tuple[str, ...]]]:
    """Spans of one traced order lookup to each service, plus one untraced request; the services
    stopped (SIGTERM flushes their exporters) before the receiver seals."""
    root = tmp_path_factory.mktemp("tracing")
    receiver = ReceiverThread(root / "capture")
    try:
        env = {**os.environ, ENDPOINT_ENV: receiver.url}
        with Supervisor(root / "logs") as sup:
            started = sup.start_services({"monolith": service_argv("monolith", "--name", "monolith"),
                                          "orders": service_argv("orders", "--error-rate", "0")}, env=env)
            with httpx.Client(timeout=30.0) as client:
                for name, child in started.items():
                    span = CALLER_SPAN if name == "monolith" else "11f067aa0ba902b7"
                    response = client.get(child.url + "/api/orders/7",
                                          headers={"traceparent": f"00-{TRACE_ID}-{span}-01"})
                    assert response.status_code == 200
                assert client.get(started["monolith"].url + "/api/users/3").status_code == 200
            for child in list(sup.children):
                assert sup.stop(child) == 0
    finally:
        receiver.stop()
    con = duckdb.connect()
    rows = con.sql(f"SELECT service_name, name, kind, trace_id, coalesce(parent_span_id, ''), span_id, attributes "
                   f"FROM read_parquet('{root}/capture/spans/**/*.parquet') ORDER BY start_ts").fetchall()
    yield [tuple(str(v) for v in row) for row in rows]


def test_each_service_answers_with_a_server_span_in_the_callers_trace(traced_spans: list[tuple[str, ...]]) -> None:
    servers = {(service, name): (trace, parent) for service, name, kind, trace, parent, _, _ in traced_spans
               if kind == "server"}
    assert servers[("monolith", "GET /api/orders/{id}")] == (TRACE_ID, CALLER_SPAN)
    assert servers[("orders", "GET /api/orders/{id}")] == (TRACE_ID, "11f067aa0ba902b7")
    # No traceparent: a trace of its own, rooted at the service.
    own_trace, own_parent = servers[("monolith", "GET /api/users/{id}")]
    assert own_trace != TRACE_ID and own_parent == ""


def test_queries_are_database_spans_under_the_server_span(traced_spans: list[tuple[str, ...]]) -> None:
    server_ids = {(service, name): span_id for service, name, kind, _, _, span_id, _ in traced_spans
                  if kind == "server"}
    queries: dict[str, list[str]] = {}
    for service, name, kind, trace, parent, _, attributes in traced_spans:
        if kind != "client" or trace != TRACE_ID:
            continue
        assert parent == server_ids[(service, "GET /api/orders/{id}")]
        assert '"db.system":"postgresql"' in attributes.replace(" ", "")
        queries.setdefault(service, []).append(name)
    # The monolith reads more tables to show an order than the extracted service: its coupling.
    assert queries["monolith"] == ["SELECT orders", "SELECT order_items", "SELECT products", "SELECT users"]
    assert queries["orders"] == ["SELECT orders", "SELECT order_items"]
