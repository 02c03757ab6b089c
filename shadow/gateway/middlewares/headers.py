"""Traefik's `headers` middleware beyond custom headers (pkg/middlewares/headers): CORS (header.go)
and the security headers of unrolled/secure (secure.go), as pure functions.

- CORS: a preflight (OPTIONS with Origin and Access-Control-Request-Method) is answered locally,
  200 with the Access-Control-* headers; other answers get Access-Control-Allow-Origin (when the
  Origin is allowed: listed, `*`, or matching a Go regexp), -Allow-Credentials, -Expose-Headers and
  `Vary: Origin` (addVaryHeader).
- Security: `allowedHosts` (checked against the Host, or the first of `hostsProxyHeaders` present)
  → 500 "Bad Host" otherwise; response headers Strict-Transport-Security (only over TLS, or an
  `sslProxyHeaders` match, unless `forceSTSHeader`), X-Frame-Options, X-Content-Type-Options,
  X-XSS-Protection, Content-Security-Policy(-Report-Only), Referrer-Policy, Permissions-Policy,
  Public-Key-Pins (over TLS). `isDevelopment` turns off allowedHosts, STS and Public-Key-Pins.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from shadow.gateway.goregex import GoRegexp
from shadow.gateway.middlewares.request import Headers, LocalAnswer, first_header, set_header, text_answer

__all__ = ["Cors", "Security", "cors_preflight", "cors_response", "security_request", "security_response"]


@dataclass(frozen=True)
class Cors:
    allow_credentials: bool = False
    allow_headers: tuple[str, ...] = ()
    allow_methods: tuple[str, ...] = ()
    allow_origin_list: tuple[str, ...] = ()
    allow_origin_regex: tuple[GoRegexp, ...] = ()
    expose_headers: tuple[str, ...] = ()
    max_age: int | None = None
    add_vary_header: bool = False

    def match_origin(self, origin: str) -> str | None:
        for item in self.allow_origin_list:
            if item == origin:
                return item
            if item == "*":
                return origin if self.allow_credentials else item  # no wildcard with credentials
        for regex in self.allow_origin_regex:
            if regex.search(origin):
                return origin
        return None

    def _expose(self) -> str | None:
        if not self.expose_headers or ("*" in self.expose_headers and self.allow_credentials):
            return None
        return ",".join(self.expose_headers)


def cors_preflight(cors: Cors, method: str, headers: Iterable[tuple[str, str]]) -> LocalAnswer | None:
    headers = list(headers)
    ac_method = first_header(headers, "Access-Control-Request-Method")
    origin = first_header(headers, "Origin")
    if not (ac_method and origin and method == "OPTIONS"):
        return None
    out: Headers = []
    if cors.allow_credentials:
        out.append(("Access-Control-Allow-Credentials", "true"))
    if "*" in cors.allow_headers and cors.allow_credentials:
        if acrh := first_header(headers, "Access-Control-Request-Headers"):
            out.append(("Access-Control-Allow-Headers", acrh))
    elif cors.allow_headers:
        out.append(("Access-Control-Allow-Headers", ",".join(cors.allow_headers)))
    if "*" in cors.allow_methods and cors.allow_credentials:
        out.append(("Access-Control-Allow-Methods", ac_method))
    elif cors.allow_methods:
        out.append(("Access-Control-Allow-Methods", ",".join(cors.allow_methods)))
    match = cors.match_origin(origin)
    if match is not None:
        out.append(("Access-Control-Allow-Origin", match))
    if cors.max_age is not None:
        out.append(("Access-Control-Max-Age", str(cors.max_age)))
    if (expose := cors._expose()) is not None:
        out.append(("Access-Control-Expose-Headers", expose))
    out.append(("Content-Length", "0"))
    return LocalAnswer(200, tuple(out), b"")


def cors_response(cors: Cors, request_headers: Iterable[tuple[str, str]], response: Headers) -> Headers:
    match = cors.match_origin(first_header(request_headers, "Origin"))
    if match is not None:
        response = set_header(response, "Access-Control-Allow-Origin", match)
    if cors.allow_credentials:
        response = set_header(response, "Access-Control-Allow-Credentials", "true")
    if (expose := cors._expose()) is not None:
        response = set_header(response, "Access-Control-Expose-Headers", expose)
    if cors.add_vary_header:
        vary = first_header(response, "Vary")
        if vary != "Origin":
            response = set_header(response, "Vary", f"{vary},Origin" if vary else "Origin")
    return response


@dataclass(frozen=True)
class Security:
    allowed_hosts: tuple[str, ...] = ()
    hosts_proxy_headers: tuple[str, ...] = ()
    ssl_proxy_headers: tuple[tuple[str, str], ...] = ()
    sts_seconds: int = 0
    sts_include_subdomains: bool = False
    sts_preload: bool = False
    force_sts_header: bool = False
    frame_deny: bool = False
    custom_frame_options_value: str = ""
    content_type_nosniff: bool = False
    browser_xss_filter: bool = False
    custom_browser_xss_value: str = ""
    content_security_policy: str = ""
    content_security_policy_report_only: str = ""
    public_key: str = ""
    referrer_policy: str = ""
    permissions_policy: str = ""
    is_development: bool = False


def security_request(sec: Security, host: str, headers: Iterable[tuple[str, str]]) -> LocalAnswer | None:
    """unrolled/secure's request check: a Host outside `allowedHosts` → 500 "Bad Host"."""
    if not sec.allowed_hosts or sec.is_development:
        return None
    headers = list(headers)
    for name in sec.hosts_proxy_headers:
        if value := first_header(headers, name):
            host = value
            break
    if host in sec.allowed_hosts:
        return None
    return text_answer(500, "Bad Host")


def _is_ssl(sec: Security, tls: bool, headers: list[tuple[str, str]]) -> bool:
    return tls or any(first_header(headers, k) == v for k, v in sec.ssl_proxy_headers)


def security_response(sec: Security, tls: bool, request_headers: Iterable[tuple[str, str]],
                      response: Headers) -> Headers:
    ssl = _is_ssl(sec, tls, list(request_headers))
    add: list[tuple[str, str]] = []
    if sec.sts_seconds != 0 and (ssl or sec.force_sts_header) and not sec.is_development:
        value = f"max-age={sec.sts_seconds}"
        if sec.sts_include_subdomains:
            value += "; includeSubDomains"
        if sec.sts_preload:
            value += "; preload"
        add.append(("Strict-Transport-Security", value))
    if sec.custom_frame_options_value:
        add.append(("X-Frame-Options", sec.custom_frame_options_value))
    elif sec.frame_deny:
        add.append(("X-Frame-Options", "DENY"))
    if sec.content_type_nosniff:
        add.append(("X-Content-Type-Options", "nosniff"))
    if sec.custom_browser_xss_value:
        add.append(("X-XSS-Protection", sec.custom_browser_xss_value))
    elif sec.browser_xss_filter:
        add.append(("X-XSS-Protection", "1; mode=block"))
    if sec.public_key and ssl and not sec.is_development:
        add.append(("Public-Key-Pins", sec.public_key))
    if sec.content_security_policy:
        add.append(("Content-Security-Policy", sec.content_security_policy))
    if sec.content_security_policy_report_only:
        add.append(("Content-Security-Policy-Report-Only", sec.content_security_policy_report_only))
    if sec.referrer_policy:
        add.append(("Referrer-Policy", sec.referrer_policy))
    if sec.permissions_policy:
        add.append(("Permissions-Policy", sec.permissions_policy))
    for name, value in add:
        response = set_header(response, name, value)
    return response
