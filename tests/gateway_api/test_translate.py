"""shadow.gatewayapi.resolve + translate: attachment, status, precedence, services and middlewares.

Pure: manifests in, the gateway's configuration model out, routed with shadow.gateway.routing exactly
as the gateway routes (no proxy)."""

from __future__ import annotations

from pathlib import Path

import pytest

from shadow.errors import ConfigError
from shadow.gateway.config import (
    GatewayConfig,
    HeadersMiddleware,
    LoadBalancerService,
    MirroringService,
    WeightedService,
)
from shadow.gateway.middlewares.httproute import ReplacePrefixMatch, RequestRedirect
from shadow.gateway.middlewares.retry import Retry
from shadow.gateway.routing import resolve_router
from shadow.gateway.rules import RequestView
from shadow.gatewayapi.manifests import Match
from shadow.gatewayapi.provider import (
    gateway_status_lines,
    load_gateway_api,
    load_gateway_config,
    status_lines,
)
from shadow.gatewayapi.resolve import intersect_hostnames
from shadow.gatewayapi.translate import DEFAULT_RETRY_ATTEMPTS, UNRESOLVED_SERVICE, rule_expression

BASE = """\
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw, namespace: web}
spec:
  gatewayClassName: shadow
  listeners:
  - {name: http, port: 80, protocol: HTTP, allowedRoutes: {namespaces: {from: Same}}}
  - {name: shop, port: 80, protocol: HTTP, hostname: "*.shop.test", allowedRoutes: {namespaces: {from: All}}}
  - {name: team, port: 80, protocol: HTTP, hostname: team.test,
     allowedRoutes: {namespaces: {from: Selector, selector: {matchLabels: {team: "yes"}}}}}
  - {name: tls, port: 443, protocol: HTTPS}
---
apiVersion: v1
kind: Namespace
metadata: {name: other, labels: {team: "yes"}}
---
apiVersion: v1
kind: Service
metadata: {name: a, namespace: web}
spec: {ports: [{port: 80}]}
---
backends:
  web/a: http://127.0.0.1:1001
  web/b:80: http://127.0.0.1:1002
  web/c:80: http://127.0.0.1:1003
  other/d:80: http://127.0.0.1:1004
shadow:
  capture: {enabled: false}
  mirroring: {targets: {"web/c:80": {role: candidate}}}
"""


def _route(name: str, spec: str, namespace: str = "web", created: str | None = None) -> str:
    meta = f"{{name: {name}, namespace: {namespace}" + (f", creationTimestamp: '{created}'" if created else "") + "}"
    return f"---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {meta}\nspec:\n{spec}"


def _load(tmp_path: Path, *routes: str) -> GatewayConfig:
    path = tmp_path / "routes.yaml"
    path.write_text(BASE + "".join(routes))
    return load_gateway_config(path)


def _service(config: GatewayConfig, path: str = "/", host: str = "x.test", method: str = "GET",
             headers: tuple[tuple[str, str], ...] = (), query: str = "") -> str | None:
    router, _ = resolve_router(config, RequestView(method=method, host=host, path=path, query=query, headers=headers))
    return None if router is None else router.service


@pytest.mark.parametrize(("path_type", "value", "yes", "no"), [
    ("PathPrefix", "/v2", ["/v2", "/v2/", "/v2/x"], ["/v2x", "/v", "/x/v2"]),
    ("PathPrefix", "/v2/", ["/v2", "/v2/x"], ["/v2x"]),
    ("PathPrefix", "/", ["/", "/anything"], []),
    ("Exact", "/v2", ["/v2"], ["/v2/", "/v2/x"]),
    ("RegularExpression", "/v[0-9]+", ["/v2", "/v10"], ["/v2/x", "/x/v2"]),
])
def test_path_matches_are_the_specs(path_type: str, value: str, yes: list[str], no: list[str]) -> None:
    from shadow.gateway.rules import compile_rule

    rule = compile_rule(rule_expression(None, Match(path_type, value, (), (), None)))
    assert all(rule.matches(RequestView(method="GET", host="h", path=p)) for p in yes), rule.text
    assert not any(rule.matches(RequestView(method="GET", host="h", path=p)) for p in no), rule.text


