"""The gateway end to end: real mitmdump + addons/gateway.py, real upstreams and clients on 127.0.0.1.

One gateway serves the whole module (routers per scenario, distinct paths per test); the last
test stops it and reads the capture it sealed.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import httpx
import pytest

from tests.conftest import GatewayProcess
from tests.upstream import Upstream, free_port

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
SLOW_SHADOW_S = 1.0
HANG_TIMEOUT_S = 1.5  # the slow shadow (1 s) answers within it, the hanging one (4 s) does not

CONFIG = """
http:
  routers:
    all: {{rule: "PathPrefix(`/`)", service: mono}}
    strangler: {{rule: "PathPrefix(`/api/orders`)", service: orders}}
    m100: {{rule: "PathPrefix(`/m100`)", service: m100}}
    m50: {{rule: "PathPrefix(`/m50`)", service: m50}}
    unsafe-ok: {{rule: "PathPrefix(`/unsafe-ok`)", service: m-unsafe}}
    bodycap: {{rule: "PathPrefix(`/bodycap`)", service: m-bodycap}}
    nobody: {{rule: "PathPrefix(`/nobody`)", service: m-nobody}}
    both: {{rule: "PathPrefix(`/both`)", service: m-both}}
    down: {{rule: "PathPrefix(`/down`)", service: m-down}}
    slow: {{rule: "PathPrefix(`/slow`)", service: m-slow}}
    hang: {{rule: "PathPrefix(`/hang`)", service: m-hang}}
    gone: {{rule: "PathPrefix(`/gone`)", service: m-gone}}
    primary-down: {{rule: "PathPrefix(`/primary-down`)", service: m-primary-down}}
  services:
    mono: {{loadBalancer: {{servers: [{{url: "{mono}"}}]}}}}
    orders: {{loadBalancer: {{servers: [{{url: "{orders}"}}]}}}}
    next: {{loadBalancer: {{servers: [{{url: "{next}"}}]}}}}
    next-unsafe: {{loadBalancer: {{servers: [{{url: "{next}"}}]}}}}
    sec: {{loadBalancer: {{servers: [{{url: "{sec}"}}]}}}}
    down: {{loadBalancer: {{servers: [{{url: "{down}"}}]}}}}
    slow: {{loadBalancer: {{servers: [{{url: "{slow}"}}]}}}}
    hang: {{loadBalancer: {{servers: [{{url: "{hang}"}}]}}}}
    slowmain: {{loadBalancer: {{servers: [{{url: "{slowmain}"}}]}}}}
    m100: {{mirroring: {{service: mono, mirrors: [{{name: next, percent: 100}}]}}}}
    m50: {{mirroring: {{service: mono, mirrors: [{{name: next, percent: 50}}]}}}}
    m-unsafe: {{mirroring: {{service: mono, mirrors: [{{name: next-unsafe, percent: 100}}]}}}}
    m-bodycap: {{mirroring: {{service: mono, maxBodySize: 10, mirrors: [{{name: next-unsafe, percent: 100}}]}}}}
    m-nobody: {{mirroring: {{service: mono, mirrorBody: false, mirrors: [{{name: next-unsafe, percent: 100}}]}}}}
    m-both: {{mirroring: {{service: mono, mirrors: [{{name: next, percent: 100}}, {{name: sec, percent: 100}}]}}}}
    m-down: {{mirroring: {{service: mono, mirrors: [{{name: down, percent: 100}}]}}}}
    m-slow: {{mirroring: {{service: mono, mirrors: [{{name: slow, percent: 100}}]}}}}
    m-hang: {{mirroring: {{service: mono, mirrors: [{{name: hang, percent: 100}}]}}}}
    m-gone: {{mirroring: {{service: slowmain, mirrors: [{{name: next, percent: 100}}]}}}}
    m-primary-down: {{mirroring: {{service: down, mirrors: [{{name: next, percent: 100}}]}}}}
shadow:
  gateway: {{id: gw-e2e}}
  capture: {{dir: "{capture}", segmentSeconds: 1}}
  mirroring:
    timeout: {timeout}s
    targets:
      next-unsafe: {{allowUnsafe: true}}
      sec: {{role: secondary}}
