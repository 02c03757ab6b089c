"""Traffic shifting end to end: a real mitmdump gateway, real upstreams on 127.0.0.1, httpx.

One gateway serves several routes (by path prefix), each over its own upstreams:
/sticky: weighted + sticky cookie + active health checks; /fo: status-range failover;
/cb: circuit breaker; capture rows of the split traffic are read after the stop.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import duckdb
import httpx
import pytest

from shadow.gateway.traffic import sticky_value
from tests.conftest import GatewayProcess
from tests.upstream import ReceivedRequest, Response, Upstream, echo, free_port

CONFIG = """
http:
  routers:
    sticky: {{rule: "PathPrefix(`/sticky`)", service: split}}
    fo: {{rule: "PathPrefix(`/fo`)", service: fo}}
    cb: {{rule: "PathPrefix(`/cb`)", service: flaky-cb, middlewares: [breaker]}}
    dead: {{rule: "PathPrefix(`/dead`)", service: dead-fo}}
    hrw: {{rule: "PathPrefix(`/hrw`)", service: hrw}}
    hfo: {{rule: "PathPrefix(`/hfo`)", service: hfo}}
  services:
    split:
      weighted:
        services: [{{name: mono, weight: 1}}, {{name: next, weight: 1}}]
        sticky: {{cookie: {{name: lb, secure: true, sameSite: lax, maxAge: -1}}}}
        healthCheck: {{}}
    mono: {{loadBalancer: {{servers: [{{url: "{mono}"}}]}}}}
    next:
      loadBalancer:
        servers: [{{url: "{nxt}"}}]
        healthCheck: {{path: /health, interval: 200ms, timeout: 3s}}
    fo: {{failover: {{service: flaky, fallback: mono, errors: {{status: ["500-504"], maxRequestBodyBytes: 64}}}}}}
    flaky: {{loadBalancer: {{servers: [{{url: "{flaky}"}}]}}}}
    dead-fo: {{failover: {{service: dead, fallback: mono}}}}
    hrw: {{highestRandomWeight: {{services: [{{name: hrw-a}}, {{name: hrw-b}}]}}}}
    hrw-a: {{loadBalancer: {{servers: [{{url: "{hrw_a}"}}]}}}}
    hrw-b: {{loadBalancer: {{servers: [{{url: "{hrw_b}"}}]}}}}
    hfo: {{failover: {{service: prim, fallback: mono}}}}
    prim:
      loadBalancer:
        servers: [{{url: "{prim}"}}]
        healthCheck: {{path: /health, interval: 200ms, timeout: 3s}}
    dead:
      loadBalancer:
        servers: [{{url: "{dead}"}}]
        passiveHealthCheck: {{failureWindow: 1s, maxFailedAttempts: 2}}
    flaky-cb: {{loadBalancer: {{servers: [{{url: "{flaky_cb}"}}]}}}}
  middlewares:
    breaker:
      circuitBreaker:
        expression: "ResponseCodeRatio(500, 600, 0, 600) > 0.5"
        checkPeriod: 50ms
        fallbackDuration: 1s
        recoveryDuration: 500ms
        responseCode: 529
shadow:
  gateway: {{id: gw-traffic}}
  capture: {{dir: "{capture}", segmentSeconds: 1}}
  split: {{candidates: [next, hrw-b], clientKey: {{header: X-Client-Id}}}}
