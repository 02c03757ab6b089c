"""Traefik's `forwardAuth` (pkg/middlewares/auth/forward.go) as pure functions; addons/auth.py makes
the call to the authentication server.

- The auth request: GET (the client's method with `preserveRequestMethod`) to `address`, with the
  client's headers less hop-by-hop ones (only `authRequestHeaders` when given), the client's
  X-Forwarded-* dropped unless `trustForwardHeader`, then X-Forwarded-For (appended to a trusted
  prior value), -Method, -Proto, -Port, -Host, -Uri; the body only with `forwardBody` (a body above
  `maxBodySize` → 401).
- The answer: 2xx → the request goes on, `authResponseHeaders` (and headers matching
  `authResponseHeadersRegex`) copied from the auth answer onto it; otherwise the auth answer is the
  client's (status, headers less hop-by-hop, body; Location resolved against `address` unless
  `preserveLocationHeader`), or a 302 to `authSigninURL` for a 401 when that is set. A call that
  fails → 500. `addAuthCookiesToResponse`: those cookies of the auth answer replace the upstream's.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from urllib.parse import urljoin

from shadow.gateway.goregex import GoRegexp
from shadow.gateway.middlewares.request import Headers, LocalAnswer, header_values

__all__ = ["AuthCall", "ForwardAuth", "auth_call", "auth_decision", "merge_auth_cookies"]

# Traefik's hopHeaders for forwardAuth (oxy's names: "Trailers"; Proxy-Authenticate/-Authorization are
# kept), plus Content-Length, which the HTTP client sets itself.
_HOP = frozenset({"connection", "keep-alive", "te", "trailers", "transfer-encoding", "upgrade", "content-length"})
_X_FORWARDED = frozenset({"x-forwarded-proto", "x-forwarded-scheme", "x-forwarded-for", "x-forwarded-host",
                          "x-forwarded-port", "x-forwarded-server", "x-forwarded-uri", "x-forwarded-method",
                          "x-forwarded-prefix", "x-forwarded-tls-client-cert", "x-forwarded-tls-client-cert-info",
                          "x-scheme", "x-real-ip"})
DEFAULT_MAX_BODY_SIZE = -1


@dataclass(frozen=True)
class ForwardAuth:
    name: str
    address: str
    trust_forward_header: bool | None = None  # None: Traefik's older header handling (not set in the file)
    auth_response_headers: tuple[str, ...] = ()
    auth_response_headers_regex: GoRegexp | None = None
    auth_request_headers: tuple[str, ...] = ()
    add_auth_cookies_to_response: tuple[str, ...] = ()
    header_field: str = ""
    forward_body: bool = False
    max_body_size: int = DEFAULT_MAX_BODY_SIZE
    max_response_body_size: int = -1
    preserve_location_header: bool = False
    preserve_request_method: bool = False
    auth_signin_url: str = ""
    timeout_s: float = 30.0


@dataclass(frozen=True)
class AuthCall:
    method: str
    url: str
    headers: tuple[tuple[str, str], ...]
    body: bytes | None = None


def _connection_listed(headers: list[tuple[str, str]]) -> set[str]:
    return {t.strip().lower() for v in header_values(headers, "Connection") for t in v.split(",") if t.strip()}


def _forwarded_port(host: str, proto: str, tls: bool) -> str:
    if host.count(":") == 1 or (host.startswith("[") and "]:" in host):
        port = host.rsplit(":", 1)[1]
        if port:
            return port
    return "443" if proto in ("https", "wss") or tls else "80"


def auth_call(fa: ForwardAuth, *, method: str, host: str, uri: str, headers: Iterable[tuple[str, str]],
              client_ip: str, tls: bool, body: bytes | None) -> AuthCall | LocalAnswer:
    """The request to send to `address` (or a 401 when the body is above maxBodySize)."""
    source = list(headers)
    listed = _connection_listed(source)
    out: Headers = [(k, v) for k, v in source if k.lower() not in _HOP and k.lower() not in listed]
    trusted = bool(fa.trust_forward_header)
    if fa.trust_forward_header is not None and not trusted:
        out = [(k, v) for k, v in out if k.lower() not in _X_FORWARDED]
    if fa.trust_forward_header is not None and not any(k.lower() == "user-agent" for k, _v in source):
        out.append(("User-Agent", ""))
    allowed = list(fa.auth_request_headers)
    if allowed and trusted:
        allowed += [h for h in _X_FORWARDED]
    if allowed:
        wanted = {h.lower() for h in allowed}
        out = [(k, v) for k, v in out if k.lower() in wanted]
    proto = "https" if tls else "http"
    if fa.trust_forward_header is None:  # Traefik's oldWriteHeader: always set
        replaced = ("x-forwarded-proto", "x-forwarded-method", "x-forwarded-host", "x-forwarded-uri",
                    *(("x-forwarded-for",) if client_ip else ()))
        out = [(k, v) for k, v in out if k.lower() not in replaced]
        if client_ip:
            out.append(("X-Forwarded-For", client_ip))
        out += [("X-Forwarded-Proto", proto), ("X-Forwarded-Method", method), ("X-Forwarded-Host", host),
                ("X-Forwarded-Uri", uri)]
    else:
        if client_ip:  # Go: only when the remote address parses
            prior = header_values(out, "X-Forwarded-For")
            out = [(k, v) for k, v in out if k.lower() != "x-forwarded-for"]
            out.append(("X-Forwarded-For", ", ".join([*prior, client_ip]) if prior else client_ip))
        present = {k.lower() for k, _v in out}
        if "x-forwarded-method" not in present:
            out.append(("X-Forwarded-Method", method))
        if "x-forwarded-proto" not in present:
            out.append(("X-Forwarded-Proto", proto))
        forwarded_proto = next((v for k, v in out if k.lower() == "x-forwarded-proto"), proto)
        if "x-forwarded-port" not in present:
            out.append(("X-Forwarded-Port", _forwarded_port(host, forwarded_proto, tls)))
        if "x-forwarded-host" not in present:
            out.append(("X-Forwarded-Host", host))
        if "x-forwarded-uri" not in present:
            out.append(("X-Forwarded-Uri", uri))
    send_body = None
    if fa.forward_body and body:
        if 0 <= fa.max_body_size < len(body):
            return LocalAnswer(401)
        send_body = body
    return AuthCall(method if fa.preserve_request_method else "GET", fa.address, tuple(out), send_body)


@dataclass
class AuthOutcome:
    answer: LocalAnswer | None = None  # the client's answer (denied)
    headers: Headers = field(default_factory=list)  # the request's headers to forward (allowed)
    auth_cookies: list[str] = field(default_factory=list)  # Set-Cookie lines to put on the answer


def auth_decision(fa: ForwardAuth, request_headers: Iterable[tuple[str, str]], status: int,
                  auth_headers: Iterable[tuple[str, str]], body: bytes) -> AuthOutcome:
    """What the auth server's answer means for the request."""
    auth = list(auth_headers)
    headers = list(request_headers)
    if 0 <= fa.max_response_body_size < len(body):
        return AuthOutcome(LocalAnswer(401))
    if fa.auth_signin_url and status == 401:
        return AuthOutcome(LocalAnswer(302, (("Location", fa.auth_signin_url),
                                             ("Content-Type", "text/html; charset=utf-8")),
                                       f'<a href="{fa.auth_signin_url}">Found</a>.\n\n'.encode()))
    if not 200 <= status < 300:
        listed = _connection_listed(auth)
        out = [(k, v) for k, v in auth if k.lower() not in _HOP and k.lower() not in listed]
        location = next((v for k, v in auth if k.lower() == "location"), None)
        if location is not None:
            out = [(k, v) for k, v in out if k.lower() != "location"]
            out.append(("Location", location if fa.preserve_location_header else urljoin(fa.address, location)))
        return AuthOutcome(LocalAnswer(status, tuple(out), body))
    for name in fa.auth_response_headers:
        values = header_values(auth, name)
        headers = [(k, v) for k, v in headers if k.lower() != name.lower()]
        headers += [(name, v) for v in values]
    if fa.auth_response_headers_regex is not None:
        regex = fa.auth_response_headers_regex
        headers = [(k, v) for k, v in headers if not regex.search(_canonical(k))]
        headers += [(k, v) for k, v in auth if regex.search(_canonical(k))]
    cookies = [v for k, v in auth if k.lower() == "set-cookie"]
    return AuthOutcome(None, headers, cookies)


def _canonical(name: str) -> str:
    return "-".join(p[:1].upper() + p[1:].lower() for p in name.split("-"))


def _cookie_name(line: str) -> str:
    return line.split("=", 1)[0].strip()


def merge_auth_cookies(fa: ForwardAuth, auth_cookies: list[str], response_headers: Headers) -> Headers:
    """addAuthCookiesToResponse: the upstream's cookies of those names dropped, the auth server's added."""
    names = set(fa.add_auth_cookies_to_response)
    if not names or not auth_cookies:
        return response_headers
    kept = [(k, v) for k, v in response_headers
            if not (k.lower() == "set-cookie" and _cookie_name(v) in names)]
    return kept + [("Set-Cookie", c) for c in auth_cookies if _cookie_name(c) in names]
