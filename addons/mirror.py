"""Mirror addon: after the primary answered, send copies to the route's mirror services.

Traefik's mirroring semantics (percent counter, mirrorBody, maxBodySize; nothing is mirrored when
the client went away) plus the gateway's safety rules: unsafe methods only to targets that allow
them, every copy marked `X-Shadow-Request: 1` and `X-Shadow-Request-Id: <request id>`. The primary
request itself is left as the client sent it (plus X-Forwarded-*): the monolith must not see
anything new.

Zero-config noise evidence: a share of the safe requests copied to a candidate is also sent to the
primary a second time (shadow.mirroring.resend; shadow.gateway.mirror.resend_skip_reason and
ResendBudget decide), built and captured like any `role: secondary` copy.

The `response` hook only decides and schedules: `shadow.gateway.mirror.MirrorDispatcher` sends the copies
on its own tasks, bounded and timed out, so the client's answer leaves without waiting.
"""

from __future__ import annotations

import collections
import logging

from mitmproxy import http

from addons.reload import ActiveConfig, GatewayState, RouteContext, SkipCopy, after_hooks
from addons.router import host_port
from shadow.capture.endpoints import template_path
from shadow.gateway.config import LoadBalancerService, Server
from shadow.gateway.exchange import ANSWER_COMPLETE_METADATA, ExchangeRecord, mirror_record
from shadow.gateway.mirror import (
    PREPARE_KEY,
    RESEND,
    RESEND_CAPPED,
    MirrorDispatcher,
    MirrorRequest,
    MirrorResult,
    RateLimitedLog,
    ResendBudget,
    ResendSettings,
    describe_error,
    mirror_headers,
    mirror_skip_reason,
    resend_skip_reason,
)
from shadow.gateway.transport import client_ssl

logger = logging.getLogger(__name__)

CLIENT_GONE_MESSAGES = ("Client disconnected.", "Connection killed.")
TRACE_KEY = "trace"  # MirrorRequest.context: what the mirror tracer (telemetry) wants back with the result
EXTRA_KEY = "extra_columns"  # MirrorRequest.context: result → more columns for the copy's row (a rewriter's)


