"""The cost of one multi-cluster bridge hop, side by side in one run:

    .venv/bin/python bench/multicluster_hop.py [--requests 300] [--rounds 3]

  direct   the client calls the upstream (a small HTTP server on 127.0.0.1)
  child    the client calls a child gateway's ordinary entry point (one gateway hop, plain HTTP)
  bridge   the client calls the parent, which calls the child's uplink entry point over mutual TLS
           (parent → child → upstream: two gateway hops, one of them TLS with client certificates)

Each mode sends `--requests` sequential GETs over one keep-alive connection per round; the modes are
interleaved for `--rounds` rounds so drift on a shared machine hits them alike. Prints p50 / p90 client
latency per mode and the bridge's extra latency over `child` (what the bridge adds to a one-gateway
set-up) and over `direct`. Certificates come from a private CA made here (trustme).
"""

from __future__ import annotations

import argparse
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import trustme

REPO = Path(__file__).resolve().parent.parent

CHILD = """
entryPoints:
  web: {{address: "127.0.0.1:{web}"}}
hub:
  uplinkEntryPoints:
    bridge: {{address: "127.0.0.1:{bridge}", tls: {{options: bridge}}}}
  uplinks:
    app: {{service: app, weight: 1}}
tls:
  stores: {{default: {{defaultCertificate: {{certFile: child.crt, keyFile: child.key}}}}}}
  options:
    bridge: {{clientAuth: {{caFiles: [ca.pem]}}}}
http:
  routers:
    local: {{rule: "PathPrefix(`/`)", service: app}}
  services:
    app: {{loadBalancer: {{servers: [{{url: "http://127.0.0.1:{app}"}}]}}}}
shadow:
  capture: {{enabled: false}}
"""

PARENT = """
hub:
  multiCluster:
    pollInterval: 1s
    tls: {{caFile: ca.pem, certFile: parent.crt, keyFile: parent.key}}
    children:
      child: {{address: "https://127.0.0.1:{bridge}"}}
http:
  routers:
    all: {{rule: "PathPrefix(`/`)", service: app@multicluster}}
shadow:
  capture: {{enabled: false}}
"""


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body are two writes: no 40 ms delayed-ACK stall

    def do_GET(self) -> None:
        body = b'{"ok": true}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_args: object) -> None:
        pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def gateway(config: Path, port: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen([sys.executable, "-m", "shadow.cli", "gateway", str(config), "--listen", f"127.0.0.1:{port}"],
                            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return proc
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit(f"gateway {config.name} did not listen on {port}")


def run(url: str, requests: int) -> list[float]:
    out: list[float] = []
    with httpx.Client(timeout=30.0) as client:
        client.get(url)  # connect and warm up
        for _ in range(requests):
            started = time.perf_counter()
            resp = client.get(url)
            out.append((time.perf_counter() - started) * 1000.0)
            if resp.status_code != 200:
                raise SystemExit(f"{url}: {resp.status_code} {resp.text[:200]}")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="shadow-bridge-bench-"))
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(folder / "ca.pem"))
    for name in ("child", "parent"):
        cert = ca.issue_cert("127.0.0.1")
        cert.private_key_pem.write_to_path(str(folder / f"{name}.key"))
        cert.cert_chain_pems[0].write_to_path(str(folder / f"{name}.crt"))
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    app, web, bridge, front = server.server_address[1], free_port(), free_port(), free_port()
    (folder / "child.yaml").write_text(CHILD.format(web=web, bridge=bridge, app=app))
    (folder / "parent.yaml").write_text(PARENT.format(bridge=bridge))
    procs = [gateway(folder / "child.yaml", web)]
    try:
        procs.append(gateway(folder / "parent.yaml", front))
        deadline = time.monotonic() + 60
        while httpx.get(f"http://127.0.0.1:{front}/", timeout=30).status_code != 200:  # discovery
            if time.monotonic() > deadline:
                raise SystemExit("the parent never discovered the child's uplink")
            time.sleep(0.3)
        urls = {"direct": f"http://127.0.0.1:{app}/x", "child": f"http://127.0.0.1:{web}/x",
                "bridge": f"http://127.0.0.1:{front}/x"}
        samples: dict[str, list[float]] = {mode: [] for mode in urls}
        for _ in range(args.rounds):
            for mode, url in urls.items():
                samples[mode] += run(url, args.requests)
        p50 = {m: statistics.median(v) for m, v in samples.items()}
        p90 = {m: statistics.quantiles(v, n=10)[-1] for m, v in samples.items()}
        for mode in urls:
            print(f"{mode:7s} p50 {p50[mode]:6.2f} ms   p90 {p90[mode]:6.2f} ms   ({len(samples[mode])} requests)")
        print(f"bridge hop over one gateway (bridge - child): p50 +{p50['bridge'] - p50['child']:.2f} ms, "
              f"ratio {p50['bridge'] / p50['child']:.2f}")
        print(f"bridge over direct: p50 +{p50['bridge'] - p50['direct']:.2f} ms, ratio {p50['bridge'] / p50['direct']:.2f}")
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
        server.shutdown()


if __name__ == "__main__":
    main()
