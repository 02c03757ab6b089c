"""Router addon: send each request where the configuration says, Traefik-style.

Adapts a flow to `shadow.gateway.routing`: build a `RequestView`, select the router (none → a local 404,
like Traefik), apply the router's middlewares, add X-Forwarded-* headers, pick a server, and point
the flow at it (scheme, host and port; the upstream sees the client's Host when the service passes
the host header, Traefik's default, else the server's host:port).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable
from dataclasses import replace

from mitmproxy import http
from mitmproxy.net.http.url import hostport

from addons.auth import AUTH_METADATA, unauthorized
from addons.reload import ActiveConfig, GatewayState, RouteContext
from shadow.auth.jwt import JwtSettings, TokenRejected
from shadow.auth.oidc import OidcSettings
from shadow.gateway.config import HeadersMiddleware
from shadow.gateway.entrypoints import select_entry_point, strip_untrusted_forwarded
from shadow.gateway.middlewares.compress import Compress, should_compress
from shadow.gateway.middlewares.contenttype import detect_content_type
from shadow.gateway.middlewares.forwardauth import ForwardAuth
from shadow.gateway.middlewares.headers import cors_response, security_response
from shadow.gateway.middlewares.inflightreq import InFlightReq
from shadow.gateway.middlewares.pipeline import MiddlewareRuntime, RequestOutcome
from shadow.gateway.middlewares.redirect import redirect_scheme
from shadow.gateway.middlewares.request import LocalAnswer, MiddlewareRequest
from shadow.gateway.mirror import RateLimitedLog, describe_error
from shadow.gateway.routing import (
    RewrittenRequest,
    apply_request_middlewares,
    apply_response_middlewares,
    config_for_listener,
    forwarded_headers,
    resolve_router,
    with_inherited,
)
from shadow.gateway.rules import RequestView, request_host
from shadow.gateway.shifting import RequestFacts

logger = logging.getLogger(__name__)

MIDDLEWARE_OUTCOME = "shadow.middleware_outcome"  # flow.metadata: in-flight slots and retry settings
NOT_FOUND_BODY = b"404 page not found\n"  # Traefik's body for "no router matched"
TEXT_PLAIN = {"Content-Type": "text/plain; charset=utf-8"}
GO_HTTP_ERROR = {**TEXT_PLAIN, "X-Content-Type-Options": "nosniff"}  # the headers Go's http.Error writes


def _decoded(fields: tuple[tuple[bytes, bytes], ...]) -> list[tuple[str, str]]:
    # latin-1 maps every byte to one character, so encoding back gives the exact bytes.
    return [(k.decode("latin-1"), v.decode("latin-1")) for k, v in fields]


def _encoded(headers: list[tuple[str, str]]) -> tuple[tuple[bytes, bytes], ...]:
    return tuple((k.encode("latin-1"), v.encode("latin-1")) for k, v in headers)


def _client_host(req: http.Request, headers: list[tuple[str, str]]) -> str:
    """The Host the client asked for (HTTP/2 and 3: :authority), read from the decoded headers."""
    if (req.is_http2 or req.is_http3) and req.authority:
        return req.authority
    host = ""
    for name, value in headers:
        if len(name) == 4 and name.lower() == "host":
            host = value
            break
    if req.authority:  # HTTP/1 absolute-form target: its authority wins over Host (Go's ReadRequest)
        return request_host(req.authority, host)
    return host


def host_port(host: str, port: int, scheme: str) -> str:
    """A Host header value for host:port, without the scheme's default port."""
    default = 443 if scheme == "https" else 80
    shown = f"[{host}]" if ":" in host else host
    return shown if port == default else f"{shown}:{port}"


def _auth_missing(flow: http.HTTPFlow, middlewares: tuple[object, ...], generation: int) -> bool:
    """Fail closed: a route with a jwt middleware the auth addon did not pass answers 401."""
    needed = {m.name for m in middlewares if isinstance(m, JwtSettings | OidcSettings | ForwardAuth)}
    if not needed:
        return False
    passed = flow.metadata.get(AUTH_METADATA)
    if passed is not None and passed.generation == generation and needed <= passed.verified:
        return False
    flow.response = unauthorized(TokenRejected("authentication required", reason="missing_pass"))
    return True


