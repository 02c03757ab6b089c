"""Gateway workers, side by side in one run: `shadow gateway --workers N` for N = 1, 2, 4.

    .venv/bin/python bench/workers.py [--seconds 8] [--concurrency 32] [--rounds 2] [--workers 1,2,4]

Two configurations, each against the same fast loopback upstream(s) (aiohttp servers in their own
processes, from bench/gateway.py):
  pass    catch-all router, capture off
  mirror  mirroring 100 % to a fast shadow, capture on (its own process per worker, the default)
Every (configuration, N) runs interleaved for `--rounds` rounds, so drift on a shared machine hits
them all alike. The load generator (bench/gateway.py's aiohttp client, `--concurrency` keep-alive
connections, bounded by `--seconds` and `--max-requests`) runs on the same machine: on a 2-core
machine it, the upstreams and the workers share the cores, so the ratio measures what workers gain
on this machine, not the ceiling of the design. Prints throughput per mode and its ratio to N = 1.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from gateway import CONFIG, Result, free_port, load, start_upstream, stop  # bench/gateway.py

REPO = Path(__file__).resolve().parent.parent


def start_gateway(config: Path, workers: int, log: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    out = log.open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "shadow.cli", "gateway", str(config), "--listen",
                             f"127.0.0.1:{port}", "--workers", str(workers)], stdout=out, stderr=subprocess.STDOUT,
                            cwd=REPO)
    deadline = time.monotonic() + 60
    while log.read_text(errors="replace").count(" listening at ") < workers:
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"gateway with {workers} workers did not start:\n{log.read_text(errors='replace')}")
        time.sleep(0.1)
    return proc, f"http://127.0.0.1:{port}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--max-requests", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--workers", default="1,2,4", help="comma-separated worker counts")
    parser.add_argument("--configs", default="pass,mirror", help="pass, mirror or both")
    args = parser.parse_args()
    counts = [int(n) for n in args.workers.split(",")]
    configs = args.configs.split(",")

    primary_proc, primary = start_upstream(0)
    shadow_proc, shadow = start_upstream(0)
    results: dict[tuple[str, int], Result] = {(c, n): Result(f"{c} x{n}") for c in configs for n in counts}
    try:
        with tempfile.TemporaryDirectory(prefix="shadow-bench-workers-") as tmp:
            root = Path(tmp)
            for rnd in range(args.rounds):
                for config_name in configs:
                    for n in counts:
                        run = root / f"{config_name}-{n}-{rnd}"
                        run.mkdir()
                        cfg = run / "gw.yaml"
                        cfg.write_text(CONFIG.format(
                            service="mono" if config_name == "pass" else "mirrored", primary=primary, shadow=shadow,
                            capture=run / "capture", capture_on="false" if config_name == "pass" else "true",
                            capture_mode="process"))
                        proc, url = start_gateway(cfg, n, run / "gateway.log")
                        result = results[(config_name, n)]
                        try:
                            asyncio.run(load(url, args.seconds, args.concurrency, args.max_requests, result))
                        finally:
                            stop(proc, signal.SIGTERM)
                        print(f"round {rnd + 1}: {config_name:6s} workers={n}: "
                              f"{result.requests / max(result.seconds, 1e-9):8.0f} req/s cumulative "
                              f"({result.errors} errors)", flush=True)
    finally:
        stop(primary_proc)
        stop(shadow_proc)

    print(f"\n{'mode':8s} {'workers':>7s} {'req/s':>8s} {'vs 1':>6s} {'errors':>6s}")
    for config_name in configs:
        base = results[(config_name, counts[0])].rps
        for n in counts:
            r = results[(config_name, n)]
            print(f"{config_name:8s} {n:7d} {r.rps:8.0f} {r.rps / base if base else float('nan'):6.2f} {r.errors:6d}")


if __name__ == "__main__":
    main()
