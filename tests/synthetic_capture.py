"""Small synthetic captures for the analyzer tests, written with pyarrow in the EXCHANGES schema
and the gateway's Hive layout (CAPTURE/exchanges/dt=YYYY-MM-DD/hour=HH/part-*.parquet).

Each `EndpointTraffic` describes one endpoint: how many requests, mirrored (paired) or split
(unpaired), and how the candidate differs from the primary (latency factor, 5xx rate, transport
errors, a body field that changes). Everything is drawn from one seeded generator, so a test that
asks for "a clear regression" gets the same capture every run.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from shadow.capture.schema import EXCHANGES


@dataclass(frozen=True)
class EndpointTraffic:
    endpoint: str = "/api/items/{id}"
    n: int = 400
    mode: str = "mirror"  # mirror | replay (paired) or split (unpaired)
    candidate_service: str = "items-svc"
    latency_factor: float = 1.0  # candidate latency = primary latency × factor (× small noise)
    candidate_5xx_rate: float = 0.0
    candidate_transport_error_rate: float = 0.0
    changed_field_rate: float = 0.0  # share of pairs whose candidate body has a different "price"
    volatile_field: bool = False  # every body carries a fresh "request_ts" (noise, when a rule says so)
    clients: int = 0  # >0: client_key drawn from this many users (sticky units)
    names: int = 0  # >0: "{name}" in the endpoint is one of this many user names, and the captured
    # endpoint is the raw path (static templating cannot see that a name is a parameter)


def _body(item: int, price: float, ts: str | None) -> bytes:
    doc: dict[str, object] = {"id": item, "name": f"item-{item}", "price": price}
    if ts is not None:
        doc["request_ts"] = ts
    return json.dumps(doc, sort_keys=True).encode()


def _row(*, request_id: str, exchange_id: str, role: str, mode: str, service: str, endpoint: str,
         ts: datetime, latency_ms: float, item: int, status: int | None, body: bytes | None,
         error: str | None, client_key: str | None, name: str | None = None) -> dict[str, object]:
    path = endpoint.replace("{id}", str(item))
    if name is not None:
        path = path.replace("{name}", name)
        endpoint = path
    return {
        "request_id": request_id,
        "exchange_id": exchange_id,
        "role": role,
        "mode": mode,
        "service": service,
        "router": "items",
        "endpoint": endpoint,
        "ts": ts,
        "latency_ms": latency_ms,
        "method": "GET",
        "url": f"http://{service}.local{path}",
        "host": "shop.local",
        "path": path,
        "query": "",
        "upstream": f"http://{service}.local",
        "req_headers": [{"name": "accept", "value": "application/json"}],
        "req_body": b"",
        "status": status,
        "resp_headers": [] if status is None else [{"name": "content-type", "value": "application/json"}],
        "resp_body": body,
        "resp_content_type": None if status is None else "application/json",
        "body_hash": None if body is None else hashlib.sha256(body).hexdigest(),
        "body_size": None if body is None else len(body),
        "error": error,
        "trace_id": hashlib.md5(request_id.encode()).hexdigest(),
        "span_id": hashlib.md5(exchange_id.encode()).hexdigest()[:16],
        "client_key": client_key,
        "gateway": "gw-1",
        "truncated": False,
    }


def write_capture(capture_dir: Path, endpoints: list[EndpointTraffic], *, seed: int = 7,
                  primary_service: str = "monolith", start: datetime | None = None) -> Path:
    """Write the described traffic to `capture_dir`/exchanges and return `capture_dir`. Requests are
    0.5 s apart from `start` (default 2026-11-26 06:00 UTC), endpoint after endpoint."""
    rng = np.random.default_rng(seed)
    start = start or datetime(2026, 11, 26, 6, 0, tzinfo=UTC)
    by_hour: dict[tuple[str, str], list[dict[str, object]]] = {}
    counter = 0
    for spec in endpoints:
        # Heavy-tailed latency as in reference/statistics.md: mostly ~40 ms, a 3 % slow mode.
        slow = rng.random(spec.n) < 0.03
        base = np.where(slow, rng.lognormal(np.log(300), 0.3, spec.n), rng.lognormal(np.log(40), 0.5, spec.n))
        for i in range(spec.n):
            counter += 1
            rid = f"req-{counter:06d}"
            ts = start + timedelta(seconds=counter * 0.5)
            item = int(rng.integers(1, 50))
            price = float(item) * 1.5
            client = f"user-{int(rng.integers(0, spec.clients))}" if spec.clients else None
            name = f"user{int(rng.integers(0, spec.names))}" if spec.names else None
            p_lat = float(np.round(base[i]))
            c_lat = float(np.round(base[i] * spec.latency_factor * rng.lognormal(0.0, 0.05)))
            c_5xx = rng.random() < spec.candidate_5xx_rate
            c_err = rng.random() < spec.candidate_transport_error_rate
            c_price = price + 1.0 if rng.random() < spec.changed_field_rate else price
            p_ts = ts.isoformat() if spec.volatile_field else None
            c_ts = (ts + timedelta(milliseconds=3)).isoformat() if spec.volatile_field else None
            p_body = _body(item, price, p_ts)
            if c_err:
                c_status, c_body, c_error = None, None, "connection reset by peer"
            elif c_5xx:
                c_status, c_body, c_error = 503, b'{"error": "unavailable"}', None
            else:
                c_status, c_body, c_error = 200, _body(item, c_price, c_ts), None
            rows: list[dict[str, object]] = []
            if spec.mode == "split":
                # One request, one server: who answers is the split's choice.
                to_candidate = rng.random() < 0.5
                if to_candidate:
                    rows.append(_row(request_id=rid, exchange_id=rid + "-c", role="candidate",
                                     mode="split", service=spec.candidate_service, endpoint=spec.endpoint,
                                     ts=ts, latency_ms=c_lat, item=item, status=c_status, body=c_body,
                                     error=c_error, client_key=client, name=name))
                else:
                    rows.append(_row(request_id=rid, exchange_id=rid + "-p", role="primary", mode="split",
                                     service=primary_service, endpoint=spec.endpoint, ts=ts,
                                     latency_ms=p_lat, item=item, status=200, body=p_body, error=None,
                                     client_key=client, name=name))
            else:
                rows.append(_row(request_id=rid, exchange_id=rid + "-p", role="primary", mode=spec.mode,
                                 service=primary_service, endpoint=spec.endpoint, ts=ts, latency_ms=p_lat,
                                 item=item, status=200, body=p_body, error=None, client_key=client,
                                 name=name))
                rows.append(_row(request_id=rid, exchange_id=rid + "-c", role="candidate", mode=spec.mode,
                                 service=spec.candidate_service, endpoint=spec.endpoint, ts=ts,
                                 latency_ms=c_lat, item=item, status=c_status, body=c_body, error=c_error,
                                 client_key=client, name=name))
            key = (ts.strftime("%Y-%m-%d"), ts.strftime("%H"))
            by_hour.setdefault(key, []).extend(rows)
    for (dt, hour), rows in by_hour.items():
        folder = capture_dir / "exchanges" / f"dt={dt}" / f"hour={hour}"
        folder.mkdir(parents=True, exist_ok=True)
        table = pa.Table.from_pylist(rows, schema=EXCHANGES)
        pq.write_table(table, folder / "part-00000.parquet")
    return capture_dir
