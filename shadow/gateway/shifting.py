"""Per-request traffic decisions over a loaded configuration: which leaf service and server, which
cookies to set, which breaker answers locally. Pure (no I/O, injectable clock).

`TrafficControl` is built once per configuration generation from the previous one's, so the state
that must survive a reload does: WRR deadlines, circuit breakers and server health are kept for
every service / middleware whose definition (its fingerprint) did not change. Health checkers are
restarted by the addon on every reload, as Traefik does; a changed service starts healthy.

Several gateways behind one load balancer agree without sharing state on what needs agreement:
a sticky cookie names its child by a hash of the child's name, and HRW is a pure function of
(key, child names, weights). WRR sequences, passive health and breaker windows are per gateway.
"""

from __future__ import annotations

import hashlib
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from shadow.gateway.breaker import CircuitBreaker
from shadow.gateway.config import (
    CircuitBreakerMiddleware,
    FailoverService,
    GatewayConfig,
    LoadBalancerService,
    Middleware,
    MirroringService,
    Server,
    Service,
    WeightedService,
)
from shadow.gateway.gostatus import status_text
from shadow.gateway.leastload import InflightBoard, InflightTicket, LeastTime, P2c
from shadow.gateway.traffic import (
    EdfWrr,
    HealthBoard,
    StickyCookie,
    hrw_pick,
    parse_cookie_header,
    set_cookie_header,
    sticky_lookup,
    sticky_value,
)

__all__ = ["Decision", "RequestFacts", "TrafficControl", "fingerprint", "needs_control"]

Clock = Callable[[], float]


