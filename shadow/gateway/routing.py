"""The pure routing core: which router, which server, which mirrors, which header rewrites.

No I/O and no mitmproxy: the gateway addon turns a flow into a `RequestView`, asks
`select_router` + `plan_route`, picks a server with `ServerPicker`, asks `MirrorCounter` which
mirrors get a copy, and applies the middleware and forwarded-header rewrites computed here.

`ServerPicker` and `MirrorCounter` hold state and are not thread-safe: call them from the proxy's
event loop (one thread), which is where mitmproxy runs addon hooks.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace

from shadow.gateway.config import (
    AddPrefix,
    CircuitBreakerMiddleware,
    FailoverService,
    GatewayConfig,
    HeadersMiddleware,
    LoadBalancerService,
    Middleware,
    MirroringService,
    MirrorSpec,
    Router,
    Server,
    StripPrefix,
    WeightedService,
)
from shadow.gateway.entrypoints import EntryPoint
from shadow.gateway.middlewares.request import Headers, header_values, set_header, without_header
from shadow.gateway.mirror import percent_due
from shadow.gateway.rules import RESERVED_ESCAPES, RequestView
from shadow.gateway.shifting import needs_control
from shadow.gateway.tls import TlsOptions, options_for_connection

__all__ = [
    "MirrorCounter",
    "MirrorTarget",
    "RewrittenRequest",
    "RoutePlan",
    "ServerPicker",
    "apply_request_middlewares",
    "apply_response_middlewares",
    "connection_tls_options",
    "forwarded_headers",
    "leaf_services",
    "plan_route",
    "resolve_router",
    "route_plans",
    "select_child",
    "select_router",
    "with_inherited",
]



# --------------------------------------------------------------------------------------------------
# Router selection and route plans
# --------------------------------------------------------------------------------------------------

_LISTENER_VIEWS: dict[int, tuple[GatewayConfig, dict[tuple[str | None, bool], GatewayConfig]]] = {}


def connection_tls_options(config: GatewayConfig, entry_point: EntryPoint | None, sni: str | None) -> TlsOptions:
    """The TLS options a client connection on `entry_point` with `sni` gets: those of the TLS routers
    (a router's `tls.options`, else its entry points' `http.tls.options`) whose Host names the SNI.
    Otherwise Traefik serves the `default` options; here an entry point whose `http.tls` names options
    serves those instead (so an uplink entry point reached by IP, without SNI, still requires its mTLS)."""
    by_name = {ep.name: ep for ep in config.entry_points.values()}
    routes: list[tuple[str, tuple[str, ...], str]] = []
    for router in config.routers:
        inherited = [by_name[n].tls_options for n in router.entry_points if n in by_name and by_name[n].tls]
        if not router.tls and not inherited:
            continue
        routes.append((router.rule.text, router.entry_points, router.tls_options or next(iter(inherited), "")))
    name = options_for_connection(routes, entry_point.name if entry_point is not None else None, sni)
    if name == "default" and entry_point is not None and entry_point.tls_options:
        name = entry_point.tls_options
    return config.tls.option(name)


def config_for_listener(config: GatewayConfig, entry_point: EntryPoint | None, tls: bool) -> GatewayConfig:
    """The configuration as a request arriving on `entry_point` (TLS or not) sees it: top-level routers
    that name other entry points left out (no entry point known: only routers naming none; no
    entryPoints section in the file: entry points not checked), and, when
    the file uses TLS anywhere, routers whose TLS-ness (the router's `tls`, or its entry point's
    `http.tls`) differs from the connection's. Without entryPoints and TLS in the file: `config` itself."""
    uses_tls = any(r.tls for r in config.routers) or any(ep.tls for ep in config.entry_points.values())
    # Routers' entryPoints only bind when the file defines entry points (a Traefik file usually names
    # entry points of a static configuration kept elsewhere: then they are accepted and not checked).
    binds = bool(config.entry_points) and any(r.entry_points for r in config.routers)
    if not uses_tls and not binds:
        return config
    cached = _LISTENER_VIEWS.get(id(config))
    if cached is None or cached[0] is not config:
        if len(_LISTENER_VIEWS) > 8:
            _LISTENER_VIEWS.clear()
        cached = _LISTENER_VIEWS[id(config)] = (config, {})
    key = (entry_point.name if entry_point is not None else None, tls)
    view = cached[1].get(key)
    if view is None:
        ep_tls = entry_point.tls if entry_point is not None else False

        def serves(router: Router) -> bool:
            if router.parent_refs:  # children are reached through their parents
                return True
            if entry_point is not None and entry_point.uplink and entry_point.name not in router.entry_points:
                return False  # an uplink entry point serves the parent's uplink requests only
            if binds and router.entry_points and (entry_point is None or entry_point.name not in router.entry_points):
                return False
            return not uses_tls or (router.tls or ep_tls) == tls

        view = cached[1][key] = replace(config, routers=tuple(r for r in config.routers if serves(r)))
    return view


