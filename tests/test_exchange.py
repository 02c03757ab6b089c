"""shadow.gateway.exchange: capture rows from plain values."""

from __future__ import annotations

from shadow.capture.schema import EXCHANGE_COLUMNS
from shadow.gateway.exchange import ExchangeRecord, base_url, mirror_record, traceparent_ids
from shadow.gateway.mirror import MirrorRequest, MirrorResult


def test_traceparent_ids() -> None:
    tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    assert traceparent_ids(tp) == ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7")
    assert traceparent_ids(tp.upper()) == ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7")
    assert traceparent_ids(None) == (None, None)
    assert traceparent_ids("garbage") == (None, None)
    assert traceparent_ids("00-" + "0" * 32 + "-00f067aa0ba902b7-01") == (None, None)  # all-zero trace id
    assert traceparent_ids("ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01") == (None, None)


def test_base_url() -> None:
    assert base_url("http://127.0.0.1:8080/a/b?c=1") == "http://127.0.0.1:8080"


def _primary() -> ExchangeRecord:
    return ExchangeRecord(
        request_id="rid", role="primary", mode="mirror", service="mono", router="orders", ts_ns=1, latency_ms=2.0,
        method="POST", url="http://mono/api/orders?x=1", host="shop.example", path="/api/orders", query="x=1",
        upstream="http://mono", req_headers=[("A", "b")], req_body=b"{}", status=200, resp_headers=[],
        resp_body=b"ok", error=None, trace_id="t" * 32, span_id="s" * 16, client_key="10.0.0.9", gateway="gw")


def test_rows_use_schema_columns_only() -> None:
    row = _primary().to_row()
    assert set(row) <= set(EXCHANGE_COLUMNS)
    assert row["ts"] == 1 and row["role"] == "primary"


def test_mirror_record_shares_identity_and_keeps_its_own_answer() -> None:
    request = MirrorRequest(target="orders-next", role="secondary", request_id="rid", method="POST",
                            url="http://next:9/api/orders?x=1", upstream="http://next:9",
                            headers=(("X-Shadow-Request", "1"),), body=None)
    result = MirrorResult(request, ts_ns=5, latency_ms=3.5, status=None, headers=[], body=b"",
                          error="timeout after 1s")
    rec = mirror_record(result, _primary())
    assert (rec.request_id, rec.role, rec.mode, rec.service, rec.router) == (
        "rid", "secondary", "mirror", "orders-next", "orders")
    assert (rec.path, rec.query, rec.host, rec.upstream) == ("/api/orders", "x=1", "shop.example", "http://next:9")
    assert rec.status is None and rec.error == "timeout after 1s" and rec.resp_body is None
    assert rec.req_body is None and rec.trace_id == "t" * 32 and rec.client_key == "10.0.0.9"
