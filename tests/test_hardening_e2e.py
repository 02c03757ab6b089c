"""Issue 17, gateway side, attacked as an outsider would, against a real `shadow gateway` (mitmdump)
process and real upstreams on 127.0.0.1:

- a 200 MB answer is streamed (gateway RSS grows by far less than the body; the capture keeps the
  configured prefix and marks the row truncated, with the whole size);
- a mirror answering an endless chunked body is read only up to the capture limit, then closed;
- two Host headers (or conflicting Content-Length values) get 400 and reach no upstream;
- idle and half-sent-header connections are closed (Traefik's readTimeout / idleTimeout).
"""

from __future__ import annotations

import select
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import duckdb
import httpx
import pytest

from tests.bigbody import BigBodyServer, RssSampler, rss_bytes
from tests.conftest import GatewayProcess
from tests.upstream import Upstream

MB = 1 << 20
CAPTURE_LIMIT = 65536

CONFIG = """
http:
  routers:
    big: {{rule: "PathPrefix(`/size`) || PathPrefix(`/endless`) || PathPrefix(`/small`)", service: big}}
    mirrored: {{rule: "PathPrefix(`/m`)", service: mirrored}}
    echo: {{rule: "PathPrefix(`/`)", service: echo, priority: 1}}
  services:
    big: {{loadBalancer: {{servers: [{{url: "{big}"}}]}}}}
    echo: {{loadBalancer: {{servers: [{{url: "{echo}"}}]}}}}
    shadow-endless: {{loadBalancer: {{servers: [{{url: "{mirror}"}}], passHostHeader: false}}}}
    mirrored:
      mirroring:
        service: echo
        mirrors: [{{name: shadow-endless, percent: 100}}]
shadow:
  gateway: {{streamLargerThan: {stream}}}
  capture: {{dir: "{capture}", maxBodyBytes: {limit}}}
  mirroring:
    resend: {{enabled: false}}
"""


@dataclass
class Env:
    gw: GatewayProcess
    big: BigBodyServer
    mirror: BigBodyServer
    echo: Upstream
    capture: Path


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    tmp = tmp_path_factory.mktemp("hardening")
    with (BigBodyServer() as big, BigBodyServer(endless_cap=256 * MB, path="/endless") as mirror,
          Upstream("echo") as echo):
        cfg = tmp / "gw.yaml"
        cfg.write_text(CONFIG.format(big=big.url, echo=echo.url, mirror=mirror.url,
                                     capture=tmp / "capture", limit=CAPTURE_LIMIT, stream=MB))
        gw = GatewayProcess(cfg)
        with gw:
            yield Env(gw, big, mirror, echo, tmp / "capture")


def _pid(env: Env) -> int:
    assert env.gw.proc is not None
    return env.gw.proc.pid


def test_a_200_mb_answer_is_streamed_with_bounded_memory(env: Env) -> None:
    before = rss_bytes(_pid(env))
    received = 0
    with (RssSampler(_pid(env)) as rss, httpx.Client(timeout=60) as client,
          client.stream("GET", env.gw.url + f"/size/{200 * MB}") as response):
        assert response.status_code == 200
        for chunk in response.iter_raw():
            received += len(chunk)
    assert received == 200 * MB
    # Buffered whole, mitmproxy held the body at least twice over (≥ 400 MB); streamed, the gateway
    # holds a few chunks at a time.
    assert rss.peak - before < 120 * MB, f"gateway RSS grew by {(rss.peak - before) / MB:.0f} MB"


def test_a_small_answer_of_unknown_length_still_arrives_whole(env: Env) -> None:
    response = httpx.get(env.gw.url + "/small/one", timeout=30)
    assert response.status_code == 200 and response.json() == {"ok": True, "path": "/small/one"}


def test_an_endless_mirror_answer_is_cut_at_the_capture_limit(env: Env) -> None:
    before = rss_bytes(_pid(env))
    count = 20
    with RssSampler(_pid(env)) as rss, httpx.Client(timeout=30) as client:
        for i in range(count):
            assert client.get(env.gw.url + f"/m/{i}").status_code == 200
        # Each copy's connection is closed by the gateway once it has the capture's prefix: the
        # mirror server's writes fail long before its 256 MB cap.
        written = env.mirror.wait_finished(count, timeout=60)
    assert len(written) == count, f"{len(written)} of {count} mirror answers ended"
    assert env.mirror.started >= count  # every copy reached the mirror, which always answers endlessly
    assert max(written) < 64 * MB, f"the mirror wrote {max(written) / MB:.0f} MB into one copy"
    assert rss.peak - before < 120 * MB, f"gateway RSS grew by {(rss.peak - before) / MB:.0f} MB"