def select_router(config: GatewayConfig, req: RequestView) -> Router | None:
    """The first top-level router (in priority order) whose rule matches; None means 404.
    Child routers (with parentRefs) are only tried under their parent: see select_child."""
    for router in config.routers:
        if not router.parent_refs and router.rule.matches(req):
            return router
    return None


def select_child(config: GatewayConfig, parent: Router, req: RequestView) -> Router | None:
    """Multi-layer routing: the first child of `parent` (priority order) matching `req`, which is
    the request as the parent's middlewares left it; None means 404."""
    for router in config.routers:
        if parent.name in router.parent_refs and router.rule.matches(req):
            return router
    return None


def resolve_router(config: GatewayConfig, view: RequestView) -> tuple[Router | None, tuple[Middleware, ...]]:
    """The router that serves `view`, walking parent → child layers, and the parents' middlewares
    (in order) that the chosen child inherits. (None, ...) means 404: nothing matched at some layer."""
    router = select_router(config, view)
    inherited: tuple[Middleware, ...] = ()
    depth = 0
    while router is not None and not router.service and depth < 32:  # the loader rejects cycles
        inherited += tuple(config.middlewares[m] for m in router.middlewares)
        rewritten = apply_request_middlewares(inherited, view.path, view.headers)
        router = select_child(config, router, child_view(view, rewritten))
        depth += 1
    return router, inherited


def child_view(view: RequestView, rewritten: RewrittenRequest) -> RequestView:
    """The request a child router is matched against: path and headers after the parents' middlewares."""
    return RequestView(method=view.method, host=view.host, path=rewritten.path, query=view.query,
                       headers=rewritten.headers, client_ip=view.client_ip, body=view.body)


def with_inherited(plan: RoutePlan, inherited: tuple[Middleware, ...]) -> RoutePlan:
    """A child router's plan with its parents' middlewares first (they run before the child's)."""
    if not inherited:
        return plan
    controlled = plan.controlled or any(isinstance(m, CircuitBreakerMiddleware) for m in inherited)
    return replace(plan, middlewares=(*inherited, *plan.middlewares), controlled=controlled)


@dataclass(frozen=True)
class MirrorTarget:
    spec: MirrorSpec  # name and percent
    service: LoadBalancerService  # where the copy goes


@dataclass(frozen=True)
class RoutePlan:
    router: Router
    primary: LoadBalancerService  # the client's answer comes from here
    mirroring: MirroringService | None  # ask MirrorCounter.select(mirroring) once per request
    mirrors: tuple[MirrorTarget, ...]  # every mirror of `mirroring`, resolved to its service
    middlewares: tuple[Middleware, ...]  # the router's middlewares, in order
    # True: weighted / failover / HRW / sticky / health / breaker: ask shadow.gateway.shifting.TrafficControl
    # per request; `primary` is then only the first leaf loadBalancer (a default, for display).
    controlled: bool = False


def plan_route(config: GatewayConfig, router: Router) -> RoutePlan:
    """Flatten the router's service references. The loader guarantees the shape (no cycles, a
    mirroring service's main service and mirrors are loadBalancers), so this never fails on a
    loaded config."""
    service = config.services[router.service]
    middlewares = tuple(config.middlewares[name] for name in router.middlewares)
    controlled = needs_control(config, router.service, middlewares)
    if isinstance(service, WeightedService | FailoverService):
        return RoutePlan(router, _first_leaf(config, service.name), None, (), middlewares, controlled)
    if isinstance(service, LoadBalancerService):
        return RoutePlan(router, service, None, (), middlewares, controlled)
    primary = config.services[service.service]
    if not isinstance(primary, LoadBalancerService):
        raise ValueError(f"service {service.name!r}: main service must be a loadBalancer")
    mirrors: list[MirrorTarget] = []
    for spec in service.mirrors:
        target = config.services[spec.name]
        if not isinstance(target, LoadBalancerService):
            raise ValueError(f"service {service.name!r}: mirror {spec.name!r} must be a loadBalancer")
        mirrors.append(MirrorTarget(spec, target))
    return RoutePlan(router, primary, service, tuple(mirrors), middlewares, controlled)


