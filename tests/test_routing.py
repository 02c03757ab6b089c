"""Pure routing core: router choice, route plans, server rotation, mirror counter, header rewrites."""

from __future__ import annotations

import pytest

from shadow.gateway.config import (
    AddPrefix,
    GatewayConfig,
    HeadersMiddleware,
    LoadBalancerService,
    Middleware,
    MirroringService,
    MirrorSpec,
    Server,
    StripPrefix,
    parse_config,
)
from shadow.gateway.routing import (
    MirrorCounter,
    ServerPicker,
    apply_request_middlewares,
    apply_response_middlewares,
    forwarded_headers,
    plan_route,
    route_plans,
    select_router,
)
from shadow.gateway.rules import RequestView

CONFIG = """\
http:
  routers:
    catchall:
      rule: PathPrefix(`/`)
      service: monolith
    orders:
      rule: PathPrefix(`/api/orders`)
      service: orders-shadow
      middlewares: [strip, tag]
    admin:
      rule: Host(`admin.example.com`) && PathPrefix(`/`)
      service: monolith
    pinned:
      rule: Header(`X-Canary`, `1`)
      service: orders-next
      priority: 1000
    api-only:
      rule: Host(`api.example.com`)
      service: monolith
      priority: 1
  services:
    monolith:
      loadBalancer:
        servers: [{url: "http://127.0.0.1:8081"}, {url: "http://127.0.0.1:8082"}]
    orders-next:
      loadBalancer:
        servers: [{url: "http://127.0.0.1:9001"}]
    orders-b:
      loadBalancer:
        servers: [{url: "http://127.0.0.1:9002"}]
    orders-shadow:
      mirroring:
        service: monolith
        mirrors: [{name: orders-next, percent: 100}, {name: orders-b, percent: 10}]
  middlewares:
    strip: {stripPrefix: {prefixes: [/api]}}
    tag: {headers: {customRequestHeaders: {X-Via: gw}}}
"""


@pytest.fixture(scope="module")
def config() -> GatewayConfig:
    return parse_config(CONFIG, "gw.yaml")


def view(path: str = "/", host: str = "example.com", method: str = "GET",
         headers: tuple[tuple[str, str], ...] = ()) -> RequestView:
    return RequestView(method=method, host=host, path=path, query="", headers=headers, client_ip="10.0.0.1")


def routed(config: GatewayConfig, **kw: object) -> str | None:
    router = select_router(config, view(**kw))  # type: ignore[arg-type]
    return router.name if router else None


def test_highest_priority_match_wins(config: GatewayConfig) -> None:
    assert [r.name for r in config.routers] == ["pinned", "admin", "orders", "catchall", "api-only"]
    assert routed(config, path="/api/orders/1") == "orders"
    assert routed(config, path="/api/orders-archive") == "orders"  # plain string prefix
    assert routed(config, path="/api/order") == "catchall"
    assert routed(config, path="/api/orders/1", host="admin.example.com") == "admin"  # longer rule
    assert routed(config, path="/x", headers=(("x-canary", "1"),)) == "pinned"
    # explicit priority 1 loses to the catch-all's default priority 15
    assert routed(config, path="/x", host="api.example.com") == "catchall"


def test_no_router_matches_means_404() -> None:
    cfg = parse_config(CONFIG.replace("PathPrefix(`/`)\n      service: monolith\n    orders:",
                                      "PathPrefix(`/web`)\n      service: monolith\n    orders:"))
    assert select_router(cfg, view(path="/other")) is None
    assert select_router(cfg, view(path="/web/x")) is not None


def test_plan_flattens_mirroring(config: GatewayConfig) -> None:
    orders = next(r for r in config.routers if r.name == "orders")
    plan = plan_route(config, orders)
    assert plan.primary.name == "monolith"
    assert plan.mirroring is not None and plan.mirroring.name == "orders-shadow"
    assert [(m.spec.name, m.spec.percent, m.service.servers[0].port) for m in plan.mirrors] == \
        [("orders-next", 100, 9001), ("orders-b", 10, 9002)]
    assert [mw.name for mw in plan.middlewares] == ["strip", "tag"]
    plain = plan_route(config, next(r for r in config.routers if r.name == "catchall"))
    assert (plain.primary.name, plain.mirroring, plain.mirrors, plain.middlewares) == ("monolith", None, (), ())
    assert set(route_plans(config)) == {r.name for r in config.routers}


def test_server_picker_round_robin_and_weights(config: GatewayConfig) -> None:
    picker = ServerPicker()
    monolith = config.services["monolith"]
    assert isinstance(monolith, LoadBalancerService)
    assert [picker.pick(monolith).port for _ in range(5)] == [8081, 8082, 8081, 8082, 8081]
    weighted = LoadBalancerService("w", (
        Server("http://a:1", "http", "a", 1, weight=3),
        Server("http://b:2", "http", "b", 2, weight=1),
        Server("http://c:3", "http", "c", 3, weight=0),
    ))
    picks = [picker.pick(weighted).host for _ in range(8)]
    assert picks.count("a") == 6 and picks.count("b") == 2 and "c" not in picks
    assert picks[:4] == ["a", "a", "b", "a"]  # smooth: b is not starved to the end of a cycle
    picker.carry_over(config)  # "monolith" survives: rotation continues where it was
    assert picker.pick(monolith).port == 8082


