"""Hardening, gateway side (issue #17 items 1, 2, 4, 5): each attack against a real `shadow gateway`
(mitmdump) process, with the protection off ("before") and on ("after") side by side in one run.
RSS is the mitmdump process's, sampled from /proc every 20 ms.

    .venv/bin/python bench/hardening.py                 # every case
    .venv/bin/python bench/hardening.py primary mirror  # some

Cases:
  primary  one 1 GB answer (Content-Length) through the gateway: peak RSS, the client's first-byte
           delay and the whole transfer; before = `streamLargerThan: -1` (held whole, as mitmproxy does)
  upload   one 300 MB upload answered with a small body (request bodies are not streamed yet: the
           same code both ways; shown for honesty)
  mirror   20 requests whose mirror answers a 48 MB chunked body each (4 at a time), while another
           client sends 100 requests to an unmirrored route (its p50); before = capture.maxBodyBytes 64 MiB (the
           whole copy is read, as before the fix), after = the default 1 MiB (read up to it, then closed)
  otlp     150 concurrent valid 7.5 MB posts to a real `shadow otlp-receiver`: peak RSS, RSS after,
           answers; before = --max-decoding-bytes 4 GB (unbounded), after = the default (4 x 8 MiB)
  idle     1,500 connections that send nothing and 1,500 that sent half a request head: how many
           the gateway still holds open 10 s later; before = respondingTimeouts 0 (off: mitmproxy's
           600 s inactivity timeout only), after = readTimeout 2s, idleTimeout 3s
Figures: docs/benchmarks.md, "Session 7 — hardening (gateway)".
"""

from __future__ import annotations

import argparse
import socket
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.bigbody import BigBodyServer, RssSampler, rss_bytes  # noqa: E402
from tests.conftest import GatewayProcess  # noqa: E402
from tests.upstream import Upstream  # noqa: E402

MB = 1 << 20

CONFIG = """
http:
  routers:
    big: {{rule: "PathPrefix(`/size`) || PathPrefix(`/upload`)", service: big}}
    mirrored: {{rule: "PathPrefix(`/m`)", service: mirrored}}
    echo: {{rule: "PathPrefix(`/`)", service: echo, priority: 1}}
  services:
    big: {{loadBalancer: {{servers: [{{url: "{big}"}}]}}}}
    echo: {{loadBalancer: {{servers: [{{url: "{echo}"}}]}}}}
    shadow-big: {{loadBalancer: {{servers: [{{url: "{mirror}"}}], passHostHeader: false}}}}
    mirrored:
      mirroring:
        service: echo
        mirrors: [{{name: shadow-big, percent: 100}}]
entryPoints:
  web:
    transport:
      respondingTimeouts: {{readTimeout: {read}, idleTimeout: {idle}}}
shadow:
  gateway: {{streamLargerThan: {stream}}}
  capture: {{dir: "{capture}", maxBodyBytes: {limit}}}
  mirroring: {{resend: {{enabled: false}}, timeout: 60s}}
"""


def run_gateway(tmp: Path, name: str, *, stream: int, limit: int, big: str, echo: str, mirror: str,
                body: Callable[[GatewayProcess], dict[str, float]], read: str = "60s",
                idle: str = "180s") -> dict[str, float]:
    cfg = tmp / f"{name}.yaml"
    cfg.write_text(CONFIG.format(big=big, echo=echo, mirror=mirror, capture=tmp / f"capture-{name}",
                                 stream=stream, limit=limit, read=read, idle=idle))
    with GatewayProcess(cfg) as gw:
        httpx.get(gw.url + "/warm", timeout=30)
        return body(gw)


def primary_case(gw: GatewayProcess, size: int = 1024 * MB) -> dict[str, float]:
    assert gw.proc is not None
    before = rss_bytes(gw.proc.pid)
    first = 0.0
    received = 0
    with RssSampler(gw.proc.pid) as rss, httpx.Client(timeout=120) as client:
        started = time.perf_counter()
        with client.stream("GET", gw.url + f"/size/{size}") as response:
            for chunk in response.iter_raw():
                if not received:
                    first = time.perf_counter() - started
                received += len(chunk)
        total = time.perf_counter() - started
    assert received == size, received
    return {"rss_before_mb": before / MB, "rss_peak_mb": rss.peak / MB, "first_byte_s": first, "total_s": total}


