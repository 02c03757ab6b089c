"""Gateway overhead, side by side in one run: bare mitmdump vs the shadow gateway.

    .venv/bin/python bench/gateway.py [--seconds 8] [--concurrency 16] [--rounds 2]

Modes, each against the same fast loopback upstream (an aiohttp server in its own process):
  (a) bare      mitmdump reverse mode (same lazy/quiet flags as the gateway), no addon
  (a') bare-lean  as (a) with addons/lean.py alone (mitmproxy's inert built-in addons out of event
                dispatch, as the gateway does): the gateway's own overhead is its ratio to (a')
  (b) pass      the gateway, catch-all router, capture off
  (b2) pass+cap the gateway, catch-all router, capture on
  (c0) mirror-nocap  the gateway mirroring 100 % to a fast shadow, capture off (isolates mirroring)
  (c1) mirror-thread  as (c), capture written by a thread of the proxy (shadow.capture.mode: thread)
  (c) mirror    the gateway mirroring 100 % to a fast shadow, capture on (in its own process, the default)
  (d) mirror-late  as (c), the shadow answering 200 ms late
  (m) chain     the gateway with a Traefik middleware chain (headers + rateLimit + retry), capture off
  (t) pass+tel / mirror+tel  as (b2) / (c), with the gateway's telemetry on (spans, metrics, logs over
      OTLP/HTTP, sampling 1.0; `--otlp-sink`: a null sink by default, or a `shadow otlp-receiver` in its
      own process on this machine); compare with (b2) / (c)
Prints throughput and client latency p50/p99 per mode and as a ratio to (a); for (c)/(d) checks
mirrored = captured + shed from the capture's counters. The load generator is an aiohttp client
with `--concurrency` keep-alive connections, bounded by `--seconds` and `--max-requests`.
Modes run interleaved for `--rounds` rounds so drift on a shared machine hits them all alike.

`--pin` puts the proxy's threads alone on CPU 0 and everything else (this load generator, the
upstreams, the OTLP sink, the proxy's capture process) on CPU 1.

`--side-by-side` runs each compared mode (telemetry, shifting) at the same time as its base, and
`--rate R` paces each proxy's load at R requests per second: both proxies then do the same work in
the same interval, and their CPU per request compares directly (at a rate well below saturation:
near it, the one answering faster batches less per event-loop iteration and pays more per request).
`--gc-stats` adds bench/gc_stats.py to every proxy and prints its garbage collections per request.
For a count that does not move with the machine at all, see bench/gateway_instructions.py.

Also printed: the proxy process's CPU time per request (all its threads, from /proc), which a busy
shared machine disturbs far less than throughput; for a proxy that saturates one core, bare CPU /
mode CPU is the throughput ratio it would reach on an idle machine. The CPU of the proxy's child
processes (the capture process) is printed separately: it runs on another core.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from shadow.cli.gateway import mitmdump_command, mitmdump_executable  # noqa: E402

BODY = json.dumps({"id": 42, "name": "widget", "price": 9.99, "tags": ["a", "b", "c"],
                   "description": "x" * 120}).encode()


# -- upstream (runs in a child process) ---------------------------------------------------------------

def serve(port: int, delay_ms: int) -> None:
    from aiohttp import web

    async def handle(request: web.Request) -> web.Response:
        await request.read()
        if delay_ms:
            await asyncio.sleep(delay_ms / 1000)
        return web.Response(body=BODY, content_type="application/json")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


# -- helpers ------------------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listening on {port}")


def start_upstream(delay_ms: int) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, __file__, "--serve", str(port), str(delay_ms)])
    wait_port(port, proc)
    return proc, f"http://127.0.0.1:{port}"


def stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGINT, timeout: float = 60.0) -> None:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


CONFIG = """
http:
  routers:
    all: {{rule: "PathPrefix(`/`)", service: {service}}}
  services:
    mono: {{loadBalancer: {{servers: [{{url: "{primary}"}}]}}}}
    shadow: {{loadBalancer: {{servers: [{{url: "{shadow}"}}]}}}}
    mirrored: {{mirroring: {{service: mono, mirrors: [{{name: shadow, percent: 100}}]}}}}
