"""Gateway API objects → shadow's configuration model (routers, services, middlewares).

Pure: no I/O. Every (hostname, listener, rule, match) of an accepted HTTPRoute becomes one router
whose rule is a Traefik rule expression and whose priority encodes the spec's precedence
(shadow.gatewayapi.resolve.match_order), so the gateway's one router does the routing:

| Gateway API | Traefik rule |
|---|---|
| hostname `foo.example.com` / `*.example.com` | ``Host(`foo.example.com`)`` / ``HostRegexp(`^.+\\.example\\.com$`)`` |
| path Exact `/p` | ``Path(`/p`)`` |
| path PathPrefix `/p` (element-wise: not `/px`) | ``(Path(`/p`) || PathPrefix(`/p/`))``; `/` → ``PathPrefix(`/`)`` |
| path RegularExpression `re` | ``PathRegexp(`^(?:re)$`)`` (the whole path) |
| header / query param Exact, RegularExpression | ``Header``, ``HeaderRegexp``, ``Query``, ``QueryRegexp`` |
| method | ``Method`` |

A rule's backendRefs become one loadBalancer service per backend (`namespace/name:port`, the URL from
shadow's `backends`) or, for several, a `weighted` service over them (weight 0 drops a backend); a
reference that does not resolve answers 500 for its share of the traffic, as the spec says, and so
does a rule without backends. A RequestMirror filter wraps the rule's service in a `mirroring`
service (percent or fraction), so copies are sent, captured and paired like a Traefik file's mirrors.
Filters become middlewares in their order: RequestHeaderModifier / ResponseHeaderModifier →
`headers` (with `add` appending a line), URLRewrite → Traefik's `replacePath` / `ReplacePrefixMatch`
and a Host header, RequestRedirect → `RequestRedirect` (answered by the gateway; both in
shadow.gateway.middlewares.httproute), ExtensionRef (group `traefik.io`, kind
`Middleware`) → the middleware of that name from shadow's settings document.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, replace

from shadow.gateway.config import (
    HeadersMiddleware,
    LoadBalancerService,
    Middleware,
    MirroringService,
    MirrorSpec,
    Router,
    Service,
    WeightedChild,
    WeightedService,
    server_from_url,
)
from shadow.gateway.goregex import compile_go
from shadow.gateway.middlewares.headers import Cors
from shadow.gateway.middlewares.httproute import ReplacePrefixMatch, RequestRedirect
from shadow.gateway.middlewares.paths import ReplacePath
from shadow.gateway.middlewares.retry import Retry
from shadow.gateway.rules import RuleSyntaxError, compile_rule
from shadow.gatewayapi.manifests import BackendRef, CorsPolicy, Filter, HTTPRoute, Manifests, Match, RouteRule
from shadow.gatewayapi.resolve import (
    BackendKey,
    Condition,
    Resolution,
    RoutedMatch,
    RouteStatus,
    attach,
    match_order,
    resolve_backend,
)

__all__ = [
    "DEFAULT_RETRY_ATTEMPTS",
    "PRIORITY_BASE",
    "REDIRECT_SERVICE",
    "UNRESOLVED_SERVICE",
    "Translation",
    "cors_middleware",
    "go_string",
    "rule_expression",
    "rule_retry",
    "translate",
]

# Routers from manifests sit above this priority, so they are tried before a Traefik file's routers
# with default priorities (the length of their rule) when both are used together.
PRIORITY_BASE = 1_000_000
UNRESOLVED_SERVICE = "gateway-api/unresolved"  # answers 500: invalid references, no backends
REDIRECT_SERVICE = "gateway-api/redirect"  # a RequestRedirect rule's: never reached, the gateway answers
EXTENSION_GROUP = "traefik.io"


@dataclass(frozen=True)
class Translation:
    routers: tuple[Router, ...]
    services: Mapping[str, Service]
    middlewares: Mapping[str, Middleware]
    statuses: tuple[RouteStatus, ...]
    extra_conditions: Mapping[str, tuple[Condition, ...]]  # route key → ResolvedRefs condition


def go_string(value: str) -> str:
    """`value` as a double-quoted Go string for a Traefik rule."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _host_expression(host: str) -> str:
    if host.startswith("*."):
        return f"HostRegexp({go_string('^.+' + re.escape(host[1:]) + '$')})"
    return f"Host({go_string(host)})"


def _path_expression(match: Match) -> str:
    if match.path_type == "Exact":
        return f"Path({go_string(match.path)})"
    if match.path_type == "RegularExpression":
        return f"PathRegexp({go_string('^(?:' + match.path + ')$')})"
    prefix = match.path.rstrip("/")
    if not prefix:
        return "PathPrefix(`/`)"
    return f"(Path({go_string(prefix)}) || PathPrefix({go_string(prefix + '/')}))"