def test_rule_expression_quotes_values() -> None:
    text = rule_expression("*.example.com", Match("Exact", "/a", (("Exact", "X-A", 'say "hi" \\o/'),),
                                                 (("RegularExpression", "q", "^v"),), "POST"))
    assert text == ('HostRegexp("^.+\\\\.example\\\\.com$") && Path("/a") && Method("POST") && '
                    'Header("X-A", "say \\"hi\\" \\\\o/") && QueryRegexp("q", "^v")')


@pytest.mark.parametrize(("listener", "route", "expected"), [
    (None, (), (None,)),
    ("a.test", (), ("a.test",)),
    (None, ("a.test",), ("a.test",)),
    ("*.test", ("a.test", "b.other"), ("a.test",)),
    ("a.test", ("*.test",), ("a.test",)),
    ("*.test", ("*.a.test",), ("*.a.test",)),
    ("*.a.test", ("*.test",), ("*.a.test",)),
    ("a.test", ("b.test",), ()),
    ("*.test", ("test",), ()),
])
def test_hostname_intersection(listener: str | None, route: tuple[str, ...], expected: tuple[str | None, ...]) -> None:
    assert intersect_hostnames(listener, route) == expected


def test_precedence_between_routes_follows_the_spec(tmp_path: Path) -> None:
    one = "  parentRefs: [{name: gw}]\n  rules:\n"
    config = _load(
        tmp_path,
        _route("prefix-short", one + "  - matches: [{path: {value: /a}}]\n    backendRefs: [{name: a, port: 80}]\n"),
        _route("prefix-long", one + "  - matches: [{path: {value: /a/b}}]\n    backendRefs: [{name: b, port: 80}]\n"),
        _route("exact", one + "  - matches: [{path: {type: Exact, value: /a}}]\n    backendRefs: [{name: c, port: 80}]\n"),
        _route("method", one + "  - matches: [{path: {value: /a/b}, method: POST}]\n"
               "    backendRefs: [{name: c, port: 80}]\n"),
        _route("headers", one + "  - matches: [{path: {value: /a/b}, headers: [{name: x, value: '1'}, "
               "{name: y, value: '2'}]}, {path: {value: /a/b}, headers: [{name: x, value: '1'}]}]\n"
               "    backendRefs: [{name: a, port: 80}, {name: b, port: 80, weight: 0}]\n"),
        _route("host", "  parentRefs: [{name: gw}]\n  hostnames: [only.test]\n  rules:\n"
               "  - backendRefs: [{name: b, port: 80}]\n"),
    )
    assert _service(config, "/a/b/c") == "web/b:80"  # longest prefix
    assert _service(config, "/a") == "web/c:80"  # exact beats prefix
    assert _service(config, "/a/x") == "web/a"
    assert _service(config, "/a/b", method="POST") == "web/c:80"  # method beats headers
    assert _service(config, "/a/b", headers=(("x", "1"),)) == "web/a"  # the headers route (weight 0 dropped)
    assert _service(config, "/a", host="only.test") == "web/b:80"  # the exact hostname beats every path
    routers = [r for r in config.routers if "/headers/" in r.name and r.name.endswith(("match0", "match1"))]
    assert [r.name.rsplit("/", 1)[1] for r in routers] == ["match0", "match1"]  # two headers before one


def test_ties_go_to_the_oldest_route_then_by_name(tmp_path: Path) -> None:
    rule = "  parentRefs: [{name: gw}]\n  rules:\n  - backendRefs: [{name: %s, port: 80}]\n"
    config = _load(tmp_path, _route("a-young", rule % "b", created="2026-02-01T00:00:00Z"),
                   _route("z-old", rule % "c", created="2026-01-01T00:00:00Z"))
    assert _service(config) == "web/c:80"
    config = _load(tmp_path, _route("b", rule % "b"), _route("a", rule % "c"))
    assert _service(config) == "web/c:80"


