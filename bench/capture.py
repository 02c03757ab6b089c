"""Capture throughput, measured side by side in one run (python bench/capture.py [--rows N]).

1. Event-loop cost of CaptureWriter.submit: µs per row while the writer thread runs concurrently
   (it shares the GIL, as it does inside mitmproxy).
2. End to end: rows/s from the first submit to the last row sealed in Parquet, with ~2 KB JSON
   bodies — full exchange preparation (decode, hash, redact, truncate) with a configured JSON field
   present in every body (the worst case: every body is parsed and walked), with no JSON fields
   configured, and with a `prepare` that passes rows through (journal + seal cost alone).
3. Baseline: a plain pyarrow ParquetWriter writing the same rows (Arrow conversion + zstd Parquet, no
   journal, no fsync, no crash safety).
4. A simulated event loop (~1 ms of Python work per request, as bare mitmdump spends here, then submit) with and without the
   writer thread running: what capture costs the proxy through the GIL.
5. How late a 0.5 ms timer on the event-loop thread wakes while the writer is busy, with the writer
   yielding the GIL after YIELD_AFTER_S of work (the default) and never.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import shadow.capture.writer as capture_module
from shadow.capture.schema import EXCHANGES
from shadow.capture.settings import CaptureSettings, RedactionSettings
from shadow.capture.writer import CaptureWriter


def make_rows(n: int) -> list[dict[str, Any]]:
    items = [{"id": i, "sku": f"SKU-{i:06d}", "name": "widget " * 3, "price": i * 1.25, "tags": ["a", "b"]}
             for i in range(22)]
    rows = []
    base = time.time_ns()
    for i in range(n):
        body = orjson.dumps({"order": i, "customer": {"id": i % 97, "email": f"u{i}@example.com",
                                                      "password": "hunter2"}, "items": items})
        rows.append({
            "request_id": f"r{i}", "exchange_id": f"e{i}", "role": "primary", "mode": "serve", "service": "mono",
            "ts": base + i * 1000, "latency_ms": 3.2, "method": "GET",
            "url": f"http://127.0.0.1:8080/api/orders/{i}?expand=items", "path": f"/api/orders/{i}",
            "query": "expand=items",
            "req_headers": [("Host", "shop"), ("Accept", "application/json"), ("Authorization", "Bearer abc.def.ghi"),
                            ("Cookie", "sid=abcdef; theme=dark")],
            "req_body": None, "status": 200,
            "resp_headers": [("Content-Type", "application/json"), ("Content-Length", str(len(body)))],
            "resp_body": body,
        })
    return rows


def bench_submit(rows: list[dict[str, Any]], root: Path) -> float:
    """The call itself, µs per row: the writer thread is held (its first prepare waits) so that the
    loop measures submit(), not the GIL sharing (measured separately by bench_event_loop_impact)."""
    import threading

    s = CaptureSettings(dir=root, max_queue=len(rows) + 2, redaction=RedactionSettings(key=b"k"))
    entered, release = threading.Event(), threading.Event()

    def held(row: dict[str, Any]) -> dict[str, Any]:
        entered.set()
        release.wait()
        return row

    w = CaptureWriter(s, gateway_id="bench-submit", prepare=held)
    w.submit(rows[0])
    entered.wait(5)
    t0 = time.perf_counter()
    for r in rows:
        w.submit(r)
    elapsed = time.perf_counter() - t0
    release.set()
    w.close()
    assert w.stats().sealed_rows == len(rows) + 1, w.stats()
    return elapsed / len(rows) * 1e6


PROXY_WORK_S = 0.001  # bare mitmdump here: ~540-840 req/s, i.e. 1.2-1.9 ms of event-loop work per request


def _calibrate_proxy_work(row: dict[str, Any]) -> int:
    """Iterations of `_proxy_work` that take PROXY_WORK_S on this machine, now."""
    t0 = time.perf_counter()
    _proxy_work(row, 200)
    per_iteration = (time.perf_counter() - t0) / 200
    return max(1, round(PROXY_WORK_S / per_iteration))


def _proxy_work(row: dict[str, Any], iterations: int) -> None:
    """Stand-in for the proxy's per-request Python work on its event loop (parse, route, respond)."""
    for _ in range(iterations):
        orjson.loads(orjson.dumps(row["req_headers"]))
        sorted(str(v) for v in row.values())


def bench_event_loop_impact(rows: list[dict[str, Any]], root: Path) -> tuple[float, float]:
    """Requests/s of a simulated event loop (~1 ms of work + one submit per request) without capture and
    with the writer thread running, which competes for the GIL. Returns (without, with)."""
    iterations = _calibrate_proxy_work(rows[0])
    sink: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    for r in rows:
        _proxy_work(r, iterations)
        sink.append(r)
    without = len(rows) / (time.perf_counter() - t0)
    s = CaptureSettings(dir=root, max_queue=len(rows) + 1,
                        redaction=RedactionSettings(key=b"k", json_fields=("password",)))
    w = CaptureWriter(s, gateway_id="bench-loop")
    t0 = time.perf_counter()
    for r in rows:
        _proxy_work(r, iterations)
        w.submit(r)
    with_capture = len(rows) / (time.perf_counter() - t0)
    w.close()
    return without, with_capture


