"""Replay throughput: the replay engine against a minimal asyncio client doing the same sends.

    .venv/bin/python bench/replay.py [--requests 6000] [--concurrency 32] [--rounds 3]

A fast loopback upstream (aiohttp, in a subprocess so it has its own core) answers every request
with a small JSON body. In one run, alternating rounds, it measures sends per second for:
- minimal aiohttp: one pooled ClientSession, a semaphore, `await resp.read()` — the floor cost;
- minimal httpx: the same with httpx.AsyncClient (why the engine uses aiohttp);
- engine: ReplayEngine with one live target (primary = recorded), rows to a null sink;
- engine + capture process: the same, rows to the capture writer `shadow replay` opens (in its own
  process: journal + Parquet in a temp folder); engine + capture thread: the in-thread writer;
  the client CPU of these excludes the capture process's (it runs on the other core);
- engine, 2 targets: primary and candidate both live (two sends per source request).
Prints the median of the rounds and each variant's ratio to the minimal aiohttp client, in sends
per second and in client CPU per send (the second stays meaningful when other work loads the box).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, Literal

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import aiohttp  # noqa: E402
import httpx  # noqa: E402

from shadow.replay.engine import ListSink, ReplayConfig, ReplayEngine, Target  # noqa: E402
from shadow.replay.sources import RecordedResponse, SourceEntry  # noqa: E402

SERVER = """
import sys
from aiohttp import web
BODY = b'{"id": 1, "name": "widget", "price": 9.99, "tags": ["a", "b"]}'
async def handle(request):
    await request.read()
    return web.Response(body=BODY, content_type="application/json")
app = web.Application()
app.router.add_route("*", "/{tail:.*}", handle)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_listening(port: int, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError("upstream did not start")


class MemorySource:
    """Entries built once, before timing: the engine is measured here, the source readers below."""

    kind = "memory"
    _built: dict[int, list[SourceEntry]] = {}  # noqa: RUF012 -- a cache shared by rounds

    def __init__(self, n: int) -> None:
        self.path = Path("bench")
        self.n = n
        if n not in self._built:
            rec = RecordedResponse(status=200, headers=[("Content-Type", "application/json")], body=b"{}",
                                   latency_ms=1.0)
            self._built[n] = [
                SourceEntry(index=i, method="GET", scheme="http", host="shop.example",
                            path=f"/api/items/{i}", query="expand=1",
                            headers=[("Host", "shop.example"), ("Accept", "application/json"),
                                     ("User-Agent", "bench")],
                            body=b"", ts_ns=None, recorded=rec)
                for i in range(n)]

    @property
    def identity(self) -> str:
        return "bench"

    def count(self) -> int:
        return self.n

    def entries(self) -> Iterator[SourceEntry]:
        return iter(self._built[self.n])


def paths(n: int) -> list[str]:
    return [f"/api/items/{i}?expand=1" for i in range(n)]


async def minimal_aiohttp(base: str, n: int, concurrency: int) -> int:
    sem = asyncio.Semaphore(concurrency)
    headers = {"Accept": "application/json", "X-Shadow-Request": "1", "X-Shadow-Replay": "1"}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        async def one(path: str) -> None:
            async with sem, session.get(base + path, headers=headers) as resp:
                await resp.read()
        await asyncio.gather(*(one(p) for p in paths(n)))
    return n


async def minimal_httpx(base: str, n: int, concurrency: int) -> int:
    sem = asyncio.Semaphore(concurrency)
    headers = {"Accept": "application/json", "X-Shadow-Request": "1", "X-Shadow-Replay": "1"}
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits) as client:
        async def one(path: str) -> None:
            async with sem:
                r = await client.get(base + path, headers=headers)
                r.read()
        await asyncio.gather(*(one(p) for p in paths(n)))
    return n


def engine_run(base: str, n: int, concurrency: int, *, targets: int,
               capture: Literal["process", "thread"] | None) -> Callable[[], Coroutine[Any, Any, int]]:
    """A factory of one engine run. Calling it opens the capture writer (what `shadow replay` opens:
    the process writer, the default; or the in-thread one) before the timer starts: a capture
    process's start-up is paid once per replay, not per send. Closing (sealing) is timed."""

    def make() -> Coroutine[Any, Any, int]:
        primary = Target("primary", "primary", base if targets == 2 else None)
        cfg = ReplayConfig(targets=(primary, Target("candidate", "candidate", base)), concurrency=concurrency)
        if capture is None:
            return run(ReplayEngine(cfg, [MemorySource(n)], ListSink(keep=False)))
        from shadow.capture.process import open_capture_writer
        from shadow.capture.settings import CaptureSettings

        tmp = tempfile.TemporaryDirectory()
        writer = open_capture_writer(CaptureSettings(dir=Path(tmp.name), mode=capture))
        engine = ReplayEngine(cfg, [MemorySource(n)], writer, backlog=lambda: writer.stats().queued)
        return run(engine, close=writer.close, cleanup=tmp.cleanup)

    async def run(engine: ReplayEngine, close: Callable[[], None] | None = None,
                  cleanup: Callable[[], None] | None = None) -> int:
        try:
            stats = await engine.run()
        finally:
            if close is not None:
                await asyncio.to_thread(close)
            if cleanup is not None:
                cleanup()
        assert stats.errors == 0 and stats.requests == n, stats
        return n * targets

    return make


