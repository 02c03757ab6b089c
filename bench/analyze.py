"""Benchmark: diff a capture of N mirrored pairs end to end, beside DeepDiff on a subset.

    .venv/bin/python bench/analyze.py                 # 1,000,000 pairs (≈ 2 KB JSON bodies)
    .venv/bin/python bench/analyze.py --pairs 50000   # a quick run

The capture is generated into a temporary folder (deleted afterwards unless --keep): 70 % of the
pairs have identical bodies, 20 % differ only in volatile fields (requestId, generatedAt — ignored by
rules), 10 % carry a real change (a price, and an added field) besides the volatile ones. Response
headers differ in Date and Server (ignored by default).

Printed, measured side by side in one run:
- compute_diffs end to end (DuckDB pairing + settling, per-pair diff in worker processes, Parquet
  out, second relational pass): wall time, pairs/s, peak RSS of the diffing process and its workers;
- the full pipeline (`analyzers.pipeline.analyze`: diffs + statistics + verdict) and the report
  rendering, when those modules are present;
- on a 10,000-pair subset (same mix), our per-pair function `diff_pair` vs DeepDiff 9 — raw, and
  DeepDiff given the same bytes-equal shortcut — in pairs/s and the ratio.
Generation and each measured stage run in their own subprocess, so peak-memory figures are not
polluted by the generator.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

RULES = [{"ignore": "**/requestId"}, {"ignore": "**/generatedAt"}]
CHUNK = 50_000


def _doc(i: int, rng: random.Random) -> dict[str, Any]:
    items = [{"sku": f"SKU-{(i * 7 + k) % 9973:05d}", "name": f"Widget model {k} of order {i % 977}",
              "qty": 1 + (i + k) % 5, "price": round(3.5 + ((i * 13 + k) % 400) / 7, 2),
              "tags": ["blue", "large"] if k % 2 else ["red"], "inStock": bool((i + k) % 3)}
             for k in range(14)]
    return {
        "requestId": f"{rng.getrandbits(64):016x}", "generatedAt": "2026-11-26T06:00:00.000Z",
        "order": {"id": i, "status": "shipped", "currency": "EUR",
                  "customer": {"id": 1000 + i % 5000, "name": f"Customer {i % 5000}", "tier": "gold"},
                  "items": items, "total": round(sum(it["price"] * it["qty"] for it in items), 2),
                  "notes": "Leave at the door. " * 3},
    }


def generate(root: Path, pairs: int, seed: int = 7) -> dict[str, Any]:
    import orjson
    import pyarrow as pa
    import pyarrow.parquet as pq

    from shadow.capture.canonical import body_hash
    from shadow.capture.schema import EXCHANGES

    rng = random.Random(seed)
    t0 = datetime(2026, 11, 26, 6, tzinfo=UTC)
    folder = root / "exchanges" / "dt=2026-11-26" / "hour=06"
    folder.mkdir(parents=True)
    sizes = 0
    kinds = {"identical": 0, "volatile": 0, "real": 0}
    for start in range(0, pairs, CHUNK):
        cols: dict[str, list[Any]] = {name: [] for name in EXCHANGES.names}
        for i in range(start, min(pairs, start + CHUNK)):
            doc = _doc(i, rng)
            p_body = orjson.dumps(doc)
            draw = rng.random()
            if draw < 0.70:
                c_body, kind = p_body, "identical"
            else:
                cand = dict(doc, requestId=f"{rng.getrandbits(64):016x}", generatedAt="2026-11-26T06:00:00.004Z")
                kind = "volatile"
                if draw >= 0.90:
                    order = dict(doc["order"])
                    items = [dict(it) for it in order["items"]]
                    items[3]["price"] = round(items[3]["price"] + 1, 2)
                    order["items"], order["giftWrap"] = items, True
                    cand["order"] = order
                    kind = "real"
                c_body = orjson.dumps(cand)
            kinds[kind] += 1
            sizes += len(p_body)
            p_hash = body_hash(p_body, "application/json")
            c_hash = p_hash if c_body is p_body else body_hash(c_body, "application/json")
            rid = f"req-{i:08d}"
            ts = t0 + timedelta(microseconds=i)
            for role, service, body, h, server in (("primary", "mono", p_body, p_hash, "mono/1.0"),
                                                   ("candidate", "orders-svc", c_body, c_hash, "orders/2.3")):
                row = {"request_id": rid, "exchange_id": f"{rid}-{role[0]}", "role": role, "mode": "mirror",
                       "service": service, "router": "orders", "endpoint": "/api/orders/{id}", "ts": ts,
                       "latency_ms": 5.0 + rng.random() * 20, "method": "GET",
                       "url": f"http://{service}/api/orders/{i}", "host": "shop", "path": f"/api/orders/{i}",
                       "query": "", "upstream": f"http://{service}", "req_headers": [], "req_body": b"",
                       "status": 200,
                       "resp_headers": [{"name": "Content-Type", "value": "application/json"},
                                        {"name": "Date", "value": f"Thu, 26 Nov 2026 06:00:{i % 60:02d} GMT"},
                                        {"name": "Server", "value": server}],
                       "resp_body": body, "resp_content_type": "application/json", "body_hash": h,
                       "body_size": len(body), "error": None, "trace_id": None, "span_id": None,
                       "client_key": f"u{i % 1000}", "gateway": "bench", "truncated": False}
                for k, v in row.items():
                    cols[k].append(v)
        n = len(cols["request_id"])
        for name in EXCHANGES.names:  # columns added to the schema later stay null
            if not cols[name]:
                cols[name] = [None] * n
        table = pa.table(cols, schema=EXCHANGES)
        pq.write_table(table, folder / f"part-{start // CHUNK:05d}.parquet", row_group_size=CHUNK)
    return {"pairs": pairs, "mean_body_bytes": sizes / max(pairs, 1), **kinds}


def _tree_memory(root: int) -> int:
    """Proportional set size (PSS) of `root` and all its descendants, from /proc: pages shared between
    the forkserver and its workers count once in total, not once per process as RSS would."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    children.setdefault(int(f.read().rsplit(")", 1)[1].split()[1]), []).append(int(entry))
            except OSError:
                pass
    total, stack = 0, [root]
    while stack:
        pid = stack.pop()
        try:
            with open(f"/proc/{pid}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Pss:"):
                        total += int(line.split()[1]) * 1024
                        break
        except OSError:
            pass
        stack += children.get(pid, [])
    return total


