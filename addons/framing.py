"""Framing addon: a request with two Host headers (or conflicting Content-Length values) gets 400
before any other concern sees it (shadow.gateway.framing). First in the request chain: auth, routing
and mirroring never see an ambiguous request."""

from __future__ import annotations

import logging

from mitmproxy import http

from addons.reload import ActiveConfig, GatewayState
from shadow.gateway.framing import framing_problem

logger = logging.getLogger(__name__)


class Framing:
    def __init__(self, state: GatewayState) -> None:
        self.rejected = 0
        state.extra_counters.append(lambda: {"requests_rejected_framing": self.rejected})

    def flow_hooks(self, _active: ActiveConfig) -> frozenset[str]:
        return frozenset({"request"})

    def request(self, flow: http.HTTPFlow) -> None:
        if flow.response or flow.error or not flow.live:
            return
        problem = framing_problem(flow.request.headers.fields)
        if problem is not None:
            self.rejected += 1
            flow.response = http.Response.make(
                400, f"shadow gateway: bad request: {problem}\n".encode(),
                {"Content-Type": "text/plain; charset=utf-8", "Connection": "close"})