def source_rates(n: int) -> dict[str, float]:
    """Entries per second each source reader yields (so a replay's ceiling is known)."""
    from mitmproxy import http
    from mitmproxy.addons.savehar import SaveHar
    from mitmproxy.io import FlowWriter
    from mitmproxy.test import tflow

    from shadow.replay.sources import open_source

    flows = []
    for i in range(n):
        f = tflow.tflow(resp=True)
        f.request.path = f"/api/items/{i}?expand=1"
        f.response = http.Response.make(200, b'{"id": %d, "name": "widget"}' % i, {"Content-Type": "application/json"})
        flows.append(f)
    rates = {}
    with tempfile.TemporaryDirectory() as tmp:
        flow_path, har_path = Path(tmp) / "t.flows", Path(tmp) / "t.har"
        with flow_path.open("wb") as fo:
            writer = FlowWriter(fo)
            for f in flows:
                writer.add(f)
        SaveHar().export_har(flows, str(har_path))
        for name, path in (("mitmproxy flow file", flow_path), ("HAR (savehar)", har_path)):
            t = time.perf_counter()
            count = sum(1 for _ in open_source(path).entries())
            rates[name] = count / (time.perf_counter() - t)
    return rates


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=6000)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    port = free_port()
    server = subprocess.Popen([sys.executable, "-c", SERVER, str(port)])
    try:
        wait_listening(port)
        base = f"http://127.0.0.1:{port}"
        n, c = args.requests, args.concurrency
        variants: dict[str, Callable[[], Coroutine[Any, Any, int]]] = {
            "minimal aiohttp client": lambda: minimal_aiohttp(base, n, c),
            # httpx is ~10x slower here: a fifth of the sends keeps the run short, the rate is per second.
            "minimal httpx client": lambda: minimal_httpx(base, max(200, n // 5), c),
            "engine (1 live target)": engine_run(base, n, c, targets=1, capture=None),
            "engine + capture process": engine_run(base, n, c, targets=1, capture="process"),
            "engine + capture thread": engine_run(base, n, c, targets=1, capture="thread"),
            "engine (2 live targets)": engine_run(base, n // 2, c, targets=2, capture=None),
        }
        asyncio.run(minimal_aiohttp(base, 500, c))  # warm-up
        MemorySource(n), MemorySource(n // 2)  # built before any timing
        results: dict[str, list[float]] = {k: [] for k in variants}
        cpu: dict[str, list[float]] = {k: [] for k in variants}
        for _ in range(args.rounds):
            for name, make in variants.items():
                work = make()  # set-up (a capture writer's start) before the timer
                t, t_cpu = time.perf_counter(), time.process_time()
                sends = asyncio.run(work)
                results[name].append(sends / (time.perf_counter() - t))
                # Client CPU per send (this process, all threads): robust on a busy machine.
                cpu[name].append((time.process_time() - t_cpu) / sends * 1e6)
        floor = statistics.median(results["minimal aiohttp client"])
        floor_cpu = statistics.median(cpu["minimal aiohttp client"])
        best_floor = max(results["minimal aiohttp client"])
        best_floor_cpu = min(cpu["minimal aiohttp client"])
        print(f"{n} sends per variant (httpx: {max(200, n // 5)}), concurrency {c}, "
              f"{args.rounds} alternating rounds; load average {os.getloadavg()[0]:.1f}")
        print("  median of the rounds, and best round (least disturbed by other load) in brackets")
        print(f"  {'variant':26s} {'sends/s':>14s} {'ratio':>12s}   {'CPU µs/send':>12s} {'ratio':>12s}")
        for name, rates in results.items():
            med, med_cpu = statistics.median(rates), statistics.median(cpu[name])
            best, best_cpu = max(rates), min(cpu[name])
            print(f"  {name:26s} {med:6.0f} [{best:5.0f}] {med / floor:5.2f} [{best / best_floor:4.2f}]   "
                  f"{med_cpu:5.0f} [{best_cpu:4.0f}] {floor_cpu / med_cpu:5.2f} [{best_floor_cpu / best_cpu:4.2f}]")
        for name, rate in source_rates(5000).items():
            print(f"  source reader: {name:20s} {rate:8.0f} entries/s")
    finally:
        server.terminate()
        server.wait(timeout=10)


if __name__ == "__main__":
    main()
