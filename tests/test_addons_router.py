"""The router and config addons on mitmproxy's test flows (taddons), no sockets: routing details
that the end-to-end tests do not cover one by one."""

from __future__ import annotations

from pathlib import Path

import pytest
from mitmproxy import http
from mitmproxy.test import taddons, tflow, tutils

from addons.capture import primary_record
from addons.reload import GatewayState, ShadowConfig
from addons.router import NOT_FOUND_BODY, Router

CONFIG = """
http:
  routers:
    all: {rule: "PathPrefix(`/`)", service: mono}
    api:
      rule: "PathPrefix(`/api`)"
      service: orders
      middlewares: [strip-api, tag]
    base: {rule: "PathPrefix(`/based`)", service: based}
    shop: {rule: "Host(`shop.example`) && Path(`/only`)", service: mono}
  middlewares:
    strip-api: {stripPrefix: {prefixes: ["/api"]}}
    tag:
      headers:
        customRequestHeaders: {X-Env: test, X-Debug: ""}
        customResponseHeaders: {X-Served-By: shadow, Server: ""}
  services:
    mono: {loadBalancer: {servers: [{url: "http://10.0.0.1:8080"}]}}
    orders:
      loadBalancer:
        passHostHeader: false
        servers: [{url: "http://10.0.0.2:9000"}, {url: "http://10.0.0.3:9000"}]
    based: {loadBalancer: {servers: [{url: "https://10.0.0.4/v2", preservePath: true}]}}
shadow:
  gateway: {id: gw-test}
  capture: {enabled: false}
"""


def make_flow(path: str, *, host: str = "gw.example:8080", headers: tuple[tuple[bytes, bytes], ...] = (),
              method: bytes = b"GET") -> http.HTTPFlow:
    req = tutils.treq(host="127.0.0.1", port=1, method=method, path=path.encode(), content=b"",
                      headers=http.Headers(((b"Host", host.encode()), *headers)))
    return tflow.tflow(req=req)


@pytest.fixture
def routed(tmp_path: Path) -> object:
    cfg = tmp_path / "gw.yaml"
    cfg.write_text(CONFIG)
    state = GatewayState()
    config_addon, router = ShadowConfig(state), Router(state)
    with taddons.context(config_addon, router) as tctx:
        tctx.configure(config_addon, shadow_config=str(cfg))
        state.gateway_id = "gw-test"

        def route(flow: http.HTTPFlow) -> http.HTTPFlow:
            router.request(flow)
            return flow

        route.state = state  # type: ignore[attr-defined]
        route.router = router  # type: ignore[attr-defined]
        yield route


def test_catch_all_keeps_the_client_host_and_adds_forwarded_headers(routed) -> None:  # type: ignore[no-untyped-def]
    spoofed = ((b"X-Forwarded-For", b"203.0.113.9"), (b"X-Real-Ip", b"203.0.113.9"), (b"X_Forwarded_Host", b"evil"))
    flow = routed(make_flow("/a/b?x=1", headers=spoofed))
    req = flow.request
    assert (req.scheme, req.host, req.port, req.path) == ("http", "10.0.0.1", 8080, "/a/b?x=1")
    assert req.headers["Host"] == "gw.example:8080"
    # No entryPoints.forwardedHeaders: nobody is trusted (Traefik's default), the client's values go.
    assert req.headers.get_all("X-Forwarded-For") == ["127.0.0.1"]
    assert req.headers.get_all("X-Real-Ip") == ["127.0.0.1"]
    assert "X_Forwarded_Host" not in req.headers
    assert req.headers["X-Forwarded-Host"] == "gw.example:8080"
    assert req.headers["X-Forwarded-Server"] == "gw-test"
    assert flow.response is None


@pytest.mark.parametrize(("forwarded_headers", "trusted"), [
    ("{trustedIPs: [127.0.0.1/32]}", True),
    ("{trustedIPs: [10.0.0.0/8]}", False),
    ("{insecure: true}", True),
])
def test_entry_point_forwarded_headers_decide_whose_x_forwarded_values_pass(
        tmp_path: Path, forwarded_headers: str, trusted: bool) -> None:
    cfg = tmp_path / "gw.yaml"
    cfg.write_text(f"entryPoints:\n  web: {{address: ':8080', forwardedHeaders: {forwarded_headers}}}\n{CONFIG}")
    state = GatewayState()
    config_addon, router = ShadowConfig(state), Router(state)
    with taddons.context(config_addon, router) as tctx:
        tctx.configure(config_addon, shadow_config=str(cfg))
        flow = make_flow("/a", headers=((b"X-Forwarded-For", b"203.0.113.9"), (b"X-Real-Ip", b"203.0.113.9")))
        router.request(flow)
    headers = flow.request.headers
    if trusted:
        assert headers["X-Forwarded-For"] == "203.0.113.9, 127.0.0.1"  # appended, like Traefik
        assert headers["X-Real-Ip"] == "203.0.113.9"
    else:
        assert headers["X-Forwarded-For"] == "127.0.0.1"
        assert headers["X-Real-Ip"] == "127.0.0.1"


def test_pass_host_header_false_strip_prefix_and_header_middlewares(routed) -> None:  # type: ignore[no-untyped-def]
    first = routed(make_flow("/api/orders/1?y=2", headers=((b"X-Debug", b"1"),)))
    req = first.request
    assert (req.host, req.port, req.path) == ("10.0.0.2", 9000, "/orders/1?y=2")
    assert req.headers["Host"] == "10.0.0.2:9000"  # passHostHeader: false
    assert req.headers["X-Forwarded-Prefix"] == "/api" and req.headers["X-Env"] == "test"
    assert "X-Debug" not in req.headers
    second = routed(make_flow("/api/orders/2"))
    assert second.request.host == "10.0.0.3"  # round robin over the two servers
    first.response = tutils.tresp(headers=http.Headers(((b"Server", b"monolith"),)))
    routed.router.response(first)
    assert first.response.headers["X-Served-By"] == "shadow" and "Server" not in first.response.headers


