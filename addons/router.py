"""Router addon: send each request where the configuration says, Traefik-style.

Adapts a flow to `shadow.routing`: build a `RequestView`, select the router (none → a local 404,
like Traefik), apply the router's middlewares, add X-Forwarded-* headers, pick a server, and point
the flow at it (scheme, then host, then port: the setters rewrite Host, which is restored to the
client's when the service passes the host header, Traefik's default).
"""

from __future__ import annotations

from mitmproxy import http

from addons.reload import GatewayState, RouteContext
from shadow.routing import (
    apply_request_middlewares,
    apply_response_middlewares,
    forwarded_headers,
    select_router,
)
from shadow.rules import RequestView

NOT_FOUND_BODY = b"404 page not found\n"  # Traefik's body for "no router matched"
TEXT_PLAIN = {"Content-Type": "text/plain; charset=utf-8"}


def _decoded(fields: tuple[tuple[bytes, bytes], ...]) -> list[tuple[str, str]]:
    # latin-1 maps every byte to one character, so encoding back gives the exact bytes.
    return [(k.decode("latin-1"), v.decode("latin-1")) for k, v in fields]


def _encoded(headers: list[tuple[str, str]]) -> http.Headers:
    return http.Headers([(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers])


def host_port(host: str, port: int, scheme: str) -> str:
    """A Host header value for host:port, without the scheme's default port."""
    default = 443 if scheme == "https" else 80
    shown = f"[{host}]" if ":" in host else host
    return shown if port == default else f"{shown}:{port}"


class Router:
    def __init__(self, state: GatewayState) -> None:
        self.state = state

    def request(self, flow: http.HTTPFlow) -> None:
        if flow.response or flow.error or not flow.live:
            return
        active = self.state.active
        if active is None:
            flow.response = http.Response.make(503, b"shadow gateway: no configuration loaded\n", TEXT_PLAIN)
            return
        req = flow.request
        client_host = req.host_header or ""  # the client's: the gateway runs with keep_host_header
        path, sep, query = req.path.partition("?")
        peer = flow.client_conn.peername
        client_ip = str(peer[0]) if peer else ""
        headers = _decoded(req.headers.fields)
        view = RequestView(method=req.method, host=client_host, path=path, query=query,
                           headers=tuple(headers), client_ip=client_ip)
        router = select_router(active.config, view)
        if router is None:
            self.state.routes[flow] = RouteContext(request_id=flow.id, router=None, service=None, upstream=None,
                                                   client_host=client_host, active=active)
            flow.response = http.Response.make(404, NOT_FOUND_BODY, TEXT_PLAIN)
            return
        plan = active.plans[router.name]
        server = active.picker.pick(plan.primary)
        rewritten = apply_request_middlewares(plan.middlewares, path, headers)
        sockname = flow.client_conn.sockname
        client_scheme = "https" if flow.client_conn.tls_established else "http"
        upstream_headers = forwarded_headers(
            rewritten.headers, client_ip=client_ip, host=client_host, scheme=client_scheme,
            port=sockname[1] if sockname else "", server_name=self.state.gateway_id or "shadow")
        new_path = rewritten.path
        if server.preserve_path and server.path:
            new_path = server.path + new_path
        # Order matters: scheme, host, port (each setter may rewrite the Host header).
        req.scheme = server.scheme
        req.host = server.host
        req.port = server.port
        req.path = new_path + sep + query
        if not plan.primary.pass_host_header:
            upstream_headers = [(k, v) for k, v in upstream_headers if k.lower() != "host"]
            upstream_headers.insert(0, ("Host", host_port(server.host, server.port, server.scheme)))
        req.headers = _encoded(upstream_headers)
        self.state.routes[flow] = RouteContext(
            request_id=flow.id, router=router.name, service=plan.primary.name, upstream=server.url,
            client_host=client_host, active=active, plan=plan, path=rewritten.path + sep + query)

    def response(self, flow: http.HTTPFlow) -> None:
        if flow.response is None:
            return
        route = self.state.routes.get(flow)
        if route is None or route.plan is None or not route.plan.middlewares:
            return
        new = apply_response_middlewares(route.plan.middlewares, _decoded(flow.response.headers.fields))
        flow.response.headers = _encoded(new)