class PeakMemory:
    """Samples the whole process tree's PSS every 0.2 s (ru_maxrss misses forkserver workers)."""

    def __init__(self) -> None:
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, _tree_memory(os.getpid()))
            self._stop.wait(0.2)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _tree_memory(os.getpid()))


def _cpu() -> float:
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def stage_diff(root: Path, workers: int) -> dict[str, Any]:
    from analyzers.diffs_table import compute_diffs

    with PeakMemory() as mem:
        t = time.perf_counter()
        s = compute_diffs(root, RULES, progress=False, workers=workers)
        wall = time.perf_counter() - t
    return {"seconds": wall, "pairs": s.pairs, "pairs_per_s": s.pairs / wall, "equal": s.equal_pairs,
            "real": s.pairs_with_real_diffs, "rows": s.diff_rows, "noise_rows": s.noise_rows,
            "cpu_seconds": s.cpu_seconds, "worker_cpu_seconds": s.worker_cpu_seconds,
            "peak_rss_tree_mb": mem.peak / 2**20, "peak_rss_process_mb": s.peak_rss_mb, "workers": s.workers,
            "load_avg": os.getloadavg()[0]}


def stage_pipeline(root: Path) -> dict[str, Any]:
    try:
        from analyzers.pipeline import analyze
        from analyzers.policy import Policy
    except ImportError as e:
        return {"skipped": f"pipeline not importable: {e}"}
    from analyzers.rules import load_rules

    mem = PeakMemory().__enter__()
    t, c = time.perf_counter(), _cpu()
    result = analyze(root, Policy(), rules=load_rules(RULES), progress=False)
    analyzed = time.perf_counter() - t
    summary = result.diff_summary
    out: dict[str, Any] = {"analyze_seconds": analyzed, "analyze_cpu_seconds": _cpu() - c,
                           "of_which_diff_seconds": getattr(summary, "seconds", None),
                           "verdict": str(getattr(result.verdict, "overall", "?"))}
    try:
        from analyzers import report

        t = time.perf_counter()
        report.write_report(result, root / "report")
        out["report_seconds"] = time.perf_counter() - t
    except Exception as e:  # the report API may differ; say so rather than guess
        out["report_error"] = f"{type(e).__name__}: {e}"[:200]
    mem.__exit__()
    out["peak_rss_tree_mb"] = mem.peak / 2**20
    return out


def stage_deepdiff(root: Path, subset: int) -> dict[str, Any]:
    import duckdb
    import orjson
    from deepdiff import DeepDiff

    from analyzers.diff import ExchangeSide, diff_pair
    from analyzers.rules import load_rules

    con = duckdb.connect()
    src = f"read_parquet('{root}/exchanges/**/*.parquet', hive_partitioning=true, union_by_name=true)"
    rows = con.sql(f"""
        SELECT p.resp_body AS pb, c.resp_body AS cb, p.body_hash AS ph, c.body_hash AS ch
        FROM (SELECT * FROM {src} WHERE role='primary' ORDER BY request_id LIMIT {subset}) p
        JOIN {src} c ON c.request_id = p.request_id AND c.role = 'candidate'""").fetchall()
    rules = load_rules(RULES).for_endpoint("/api/orders/{id}")
    sides = [(ExchangeSide(200, [], pb, "application/json", ph), ExchangeSide(200, [], cb, "application/json", ch))
             for pb, cb, ph, ch in rows]
    # CPU time (one thread each): comparable even when other work shares the machine
    t = time.process_time()
    ours_real = sum(1 for p, c in sides if any(not d.noise for d in diff_pair(p, c, rules)))
    ours = time.process_time() - t
    # DeepDiff told to exclude the same volatile fields
    exclude = [r"root\['requestId'\]", r"root\['generatedAt'\]"]
    t = time.process_time()
    dd_real = sum(1 for pb, cb, _, _ in rows if DeepDiff(orjson.loads(pb), orjson.loads(cb), exclude_regex_paths=exclude))
    dd = time.process_time() - t
    t = time.process_time()
    dd_short = sum(1 for pb, cb, _, _ in rows
                   if pb != cb and DeepDiff(orjson.loads(pb), orjson.loads(cb), exclude_regex_paths=exclude))
    dd_s = time.process_time() - t
    n = len(rows)
    return {"pairs": n, "ours_pairs_per_s": n / ours, "deepdiff_pairs_per_s": n / dd,
            "deepdiff_shortcut_pairs_per_s": n / dd_s, "ratio": dd / ours, "ratio_vs_shortcut": dd_s / ours,
            "ours_real": ours_real, "deepdiff_real": dd_real, "deepdiff_shortcut_real": dd_short}


