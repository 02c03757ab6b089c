"""Per-request traffic decisions over a loaded configuration (no proxy)."""

from __future__ import annotations

from collections import Counter

from shadow.gateway.config import parse_config
from shadow.gateway.shifting import RequestFacts, TrafficControl
from shadow.gateway.traffic import sticky_value

CONFIG = """
http:
  routers:
    app: {rule: "PathPrefix(`/`)", service: split}
    fo: {rule: "PathPrefix(`/fo`)", service: fo}
  services:
    split:
      weighted:
        services: [{name: mono, weight: 3}, {name: inner, weight: 1}]
        sticky: {cookie: {name: lb, httpOnly: true}}
        healthCheck: {}
    inner:
      weighted:
        services: [{name: next-a, weight: 1}, {name: next-b, weight: 1}]
    mono: {loadBalancer: {servers: [{url: "http://127.0.0.1:8001"}]}}
    next-a: {loadBalancer: {servers: [{url: "http://127.0.0.1:8002"}]}}
    next-b: {loadBalancer: {servers: [{url: "http://127.0.0.1:8003"}], healthCheck: {path: /health}}}
    fo: {failover: {service: next-b, fallback: mono, errors: {status: ["500-504"]}}}
shadow:
  split: {candidates: [inner]}
"""


def facts(cookies: dict[str, str] | None = None, ip: str = "10.0.0.1") -> RequestFacts:
    header = "; ".join(f"{k}={v}" for k, v in (cookies or {}).items())
    return RequestFacts.from_headers(ip, [("Cookie", header)] if header else [])


def test_nested_weighted_proportions_and_split_fields() -> None:
    control = TrafficControl(parse_config(CONFIG), seed="t")
    served: Counter[str] = Counter()
    for _ in range(40):
        d = control.decide("split", (), facts())
        assert d.service is not None
        served[d.service.name] += 1
        assert d.split_child in ("mono", "inner") and d.split_parent == "split"
        assert d.client_key == "10.0.0.1"  # the client, not the cookie (which names the child)
        assert len(d.set_cookies) == 1 and d.set_cookies[0].startswith("lb=")
        assert "HttpOnly" in d.set_cookies[0]
    assert served == {"mono": 30, "next-a": 5, "next-b": 5}  # 3:1, the 1 split evenly inside


def test_sticky_cookie_honoured_then_reissued_when_the_target_dies() -> None:
    control = TrafficControl(parse_config(CONFIG), seed="t")
    cookie = {"lb": sticky_value("inner")}
    for _ in range(5):
        d = control.decide("split", (), facts(cookie))
        assert d.split_child == "inner" and d.set_cookies == []
    for url in ("http://127.0.0.1:8002", "http://127.0.0.1:8003"):
        control.health.set_active("next-a" if url.endswith("2") else "next-b", url, False)
    d = control.decide("split", (), facts(cookie))
    assert d.split_child == "mono" and d.set_cookies == [f"lb={sticky_value('mono')}; Path=/; HttpOnly"]


def test_failover_by_health_and_status_ranges() -> None:
    control = TrafficControl(parse_config(CONFIG), seed="t")
    d = control.decide("fo", (), facts())
    assert d.service is not None and d.service.name == "next-b" and d.failover is not None
    control.health.set_active("next-b", "http://127.0.0.1:8003", False)
    d = control.decide("fo", (), facts())
    assert d.service is not None and d.service.name == "mono" and d.failover is None
    control.health.set_active("mono", "http://127.0.0.1:8001", False)
    d = control.decide("fo", (), facts())
    assert d.service is None and d.status == 503


def test_state_survives_a_reload_when_the_definition_is_unchanged() -> None:
    first = TrafficControl(parse_config(CONFIG), seed="t")
    first.health.set_active("next-b", "http://127.0.0.1:8003", False)
    changed = CONFIG.replace("weight: 3", "weight: 2")
    second = TrafficControl(parse_config(changed), first, seed="t")
    assert not second.health.is_up("next-b", "http://127.0.0.1:8003")  # next-b unchanged
    served = Counter(second.decide("split", (), facts()).split_child for _ in range(30))
    assert served == {"mono": 20, "inner": 10}  # the new weights, a fresh cycle


