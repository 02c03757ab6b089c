"""Spans for a synthetic capture: for every exchange, the upstream's server span under the exchange's
span_id, and child spans whose durations a test chooses per role (primary/candidate)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from shadow.capture.schema import SPANS

# (span name, service name) → duration in ms, given the exchange's role and endpoint
ChildSpans = Callable[[str, str], dict[tuple[str, str], float]]


def write_spans(capture: Path, children: ChildSpans, *, duplicate_every: int = 0) -> int:
    """Write CAPTURE/spans/part-0.parquet for the capture's exchanges; returns the number of span rows.
    `duplicate_every` > 0 writes every n-th span twice (an exporter retry)."""
    con = duckdb.connect()
    exchanges = con.execute(
        f"SELECT role, endpoint, service, trace_id, span_id, epoch_ns(ts) AS ts FROM read_parquet("
        f"'{capture}/exchanges/**/*.parquet', hive_partitioning=true, union_by_name=true)").fetchall()
    rows: list[dict[str, object]] = []
    counter = 0
    for role, endpoint, service, trace_id, span_id, ts in exchanges:
        kids = children(role, endpoint)
        total = sum(kids.values()) + 1.0
        counter += 1
        server_id = f"{counter:016x}"
        rows.append(_span(trace_id, server_id, span_id, f"{service} handle", service, ts, total, "server"))
        start = ts
        for (name, svc), ms in kids.items():
            counter += 1
            span = _span(trace_id, f"{counter:016x}", server_id, name, svc, start, ms, "client")
            if svc == "postgres":
                span["attributes"] = '{"db.system": "postgresql"}'
            rows.append(span)
            start += int(ms * 1e6)
    if duplicate_every:
        rows += rows[::duplicate_every]
    folder = capture / "spans"
    folder.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=SPANS), folder / "part-0.parquet")
    return len(rows)


def _span(trace_id: str, span_id: str, parent: str | None, name: str, service: str, start_ns: int, ms: float,
          kind: str) -> dict[str, object]:
    end = start_ns + int(ms * 1e6)
    return {"trace_id": trace_id, "span_id": span_id, "parent_span_id": parent, "name": name, "kind": kind,
            "service_name": service, "start_ts": start_ns, "end_ts": end, "duration_ms": ms,
            "status_code": "unset", "status_message": None, "attributes": "{}", "resource_attributes": "{}",
            "scope_name": "test", "ts": start_ns, "received_ts": start_ns}
