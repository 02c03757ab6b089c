"""What one OTLP export POST costs the exporting process, by HTTP client: the CPU of the calling
thread per POST of a 20 kB body to a local aiohttp server over a kept-alive connection.

    .venv/bin/python bench/otlp_post.py [--posts 400] [--rounds 3]

Clients: http.client (what shadow.telemetry.export.OtlpPoster uses), urllib3, requests (what it
used before, and what the OpenTelemetry SDK's exporters use), httpx. The exporter threads run in
the proxy's process and share its GIL, so this CPU is taken from the proxy. Best round printed.
"""

from __future__ import annotations

import argparse
import http.client
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import gateway as bench  # bench/gateway.py: the upstream server process

BODY = b"x" * 20_000
HEADERS = {"Content-Type": "application/x-protobuf"}


def per_post(posts: int, post: Callable[[], object]) -> float:
    post()  # connect outside the timing
    started = time.thread_time()
    for _ in range(posts):
        post()
    return (time.thread_time() - started) / posts * 1e6


def clients(url: str) -> dict[str, Callable[[], object]]:
    import httpx
    import requests
    import urllib3

    host, port = "127.0.0.1", int(url.rsplit(":", 1)[1])
    conn = http.client.HTTPConnection(host, port, timeout=5)

    def with_http_client() -> object:
        conn.request("POST", "/v1/traces", body=BODY, headers=HEADERS)
        return conn.getresponse().read()

    pool = urllib3.HTTPConnectionPool(host, port)
    session = requests.Session()
    client = httpx.Client(base_url=url)
    return {
        "http.client": with_http_client,
        "urllib3": lambda: pool.request("POST", "/v1/traces", body=BODY, headers=HEADERS).data,
        "requests": lambda: session.post(f"{url}/v1/traces", data=BODY, headers=HEADERS).content,
        "httpx": lambda: client.post("/v1/traces", content=BODY, headers=HEADERS).read(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--posts", type=int, default=400)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    proc, url = bench.start_upstream(0)
    best: dict[str, float] = {}
    try:
        posts = clients(url)
        for _ in range(args.rounds):
            for name, post in posts.items():
                best[name] = min(best.get(name, float("inf")), per_post(args.posts, post))
    finally:
        bench.stop(proc)
    for name, us in best.items():
        print(f"{name:12s} {us:7.0f} µs of the calling thread's CPU per POST (best of {args.rounds} rounds "
              f"of {args.posts})")


if __name__ == "__main__":
    main()