shadow:
  gateway: {{id: bench}}
  capture: {{dir: "{capture}", enabled: {capture_on}, mode: {capture_mode}}}
  mirroring: {{maxInFlight: 256, timeout: 5s}}
"""


@dataclass
class Result:
    mode: str
    requests: int = 0
    errors: int = 0
    seconds: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)
    counters: dict[str, int] = field(default_factory=dict)
    captured_candidates: int = 0
    captured_primaries: int = 0
    cpu_seconds: float = 0.0  # the proxy process's CPU (all threads) during the measured load
    child_cpu_seconds: float = 0.0  # its child processes' CPU (the capture process), same period
    sink_cpu_seconds: float = 0.0  # the OTLP sink's CPU (telemetry modes), same period
    gc: dict[str, Any] = field(default_factory=dict)  # --gc-stats: bench/gc_stats.py's figures

    @property
    def cpu_us_per_request(self) -> float:
        return self.cpu_seconds / self.requests * 1e6 if self.requests else float("nan")

    @property
    def child_cpu_us_per_request(self) -> float:
        return self.child_cpu_seconds / self.requests * 1e6 if self.requests else float("nan")

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


def process_cpu_seconds(pid: int) -> float:
    """utime + stime of a process, all threads (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


PROXY_CPU, OTHERS_CPU = 0, 1  # --pin: the proxy alone on one core, everything else on the other


def pin_process(pid: int, cpu: int) -> None:
    """Every thread of `pid` onto `cpu` (sched_setaffinity moves one thread at a time)."""
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            os.sched_setaffinity(int(task.name), {cpu})


def child_pids(pid: int) -> list[int]:
    """Live child processes of `pid` (the gateway's capture process)."""
    out: list[int] = []
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            out += [int(c) for c in (task / "children").read_text().split()]
    except OSError:
        pass
    return out


def children_cpu_seconds(pid: int) -> float:
    total = 0.0
    for child in child_pids(pid):
        with contextlib.suppress(OSError):
            total += process_cpu_seconds(child)
    return total


async def load(url: str, seconds: float, concurrency: int, max_requests: int, result: Result,
               pid: int | None = None, sink_pid: int | None = None, rate: float | None = None) -> None:
    """`rate`: requests per second, paced (request k is sent no earlier than k / rate after the start);
    None: as fast as `concurrency` connections go."""
    import aiohttp

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        # Warm up: connections open, first-flow imports done in mitmdump.
        # (retried: a just-started proxy occasionally drops the very first connection)
        for attempt in range(10):
            try:
                for _ in range(3):
                    async with session.get(url + "/warmup") as r:
                        await r.read()
                break
            except aiohttp.ClientError:
                if attempt == 9:
                    raise
                await asyncio.sleep(0.2)
        deadline = time.perf_counter() + seconds
        budget = [max_requests]
        sent = [0]

        async def worker(n: int) -> None:
            i = 0
            while time.perf_counter() < deadline and budget[0] > 0:
                budget[0] -= 1
                if rate:
                    due = started + sent[0] / rate
                    sent[0] += 1
                    if due > time.perf_counter():
                        await asyncio.sleep(due - time.perf_counter())
                t0 = time.perf_counter()
                try:
                    async with session.get(f"{url}/api/items/{n}-{i}?q=1", headers=REQUEST_HEADERS.get(result.mode)) as r:
                        await r.read()
                        ok = r.status == 200
                except aiohttp.ClientError:
                    ok = False
                result.latencies_ms.append((time.perf_counter() - t0) * 1000)
                result.requests += ok
                result.errors += not ok
                i += 1

        started = time.perf_counter()
        cpu0 = process_cpu_seconds(pid) if pid else 0.0
        child0 = children_cpu_seconds(pid) if pid else 0.0
        sink0 = process_cpu_seconds(sink_pid) if sink_pid else 0.0
        await asyncio.gather(*(worker(n) for n in range(concurrency)))
        result.seconds += time.perf_counter() - started
        if pid:
            result.cpu_seconds += process_cpu_seconds(pid) - cpu0
            result.child_cpu_seconds += children_cpu_seconds(pid) - child0
        if sink_pid:
            result.sink_cpu_seconds += process_cpu_seconds(sink_pid) - sink0


@dataclass
class Launched:
    """A proxy started for one mode, not yet loaded."""

    mode: str
    proc: subprocess.Popen[bytes]
    url: str
    capture: Path
    gc_file: Path


def launch(mode: str, primary: str, shadows: dict[str, str], args: argparse.Namespace, root: Path) -> Launched:
    port = free_port()
    capture = root / f"capture-{mode}-{time.monotonic_ns()}"
    gc_file = capture.with_name(capture.name + "-gc.json")
    gc_args = ("-s", str(REPO / "bench" / "gc_stats.py"), "--set", f"gc_stats_file={gc_file}") if args.gc_stats else ()
    if mode in ("bare", "bare-lean"):
        cmd = [mitmdump_executable(), "--mode", f"reverse:{primary}", "--listen-host", "127.0.0.1",
               "--listen-port", str(port), "--set", "connection_strategy=lazy", "--set", "keep_host_header=true",
               "--set", "flow_detail=0", "--set", "termlog_verbosity=warn"]
        if mode == "bare-lean":
            cmd += ["-s", str(REPO / "bench" / "lean_mitmdump.py")]
        cmd += gc_args
    else:
        cfg = root / f"{mode}-{time.monotonic_ns()}.yaml"
        cfg.write_text(CONFIG.format(
            service="mirrored" if mode.startswith("mirror") else "mono", primary=primary,
            shadow=shadows["late" if mode == "mirror-late" else "fast"], capture=capture,
            capture_on="false" if mode in ("pass", "mirror-nocap") else "true",
            capture_mode="thread" if mode == "mirror-thread" else "process"))
        if mode in TELEMETRY_MODES:  # `telemetry:` goes last in the shadow: section
            cfg.write_text(cfg.read_text().rstrip("\n") + "\n" + TELEMETRY.format(endpoint=args.otlp_endpoint))
        if mode in JWT_MODES:
            cfg.write_text(jwt_config(capture, primary))
        if mode in CHAIN_MODES:
            cfg.write_text(CHAIN_CONFIG.format(primary=primary, capture=capture))
        if mode in SHIFT_MODES:
            second = shadows["fast"] if mode == "shift-2up" else primary
            cfg.write_text(SHIFT_CONFIG.format(primary=primary, second=second, capture=capture))
        cmd = mitmdump_command(cfg, reverse_target=primary, listen_host="127.0.0.1", listen_port=port,
                               extra=("--set", "termlog_verbosity=warn", *gc_args))
    pin = (lambda: os.sched_setaffinity(0, {PROXY_CPU})) if args.pin else None
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=pin)
    try:
        wait_port(port, proc)
    except BaseException:
        stop(proc)
        raise
    if args.pin:  # the proxy's own child processes (the capture process) go with everything else
        for child in child_pids(proc.pid):
            pin_process(child, OTHERS_CPU)
    return Launched(mode, proc, f"http://127.0.0.1:{port}", capture, gc_file)