def mirrored_requests(percent: int, n: int) -> list[int]:
    counter = MirrorCounter()
    spec = MirrorSpec("m", percent)
    return [i for i in range(1, n + 1) if counter.should_mirror("svc", spec)]


@pytest.mark.parametrize(("percent", "first"), [
    (0, []),
    (10, [1, 11, 21, 31, 41]),
    (33, [1, 4, 7, 10, 13, 16, 19, 22, 25, 28, 31, 34, 37, 40, 43, 46, 49]),
    (50, list(range(1, 51, 2))),
    (100, list(range(1, 51))),
])
def test_mirror_counter_sequence(percent: int, first: list[int]) -> None:
    assert mirrored_requests(percent, 50) == first
    # over a long run the share is exact to within one request
    assert abs(len(mirrored_requests(percent, 1000)) - 10 * percent) <= 1


def test_mirror_counter_per_service_and_mirror(config: GatewayConfig) -> None:
    counter = MirrorCounter()
    shadow_svc = config.services["orders-shadow"]
    assert isinstance(shadow_svc, MirroringService)
    selections = [tuple(m.name for m in counter.select(shadow_svc)) for _ in range(12)]
    assert selections[0] == ("orders-next", "orders-b")
    assert selections[1:10] == [("orders-next",)] * 9
    assert selections[10] == ("orders-next", "orders-b")
    assert counter.counts("orders-shadow", "orders-b") == (12, 2)
    # another mirroring service has its own sequence
    assert counter.should_mirror("other", MirrorSpec("orders-b", 10)) is True


def test_mirror_counter_carries_over_reloads(config: GatewayConfig) -> None:
    counter = MirrorCounter()
    spec = MirrorSpec("orders-b", 10)
    assert [counter.should_mirror("orders-shadow", spec) for _ in range(3)] == [True, False, False]
    counter.should_mirror("gone", spec)
    counter.carry_over(config)  # same services: the sequence goes on (request 4 is not mirrored)
    assert counter.should_mirror("orders-shadow", spec) is False
    assert counter.counts("orders-shadow", "orders-b") == (4, 1)
    assert counter.counts("gone", "orders-b") == (0, 0)  # dropped: no longer in the config
    without_b = parse_config(CONFIG.replace(", {name: orders-b, percent: 10}", ""))
    counter.carry_over(without_b)
    assert counter.counts("orders-shadow", "orders-b") == (0, 0)


def test_forwarded_headers_append_and_fill_in() -> None:
    out = forwarded_headers([("Host", "shop.example.com:8080"), ("X-Forwarded-For", "1.1.1.1")],
                            client_ip="10.0.0.7", host="shop.example.com:8080", scheme="http",
                            port=8080, server_name="gw-1")
    assert out == [
        ("Host", "shop.example.com:8080"),
        ("X-Forwarded-For", "1.1.1.1, 10.0.0.7"),
        ("X-Forwarded-Proto", "http"),
        ("X-Forwarded-Host", "shop.example.com:8080"),
        ("X-Forwarded-Port", "8080"),
        ("X-Forwarded-Server", "gw-1"),
        ("X-Real-Ip", "10.0.0.7"),
    ]


def test_forwarded_headers_keep_trusted_values_and_replace_server() -> None:
    sent = [("x-forwarded-proto", "https"), ("X-Forwarded-Host", "edge"), ("X-Forwarded-Server", "evil"),
            ("X-Real-Ip", "2.2.2.2"), ("X-Forwarded-For", "3.3.3.3"), ("X-Forwarded-For", "4.4.4.4")]
    out = dict(forwarded_headers(sent, client_ip="::1", host="h", scheme="http", port=80, server_name="gw"))
    assert out["x-forwarded-proto"] == "https"
    assert out["X-Forwarded-Host"] == "edge"
    assert out["X-Forwarded-Server"] == "gw"
    assert out["X-Real-Ip"] == "2.2.2.2"
    assert out["X-Forwarded-For"] == "3.3.3.3, 4.4.4.4, ::1"
    untrusted = dict(forwarded_headers(sent, client_ip="10.0.0.1", host="h", scheme="https", port=443,
                                       server_name="gw", trust_forwarded=False))
    assert untrusted == {"X-Forwarded-For": "10.0.0.1", "X-Forwarded-Proto": "https", "X-Forwarded-Host": "h",
                         "X-Forwarded-Port": "443", "X-Forwarded-Server": "gw", "X-Real-Ip": "10.0.0.1"}


def test_forwarded_proto_for_websocket_upgrades() -> None:
    ws = [("Connection", "keep-alive, Upgrade"), ("Upgrade", "websocket")]
    assert dict(forwarded_headers(ws, client_ip="1.2.3.4", host="h", scheme="https", port=443,
                                  server_name="gw"))["X-Forwarded-Proto"] == "wss"
    assert dict(forwarded_headers(ws, client_ip="1.2.3.4", host="h", scheme="http", port=80,
                                  server_name="gw"))["X-Forwarded-Proto"] == "ws"