def _first_leaf(config: GatewayConfig, name: str, depth: int = 0) -> LoadBalancerService:
    """The first loadBalancer reached through weighted / failover children (file order)."""
    svc = config.services[name]
    if isinstance(svc, LoadBalancerService):
        return svc
    if depth > 32:
        raise ValueError(f"service {name!r}: nesting too deep")
    if isinstance(svc, WeightedService):
        return _first_leaf(config, svc.services[0].name, depth + 1)
    if isinstance(svc, FailoverService):
        return _first_leaf(config, svc.service, depth + 1)
    return _first_leaf(config, svc.service, depth + 1)


def leaf_services(config: GatewayConfig, name: str, depth: int = 0) -> tuple[LoadBalancerService, ...]:
    """Every loadBalancer that can answer for service `name` (weighted children, failover main and
    fallback, a mirroring service's main service; not its mirrors), in file order, once each."""
    svc = config.services.get(name)
    if svc is None or depth > 32:
        return ()
    if isinstance(svc, LoadBalancerService):
        return (svc,)
    children: tuple[str, ...]
    if isinstance(svc, WeightedService):
        children = tuple(c.name for c in svc.services)
    elif isinstance(svc, FailoverService):
        children = (svc.service, svc.fallback)
    else:
        children = (svc.service,)
    out: dict[str, LoadBalancerService] = {}
    for child in children:
        for leaf in leaf_services(config, child, depth + 1):
            out.setdefault(leaf.name, leaf)
    return tuple(out.values())


def route_plans(config: GatewayConfig) -> dict[str, RoutePlan]:
    """Every router's plan by router name: compute once per loaded config, look up per request."""
    return {router.name: plan_route(config, router) for router in config.routers if router.service}


# --------------------------------------------------------------------------------------------------
# Server selection
# --------------------------------------------------------------------------------------------------

class ServerPicker:
    """Smooth weighted round-robin over a loadBalancer's servers, per service name.

    With equal weights (Traefik's default of 1) this is plain round-robin in file order; servers
    with weight 0 are never picked. Deterministic: no randomness."""

    def __init__(self) -> None:
        self._current: dict[str, tuple[tuple[Server, ...], list[int]]] = {}
        self._next_index: dict[str, int] = {}

    def pick(self, service: LoadBalancerService) -> Server:
        servers = service.servers
        if len(servers) == 1:
            return servers[0]
        if all(s.weight == 1 for s in servers):  # the common case: plain rotation
            i = self._next_index.get(service.name, 0) % len(servers)
            self._next_index[service.name] = i + 1
            return servers[i]
        state = self._current.get(service.name)
        if state is None or state[0] != servers:
            state = (servers, [0] * len(servers))
            self._current[service.name] = state
        current = state[1]
        total, best = 0, -1
        for i, server in enumerate(servers):
            if server.weight <= 0:
                continue
            current[i] += server.weight
            total += server.weight
            if best < 0 or current[i] > current[best]:
                best = i
        current[best] -= total
        return servers[best]

    def carry_over(self, new_config: GatewayConfig) -> None:
        """Keep rotation positions of services whose servers did not change across a reload."""
        servers = {name: svc.servers for name, svc in new_config.services.items()
                   if isinstance(svc, LoadBalancerService)}
        self._next_index = {k: v for k, v in self._next_index.items() if k in servers}
        self._current = {k: v for k, v in self._current.items() if servers.get(k) == v[0]}


# --------------------------------------------------------------------------------------------------
# Mirror selection
# --------------------------------------------------------------------------------------------------