def finish(launched: Launched, result: Result) -> None:
    """Stop the proxy and read what it left: GC figures, capture counters and rows."""
    stop(launched.proc)
    if launched.gc_file.exists():
        result.gc = json.loads(launched.gc_file.read_text())
    capture = launched.capture
    stats = capture / "_stats" / "bench.json"
    if stats.exists():
        result.counters = json.loads(stats.read_text())
        import duckdb

        rows = duckdb.connect().execute(
            f"select role, count(*) from read_parquet('{capture}/exchanges/**/*.parquet', "
            "union_by_name=true, hive_partitioning=true) group by role").fetchall()
        by_role = dict(rows)
        result.captured_candidates = int(by_role.get("candidate", 0))
        result.captured_primaries = int(by_role.get("primary", 0))


def run_modes(modes: Sequence[str], primary: str, shadows: dict[str, str], args: argparse.Namespace,
              root: Path) -> list[Result]:
    """Start a proxy per mode, load them all at once (`--concurrency` connections each), stop them.
    One mode is the plain sequential bench; two run side by side on the same cores, so whatever
    slows the machine in that interval slows both."""
    results = [Result(mode) for mode in modes]
    started: list[Launched] = []
    try:
        for mode in modes:
            started.append(launch(mode, primary, shadows, args, root))

        async def load_all() -> None:
            await asyncio.gather(*(
                load(proxy.url, args.seconds, args.concurrency, args.max_requests, result, pid=proxy.proc.pid,
                     sink_pid=args.sink_pid if proxy.mode in TELEMETRY_MODES else None, rate=args.rate)
                for proxy, result in zip(started, results, strict=False)))

        asyncio.run(load_all())
    finally:
        for proxy, result in zip(started, results, strict=False):
            finish(proxy, result)
    return results


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


