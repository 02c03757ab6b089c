"""Traefik's leasttime tests, ported.

Source (Traefik TRAEFIK_VERSION, see tests/traefik/__init__.py):
pkg/server/service/loadbalancer/leasttime/leasttime_test.go. Go's handlers sleep and call
`GotFirstResponseByte`; here a simulated server records its time to first byte through
`TrafficControl.report(first_byte_ms=…)`, so no test waits on a clock. Tests that set the ring of
response times by hand set it through `LeastTime.record`.

Not applicable: TestBalancerPropagate and TestBalancerRegisterStatusUpdaterWithoutHealthCheck (parent
status hooks; a parent here asks `service_up`, tested in tests/test_shifting.py), the Fenced tests
(`fenced` is set by Kubernetes providers only), TestConcurrent* (Go's goroutine safety: the gateway
decides on one event loop), TestScoreCalculationColdStart (adds a server to a live balancer: any
change of servers is a new configuration, which builds a new balancer, here as in Traefik).
"""

from __future__ import annotations

import pytest

from shadow.errors import ConfigError
from shadow.gateway.config import parse_config
from shadow.gateway.leastload import SAMPLE_SIZE, InflightBoard, LeastTime
from shadow.gateway.shifting import RequestFacts, TrafficControl

FACTS = RequestFacts.from_headers("1.2.3.4", [])


def config(servers: dict[str, int], sticky: str = "") -> str:
    listed = ", ".join(f'{{url: "http://{name}.example", weight: {w}}}' for name, w in servers.items())
    return f"""http:
  routers: {{r: {{rule: "PathPrefix(`/`)", service: s}}}}
  services:
    s:
      loadBalancer:
        strategy: leasttime
        servers: [{listed}]
        {sticky}
"""


def serve(control: TrafficControl, ttfb_ms: dict[str, float], n: int,
          cookie: str | None = None) -> dict[str, int]:
    """n sequential requests; each named server answers after its time to first byte."""
    counts = dict.fromkeys(ttfb_ms, 0)
    facts = FACTS if cookie is None else RequestFacts.from_headers("1.2.3.4", [("Cookie", cookie)])
    for _ in range(n):
        d = control.decide("s", (), facts)
        assert d.server is not None, d.reason
        name = d.server.host.split(".")[0]
        counts[name] += 1
        control.report(d, 200, ttfb_ms[name], network_error=False, first_byte_ms=ttfb_ms[name])
    return counts


def test_balancer() -> None:
    counts = serve(TrafficControl(parse_config(config({"first": 1, "second": 1}))), {"first": 5, "second": 5}, 10)
    assert counts["first"] > 0 and counts["second"] > 0 and sum(counts.values()) == 10


def test_balancer_no_service() -> None:
    assert LeastTime([], InflightBoard()).pick() is None


def test_balancer_no_service_up() -> None:
    control = TrafficControl(parse_config(config({"first": 1, "second": 1})))
    control.health.set_active("s", "http://first.example", False)
    control.health.set_active("s", "http://second.example", False)
    d = control.decide("s", (), FACTS)
    assert d.server is None and d.status == 503


def test_balancer_one_server_down() -> None:
    control = TrafficControl(parse_config(config({"first": 1, "second": 1})))
    control.health.set_active("s", "http://second.example", False)
    assert serve(control, {"first": 0, "second": 0}, 3) == {"first": 3, "second": 0}


def test_balancer_one_server_down_then_up() -> None:
    control = TrafficControl(parse_config(config({"first": 1, "second": 1})))
    control.health.set_active("s", "http://second.example", False)
    assert serve(control, {"first": 5, "second": 5}, 3) == {"first": 3, "second": 0}
    control.health.set_active("s", "http://second.example", True)
    counts = serve(control, {"first": 5, "second": 5}, 20)
    assert counts["first"] > 0 and counts["second"] > 0 and sum(counts.values()) == 20


def test_balancer_all_servers_zero_weight() -> None:
    assert LeastTime([("first", 0), ("second", 0)], InflightBoard()).pick() is None
    with pytest.raises(ConfigError, match="every server has weight 0"):  # a file cannot even say it
        parse_config(config({"first": 0, "second": 0}))


def test_balancer_one_server_zero_weight() -> None:
    control = TrafficControl(parse_config(config({"first": 1, "second": 0})))
    assert serve(control, {"first": 0, "second": 0}, 3) == {"first": 3, "second": 0}


def test_balancer_sticky() -> None:
    control = TrafficControl(parse_config(config({"first": 1, "second": 1}, "sticky: {cookie: {name: test}}")))
    first = control.decide("s", (), FACTS)
    assert first.server is not None and first.set_cookies
    cookie = first.set_cookies[0].split(";")[0]
    again = control.decide("s", (), RequestFacts.from_headers("1.2.3.4", [("Cookie", cookie)]))
    assert again.server == first.server


def test_balancer_sticky_fallback() -> None:
    # The sticky server goes down: the request falls back to least-time, and a new cookie is written.
    control = TrafficControl(parse_config(config({"server1": 1, "server2": 1}, "sticky: {cookie: {name: test}}")))
    first = control.decide("s", (), FACTS)
    assert first.server is not None
    cookie = first.set_cookies[0].split(";")[0]
    control.health.set_active("s", first.server.url, False)
    other = control.decide("s", (), RequestFacts.from_headers("1.2.3.4", [("Cookie", cookie)]))
    assert other.server is not None and other.server != first.server and other.set_cookies


