"""Loading the traffic-shifting keys: Traefik's defaults, and located errors."""

from __future__ import annotations

import hashlib

import pytest

from shadow.errors import ConfigError
from shadow.gateway.config import (
    CircuitBreakerMiddleware,
    FailoverService,
    LoadBalancerService,
    WeightedService,
    parse_config,
)
from shadow.gateway.shifting import RequestFacts, TrafficControl
from shadow.gateway.traffic import sticky_value

HEAD = """http:
  routers:
    r: {rule: "PathPrefix(`/`)", service: w}
  services:
    a: {loadBalancer: {servers: [{url: "http://127.0.0.1:8001"}]}}
    b: {loadBalancer: {servers: [{url: "http://127.0.0.1:8002"}]}}
"""


def test_weighted_defaults_and_traefik_cookie_name() -> None:
    cfg = parse_config(HEAD + "    w:\n      weighted:\n        services: [{name: a}, {name: b, weight: 3}]\n"
                       "        sticky: {cookie: {}}\n")
    w = cfg.services["w"]
    assert isinstance(w, WeightedService) and not w.hrw and not w.health_check
    assert [(c.name, c.weight) for c in w.services] == [("a", 1), ("b", 3)]
    assert w.sticky is not None
    assert w.sticky.name == "_" + hashlib.sha1(b"_TRAEFIK_BACKEND_w").hexdigest()[:5]
    assert (w.sticky.secure, w.sticky.http_only, w.sticky.same_site, w.sticky.max_age, w.sticky.path,
            w.sticky.domain) == (False, False, "", 0, "/", "")


def test_health_check_defaults_and_options() -> None:
    text = HEAD.replace('servers: [{url: "http://127.0.0.1:8001"}]',
                        'servers: [{url: "http://127.0.0.1:8001"}], healthCheck: {path: /health}, '
                        'passiveHealthCheck: {}') + "    w: {failover: {service: a, fallback: b, healthCheck: {}}}\n"
    cfg = parse_config(text)
    a = cfg.services["a"]
    assert isinstance(a, LoadBalancerService) and a.health_check is not None
    hc = a.health_check
    assert (hc.path, hc.method, hc.status, hc.interval_s, hc.unhealthy_interval_s, hc.timeout_s,
            hc.follow_redirects, hc.scheme, hc.port, hc.hostname) == \
        ("/health", "GET", 0, 30.0, 30.0, 5.0, True, None, None, None)
    assert a.passive_health_check is not None
    assert (a.passive_health_check.failure_window_s, a.passive_health_check.max_failed_attempts) == (10.0, 1)
    fo = cfg.services["w"]
    assert isinstance(fo, FailoverService) and fo.health_check and fo.error_status == ()
    custom = parse_config(HEAD.replace(
        'servers: [{url: "http://127.0.0.1:8001"}]',
        'servers: [{url: "http://127.0.0.1:8001"}], healthCheck: {path: /h, interval: 2s, unhealthyInterval: 500ms, '
        'timeout: 1s, status: 204, method: head, hostname: x.test, port: 9000, scheme: HTTPS, '
        'followRedirects: false, headers: {X-Probe: "1"}}') + "    w: {weighted: {services: [{name: a}]}}\n")
    c = custom.services["a"]
    assert isinstance(c, LoadBalancerService) and c.health_check is not None
    assert (c.health_check.interval_s, c.health_check.unhealthy_interval_s, c.health_check.status,
            c.health_check.method, c.health_check.port, c.health_check.scheme, c.health_check.headers) == \
        (2.0, 0.5, 204, "HEAD", 9000, "https", (("X-Probe", "1"),))


def test_circuit_breaker_defaults() -> None:
    cfg = parse_config(HEAD.replace("service: w}", "service: a, middlewares: [cb]}") +
                       "  middlewares:\n    cb: {circuitBreaker: {expression: 'NetworkErrorRatio() > 0.3'}}\n")
    mw = cfg.middlewares["cb"]
    assert isinstance(mw, CircuitBreakerMiddleware)
    s = mw.settings
    assert (s.check_period_s, s.fallback_duration_s, s.recovery_duration_s, s.response_code) == (0.1, 10.0, 10.0, 503)


@pytest.mark.parametrize(("tail", "line", "field", "words"), [
    ("    w: {weighted: {services: [{name: w}]}}\n", 7, "http.services.w.weighted.services[0].name",
     "service reference cycle: w -> w"),
    ("    m: {mirroring: {service: a}}\n    w: {weighted: {services: [{name: m}]}}\n", 8,
     "http.services.w.weighted.services[0].name", "mirroring inside weighted"),
    ("    w: {weighted: {services: [{name: a}, {name: a}]}}\n", 7, "http.services.w.weighted.services[1].name",
     "listed twice"),
    ("    w: {failover: {service: a}}\n", 7, "http.services.w.failover.fallback", "required"),
    ("    w: {weighted: {services: [{name: a}], healthCheck: {path: /x}}}\n", 7,
     "http.services.w.weighted.healthCheck.path", "unknown key"),
    ("    w: {highestRandomWeight: {services: [{name: a}], sticky: {}}}\n", 7,
     "http.services.w.highestRandomWeight.sticky", "unknown key"),
])
def test_bad_shifting_config_is_located(tail: str, line: int, field: str, words: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(HEAD + tail, "gw.yaml")
    message = str(err.value)
    assert message.startswith(f"gw.yaml:{line}: {field}:"), message
    assert words in message


def test_load_balancer_sticky_and_hrw_strategy() -> None:
    text = """http:
  routers: {r: {rule: "PathPrefix(`/`)", service: s}}
  services:
    s:
      loadBalancer:
        servers: [{url: "http://127.0.0.1:8001"}, {url: "http://127.0.0.1:8002"}]
        sticky: {cookie: {name: srv}}
    h:
      loadBalancer:
        strategy: hrw
        servers: [{url: "http://10.0.0.1:80"}, {url: "http://10.0.0.2:80"}]
"""
    control = TrafficControl(parse_config(text))
    pinned = RequestFacts.from_headers("1.2.3.4", [("Cookie", f"srv={sticky_value('http://127.0.0.1:8002')}")])
    d = control.decide("s", (), pinned)
    assert d.server is not None and d.server.url == "http://127.0.0.1:8002" and d.set_cookies == []
    control.health.set_active("s", "http://127.0.0.1:8002", False)
    d = control.decide("s", (), pinned)
    assert d.server is not None and d.server.url == "http://127.0.0.1:8001"
    assert d.set_cookies == [f"srv={sticky_value('http://127.0.0.1:8001')}; Path=/"]
    picks = {ip: control.decide("h", (), RequestFacts.from_headers(ip, [])).server for ip in
             (f"192.168.0.{i}" for i in range(50))}
    assert {s.url for s in picks.values() if s is not None} == {"http://10.0.0.1", "http://10.0.0.2"}
    assert all(control.decide("h", (), RequestFacts.from_headers(ip, [])).server == srv for ip, srv in picks.items())
