"""Rows lost to kill -9, start-up window included (issue 17 item 9). python bench/capture_crash.py [--runs N]

Each run: a fresh capture folder; a real `shadow gateway` (mitmdump + addons/gateway.py, capture in
its default child process) in front of a local aiohttp upstream; client threads that start sending
the moment the gateway process is spawned (retrying until it listens) and record when each answer
arrived; SIGKILL at a chosen delay after the *first* answer (0.2 s .. 3 s, so the first runs kill
the gateway while it has only just begun capturing); with --kill both, the capture process is
SIGKILLed at the same moment too. Then the journals are recovered exactly as the next gateway start
recovers them (a CaptureWriter opened on the folder) and every answered request is looked up.

Printed per run and in total: answered requests, those answered more than 1 s before the kill, and
how many of those have no row ("lost"; the target is 0), plus rows lost from the last second
(allowed). Bounded: --runs runs of at most ~3 s of traffic each.
"""

from __future__ import annotations

import argparse
import http.client
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from shadow.cli.gateway import mitmdump_command  # noqa: E402

WINDOW_S = 1.0  # rows answered more than this long before the kill must survive it
DELAYS_S = "0.2,0.5,1.0,1.5,2.0,3.0"  # kill this long after the first answer, run after run
CONFIG = """
http:
  routers:
    all: {{rule: "PathPrefix(`/`)", service: app}}
  services:
    app: {{loadBalancer: {{servers: [{{url: "{upstream}"}}]}}}}
shadow:
  capture: {{dir: "{capture}"}}
"""