def test_listeners_admit_routes_and_status_says_why(tmp_path: Path) -> None:
    rule = "  rules:\n  - backendRefs: [{name: d, port: 80}]\n"
    path = tmp_path / "routes.yaml"
    path.write_text(BASE + "".join([
        _route("same-only", "  parentRefs: [{name: gw, namespace: web, sectionName: http}]\n" + rule, "other"),
        _route("selected", "  parentRefs: [{name: gw, namespace: web, sectionName: team}]\n" + rule, "other"),
        _route("hostless", "  parentRefs: [{name: gw, namespace: web, sectionName: shop}]\n"
               "  hostnames: [other.test]\n" + rule, "other"),
        _route("nowhere", "  parentRefs: [{name: gw, namespace: web, sectionName: nope}, {name: ghost}]\n" + rule,
               "other"),
        _route("tls-only", "  parentRefs: [{name: gw, namespace: web, sectionName: tls}]\n" + rule, "other"),
    ]))
    loaded = load_gateway_api(path)
    lines = status_lines(loaded)
    assert lines == [
        "HTTPRoute other/same-only → web/gw/http: Accepted=False (NotAllowedByListeners): the listeners' "
        "allowedRoutes do not admit this route; ResolvedRefs=True (ResolvedRefs)",
        "HTTPRoute other/selected → web/gw/team: Accepted=True (Accepted); ResolvedRefs=True (ResolvedRefs)",
        "HTTPRoute other/hostless → web/gw/shop: Accepted=False (NoMatchingListenerHostname): no route hostname "
        "intersects a listener hostname; ResolvedRefs=True (ResolvedRefs)",
        "HTTPRoute other/nowhere → web/gw/nope: Accepted=False (NoMatchingParent): no listener with this "
        "sectionName/port; ResolvedRefs=True (ResolvedRefs)",
        "HTTPRoute other/nowhere → other/ghost: Accepted=False (NoMatchingParent): no Gateway other/ghost in the "
        "manifests; ResolvedRefs=True (ResolvedRefs)",
        "HTTPRoute other/tls-only → web/gw/tls: Accepted=False (NoMatchingParent): only HTTP listeners are served "
        "by the shadow gateway; ResolvedRefs=True (ResolvedRefs)",
    ]
    assert gateway_status_lines(loaded) == [
        "Gateway web/gw listener http (HTTP :80): Accepted=True, Programmed=True; attachedRoutes=0",
        "Gateway web/gw listener shop (HTTP :80, *.shop.test): Accepted=True, Programmed=True; attachedRoutes=0",
        "Gateway web/gw listener team (HTTP :80, team.test): Accepted=True, Programmed=True; attachedRoutes=1",
        "Gateway web/gw listener tls (HTTPS :443): Accepted=False (UnsupportedProtocol): the shadow gateway serves "
        "HTTP listeners only; attachedRoutes=0",
    ]
    assert [r.name for r in loaded.config.routers] == ["httproute/other/selected/rule0/match0/team.test"]
    assert _service(loaded.config, host="team.test") == "other/d:80"
    assert _service(loaded.config, host="x.test") is None  # a listener hostname limits the route