def _raw(port: int, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        data = b""
        while chunk := sock.recv(65536):  # every request here asks for Connection: close
            data += chunk
        return data


@pytest.mark.parametrize("extra", [
    b"Host: victim.internal\r\n",  # a second Host: routed on one, read by the backend on the other
    b"hOsT: victim.internal\r\n",
])
def test_two_host_headers_get_400_and_reach_no_upstream(env: Env, extra: bytes) -> None:
    seen = len(env.echo.received())
    answer = _raw(env.gw.port, b"GET /dup HTTP/1.1\r\nHost: shop\r\n" + extra + b"Connection: close\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 400"), answer[:200]
    assert b"more than one Host header" in answer
    assert len(env.echo.received()) == seen


def test_conflicting_content_length_gets_400(env: Env) -> None:
    seen = len(env.echo.received())
    answer = _raw(env.gw.port, b"POST /cl HTTP/1.1\r\nHost: shop\r\nContent-Length: 3\r\nContent-Length: 5\r\n"
                               b"Connection: close\r\n\r\nabcde")
    assert answer.startswith(b"HTTP/1.1 400"), answer[:200]
    assert len(env.echo.received()) == seen


TIMEOUTS_CONFIG = """
entryPoints:
  web:
    transport:
      respondingTimeouts: {{readTimeout: 5s, idleTimeout: 3s}}
http:
  routers:
    echo: {{rule: "PathPrefix(`/`)", service: echo}}
  services:
    echo: {{loadBalancer: {{servers: [{{url: "{echo}"}}]}}}}
shadow:
  capture: {{enabled: false}}
"""


@pytest.fixture(scope="module")
def timeouts_gw(env: Env, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    """A gateway of its own with short respondingTimeouts (the other tests keep the defaults)."""
    cfg = tmp_path_factory.mktemp("timeouts") / "gw.yaml"
    cfg.write_text(TIMEOUTS_CONFIG.format(echo=env.echo.url))
    with GatewayProcess(cfg) as gw:
        yield gw


def test_idle_and_half_sent_connections_are_closed(timeouts_gw: GatewayProcess) -> None:
    """50 connections that send nothing, 50 that trickle one header byte every 0.5 s (mitmproxy's
    inactivity timeout alone would keep both open for ever) and one idle keep-alive connection:
    all closed by the gateway, while a normal request is still served."""
    gw = timeouts_gw
    # A first request warms the gateway up (its first answer may take seconds on a loaded machine).
    assert httpx.get(gw.url + "/warm", timeout=30).status_code == 200
    # 50 + 50: more would overflow the listen backlog of a gateway slow to accept on a loaded machine.
    idle = [socket.create_connection(("127.0.0.1", gw.port), timeout=30) for _ in range(50)]
    trickle = [socket.create_connection(("127.0.0.1", gw.port), timeout=30) for _ in range(50)]
    for sock in trickle:
        sock.sendall(b"GET /slow HTTP/1.1\r\nHost: shop\r\nX-Slow: ")
    kept_alive = socket.create_connection(("127.0.0.1", gw.port), timeout=30)
    kept_alive.sendall(b"GET /ka HTTP/1.1\r\nHost: shop\r\n\r\n")
    assert kept_alive.recv(65536).startswith(b"HTTP/1.1 200")
    open_socks = {s.fileno(): s for s in [*idle, *trickle, kept_alive]}
    trickling = {s.fileno() for s in trickle}
    deadline = time.monotonic() + 45
    next_byte = time.monotonic()
    try:
        while open_socks and time.monotonic() < deadline:
            if time.monotonic() >= next_byte:
                for fd in list(trickling & open_socks.keys()):
                    try:
                        open_socks[fd].send(b"a")
                    except OSError:
                        trickling.discard(fd)
                next_byte = time.monotonic() + 0.5
            readable, _, _ = select.select(list(open_socks.values()), [], [], 0.5)
            for sock in readable:
                try:
                    data = sock.recv(65536)
                except OSError:
                    data = b""
                if not data:  # closed by the gateway
                    open_socks.pop(sock.fileno()).close()
        assert httpx.get(gw.url + "/still-served", timeout=30).status_code == 200
        assert not open_socks, f"{len(open_socks)} of 101 connections still open after 45 s"
    finally:
        for sock in [*idle, *trickle, kept_alive]:
            sock.close()
    assert gw.wait_for_output("readTimeout passed") and gw.wait_for_output("idleTimeout passed")


def test_capture_keeps_the_prefix_and_marks_rows_truncated(env: Env) -> None:
    assert env.gw.stop() == 0
    rows = duckdb.sql(
        "select path, role, truncated, octet_length(resp_body) as kept, body_size from read_parquet("
        f"'{env.capture}/exchanges/**/*.parquet', union_by_name=true, hive_partitioning=true)").fetchall()
    by_path = {(path, role): (truncated, kept, size) for path, role, truncated, kept, size in rows}
    assert by_path[(f"/size/{200 * MB}", "primary")] == (True, CAPTURE_LIMIT, 200 * MB)
    truncated, kept, _size = by_path[("/small/one", "primary")]
    assert not truncated and kept == len(b'{"ok": true, "path": "/small/one"}')
    copies = [(t, k) for (path, role), (t, k, _s) in by_path.items() if role == "candidate"]
    assert len(copies) == 20 and all(t and k == CAPTURE_LIMIT for t, k in copies), copies