MODES: tuple[str, ...] = ("bare", "bare-lean", "pass", "pass+cap", "mirror-nocap", "mirror-thread", "mirror", "mirror-late")
LABELS = {"bare": "(a) bare mitmdump", "bare-lean": "(a') bare mitmdump, inert addons pruned", "pass": "(b) gateway pass-through", "pass+cap": "(b2) pass-through + capture",
          "mirror-nocap": "(c0) mirror 100 %, capture off",
          "mirror-thread": "(c1) as (c), capture in a thread (mode: thread)", "mirror": "(c) mirror 100 % + capture", "mirror-late": "(d) as (c), shadow +200 ms"}

# Telemetry on, otherwise identical to the mode it is compared with (TELEMETRY_BASE).
TELEMETRY_MODES = ("pass+tel", "mirror+tel")
TELEMETRY_BASE = {"pass+tel": "pass+cap", "mirror+tel": "mirror"}
MODES = (*MODES, *TELEMETRY_MODES)
LABELS.update({"pass+tel": "(t1) as (b2), telemetry on", "mirror+tel": "(t2) as (c), telemetry on"})
TELEMETRY = "  telemetry: {{endpoint: \"{endpoint}\", sampling: 1.0, exportInterval: 5s}}\n"


def start_otlp_receiver(root: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "shadow.cli", "otlp-receiver", "-o", str(root / "otlp"),
                             "--listen", f"127.0.0.1:{port}"], cwd=REPO, stderr=subprocess.DEVNULL)
    wait_port(port, proc)
    return proc, f"http://127.0.0.1:{port}"


# Traffic shifting on (weighted 50/50 + sticky cookie + circuit breaker that never trips), capture
# off: compare with (b) pass-through. aiohttp's default cookie jar ignores cookies from an IP host,
# so every request is a fresh WRR pick plus a Set-Cookie: the costlier path. (s) sends both children
# to the same upstream address: the gateway's own work. (s2) sends them to two upstream processes:
# consecutive requests of a kept-alive client connection then alternate upstreams, and mitmproxy
# opens a new server connection at each change (its server connection follows the client's).
SHIFT_MODES = ("shift", "shift-2up")
SHIFT_BASE = {"shift": "pass", "shift-2up": "pass"}
MODES = (*MODES, *SHIFT_MODES)
LABELS.update({"shift": "(s) weighted + sticky + breaker, capture off",
               "shift-2up": "(s2) as (s), the children on two upstreams"})