def test_ring_buffer_basic() -> None:
    lt = LeastTime([("test", 1)], InflightBoard())
    assert lt.mean_ms("test") == 0.0
    lt.record("test", 10)
    assert lt.mean_ms("test") == 10.0
    lt.record("test", 20)
    lt.record("test", 30)
    assert lt.mean_ms("test") == 20.0


def test_ring_buffer_wraparound() -> None:
    lt = LeastTime([("test", 1)], InflightBoard())
    for _ in range(SAMPLE_SIZE):
        lt.record("test", 10)
    assert lt.mean_ms("test") == 10.0
    lt.record("test", 20)
    assert lt.mean_ms("test") == pytest.approx(10.1, abs=1e-12)
    for _ in range(10):
        lt.record("test", 30)
    assert lt.mean_ms("test") == pytest.approx(12.1, abs=1e-12)


def test_ring_buffer_large() -> None:
    lt = LeastTime([("test", 1)], InflightBoard())
    for i in range(150):
        lt.record("test", i + 1)
    assert lt.mean_ms("test") == 100.5  # the last 100 samples: 51..150


def test_inflight_counter() -> None:
    control = TrafficControl(parse_config(config({"test": 1})))
    key = "s\x00http://test.example"
    assert control.inflight.count(key) == 0
    d = control.decide("s", (), FACTS)
    assert control.inflight.count(key) == 1  # during the request
    control.report(d, 200, 1.0, network_error=False)
    assert control.inflight.count(key) == 0  # after it


def test_ttfb_measurement_in_whole_milliseconds() -> None:
    control = TrafficControl(parse_config(config({"slow": 1})))
    for ttfb in (50.2, 50.9, 49.999, 50.0, 50.5):
        d = control.decide("s", (), FACTS)
        control.report(d, 200, 80.0, network_error=False, first_byte_ms=ttfb)  # the TTFB, not the latency
    assert control.mean_first_byte_ms("s", "http://slow.example") == pytest.approx(49.8)


def test_network_errors_record_no_time() -> None:
    control = TrafficControl(parse_config(config({"slow": 1})))
    d = control.decide("s", (), FACTS)
    control.report(d, None, 30_000.0, network_error=True)
    assert control.mean_first_byte_ms("s", "http://slow.example") == 0.0


def test_score_calculation_with_weights() -> None:
    control = TrafficControl(parse_config(config({"weighted": 3, "normal": 1})))
    ttfb = {"weighted": 50.0, "normal": 50.0}
    serve(control, ttfb, 2)  # warm both
    assert serve(control, ttfb, 10) == {"weighted": 10, "normal": 0}


def test_score_calculation_with_inflight() -> None:
    board = InflightBoard()
    lt = LeastTime([("server1", 1), ("server2", 1)], board)
    for key in ("server1", "server2"):
        for _ in range(SAMPLE_SIZE):
            lt.record(key, 10.0)
    held = [board.enter("server1") for _ in range(5)]
    counts = {"server1": 0, "server2": 0}
    for _ in range(5):
        chosen = lt.pick()
        assert chosen is not None
        counts[chosen] += 1
        held.append(board.enter(chosen))
    assert counts == {"server1": 0, "server2": 5}


def test_fast_server_gets_more_traffic() -> None:
    counts = serve(TrafficControl(parse_config(config({"fast": 1, "slow": 1}))), {"fast": 20, "slow": 100}, 50)
    assert counts["fast"] > counts["slow"] and counts["fast"] > 48


def test_traffic_shifts_when_performance_degrades() -> None:
    lt = LeastTime([("server1", 1), ("server2", 1)], InflightBoard())
    for key in ("server1", "server2"):
        for _ in range(SAMPLE_SIZE):
            lt.record(key, 5.0)
    counts = {"server1": 0, "server2": 0}
    for _ in range(50):
        counts[lt.pick() or ""] += 1
    assert abs(counts["server1"] - 25) <= 1 and abs(counts["server2"] - 25) <= 1
    for _ in range(SAMPLE_SIZE):
        lt.record("server1", 50.0)
    counts = {"server1": 0, "server2": 0}
    for _ in range(60):
        counts[lt.pick() or ""] += 1
    assert counts["server2"] > 35 and counts["server1"] < 25


def test_multiple_servers_with_same_score() -> None:
    lt = LeastTime([("server1", 1), ("server2", 1), ("server3", 1)], InflightBoard())
    for key in ("server1", "server2", "server3"):
        for _ in range(SAMPLE_SIZE):
            lt.record(key, 5.0)
    counts = {"server1": 0, "server2": 0, "server3": 0}
    for _ in range(90):
        counts[lt.pick() or ""] += 1
    assert all(abs(n - 30) <= 1 for n in counts.values()), counts


def test_wrr_tie_breaking_weighted_distribution() -> None:
    lt = LeastTime([("weighted", 3), ("normal", 1)], InflightBoard())
    for _ in range(SAMPLE_SIZE):
        lt.record("weighted", 15.0)
        lt.record("normal", 5.0)
    counts = {"weighted": 0, "normal": 0}
    for _ in range(80):
        counts[lt.pick() or ""] += 1
    assert abs(counts["weighted"] - 60) <= 1 and abs(counts["normal"] - 20) <= 1


def test_response_times_survive_a_reload_that_keeps_the_service() -> None:
    text = config({"fast": 1, "slow": 1})
    first = TrafficControl(parse_config(text))
    serve(first, {"fast": 20, "slow": 100}, 10)
    second = TrafficControl(parse_config(text.replace("r: {rule", "r2: {rule")), first)
    assert serve(second, {"fast": 20, "slow": 100}, 10) == {"fast": 10, "slow": 0}