def test_strip_prefix() -> None:
    strip = StripPrefix("s", ("/api/v1", "/api"))
    assert apply_request_middlewares([strip], "/api/v1/orders", []).path == "/orders"
    out = apply_request_middlewares([strip], "/api/orders", [("A", "1")])
    assert (out.path, out.headers) == ("/orders", (("A", "1"), ("X-Forwarded-Prefix", "/api")))
    assert apply_request_middlewares([strip], "/api", []).path == "/"
    assert apply_request_middlewares([strip], "/apix", []).path == "/x"  # plain prefix, like Traefik
    untouched = apply_request_middlewares([strip], "/web/api", [("A", "1")])
    assert (untouched.path, untouched.headers) == ("/web/api", (("A", "1"),))
    # the prefix is matched on the routing path; the rest keeps its escapes as sent
    assert apply_request_middlewares([strip], "/%61pi/a%2Fb%20c", []).path == "/a%2Fb%20c"


def test_add_prefix_and_headers_in_order() -> None:
    chain: list[Middleware] = [StripPrefix("s", ("/api",)), AddPrefix("a", "/internal"),
             HeadersMiddleware("h", (("X-Env", "prod"), ("Authorization", ""), ("host", "backend")),
                               (("Server", ""), ("X-Frame-Options", "DENY")))]
    out = apply_request_middlewares(chain, "/api/orders/1",
                                    [("Host", "shop"), ("X-Env", "dev"), ("x-env", "test"), ("Authorization", "t")])
    assert out.path == "/internal/orders/1"
    assert out.headers == (("host", "backend"), ("X-Env", "prod"), ("X-Forwarded-Prefix", "/api"))
    resp = apply_response_middlewares(chain, [("Server", "nginx"), ("Content-Type", "text/plain")])
    assert resp == [("Content-Type", "text/plain"), ("X-Frame-Options", "DENY")]


def test_example_gateway_routes_as_documented() -> None:
    from pathlib import Path

    from shadow.gateway.config import load_config

    cfg = load_config(Path(__file__).resolve().parent.parent / "docs" / "examples" / "gateway.yaml")
    plans = route_plans(cfg)
    orders = select_router(cfg, view(path="/api/orders/42"))
    assert orders is not None and orders.name == "orders"
    plan = plans[orders.name]
    assert plan.primary.name == "monolith"  # the client gets the monolith's answer...
    assert [m.service.name for m in plan.mirrors] == ["orders-next"]  # ...and orders-next gets a copy
    assert [routed(cfg, path="/api/orders/42", method="OPTIONS"), routed(cfg, path="/"),
            routed(cfg, path="/api/customers")] == ["monolith"] * 3
    out = apply_request_middlewares(plan.middlewares, "/api/orders/42", [("Host", "shop")])
    assert out.headers == (("Host", "shop"), ("X-Shadow-Gateway", "gw-1"))
    assert apply_response_middlewares(plan.middlewares, [("Server", "mono/1.0"), ("A", "b")]) == [("A", "b")]


def test_empty_x_forwarded_for_header_middleware_suppresses_it() -> None:
    drop = HeadersMiddleware("h", (("X-Forwarded-For", ""),))
    out = apply_request_middlewares([drop], "/", [("X-Forwarded-For", "6.6.6.6"), ("A", "1")])
    assert out.append_forwarded_for is False
    sent = forwarded_headers(out.headers, client_ip="10.0.0.1", host="h", scheme="http", port=80,
                             server_name="gw", append_forwarded_for=out.append_forwarded_for)
    assert "x-forwarded-for" not in {k.lower() for k, _ in sent}
    assert apply_request_middlewares([HeadersMiddleware("h", (("X-Forwarded-For", "1.1.1.1"),))], "/", []) \
        .append_forwarded_for is True


# --------------------------------------------------------------------------------------------------
# Gateway API additions: header add, fractional mirrors
# --------------------------------------------------------------------------------------------------

def test_header_add_appends_a_line_after_sets_and_removals() -> None:
    from shadow.gateway.config import HeadersMiddleware
    from shadow.gateway.routing import apply_request_middlewares, apply_response_middlewares

    mw = HeadersMiddleware("h", request_headers=(("X-S", "new"), ("X-R", "")), request_add=(("X-A", "2"),),
                           response_add=(("X-Out", "o"),))
    out = apply_request_middlewares([mw], "/p", [("X-S", "old"), ("X-R", "r"), ("X-A", "1")])
    assert list(out.headers) == [("X-S", "new"), ("X-A", "1"), ("X-A", "2")]
    assert apply_response_middlewares([mw], [("X-Out", "x")]) == [("X-Out", "x"), ("X-Out", "o")]


def test_mirror_fraction_is_exact_over_its_denominator() -> None:
    counter = MirrorCounter()
    spec = MirrorSpec("m", 1, 3)
    picks = [counter.should_mirror("svc", spec) for _ in range(30)]
    assert sum(picks) == 10 and picks[:3] == [True, False, False]