def test_references_resolve_or_answer_500(tmp_path: Path) -> None:
    path = tmp_path / "routes.yaml"
    path.write_text(BASE + _route("r", """\
  parentRefs: [{name: gw}]
  rules:
  - matches: [{path: {value: /cross}}]
    backendRefs: [{name: d, namespace: other, port: 80}]
  - matches: [{path: {value: /kind}}]
    backendRefs: [{name: a, port: 80, kind: Bucket, group: storage.example}]
  - matches: [{path: {value: /port}}]
    backendRefs: [{name: a, port: 81}]
  - matches: [{path: {value: /half}}]
    backendRefs: [{name: b, port: 80, weight: 1}, {name: ghost, port: 80, weight: 1}]
  - matches: [{path: {value: /zero}}]
    backendRefs: [{name: b, port: 80, weight: 0}]
  - matches: [{path: {value: /none}}]
"""))
    loaded = load_gateway_api(path)
    reasons = [c.reason for c in loaded.resolved_refs["web/r"]]
    assert reasons == ["RefNotPermitted", "InvalidKind", "BackendNotFound", "BackendNotFound"]
    config = loaded.config
    for p in ("/cross", "/kind", "/port", "/zero", "/none"):
        assert _service(config, p) == UNRESOLVED_SERVICE, p
    unresolved = config.services[UNRESOLVED_SERVICE]
    assert isinstance(unresolved, LoadBalancerService) and unresolved.servers == () and unresolved.empty_status == 500
    half = config.services[_service(config, "/half") or ""]
    assert isinstance(half, WeightedService)
    assert {(c.name, c.weight) for c in half.services} == {("web/b:80", 1), (UNRESOLVED_SERVICE, 1)}
    # A ReferenceGrant from the route's namespace admits the cross-namespace Service.
    path.write_text(path.read_text() + """---
apiVersion: gateway.networking.k8s.io/v1beta1
kind: ReferenceGrant
metadata: {name: g, namespace: other}
spec:
  from: [{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: web}]
  to: [{group: "", kind: Service}]
""")
    assert _service(load_gateway_config(path), "/cross") == "other/d:80"


def test_filters_become_middlewares_and_mirrors(tmp_path: Path) -> None:
    config = _load(tmp_path, _route("f", """\
  parentRefs: [{name: gw}]
  rules:
  - matches: [{path: {value: /api}}]
    filters:
    - type: RequestHeaderModifier
      requestHeaderModifier: {set: [{name: X-S, value: s}], add: [{name: X-A, value: a}], remove: [X-R]}
    - type: ResponseHeaderModifier
      responseHeaderModifier: {add: [{name: X-Out, value: o}]}
    - type: URLRewrite
      urlRewrite: {hostname: inner.test, path: {type: ReplacePrefixMatch, replacePrefixMatch: /v1}}
    - type: RequestMirror
      requestMirror: {backendRef: {name: c, port: 80}, fraction: {numerator: 1, denominator: 3}}
    backendRefs: [{name: a, port: 80}]
  - matches: [{path: {value: /old}}]
    filters:
    - type: RequestRedirect
      requestRedirect: {scheme: https, statusCode: 301, path: {type: ReplacePrefixMatch, replacePrefixMatch: /new}}
"""))
    api = next(r for r in config.routers if "/rule0/" in r.name)
    mws = [config.middlewares[m] for m in api.middlewares]
    assert mws[0] == HeadersMiddleware(mws[0].name, request_headers=(("X-S", "s"), ("X-R", "")),
                                       request_add=(("X-A", "a"),))
    assert isinstance(mws[1], HeadersMiddleware) and mws[1].response_add == (("X-Out", "o"),)
    assert isinstance(mws[2], HeadersMiddleware) and mws[2].request_headers == (("Host", "inner.test"),)
    assert isinstance(mws[3], ReplacePrefixMatch) and (mws[3].prefix, mws[3].replacement) == ("/api", "/v1")
    mirroring = config.services[api.service]
    assert isinstance(mirroring, MirroringService) and mirroring.service == "web/a"
    assert [(m.name, m.percent, m.denominator) for m in mirroring.mirrors] == [("web/c:80", 1, 3)]
    assert config.shadow.mirroring.targets["web/c:80"].role == "candidate"
    old = next(r for r in config.routers if "/rule1/" in r.name)
    redirect = config.middlewares[old.middlewares[0]]
    assert isinstance(redirect, RequestRedirect)
    assert (redirect.scheme, redirect.status, redirect.prefix, redirect.prefix_replacement) == ("https", 301, "/old",
                                                                                                 "/new")