def fingerprint(item: object) -> str:
    """A stable digest of a (frozen dataclass) definition: equal definitions, equal fingerprints."""
    return hashlib.sha1(repr(item).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class RequestFacts:
    client_ip: str
    cookies: dict[str, str]
    headers: Sequence[tuple[str, str]]

    @staticmethod
    def from_headers(client_ip: str, headers: Sequence[tuple[str, str]]) -> RequestFacts:
        cookie_lines = [v for k, v in headers if len(k) == 6 and k.lower() == "cookie"]
        return RequestFacts(client_ip, parse_cookie_header(cookie_lines) if cookie_lines else {}, headers)


@dataclass
class Decision:
    service: LoadBalancerService | None  # None: answer locally with `status`
    server: Server | None
    status: int = 0
    reason: str = ""  # for the log: which service, which breaker
    body: str = ""  # the local answer's body, as Traefik writes it ("" → the reason)
    go_http_error: bool = False  # written by Go's http.Error: also `X-Content-Type-Options: nosniff`
    set_cookies: list[str] = field(default_factory=list)
    split_child: str | None = None  # the child a weighted / HRW choice sent the request to
    split_parent: str | None = None
    client_key: str | None = None
    breakers: list[CircuitBreaker] = field(default_factory=list)  # report the outcome to these
    # The failover service whose main service serves this request (its fallback takes over on a
    # refused connection or an answer in errors.status).
    failover: FailoverService | None = None
    handled: bool = False  # the traffic addon sent the request itself (failover routes)
    path: list[str] = field(default_factory=list)  # services traversed, root first
    inflight: InflightTicket | None = None  # p2c / leasttime: counted until the outcome is reported
    least_time: LeastTime | None = None  # leasttime: where the outcome's time to first byte goes


def needs_control(config: GatewayConfig, service_name: str, middlewares: Sequence[Middleware]) -> bool:
    """Whether a route needs `TrafficControl` (else the plain ServerPicker path is exact)."""
    if any(isinstance(m, CircuitBreakerMiddleware) for m in middlewares):
        return True
    svc = config.services[service_name]
    if isinstance(svc, MirroringService):
        svc = config.services[svc.service]
    if isinstance(svc, LoadBalancerService):
        return (svc.strategy != "wrr" or svc.sticky is not None or svc.health_check is not None
                or svc.passive_health_check is not None or not svc.servers)
    return True


class TrafficControl:
    def __init__(self, config: GatewayConfig, previous: TrafficControl | None = None, *,
                 clock: Clock = time.monotonic, wall_clock: Clock = time.time, seed: str = "",
                 rng: Callable[[int], int] | None = None, shuffle: bool = True) -> None:
        self.config = config
        self.clock = clock
        self.seed = seed
        # Traefik fixes a sticky cookie's `expires` date when it builds the service: at each load.
        self.built_at = wall_clock()
        self.inflight: InflightBoard = previous.inflight if previous is not None else InflightBoard()
        self._p2c: dict[str, P2c] = {}
        self._least_time: dict[str, LeastTime] = {}
        self.split = config.shadow.split
        self.fingerprints = {name: fingerprint(svc) for name, svc in config.services.items()}
        self.health: HealthBoard = previous.health if previous is not None else HealthBoard(clock=clock)
        unchanged: set[str] = set()
        if previous is not None:
            unchanged = {n for n, fp in self.fingerprints.items() if previous.fingerprints.get(n) == fp}
            self.health.forget(lambda name: name in unchanged)
        self._wrr: dict[str, EdfWrr] = {}
        self.breakers: dict[str, CircuitBreaker] = {}
        self._breaker_fp: dict[str, str] = {}
        for name, svc in config.services.items():
            kept = previous._wrr.get(name) if previous is not None and name in unchanged else None
            if isinstance(svc, WeightedService) and not svc.hrw:
                self._wrr[name] = kept or EdfWrr([(c.name, c.weight) for c in svc.services],
                                                 seed=seed + name if shuffle else None)
            elif isinstance(svc, LoadBalancerService) and svc.strategy == "wrr":
                self._wrr[name] = kept or EdfWrr([(s.url, s.weight) for s in svc.servers],
                                                 seed=seed + name if shuffle else None)
            elif isinstance(svc, LoadBalancerService) and svc.strategy == "p2c":
                self._p2c[name] = P2c([_server_key(name, s.url) for s in svc.servers if s.weight > 0],
                                      self.inflight, rng=rng or random.Random(seed + name).randrange)
            elif isinstance(svc, LoadBalancerService) and svc.strategy == "leasttime":
                old_lt = previous._least_time.get(name) if previous is not None and name in unchanged else None
                self._least_time[name] = old_lt or LeastTime(
                    [(_server_key(name, s.url), s.weight) for s in svc.servers], self.inflight)
        for name, mw in config.middlewares.items():
            if isinstance(mw, CircuitBreakerMiddleware):
                fp = fingerprint(mw)
                old = previous.breakers.get(name) if previous is not None else None
                if old is not None and previous is not None and previous._breaker_fp.get(name) == fp:
                    self.breakers[name] = old
                else:
                    self.breakers[name] = CircuitBreaker(mw.settings, clock=clock)
                self._breaker_fp[name] = fp

    def mean_first_byte_ms(self, service: str, url: str) -> float | None:
        """A `leasttime` server's mean time to first byte over its last answers (None: not leasttime)."""
        balancer = self._least_time.get(service)
        return balancer.mean_ms(_server_key(service, url)) if balancer is not None else None

    # health ----------------------------------------------------------------------------------------
    def server_up(self, svc: LoadBalancerService, server: Server) -> bool:
        return server.weight > 0 and self.health.is_up(svc.name, server.url)

    def service_up(self, name: str, _depth: int = 0) -> bool:
        svc = self.config.services[name]
        if _depth > 32:
            return True
        if isinstance(svc, LoadBalancerService):
            return any(self.server_up(svc, s) for s in svc.servers)
        if isinstance(svc, WeightedService):
            return any(c.weight > 0 and self.service_up(c.name, _depth + 1) for c in svc.services)
        if isinstance(svc, FailoverService):
            return self.service_up(svc.service, _depth + 1) or self.service_up(svc.fallback, _depth + 1)
        return self.service_up(svc.service, _depth + 1)

    def report(self, decision: Decision, status: int | None, latency_ms: float, *, network_error: bool,
               first_byte_ms: float | None = None) -> None:
        """The outcome of a forwarded request: breaker metrics, passive health, requests in flight
        and (leasttime) the time to its first byte (`latency_ms` when not given)."""
        code = status if status is not None else 502
        if decision.inflight is not None:
            self.inflight.leave(decision.inflight)
            decision.inflight = None
        if (decision.least_time is not None and decision.service is not None and decision.server is not None
                and status is not None and not network_error):
            decision.least_time.record(_server_key(decision.service.name, decision.server.url),
                                       latency_ms if first_byte_ms is None else first_byte_ms)
            decision.least_time = None
        for breaker in decision.breakers:
            breaker.record(code, latency_ms, network_error)
        svc, server = decision.service, decision.server
        if svc is None or server is None or svc.passive_health_check is None:
            return
        if network_error or code in (502, 504):
            p = svc.passive_health_check
            self.health.record_failure(svc.name, server.url, window_s=p.failure_window_s,
                                       max_failed=p.max_failed_attempts)

    # decisions -------------------------------------------------------------------------------------
    def client_key(self, facts: RequestFacts) -> str:
        if self.split.client_key_header:
            lname = self.split.client_key_header.lower()
            for k, v in facts.headers:
                if k.lower() == lname and v:
                    return v
        if self.split.client_key_cookie:
            value = facts.cookies.get(self.split.client_key_cookie)
            if value:
                return value
        return facts.client_ip

    def decide(self, service_name: str, middlewares: Sequence[Middleware], facts: RequestFacts) -> Decision:
        decision = Decision(None, None)
        for mw in middlewares:
            if isinstance(mw, CircuitBreakerMiddleware):
                breaker = self.breakers[mw.name]
                if not breaker.allow():
                    decision.status, decision.reason = mw.settings.response_code, f"circuit breaker {mw.name} open"
                    decision.body = status_text(decision.status)  # Traefik's breaker fallback writes it
                    return decision
                decision.breakers.append(breaker)
        self._resolve(service_name, facts, decision, 0)
        return decision

    def _resolve(self, name: str, facts: RequestFacts, d: Decision, depth: int) -> None:
        svc: Service = self.config.services[name]
        d.path.append(name)
        if depth > 32:  # the loader rejects cycles; this only guards against a bug
            d.status, d.reason = 500, "service nesting too deep"
            return
        while isinstance(svc, MirroringService):
            svc = self.config.services[svc.service]
        if isinstance(svc, LoadBalancerService):
            self._pick_server(svc, facts, d)
        elif isinstance(svc, WeightedService):
            child = self._pick_child(svc, facts, d)
            if child is None:
                d.status, d.reason = 503, f"no available service in {svc.name}"
                d.body, d.go_http_error = "no available server\n", True
                return
            if d.split_child is None:
                d.split_child, d.split_parent = child, svc.name
                # The unit of assignment is the client, not the cookie: a sticky cookie's value names
                # the child, so every client of a child shares it and clustering by it would leave
                # one cluster per arm. The client key (configured header / cookie, else the IP) is it.
                d.client_key = self.client_key(facts)
            self._resolve(child, facts, d, depth + 1)
        elif isinstance(svc, FailoverService):
            if self.service_up(svc.service):
                if d.failover is None:
                    d.failover = svc
                self._resolve(svc.service, facts, d, depth + 1)
            elif self.service_up(svc.fallback):
                self._resolve(svc.fallback, facts, d, depth + 1)
            else:
                d.status, d.reason = 503, f"no available service in {svc.name}"
                d.body, d.go_http_error = "Service Unavailable\n", True

    def _pick_child(self, svc: WeightedService, facts: RequestFacts, d: Decision) -> str | None:
        live = [(c.name, float(c.weight)) for c in svc.services if c.weight > 0]

        def healthy(child: str) -> bool:  # Traefik: a parent reacts to health only with healthCheck: {}
            return not svc.health_check or self.service_up(child)
        if svc.hrw:
            return hrw_pick(self.client_key(facts), live, healthy)
        if svc.sticky is not None:
            wanted = facts.cookies.get(svc.sticky.name)
            if wanted is not None:
                name, rewrite = sticky_lookup(wanted, [n for n, _ in live])
                if name is not None and healthy(name) and self.service_up(name):
                    if rewrite:  # an older Traefik's cookie format: stick, and write today's
                        d.set_cookies.append(self._cookie(svc.sticky, name))
                    return name
        child = self._wrr[svc.name].pick(healthy)
        if child is not None and svc.sticky is not None:
            d.set_cookies.append(self._cookie(svc.sticky, child))
        return child

    def _cookie(self, cookie: StickyCookie, child: str) -> str:
        expires_at = self.built_at + cookie.expires_s if cookie.expires_s > 0 else None
        return set_cookie_header(cookie, sticky_value(child), expires_at=expires_at)

    def _pick_server(self, svc: LoadBalancerService, facts: RequestFacts, d: Decision) -> None:
        if not svc.servers:  # Gateway API: a backend that does not resolve answers its status
            d.status, d.reason = svc.empty_status, f"no backend for {svc.name}"
            return

        def healthy(url: str) -> bool:
            return self.health.is_up(svc.name, url)

        by_url = {s.url: s for s in svc.servers if s.weight > 0}
        server: Server | None = None
        sticky_hit = False
        if svc.sticky is not None:
            wanted = facts.cookies.get(svc.sticky.name)
            if wanted is not None:
                url, rewrite = sticky_lookup(wanted, list(by_url))
                if url is not None and healthy(url):
                    server, sticky_hit = by_url[url], True
                    if rewrite:  # an older Traefik's cookie format: stick, and write today's
                        d.set_cookies.append(self._cookie(svc.sticky, url))
        if server is None:
            if svc.strategy == "hrw":
                chosen = hrw_pick(self.client_key(facts), [(s.url, float(s.weight)) for s in by_url.values()],
                                  healthy)
            elif svc.strategy == "p2c":
                key = self._p2c[svc.name].pick(lambda k: healthy(_server_url(k)))
                chosen = _server_url(key) if key is not None else None
            elif svc.strategy == "leasttime":
                key = self._least_time[svc.name].pick(lambda k: healthy(_server_url(k)))
                chosen = _server_url(key) if key is not None else None
            else:
                chosen = self._wrr[svc.name].pick(healthy)
            server = by_url.get(chosen) if chosen is not None else None
            if server is not None and svc.sticky is not None:
                d.set_cookies.append(self._cookie(svc.sticky, server.url))
        if server is None:
            d.status, d.reason = 503, f"no available server in {svc.name}"
            d.body, d.go_http_error = "no available server\n", True
            return
        d.service, d.server = svc, server
        # Traefik counts p2c's sticky hits in flight too; leasttime hands a sticky hit to the bare
        # server handler, which neither counts it nor times it.
        if svc.strategy == "p2c" or (svc.strategy == "leasttime" and not sticky_hit):
            d.inflight = self.inflight.enter(_server_key(svc.name, server.url))
        if svc.strategy == "leasttime" and not sticky_hit:
            d.least_time = self._least_time[svc.name]


def _server_key(service: str, url: str) -> str:
    """A server's key in the in-flight board: one URL may serve in several services."""
    return f"{service}\x00{url}"


def _server_url(key: str) -> str:
    return key.split("\x00", 1)[1]