def bench_wakeup_delay(rows: list[dict[str, Any]], root: Path, *, yield_after_s: float) -> tuple[float, float]:
    """How late a 0.5 ms timer on the event-loop thread gets the GIL back while the writer thread
    is busy: (p50, p99) in µs. `yield_after_s` sets shadow.capture.writer.YIELD_AFTER_S (huge = never yield)."""
    saved = capture_module.YIELD_AFTER_S
    capture_module.YIELD_AFTER_S = yield_after_s
    try:
        s = CaptureSettings(dir=root, max_queue=len(rows) + 1,
                            redaction=RedactionSettings(key=b"k", json_fields=("password",)))
        w = CaptureWriter(s, gateway_id=f"bench-wake-{yield_after_s:g}")
        late: list[float] = []
        for r in rows:
            w.submit(r)
            t0 = time.perf_counter()
            time.sleep(0.0005)
            late.append(time.perf_counter() - t0 - 0.0005)
        w.close()
    finally:
        capture_module.YIELD_AFTER_S = saved
    late.sort()
    return late[len(late) // 2] * 1e6, late[int(len(late) * 0.99)] * 1e6


def bench_end_to_end(rows: list[dict[str, Any]], root: Path, *, passthrough: bool,
                     json_fields: tuple[str, ...] = ("password",)) -> tuple[float, int]:
    s = CaptureSettings(dir=root, max_queue=len(rows) + 1,
                        redaction=RedactionSettings(key=b"k", json_fields=json_fields))

    def identity(row: dict[str, Any]) -> dict[str, Any]:
        return row

    w = CaptureWriter(s, gateway_id="bench-e2e", prepare=identity if passthrough else None)
    t0 = time.perf_counter()
    for r in rows:
        w.submit(r)
    w.close()
    elapsed = time.perf_counter() - t0
    st = w.stats()
    assert st.sealed_rows == len(rows), st
    return len(rows) / elapsed, st.segments


def bench_baseline(rows: list[dict[str, Any]], root: Path) -> float:
    t0 = time.perf_counter()
    with pq.ParquetWriter(root / "baseline.parquet", EXCHANGES, compression="zstd") as writer:
        for i in range(0, len(rows), 1000):
            writer.write_table(pa.Table.from_pylist(rows[i:i + 1000], schema=EXCHANGES), row_group_size=100_000)
    return len(rows) / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=50_000)
    args = ap.parse_args()
    rows = make_rows(args.rows)
    body = rows[0]["resp_body"]
    tmp = Path(tempfile.mkdtemp(prefix="shadow-bench-capture-"))
    try:
        submit_us = bench_submit(rows, tmp / "submit")
        e2e, segments = bench_end_to_end(rows, tmp / "e2e", passthrough=False)
        no_fields, _ = bench_end_to_end(rows, tmp / "nofields", passthrough=False, json_fields=())
        journal_only, _ = bench_end_to_end(rows, tmp / "pass", passthrough=True)
        baseline = bench_baseline(rows, tmp)
        loop_without, loop_with = bench_event_loop_impact(rows[: min(len(rows), 3_000)], tmp / "loop")
        wake_rows = rows[: min(len(rows), 4_000)]
        wake_never = bench_wakeup_delay(wake_rows, tmp / "wake0", yield_after_s=1e9)
        wake_yield = bench_wakeup_delay(wake_rows, tmp / "wake1", yield_after_s=capture_module.YIELD_AFTER_S)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"rows: {args.rows}, response body {len(body)} bytes (JSON)")
    print(f"submit (event-loop cost):            {submit_us:6.2f} µs/row  ({1e6 / submit_us:,.0f} rows/s)")
    print(f"end to end, prepare_exchange:        {e2e:10,.0f} rows/s sealed ({segments} files; a redacted JSON "
          "field in every body)")
    print(f"end to end, no JSON fields to redact:{no_fields:10,.0f} rows/s sealed (headers still redacted)")
    print(f"end to end, pass-through prepare:    {journal_only:10,.0f} rows/s sealed")
    print(f"baseline pyarrow ParquetWriter:      {baseline:10,.0f} rows/s")
    print(f"ratio end-to-end / baseline:         {e2e / baseline:10.2f}")
    print(f"simulated event loop, no capture:    {loop_without:10,.0f} req/s")
    print(f"simulated event loop, with capture:  {loop_with:10,.0f} req/s "
          f"(ratio {loop_with / loop_without:.2f}; the writer thread shares the GIL)")
    print(f"ratio pass-through / baseline:       {journal_only / baseline:10.2f}")
    print(f"event-loop timer lateness, writer never yields:  p50 {wake_never[0]:7.0f} µs  p99 {wake_never[1]:7.0f} µs")
    print(f"event-loop timer lateness, writer yields each {capture_module.YIELD_AFTER_S * 1e3:g} ms: "
          f"p50 {wake_yield[0]:5.0f} µs  p99 {wake_yield[1]:7.0f} µs")


if __name__ == "__main__":
    main()