class Router:
    def __init__(self, state: GatewayState) -> None:
        self.state = state
        self.errors = 0
        self._warn = RateLimitedLog(logger.error)
        state.extra_counters.append(lambda: {"routing_errors": self.errors})
        self.middlewares: MiddlewareRuntime | None = None  # rate-limit buckets, in-flight counts
        state.on_activate.append(self._on_activate)

    def flow_hooks(self, active: ActiveConfig) -> frozenset[str]:
        """Every request is routed; answers are rewritten only when some router has middlewares."""
        hooks = {"request", "response"} if active.config.middlewares else {"request"}
        if any(isinstance(m, InFlightReq) for m in active.config.middlewares.values()):
            hooks.add("error")  # an in-flight slot is released on errors too
        return frozenset(hooks)

    def error(self, flow: http.HTTPFlow) -> None:
        outcome = flow.metadata.get(MIDDLEWARE_OUTCOME)
        if outcome is not None:
            outcome.release()

    def request(self, flow: http.HTTPFlow) -> Awaitable[None] | None:
        if flow.response or flow.error or not flow.live:
            return None
        try:
            result = self._route(flow)
        except Exception as exc:
            # Never fall through to mitmdump's reverse target: that would be a silent mis-route.
            self.errors += 1
            self._warn(f"routing failed ({self.errors} so far): {describe_error(exc)}")
            flow.response = http.Response.make(502, b"shadow gateway: routing failed\n", TEXT_PLAIN)
            result = None
        if flow.response is not None and flow.request.method == "HEAD" and flow.response.raw_content:
            flow.response.content = b""  # a local answer to HEAD has no body (mitmproxy would send it)
        return result

    def _on_activate(self, active: ActiveConfig, _previous: ActiveConfig | None) -> None:
        self.middlewares = MiddlewareRuntime(active.config.middlewares, self.middlewares)

    def _route(self, flow: http.HTTPFlow) -> Awaitable[None] | None:
        """Route the flow; an awaitable when a rateLimit middleware delays it (mitmproxy waits)."""
        active = self.state.active
        if active is None:
            flow.response = http.Response.make(503, b"shadow gateway: no configuration loaded\n", TEXT_PLAIN)
            return None
        req = flow.request
        headers = _decoded(req.headers.fields)
        client_host = _client_host(req, headers)  # the client's: the gateway runs with keep_host_header
        path, sep, query = req.path.partition("?")
        peer = flow.client_conn.peername
        client_ip = str(peer[0]) if peer else ""
        sockname = flow.client_conn.sockname
        # Traefik's entry point: an untrusted client's X-Forwarded-* / X-Real-Ip are gone before
        # routing and middlewares see the request (forwardedHeaders.trustedIPs / insecure).
        entry_point = select_entry_point(active.config.entry_points, sockname[1] if sockname else None)
        headers = strip_untrusted_forwarded(headers, entry_point, client_ip)
        tls = flow.client_conn.tls_established
        if entry_point is not None and entry_point.redirect_to:  # http.redirections.entryPoint
            target = active.config.entry_points[entry_point.redirect_to]
            answer = redirect_scheme(entry_point.name, entry_point.redirect_scheme, str(target.port or ""),
                                     entry_point.redirect_permanent).check(MiddlewareRequest(
                method=req.method, scheme="https" if tls else "http", host=client_host, path=path, query=query,
                headers=tuple(headers), remote_ip=client_ip))
            if isinstance(answer, LocalAnswer):
                self.state.routes[flow] = RouteContext(request_id=flow.id, router=None, service=None, upstream=None,
                                                       client_host=client_host, active=active)
                flow.response = http.Response.make(answer.status, answer.body, _encoded(list(answer.headers)))
                return None
        view = RequestView(method=req.method, host=client_host, path=path, query=query,
                           headers=tuple(headers), client_ip=client_ip, body=req.raw_content or b"")
        # the routers this entry point (and TLS or not) serves: entryPoints, tls
        routing = config_for_listener(active.config, entry_point, tls)
        router, inherited = resolve_router(routing, view)  # parent → child layers (parentRefs)
        if router is None:
            self.state.routes[flow] = RouteContext(request_id=flow.id, router=None, service=None, upstream=None,
                                                   client_host=client_host, active=active)
            flow.response = http.Response.make(404, NOT_FOUND_BODY, TEXT_PLAIN)
            return None
        plan = with_inherited(active.plans[router.name], inherited)
        if _auth_missing(flow, plan.middlewares, active.generation):
            return None
        client_scheme = "https" if tls else "http"
        outcome: RequestOutcome | None = None
        append_forwarded_for = [True]
        if self.middlewares is not None and MiddlewareRuntime.applies(plan.middlewares):
            # Traefik's middlewares in order (shadow.gateway.middlewares.pipeline); one may answer.
            def older(mw: object, mreq: MiddlewareRequest) -> MiddlewareRequest:
                done = apply_request_middlewares((mw,), mreq.path, mreq.headers)  # type: ignore[arg-type]
                if not done.append_forwarded_for:
                    append_forwarded_for[0] = False
                return replace(mreq, path=done.path, headers=done.headers)

            outcome = self.middlewares.run(plan.middlewares, MiddlewareRequest(
                method=req.method, scheme=client_scheme, host=client_host, path=path, query=query,
                headers=tuple(headers), remote_ip=client_ip, body_size=len(req.raw_content or b"")),
                time.monotonic_ns(), older)
            if outcome.answer is not None:
                self.state.routes[flow] = RouteContext(request_id=flow.id, router=router.name, service=None,
                                                       upstream=None, client_host=client_host, active=active)
                answer = outcome.answer
                flow.response = http.Response.make(answer.status, answer.body, _encoded(list(answer.headers)))
                return None
            path, query, headers = outcome.request.path, outcome.request.query, list(outcome.request.headers)
            sep = "?" if query else sep
            if outcome.needs_response_hook:
                flow.metadata[MIDDLEWARE_OUTCOME] = outcome
        service, decision, control = plan.primary, None, self.state.traffic
        pinned = self.state.affinity.pin(flow, plan) if self.state.affinity is not None else None
        if isinstance(pinned, http.Response):  # the session's server is gone
            self.state.routes[flow] = RouteContext(request_id=flow.id, router=router.name, service=None,
                                                   upstream=None, client_host=client_host, active=active)
            flow.response = pinned
            return None
        if pinned is not None:  # a stateful session stays on its server (MCP's Mcp-Session-Id)
            service, server = pinned
        elif plan.controlled and control is not None:
            # Weighted / HRW / failover / sticky / health / breaker: decided before forwarding, so a
            # dead primary with a healthy fallback never costs the client mitmproxy's own 502.
            decision = control.decide(router.service, plan.middlewares,
                                      RequestFacts.from_headers(client_ip, headers))
            if decision.service is None or decision.server is None:
                self.state.routes[flow] = RouteContext(
                    request_id=flow.id, router=router.name, service=None, upstream=None,
                    client_host=client_host, active=active, decision=decision)
                flow.response = http.Response.make(
                    decision.status, (decision.body or f"{decision.reason}\n").encode(),
                    GO_HTTP_ERROR if decision.go_http_error else TEXT_PLAIN)
                return None
            service, server = decision.service, decision.server
        else:
            server = active.picker.pick(plan.primary)
        if outcome is None:
            rewritten = apply_request_middlewares(plan.middlewares, path, headers)
        else:  # the pipeline above applied them all
            rewritten = RewrittenRequest(path, tuple(headers), append_forwarded_for[0])
        if service.request_headers:  # Gateway API: the chosen backendRef's own header filters
            backend = apply_request_middlewares(service.request_headers, rewritten.path, rewritten.headers)
            rewritten = RewrittenRequest(backend.path, backend.headers,
                                         rewritten.append_forwarded_for and backend.append_forwarded_for)
        upstream_headers = forwarded_headers(
            rewritten.headers, client_ip=client_ip, host=client_host, scheme=client_scheme,
            port=sockname[1] if sockname else "", server_name=self.state.gateway_id or "shadow",
            append_forwarded_for=rewritten.append_forwarded_for)  # X-Forwarded-For: "" → none at all
        new_path = rewritten.path
        if server.preserve_path and server.path:
            new_path = server.path + new_path
        fields = _encoded(upstream_headers)
        # mitmproxy's scheme/host/port setters each rewrite the Host header and the authority through
        # its multidict (≈ 4 µs apiece, the costliest step of routing). The headers are replaced
        # below anyway, so the target goes into the request's data directly and the authority, when
        # the request has one (absolute-form, HTTP/2), is updated once, as the setters would.
        data = req.data
        data.scheme = server.scheme.encode("ascii")
        data.host = server.host
        data.port = server.port
        if data.authority:
            req.authority = hostport(server.scheme, server.host, server.port)
        req.path = new_path + sep + query
        if not service.pass_host_header:  # the upstream sees its own host:port
            server_host = host_port(server.host, server.port, server.scheme).encode("latin-1")
            without = tuple(f for f in fields if f[0].lower() != b"host")
            fields = ((b"Host", server_host), *without)
        req.headers.fields = fields
        if (req.is_http2 or req.is_http3) and req.authority and service.pass_host_header:
            req.authority = client_host  # HTTP/2 and 3 carry the Host as :authority, which the setters replaced
        self.state.routes[flow] = RouteContext(
            request_id=flow.id, router=router.name, service=service.name, upstream=server.url,
            client_host=client_host, active=active, plan=plan, path=rewritten.path + sep + query,
            sent_at=time.time(), decision=decision)
        if decision is not None and decision.split_child is not None and control is not None:
            route = self.state.routes[flow]
            route.service = decision.split_child
            route.split_role = "candidate" if decision.split_child in control.split.candidates else "primary"
            route.client_key = decision.client_key
        if outcome is not None and outcome.delay_s > 0:
            return asyncio.sleep(outcome.delay_s)
        return None


    def response(self, flow: http.HTTPFlow) -> None:
        outcome = flow.metadata.get(MIDDLEWARE_OUTCOME)
        if outcome is not None:
            outcome.release()  # inFlightReq: this request is no longer in flight
        if flow.response is None:
            return
        route = self.state.routes.get(flow)
        if route is None or route.plan is None or not route.plan.middlewares:
            return
        new = apply_response_middlewares(route.plan.middlewares, _decoded(flow.response.headers.fields))
        for mw in route.plan.middlewares:  # headers' CORS and security options need the request
            if isinstance(mw, HeadersMiddleware) and (mw.cors or mw.security):
                request_headers = _decoded(flow.request.headers.fields)
                if mw.cors is not None:
                    new = cors_response(mw.cors, request_headers, new)
                if mw.security is not None:
                    new = security_response(mw.security, flow.client_conn.tls_established, request_headers, new)
        flow.response.headers.fields = _encoded(new)
        if outcome is not None:
            self._answer_middlewares(flow, outcome)

    def _answer_middlewares(self, flow: http.HTTPFlow, outcome: RequestOutcome) -> None:
        """buffering's answer limit, contentType's detection, then compress (Traefik's order: the
        outer middlewares see the inner ones' answer)."""
        response = flow.response
        assert response is not None
        for limit in outcome.response_limits:
            if (answer := limit.check_response(len(response.raw_content or b""))) is not None:
                flow.response = http.Response.make(answer.status, answer.body, _encoded(list(answer.headers)))
                return
        if outcome.detect_content_type and "content-type" not in response.headers and response.raw_content:
            response.headers["Content-Type"] = detect_content_type(response.get_content(strict=False) or b"")
        if outcome.compress:
            self._compress(response, outcome.compress)

    @staticmethod
    def _compress(response: http.Response, chosen: list[tuple[Compress, str]]) -> None:
        """Traefik's compress: Vary: Accept-Encoding, and the body encoded when it qualifies."""
        for mw, encoding in chosen:
            response.headers.add("Vary", "Accept-Encoding")
            headers = _decoded(response.headers.fields)
            if should_compress(mw, headers, len(response.raw_content or b"")):
                response.encode(encoding)
