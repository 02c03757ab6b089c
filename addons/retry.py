"""Retry addon: Traefik's `retry` middleware — the I/O around shadow.gateway.middlewares.retry.

A route with a retry middleware is sent by this addon rather than by mitmproxy, so that a connection
that fails before the request was written (refused, unreachable: the upstream never saw it) can be
tried again, up to `attempts` in all, on a server picked anew each time (round robin, or the traffic
control's choice for weighted / HRW routes), waiting `initialInterval`'s backoff in between. As in
Traefik, a failure after the request was written is not retried (502); `status` ranges (v3.7) also
retry answers in them for idempotent methods; `timeout` stops retrying after that long.

Sent with addons/upstream_client.py (shadow.gateway.http1's pooled keep-alive client for `http://`,
a pooled aiohttp session for `https://`). Runs after the traffic addon (a failover route is sent there) and before
capture, which then sees the final answer and the server that gave it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

from mitmproxy import http

from addons.reload import ActiveConfig, GatewayState, RouteContext
from addons.router import MIDDLEWARE_OUTCOME, host_port
from addons.upstream_client import NotSent, UpstreamClient, as_response
from shadow.gateway.config import Server
from shadow.gateway.gostatus import status_text
from shadow.gateway.middlewares.pipeline import RequestOutcome
from shadow.gateway.middlewares.retry import Answered, NotWritten, Retry, run_attempts
from shadow.gateway.mirror import RateLimitedLog, describe_error
from shadow.gateway.shifting import RequestFacts

logger = logging.getLogger(__name__)

_HOP_HEADERS = frozenset({"content-length", "transfer-encoding", "connection", "keep-alive", "upgrade",
                          "proxy-connection", "te", "trailer"})


class Retrying:
    def __init__(self, state: GatewayState) -> None:
        self.state = state
        self.client = UpstreamClient()
        self._warn = RateLimitedLog(logger.warning)
        self.retries = 0
        state.extra_counters.append(lambda: {"retry_attempts": self.retries})

    def flow_hooks(self, active: ActiveConfig) -> frozenset[str]:
        return frozenset({"request"} if any(isinstance(m, Retry) for m in active.config.middlewares.values())
                         else ())

    def request(self, flow: http.HTTPFlow) -> Coroutine[Any, Any, None] | None:
        if flow.response or flow.error or not flow.live:
            return None
        outcome: RequestOutcome | None = flow.metadata.get(MIDDLEWARE_OUTCOME)
        route = self.state.routes.get(flow)
        if outcome is None or outcome.retry is None or route is None or route.plan is None:
            return None
        if route.decision is not None and (route.decision.handled or route.decision.failover is not None):
            return None  # the traffic addon sends failover routes
        if not outcome.retry.needs_sender or "upgrade" in flow.request.headers:
            return None  # a WebSocket / h2c upgrade stays with mitmproxy (this client buffers whole answers)
        return self._serve(flow, route, outcome.retry)

    def _pick(self, route: RouteContext, flow: http.HTTPFlow, headers: list[tuple[str, str]]) -> Server | None:
        active = route.active
        assert active is not None and route.plan is not None
        control = self.state.traffic
        if route.decision is not None and control is not None:
            peer = flow.client_conn.peername
            decision = control.decide(route.plan.router.service, (),
                                      RequestFacts.from_headers(str(peer[0]) if peer else "", headers))
            if decision.service is None or decision.server is None:
                return None
            route.service = decision.service.name
            return decision.server
        return active.picker.pick(route.plan.primary)

    async def _serve(self, flow: http.HTTPFlow, route: RouteContext, retry: Retry) -> None:
        req = flow.request
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in req.headers.fields]
        send = [(k, v) for k, v in headers if k.lower() not in _HOP_HEADERS]
        body = req.raw_content
        first = Server(url=f"{req.scheme}://{host_port(req.host, req.port, req.scheme)}", scheme=req.scheme,
                       host=req.host, port=req.port)

        # Traefik answers 502 when no try reached a backend; a Gateway API route answers 503, as the
        # conformance suite expects (Envoy's "upstream connect error or disconnect/reset").
        unreachable = 503 if retry.retry_sent_failures else 502

        async def attempt(n: int) -> Answered | NotWritten:
            server, target = first, req.path
            if n:  # a retry: the server is picked anew, as Traefik's load balancer does
                self.retries += 1
                picked = self._pick(route, flow, headers)
                if picked is None:
                    return Answered(503, _local(503, "Service Unavailable"))
                server = picked
                target = server.path + route.path if server.preserve_path and server.path else route.path
                route.upstream = server.url
            try:
                status, out_headers, payload = await self.client.send(
                    req.method, server, target, send, body, timeout_s=retry.attempt_timeout_s,
                    retry_stale=not retry.retry_sent_failures)  # every dropped try is one of `attempts`
            except NotSent as exc:
                return NotWritten(unreachable, str(exc))
            except TimeoutError as exc:
                if retry.retry_sent_failures:  # Gateway API: a backend timeout is retried
                    return NotWritten(504, describe_error(exc))
                return Answered(504, _local(504, describe_error(exc)))
            except Exception as exc:  # sent, then failed (reset, protocol error): re-sent only if asked
                if retry.retry_sent_failures:
                    return NotWritten(unreachable, describe_error(exc))
                return Answered(502, _local(502, describe_error(exc)))
            return Answered(status, as_response(status, out_headers, payload))

        try:
            async with asyncio.timeout(retry.request_timeout_s or None):
                outcome, _retries = await run_attempts(retry, req.method, len(body or b""), attempt)
        except TimeoutError:  # the Gateway API's `timeouts.request`: the client gets a 504
            flow.response = _local(504, status_text(504))
            return
        if isinstance(outcome, NotWritten):
            self._warn(f"retry: {route.router}: every attempt failed ({outcome.reason})")
            flow.response = _local(outcome.status, status_text(outcome.status))
        else:
            flow.response = outcome.payload

    async def done(self) -> None:
        await self.client.close()


def _local(status: int, text: str) -> http.Response:
    return http.Response.make(status, f"{text}\n".encode(), {"Content-Type": "text/plain; charset=utf-8"})