class MirrorCounter:
    """Traefik's deterministic mirror selection, per (mirroring service, mirror name).

    Each request that reaches a mirroring service increments `total`; a mirror gets the copy when
    `count * 100 < total * percent`, and then `count += 1`. Percent 10 mirrors requests 1, 11, 21...;
    percent 100 every request, 0 none. Traefik keeps one `total` per service; keeping one per pair
    is the same as long as every mirror of a service is asked exactly once per request (which
    `select` does)."""

    def __init__(self) -> None:
        self._state: dict[tuple[str, str], list[int]] = {}  # (service, mirror) -> [total, count]

    def should_mirror(self, service_name: str, mirror: MirrorSpec) -> bool:
        key = (service_name, mirror.name)
        state = self._state.get(key)
        if state is None:
            state = self._state[key] = [0, 0]
        state[0] += 1
        if percent_due(state[0], state[1], mirror.percent, mirror.denominator):
            state[1] += 1
            return True
        return False

    def select(self, service: MirroringService) -> tuple[MirrorSpec, ...]:
        """The mirrors of `service` that get a copy of this request (call once per request)."""
        return tuple(m for m in service.mirrors if self.should_mirror(service.name, m))

    def counts(self, service_name: str, mirror_name: str) -> tuple[int, int]:
        """(requests seen, copies sent) for one mirror."""
        total, count = self._state.get((service_name, mirror_name), (0, 0))
        return total, count

    def carry_over(self, new_config: GatewayConfig) -> None:
        """Keep the counters of (service, mirror) pairs that still exist after a reload, so a reload
        does not restart the sequence (which would re-mirror request 1 of every pair)."""
        alive = {(svc.name, m.name) for svc in new_config.services.values()
                 if isinstance(svc, MirroringService) for m in svc.mirrors}
        self._state = {k: v for k, v in self._state.items() if k in alive}


# --------------------------------------------------------------------------------------------------
# Header helpers
# --------------------------------------------------------------------------------------------------

# --------------------------------------------------------------------------------------------------
# Forwarded headers
# --------------------------------------------------------------------------------------------------

_FORWARDED_HEADERS = (
    "X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto", "X-Forwarded-Port", "X-Forwarded-Server",
    "X-Forwarded-Uri", "X-Forwarded-Method", "X-Forwarded-Prefix", "X-Forwarded-Tls-Client-Cert",
    "X-Forwarded-Tls-Client-Cert-Info", "X-Real-Ip",
)
_FORWARDED_LOWER = frozenset(name.lower() for name in _FORWARDED_HEADERS)


def _is_websocket(headers: Sequence[tuple[str, str]]) -> bool:
    connection = ",".join(header_values(headers, "Connection")).lower()
    upgrade = ",".join(header_values(headers, "Upgrade")).lower()
    return "upgrade" in connection and "websocket" in upgrade


def forwarded_headers(headers: Iterable[tuple[str, str]], *, client_ip: str, host: str, scheme: str,
                      port: int | str, server_name: str, trust_forwarded: bool = True,
                      append_forwarded_for: bool = True) -> Headers:
    """The request headers as Traefik sends them upstream.

    - X-Forwarded-For: the client IP appended to what the client sent (one line, ", "-joined).
    - X-Forwarded-Proto (http/https, ws/wss for a WebSocket upgrade), -Host (the client's Host),
      -Port, X-Real-Ip: set only when the client did not send them.
    - X-Forwarded-Server: always this gateway's name.

    `trust_forwarded=False` drops the client's X-Forwarded-* and X-Real-Ip first (Traefik's default
    for clients outside `forwardedHeaders.trustedIPs`). The router addon strips untrusted clients'
    headers before routing (shadow.gateway.entrypoints), so it passes the default here.
    `append_forwarded_for=False` (see RewrittenRequest) leaves X-Forwarded-For out entirely."""
    # One pass to learn which names are present (this runs on every request: the per-name scans it
    # replaces cost more than the rest of routing); steps only rescan when the name is there.
    out: Headers = list(headers)
    if not trust_forwarded:
        out = [(k, v) for k, v in out if k.lower() not in _FORWARDED_LOWER]
    present = {k.lower() for k, _v in out}
    ip = client_ip.split("%", 1)[0]  # drop an IPv6 zone, as Traefik does
    if ip.startswith("[") and ip.endswith("]"):
        ip = ip[1:-1]
    if append_forwarded_for:
        if "x-forwarded-for" in present:
            prior = [v.strip() for v in header_values(out, "X-Forwarded-For") if v.strip()]
            out = set_header(out, "X-Forwarded-For", ", ".join([*prior, ip]))
        else:
            out.append(("X-Forwarded-For", ip))
    elif "x-forwarded-for" in present:
        out = without_header(out, "X-Forwarded-For")
    if "x-forwarded-proto" not in present:
        secure = scheme.lower() in ("https", "wss")
        websocket = "connection" in present and "upgrade" in present and _is_websocket(out)
        proto = ("wss" if secure else "ws") if websocket else ("https" if secure else "http")
        out.append(("X-Forwarded-Proto", proto))
    if "x-forwarded-host" not in present and host:
        out.append(("X-Forwarded-Host", host))
    if "x-forwarded-port" not in present:
        out.append(("X-Forwarded-Port", str(port)))
    if "x-forwarded-server" in present:
        out = set_header(out, "X-Forwarded-Server", server_name)
    else:
        out.append(("X-Forwarded-Server", server_name))
    if "x-real-ip" not in present:
        out.append(("X-Real-Ip", ip))
    return out