def test_hrw_on_a_configured_header() -> None:
    text = """
http:
  routers: {r: {rule: "PathPrefix(`/`)", service: h}}
  services:
    h: {highestRandomWeight: {services: [{name: monolith}, {name: orders-next}]}}
    monolith: {loadBalancer: {servers: [{url: "http://127.0.0.1:8001"}]}}
    orders-next: {loadBalancer: {servers: [{url: "http://127.0.0.1:8002"}]}}
shadow: {split: {clientKey: {header: X-Client-Id}}}
"""
    control = TrafficControl(parse_config(text))
    same_ip = [control.decide("h", (), RequestFacts.from_headers("10.9.9.9", [("X-Client-Id", f"c{i}")]))
               for i in range(200)]
    assert {d.split_child for d in same_ip} == {"monolith", "orders-next"}  # spread behind one NAT IP
    again = control.decide("h", (), RequestFacts.from_headers("10.1.1.1", [("X-Client-Id", "c7")]))
    assert again.split_child == same_ip[7].split_child and again.client_key == "c7"


def test_breaker_state_survives_a_reload_only_if_unchanged() -> None:
    text = CONFIG.replace("    app: {rule: \"PathPrefix(`/`)\", service: split}",
                          "    app: {rule: \"PathPrefix(`/`)\", service: split, middlewares: [cb]}") + \
        "  middlewares:\n    cb: {circuitBreaker: {expression: 'NetworkErrorRatio() > 0.5'}}\n"
    text = text.replace("shadow:\n  split: {candidates: [inner]}\n", "") + "shadow:\n  split: {candidates: [inner]}\n"
    first = TrafficControl(parse_config(text))
    same = TrafficControl(parse_config(text.replace("weight: 3", "weight: 4")), first)
    assert same.breakers["cb"] is first.breakers["cb"]  # the middleware did not change
    changed = TrafficControl(parse_config(text.replace("> 0.5", "> 0.6")), same)
    assert changed.breakers["cb"] is not first.breakers["cb"]


def test_two_gateways_agree_on_cookies_and_hrw_without_shared_state() -> None:
    one = TrafficControl(parse_config(CONFIG), seed="gw-1")
    two = TrafficControl(parse_config(CONFIG), seed="gw-2")
    cookie = facts({"lb": sticky_value("inner")})
    assert one.decide("split", (), cookie).split_child == two.decide("split", (), cookie).split_child == "inner"
    issued = one.decide("split", (), facts()).set_cookies[0].split(";")[0].split("=")[1]
    child = next(c for c in ("mono", "inner") if sticky_value(c) == issued)
    assert two.decide("split", (), facts({"lb": issued})).split_child == child  # honoured by the other


def test_passive_health_marks_a_server_down_for_the_failure_window() -> None:
    text = """http:
  routers: {r: {rule: "PathPrefix(`/`)", service: s}}
  services:
    s:
      loadBalancer:
        servers: [{url: "http://127.0.0.1:8001"}, {url: "http://127.0.0.1:8002"}]
        passiveHealthCheck: {failureWindow: 5s, maxFailedAttempts: 2}
"""
    now = [0.0]
    control = TrafficControl(parse_config(text), clock=lambda: now[0])
    bad = "http://127.0.0.1:8001"
    for _ in range(2):
        d = control.decide("s", (), facts())
        while d.server is None or d.server.url != bad:
            d = control.decide("s", (), facts())
        control.report(d, 502, 1.0, network_error=False)  # a 502 counts as a failed attempt
    assert {control.decide("s", (), facts()).server.url for _ in range(6)} == {"http://127.0.0.1:8002"}  # type: ignore[union-attr]
    now[0] += 5.1
    assert bad in {control.decide("s", (), facts()).server.url for _ in range(6)}  # type: ignore[union-attr]