def test_preserve_path_and_https_server(routed) -> None:  # type: ignore[no-untyped-def]
    flow = routed(make_flow("/based/x"))
    req = flow.request
    assert (req.scheme, req.host, req.port, req.path) == ("https", "10.0.0.4", 443, "/v2/based/x")
    assert req.headers["Host"] == "gw.example:8080"


def test_host_rule_and_local_404(routed) -> None:  # type: ignore[no-untyped-def]
    assert routed(make_flow("/only", host="shop.example")).request.host == "10.0.0.1"
    state: GatewayState = routed.state
    active = state.active
    assert active is not None
    # No catch-all: drop it from this generation and ask again.
    from dataclasses import replace

    state.active = replace(active, config=replace(active.config, routers=tuple(
        r for r in active.config.routers if r.name != "all")))
    flow = routed(make_flow("/nowhere"))
    assert flow.response is not None and flow.response.status_code == 404
    assert flow.response.content == NOT_FOUND_BODY
    record = primary_record(flow, state.routes.get(flow), "gw-test")
    assert (record.status, record.router, record.upstream, record.path) == (404, None, None, "/nowhere")


def test_no_config_answers_503_not_the_reverse_target() -> None:
    state = GatewayState()
    router = Router(state)
    flow = make_flow("/x")
    router.request(flow)
    assert flow.response is not None and flow.response.status_code == 503


def test_runtime_set_of_a_bad_file_is_rejected_and_the_config_stays(tmp_path: Path) -> None:
    good, bad = tmp_path / "good.yaml", tmp_path / "bad.yaml"
    good.write_text(CONFIG)
    bad.write_text("http:\n  routers:\n    x: {rule: 'Path(`/x`)', service: nope}\n")
    state = GatewayState()
    addon = ShadowConfig(state)
    with taddons.context(addon) as tctx:
        tctx.configure(addon, shadow_config=str(good))
        before = state.active
        with pytest.raises(Exception, match=r"bad\.yaml:3"):
            tctx.configure(addon, shadow_config=str(bad))
        assert state.active is before


def test_a_routing_failure_is_a_local_502_never_the_reverse_target(routed) -> None:  # type: ignore[no-untyped-def]
    from dataclasses import replace

    state: GatewayState = routed.state
    assert state.active is not None
    state.active = replace(state.active, plans={})  # a plan missing: the router addon raises inside
    flow = routed(make_flow("/a"))
    assert flow.response is not None and flow.response.status_code == 502
    assert flow.request.host == "127.0.0.1"  # untouched
    assert state.counters()["routing_errors"] == 1


def test_http2_authority_is_the_clients_host(routed) -> None:  # type: ignore[no-untyped-def]
    req = tutils.treq(host="127.0.0.1", port=1, path=b"/a", content=b"", http_version=b"HTTP/2.0",
                      authority=b"shop.example", headers=http.Headers(((b"accept", b"*/*"),)))
    flow = routed(tflow.tflow(req=req))
    assert (flow.request.host, flow.request.port) == ("10.0.0.1", 8080)
    assert flow.request.authority == "shop.example" and flow.request.host_header == "shop.example"
    assert flow.request.headers["X-Forwarded-Host"] == "shop.example"


def test_an_empty_forwarded_for_header_middleware_sends_none(tmp_path: Path) -> None:
    # Traefik: customRequestHeaders X-Forwarded-For: "" means no X-Forwarded-For upstream at all.
    cfg = tmp_path / "gw.yaml"
    cfg.write_text("""
http:
  routers:
    all: {rule: "PathPrefix(`/`)", service: mono, middlewares: [no-xff]}
  middlewares:
    no-xff: {headers: {customRequestHeaders: {X-Forwarded-For: ""}}}
  services:
    mono: {loadBalancer: {servers: [{url: "http://10.0.0.1:8080"}]}}
shadow:
  capture: {enabled: false}
""")
    state = GatewayState()
    config_addon, router = ShadowConfig(state), Router(state)
    with taddons.context(config_addon, router) as tctx:
        tctx.configure(config_addon, shadow_config=str(cfg))
        flow = make_flow("/a", headers=((b"X-Forwarded-For", b"203.0.113.9"),))
        router.request(flow)
    assert "X-Forwarded-For" not in flow.request.headers
    assert flow.request.headers["X-Real-Ip"] == "127.0.0.1"


def test_absolute_form_target_is_routed_on_its_authority(routed) -> None:  # type: ignore[no-untyped-def]
    # "GET http://shop.example/only HTTP/1.1" with Host: gw.example — Go (and Traefik) route on the
    # target's authority; an empty one ("http://@/") falls back to the Host header.
    req = tutils.treq(host="127.0.0.1", port=1, path=b"/only", authority=b"shop.example", content=b"",
                      headers=http.Headers(((b"Host", b"gw.example"),)))
    flow = routed(tflow.tflow(req=req))
    assert routed.state.routes[flow].router == "shop"
    empty = tutils.treq(host="127.0.0.1", port=1, path=b"/only", authority=b"@", content=b"",
                        headers=http.Headers(((b"Host", b"shop.example"),)))
    assert routed.state.routes[routed(tflow.tflow(req=empty))].router == "shop"
