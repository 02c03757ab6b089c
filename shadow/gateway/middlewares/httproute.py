"""Gateway API HTTPRoute filters that Traefik's middlewares do not express (docs/gateway-api.md).

- `RequestRedirect`: the gateway answers with a redirect built from the request (scheme, hostname,
  port, path replaced in full or by prefix), the spec's port rules included.
- `ReplacePrefixMatch` (URLRewrite): the matched path prefix, element-wise, becomes another.

ReplaceFullPath is Traefik's `replacePath` (shadow.gateway.middlewares.paths.ReplacePath). Both run in
the router's middleware pipeline like Traefik's kinds (shadow.gateway.middlewares.pipeline).
"""

from __future__ import annotations

from dataclasses import dataclass

from shadow.gateway.middlewares.request import LocalAnswer, MiddlewareRequest

__all__ = ["HTTPRouteMiddleware", "ReplacePrefixMatch", "RequestRedirect", "redirect_location", "replace_prefix"]


def _strip_prefix(path: str, prefix: str) -> str | None:
    """`path` without `prefix` when the prefix matches element-wise ("/a" strips "/a/b", not "/ab")."""
    if not path.startswith(prefix):
        return None
    rest = path[len(prefix):]
    return rest if not rest or rest.startswith("/") else None


def replace_prefix(path: str, prefix: str, replacement: str) -> str:
    """ReplacePrefixMatch: `prefix` (a trailing '/' ignored) becomes `replacement`: /prefix/one/two with
    /prefix/one → /one gives /one/two; with → / gives /two. A path without the prefix is unchanged."""
    prefix = prefix.rstrip("/")
    rest = _strip_prefix(path, prefix) if prefix else path
    if rest is None:
        return path
    base = replacement.rstrip("/")
    if not rest or rest == "/":
        return base or "/"
    return base + rest


def _host_without_port(host: str) -> str:
    if host.startswith("["):  # an IPv6 literal
        end = host.find("]")
        return host[:end + 1] if end > 0 else host
    return host.split(":", 1)[0] if host.count(":") == 1 else host


@dataclass(frozen=True)
class RequestRedirect:
    name: str
    scheme: str | None = None  # None: the request's
    hostname: str | None = None  # None: the request's host (without its port)
    port: int | None = None  # None: the scheme's well-known port if scheme is set, else listener_port
    full_path: str | None = None  # ReplaceFullPath
    prefix: str | None = None  # ReplacePrefixMatch: the matched prefix...
    prefix_replacement: str | None = None  # ...and what replaces it
    status: int = 302
    listener_port: int = 80

    def check(self, req: MiddlewareRequest) -> LocalAnswer:
        return LocalAnswer(self.status, (("Location", redirect_location(self, req)),))


def redirect_location(mw: RequestRedirect, req: MiddlewareRequest) -> str:
    """The Location of a RequestRedirect. Port: the filter's, else the scheme's well-known port when the
    filter sets the scheme, else the listener's; 80 for http and 443 for https are left out."""
    scheme = mw.scheme or req.scheme
    hostname = mw.hostname or _host_without_port(req.host)
    port = mw.port if mw.port is not None else (None if mw.scheme else mw.listener_port)
    default = 443 if scheme == "https" else 80
    netloc = hostname if port is None or port == default else f"{hostname}:{port}"
    path = req.path
    if mw.full_path is not None:
        path = mw.full_path
    elif mw.prefix is not None and mw.prefix_replacement is not None:
        path = replace_prefix(path, mw.prefix, mw.prefix_replacement)
    return f"{scheme}://{netloc}{path}" + (f"?{req.query}" if req.query else "")


@dataclass(frozen=True)
class ReplacePrefixMatch:
    name: str
    prefix: str
    replacement: str

    def check(self, req: MiddlewareRequest) -> MiddlewareRequest:
        return req.with_path(replace_prefix(req.path, self.prefix, self.replacement))


HTTPRouteMiddleware = RequestRedirect | ReplacePrefixMatch