class Mirror:
    def __init__(self, state: GatewayState) -> None:
        self.state = state
        self.skipped: collections.Counter[str] = collections.Counter()
        self.errors = 0
        self.resend_budget = ResendBudget(ResendSettings())
        # Re-sends of a request to the primary (the zero-config secondary): sent, over the
        # per-endpoint cap, shed because the dispatcher had maxInFlight copies out.
        self.resent = self.resend_capped = self.resend_shed = 0
        self._warn = RateLimitedLog(logger.warning)
        state.on_activate.append(self._on_activate)
        state.extra_counters.append(self.counters)

    def counters(self) -> dict[str, int]:
        skipped = {f"mirror_skipped_{reason.replace('-', '_')}": n for reason, n in self.skipped.items()}
        return {**skipped, "mirror_dispatch_errors": self.errors, "mirror_resent": self.resent,
                "mirror_resend_capped": self.resend_capped, "mirror_resend_shed": self.resend_shed}

    def _on_activate(self, active: ActiveConfig, _previous: ActiveConfig | None) -> None:
        settings = active.config.shadow.mirroring
        self.resend_budget.reconfigure(settings.resend)
        # A copy's answer is read only as far as the capture keeps it (the rest is never read).
        body_limit = active.config.shadow.capture.max_body_bytes
        if self.state.dispatcher is None:
            self.state.dispatcher = MirrorDispatcher(
                max_in_flight=settings.max_in_flight, timeout_s=settings.timeout_s,
                on_result=self._on_result, log_warning=logger.warning, max_body_bytes=body_limit,
                max_bytes_in_flight=settings.max_bytes_in_flight)
        else:
            self.state.dispatcher.reconfigure(max_in_flight=settings.max_in_flight, timeout_s=settings.timeout_s,
                                              max_body_bytes=body_limit,
                                              max_bytes_in_flight=settings.max_bytes_in_flight)

    def flow_hooks(self, active: ActiveConfig) -> frozenset[str]:
        """Only when some route goes through a mirroring service."""
        mirrored = any(plan.mirroring is not None for plan in active.plans.values())
        return frozenset({"response", "error"} if mirrored else ())

    def _on_result(self, result: MirrorResult) -> None:
        context = result.request.context
        primary = context.get("primary")
        capture = self.state.capture
        if capture is not None and isinstance(primary, ExchangeRecord):
            record = mirror_record(result, primary)
            extra = context.get(EXTRA_KEY)
            if callable(extra):
                record.extra = extra(result)
            capture.submit(record.to_row())
        tracer = self.state.mirror_tracer
        if tracer is not None and TRACE_KEY in context:
            tracer.copy_done(result, context[TRACE_KEY])

    def response(self, flow: http.HTTPFlow) -> None:
        if flow.error is not None or flow.response is None or not flow.live or not self._mirrors(flow):
            return
        # Whether the client went away is read now: once the answer is sent, a `Connection: close`
        # exchange ends the client connection normally.
        gone = flow.client_conn.timestamp_end is not None
        # After Capture's callback (scheduled first), so the primary row exists by then.
        after_hooks(lambda f: self._mirror(f, client_gone=gone), flow)

    def error(self, flow: http.HTTPFlow) -> None:
        # The primary failed upstream (refused, timeout): Traefik still mirrors once the main
        # handler returned, unless the client itself went away — after having its whole answer
        # (a streamed answer marked complete) it counts as answered.
        if flow.metadata.get(ANSWER_COMPLETE_METADATA) and flow.response is not None and self._mirrors(flow):
            after_hooks(lambda f: self._mirror(f, client_gone=False), flow)
            return
        if (flow.response is not None or flow.error is None or flow.error.msg in CLIENT_GONE_MESSAGES
                or not self._mirrors(flow)):
            return
        gone = flow.client_conn.timestamp_end is not None
        after_hooks(lambda f: self._mirror(f, client_gone=gone), flow)

    def _mirrors(self, flow: http.HTTPFlow) -> bool:
        # Checked before scheduling: a route without a mirror then costs no callback per flow.
        route = self.state.routes.get(flow)
        return route is not None and route.mirrored

    def _mirror(self, flow: http.HTTPFlow, *, client_gone: bool) -> None:
        route = self.state.routes.get(flow)
        dispatcher = self.state.dispatcher
        if route is None or route.plan is None or route.plan.mirroring is None or route.active is None:
            return
        if dispatcher is None:
            return
        if client_gone:  # the client went away during the main call
            self.skipped["client-gone"] += 1
            return
        try:
            self._dispatch(flow, route, route.active, dispatcher)
        except Exception as exc:  # shadow work never fails the client's exchange
            self.errors += 1
            self._warn(f"mirroring failed ({self.errors} so far): {describe_error(exc)}")

    def _dispatch(self, flow: http.HTTPFlow, route: RouteContext, active: ActiveConfig,
                  dispatcher: MirrorDispatcher) -> None:
        plan = route.plan
        assert plan is not None and plan.mirroring is not None
        mirroring = plan.mirroring
        request = flow.request
        body = request.raw_content or b""
        if mirroring.max_body_size >= 0 and len(body) > mirroring.max_body_size:
            # Traefik: a body above maxBodySize is not mirrored at all, and no counter moves.
            self.skipped["body-too-large"] += 1
            return
        chosen = {spec.name for spec in active.mirror_counter.select(mirroring)}
        if not chosen:
            return
        settings = active.config.shadow.mirroring
        client_headers = _with_host(
            [(k.decode("latin-1"), v.decode("latin-1")) for k, v in request.headers.fields], route.client_host)
        primary = self.state.records.get(flow)
        candidate_copies = 0
        for target in plan.mirrors:
            if target.spec.name not in chosen:
                continue
            target_settings = settings.target(target.spec.name)
            reason = mirror_skip_reason(request.method, len(body), max_body_size=mirroring.max_body_size,
                                        target=target_settings)
            if reason is not None:
                self.skipped[reason] += 1
                continue
            server = active.picker.pick(target.service)
            try:
                copy = self._copy(flow, route, target.service, server, target.spec.name, target_settings.role,
                                  client_headers, body if mirroring.mirror_body else None, primary, rewrite=True)
            except SkipCopy as skip:  # a rewriter's choice (addons/mcp.py: not a read-only MCP call)
                self.skipped[skip.reason] += 1
                continue
            if dispatcher.submit(copy) and target_settings.role == "candidate":
                candidate_copies += 1
        if resend_skip_reason(
                request.method, settings=settings.resend, candidate_copies=candidate_copies,
                primary_answered=flow.response is not None,
                secondary_configured=any(settings.target(t.spec.name).role == "secondary" for t in plan.mirrors),
        ) is not None:
            return
        # One budget per endpoint: the router and the path template the capture writes.
        outcome = self.resend_budget.take(f"{route.router} {template_path(route.path.partition('?')[0])}")
        if outcome == RESEND_CAPPED:
            self.resend_capped += 1
        elif outcome == RESEND:
            # The same request to the server that just answered it: its second answer is the noise evidence.
            server = _serving_server(plan.primary, route.upstream) or active.picker.pick(plan.primary)
            copy = self._copy(flow, route, plan.primary, server, plan.primary.name, "secondary",
                              client_headers, body, primary, rewrite=False)
            if dispatcher.submit(copy):
                self.resent += 1
            else:
                self.resend_shed += 1

    def _copy(self, flow: http.HTTPFlow, route: RouteContext, service: LoadBalancerService, server: Server,
              target: str, role: str, client_headers: list[tuple[str, str]], body: bytes | None,
              primary: ExchangeRecord | None, *, rewrite: bool) -> MirrorRequest:
        """One marked copy of the client's request for `server` of `service`; `rewrite`: a mirror
        target's copy, which the mirror rewriter may change (the re-send to the primary never is)."""
        path = server.path + route.path if server.preserve_path else route.path
        authority = host_port(server.host, server.port, server.scheme)
        context: dict[str, object] = {"primary": primary}
        tracer = self.state.mirror_tracer
        traced = tracer.trace_copy(flow) if tracer is not None else None
        if traced is not None:
            context[TRACE_KEY] = traced[1]
        headers = tuple(mirror_headers(client_headers, route.request_id,
                                       host=None if service.pass_host_header else authority,
                                       traceparent=traced[0] if traced is not None else None))
        rewritten = None
        for rewriter in self.state.mirror_rewriters if rewrite else ():
            rewritten = rewriter.rewrite_copy(flow, target, headers, body)
            if rewritten is not None:
                break
        if rewritten is not None:
            headers, body, context[EXTRA_KEY] = rewritten.headers, rewritten.body, rewritten.columns
            if rewritten.prepare is not None:
                context[PREPARE_KEY] = rewritten.prepare
        return MirrorRequest(
            target=target, role=role, request_id=route.request_id, method=flow.request.method,
            url=f"{server.scheme}://{authority}{path}", upstream=server.url, headers=headers, body=body,
            context=context, ssl=client_ssl(server), path_prefix=server.path if server.preserve_path else "",
        )

    async def done(self) -> None:
        if self.state.dispatcher is not None:
            await self.state.dispatcher.aclose()


def _with_host(headers: list[tuple[str, str]], client_host: str) -> list[tuple[str, str]]:
    """The client's Host, whatever the primary service did with it (passHostHeader is per service)."""
    out = [(k, v) for k, v in headers if k.lower() != "host"]
    if client_host:
        out.insert(0, ("Host", client_host))
    return out


def _serving_server(service: LoadBalancerService, upstream: str | None) -> Server | None:
    """The server of `service` that answered the client (RouteContext.upstream is its URL)."""
    return next((server for server in service.servers if server.url == upstream), None)