def test_mirroring_a_weighted_split_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"document 5, HTTPRoute web/m: spec.rules\[0\]: RequestMirror with "
                                          "several backendRefs is not supported yet"):
        _load(tmp_path, _route("m", """\
  parentRefs: [{name: gw}]
  rules:
  - filters: [{type: RequestMirror, requestMirror: {backendRef: {name: c, port: 80}}}]
    backendRefs: [{name: a, port: 80}, {name: b, port: 80}]
"""))


def test_extension_ref_names_a_middleware_of_the_settings(tmp_path: Path) -> None:
    path = tmp_path / "routes.yaml"
    route = _route("x", """\
  parentRefs: [{name: gw}]
  rules:
  - filters: [{type: ExtensionRef, extensionRef: {group: traefik.io, kind: Middleware, name: tag}}]
    backendRefs: [{name: a, port: 80}]
""")
    path.write_text(BASE.replace("shadow:\n", "http:\n  middlewares:\n    tag: {headers: {customRequestHeaders: "
                                              "{X-Tag: t}}}\nshadow:\n") + route)
    config = load_gateway_config(path)
    assert config.routers[0].middlewares == ("tag",) and config.routers[0].service == "web/a"
    path.write_text(BASE + route)  # no such middleware: the rule answers 500, ResolvedRefs says why
    loaded = load_gateway_api(path)
    assert loaded.config.routers[0].service == UNRESOLVED_SERVICE
    assert [c.reason for c in loaded.resolved_refs["web/x"]] == ["BackendNotFound"]


def test_settings_errors_are_located(tmp_path: Path) -> None:
    path = tmp_path / "routes.yaml"
    path.write_text(BASE.replace("web/b:80: http://127.0.0.1:1002", "web/b:80: ftp://127.0.0.1"))
    with pytest.raises(ConfigError) as info:
        load_gateway_config(path)
    line = BASE.splitlines().index("  web/b:80: http://127.0.0.1:1002") + 1
    assert info.value.format_message() == (f"{path}:{line}: backends.web/b:80: bad URL 'ftp://127.0.0.1': scheme must "
                                           "be http or https")
    path.write_text(BASE.replace("web/b:80:", "web/b:eighty:"))
    with pytest.raises(ConfigError, match=rf":{line}: backends.web/b:eighty: expected namespace/name:port"):
        load_gateway_config(path)
    path.write_text(BASE.replace("capture: {enabled: false}", "capture: {enabled: maybe}"))
    with pytest.raises(ConfigError, match=rf":{line + 4}: shadow.capture.enabled: "):
        load_gateway_config(path)
    path.write_text(BASE.replace('"web/c:80"', '"web/z:80"'))
    with pytest.raises(ConfigError, match=r"shadow.mirroring.targets.web/z:80: no service named 'web/z:80'"):
        load_gateway_config(path)


def test_a_file_router_beside_the_manifests(tmp_path: Path) -> None:
    path = tmp_path / "routes.yaml"
    extra = ("http:\n  routers:\n    legacy: {rule: \"PathPrefix(`/legacy`)\", service: mono}\n"
             "  services:\n    mono: {loadBalancer: {servers: [{url: \"http://127.0.0.1:2000\"}]}}\nshadow:\n")
    path.write_text(BASE.replace("shadow:\n", extra) + _route("r", "  parentRefs: [{name: gw}]\n  rules:\n"
                                                                   "  - backendRefs: [{name: a, port: 80}]\n"))
    config = load_gateway_config(path)
    assert _service(config, "/legacy") == "web/a"  # manifests' routers come first (priority above 1000000)
    assert _service(config, "/x") == "web/a" and "legacy" in {r.name for r in config.routers}