SHIFT_CONFIG = """
http:
  routers:
    all: {{rule: "PathPrefix(`/`)", service: split, middlewares: [breaker]}}
  services:
    split:
      weighted:
        services: [{{name: mono, weight: 1}}, {{name: next, weight: 1}}]
        sticky: {{cookie: {{name: lb, httpOnly: true}}}}
    mono: {{loadBalancer: {{servers: [{{url: "{primary}"}}]}}}}
    next: {{loadBalancer: {{servers: [{{url: "{second}"}}]}}}}
  middlewares:
    breaker: {{circuitBreaker: {{expression: "NetworkErrorRatio() > 0.5 || ResponseCodeRatio(500, 600, 0, 600) > 0.5"}}}}
shadow:
  gateway: {{id: bench}}
  capture: {{dir: "{capture}", enabled: false}}
  split: {{candidates: [next]}}
"""


# JWT middleware on (RS256, key cached: a static public key; a fetched JWKS is verified the same
# way once cached), claims forwarded as headers, capture off: compare with (b) pass-through.
JWT_MODES = ("jwt",)
MODES = (*MODES, *JWT_MODES)
LABELS.update({"jwt": "(j) jwt middleware (RS256, cached key) + forwardHeaders, capture off"})
REQUEST_HEADERS: dict[str, dict[str, str]] = {}


def jwt_config(capture: Path, primary: str) -> str:
    from joserfc import jwt
    from joserfc.jwk import RSAKey

    key = RSAKey.generate_key(2048, parameters={"kid": "bench"})
    claims = {"sub": "user-1", "plan": "beta", "iss": "https://idp.bench", "aud": "bench", "exp": int(time.time()) + 86400}
    REQUEST_HEADERS["jwt"] = {"Authorization": "Bearer " + jwt.encode({"alg": "RS256", "kid": "bench"}, claims, key)}
    pem = key.as_pem(private=False).decode().replace("\n", "\n          ")
    return f"""
http:
  routers:
    all: {{rule: "PathPrefix(`/`)", service: mono, middlewares: [auth]}}
  services:
    mono: {{loadBalancer: {{servers: [{{url: "{primary}"}}]}}}}
  middlewares:
    auth:
      jwt:
        issuer: https://idp.bench
        audience: bench
        forwardHeaders: {{X-User: sub, X-Plan: plan}}
        publicKey: |
          {pem}
shadow:
  capture: {{dir: "{capture}", enabled: false}}
"""


# Traefik middlewares (shadow/gateway/middlewares): a typical chain — headers, rateLimit (far above the
# load: every request takes the token path, none is refused) and retry (so every request is sent by
# addons/retry.py, not by mitmproxy) — against plain pass-through (b), capture off both.
CHAIN_MODES = ("chain",)
CHAIN_BASE = {"chain": "pass"}
MODES = (*MODES, *CHAIN_MODES)
LABELS.update({"chain": "(m) chain of headers + rateLimit + retry, capture off"})
CHAIN_CONFIG = """
http:
  routers:
    all: {{rule: "PathPrefix(`/`)", service: mono, middlewares: [edge]}}
  services:
    mono: {{loadBalancer: {{servers: [{{url: "{primary}"}}]}}}}
  middlewares:
    edge: {{chain: {{middlewares: [security-headers, limit, retry-twice]}}}}
    security-headers:
      headers:
        customRequestHeaders: {{X-Edge: "1"}}
        customResponseHeaders: {{X-Frame-Options: DENY}}
    limit: {{rateLimit: {{average: 1000000, burst: 100000}}}}
    retry-twice: {{retry: {{attempts: 3}}}}
shadow:
  gateway: {{id: bench}}
  capture: {{dir: "{capture}", enabled: false}}
"""


