"""Regenerate everything in data/: the sample capture and the recorded traffic.

    .venv/bin/python data/regenerate.py                      # all of it (~20 s on an idle machine)
    .venv/bin/python data/regenerate.py --only capture       # data/demo-capture/ only
    .venv/bin/python data/regenerate.py --only traffic       # data/traffic.flows + data/traffic.har only

demo-capture/: runs `shadow demo` (real services, real gateway) into a temporary folder and copies
the sealed capture here. The traffic plan and the data are seeded, so the rows, ids and bodies come
out the same every time; timestamps, latencies, the volatile fields and which list calls got a 500
differ from run to run. The redaction key is fixed (below) so redacted values are stable across
regenerations; the per-folder key file and the journal are not copied. Spans: the demo runs with
`--telemetry` (the OTLP receiver embedded in the gateway), so the gateway's spans — a server span
per client request, a client span per upstream call, mirrors included — and the services' own — a
server span per request and a span per database query (shadow/demo/tracing.py) — land in
CAPTURE/spans/ and are copied too (`--no-spans` leaves them out).

traffic.flows + traffic.har: the demo monolith behind a plain `mitmdump --mode reverse:URL -w FILE
--set hardump=FILE` (no shadow addon: a recording as a user would make one of their own traffic),
driven with the same seeded plan as the demo. `shadow replay` reads both.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
TARGET = HERE / "demo-capture"
FLOWS = HERE / "traffic.flows"
HAR = HERE / "traffic.har"
# Not a secret: it only makes redacted sample values reproducible. Real captures get their own key.
SAMPLE_REDACTION_KEY = "shadow-demo-sample-data"
MAX_SAMPLE_BYTES = 5_000_000
MAX_TRAFFIC_BYTES = 3_000_000  # flows + HAR together
TRAFFIC_REQUESTS = 200
# What of a capture folder belongs in the sample: the tables the notebooks and tests read, and the
# writers' counters. (The gateway's OTLP metrics, CAPTURE/metrics/, are left out to keep it small.)
SAMPLE_PARTS = ("exchanges", "spans", "_stats")


def copy_sealed(capture: Path, target: Path, parts: tuple[str, ...] = SAMPLE_PARTS) -> int:
    """Copy the sealed Parquet segments and stats under `parts` (nothing hidden, no journal, no key);
    return bytes copied."""
    copied = 0
    for src in sorted(capture.rglob("*")):
        rel = src.relative_to(capture)
        if not src.is_file() or rel.parts[0] not in parts:
            continue
        if any(part.startswith(".") or part == "_journal" for part in rel.parts):
            continue
        dst = target / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dst)
        copied += dst.stat().st_size
    return copied


def collect_spans(capture: Path) -> str:
    """One line on the spans the run left in CAPTURE/spans/ (copied with the capture)."""
    spans = capture / "spans"
    segments = sum(1 for p in spans.rglob("*.parquet") if not p.name.startswith(".")) if spans.is_dir() else 0
    if segments:
        return f"spans: {segments} sealed segment(s) copied with the capture"
    return "spans: none (run without telemetry, or the receiver sealed nothing)"


def regenerate_capture(requests: int, seed: int, *, spans: bool = True) -> int:
    from shadow.demo.run import CONFIG_NAME, run_demo, summarize_capture

    os.environ["SHADOW_REDACTION_KEY"] = SAMPLE_REDACTION_KEY  # inherited by the gateway
    with tempfile.TemporaryDirectory(prefix="shadow-sample-") as tmp:
        out = Path(tmp) / "demo"
        capture, interrupted = run_demo(out, requests=requests, concurrency=2, max_seconds=120,
                                        keep_running=False, seed=seed, progress=True,
                                        telemetry=spans)
        if interrupted:
            print("interrupted: data/demo-capture left as it was", file=sys.stderr)
            return 130
        spans_note = collect_spans(capture)
        staged = Path(tmp) / "staged"
        size = copy_sealed(capture, staged)
        if size > MAX_SAMPLE_BYTES:
            print(f"error: the sample is {size / 1e6:.1f} MB, over {MAX_SAMPLE_BYTES / 1e6:.0f} MB; "
                  "use fewer --requests", file=sys.stderr)
            return 1
        shutil.copyfile(out / CONFIG_NAME, staged / "gateway.yaml")
        if TARGET.exists():
            shutil.rmtree(TARGET)
        shutil.copytree(staged, TARGET)
    print(f"\nwrote {TARGET} ({size / 1e6:.1f} MB); {spans_note}\n")
    print(summarize_capture(TARGET))
    return 0


def recorder_argv(upstream: str, port: int, flows: Path, har: Path) -> list[str]:
    """A plain mitmdump in reverse mode in front of `upstream`, recording every flow to `flows` and,
    at shutdown, a HAR to `har` (mitmproxy's savehar addon)."""
    from shadow.cli.gateway import mitmdump_executable

    return [mitmdump_executable(), "--mode", f"reverse:{upstream}", "--listen-host", "127.0.0.1",
            "--listen-port", str(port), "-w", str(flows), "--set", f"hardump={har}",
            "--set", "flow_detail=0", "--set", "connection_strategy=lazy"]


def record_traffic(flows: Path, har: Path, *, requests: int, seed: int, work: Path) -> tuple[int, str]:
    """Record `requests` planned demo requests to the monolith through mitmdump; return the client's
    count of answers and a one-line summary."""
    from shadow.demo.processes import Supervisor, service_argv, wait_for_port
    from shadow.demo.run import free_port
    from shadow.demo.traffic import drive, plan_requests

    with Supervisor(work / "logs") as sup:
        monolith = sup.start_service("monolith", service_argv("monolith", "--name", "monolith"))
        port = free_port()
        recorder = sup.spawn("mitmdump", recorder_argv(monolith.url, port, flows, har))
        wait_for_port(recorder, "127.0.0.1", port)
        result = drive(f"http://127.0.0.1:{port}", plan_requests(requests, seed), concurrency=2,
                       max_seconds=60, progress=True)
        code = sup.stop(recorder, timeout_s=20)  # SIGTERM: mitmdump closes the flow file, writes the HAR
        if code != 0:
            raise recorder.failure(f"exited with code {code} when stopped; the recording may be incomplete")
    statuses = ", ".join(f"{s}: {n}" for s, n in sorted(result.statuses.items()))
    return result.sent, f"{result.sent} requests recorded ({statuses})"


def regenerate_traffic(requests: int, seed: int) -> int:
    with tempfile.TemporaryDirectory(prefix="shadow-traffic-") as tmp:
        work = Path(tmp)
        flows, har = work / FLOWS.name, work / HAR.name
        summary = record_traffic(flows, har, requests=requests, seed=seed, work=work)[1]
        if not flows.exists() or not har.exists():
            print(f"error: mitmdump left no {'flow file' if not flows.exists() else 'HAR'} "
                  f"(log: {work / 'logs' / 'mitmdump.log'})", file=sys.stderr)
            return 1
        size = flows.stat().st_size + har.stat().st_size
        if size > MAX_TRAFFIC_BYTES:
            print(f"error: the recordings are {size / 1e6:.1f} MB, over {MAX_TRAFFIC_BYTES / 1e6:.0f} MB; "
                  "use fewer --traffic-requests", file=sys.stderr)
            return 1
        shutil.copyfile(flows, FLOWS)
        shutil.copyfile(har, HAR)
    print(f"\nwrote {FLOWS} and {HAR} ({size / 1e6:.1f} MB): {summary}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=2000, help="client requests in the sample capture")
    parser.add_argument("--traffic-requests", type=int, default=TRAFFIC_REQUESTS,
                        help="requests in traffic.flows / traffic.har")
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--only", choices=("capture", "traffic"), help="regenerate just one part")
    parser.add_argument("--no-spans", action="store_true", help="capture without the gateway's telemetry")
    args = parser.parse_args(argv)

    sys.path.insert(0, str(HERE.parent))
    code = 0
    if args.only in (None, "capture"):
        code = regenerate_capture(args.requests, args.seed, spans=not args.no_spans)
    if code == 0 and args.only in (None, "traffic"):
        code = regenerate_traffic(args.traffic_requests, args.seed)
    return code


if __name__ == "__main__":
    sys.exit(main())
