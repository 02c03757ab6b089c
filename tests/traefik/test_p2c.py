"""Traefik's p2c (power of two random choices) tests, ported.

Source (Traefik TRAEFIK_VERSION, see tests/traefik/__init__.py):
pkg/server/service/loadbalancer/p2c/p2c_test.go — TestP2C, TestSticky, TestSticky_Fallback,
TestBalancerPropagate (as health: a down server is never picked; none up → 503),
TestBalancerAllServersFenced (as: no server can serve → 503). The mocked `rand.Intn` is the injected
`rng`; in-flight counts are held tickets. TestSticky_Fenced is not applicable: `fenced` servers are
set by Traefik's Kubernetes providers, never by a file.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from shadow.gateway.config import parse_config
from shadow.gateway.leastload import InflightBoard, InflightTicket, P2c
from shadow.gateway.shifting import RequestFacts, TrafficControl
from shadow.gateway.traffic import sticky_value


def mock_rand(vals: list[int]) -> Callable[[int], int]:
    it: Iterator[int] = iter(vals)
    return lambda _n: next(it)


P2C = [
    ("one healthy handler", [0], None, "0"),
    ("two handlers zero in flight", [0, 0], [1, 0], "1"),
    ("chooses lower of two", [0, 1], [1, 0], "0"),
    ("chooses lower of three", [10, 90, 40], [1, 1], "2"),
]


@pytest.mark.parametrize(("inflights", "rand", "expected"), [c[1:] for c in P2C], ids=[c[0] for c in P2C])
def test_p2c(inflights: list[int], rand: list[int] | None, expected: str) -> None:
    board = InflightBoard()
    held: list[InflightTicket] = [board.enter(str(i)) for i, n in enumerate(inflights) for _ in range(n)]
    balancer = P2c([str(i) for i in range(len(inflights))], board,
                   rng=mock_rand(rand) if rand is not None else lambda _n: pytest.fail("no draw with one server"))
    assert balancer.pick() == expected
    assert len(held) == sum(inflights)


def config(sticky: str = "") -> str:
    return f"""http:
  routers: {{r: {{rule: "PathPrefix(`/`)", service: s}}}}
  services:
    s:
      loadBalancer:
        strategy: p2c
        servers: [{{url: "http://first.example"}}, {{url: "http://second.example"}}]
        {sticky}
"""


def control_with(text: str, rand: list[int]) -> TrafficControl:
    return TrafficControl(parse_config(text), rng=mock_rand(rand))  # Traefik's test sets balancer.rand


def test_sticky() -> None:
    text = config("sticky: {cookie: {name: test, secure: true, httpOnly: true, sameSite: none, maxAge: 42, "
                  "path: /foo}}")
    control = control_with(text, [1, 0])
    cookies: dict[str, str] = {}
    served = []
    for _ in range(3):
        header = [("Cookie", "; ".join(f"{k}={v}" for k, v in cookies.items()))] if cookies else []
        d = control.decide("s", (), RequestFacts.from_headers("1.2.3.4", header))
        assert d.server is not None
        served.append(d.server.url)
        control.report(d, 200, 1.0, network_error=False)
        for line in d.set_cookies:
            name, value = line.split(";")[0].split("=", 1)
            assert value not in ("first", "second")  # a hash, never the name
            cookies[name] = value
            assert "HttpOnly" in line and "Secure" in line and "SameSite=None" in line
            assert "Max-Age=42" in line and "Path=/foo" in line
    assert served == ["http://second.example"] * 3


def test_sticky_fallback() -> None:
    # A cookie written by an older Traefik (the raw name) still sticks.
    control = control_with(config("sticky: {cookie: {name: test}}"), [1, 0])
    for _ in range(3):
        d = control.decide("s", (), RequestFacts.from_headers("1.2.3.4", [("Cookie", "test=http://second.example")]))
        assert d.server is not None and d.server.url == "http://second.example"
        assert d.set_cookies == [f"test={sticky_value('http://second.example')}; Path=/"]


def test_down_servers_are_never_picked_and_none_up_is_503() -> None:
    control = TrafficControl(parse_config(config()))
    control.health.set_active("s", "http://second.example", False)
    for _ in range(5):
        d = control.decide("s", (), RequestFacts.from_headers("1.2.3.4", []))
        assert d.server is not None and d.server.url == "http://first.example"
        control.report(d, 200, 1.0, network_error=False)
    control.health.set_active("s", "http://first.example", False)
    d = control.decide("s", (), RequestFacts.from_headers("1.2.3.4", []))
    assert d.server is None and d.status == 503
    control.health.set_active("s", "http://second.example", True)
    d = control.decide("s", (), RequestFacts.from_headers("1.2.3.4", []))
    assert d.server is not None and d.server.url == "http://second.example"


def test_requests_in_flight_steer_the_choice_and_end_with_their_outcome() -> None:
    control = TrafficControl(parse_config(config()))
    facts = RequestFacts.from_headers("1.2.3.4", [])
    busy = [control.decide("s", (), facts) for _ in range(6)]  # none answered yet
    urls = [d.server.url for d in busy if d.server is not None]
    # Two servers, always both drawn: each new request goes to the one with fewer in flight.
    assert abs(urls.count("http://first.example") - urls.count("http://second.example")) <= 1
    for d in busy:
        control.report(d, 200, 1.0, network_error=False)
    assert control.inflight.count("s\x00http://first.example") == 0
    assert control.inflight.count("s\x00http://second.example") == 0


def test_a_decision_dropped_without_an_outcome_stops_counting() -> None:
    control = TrafficControl(parse_config(config()))
    d = control.decide("s", (), RequestFacts.from_headers("1.2.3.4", []))
    assert d.server is not None
    key = f"s\x00{d.server.url}"
    assert control.inflight.count(key) == 1
    del d  # a flow that ended without any hook reporting it
    assert control.inflight.count(key) == 0