def rule_expression(hostname: str | None, match: Match) -> str:
    """The Traefik rule of one (hostname, match)."""
    parts = [_host_expression(hostname)] if hostname else []
    parts.append(_path_expression(match))
    if match.method:
        parts.append(f"Method({go_string(match.method)})")
    for kind, name, value in match.headers:
        matcher = "Header" if kind == "Exact" else "HeaderRegexp"
        parts.append(f"{matcher}({go_string(name)}, {go_string(value)})")
    for kind, name, value in match.query:
        matcher = "Query" if kind == "Exact" else "QueryRegexp"
        parts.append(f"{matcher}({go_string(name)}, {go_string(value)})")
    return " && ".join(parts)


def backend_service_name(key: BackendKey) -> str:
    namespace, name, port = key
    return f"{namespace}/{name}" + (f":{port}" if port is not None else "")


def _route_label(route: HTTPRoute) -> str:
    return f"httproute/{route.doc.namespace}/{route.doc.name}"


class _Builder:
    def __init__(self, manifests: Manifests, backends: Mapping[BackendKey, str],
                 file_middlewares: Mapping[str, Middleware]) -> None:
        self.manifests, self.backends, self.file_middlewares = manifests, backends, file_middlewares
        self.services: dict[str, Service] = {}
        self.middlewares: dict[str, Middleware] = {}
        self.problems: dict[str, list[Condition]] = {}

    def problem(self, route: HTTPRoute, reason: str, message: str) -> None:
        found = self.problems.setdefault(route.doc.key, [])
        condition = Condition("ResolvedRefs", False, reason, message)
        if condition not in found:  # a rule serves several hostnames: report once
            found.append(condition)

    def unresolved(self) -> str:
        self.services.setdefault(UNRESOLVED_SERVICE, LoadBalancerService(UNRESOLVED_SERVICE, (), empty_status=500))
        return UNRESOLVED_SERVICE

    def backend(self, route: HTTPRoute, resolution: Resolution) -> str:
        if resolution.key is None:
            self.problem(route, resolution.reason, resolution.message)
            return self.unresolved()
        name = backend_service_name(resolution.key)
        if name not in self.services:
            self.services[name] = LoadBalancerService(name, (server_from_url(self.backends[resolution.key]),))
        return name

    def filtered_backend(self, name: str, label: str, ref: BackendRef) -> str:
        """A copy of backend service `name` whose requests get the backendRef's header filters."""
        base = self.services[name]
        assert isinstance(base, LoadBalancerService)
        mws = tuple(HeadersMiddleware(f"{label}/filter{i}", request_headers=(*e.set, *((h, "") for h in e.remove)),
                                      request_add=e.add) for i, e in enumerate(ref.request_headers))
        own = f"{name}#{label}"
        self.services[own] = replace(base, name=own, request_headers=mws)
        return own

    def rule_service(self, route: HTTPRoute, rule_index: int, rule: RouteRule) -> str:
        """The service a rule forwards to: a backend, a weighted split, or the 500 service."""
        label = f"{_route_label(route)}/rule{rule_index}"
        if not rule.backends and any(f.redirect is not None for f in rule.filters):
            self.services.setdefault(REDIRECT_SERVICE, LoadBalancerService(REDIRECT_SERVICE, (), empty_status=500))
            return REDIRECT_SERVICE
        shares: dict[str, int] = {}
        for b_index, ref in enumerate(rule.backends):
            name = self.backend(route, resolve_backend(self.manifests, self.backends, route, ref))
            if ref.request_headers and name != UNRESOLVED_SERVICE:  # its own filters: its own service
                name = self.filtered_backend(name, f"{label}/backend{b_index}", ref)
            shares[name] = shares.get(name, 0) + ref.weight
        live = {name: weight for name, weight in shares.items() if weight > 0}
        if not live:
            main = self.unresolved()
        elif len(live) == 1:
            main = next(iter(live))
        else:
            self.services[label] = WeightedService(label, tuple(WeightedChild(n, w) for n, w in live.items()))
            main = label
        mirrors = [f.mirror for f in rule.filters if f.mirror is not None]
        if not mirrors:
            return main
        specs = []
        for mirror in mirrors:
            resolution = resolve_backend(self.manifests, self.backends, route, mirror.backend)
            if resolution.key is None:
                self.problem(route, resolution.reason, resolution.message)
                continue
            specs.append(MirrorSpec(self.backend(route, resolution), mirror.numerator, mirror.denominator))
        if not specs or main == UNRESOLVED_SERVICE:
            return main
        if not isinstance(self.services[main], LoadBalancerService):
            raise ValueError(f"{route.doc.where()}: spec.rules[{rule_index}]: RequestMirror with several "
                             "backendRefs is not supported yet by the shadow gateway")
        name = f"{label}/mirroring"
        self.services[name] = MirroringService(name, main, tuple(specs))
        return name

    def filter_middleware(self, route: HTTPRoute, item: RoutedMatch, index: int, f: Filter,
                          router_name: str) -> Middleware | None:
        name = f"{router_name}/filter{index}"
        if f.request_headers is not None:
            edits = f.request_headers
            return HeadersMiddleware(name, request_headers=(*edits.set, *((h, "") for h in edits.remove)),
                                     request_add=edits.add)
        if f.response_headers is not None:
            edits = f.response_headers
            return HeadersMiddleware(name, response_headers=(*edits.set, *((h, "") for h in edits.remove)),
                                     response_add=edits.add)
        if f.redirect is not None:
            r = f.redirect
            return RequestRedirect(name, scheme=r.scheme, hostname=r.hostname, port=r.port,
                                      full_path=r.path if r.path_type == "ReplaceFullPath" else None,
                                      prefix=item.match.path if r.path_type == "ReplacePrefixMatch" else None,
                                      prefix_replacement=r.path if r.path_type == "ReplacePrefixMatch" else None,
                                      status=r.status_code, listener_port=item.listener_port)
        if f.cors is not None:
            return HeadersMiddleware(name, cors=cors_middleware(f.cors))
        if f.rewrite is not None:
            return None  # several middlewares: see rewrite_middlewares
        if f.extension is not None:
            group, kind, ext_name = f.extension
            if group != EXTENSION_GROUP or kind != "Middleware":
                self.problem(route, "InvalidKind", f"ExtensionRef {group}/{kind} is not supported "
                             f"(only {EXTENSION_GROUP}/Middleware, a middleware of shadow's settings)")
                return None
            found = self.file_middlewares.get(ext_name)
            if found is None:
                self.problem(route, "BackendNotFound", f"ExtensionRef: no middleware {ext_name!r} in shadow's "
                             "settings (http.middlewares)")
            return found
        return None

    def router_middlewares(self, item: RoutedMatch, router_name: str) -> tuple[list[str], bool]:
        """The router's middleware names, and False when an unresolved ExtensionRef must answer 500."""
        names: list[str] = []
        ok = True
        for index, f in enumerate(item.rule.filters):
            if f.rewrite is not None:
                rw = f.rewrite
                if rw.hostname is not None:
                    mw_name = f"{router_name}/filter{index}/host"
                    self.middlewares[mw_name] = HeadersMiddleware(mw_name, request_headers=(("Host", rw.hostname),))
                    names.append(mw_name)
                if rw.path_type == "ReplaceFullPath" and rw.path is not None:
                    mw_name = f"{router_name}/filter{index}/path"
                    self.middlewares[mw_name] = ReplacePath(mw_name, rw.path)
                    names.append(mw_name)
                elif rw.path_type == "ReplacePrefixMatch" and rw.path is not None:
                    mw_name = f"{router_name}/filter{index}/path"
                    self.middlewares[mw_name] = ReplacePrefixMatch(mw_name, item.match.path, rw.path)
                    names.append(mw_name)
                continue
            mw = self.filter_middleware(item.route, item, index, f, router_name)
            if mw is None:
                if f.extension is not None:
                    ok = False
                continue
            if f.extension is None:  # an ExtensionRef names a middleware of the settings document
                self.middlewares.setdefault(mw.name, mw)
            names.append(mw.name)
        retry = rule_retry(item.rule, f"{_route_label(item.route)}/rule{item.rule_index}/retry")
        if retry is not None:
            self.middlewares.setdefault(retry.name, retry)
            names.append(retry.name)
        return names, ok