def upload_case(gw: GatewayProcess, size: int = 300 * MB) -> dict[str, float]:
    assert gw.proc is not None
    before = rss_bytes(gw.proc.pid)

    def body() -> Iterator[bytes]:
        piece = b"u" * MB
        for _ in range(size // MB):
            yield piece

    with RssSampler(gw.proc.pid) as rss, httpx.Client(timeout=120) as client:
        started = time.perf_counter()
        status = client.post(gw.url + "/upload", content=body(), headers={"Content-Length": str(size)}).status_code
        total = time.perf_counter() - started
    assert status == 200, status
    return {"rss_before_mb": before / MB, "rss_peak_mb": rss.peak / MB, "total_s": total}


def mirror_case(gw: GatewayProcess, mirror: BigBodyServer, copies: int = 20, probes: int = 100) -> dict[str, float]:
    """`copies` mirrored requests (4 at a time) while another client sends `probes` requests to an
    unmirrored route one after the other; RSS peak, the probes' p50, what the mirror sent per copy."""
    assert gw.proc is not None
    before = rss_bytes(gw.proc.pid)
    done_before = len(mirror.finished())
    latencies: list[float] = []

    def probe() -> None:
        with httpx.Client(timeout=60) as c:
            for _ in range(probes):
                started = time.perf_counter()
                c.get(gw.url + "/plain")
                latencies.append((time.perf_counter() - started) * 1000)

    def send(first: int) -> None:
        with httpx.Client(timeout=60) as c:
            for i in range(first, copies, 4):
                c.get(gw.url + f"/m/{i}")

    with RssSampler(gw.proc.pid) as rss:
        threads = [threading.Thread(target=probe), *(threading.Thread(target=send, args=(k,)) for k in range(4))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        mirror.wait_finished(done_before + copies, timeout=120)
    written = mirror.finished()[done_before:]
    return {"rss_before_mb": before / MB, "rss_peak_mb": rss.peak / MB,
            "client_p50_ms": statistics.median(latencies),
            "mirror_mb_sent_per_copy": statistics.mean(written) / MB if written else float("nan")}


def idle_case(gw: GatewayProcess, each: int = 1500, wait_s: float = 10.0) -> dict[str, float]:
    assert gw.proc is not None
    before = rss_bytes(gw.proc.pid)
    socks: list[socket.socket] = []
    try:
        for i in range(2 * each):
            sock = socket.create_connection(("127.0.0.1", gw.port), timeout=10)
            if i % 2:
                sock.sendall(b"GET /slow HTTP/1.1\r\nHost: shop\r\nX-Slow: ")
            sock.setblocking(False)
            socks.append(sock)
        time.sleep(wait_s)
        still_open = 0
        for sock in socks:
            try:
                still_open += sock.recv(1) != b""
            except BlockingIOError:
                still_open += 1
            except OSError:
                pass
        return {"connections_opened": float(len(socks)), f"still_open_after_{wait_s:g}s": float(still_open),
                "rss_before_mb": before / MB, "rss_with_them_mb": rss_bytes(gw.proc.pid) / MB}
    finally:
        for sock in socks:
            sock.close()


def otlp_case(tmp: Path, name: str, max_decoding: int | None, posts: int = 150) -> dict[str, float]:
    import subprocess

    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

    from tests.upstream import free_port

    req = ExportTraceServiceRequest()
    span = req.resource_spans.add().scope_spans.add().spans.add()
    span.trace_id, span.span_id, span.name = b"\x01" * 16, b"\x02" * 8, "big"
    span.start_time_unix_nano, span.end_time_unix_nano = 1_700_000_000_000_000_000, 1_700_000_000_100_000_000
    span.attributes.append(KeyValue(key="blob", value=AnyValue(string_value="z" * (7 * MB + MB // 2))))
    payload = req.SerializeToString()
    port = free_port()
    extra = ["--max-decoding-bytes", str(max_decoding)] if max_decoding else []
    proc = subprocess.Popen([sys.executable, "-m", "shadow.cli", "otlp-receiver", "-o", str(tmp / f"otlp-{name}"),
                             "--listen", f"127.0.0.1:{port}", *extra], stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        before = rss_bytes(proc.pid)
        statuses: list[int] = []

        def post() -> None:
            try:
                with httpx.Client(timeout=120) as c:
                    statuses.append(c.post(f"http://127.0.0.1:{port}/v1/traces", content=payload,
                                           headers={"Content-Type": "application/x-protobuf"}).status_code)
            except httpx.HTTPError:
                statuses.append(0)

        with RssSampler(proc.pid) as rss:
            threads = [threading.Thread(target=post) for _ in range(posts)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        time.sleep(2)
        return {"rss_before_mb": before / MB, "rss_peak_mb": rss.peak / MB, "rss_2s_after_mb": rss_bytes(proc.pid) / MB,
                "answered_200": float(statuses.count(200)), "answered_503": float(statuses.count(503)),
                "failed_other": float(len(statuses) - statuses.count(200) - statuses.count(503))}
    finally:
        proc.terminate()
        proc.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("cases", nargs="*", default=["primary", "upload", "mirror", "otlp", "idle"])
    args = parser.parse_args()
    with (tempfile.TemporaryDirectory() as tmp_text, BigBodyServer() as big,
          BigBodyServer(endless_cap=48 * MB, path="/endless") as mirror, Upstream("echo") as echo):
        tmp = Path(tmp_text)
        common = {"big": big.url, "echo": echo.url, "mirror": mirror.url}
        settings = {
            "primary": ({"stream": -1, "limit": MB}, {"stream": 8 * MB, "limit": MB}, primary_case),
            "upload": ({"stream": -1, "limit": MB}, {"stream": 8 * MB, "limit": MB}, upload_case),
            "mirror": ({"stream": 8 * MB, "limit": 64 * MB}, {"stream": 8 * MB, "limit": MB},
                       lambda gw: mirror_case(gw, mirror)),
            "idle": ({"stream": 8 * MB, "limit": MB, "read": "0s", "idle": "0s"},
                     {"stream": 8 * MB, "limit": MB, "read": "2s", "idle": "3s"}, idle_case),
        }
        for case in args.cases:
            if case == "otlp":
                results = {"before": otlp_case(tmp, "before", 4096 * MB), "after": otlp_case(tmp, "after", None)}
            else:
                off, on, body = settings[case]
                results = {label: run_gateway(tmp, f"{case}-{label}", **cfg, **common, body=body)  # type: ignore[arg-type]
                           for label, cfg in (("before", off), ("after", on))}
            print(f"\n{case}")
            for key in results["before"]:
                b, a = results["before"][key], results["after"][key]
                print(f"  {key:26s} before {b:10.2f}   after {a:10.2f}")


if __name__ == "__main__":
    main()