def print_round(rnd: int, r: Result) -> None:
    print(f"round {rnd + 1} {r.mode:12s} {r.rps:7.1f} req/s  p50 {pct(r.latencies_ms, .5):6.2f} ms  "
          f"p99 {pct(r.latencies_ms, .99):6.2f} ms  proxy CPU {r.cpu_us_per_request:6.0f} us/req  "
          f"(+ child processes {r.child_cpu_us_per_request:4.0f})  errors {r.errors}", flush=True)
    if r.gc and r.requests:
        gc_cpu = [ns / r.requests / 1000 for ns in r.gc["cpu_ns"]]
        print(f"         GC per request: {sum(gc_cpu):5.1f} us CPU (generations 0/1/2: "
              f"{gc_cpu[0]:.1f}/{gc_cpu[1]:.1f}/{gc_cpu[2]:.1f}), collections {r.gc['collections']}, "
              f"{sum(r.gc['collected']) / r.requests:.0f} objects freed, {r.gc['objects']} tracked at the end",
              flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=8.0, help="load duration per mode and round")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--max-requests", type=int, default=50_000, help="per mode and round")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--otlp-sink", choices=("null", "receiver"), default="null",
                        help="where telemetry modes export: a null sink answering 200 to everything (as a "
                             "collector on another machine, it costs this one next to nothing: the figure is "
                             "the gateway's own overhead), or `shadow otlp-receiver` on this machine (decodes "
                             "and writes Parquet, competing for the same cores)")
    parser.add_argument("--pin", action="store_true",
                        help="the proxy's threads alone on CPU 0; the load generator, upstreams, OTLP sink and the "
                             "proxy's capture process on CPU 1 (less scheduler noise between rounds)")
    parser.add_argument("--side-by-side", action="store_true",
                        help="run each compared mode (telemetry, shifting) at the same time as its base, each with "
                             "--concurrency connections, so the machine's drift hits both alike; the base modes "
                             "are then not run alone")
    parser.add_argument("--rate", type=float, default=None,
                        help="paced load: requests per second per proxy (default: as fast as the connections go). "
                             "With --side-by-side, both proxies then do the same work in the same interval and "
                             "their CPU per request compares directly")
    parser.add_argument("--gc-stats", action="store_true",
                        help="measure the proxy's garbage collections (bench/gc_stats.py) and print them per request")
    parser.add_argument("--serve", nargs=2, type=int, metavar=("PORT", "DELAY_MS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.sink_pid = None
    if args.serve:
        serve(*args.serve)
        return
    if args.pin:
        if len(os.sched_getaffinity(0)) < 2:
            parser.error("--pin needs two CPUs")
        os.sched_setaffinity(0, {OTHERS_CPU})  # this process (the load) and the upstreams and sink it starts
    modes = [m for m in args.modes.split(",") if m]
    upstreams = [start_upstream(0), start_upstream(0), start_upstream(200)]
    primary, fast, late = (url for _p, url in upstreams)
    otlp_dir = tempfile.TemporaryDirectory(prefix="bench-otlp-")
    if any(m in TELEMETRY_MODES for m in modes):
        receiver, args.otlp_endpoint = (start_otlp_receiver(Path(otlp_dir.name)) if args.otlp_sink == "receiver"
                                        else start_upstream(0))
        upstreams.append((receiver, args.otlp_endpoint))
        args.sink_pid = receiver.pid
    results: dict[str, list[Result]] = {m: [] for m in modes}
    # --side-by-side: each compared mode runs at once with its base; (mode, base) results per round.
    pairs: dict[str, list[tuple[Result, Result]]] = {}
    compared = {**TELEMETRY_BASE, **SHIFT_BASE, **CHAIN_BASE}
    groups: list[list[str]] = [[m] for m in modes]
    if args.side_by_side:
        groups = [[compared[m], m] if m in compared else [m] for m in modes if m not in compared.values()]
        modes = list(dict.fromkeys(m for g in groups for m in g))
        results = {m: [] for m in modes}
    try:
        with tempfile.TemporaryDirectory(prefix="bench-gateway-") as tmp:
            for rnd in range(args.rounds):
                for group in groups:
                    run = run_modes(group, primary, {"fast": fast, "late": late}, args, Path(tmp))
                    if len(group) == 2:
                        pairs.setdefault(group[1], []).append((run[1], run[0]))
                    for r in run:
                        if len(results[r.mode]) <= rnd:  # a base shared by two pairs: its first run
                            results[r.mode].append(r)
                        print_round(rnd, r)
    finally:
        for proc, _url in upstreams:
            stop(proc, signal.SIGTERM)

    def rps(mode: str) -> float:
        return statistics.median(r.rps for r in results[mode])

    def lat(mode: str, q: float) -> float:
        return pct([x for r in results[mode] for x in r.latencies_ms], q)

    def ratio(mode: str, base: str = "bare") -> float:
        """Median over rounds of (mode / base) in the same round: paired, so drift cancels."""
        if base not in results:
            return float("nan")
        return statistics.median(r.rps / b.rps for r, b in zip(results[mode], results[base], strict=True))

    print(f"\nmachine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}; concurrency "
          f"{args.concurrency}, {args.seconds:g} s x {args.rounds} rounds per mode (median req/s; ratio = median of per-round ratios; pooled latencies)\n")
    def cpu(mode: str) -> float:
        return statistics.median(r.cpu_us_per_request for r in results[mode])

    def cpu_ratio(mode: str) -> float:
        return cpu("bare") / cpu(mode) if "bare" in results else float("nan")

    def child_cpu(mode: str) -> float:
        return statistics.median(r.child_cpu_us_per_request for r in results[mode])

    print("| mode | req/s | vs (a) | vs (a') | p50 ms | p99 ms | proxy CPU µs/req | CPU-bound req/s vs (a) | "
          "capture process CPU µs/req | mirrored = captured + shed |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for mode in modes:
        check = ""
        if mode in ("mirror", "mirror-thread", "mirror-late"):
            parts = []
            for r in results[mode]:
                c = r.counters
                mirrored = r.captured_primaries  # 100 %: every served request should be mirrored
                shed = c.get("mirror_shed", 0)
                parts.append(f"{mirrored} = {r.captured_candidates} + {shed}"
                             f"{' ok' if mirrored == r.captured_candidates + shed else ' MISMATCH'}"
                             f" (timeouts {c.get('mirror_timeouts', 0)}, errors {c.get('mirror_errors', 0)},"
                             f" capture shed {c.get('shed', 0)})")
            check = "; ".join(parts)
        print(f"| {LABELS[mode]} | {rps(mode):.0f} | {ratio(mode):.2f} | {ratio(mode, 'bare-lean'):.2f} | "
              f"{lat(mode, .5):.2f} | "
              f"{lat(mode, .99):.2f} | {cpu(mode):.0f} | {cpu_ratio(mode):.2f} | {child_cpu(mode):.0f} | {check} |")
    for mode, base in compared.items():
        if mode not in results or base not in results:
            continue
        rounds = pairs.get(mode) or list(zip(results[mode], results[base], strict=True))
        ratios = sorted(t.rps / b.rps for t, b in rounds)
        cpu_ratios = sorted(b.cpu_us_per_request / t.cpu_us_per_request for t, b in rounds)
        how = "side by side" if mode in pairs else "one after the other"
        line = (f"\n{LABELS[mode]}: req/s vs {LABELS[base]} = {statistics.median(ratios):.2f} (median of "
                f"{len(ratios)} per-round ratios, run {how}; range {ratios[0]:.2f}–{ratios[-1]:.2f}; target ≥ 0.90); "
                f"proxy CPU µs/req {cpu(base):.0f} → {cpu(mode):.0f}, per-round CPU ratio "
                f"{statistics.median(cpu_ratios):.2f} (range {cpu_ratios[0]:.2f}–{cpu_ratios[-1]:.2f})")
        if mode in TELEMETRY_MODES:
            sink = statistics.median(r.sink_cpu_seconds / r.requests * 1e6 for r in results[mode])
            line += f"; OTLP sink ({args.otlp_sink}) CPU {sink:.0f} µs/req"
        print(line)
    if "mirror" in results and "mirror-late" in results:
        print(f"\n(d) p50 / (c) p50 = {lat('mirror-late', .5) / lat('mirror', .5):.2f} (target ≤ 1.10)")


if __name__ == "__main__":
    main()
