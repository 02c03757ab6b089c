"""Traffic addon: the I/O around shadow.gateway.shifting's decisions.

- Builds a `TrafficControl` for every configuration generation (state carried over by fingerprint).
- Active health checks: one background task per (loadBalancer with `healthCheck`, server); servers
  start healthy, the first probe comes one interval after (re)start, one failure → down, one
  success → up; all checkers restart on every reload, as Traefik's do.
- After the answer: breaker metrics and passive health get the outcome; sticky Set-Cookie headers
  are added.
- Failover routes are sent by this addon (a pooled aiohttp session), not by mitmproxy: a main
  service that refuses the connection, or answers within `errors.status`, has the buffered request
  re-sent to the fallback, whose answer the client gets. A body above `maxRequestBodyBytes` (with
  `errors.status` set) gets 413 before anything is sent.

Runs after the router addon and before capture, so capture sees the final answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Coroutine
from typing import Any

from mitmproxy import http

from addons.reload import ActiveConfig, GatewayState, RouteContext
from addons.router import host_port
from shadow.gateway.config import (
    CircuitBreakerMiddleware,
    FailoverService,
    HealthCheck,
    LoadBalancerService,
    Server,
)
from shadow.gateway.http1 import passthrough_session
from shadow.gateway.mirror import RateLimitedLog, describe_error
from shadow.gateway.shifting import Decision, RequestFacts, TrafficControl
from shadow.gateway.transport import client_ssl

logger = logging.getLogger(__name__)

FORWARD_TIMEOUT_S = 60.0  # a failover route's upstream call (sent by this addon) gives up after this

# Headers aiohttp computes itself, or that describe the hop rather than the request.
_HOP_HEADERS = frozenset({"content-length", "transfer-encoding", "connection", "keep-alive", "upgrade",
                          "proxy-connection", "te", "trailer"})


def probe_healthy(status: int, expected: int) -> bool:
    """Traefik: `status` 0 → healthy on 200–399; else exactly that code."""
    return 200 <= status < 400 if expected == 0 else status == expected


def probe_url(server: Server, hc: HealthCheck) -> str:
    scheme = hc.scheme or server.scheme
    port = hc.port or server.port
    host = f"[{server.host}]" if ":" in server.host else server.host
    return f"{scheme}://{host}:{port}{server.path}{hc.path}"


def in_ranges(status: int, ranges: tuple[tuple[int, int], ...]) -> bool:
    return any(lo <= status <= hi for lo, hi in ranges)


def _response(status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> http.Response:
    resp = http.Response.make(status, b"", ())
    resp.headers.fields = (*headers, (b"Content-Length", str(len(body)).encode()))
    resp.raw_content = body
    return resp


def _local(status: int, text: str) -> http.Response:
    return http.Response.make(status, f"{text}\n".encode(), {"Content-Type": "text/plain; charset=utf-8"})


class Traffic:
    def __init__(self, state: GatewayState) -> None:
        self.state = state
        self._session: Any = None
        self._probe_session: Any = None
        self._checkers: list[asyncio.Task[None]] = []
        self._running = False
        self._warn = RateLimitedLog(logger.warning)
        self.failovers = 0
        self.probes = 0
        state.on_activate.append(self._on_activate)
        state.extra_counters.append(lambda: {"status_failovers": self.failovers, "health_probes": self.probes})

    # configuration ---------------------------------------------------------------------------------
    def _on_activate(self, active: ActiveConfig, _previous: ActiveConfig | None) -> None:
        # The WRR shuffle's seed: the configured gateway id (this listener may run before capture's,
        # which settles a generated id), so one gateway is reproducible and several differ.
        seed = active.config.shadow.gateway_id or self.state.gateway_id
        self.state.traffic = TrafficControl(active.config, self.state.traffic, seed=seed)
        if self._running:
            self._restart_checkers()

    def running(self) -> None:
        self._running = True
        self._restart_checkers()

    def _restart_checkers(self) -> None:
        for task in self._checkers:
            task.cancel()
        self._checkers = []
        control: TrafficControl | None = self.state.traffic
        if control is None:
            return
        loop = asyncio.get_running_loop()
        for svc in control.config.services.values():
            if isinstance(svc, LoadBalancerService) and svc.health_check is not None:
                for server in svc.servers:
                    self._checkers.append(loop.create_task(self._check_loop(control, svc, server),
                                                           name=f"health {svc.name} {server.url}"))

    def _ensure_session(self) -> Any:
        if self._session is None:
            self._session = passthrough_session()
        return self._session

    def _ensure_probe_session(self) -> Any:
        # A fresh connection per probe: a kept-alive connection can outlive the server's listener
        # (a server stopping accepting while old connections drain) and hide that it is gone.
        if self._probe_session is None:
            import aiohttp

            self._probe_session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0, force_close=True), cookie_jar=aiohttp.DummyCookieJar())
        return self._probe_session

    async def _check_loop(self, control: TrafficControl, svc: LoadBalancerService, server: Server) -> None:
        hc = svc.health_check
        assert hc is not None
        while True:
            up = control.health.is_up(svc.name, server.url)
            await asyncio.sleep(hc.interval_s if up else hc.unhealthy_interval_s)
            healthy = await self._probe(server, hc)
            self.probes += 1
            if control.health.set_active(svc.name, server.url, healthy):
                logger.info(f"shadow gateway: health: {svc.name} {server.url} is "
                            f"{'up' if healthy else 'down'}")

    async def _probe(self, server: Server, hc: HealthCheck) -> bool:
        import aiohttp

        headers = dict(hc.headers)
        if hc.hostname:
            headers["Host"] = hc.hostname
        try:
            async with asyncio.timeout(hc.timeout_s):
                async with self._ensure_probe_session().request(
                        hc.method, probe_url(server, hc), headers=headers,
                        allow_redirects=hc.follow_redirects, ssl=client_ssl(server)) as resp:
                    await resp.read()
                    return probe_healthy(resp.status, hc.status)
        except (aiohttp.ClientError, OSError, TimeoutError, ValueError):
            return False

    # requests --------------------------------------------------------------------------------------
    def flow_hooks(self, active: ActiveConfig) -> frozenset[str]:
        """Only routes that TrafficControl decides (weighted, failover, HRW, sticky, health, breaker)
        carry a decision; without one every hook here returns at once."""
        controlled = any(plan.controlled for plan in active.plans.values()) or any(
            isinstance(m, CircuitBreakerMiddleware) for m in active.config.middlewares.values())
        return frozenset({"request", "response", "error"} if controlled else ())

    def request(self, flow: http.HTTPFlow) -> Coroutine[Any, Any, None] | None:
        # Synchronous unless the route is a failover (mitmproxy awaits a returned coroutine): an
        # async hook would cost every flow of the gateway a coroutine, controlled or not.
        if flow.response or flow.error or not flow.live:
            return None
        route = self.state.routes.get(flow)
        decision: Decision | None = route.decision if route is not None else None
        control: TrafficControl | None = self.state.traffic
        if route is None or decision is None or decision.failover is None or control is None:
            return None
        failover = decision.failover
        limit = failover.max_request_body_bytes
        if failover.error_status and limit >= 0 and len(flow.request.raw_content or b"") > limit:
            flow.response = http.Response.make(413, b"Request body too large\n",  # Traefik's http.Error
                                               {"Content-Type": "text/plain; charset=utf-8",
                                                "X-Content-Type-Options": "nosniff"})
            return None
        # A failover route is sent from here rather than by mitmproxy: a main service that refuses
        # the connection (dead before the health check noticed) then fails over to the fallback —
        # nothing was sent, so re-sending is safe — where mitmproxy would answer its own 502.
        decision.handled = True
        return self._serve_failover(flow, route, control, decision, failover)

    def response(self, flow: http.HTTPFlow) -> None:
        route = self.state.routes.get(flow)
        if route is None or route.decision is None or flow.response is None:
            return
        decision: Decision = route.decision
        control: TrafficControl | None = self.state.traffic
        resp = flow.response
        if control is not None and decision.service is not None and not decision.handled:
            sent = route.sent_at or flow.request.timestamp_start
            ended = resp.timestamp_end or time.time()
            first_byte = resp.timestamp_start or ended  # when the answer's head arrived: leasttime's TTFB
            control.report(decision, resp.status_code, (ended - sent) * 1000.0, network_error=False,
                           first_byte_ms=(first_byte - sent) * 1000.0)
        if decision.set_cookies and flow.response is not None:
            for cookie in decision.set_cookies:
                flow.response.headers.add("Set-Cookie", cookie)

    def error(self, flow: http.HTTPFlow) -> None:
        route = self.state.routes.get(flow)
        control: TrafficControl | None = self.state.traffic
        if route is None or route.decision is None or control is None or route.decision.service is None:
            return
        latency_ms = (time.time() - (route.sent_at or flow.request.timestamp_start)) * 1000.0
        control.report(route.decision, None, latency_ms, network_error=True)

    async def _send(self, method: str, url: str, headers: list[tuple[str, str]],
                    body: bytes | None, server: Server | None) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        async with asyncio.timeout(FORWARD_TIMEOUT_S):
            async with self._ensure_session().request(method, url, headers=headers, data=body or None,
                                                      allow_redirects=False,
                                                      ssl=client_ssl(server) if server is not None else True) as resp:
                payload = await resp.read()
                kept = [(k, v) for k, v in resp.raw_headers
                        if k.lower() not in (b"transfer-encoding", b"content-length", b"connection")]
                return resp.status, kept, payload

    async def _serve_failover(self, flow: http.HTTPFlow, route: RouteContext, control: TrafficControl,
                              decision: Decision, failover: FailoverService) -> None:
        import aiohttp

        req = flow.request
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in req.headers.fields]
        send = [(k, v) for k, v in headers if k.lower() not in _HOP_HEADERS]
        url = f"{req.scheme}://{host_port(req.host, req.port, req.scheme)}{req.path}"
        started = time.time()
        try:
            status, out_headers, body = await self._send(req.method, url, send, req.raw_content, decision.server)
        except (aiohttp.ClientConnectorError, ConnectionRefusedError) as exc:
            control.report(decision, None, (time.time() - started) * 1000.0, network_error=True)
            self._warn(f"{decision.service.name if decision.service else '?'} refused the connection "
                       f"({describe_error(exc)}); failing over to {failover.fallback}")
            if not await self._fail_over(flow, route, control, failover.fallback, send):
                flow.response = _local(502, "Bad Gateway")
            return
        except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as exc:
            # Sent, then failed: the request may have had effects, so it is not re-sent.
            control.report(decision, None, (time.time() - started) * 1000.0, network_error=True)
            flow.response = _local(502 if not isinstance(exc, TimeoutError) else 504, describe_error(exc))
            return
        control.report(decision, status, (time.time() - started) * 1000.0, network_error=False)
        if in_ranges(status, failover.error_status) and await self._fail_over(flow, route, control,
                                                                                failover.fallback, send):
            return
        flow.response = _response(status, out_headers, body)

    async def _fail_over(self, flow: http.HTTPFlow, route: RouteContext, control: TrafficControl,
                         fallback: str, headers: list[tuple[str, str]]) -> bool:
        """Re-send the buffered request to the fallback; its answer becomes the client's. False when
        nothing healthy can take it or the fallback could not be reached."""
        import aiohttp

        peer = flow.client_conn.peername
        decision = control.decide(fallback, (), RequestFacts.from_headers(str(peer[0]) if peer else "", headers))
        if decision.service is None or decision.server is None:
            return False
        server = decision.server
        path = server.path + route.path if server.preserve_path and server.path else route.path
        url = f"{server.scheme}://{host_port(server.host, server.port, server.scheme)}{path}"
        send = headers if decision.service.pass_host_header else [(k, v) for k, v in headers if k.lower() != "host"]
        started = time.time()
        try:
            status, out_headers, body = await self._send(flow.request.method, url, send, flow.request.raw_content,
                                                         server)
        except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as exc:
            self._warn(f"failover to {fallback} failed: {describe_error(exc)}")
            control.report(decision, None, (time.time() - started) * 1000.0, network_error=True)
            return False
        self.failovers += 1
        control.report(decision, status, (time.time() - started) * 1000.0, network_error=False)
        flow.response = _response(status, out_headers, body)
        route.service, route.upstream = decision.service.name, server.url
        return True

    async def done(self) -> None:
        self._running = False
        for task in self._checkers:
            task.cancel()
        self._checkers = []
        for session in (self._session, self._probe_session):
            if session is not None:
                with contextlib.suppress(Exception):
                    await session.close()
        self._session = self._probe_session = None
