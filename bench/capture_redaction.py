"""What default redaction costs per row (python bench/capture_redaction.py [--rows N]).

`prepare_exchange` (decode, redact, hash, truncate: the capture process's per-row work) on ≈ 2 KB
JSON responses, side by side in one run: with the default secret names (`shadow.redaction` absent)
and with `defaults: false` (only Authorization / Cookie / Set-Cookie, what the capture did before
session 7), for a body with no secret key (its keys are listed and known harmless: not parsed), one
that mentions secret words in a value only (not parsed either) and one with a secret key (parsed,
walked, redacted).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from shadow.capture.settings import CaptureSettings, RedactionSettings
from shadow.capture.writer import prepare_exchange

KEY = b"k" * 32


def row(body: bytes) -> dict[str, Any]:
    return {"request_id": "r", "method": "GET", "status": 200, "url": "http://h/api/orders/1?page=2&sort=asc",
            "path": "/api/orders/1", "query": "page=2&sort=asc",
            "req_headers": [(b"Host", b"h"), (b"Accept", b"*/*"), (b"Authorization", b"Bearer abc")],
            "resp_headers": [(b"Content-Type", b"application/json"), (b"X-Request-Id", b"1")], "resp_body": body}


def bodies() -> dict[str, bytes]:
    items = [{"sku": f"A{i}", "name": "widget", "qty": i, "price": 3.5} for i in range(25)]
    return {
        "no secret name": orjson.dumps({"id": 1, "items": items, "customer": {"name": "ada"}}),
        "secret words in a value": orjson.dumps({"id": 1, "items": items, "note": "see the token page"}),
        "a secret key": orjson.dumps({"id": 1, "items": items, "customer": {"password": "hunter2"}}),
    }


def per_row_us(settings: CaptureSettings, r: dict[str, Any], n: int) -> float:
    for _ in range(min(200, n)):
        prepare_exchange(r, settings, KEY)
    best = float("inf")
    for _ in range(3):  # best of 3: the machine is shared
        t = time.perf_counter()
        for _ in range(n):
            prepare_exchange(r, settings, KEY)
        best = min(best, (time.perf_counter() - t) / n * 1e6)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=5000)
    args = ap.parse_args()
    defaults = CaptureSettings(redaction=RedactionSettings(key=KEY))
    bare = CaptureSettings(redaction=RedactionSettings(key=KEY, defaults=False))
    print(f"{'response body':26s} {'defaults: false':>16s} {'default names':>14s}  ratio")
    for name, body in bodies().items():
        r = row(body)
        a, b = per_row_us(bare, r, args.rows), per_row_us(defaults, r, args.rows)
        print(f"{name + f' ({len(body)} B)':26s} {a:13.1f} µs {b:11.1f} µs  {b / a:5.2f}")


if __name__ == "__main__":
    main()