def serve(port: int) -> None:
    from aiohttp import web

    body = b'{"id": 42, "name": "widget", "price": 9.99, "description": "' + b"x" * 400 + b'"}'

    async def handle(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(body=body, content_type="application/json")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_port(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listening on {port}")


def child_pids(pid: int) -> list[int]:
    try:
        return [int(c) for task in Path(f"/proc/{pid}/task").iterdir()
                for c in (task / "children").read_text().split()]
    except OSError:
        return []


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


class Client:
    """Threads sending GET /run<r>/t<thread>/<i> on keep-alive connections; answers timestamped."""

    def __init__(self, port: int, run: int, threads: int, max_requests: int) -> None:
        self.port, self.run = port, run
        self.answered: list[tuple[str, float]] = []
        self.first = threading.Event()
        self.stop = threading.Event()
        self._lock = threading.Lock()
        self.threads = [threading.Thread(target=self._loop, args=(t, max_requests), daemon=True)
                        for t in range(threads)]

    def start(self) -> None:
        for t in self.threads:
            t.start()

    def _loop(self, t: int, max_requests: int) -> None:
        conn: http.client.HTTPConnection | None = None
        for i in range(max_requests):
            if self.stop.is_set():
                return
            path = f"/run{self.run}/t{t}/{i}"
            try:
                if conn is None:
                    conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
                conn.request("GET", path)
                resp = conn.getresponse()
                resp.read()
                if resp.status == 200:
                    with self._lock:
                        self.answered.append((path, time.monotonic()))
                    self.first.set()
            except (OSError, http.client.HTTPException):  # not listening yet, or killed
                if conn is not None:
                    conn.close()
                conn = None
                time.sleep(0.01)

    def join(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(10)


def one_run(run: int, delay: float, kill_both: bool, upstream: str, root: Path, threads: int) -> dict[str, float]:
    import duckdb

    from shadow.capture.settings import CaptureSettings
    from shadow.capture.writer import CaptureWriter

    capture = root / f"cap{run}"
    cfg = root / f"gw{run}.yaml"
    cfg.write_text(CONFIG.format(upstream=upstream, capture=capture))
    port = free_port()
    command = mitmdump_command(cfg, reverse_target=upstream, listen_host="127.0.0.1", listen_port=port)
    client = Client(port, run, threads, max_requests=20_000)
    spawned = time.monotonic()
    gw = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=REPO)
    client.start()
    if not client.first.wait(60):
        gw.kill()
        raise RuntimeError("the gateway answered nothing within 60 s")
    first = client.answered[0][1]
    time.sleep(max(0.0, first + delay - time.monotonic()))
    victims = [gw.pid] + (child_pids(gw.pid) if kill_both else [])
    capture_children = child_pids(gw.pid)
    killed_at = time.monotonic()
    for pid in victims:
        os.kill(pid, signal.SIGKILL)
    gw.wait()
    client.join()
    deadline = time.monotonic() + 60
    while any(alive(p) for p in capture_children) and time.monotonic() < deadline:
        time.sleep(0.05)  # the capture process seals what it received, then exits
    journal_dir = capture / "exchanges" / "_journal"
    before = sorted(p.name for p in journal_dir.glob("*")) if journal_dir.is_dir() else []
    CaptureWriter(CaptureSettings(dir=capture), gateway_id=f"recover{run}").close()  # = the next start
    left = sorted(p.name for p in journal_dir.glob("*.arrows")) if journal_dir.is_dir() else []
    if left:
        print(f"    journals left after recovery: {left}; before it: {before}; victims {victims}, "
              f"alive {[p for p in victims if alive(p)]}", flush=True)
    con = duckdb.connect()
    files = list((capture / "exchanges").rglob("*.parquet"))
    stored = {r[0] for r in con.sql(
        f"select path from read_parquet('{capture}/exchanges/**/*.parquet', union_by_name=true, "
        "hive_partitioning=true)").fetchall()} if files else set()
    old = [p for p, at in client.answered if at < killed_at - WINDOW_S]
    recent = [p for p, at in client.answered if at >= killed_at - WINDOW_S]
    lost_old = sum(p not in stored for p in old)
    lost_recent = sum(p not in stored for p in recent)
    journals = list((capture / "exchanges" / "_journal").glob("*.arrows"))
    return {"delay": delay, "startup_s": first - spawned, "answered": len(client.answered), "old": len(old),
            "lost_old": lost_old, "recent": len(recent), "lost_recent": lost_recent, "journals_left": len(journals)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=12)
    ap.add_argument("--kill", choices=("proxy", "both"), default="proxy",
                    help="SIGKILL the gateway only, or the gateway and its capture process")
    ap.add_argument("--threads", type=int, default=8)
    ap.add_argument("--delays", default=DELAYS_S, help="seconds after the first answer to kill at, in turn")
    ap.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        serve(args.serve)
        return
    os.environ.setdefault("SHADOW_REDACTION_KEY", "bench-capture-crash")
    root = Path(tempfile.mkdtemp(prefix="shadow-crash-"))
    up_port = free_port()
    upstream = subprocess.Popen([sys.executable, __file__, "--serve", str(up_port)])
    try:
        wait_port(up_port)
        totals = {"answered": 0, "old": 0, "lost_old": 0, "recent": 0, "lost_recent": 0}
        print(f"kill -9 of {'the gateway and its capture process' if args.kill == 'both' else 'the gateway'}; "
              f"{args.threads} client threads from the gateway's spawn on")
        print("run  kill after 1st answer  start-up  answered  >1s before kill  lost  last 1 s  lost  journals left")
        delays = [float(d) for d in args.delays.split(",")]
        for run in range(args.runs):
            r = one_run(run, delays[run % len(delays)], args.kill == "both", f"http://127.0.0.1:{up_port}",
                        root, args.threads)
            for k in totals:
                totals[k] += int(r[k])
            print(f"{run:3d}  {r['delay']:18.1f} s  {r['startup_s']:6.1f} s  {r['answered']:8d}  {r['old']:15d}"
                  f"  {r['lost_old']:4d}  {r['recent']:8d}  {r['lost_recent']:4d}  {r['journals_left']:13d}",
                  flush=True)
        print(f"total: {totals['answered']} answered; {totals['lost_old']} of {totals['old']} answered more than "
              f"{WINDOW_S:g} s before a kill lost; {totals['lost_recent']} of {totals['recent']} from the last "
              f"{WINDOW_S:g} s lost")
    finally:
        upstream.send_signal(signal.SIGINT)
        upstream.wait(10)
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
