"""Two versions of the gateway side by side: this checkout's against another tree's, interleaved per round.

    git archive a1b01e0 addons shadow | tar -x -C /tmp/gateway-before
    .venv/bin/python bench/gateway_ab.py --before /tmp/gateway-before --modes bare,pass,mirror --rounds 6

Each round runs bare mitmdump once, then every other mode twice: with `--before`'s addons/ and
shadow/ (PYTHONPATH and the `-s` script point there) and with this checkout's, the order of the two
alternating between rounds. Same upstreams, same load generator, same configurations and figures as
bench/gateway.py (whose functions run the modes). On a shared 2-core machine a single mode's CPU
per request swings by ±20 % between rounds, so what this prints is paired per round: each version
against bare, and after against before (median of the per-round ratios). For telemetry modes the
OTLP receiver is shared by both versions; `pass+tel` etc. are compared with their base modes.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import gateway as bench  # bench/gateway.py

VERSIONS = ("before", "after")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", type=Path, required=True,
                        help="a tree with the other version's addons/ and shadow/ (e.g. from git archive)")
    parser.add_argument("--modes", default="bare,pass,mirror", help="modes of bench/gateway.py")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    before = args.before.resolve()
    if not (before / "addons" / "gateway.py").is_file():
        parser.error(f"--before {before}: no addons/gateway.py there")
    modes = [m for m in args.modes.split(",") if m]
    unknown = [m for m in modes if m not in bench.MODES]
    if unknown:
        parser.error(f"unknown modes: {', '.join(unknown)}")

    version = {"now": "after"}
    popen = subprocess.Popen

    def versioned_popen(cmd: Any, *a: Any, **kw: Any) -> Any:
        # The gateway's mitmdump of the "before" version: its script, its packages first on the path.
        if version["now"] == "before" and isinstance(cmd, list) and "-s" in cmd:
            cmd = list(cmd)
            cmd[cmd.index("-s") + 1] = str(before / "addons" / "gateway.py")
            kw["env"] = {**os.environ, "PYTHONPATH": str(before)}
        return popen(cmd, *a, **kw)

    bench.subprocess.Popen = versioned_popen  # type: ignore[misc,assignment]
    load = argparse.Namespace(seconds=args.seconds, concurrency=args.concurrency, max_requests=50_000,
                              otlp_endpoint=None, pin=False, gc_stats=False, rate=None, sink_pid=None)
    upstreams = [bench.start_upstream(0), bench.start_upstream(0), bench.start_upstream(200)]
    primary, fast, late = (url for _p, url in upstreams)
    otlp_dir = tempfile.TemporaryDirectory(prefix="bench-otlp-")
    if any(m in bench.TELEMETRY_MODES for m in modes):
        receiver, load.otlp_endpoint = bench.start_otlp_receiver(Path(otlp_dir.name))
        upstreams.append((receiver, load.otlp_endpoint))
    results: dict[tuple[str, str], list[Any]] = {}
    try:
        with tempfile.TemporaryDirectory(prefix="bench-gateway-ab-") as tmp:
            for rnd in range(args.rounds):
                for mode in modes:
                    order = ("after",) if mode == "bare" else VERSIONS if rnd % 2 == 0 else VERSIONS[::-1]
                    for which in order:
                        version["now"] = which
                        [r] = bench.run_modes([mode], primary, {"fast": fast, "late": late}, load, Path(tmp))
                        results.setdefault((mode, which), []).append(r)
                        label = "" if mode == "bare" else which
                        check = ""
                        if mode in ("mirror", "mirror-thread", "mirror-late", "mirror+tel"):
                            # 100 % mirrored: every served request's copy is captured or counted as shed
                            shed = r.counters.get("mirror_shed", 0)
                            ok = r.captured_primaries == r.captured_candidates + shed
                            check = (f"  mirrored {r.captured_primaries} = {r.captured_candidates} + {shed}"
                                     f"{' ok' if ok else ' MISMATCH'}")
                        print(f"round {rnd + 1} {mode:11s} {label:6s} {r.rps:6.0f} req/s  "
                              f"p50 {bench.pct(r.latencies_ms, .5):6.2f} ms  proxy CPU {r.cpu_us_per_request:5.0f} us/req"
                              f"  errors {r.errors}{check}", flush=True)
    finally:
        for proc, _url in upstreams:
            bench.stop(proc, bench.signal.SIGTERM)

    def paired(a: list[Any], b: list[Any]) -> tuple[float, float]:
        """(median of a/b req/s, median of b/a CPU per request) over rounds."""
        return (statistics.median(x.rps / y.rps for x, y in zip(a, b, strict=True)),
                statistics.median(y.cpu_us_per_request / x.cpu_us_per_request for x, y in zip(a, b, strict=True)))

    print(f"\nmachine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}; {args.rounds} rounds x "
          f"{args.seconds:g} s; ratios are medians of per-round ratios (CPU ratio: the other's CPU / this one's)\n")
    print("| mode | version | req/s | proxy CPU µs/req | vs bare: req/s | vs bare: CPU | after vs before: req/s | "
          "after vs before: CPU |")
    print("|---|---|---|---|---|---|---|---|")
    for mode in modes:
        for which in (("after",) if mode == "bare" else VERSIONS):
            rs = results[(mode, which)]
            row = [mode, "" if mode == "bare" else which, f"{statistics.median(r.rps for r in rs):.0f}",
                   f"{statistics.median(r.cpu_us_per_request for r in rs):.0f}"]
            if mode != "bare" and ("bare", "after") in results:
                row += [f"{x:.2f}" for x in paired(rs, results[("bare", "after")])]
            else:
                row += ["", ""]
            if which == "after" and mode != "bare":
                row += [f"{x:.2f}" for x in paired(rs, results[(mode, "before")])]
            else:
                row += ["", ""]
            print("| " + " | ".join(row) + " |")
    for mode, base in bench.TELEMETRY_BASE.items():
        for which in VERSIONS:
            if (mode, which) in results and (base, which) in results:
                rps, cpu = paired(results[(mode, which)], results[(base, which)])
                print(f"\n{mode} vs {base} ({which}): req/s {rps:.2f}, CPU {cpu:.2f} (target ≥ 0.90)")
    for which in VERSIONS:
        if ("mirror", which) in results and ("mirror-late", which) in results:
            c = bench.pct([x for r in results[("mirror", which)] for x in r.latencies_ms], .5)
            d = bench.pct([x for r in results[("mirror-late", which)] for x in r.latencies_ms], .5)
            print(f"\n(d) p50 / (c) p50 ({which}) = {d / c:.2f} (target ≤ 1.10)")


if __name__ == "__main__":
    main()
