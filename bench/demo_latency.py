"""How the gateway's measured latencies compare by role, side by side in one run of each setting.

    .venv/bin/python bench/demo_latency.py [--requests 1500] [--concurrency 1 2 8]

Runs `shadow demo` at each client concurrency and prints, for the mirrored GET endpoints, the
median and p95 latency the capture holds for the primary (the monolith, measured by the proxy from
the client's request), the secondary (the same monolith code in another process, measured by the
mirror client) and the candidate. primary/secondary should be ≈ 1.0 (same code, same machine):
anything above it is measurement bias in the primary path, which a latency verdict comparing
primary to candidate inherits. candidate/secondary is the seeded effect measured like-for-like.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from shadow.capture.store import open_store
from shadow.demo.run import format_table, run_demo


def latency_by_role(capture: Path) -> dict[tuple[str, str], tuple[float, float]]:
    with open_store(capture) as store:
        rows = store.sql(
            "SELECT endpoint, role, median(latency_ms), quantile_cont(latency_ms, 0.95) FROM exchanges "
            "WHERE method = 'GET' AND endpoint LIKE '/api/orders%' AND status < 500 GROUP BY ALL").fetchall()
    return {(ep, role): (p50, p95) for ep, role, p50, p95 in rows}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=1500)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 2, 8])
    args = parser.parse_args()
    table: list[tuple[str, ...]] = []
    with tempfile.TemporaryDirectory(prefix="bench-demo-") as tmp:
        for concurrency in args.concurrency:
            capture, _ = run_demo(Path(tmp) / f"c{concurrency}", requests=args.requests, concurrency=concurrency,
                                  max_seconds=300, keep_running=False, seed=2026, progress=False)
            lat = latency_by_role(capture)
            for endpoint in sorted({ep for ep, _ in lat}):
                p, s, c = (lat.get((endpoint, r), (float("nan"),) * 2) for r in ("primary", "secondary", "candidate"))
                table.append((str(concurrency), endpoint, f"{p[0]:.1f}/{s[0]:.1f}/{c[0]:.1f}",
                              f"{p[0] / s[0]:.2f}", f"{p[1] / s[1]:.2f}", f"{c[0] / s[0]:.2f}", f"{c[0] / p[0]:.2f}"))
    print()
    print("\n".join(format_table(("conc", "endpoint", "p50 ms p/s/c", "p50 p/s", "p95 p/s", "p50 c/s", "p50 c/p"),
                                 table)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