def test_the_documented_example_loads_and_routes() -> None:
    example = Path(__file__).resolve().parent.parent.parent / "docs" / "examples" / "gateway-api"
    loaded = load_gateway_api(example)
    assert status_lines(loaded) == [
        "HTTPRoute shop/orders → shop/edge: Accepted=True (Accepted); ResolvedRefs=True (ResolvedRefs)"]
    config = loaded.config
    assert _service(config, "/api/orders/7") == "httproute/shop/orders/rule0/mirroring"
    assert _service(config, "/api/ordersX") == "shop/monolith:8080"
    redirect = config.middlewares[resolve_router(config, RequestView(method="GET", host="h", path="/old-shop/a"))[0]
                                  .middlewares[0]]  # type: ignore[union-attr]
    assert isinstance(redirect, RequestRedirect) and redirect.status == 301
    assert config.shadow.mirroring.targets["shop/orders-next:8080"].allow_unsafe is False
    assert config.shadow.capture.dir == example / "capture"


def test_backend_ref_header_filters_get_their_own_service(tmp_path: Path) -> None:
    config = _load(tmp_path, _route("b", """\
  parentRefs: [{name: gw}]
  rules:
  - backendRefs:
    - name: a
      port: 80
      weight: 3
      filters: [{type: RequestHeaderModifier, requestHeaderModifier: {set: [{name: X-B, value: a}]}}]
    - {name: b, port: 80, weight: 1}
"""))
    split = config.services[_service(config) or ""]
    assert isinstance(split, WeightedService)
    assert [(c.name, c.weight) for c in split.services] == [("web/a#httproute/web/b/rule0/backend0", 3),
                                                            ("web/b:80", 1)]
    own = config.services["web/a#httproute/web/b/rule0/backend0"]
    assert isinstance(own, LoadBalancerService) and own.servers == config.services["web/a"].servers  # type: ignore[union-attr]
    assert [m.request_headers for m in own.request_headers] == [(("X-B", "a"),)]
    plain = config.services["web/b:80"]
    assert isinstance(plain, LoadBalancerService) and plain.request_headers == ()


def test_retry_and_timeouts_become_the_retry_middleware(tmp_path: Path) -> None:
    config = _load(tmp_path, _route("t", """\
  parentRefs: [{name: gw}]
  rules:
  - matches: [{path: {value: /r}}]
    retry: {codes: [500, 503, 500], attempts: 3, backoff: 100ms}
    timeouts: {request: 1m30s, backendRequest: 250ms}
    backendRefs: [{name: a, port: 80}]
  - matches: [{path: {value: /t}}]
    timeouts: {request: 2s}
    backendRefs: [{name: a, port: 80}]
  - matches: [{path: {value: /default}}]
    retry: {}
    backendRefs: [{name: a, port: 80}]
  - matches: [{path: {value: /plain}}]
    timeouts: {request: 0s}
    backendRefs: [{name: a, port: 80}]
"""))

    def retry_of(rule: int) -> Retry | None:
        router = next(r for r in config.routers if f"/rule{rule}/" in r.name)
        found = [config.middlewares[m] for m in router.middlewares if isinstance(config.middlewares[m], Retry)]
        return found[0] if found else None  # type: ignore[return-value]

    r = retry_of(0)
    assert r is not None
    assert (r.attempts, r.status, r.backoff_s) == (4, ((500, 500), (503, 503)), 0.1)  # 3 retries: 4 tries
    assert (r.request_timeout_s, r.attempt_timeout_s) == (90.0, 0.25)
    assert r.retry_sent_failures and r.retry_non_idempotent_method and r.needs_sender
    t = retry_of(1)
    assert t is not None and (t.attempts, t.request_timeout_s, t.status) == (1, 2.0, ())
    assert t.disable_retry_on_network_error and not t.retry_sent_failures and t.needs_sender
    d = retry_of(2)
    assert d is not None and d.attempts == 1 + DEFAULT_RETRY_ATTEMPTS and d.status == ()
    assert retry_of(3) is None  # "0s" disables: nothing to enforce
