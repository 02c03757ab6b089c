"""Gateway modes compared by the instructions they execute per request (valgrind's callgrind): a
count that, unlike CPU time, does not move with the machine's other load.

    .venv/bin/python bench/gateway_instructions.py [--modes pass+cap,pass+tel,mirror,mirror+tel]
                                                   [--requests 300] [--threads]

Each mode of bench/gateway.py (same configurations, upstreams and null OTLP sink) runs under
`valgrind --tool=callgrind` (about 50× slower: a few minutes per mode). After 30 warm-up requests
the counters are zeroed (`callgrind_control -z`), `--requests` requests are sent one at a time
10 ms apart, 1.5 s pass for mirror copies, capture and an export tick, and the counters are dumped
(`callgrind_control -d`). Printed: instructions per request of the proxy process (all its threads;
its capture process is a child and not counted), with `--threads` split by thread, and for each
telemetry mode its ratio to the mode without telemetry. Requests go one at a time, so nothing is
batched by load: per-export costs weigh more here than at a saturating load.

Needs valgrind (`apt-get install valgrind`); it is not part of `make test`.
"""

from __future__ import annotations

import argparse
import glob
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import gateway as bench  # bench/gateway.py: configurations, upstreams, process helpers


def totals(path: str) -> int:
    """The instruction total a callgrind output file records."""
    with open(path) as f:
        for line in f:
            if line.startswith(("totals:", "summary:")):
                return int(line.split()[1])
    raise RuntimeError(f"{path}: no totals line")


def measure(mode: str, requests: int, primary: str, fast: str, sink: str, root: Path,
            threads: bool) -> list[int]:
    """Instructions per thread of the proxy for `requests` requests (one entry without `threads`)."""
    import httpx

    capture = root / f"capture-{mode}"
    cfg = root / f"{mode}.yaml"
    cfg.write_text(bench.CONFIG.format(
        service="mirrored" if mode.startswith("mirror") else "mono", primary=primary, shadow=fast,
        capture=capture, capture_on="false" if mode in ("pass", "mirror-nocap") else "true", capture_mode="process"))
    if mode in bench.TELEMETRY_MODES:
        cfg.write_text(cfg.read_text().rstrip("\n") + "\n" + bench.TELEMETRY.format(endpoint=sink))
    port = bench.free_port()
    out = root / f"callgrind-{mode}.out"
    cmd = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
           *(["--separate-threads=yes"] if threads else []),
           *bench.mitmdump_command(cfg, reverse_target=primary, listen_host="127.0.0.1", listen_port=port,
                                   extra=("--set", "termlog_verbosity=warn"))]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        bench.wait_port(port, proc, timeout=600)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
            for i in range(30):
                client.get(f"/api/items/warm-{i}?q=1")
            time.sleep(2)
            subprocess.run(["callgrind_control", "-z", str(proc.pid)], check=True, capture_output=True)
            for i in range(requests):
                client.get(f"/api/items/{i}?q=1")
                time.sleep(0.01)
            time.sleep(1.5)
            subprocess.run(["callgrind_control", "-d", str(proc.pid)], check=True, capture_output=True)
    finally:
        bench.stop(proc, timeout=600)
    # The dump after zeroing is the file numbered .1 (per thread: .1-01, .1-02, ...).
    dumps = sorted(glob.glob(f"{out}.1*"))
    if not dumps:
        raise RuntimeError(f"{mode}: callgrind wrote no dump")
    return [totals(d) for d in dumps]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--modes", default="pass+cap,pass+tel,mirror,mirror+tel")
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--threads", action="store_true", help="print the count of each thread of the proxy")
    args = parser.parse_args()
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        parser.error("needs valgrind and callgrind_control (apt-get install valgrind)")
    modes = [m for m in args.modes.split(",") if m]
    unknown = [m for m in modes if m not in bench.MODES or m in ("bare", "bare-lean")]
    if unknown:
        parser.error(f"not a gateway mode of bench/gateway.py: {', '.join(unknown)}")
    upstreams = [bench.start_upstream(0), bench.start_upstream(0), bench.start_upstream(0)]
    (_p, primary), (_f, fast), (_s, sink) = upstreams
    per_request: dict[str, float] = {}
    try:
        with tempfile.TemporaryDirectory(prefix="bench-instructions-") as tmp:
            for mode in modes:
                counts = measure(mode, args.requests, primary, fast, sink, Path(tmp), args.threads)
                per_request[mode] = sum(counts) / args.requests
                split = ("  threads: " + ", ".join(f"{c / args.requests / 1e3:.0f}k" for c in counts if c > 1)
                         if args.threads else "")
                print(f"{mode:12s} {per_request[mode] / 1e6:6.3f} M instructions per request{split}", flush=True)
    finally:
        for proc, _url in upstreams:
            bench.stop(proc)
    for mode, base in bench.TELEMETRY_BASE.items():
        if mode in per_request and base in per_request:
            extra = per_request[mode] - per_request[base]
            print(f"\n{bench.LABELS[mode]}: {per_request[base] / per_request[mode]:.3f} of {bench.LABELS[base]} "
                  f"(instructions per request; telemetry adds {extra / 1e3:.0f}k, target ≥ 0.90)")


if __name__ == "__main__":
    main()
