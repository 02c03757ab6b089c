"""Traefik's weighted round-robin tests, ported.

Source (Traefik TRAEFIK_VERSION, see tests/traefik/__init__.py):
pkg/server/service/loadbalancer/wrr/wrr_test.go. Go's balancer gets children in the order of the
test; `EdfWrr` without a seed keeps that order (the gateway shuffles once per configuration with a
seed, as Traefik's service manager shuffles servers). Health (`SetStatus`) is the `healthy`
predicate. Sticky cases run through `TrafficControl` with the cookie parsed from a file.
Not applicable: TestBalancerAllServersFenced and TestSticky_Fenced (`fenced` is set by Kubernetes
providers only), TestBalancerPropagate (parent status hooks: a parent asks `service_up`).
"""

from __future__ import annotations

from collections import Counter

from shadow.gateway.config import parse_config
from shadow.gateway.shifting import RequestFacts, TrafficControl
from shadow.gateway.traffic import EdfWrr, sticky_value


def run(wrr: EdfWrr, n: int, down: frozenset[str] = frozenset()) -> list[str | None]:
    return [wrr.pick(lambda name: name not in down) for _ in range(n)]


def test_balancer() -> None:
    assert Counter(run(EdfWrr([("first", 3), ("second", 1)]), 4)) == {"first": 3, "second": 1}


def test_balancer_no_service() -> None:
    assert EdfWrr([]).pick() is None  # 503


def test_balancer_one_server_zero_weight() -> None:
    assert run(EdfWrr([("first", 1), ("second", 0)]), 3) == ["first"] * 3


def test_balancer_no_service_up() -> None:
    assert run(EdfWrr([("first", 1), ("second", 1)]), 1, frozenset({"first", "second"})) == [None]


def test_balancer_one_server_down() -> None:
    assert run(EdfWrr([("first", 1), ("second", 1)]), 3, frozenset({"second"})) == ["first"] * 3


def test_balancer_down_then_up() -> None:
    wrr = EdfWrr([("first", 1), ("second", 1)])
    assert run(wrr, 3, frozenset({"second"})) == ["first"] * 3
    assert Counter(run(wrr, 2)) == {"first": 1, "second": 1}


def test_balancer_all_servers_zero_weight() -> None:
    assert EdfWrr([("first", 0), ("second", 0)]).pick() is None


def test_balancer_bias() -> None:
    # Spread evenly from the start: no start-up regime that over-favours the heavy child.
    got = ["A" if name == "first" else "B" for name in run(EdfWrr([("first", 11), ("second", 3)]), 14)]
    assert got == ["A", "A", "A", "B", "A", "A", "A", "A", "B", "A", "A", "A", "B", "A"]


STICKY = """http:
  routers: {r: {rule: "PathPrefix(`/`)", service: s}}
  services:
    s:
      weighted:
        services: [{name: first, weight: 1}, {name: second, weight: 2}]
        sticky: {cookie: {name: test, secure: true, httpOnly: true, sameSite: none, domain: foo.com, maxAge: 42,
                          path: /foo}}
    first: {loadBalancer: {servers: [{url: "http://first.example"}]}}
    second: {loadBalancer: {servers: [{url: "http://second.example"}]}}
"""


def unshuffled(text: str) -> TrafficControl:
    return TrafficControl(parse_config(text), shuffle=False)  # Go's test adds children in order, unshuffled


def test_sticky() -> None:
    control = unshuffled(STICKY)
    cookies: dict[str, str] = {}
    served, lines = [], []
    for _ in range(3):
        header = [("Cookie", "; ".join(f"{k}={v}" for k, v in cookies.items()))] if cookies else []
        d = control.decide("s", (), RequestFacts.from_headers("1.2.3.4", header))
        assert d.split_child is not None
        served.append(d.split_child)
        for line in d.set_cookies:
            name, value = line.split(";")[0].split("=", 1)
            assert value not in ("first", "second")
            cookies[name] = value
            lines.append(line)
    assert served == ["second"] * 3
    assert lines == [f"test={sticky_value('second')}; Path=/foo; Domain=foo.com; Max-Age=42; HttpOnly; Secure; "
                     "SameSite=None"]


def test_sticky_fallback() -> None:
    control = unshuffled(STICKY)
    for _ in range(3):  # the raw name, as an older Traefik wrote it
        d = control.decide("s", (), RequestFacts.from_headers("1.2.3.4", [("Cookie", "test=second")]))
        assert d.split_child == "second"