"""


class Switch:
    """A handler whose answer status the test flips."""

    def __init__(self, name: str, status: int) -> None:
        self.status = status
        self.inner = echo(name)

    def __call__(self, req: ReceivedRequest) -> Response:
        _, headers, body = self.inner(req)
        return self.status, headers, body


class Env:
    def __init__(self, gw: GatewayProcess, ups: dict[str, Upstream], capture: Path, flaky: Switch,
                 flaky_cb: Switch, next_port: int) -> None:
        self.gw, self.ups, self.capture, self.flaky, self.flaky_cb = gw, ups, capture, flaky, flaky_cb
        self.next_port = next_port
        self.client = httpx.Client(base_url=gw.url, timeout=30.0)


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    root = tmp_path_factory.mktemp("traffic")
    flaky, flaky_cb = Switch("flaky", 503), Switch("flaky-cb", 500)
    next_port = free_port()
    ups = {"mono": Upstream("mono").start(), "next": Upstream("next", port=next_port).start(),
           "flaky": Upstream("flaky", handler=flaky).start(),
           "flaky_cb": Upstream("flaky-cb", handler=flaky_cb).start(),
           "hrw_a": Upstream("hrw-a").start(), "hrw_b": Upstream("hrw-b").start(),
           "prim": Upstream("prim", port=free_port()).start()}
    config = root / "gw.yaml"
    capture = root / "capture"
    config.write_text(CONFIG.format(mono=ups["mono"].url, nxt=ups["next"].url, flaky=ups["flaky"].url,
                                    flaky_cb=ups["flaky_cb"].url, capture=capture,
                                    dead=f"http://127.0.0.1:{free_port()}", hrw_a=ups["hrw_a"].url,
                                    hrw_b=ups["hrw_b"].url, prim=ups["prim"].url))
    gw = GatewayProcess(config).start()
    e = Env(gw, ups, capture, flaky, flaky_cb, next_port)
    try:
        yield e
    finally:
        e.client.close()
        gw.close()
        for up in ups.values():
            up.stop()


def served_by(resp: httpx.Response) -> str:
    return str(resp.json()["upstream"])


def wait_until(check: Callable[[], bool], timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.05)
    return False


def test_sticky_cookie_is_set_honoured_and_reissued_for_a_dead_target(env: Env) -> None:
    first = env.client.get("/sticky/a")
    assert first.status_code == 200
    cookie = first.headers["set-cookie"]
    child = "mono" if served_by(first) == "mono" else "next"
    assert cookie == f"lb={sticky_value(child)}; Path=/; Max-Age=0; Secure; SameSite=Lax"
    pinned = {"lb": sticky_value("next")}
    for _ in range(4):  # a valid cookie naming a healthy child: there, and no new Set-Cookie
        resp = env.client.get("/sticky/b", cookies=pinned)
        assert served_by(resp) == "next" and "set-cookie" not in resp.headers
    seen = len(env.gw.output())  # only health messages logged from now on count
    env.ups["next"].stop()  # the pinned target dies; the active check marks it down
    try:
        assert wait_until(lambda: f"{env.next_port} is down" in env.gw.output()[seen:])
        for _ in range(3):
            resp = env.client.get("/sticky/c", cookies=pinned)
            assert resp.status_code == 200 and served_by(resp) == "mono"  # never a 502
            assert resp.headers["set-cookie"].startswith(f"lb={sticky_value('mono')};")
    finally:
        seen = len(env.gw.output())
        env.ups["next"] = Upstream("next", port=env.next_port).start()  # revived on the same port
    assert wait_until(lambda: f"{env.next_port} is up" in env.gw.output()[seen:])
    resp = env.client.get("/sticky/d", cookies=pinned)
    assert served_by(resp) == "next" and "set-cookie" not in resp.headers


def test_status_range_failover_resends_the_buffered_request(env: Env) -> None:
    before = len(env.ups["flaky"].received())
    resp = env.client.post("/fo/orders?x=1", content=b'{"n": 1}', headers={"Content-Type": "application/json"})
    assert resp.status_code == 200 and served_by(resp) == "mono"
    body = resp.json()
    assert body["path"] == "/fo/orders?x=1" and body["body"] == '{"n": 1}' and body["method"] == "POST"
    assert len(env.ups["flaky"].received()) == before + 1  # the main service was tried first
    too_big = env.client.post("/fo/orders", content=b"x" * 65)
    assert too_big.status_code == 413
    env.flaky.status = 200
    try:
        assert served_by(env.client.get("/fo/ok")) == "flaky"  # out of range: the main answer stands
    finally:
        env.flaky.status = 503


def test_a_dead_main_never_costs_a_502_when_the_fallback_is_healthy(env: Env) -> None:
    # No active check: the first requests find the main refusing connections and are re-sent to
    # the fallback; two refusals within the failure window mark it down (passive health).
    for i in range(5):
        resp = env.client.post(f"/dead/{i}", content=b"payload")
        assert resp.status_code == 200 and served_by(resp) == "mono"
        assert resp.json()["body"] == "payload"


def test_hrw_on_a_header_is_stable_per_client_behind_one_ip(env: Env) -> None:
    first = {f"c{i}": served_by(env.client.get("/hrw/x", headers={"X-Client-Id": f"c{i}"})) for i in range(30)}
    assert set(first.values()) == {"hrw-a", "hrw-b"}  # spread, though every request comes from one IP
    again = {c: served_by(env.client.get("/hrw/y", headers={"X-Client-Id": c})) for c in first}
    assert again == first


def test_health_driven_failover_with_the_main_killed_and_revived(env: Env) -> None:
    port = env.ups["prim"].port
    assert served_by(env.client.get("/hfo/a")) == "prim"
    seen = len(env.gw.output())  # a flap logged earlier must not satisfy the waits below
    env.ups["prim"].stop()
    try:
        assert wait_until(lambda: f"{port} is down" in env.gw.output()[seen:])
        for _ in range(3):
            resp = env.client.get("/hfo/b")
            assert resp.status_code == 200 and served_by(resp) == "mono"
    finally:
        seen = len(env.gw.output())
        env.ups["prim"] = Upstream("prim", port=port).start()
    assert wait_until(lambda: f"{port} is up" in env.gw.output()[seen:])
    assert served_by(env.client.get("/hfo/c")) == "prim"


def test_circuit_breaker_opens_on_a_failing_upstream_and_recovers(env: Env) -> None:
    statuses = []
    for _ in range(40):
        statuses.append(env.client.get("/cb/x").status_code)
        if statuses[-1] == 529:
            break
        time.sleep(0.01)
    assert statuses[-1] == 529 and set(statuses[:-1]) <= {500}
    hits = len(env.ups["flaky_cb"].received())
    assert all(env.client.get("/cb/y").status_code == 529 for _ in range(5))
    assert len(env.ups["flaky_cb"].received()) == hits  # open: the upstream is spared
    env.flaky_cb.status = 200
    time.sleep(1.0)  # fallbackDuration
    seen = [env.client.get("/cb/z").status_code for _ in range(30)]
    assert 200 in seen
    time.sleep(0.6)  # recoveryDuration: closed again
    assert all(env.client.get("/cb/w").status_code == 200 for _ in range(5))


def test_split_rows_are_captured_with_role_and_client_key(env: Env) -> None:
    for i in range(6):
        env.client.get(f"/sticky/row{i}", cookies={"lb": sticky_value("next" if i % 2 else "mono")})
    env.gw.stop()
    rows = duckdb.connect().execute(
        f"SELECT mode, role, service, client_key FROM read_parquet('{env.capture}/exchanges/**/*.parquet', "
        "union_by_name=true, hive_partitioning=true) WHERE path LIKE '/sticky/row%'").fetchall()
    assert len(rows) == 6
    assert {r[0] for r in rows} == {"split"}
    assert sorted({(r[1], r[2], r[3]) for r in rows}) == [
        ("candidate", "next", "127.0.0.1"), ("primary", "mono", "127.0.0.1")]
