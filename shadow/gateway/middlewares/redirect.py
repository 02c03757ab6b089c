"""Traefik's `redirectScheme` and `redirectRegex` (pkg/middlewares/redirect).

Both rewrite the request's full URL with a Go regexp; a URL that changes is answered locally with
`Location` and 302 (GET) / 307 (other methods), 301 / 308 with `permanent`, or redirectScheme's
308 with `forcePermanentRedirect`; an unchanged URL passes on.
"""

from __future__ import annotations

from dataclasses import dataclass

from shadow.gateway.goregex import GoRegexp, compile_go
from shadow.gateway.middlewares.request import LocalAnswer, MiddlewareRequest

__all__ = ["Redirect", "redirect_regex", "redirect_scheme"]

# Traefik's uriRegexp: an absolute-form request target.
_URI = compile_go(r"^(https?):\/\/(\[[\w:.]+\]|[\w\._-]+)?(:\d+)?(.*)$")
_SCHEME_PATTERN = r"^(https?:\/\/)?(\[[\w:.]+\]|[\w\._-]+)?(:\d+)?(.*)$"

STATUS_TEXT = {301: "Moved Permanently", 302: "Found", 303: "See Other", 307: "Temporary Redirect",
               308: "Permanent Redirect"}


def _split_host_port(host: str) -> tuple[str, str]:
    """Go's net.SplitHostPort on a Host header: (host, ":port"), or (host, "") without a port."""
    if host.startswith("["):
        end = host.find("]")
        if end > 0 and host[end + 1:end + 2] == ":" and host[end + 2:]:
            return host[1:end], ":" + host[end + 2:]
        return host, ""
    if host.count(":") == 1:
        name, port = host.split(":")
        return name, ":" + port
    return host, ""


def _absolute_parts(req: MiddlewareRequest, scheme: str, host: str, port: str) -> tuple[str, str, str, str]:
    uri = req.uri
    m = _URI.find(uri)
    if m is not None:
        scheme = m.group(1)
        host = m.group(2) or host
        port = m.group(3) or port
        uri = m.group(4)
    return scheme, host, port, uri


_BAD_ESCAPE = compile_go(r"%([^0-9A-Fa-f]|.[^0-9A-Fa-f]|.?$)")


def go_url_parses(url: str) -> bool:
    """Would Go's url.Parse accept `url`? No control characters, no malformed %-escape, and no
    %-escape in the host (Go allows one only in an IPv6 zone)."""
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in url):
        return False
    if "%" in url and _BAD_ESCAPE.search(url):
        return False
    _scheme, sep, rest = url.partition("://")
    authority = rest.split("/", 1)[0].split("?", 1)[0]
    return not (sep and "%" in authority and not rest.startswith("["))


def raw_url(req: MiddlewareRequest) -> str:
    """redirectRegex's view of the request URL (rawURL in Traefik)."""
    scheme, host, port, uri = _absolute_parts(req, "http", req.host, "")
    if req.scheme == "https":
        scheme = "https"
    return f"{scheme}://{host}{port}{uri}"


def client_request_url(req: MiddlewareRequest) -> str:
    """redirectScheme's view (clientRequestURL): X-Forwarded-Proto counts, default ports dropped."""
    host, port = _split_host_port(req.host)
    scheme, host, port, uri = _absolute_parts(req, "http", host, port)
    if req.scheme == "https":
        scheme = "https"
    proto = req.header("X-Forwarded-Proto").lower()
    if proto in ("http", "ws"):
        scheme = "http"
    elif proto in ("https", "wss"):
        scheme = "https"
    if (scheme, port) in (("http", ":80"), ("https", ":443")):
        port = ""
    return f"{scheme}://{host}{port}{uri}"


@dataclass(frozen=True)
class Redirect:
    name: str
    regex: GoRegexp
    replacement: str
    permanent: bool = False
    status_code: int | None = None
    scheme_mode: bool = False  # redirectScheme: the URL as clientRequestURL sees it

    def check(self, req: MiddlewareRequest) -> MiddlewareRequest | LocalAnswer:
        old = client_request_url(req) if self.scheme_mode else raw_url(req)
        if not self.regex.search(old):
            return req
        new = self.regex.replace_all(old, self.replacement)
        if new == old:
            return req
        if not go_url_parses(new):  # Traefik's error handler (oxy's) answers 502
            return LocalAnswer(502, (("Content-Type", "text/plain; charset=utf-8"),), b"Bad Gateway")
        if self.status_code is not None:
            status = self.status_code
        elif self.permanent:
            status = 301 if req.method == "GET" else 308
        else:
            status = 302 if req.method == "GET" else 307
        return LocalAnswer(status, (("Location", new), ("Content-Type", "text/plain; charset=utf-8")),
                           STATUS_TEXT.get(status, "").encode())


def redirect_regex(name: str, regex: str, replacement: str, permanent: bool = False) -> Redirect:
    """GoRegexpError if `regex` is not a Go regexp."""
    return Redirect(name, compile_go(regex), replacement, permanent)


def redirect_scheme(name: str, scheme: str, port: str = "", permanent: bool = False,
                    force_permanent_redirect: bool = False) -> Redirect:
    """ValueError without a scheme (Traefik: "you must provide a target scheme")."""
    if not scheme:
        raise ValueError("you must provide a target scheme")
    suffix = ""
    if port and (scheme, port) not in (("http", "80"), ("https", "443")):
        suffix = ":" + port
    return Redirect(name, compile_go(_SCHEME_PATTERN), f"{scheme}://${{2}}{suffix}${{4}}", permanent,
                    308 if force_permanent_redirect else None, scheme_mode=True)
