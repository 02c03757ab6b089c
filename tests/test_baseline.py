"""`shadow baseline`: traffic, latency, error clusters and extraction candidates of a primary-only capture,
with and without spans; an empty or malformed capture is one clear error line (exit 2)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from analyzers.baseline import build_baseline, error_signature, render_markdown
from shadow.capture.schema import EXCHANGES
from tests.conftest import shadow_cli
from tests.synthetic_spans import write_spans

# endpoint → (requests, 5xx rate, transport error rate, median latency ms)
TRAFFIC = {
    "/api/orders/{id}": (300, 0.0, 0.0, 40.0),
    "/api/catalog/{id}": (300, 0.0, 0.0, 20.0),
    "/api/checkout": (100, 0.2, 0.05, 200.0),
}


def write_primary_capture(root: Path, seed: int = 3) -> Path:
    """A pass-through capture: primary rows only (mode serve), as the gateway writes before any mirror."""
    rng = np.random.default_rng(seed)
    start = datetime(2026, 11, 26, 6, 0, tzinfo=UTC)
    rows = []
    n = 0
    for endpoint, (count, rate_5xx, rate_err, median) in TRAFFIC.items():
        method = "POST" if endpoint == "/api/checkout" else "GET"
        for i in range(count):
            n += 1
            path = endpoint.replace("{id}", str(i % 17))
            u = rng.random()
            status, error, body = 200, None, b'{"ok": true}'
            if u < rate_err:
                status, error, body = None, f"timeout after {rng.uniform(4, 9):.1f}s", None
            elif u < rate_err + rate_5xx:
                status, body = 503, f'{{"error": "db pool exhausted ({i} waiting)"}}'.encode()
            rid = f"r{n:05d}"
            rows.append({"request_id": rid, "exchange_id": rid + "-p", "role": "primary", "mode": "serve",
                         "service": "monolith", "router": "all", "endpoint": endpoint,
                         "ts": start + timedelta(milliseconds=n * 100), "latency_ms": float(rng.lognormal(np.log(median), 0.4)),
                         "method": method, "url": f"http://mono{path}", "path": path, "query": "",
                         "status": status, "resp_body": body, "error": error,
                         "trace_id": f"{n:032x}", "span_id": f"{n:016x}", "gateway": "gw"})
    folder = root / "exchanges" / "dt=2026-11-26" / "hour=06"
    folder.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=EXCHANGES), folder / "part-0.parquet")
    return root


def test_error_signature_masks_numbers_and_ids() -> None:
    assert error_signature("timeout after 5.2s to 10.0.0.7") == error_signature("timeout after 7.9s to 10.0.0.9")
    assert error_signature("id 3f2b1c1e-8d7a-4c3b-9e1f-0a1b2c3d4e5f failed") == "id <uuid> failed"


def test_baseline_without_spans(tmp_path: Path) -> None:
    capture = write_primary_capture(tmp_path / "cap")
    result = shadow_cli("baseline", str(capture), "-o", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr
    assert "no spans: coupling unknown" in result.stdout
    page = (tmp_path / "out" / "baseline.html").read_text()
    assert page.count("data:image/png;base64,") == 2  # traffic and latency figures, inline
    md = (tmp_path / "out" / "baseline.md").read_text()
    assert "`GET /api/orders/{id}`" in md and "coupling unknown (no spans)" in md

    b = build_baseline(capture)
    assert b.total == 700 and not b.has_spans
    by = b.endpoints.set_index("endpoint")
    assert by.loc["GET /api/orders/{id}", "requests"] == 300
    assert abs(by.loc["POST /api/checkout", "share"] - 100 / 700) < 1e-9
    assert 150 < by.loc["POST /api/checkout", "p50"] < 260 and by.loc["GET /api/catalog/{id}", "p99"] > 20
    clusters = b.clusters
    # one cluster per (endpoint, status, masked text): all timeouts together, all pool errors together
    assert set(clusters["endpoint"]) == {"POST /api/checkout"}
    assert sorted(clusters["status"]) == ["503", "—"]
    assert clusters["count"].sum() == by.loc["POST /api/checkout", "errors"]
    assert "timeout after <n>s" in set(clusters["error"])
    # the failing endpoint ranks last and is told to fix its errors first
    assert b.candidates[-1].endpoint == "POST /api/checkout"
    assert "fix its errors before extracting" in b.candidates[-1].reason


def test_baseline_with_spans_ranks_the_less_coupled_endpoint_first(tmp_path: Path) -> None:
    capture = write_primary_capture(tmp_path / "cap")

    def children(_role: str, endpoint: str) -> dict[tuple[str, str], float]:
        if endpoint == "/api/orders/{id}":  # a db, the payments service and the users service
            return {("SELECT orders", "postgres"): 5.0, ("GET /payments", "payments"): 10.0,
                    ("GET /users", "users"): 5.0}
        return {("SELECT catalog", "postgres"): 5.0}

    write_spans(capture, children)
    b = build_baseline(capture)
    assert b.has_spans
    coupling = b.coupling.set_index("endpoint")
    assert coupling.loc["GET /api/orders/{id}", "median_services"] == 2  # payments, users (postgres is a db)
    assert coupling.loc["GET /api/orders/{id}", "median_db_spans"] == 1
    assert coupling.loc["GET /api/catalog/{id}", "services_seen"] == "postgres"
    ranked = [c.endpoint for c in b.candidates]
    assert ranked.index("GET /api/catalog/{id}") < ranked.index("GET /api/orders/{id}")
    assert "touches 0 other service(s) and 1 db span(s)" in b.candidates[0].reason
    assert '{"error": "db pool exhausted (<n> waiting)"}' in set(b.clusters["error"])  # the 503 body, decoded
    assert "postgres" in render_markdown(b) or "touches" in render_markdown(b)


def test_empty_and_malformed_captures_are_one_line_errors(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    (empty / "exchanges").mkdir(parents=True)
    result = shadow_cli("baseline", str(empty))
    assert result.returncode == 2 and result.stderr.startswith("error: ") and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    bad = tmp_path / "bad"
    (bad / "exchanges" / "dt=2026-11-26" / "hour=06").mkdir(parents=True)
    (bad / "exchanges" / "dt=2026-11-26" / "hour=06" / "part-0.parquet").write_bytes(b"not parquet")
    result = shadow_cli("baseline", str(bad))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    missing = shadow_cli("baseline", str(tmp_path / "nope"))
    assert missing.returncode == 2 and "not found" in missing.stderr


def test_health_checks_and_static_files_are_no_extraction_candidates() -> None:
    import pandas as pd

    from analyzers.baseline import infrastructure_reason, rank_candidates

    assert infrastructure_reason("GET /health") == "a health or metrics check"
    assert infrastructure_reason("GET /api/v1/readyz") == "a health or metrics check"
    assert infrastructure_reason("GET /static/app.js") == "a static file"
    assert infrastructure_reason("GET /api/orders/{id}") is None and infrastructure_reason("/api/status-codes") is None
    endpoints = pd.DataFrame({"endpoint": ["GET /health", "GET /api/orders/{id}", "GET /favicon.ico"],
                              "share": [0.5, 0.3, 0.2], "error_share": [0.0, 0.0, 0.0], "p95": [1.0, 40.0, 2.0]})
    ranked = rank_candidates(endpoints, pd.DataFrame())
    assert [c.endpoint for c in ranked] == ["GET /api/orders/{id}", "GET /favicon.ico", "GET /health"]
    assert ranked[-1].score == 0.0 and ranked[-1].reason.startswith("a health or metrics check: nothing to extract")
