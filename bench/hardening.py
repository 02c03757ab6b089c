"""Hardening, gateway side (issue #17 items 1, 2, 4, 5): each attack against a real `shadow gateway`
(mitmdump) process, with the protection off ("before") and on ("after") side by side in one run.
RSS is the mitmdump process's, sampled from /proc every 20 ms.

    .venv/bin/python bench/hardening.py                 # every case
    .venv/bin/python bench/hardening.py primary mirror  # some

Cases:
  primary  one 1 GB answer (Content-Length) through the gateway: peak RSS, the client's first-byte
           delay and the whole transfer; before = `streamLargerThan: -1` (held whole, as mitmproxy does)
  upload   one 300 MB upload (not streamed yet: the same code both ways; shown for honesty)
  mirror   20 requests whose mirror answers a 48 MB chunked body each (4 at a time), then the
           client's latency on an unmirrored route under it; before = capture.maxBodyBytes 64 MiB (the
           whole copy is read, as before the fix), after = the default 1 MiB (read up to it, then closed)
Figures: docs/benchmarks.md, "Session 7 — hardening (gateway)".
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
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
    big: {{rule: "PathPrefix(`/size`)", service: big}}
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
shadow:
  gateway: {{streamLargerThan: {stream}}}
  capture: {{dir: "{capture}", maxBodyBytes: {limit}}}
  mirroring: {{resend: {{enabled: false}}, timeout: 60s}}
"""


def run_gateway(tmp: Path, name: str, *, stream: int, limit: int, big: str, echo: str, mirror: str,
                body: Callable[[GatewayProcess], dict[str, float]]) -> dict[str, float]:
    cfg = tmp / f"{name}.yaml"
    cfg.write_text(CONFIG.format(big=big, echo=echo, mirror=mirror, capture=tmp / f"capture-{name}",
                                 stream=stream, limit=limit))
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

    def body() -> object:
        piece = b"u" * MB
        for _ in range(size // MB):
            yield piece

    with RssSampler(gw.proc.pid) as rss, httpx.Client(timeout=120) as client:
        started = time.perf_counter()
        status = client.post(gw.url + "/upload", content=body(), headers={"Content-Length": str(size)}).status_code
        total = time.perf_counter() - started
    assert status == 200, status
    return {"rss_before_mb": before / MB, "rss_peak_mb": rss.peak / MB, "total_s": total}


def mirror_case(gw: GatewayProcess, mirror: BigBodyServer, copies: int = 20) -> dict[str, float]:
    assert gw.proc is not None
    before = rss_bytes(gw.proc.pid)
    done_before = len(mirror.finished())
    latencies: list[float] = []
    with RssSampler(gw.proc.pid) as rss, httpx.Client(timeout=60) as client:
        threads = []

        def send(i: int) -> None:
            with httpx.Client(timeout=60) as c:
                c.get(gw.url + f"/m/{i}")

        for i in range(copies):
            t = threading.Thread(target=send, args=(i,))
            t.start()
            threads.append(t)
            if len(threads) % 4 == 0:
                for t in threads[-4:]:
                    t.join()
        for t in threads:
            t.join()
        # The client's latency on another route while the copies are read.
        deadline = time.monotonic() + 60
        while len(mirror.finished()) - done_before < copies and time.monotonic() < deadline:
            started = time.perf_counter()
            client.get(gw.url + "/plain")
            latencies.append((time.perf_counter() - started) * 1000)
        mirror.wait_finished(done_before + copies, timeout=max(0.0, deadline - time.monotonic()))
    written = mirror.finished()[done_before:]
    return {"rss_before_mb": before / MB, "rss_peak_mb": rss.peak / MB,
            "client_p50_ms": statistics.median(latencies) if latencies else float("nan"),
            "mirror_mb_sent_per_copy": statistics.mean(written) / MB if written else float("nan")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("cases", nargs="*", default=["primary", "upload", "mirror"])
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
        }
        for case in args.cases:
            off, on, body = settings[case]
            results = {label: run_gateway(tmp, f"{case}-{label}", **cfg, **common, body=body)  # type: ignore[arg-type]
                       for label, cfg in (("before", off), ("after", on))}
            print(f"\n{case}")
            for key in results["before"]:
                b, a = results["before"][key], results["after"][key]
                print(f"  {key:26s} before {b:10.2f}   after {a:10.2f}")


if __name__ == "__main__":
    main()