# --------------------------------------------------------------------------------------------------
# Middlewares
# --------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class RewrittenRequest:
    path: str  # raw path (percent-escapes kept as sent), without query
    headers: tuple[tuple[str, str], ...]
    # False when a headers middleware set X-Forwarded-For to "": Traefik then sends no
    # X-Forwarded-For at all (pass it to forwarded_headers(append_forwarded_for=...)).
    append_forwarded_for: bool = True


def _strip_raw_prefix(raw: str, prefix: str) -> str | None:
    """`raw` without `prefix` (given in routing-path form, see shadow.gateway.rules.routing_path), or None."""
    if raw.startswith(prefix):
        return raw[len(prefix):]
    if "%" not in raw:
        return None
    want = prefix.encode("utf-8", "surrogateescape")
    got = bytearray()
    i, n = 0, len(raw)
    while len(got) < len(want) and i < n:
        esc = raw[i:i + 3]
        if raw[i] == "%" and len(esc) == 3 and all(c in "0123456789abcdefABCDEF" for c in esc[1:]):
            upper = esc.upper()
            if upper in RESERVED_ESCAPES:
                got += upper.encode()
            else:
                got.append(int(esc[1:], 16))
            i += 3
        else:
            got += raw[i].encode("utf-8", "surrogateescape")
            i += 1
        if got != want[:len(got)]:
            return None
    return raw[i:] if bytes(got) == want else None


def _leading_slash(path: str) -> str:
    return path if path.startswith("/") else "/" + path


def apply_request_middlewares(middlewares: Sequence[Middleware], path: str,
                              headers: Iterable[tuple[str, str]]) -> RewrittenRequest:
    """Apply the router's middlewares, in order, to the request path and headers.

    - stripPrefix: the first prefix the path starts with is removed (the path keeps a leading '/')
      and sent as X-Forwarded-Prefix; no prefix matches → unchanged.
    - addPrefix: prefix + path.
    - headers.customRequestHeaders: set each header (replacing all its lines); "" removes it.
      Setting Host changes the Host the upstream sees; X-Forwarded-For: "" means no
      X-Forwarded-For upstream at all (Traefik's special case), see `append_forwarded_for`."""
    out: Headers = list(headers)
    append_forwarded_for = True
    for mw in middlewares:
        if isinstance(mw, StripPrefix):
            for prefix in mw.prefixes:
                rest = _strip_raw_prefix(path, prefix)
                if rest is not None:
                    path = _leading_slash(rest)
                    out.append(("X-Forwarded-Prefix", prefix.strip()))
                    break
        elif isinstance(mw, AddPrefix):
            path = _leading_slash(mw.prefix + path)
        elif isinstance(mw, HeadersMiddleware):
            for name, value in mw.request_headers:
                out = set_header(out, name, value) if value else without_header(out, name)
                if name.lower() == "x-forwarded-for":
                    append_forwarded_for = bool(value)
            out.extend(mw.request_add)
    return RewrittenRequest(path, tuple(out), append_forwarded_for)


def apply_response_middlewares(middlewares: Sequence[Middleware],
                               headers: Iterable[tuple[str, str]]) -> Headers:
    """customResponseHeaders of the router's headers middlewares: set, or remove when ""."""
    out: Headers = list(headers)
    for mw in middlewares:
        if isinstance(mw, HeadersMiddleware):
            for name, value in mw.response_headers:
                out = set_header(out, name, value) if value else without_header(out, name)
            out.extend(mw.response_add)
    return out