def cors_middleware(policy: CorsPolicy) -> Cors:
    """A CORS filter as the headers middleware's CORS: exact origins listed, an origin with `*` in its
    host a Go regexp where `*` matches anything (periods included, as the API says), `*` any origin."""
    exact = tuple(o for o in policy.allow_origins if o == "*" or "*" not in o)
    patterns = tuple(compile_go("^" + ".*".join(re.escape(part) for part in o.split("*")) + "$")
                     for o in policy.allow_origins if o != "*" and "*" in o)
    return Cors(allow_credentials=policy.allow_credentials, allow_headers=policy.allow_headers,
                allow_methods=policy.allow_methods, allow_origin_list=exact, allow_origin_regex=patterns,
                expose_headers=policy.expose_headers, max_age=policy.max_age_s, add_vary_header=True)


# Tries of a rule whose `retry` leaves `attempts` out: the Gateway API leaves it to the gateway.
DEFAULT_RETRY_ATTEMPTS = 2


def rule_retry(rule: RouteRule, name: str) -> Retry | None:
    """A rule's `retry` and `timeouts` as the retry middleware that enforces them (None: neither).

    `attempts` counts retries, Traefik's `attempts` counts tries: one more. Every method is retried
    (the Gateway API restricts none; a retry stanza is the route owner's opt-in), on the listed codes,
    on a connection that failed or dropped, and on a backend timeout."""
    timeouts, retry = rule.timeouts, rule.retry
    if retry is None and (timeouts is None or not (timeouts.request_s or timeouts.backend_request_s)):
        return None
    attempts = 1
    if retry is not None:
        attempts = 1 + (retry.attempts if retry.attempts is not None else DEFAULT_RETRY_ATTEMPTS)
    return Retry(name, attempts=attempts,
                 status=tuple((c, c) for c in retry.codes) if retry is not None else (),
                 retry_non_idempotent_method=True,
                 disable_retry_on_network_error=retry is None,
                 attempt_timeout_s=(timeouts.backend_request_s or 0.0) if timeouts is not None else 0.0,
                 request_timeout_s=(timeouts.request_s or 0.0) if timeouts is not None else 0.0,
                 backoff_s=(retry.backoff_s or 0.0) if retry is not None else 0.0,
                 retry_sent_failures=retry is not None)


