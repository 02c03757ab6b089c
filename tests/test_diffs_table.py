"""compute_diffs over a capture on disk: the diffs, diffs_summary and diffs_fields tables, read back
through DuckDB (the store's views)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from analyzers.diffs_table import compute_diffs
from analyzers.endpoints import EndpointTemplater
from shadow.capture.canonical import body_hash
from shadow.capture.schema import DIFFS, DIFFS_SUMMARY, EXCHANGES
from shadow.capture.store import open_store
from shadow.errors import CaptureError

JSON_HEADERS = [("Content-Type", "application/json")]


def exchange_row(request_id: str, role: str, *, body: Any = None, status: int | None = 200,
                 headers: list[tuple[str, str]] | None = None, path: str = "/api/items/1",
                 endpoint: str | None = "/api/items/{id}", service: str | None = None, method: str = "GET",
                 truncated: bool = False, error: str | None = None, mode: str = "mirror",
                 content_type: str = "application/json") -> dict[str, Any]:
    raw = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    return {
        "request_id": request_id, "exchange_id": f"{request_id}-{role}", "role": role, "mode": mode,
        "service": service or {"primary": "mono", "candidate": "items-svc", "secondary": "mono-2"}[role],
        "router": "items", "endpoint": endpoint, "ts": datetime(2026, 11, 26, 6, 0, tzinfo=UTC),
        "latency_ms": 10.0, "method": method, "url": "http://127.0.0.1" + path, "host": "shop", "path": path,
        "query": "", "upstream": "http://127.0.0.1:1", "req_headers": [], "req_body": b"",
        "status": status,
        "resp_headers": [{"name": k, "value": v} for k, v in (headers if headers is not None else JSON_HEADERS)],
        "resp_body": raw, "resp_content_type": content_type if status else None,
        "body_hash": body_hash(raw, content_type) if raw is not None and not truncated else None,
        "body_size": len(raw) if raw is not None else None, "error": error, "trace_id": None, "span_id": None,
        "client_key": None, "gateway": "g1", "truncated": truncated,
    }


def write_capture(root: Path, rows: list[dict[str, Any]], part: str = "part-0") -> Path:
    folder = root / "exchanges" / "dt=2026-11-26" / "hour=06"
    folder.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=EXCHANGES), folder / f"{part}.parquet")
    return root


@pytest.fixture(scope="module")
def capture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cap")
    rows = []
    for i in range(40):
        rid = f"r{i:03d}"
        doc = {"id": i, "name": f"item {i}", "price": 10.0 + i, "requestId": f"p-{i}", "tags": ["a", "b"]}
        cand = dict(doc)
        if i % 2:
            cand["requestId"] = f"c-{i}"  # volatile: noise on the odd requests
        if i % 10 == 0:
            cand["price"] = doc["price"] + 1  # a real change on 4 of 40
        rows.append(exchange_row(rid, "primary", body=doc))
        rows.append(exchange_row(rid, "candidate", body=cand,
                                 headers=[("content-type", "application/json"), ("Date", f"d{i}")]))
    # status change, a transport error, a truncated body, and a pair settled by canonical hash
    rows += [exchange_row("s1", "primary", body={"a": 1}), exchange_row("s1", "candidate", body={"a": 1}, status=500)]
    rows += [exchange_row("e1", "primary", body={"a": 1}),
             exchange_row("e1", "candidate", body=None, status=None, error="connect refused")]
    rows += [exchange_row("t1", "primary", body=b'{"a": [1, 2', truncated=True),
             exchange_row("t1", "candidate", body=b'{"a": [1, 3', truncated=True)]
    rows += [exchange_row("k1", "primary", body=b'{"a":1,"b":2}'), exchange_row("k1", "candidate", body=b'{"b": 2, "a": 1}')]
    return write_capture(root, rows)


def test_diffs_round_trip_through_duckdb(capture: Path) -> None:
    summary = compute_diffs(capture, [{"ignore": "**/requestId"}], progress=False, workers=1)
    assert summary.pairs == 44
    with open_store(capture) as store:
        assert "diffs" in store.views
        rows = store.sql("SELECT request_id, kind, op, pointer, old, new, noise, noise_reason FROM diffs "
                         "ORDER BY request_id, kind, pointer").fetchall()
    by_id: dict[str, list[tuple[Any, ...]]] = {}
    for r in rows:
        by_id.setdefault(r[0], []).append(r[1:])
    assert by_id["r010"] == [("body", "changed", "/price", "20.0", "21.0", False, None)]
    assert ("body", "changed", "/requestId", '"p-1"', '"c-1"', True, "rule: ignore **/requestId") in by_id["r001"]
    assert "r002" not in by_id  # identical bodies, Date header ignored by default
    assert by_id["s1"] == [("status", "changed", "", "200", "500", False, None)]
    assert by_id["e1"] == [("status", "changed", "", "200", '"error: connect refused"', False, None)]
    assert by_id["t1"][0][1] == "truncated" and by_id["t1"][0][5] is True
    assert "k1" not in by_id  # key order only: settled by the canonical hash
    assert pq.read_schema(capture / "diffs" / "part-0.parquet").names == DIFFS.names


def test_summary_counts_real_and_noise(capture: Path) -> None:
    summary = compute_diffs(capture, [{"ignore": "**/requestId"}], progress=False, workers=2)
    table = pq.read_table(capture / "diffs_summary")
    assert table.schema.names == DIFFS_SUMMARY.names
    rows = {r["request_id"]: r for r in table.to_pylist()}
    assert len(rows) == 44
    assert rows["r010"]["equal"] is False and rows["r010"]["real_diff_count"] == 1
    assert rows["r011"]["equal"] is True and rows["r011"]["noise_diff_count"] == 1
    assert rows["r002"]["equal"] is True and rows["r002"]["noise_diff_count"] == 0
    assert rows["t1"]["equal"] is None and rows["t1"]["truncated"] is True
    # a status change or a transport error is not compared for the mismatch rate (equal NULL): the
    # error guardrails judge it; its one status row is still in the diffs table
    assert rows["s1"]["status_equal"] is False and rows["s1"]["equal"] is None
    assert rows["s1"]["real_diff_count"] == 1
    assert rows["e1"]["status_equal"] is False and rows["e1"]["equal"] is None
    assert rows["t1"]["status_equal"] is True
    real = {rid for rid, r in rows.items() if r["equal"] is False}
    assert real == {"r000", "r010", "r020", "r030"}
    assert summary.pairs_with_real_diffs == 4
    assert summary.truncated_pairs == 1
    assert summary.status_changed_pairs == 2
    assert summary.mismatch_rate == 4 / 41  # 44 pairs less the truncated one and the two status changes


def test_rerun_replaces_previous_run(capture: Path) -> None:
    compute_diffs(capture, None, progress=False, workers=1)
    with_volatile = pq.read_table(capture / "diffs").num_rows
    compute_diffs(capture, [{"ignore": "**/requestId"}], progress=False, workers=1)
    files = sorted(p.name for p in (capture / "diffs").iterdir())
    assert files == ["part-0.parquet"]
    assert pq.read_table(capture / "diffs").num_rows == with_volatile  # same rows, now flagged noise
    assert not [p for p in capture.iterdir() if p.name.startswith(".diffs")]


def test_templater_sets_endpoints(capture: Path) -> None:
    templater = EndpointTemplater(explicit=["/api/{kind}/{n}"])
    compute_diffs(capture, None, templater=templater, progress=False, workers=1)
    endpoints = set(pq.read_table(capture / "diffs_summary").column("endpoint").to_pylist())
    assert endpoints == {"/api/{kind}/{n}"}


def test_progress_callback_reports_done_and_total(capture: Path) -> None:
    seen: list[tuple[int, int | None]] = []
    compute_diffs(capture, None, progress=lambda done, total=None: seen.append((done, total)), workers=1)
    assert seen[-1] == (44, 44)


def test_missing_capture_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(CaptureError, match="not found"):
        compute_diffs(tmp_path / "nope", None, progress=False)


def test_small_chunks_give_the_same_table(capture: Path) -> None:
    def rows() -> list[tuple[Any, ...]]:
        t = pq.read_table(capture / "diffs").to_pylist()
        return sorted(tuple(r.values()) for r in t)

    compute_diffs(capture, [{"ignore": "**/requestId"}], progress=False, workers=1)
    whole = rows()
    compute_diffs(capture, [{"ignore": "**/requestId"}], progress=False, workers=1, chunk_pairs=3)
    assert rows() == whole and len(whole) > 10


def test_header_rules_reach_the_sql_prefilter(tmp_path: Path) -> None:
    rows = [exchange_row("h1", "primary", body={"a": 1}, headers=[("X-Forwarded-For", "1"), ("X-Forwarded-Proto", "a")]),
            exchange_row("h1", "candidate", body={"a": 1}, headers=[("X-Forwarded-For", "2"), ("X-Forwarded-Proto", "b")])]
    write_capture(tmp_path, rows)
    compute_diffs(tmp_path, None, progress=False, workers=1)
    assert pq.read_table(tmp_path / "diffs").num_rows == 0  # both ignored by default: settled in SQL
    compute_diffs(tmp_path, [{"header": "X-Forwarded-For", "ignore": False}], progress=False, workers=1)
    assert pq.read_table(tmp_path / "diffs").column("pointer").to_pylist() == ["/x-forwarded-for"]


def test_an_echoed_request_differs_only_by_the_gateways_changes(tmp_path: Path) -> None:
    # /anything echoes the request each side received; the copy carries the gateway's marks, no
    # Connection header and another URL: all of it is the gateway's, none of it the candidate's.
    client = [("Host", "shop"), ("Accept", "*/*"), ("Connection", "keep-alive")]
    copy = [("Host", "shop"), ("Accept", "*/*"), ("X-Shadow-Request", "1"), ("X-Shadow-Request-Id", "a1b2c3d4e5f6")]
    rows = []
    for role, headers, url in (("primary", client, "http://127.0.0.1:8001/anything"),
                               ("candidate", copy, "http://127.0.0.1:8002/anything")):
        row = exchange_row("a1b2c3d4e5f6", role, path="/anything", endpoint="/anything",
                           body={"headers": dict(headers), "url": url, "total": 10 if role == "primary" else 11})
        row["req_headers"] = [{"name": k, "value": v} for k, v in headers]
        row["url"] = url
        rows.append(row)
    summary = compute_diffs(write_capture(tmp_path, rows), None, progress=False, workers=1)
    diffs = {d["pointer"]: d for d in pq.read_table(tmp_path / "diffs").to_pylist()}
    gateway = {"/headers/X-Shadow-Request", "/headers/X-Shadow-Request-Id", "/headers/Connection", "/url"}
    assert set(diffs) == gateway | {"/total"}
    for pointer in gateway:
        assert diffs[pointer]["noise"] and diffs[pointer]["noise_reason"].startswith("gateway: changed in the copy")
    assert diffs["/total"]["noise"] is False
    assert summary.pairs_with_real_diffs == 1


def _volatile_rows(n: int, *, repeats: bool, candidate_change: dict[str, Any] | None = None,
                   rename: bool = False) -> list[dict[str, Any]]:
    """`n` mirrored pairs of one endpoint whose answers carry a fresh timestamp and uuid each time;
    with `repeats`, every request is asked twice (the primary's own answers then differ too)."""
    import uuid

    rows = []
    for i in range(n):
        item = i // 2 if repeats else i
        path = f"/api/items/{item}"
        for role in ("primary", "candidate"):
            body: dict[str, Any] = {"id": item, "price": 10 + item, "generated_at": f"2026-12-07T14:{i // 60:02d}:"
                                    f"{i % 60:02d}.{123456 + (role == 'candidate'):06d}Z", "request_id": str(uuid.uuid4())}
            if role == "candidate":
                body.update(candidate_change or {})
                if rename:
                    body["unitPrice"] = body.pop("price")
            row = exchange_row(f"v{i}", role, body=body, path=path)
            row["ts"] = datetime(2026, 11, 26, 6, 0, i % 60, tzinfo=UTC)
            rows.append(row)
    return rows


def test_without_noise_evidence_volatile_fields_are_unproven_not_real(tmp_path: Path) -> None:
    compute_diffs(write_capture(tmp_path, _volatile_rows(40, repeats=False)), None, progress=False, workers=1)
    diffs = pq.read_table(tmp_path / "diffs").to_pylist()
    assert {d["pointer"] for d in diffs} == {"/generated_at", "/request_id"}
    assert all(d["unproven"] and not d["noise"] for d in diffs)
    summary = {r["request_id"]: r for r in pq.read_table(tmp_path / "diffs_summary").to_pylist()}
    assert all(r["equal"] is False and r["unproven_diff_count"] == r["real_diff_count"] == 2 for r in summary.values())


def test_a_token_constant_on_the_primary_that_the_candidate_rewrites_is_real(tmp_path: Path) -> None:
    # No noise evidence at all, but the primary answered every request with the same token: it is
    # not volatile there, so a candidate minting a fresh one per answer is a real bug, not unproven.
    import uuid

    rows = _volatile_rows(40, repeats=False)
    for row in rows:
        body = json.loads(row["resp_body"])
        body["schema_token"] = "sch-4f9a2c71b8e0" if row["role"] == "primary" else f"sch-{uuid.uuid4().hex[:12]}"
        row["resp_body"] = json.dumps(body).encode()
        row["body_hash"] = body_hash(row["resp_body"], "application/json")
    compute_diffs(write_capture(tmp_path, rows), None, progress=False, workers=1)
    by_pointer: dict[str, list[dict[str, Any]]] = {}
    for d in pq.read_table(tmp_path / "diffs").to_pylist():
        by_pointer.setdefault(d["pointer"], []).append(d)
    assert len(by_pointer["/schema_token"]) == 40
    assert not any(d["unproven"] or d["noise"] for d in by_pointer["/schema_token"])
    # The primary's own timestamps and ids vary from answer to answer: those stay unproven.
    assert all(d["unproven"] for p in ("/generated_at", "/request_id") for d in by_pointer[p])


def test_structural_changes_are_never_unproven(tmp_path: Path) -> None:
    rows = _volatile_rows(40, repeats=False, rename=True, candidate_change={"currency": "EUR"})
    compute_diffs(write_capture(tmp_path, rows), None, progress=False, workers=1)
    by_pointer = {(d["op"], d["pointer"]): d for d in pq.read_table(tmp_path / "diffs").to_pylist()}
    assert by_pointer[("renamed", "/price")]["unproven"] is False
    assert by_pointer[("added", "/currency")]["unproven"] is False
    assert by_pointer[("changed", "/request_id")]["unproven"] is True


def test_repeated_identical_requests_are_noise_evidence(tmp_path: Path) -> None:
    # every request asked twice: the primary's own two answers differ in generated_at and request_id
    # (noise, with that evidence), never in price, so a changed price is real, not unproven
    rows = _volatile_rows(40, repeats=True, candidate_change={"price": 0})
    compute_diffs(write_capture(tmp_path, rows), None, progress=False, workers=1)
    diffs = pq.read_table(tmp_path / "diffs").to_pylist()
    volatile = [d for d in diffs if d["pointer"] in ("/generated_at", "/request_id")]
    assert volatile and all(d["noise"] for d in volatile)
    assert volatile[0]["noise_reason"] == "differs between the primary's own answers to identical requests (20/20)"
    price = [d for d in diffs if d["pointer"] == "/price"]
    assert price and not any(d["noise"] or d["unproven"] for d in price)