def _run_stage(name: str, root: Path, extra: list[str]) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--stage", name, "--dir", str(root), *extra]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        return {"error": proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"exit {proc.returncode}"}
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pairs", type=int, default=1_000_000)
    ap.add_argument("--subset", type=int, default=10_000, help="pairs for the DeepDiff comparison")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--keep", action="store_true", help="keep the generated capture")
    ap.add_argument("--capture", type=Path, help="use this capture (from an earlier --keep) instead of generating")
    ap.add_argument("--no-pipeline", action="store_true")
    ap.add_argument("--stage", help=argparse.SUPPRESS)
    ap.add_argument("--dir", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.stage:
        root = Path(args.dir)
        fn = {"generate": lambda: generate(root, args.pairs), "diff": lambda: stage_diff(root, args.workers),
              "pipeline": lambda: stage_pipeline(root), "deepdiff": lambda: stage_deepdiff(root, args.subset)}
        print(json.dumps(fn[args.stage]()))
        return
    tmp = Path(tempfile.mkdtemp(prefix="shadow-bench-"))
    root = args.capture or tmp / "capture"
    try:
        t = time.perf_counter()
        if args.capture:
            gen = {"pairs": "existing"}
        else:
            gen = _run_stage("generate", root, ["--pairs", str(args.pairs)])
        if "error" in gen:
            sys.exit(f"generating the capture failed: {gen['error']}")
        print(f"generated {gen.get('pairs')} pairs in {time.perf_counter() - t:.1f} s "
              f"(mean body {gen.get('mean_body_bytes', 0):.0f} B; identical {gen.get('identical')}, "
              f"volatile-only {gen.get('volatile')}, real {gen.get('real')}); "
              f"on disk {sum(f.stat().st_size for f in root.rglob('*.parquet')) / 2**20:.0f} MiB", flush=True)
        d = _run_stage("diff", root, ["--workers", str(args.workers)])
        if "error" in d:
            print("compute_diffs failed:", d["error"])
        else:
            print(f"compute_diffs: {d['pairs']} pairs in {d['seconds']:.1f} s wall = {d['pairs_per_s']:,.0f} pairs/s "
                  f"({d['workers']} workers, load average {d['load_avg']:.1f}); CPU {d['cpu_seconds']:.1f} s "
                  f"(workers {d['worker_cpu_seconds']:.1f} s) → {d['pairs'] / max(d['cpu_seconds'], 1e-9):,.0f} "
                  f"pairs per CPU-second; equal {d['equal']}, real {d['real']}, diff rows {d['rows']} "
                  f"({d['noise_rows']} noise); peak memory of the process tree (PSS) {d['peak_rss_tree_mb']:.0f} MiB "
                  f"(largest single-process RSS {d['peak_rss_process_mb']:.0f} MiB)", flush=True)
        if not args.no_pipeline:
            p = _run_stage("pipeline", root, [])
            print("pipeline (diffs + statistics + verdict):", json.dumps(p), flush=True)
        dd = _run_stage("deepdiff", root, ["--subset", str(min(args.subset, args.pairs))])
        if "error" in dd:
            print("deepdiff comparison failed:", dd["error"])
        else:
            print(f"subset of {dd['pairs']} pairs, CPU time of one core: diff_pair {dd['ours_pairs_per_s']:,.0f} pairs/s, "
                  f"DeepDiff {dd['deepdiff_pairs_per_s']:,.0f} pairs/s (ratio {dd['ratio']:.0f}×), DeepDiff with "
                  f"the bytes-equal shortcut {dd['deepdiff_shortcut_pairs_per_s']:,.0f} pairs/s "
                  f"(ratio {dd['ratio_vs_shortcut']:.0f}×); pairs with real diffs: ours {dd['ours_real']}, "
                  f"DeepDiff {dd['deepdiff_real']}")
            if "error" not in d:
                print(f"end to end (all stages, both cores) vs DeepDiff (one core): wall "
                      f"{d['pairs_per_s'] / dd['deepdiff_pairs_per_s']:.0f}×, per CPU-second "
                      f"{d['pairs'] / d['cpu_seconds'] / dd['deepdiff_pairs_per_s']:.0f}×")
    finally:
        if args.keep or args.capture:
            print("capture kept at", root)
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)  # with --capture: only the unused temporary folder


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    main()
