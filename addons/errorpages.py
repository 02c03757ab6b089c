"""Error pages addon: Traefik's `errors` middleware — the I/O around shadow.gateway.middlewares.errorpage.

After the upstream answered (and the router applied the answer-side middlewares), an answer whose
status is in an `errors` middleware's ranges is replaced: the page is fetched from the middleware's
service (a server picked by round robin, addons/upstream_client.py) and the client gets its body with
the original (or rewritten) status. A page that cannot be fetched leaves the status with its status
text as the body. Runs after the router and before capture, which records what the client got.
"""

from __future__ import annotations

import logging
from collections.abc import Coroutine
from typing import Any

from mitmproxy import http

from addons.reload import ActiveConfig, GatewayState, RouteContext
from addons.upstream_client import UpstreamClient, as_response
from shadow.gateway.config import LoadBalancerService
from shadow.gateway.gostatus import status_text
from shadow.gateway.middlewares.errorpage import ErrorPage, ErrorPageCall, error_page_call
from shadow.gateway.mirror import RateLimitedLog, describe_error

logger = logging.getLogger(__name__)


def _status_text(code: int) -> bytes:
    return f"{status_text(code)}\n".encode()  # Go's http.Error(rw, StatusText(code), code)


class ErrorPages:
    def __init__(self, state: GatewayState) -> None:
        self.state = state
        self.client = UpstreamClient()
        self._warn = RateLimitedLog(logger.warning)
        self.served = 0
        state.extra_counters.append(lambda: {"error_pages": self.served})

    def flow_hooks(self, active: ActiveConfig) -> frozenset[str]:
        return frozenset({"response"} if any(isinstance(m, ErrorPage) for m in active.config.middlewares.values())
                         else ())

    def response(self, flow: http.HTTPFlow) -> Coroutine[Any, Any, None] | None:
        route = self.state.routes.get(flow)
        if flow.response is None or route is None or route.plan is None or route.active is None:
            return None
        for mw in route.plan.middlewares:
            if not isinstance(mw, ErrorPage):
                continue
            call = error_page_call(mw, flow.response.status_code,
                                   scheme="https" if flow.client_conn.tls_established else "http",
                                   host=route.client_host, uri=route.path or flow.request.path,
                                   headers=[(k.decode("latin-1"), v.decode("latin-1"))
                                            for k, v in flow.request.headers.fields])
            if call is not None:
                return self._serve_page(flow, route, mw, call)
        return None

    async def _serve_page(self, flow: http.HTTPFlow, route: RouteContext, mw: ErrorPage, call: ErrorPageCall) -> None:
        assert route.active is not None
        service = route.active.config.services.get(mw.service)
        if not isinstance(service, LoadBalancerService):  # the loader guarantees it; a reload race otherwise
            flow.response = http.Response.make(call.code, _status_text(call.code), {"Content-Type": "text/plain"})
            return
        server = route.active.picker.pick(service)
        target = server.path + call.target if server.preserve_path and server.path else call.target
        headers = list(call.headers)
        if not service.pass_host_header:
            headers = [(k, v) for k, v in headers if k.lower() != "host"]
        try:
            _status, page_headers, body = await self.client.send("GET", server, target, headers, None)
        except Exception as exc:
            self._warn(f"shadow gateway: errors {mw.name}: {server.url}{target} failed: {describe_error(exc)}")
            flow.response = http.Response.make(call.code, _status_text(call.code),
                                               {"Content-Type": "text/plain; charset=utf-8"})
            return
        self.served += 1
        flow.response = as_response(call.code, page_headers, body)

    async def done(self) -> None:
        await self.client.close()