"""


class Env:
    def __init__(self, gw: GatewayProcess, ups: dict[str, Upstream], capture: Path) -> None:
        self.gw, self.ups, self.capture = gw, ups, capture
        self.client = httpx.Client(base_url=gw.url, timeout=30.0)

    def paths(self, name: str, prefix: str) -> list[str]:
        return [r.path for r in self.ups[name].received() if r.path.startswith(prefix)]

    def requests(self, name: str, prefix: str) -> list[Any]:
        return [r for r in self.ups[name].received() if r.path.startswith(prefix)]

    def settle(self, name: str, marker_path: str, expect: tuple[str, ...] = ()) -> None:
        """Wait until `marker_path` reached `name`, and each path in `expect` too.

        Copies travel as separate tasks over a pool of connections, so one sent earlier may land
        after the marker: a copy the test expects is waited for by name, not inferred from order."""
        self.client.get(marker_path)
        wanted = (marker_path, *expect)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not all(self.paths(name, p) for p in wanted):
            time.sleep(0.01)
        for p in wanted:
            assert self.paths(name, p), f"{p} never reached {name}"


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    ups = {name: Upstream(name).start() for name in ("mono", "orders", "next", "sec")}
    ups["slow"] = Upstream("slow", delay=SLOW_SHADOW_S).start()
    ups["hang"] = Upstream("hang", delay=4.0).start()
    ups["slowmain"] = Upstream("slowmain", delay=0.8).start()
    root = tmp_path_factory.mktemp("gw-e2e")
    capture = root / "capture"
    cfg = root / "gateway.yaml"
    cfg.write_text(CONFIG.format(**{n: u.url for n, u in ups.items()}, down=f"http://127.0.0.1:{free_port()}",
                                 capture=capture, timeout=HANG_TIMEOUT_S))
    gw = GatewayProcess(cfg).start()
    e = Env(gw, ups, capture)
    try:
        yield e
    finally:
        e.client.close()
        gw.close()
        for u in ups.values():
            u.stop()


def test_pass_through_keeps_request_and_adds_forwarded_headers(env: Env) -> None:
    r = env.client.post("/shop/cart?id=7&x=%2Fy", content=b'{"qty": 2}',
                        headers={"Host": "shop.example", "X-Custom": "a b", "Content-Type": "application/json"})
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/json"
    echo = r.json()
    assert echo["upstream"] == "mono"
    assert echo["method"] == "POST" and echo["path"] == "/shop/cart?id=7&x=%2Fy"
    assert echo["body"] == '{"qty": 2}'
    h = echo["headers"]
    assert h["host"] == "shop.example"  # passHostHeader defaults to true
    assert h["x-custom"] == "a b" and h["content-type"] == "application/json"
    assert h["x-forwarded-for"] == "127.0.0.1" and h["x-real-ip"] == "127.0.0.1"
    assert h["x-forwarded-host"] == "shop.example" and h["x-forwarded-proto"] == "http"
    assert h["x-forwarded-port"] == str(env.gw.port)
    assert "x-shadow-request" not in h and "x-shadow-request-id" not in h  # the primary is untouched


def test_strangler_fig_sends_one_prefix_to_the_new_service(env: Env) -> None:
    assert env.client.get("/api/orders/42").json()["upstream"] == "orders"
    assert env.client.get("/api/orders").json()["upstream"] == "orders"
    assert env.client.get("/api/customers/1").json()["upstream"] == "mono"
    assert env.client.get("/").json()["upstream"] == "mono"


def test_mirror_percent_is_a_deterministic_counter(env: Env) -> None:
    for i in range(6):
        r = env.client.get(f"/m50/{i}")
        assert r.status_code == 200 and r.json()["upstream"] == "mono"
    env.settle("next", "/m100/settle-m50", expect=("/m50/0", "/m50/2", "/m50/4"))
    assert env.paths("next", "/m50/") == ["/m50/0", "/m50/2", "/m50/4"]  # Traefik: requests 1, 3, 5


def test_mirrors_are_marked_with_the_request_id(env: Env) -> None:
    env.client.get("/m100/marked", headers={"Host": "shop.example", "traceparent": TRACEPARENT})
    env.settle("next", "/m100/settle-marked", expect=("/m100/marked",))
    (copy,) = env.requests("next", "/m100/marked")
    assert copy.headers["x-shadow-request"] == "1"
    assert len(copy.headers["x-shadow-request-id"]) == 36
    assert copy.headers["host"] == "shop.example"
    assert copy.headers["x-forwarded-host"] == "shop.example"


def test_a_connection_close_exchange_is_mirrored(env: Env) -> None:
    # The gateway closes such a client connection right after the answer: not "the client went away".
    assert env.client.get("/m100/closing", headers={"Connection": "close"}).status_code == 200
    env.settle("next", "/m100/settle-closing", expect=("/m100/closing",))
    assert env.paths("next", "/m100/closing") == ["/m100/closing"]


def test_unsafe_methods_are_mirrored_only_where_allowed(env: Env) -> None:
    r = env.client.post("/m100/order", content=b"buy")
    assert r.json()["body"] == "buy"
    env.settle("next", "/m100/settle-unsafe")
    assert env.paths("next", "/m100/order") == []
    env.client.post("/unsafe-ok/order", content=b"buy")
    env.settle("next", "/unsafe-ok/settle", expect=("/unsafe-ok/order",))
    (copy,) = env.requests("next", "/unsafe-ok/order")
    assert copy.method == "POST" and copy.body == b"buy"


def test_max_body_size_skips_the_mirror_but_serves_in_full(env: Env) -> None:
    small, big = b"0123456789", b"0123456789A"
    assert env.client.post("/bodycap/small", content=small).json()["body"] == small.decode()
    assert env.client.post("/bodycap/big", content=big).json()["body"] == big.decode()
    env.settle("next", "/bodycap/settle", expect=("/bodycap/small",))
    assert env.paths("next", "/bodycap/small") == ["/bodycap/small"]
    assert env.paths("next", "/bodycap/big") == []


def test_mirror_body_false_sends_the_copy_without_body(env: Env) -> None:
    assert env.client.put("/nobody/x", content=b"payload").json()["body"] == "payload"
    env.settle("next", "/nobody/settle", expect=("/nobody/x",))
    (copy,) = env.requests("next", "/nobody/x")
    assert copy.method == "PUT" and copy.body == b""


def test_two_mirrors_candidate_and_secondary(env: Env) -> None:
    env.client.get("/both/1")
    env.settle("sec", "/both/settle", expect=("/both/1",))
    env.settle("next", "/both/settle-next", expect=("/both/1",))
    assert env.paths("next", "/both/1") == ["/both/1"] and env.paths("sec", "/both/1") == ["/both/1"]


def _median_latency(client: httpx.Client, path: str, n: int = 5) -> tuple[float, list[httpx.Response]]:
    times, responses = [], []
    for i in range(n):
        t0 = time.perf_counter()
        responses.append(client.get(f"{path}/{i}"))
        times.append(time.perf_counter() - t0)
    return statistics.median(times), responses


@pytest.mark.parametrize("broken", ["down", "slow", "hang"])
def test_a_broken_shadow_never_reaches_the_client(env: Env, broken: str) -> None:
    baseline, plain = _median_latency(env.client, f"/plain-{broken}")
    latency, mirrored = _median_latency(env.client, f"/{broken}")
    for p, m in zip(plain, mirrored, strict=True):
        assert m.status_code == p.status_code == 200
        pb, mb = p.json(), m.json()
        assert mb["upstream"] == pb["upstream"] == "mono"
        assert mb["path"].split("/")[-1] == pb["path"].split("/")[-1]
    # The shadow answers 1 s late or never: a client that waited for it would take at least that
    # long per request. Only "not delayed by the shadow", not a timing target (bench/gateway.py
    # measures the overhead), so the bound is the shadow's delay, not the unmirrored baseline.
    assert latency < SLOW_SHADOW_S, (latency, baseline)


def test_client_gone_during_the_main_call_means_no_mirror(env: Env) -> None:
    with httpx.Client(base_url=env.gw.url, timeout=0.2) as impatient, pytest.raises(httpx.ReadTimeout):
        impatient.get("/gone/1")
    assert env.ups["slowmain"].wait_for(1)[0].path == "/gone/1"
    time.sleep(1.0)  # the main call ends (0.8 s) after the client left
    env.settle("next", "/m100/settle-gone")
    assert env.paths("next", "/gone") == []


def test_primary_refused_is_a_502_and_still_mirrored(env: Env) -> None:
    r = env.client.get("/primary-down/1")
    assert r.status_code == 502
    env.settle("next", "/m100/settle-primary-down", expect=("/primary-down/1",))
    assert env.paths("next", "/primary-down/1") == ["/primary-down/1"]  # Traefik mirrors after main returns


def test_capture_rows_after_stop(env: Env) -> None:
    time.sleep(HANG_TIMEOUT_S + 0.2)  # the last hanging copies time out and are captured
    assert env.gw.stop() == 0
    out = env.gw.output()
    assert "capture sealed" in out and "Traceback" not in out
    assert not list((env.capture / "exchanges").rglob("*.tmp"))
    con = duckdb.connect()
    rows = con.sql(
        f"select request_id, role, mode, service, router, status, error, path, method, latency_ms, gateway, "
        f"host, upstream, trace_id, span_id, client_key from read_parquet('{env.capture}/exchanges/**/*.parquet', union_by_name=true, "
        f"hive_partitioning=true)").fetchall()
    cols = ("request_id", "role", "mode", "service", "router", "status", "error", "path", "method", "latency_ms",
            "gateway", "host", "upstream", "trace_id", "span_id", "client_key")
    table = [dict(zip(cols, r, strict=True)) for r in rows]

    def find(path: str, role: str) -> list[dict[str, Any]]:
        return [r for r in table if r["path"] == path and r["role"] == role]

    (primary,) = find("/m100/marked", "primary")
    (candidate,) = find("/m100/marked", "candidate")
    (copy,) = env.requests("next", "/m100/marked")
    assert primary["request_id"] == candidate["request_id"] == copy.headers["x-shadow-request-id"]
    assert primary["mode"] == candidate["mode"] == "mirror"
    assert (primary["service"], candidate["service"]) == ("mono", "next")
    assert primary["router"] == candidate["router"] == "m100"
    assert primary["status"] == candidate["status"] == 200
    assert primary["host"] == "shop.example" and primary["gateway"] == "gw-e2e"
    for row in (primary, candidate):
        assert (row["trace_id"], row["span_id"]) == ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7")
        assert row["client_key"] == "127.0.0.1"
    assert primary["upstream"] == env.ups["mono"].url and candidate["upstream"] == env.ups["next"].url

    (served,) = find("/shop/cart", "primary")
    assert served["mode"] == "serve" and served["method"] == "POST" and served["router"] == "all"
    assert len(find("/both/1", "secondary")) == 1 and len(find("/both/1", "candidate")) == 1

    downs = find("/down/0", "candidate")
    assert downs and downs[0]["status"] is None and "connect" in downs[0]["error"].lower()
    hangs = find("/hang/0", "candidate")
    assert hangs and hangs[0]["status"] is None and hangs[0]["error"] == f"timeout after {HANG_TIMEOUT_S:g}s"
    (refused,) = find("/primary-down/1", "primary")
    assert refused["status"] is None and "connect call failed" in refused["error"].lower()
    assert len(find("/primary-down/1", "candidate")) == 1
    slows = find("/slow/0", "candidate")
    assert slows and slows[0]["status"] == 200 and slows[0]["latency_ms"] >= 1000

    stats = json.loads((env.capture / "_stats" / "gw-e2e.json").read_text())
    assert stats["mirror_errors"] >= 5 and stats["mirror_timeouts"] >= 5 and stats["mirror_shed"] == 0
    assert stats["mirror_skipped_unsafe_method"] >= 1 and stats["mirror_skipped_body_too_large"] >= 1