def translate(manifests: Manifests, backends: Mapping[BackendKey, str],
              file_middlewares: Mapping[str, Middleware] | None = None) -> Translation:
    """Routers, services and middlewares for every accepted route, and every route's status.

    Raises ValueError (with the document's location) for what shadow cannot serve yet."""
    builder = _Builder(manifests, backends, file_middlewares or {})
    for backend, url in backends.items():  # every mapped backend is a service (a mirror target may name it)
        name = backend_service_name(backend)
        builder.services[name] = LoadBalancerService(name, (server_from_url(url),))
    statuses = []
    items: list[RoutedMatch] = []
    for route in manifests.routes:
        parents = attach(manifests, route)
        statuses.append(RouteStatus(route, parents))
        seen: set[tuple[str | None, int]] = set()
        for parent in parents:
            for attachment in parent.attachments:
                for host in attachment.hostnames:
                    if (host, attachment.listener.port) in seen:
                        continue
                    seen.add((host, attachment.listener.port))
                    for r_index, rule in enumerate(route.rules):
                        for m_index, match in enumerate(rule.matches):
                            items.append(RoutedMatch(route, r_index, m_index, rule, match, host,
                                                     attachment.listener.port))
    items.sort(key=match_order)
    ports = {item.listener_port for item in items}
    rule_services: dict[tuple[str, int], str] = {}
    routers = []
    for rank, item in enumerate(items):
        route = item.route
        key = (route.doc.key, item.rule_index)
        if key not in rule_services:
            rule_services[key] = builder.rule_service(route, item.rule_index, item.rule)
        name = f"{_route_label(route)}/rule{item.rule_index}/match{item.match_index}"
        if item.hostname:
            name += f"/{item.hostname}"
        if len(ports) > 1:
            name += f":{item.listener_port}"
        middlewares, ok = builder.router_middlewares(item, name)
        service = rule_services[key] if ok else builder.unresolved()
        try:
            compiled = compile_rule(rule_expression(item.hostname, item.match))
        except RuleSyntaxError as exc:  # what the manifest reader does not check (e.g. a non-ASCII value)
            raise ValueError(f"{route.doc.where()}: spec.rules[{item.rule_index}].matches[{item.match_index}]: "
                             f"{exc}") from None
        routers.append(Router(name, compiled, PRIORITY_BASE + len(items) - rank, service, tuple(middlewares)))
    # Statuses for routes whose rules never produced a router (not accepted) still report references.
    for route in manifests.routes:
        for r_index, rule in enumerate(route.rules):
            if (route.doc.key, r_index) not in rule_services:
                for ref in rule.backends:
                    res = resolve_backend(manifests, backends, route, ref)
                    if res.key is None:
                        builder.problem(route, res.reason, res.message)
    extra = {key: tuple(conds) for key, conds in builder.problems.items()}
    return Translation(tuple(routers), builder.services, builder.middlewares, tuple(statuses), extra)
