"""Traefik's muxer tests (pkg/muxer/http/mux_test.go), ported to shadow's rules and router order.

Source: Traefik TRAEFIK_VERSION (tests/traefik/__init__.py). TestMuxer's table is in mux_cases.py.
Skipped: TestParseDomains (the domains of Host rules, for ACME certificates: the gateway has no ACME);
Test_addRoutePriority's second case (ordering by provider name, e.g. kubernetesingressnginx before
kubernetesgateway: the gateway has one provider, its file).
"""

from __future__ import annotations

from typing import Any

import pytest

from shadow.gateway.config import parse_config
from shadow.gateway.routing import select_router
from shadow.gateway.rules import RequestView, RuleSyntaxError, compile_rule, request_host, routing_path
from tests.traefik.gohttp import url_view
from tests.traefik.mux_cases import CASES


@pytest.mark.parametrize("case", CASES["TestMuxer"], ids=[c["desc"] for c in CASES["TestMuxer"]])
def test_muxer(case: dict[str, Any]) -> None:
    if case.get("expectedError"):
        with pytest.raises(RuleSyntaxError):
            compile_rule(case.get("rule", ""))
        return
    rule = compile_rule(case["rule"])
    for url, status in case["expected"]:
        assert rule.matches(url_view(url)) is (status == 200), (case["rule"], url, status)


def test_add_route_priority_higher_priority_on_second_rule() -> None:
    cfg = parse_config("""
http:
  routers:
    header1: {rule: "PathPrefix(`/my`)", priority: 10, service: s}
    header2: {rule: "PathPrefix(`/my`)", priority: 20, service: s}
  services:
    s: {loadBalancer: {servers: [{url: "http://127.0.0.1:9"}]}}
""")
    router = select_router(cfg, url_view("/my"))
    assert router is not None and router.name == "header2"


def test_get_rule_priority() -> None:
    cfg = parse_config("""
http:
  routers:
    r: {rule: "Host(`example.org`)", service: s}
  services:
    s: {loadBalancer: {servers: [{url: "http://127.0.0.1:9"}]}}
""")
    assert cfg.routers[0].priority == 19


@pytest.mark.parametrize(("desc", "path", "expected"), [
    ("unallowed percent-encoded character is decoded", "/foo%20bar", "/foo bar"),
    ("reserved percent-encoded character is kept encoded", "/foo%2Fbar", "/foo%2Fbar"),
    ("multiple mixed characters", "/foo%20bar%2Fbaz%23qux", "/foo bar%2Fbaz%23qux"),
])
def test_routing_path(desc: str, path: str, expected: str) -> None:
    assert routing_path(path) == expected


# TestEmptyHost: (desc, absolute-form target's authority, Host header, rule, expected status)
EMPTY_HOST = [
    ("HostRegexp with absolute-form URL with empty host with non-matching host header", "@", "example.com",
     "HostRegexp(`example.com`)", 200),
    ("Host with absolute-form URL with empty host with non-matching host header", "@", "example.com",
     "Host(`example.com`)", 200),
    ("HostRegexp with absolute-form URL with matching host header", "example.com", "example.org",
     "HostRegexp(`example.com`)", 200),
    ("Host with absolute-form URL with matching host header", "example.com", "example.org", "Host(`example.com`)", 200),
    ("HostRegexp with absolute-form URL with non-matching host header", "example.com", "example.org",
     "HostRegexp(`example.org`)", 404),
    ("Host with absolute-form URL with non-matching host header", "example.com", "example.org",
     "Host(`example.org`)", 404),
]


@pytest.mark.parametrize(("desc", "authority", "host", "rule", "expected"), EMPTY_HOST, ids=[c[0] for c in EMPTY_HOST])
def test_empty_host(desc: str, authority: str, host: str, rule: str, expected: int) -> None:
    # The requests are "GET http://<authority>/ HTTP/1.1\r\nHost: <host>"; the router addon routes on
    # request_host(the target's authority, the Host header), tested with a real flow in test_addons_router.
    view = RequestView(method="GET", host=request_host(authority, host), path="/")
    assert compile_rule(rule).matches(view) is (expected == 200)
