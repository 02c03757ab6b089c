"""Streaming addon: an upstream answer longer than `shadow.gateway.streamLargerThan` (or of unknown
length) goes to the client as it arrives (shadow.gateway.streaming.PrefixStream); the capture gets
the prefix it keeps and the row is marked truncated when the body was longer.

Only answers nothing else rewrites are streamed: once streaming starts the head has gone to the
client, so a route whose answer a middleware edits (headers, compress, buffering, contentType,
errors), a sticky cookie or an auth cookie to add, AI answers (addons/ai.py streams its own) and MCP
answers (addons/mcp.py streams its own; a list answer its policies filter stays whole) stay buffered,
as before.
"""

from __future__ import annotations

from mitmproxy import http

from addons.ai import AI_MIDDLEWARE_TYPES
from addons.auth import FORWARD_AUTH_COOKIES, SET_COOKIE_METADATA
from addons.reload import ActiveConfig, GatewayState
from addons.router import MIDDLEWARE_OUTCOME
from shadow.gateway.config import HeadersMiddleware
from shadow.gateway.middlewares.errorpage import ErrorPage
from shadow.gateway.streaming import PrefixStream, should_stream
from shadow.mcp.config import McpSettings

STREAMED_METADATA = "shadow.streamed"  # flow.metadata: the PrefixStream of a streamed answer


class Streaming:
    def __init__(self, state: GatewayState) -> None:
        self.state = state
        self.streamed = 0
        state.extra_counters.append(lambda: {"responses_streamed": self.streamed})

    def flow_hooks(self, active: ActiveConfig) -> frozenset[str]:
        return frozenset({"responseheaders"} if active.config.shadow.stream_larger_than >= 0 else ())

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        resp, active = flow.response, self.state.active
        if resp is None or active is None or resp.stream or flow.request.method == "HEAD":
            return
        if resp.status_code < 200 or resp.status_code in (204, 304) or not self._untouched(flow):
            return
        length_text = resp.headers.get("content-length")
        length = int(length_text) if length_text is not None and length_text.isdigit() else None
        larger_than = active.config.shadow.stream_larger_than
        if not should_stream(length, larger_than):
            return
        capture = active.config.shadow.capture
        keep = capture.max_body_bytes if self.state.capture is not None else 0
        def kept(prefix: bytes) -> None:  # for the capture and the `response` hooks: the client has the body
            resp.data.content = prefix

        stream = PrefixStream(hold=larger_than if length is None else 0, keep=keep, on_end=kept)
        resp.stream = stream
        flow.metadata[STREAMED_METADATA] = stream
        self.streamed += 1

    def _untouched(self, flow: http.HTTPFlow) -> bool:
        """No concern edits this answer after its head (see the module docstring)."""
        route = self.state.routes.get(flow)
        if route is None or route.plan is None or route.upstream is None:
            return False
        if any(isinstance(mw, (HeadersMiddleware, ErrorPage, McpSettings, *AI_MIDDLEWARE_TYPES))
               for mw in route.plan.middlewares):
            return False
        outcome = flow.metadata.get(MIDDLEWARE_OUTCOME)
        if outcome is not None and (outcome.compress or outcome.response_limits or outcome.detect_content_type):
            return False
        decision = route.decision
        if decision is not None and getattr(decision, "set_cookies", None):
            return False
        return not (flow.metadata.get(FORWARD_AUTH_COOKIES) or flow.metadata.get(SET_COOKIE_METADATA))
