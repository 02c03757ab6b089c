"""The gateway's configuration: Traefik v3 dynamic configuration (`http:`) plus our `shadow:` section.

`load_config(path)` / `parse_config(text)` return an immutable `GatewayConfig` or raise one
`shadow.errors.ConfigError` naming file, line and dotted field, e.g.::

    gw.yaml:14: http.routers.orders.rule: unexpected ')' at column 23

The `http:` keys and defaults are Traefik's, so a Traefik file-provider file loads unchanged as long
as it uses what the gateway supports (routers; loadBalancer, weighted, failover and mirroring
services; the middlewares listed in docs/gateway.md, Traefik's own kinds parsed in
shadow/gateway/middlewares/config.py). Traefik features the gateway does not implement yet are rejected
with "not supported yet" rather than silently ignored. A top-level `entryPoints:` section (Traefik's
static configuration, shadow/gateway/entrypoints.py) says whose forwarded headers are trusted; a
router's `entryPoints` must name its entries. A `hub:` section (shadow/multicluster/settings.py) makes
the gateway a multi-cluster child (uplink entry points and uplinks: generated entry points, routers
and stripPrefix middlewares) or parent (`name@multicluster` services, `build_config(generated=)`). `observability` on routers is accepted and ignored.
Chains are expanded in routers' middleware lists at load time. Option names are case-insensitive, as
in Traefik (`loadbalancer` is `loadBalancer`); names of routers, services and middlewares are not.
Equal router priorities are ordered by router name (Traefik leaves them unordered).

The `shadow:` section (camelCase like Traefik; every key optional)::

    shadow:
      gateway:
        id: gw-1                               # instance id written to the `gateway` column
        workers: 2                             # processes of `shadow gateway` (default: one per core)
        streamLargerThan: 8388608              # answers longer (or of unknown length) are streamed to
                                               # the client, the capture keeps maxBodyBytes (-1: never)
      capture:
        dir: ./capture                         # relative to the config file's folder
        enabled: true
        maxBodyBytes: 1048576                  # longer bodies are cut, row flagged `truncated`
        segmentRows: 100000                    # seal a Parquet segment after this many rows...
        segmentSeconds: 60                     # ...or this long (number of seconds or "60s", "1m")
        maxQueue: 20000                        # rows waiting for the writer; beyond it rows are shed
        upload: s3://bucket/prefix             # sealed segments uploaded there (docs/scale-out.md)
      redaction:
        mode: hash                             # hash | remove
        keyEnv: SHADOW_REDACTION_KEY           # env var holding the HMAC key (must be set if named)
        keyFile: ~/.config/shadow/redaction.key # else $SHADOW_REDACTION_KEY_FILE, else this default
        names: [member_no]                     # secret names added to the defaults (docs/capture.md)
        allow: [nextPageToken]                 # names the defaults match but are stored in clear
        defaults: true                         # false: only Authorization/Cookie and what is listed
        headers: [X-Internal-Sig]              # added to Authorization, Cookie, Set-Cookie...
        jsonFields: [/card/number]             # bare name: any depth; "/a/b": JSON pointer
        queryParams: [q_sess]                  # redacted in the query, path and url columns
      mirroring:
        timeout: 5s                            # a slower mirror call is abandoned, captured as error
        maxInFlight: 256                       # mirror calls beyond this are shed and counted
        maxBytesInFlight: 268435456            # body bytes the copies in flight may hold (request +
                                               # response read limit = capture.maxBodyBytes); beyond: shed
        targets:                               # by the name of a service used as a mirror
          orders-next: {role: candidate, allowUnsafe: false}
          monolith-b: {role: secondary}
        resend:                                # zero-config noise evidence (on by default): a share of
          enabled: true                        # the GET/HEAD requests mirrored to a candidate is sent to
          percent: 5                           # the primary again, captured as role=secondary; never
          perEndpoint: 50                      # when the mirroring has a secondary; at most perEndpoint
          window: 1m                           # re-sends per endpoint per window
      endpoints: ["/api/orders/{id}"]          # explicit endpoint templates for the analyzers
      analysis: {...}                          # kept raw here; the analyzers validate it
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any
from urllib.parse import urlsplit

from shadow.ai.config import AI_MIDDLEWARES, AiMiddleware, parse_ai_middleware
from shadow.auth.config import parse_jwt_middleware, parse_oidc_middleware
from shadow.auth.jwt import JwtSettings
from shadow.auth.oidc import OidcSettings
from shadow.capture.settings import DEFAULT_REDACTED_HEADERS, CaptureSettings, RedactionSettings
from shadow.errors import CaptureError, ConfigError
from shadow.gateway.breaker import BreakerSettings, ExpressionError, parse_expression
from shadow.gateway.entrypoints import EntryPoint, parse_entry_points, parse_tls_section
from shadow.gateway.middlewares.chain import Chain
from shadow.gateway.middlewares.config import HEADERS_OPTIONS, TraefikMiddleware, parse_headers_options
from shadow.gateway.middlewares.config import PARSERS as MIDDLEWARE_PARSERS
from shadow.gateway.middlewares.errorpage import ErrorPage
from shadow.gateway.middlewares.headers import Cors, Security
from shadow.gateway.middlewares.httproute import HTTPRouteMiddleware
from shadow.gateway.mirror import MirroringSettings, MirrorTargetSettings, ResendSettings
from shadow.gateway.rules import Rule, RuleSyntaxError, compile_rule
from shadow.gateway.tls import TlsSettings, parse_tls
from shadow.gateway.traffic import SplitSettings, StickyCookie, default_cookie_name
from shadow.gateway.transport import UpstreamTls
from shadow.mcp.config import McpSettings, parse_mcp_middleware
from shadow.multicluster.settings import UPLINK_PREFIX, HubSettings, parse_hub
from shadow.telemetry.tracing import TelemetrySettings, parse_telemetry
from shadow.yamlconfig import (
    HEADER_NAME,
    MAX_CHAIN_MIDDLEWARES,
    MAX_NESTING,
    YamlReader,
    did_you_mean,
    load_yaml,
    plain,
    read_yaml_file,
    value_kind,
)

__all__ = [
    "LOAD_BALANCER_STRATEGIES",
    "AddPrefix",
    "CaptureSettings",
    "CircuitBreakerMiddleware",
    "FailoverService",
    "GatewayConfig",
    "HeadersMiddleware",
    "HealthCheck",
    "LoadBalancerService",
    "Middleware",
    "MirrorSpec",
    "MirroringService",
    "MirroringSettings",
    "PassiveHealthCheck",
    "RedactionSettings",
    "Router",
    "Server",
    "Service",
    "ShadowSection",
    "SplitSettings",
    "StripPrefix",
    "WeightedChild",
    "WeightedService",
    "build_config",
    "load_config",
    "parse_config",
    "server_from_url",
]


# --------------------------------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Router:
    name: str
    rule: Rule
    priority: int  # defaults to len(rule text), like Traefik
    service: str  # "" for a parent router (multi-layer routing: middlewares only)
    middlewares: tuple[str, ...] = ()
    parent_refs: tuple[str, ...] = ()  # a child router: matched after these parents' middlewares ran
    entry_points: tuple[str, ...] = ()  # Traefik's router.entryPoints (empty: every entry point)
    tls: bool = False  # router.tls: serves TLS requests only (and the others serve plain ones only)
    tls_options: str = ""  # router.tls.options ("": its entry points', else "default")


@dataclass(frozen=True)
class Server:
    url: str  # normalised: lower-case scheme and host, no trailing slash
    scheme: str  # http | https
    host: str
    port: int  # explicit or the scheme's default
    path: str = ""  # path part of the URL without trailing slash ("" if none)
    weight: int = 1
    # Traefik v3: the URL's path is prepended to the request path only with preservePath: true.
    preserve_path: bool = False
    transport: UpstreamTls | None = None  # the gateway's TLS to this server (CAs, client certificate)


@dataclass(frozen=True)
class HealthCheck:
    """Traefik's active health check (`loadBalancer.healthCheck`), defaults included."""

    path: str
    scheme: str | None = None  # None: the server's
    port: int | None = None  # None: the server's
    hostname: str | None = None  # Host header of the probe
    headers: tuple[tuple[str, str], ...] = ()
    method: str = "GET"
    status: int = 0  # 0: 200-399 is healthy; else exactly this code
    interval_s: float = 30.0
    unhealthy_interval_s: float = 30.0  # defaults to interval
    timeout_s: float = 5.0
    follow_redirects: bool = True


@dataclass(frozen=True)
class PassiveHealthCheck:
    failure_window_s: float = 10.0
    max_failed_attempts: int = 1


# Traefik v3's loadBalancer.strategy values: weighted round-robin, power of two random choices (fewer
# requests in flight), highest random weight, least time (mean time to first byte × load / weight).
LOAD_BALANCER_STRATEGIES = ("wrr", "p2c", "hrw", "leasttime")


@dataclass(frozen=True)
class LoadBalancerService:
    name: str
    servers: tuple[Server, ...]
    pass_host_header: bool = True
    strategy: str = "wrr"  # one of LOAD_BALANCER_STRATEGIES
    sticky: StickyCookie | None = None
    health_check: HealthCheck | None = None
    passive_health_check: PassiveHealthCheck | None = None
    # Gateway API manifests only (a Traefik file needs servers): no servers → answer this status
    # locally (500 for a backendRef that does not resolve, as the Gateway API spec says).
    empty_status: int = 503
    # Gateway API backendRef filters (RequestHeaderModifier): applied to the requests sent to this
    # service, after the route's middlewares.
    request_headers: tuple[HeadersMiddleware, ...] = ()


@dataclass(frozen=True)
class WeightedChild:
    name: str
    weight: int = 1


@dataclass(frozen=True)
class WeightedService:
    """`weighted` (WRR over services) or, with hrw=True, `highestRandomWeight`."""

    name: str
    services: tuple[WeightedChild, ...]
    sticky: StickyCookie | None = None
    health_check: bool = False  # `healthCheck: {}`: skip unhealthy children
    hrw: bool = False


@dataclass(frozen=True)
class FailoverService:
    name: str
    service: str
    fallback: str
    health_check: bool = False
    error_status: tuple[tuple[int, int], ...] = ()  # inclusive ranges: answers re-sent to the fallback
    max_request_body_bytes: int = -1  # -1: unlimited; a larger body with error_status set → 413


@dataclass(frozen=True)
class MirrorSpec:
    name: str  # the service the copies go to
    percent: int  # 0..100 (a Traefik file), or the numerator of a Gateway API fraction
    denominator: int = 100  # copies = percent / denominator of the requests


@dataclass(frozen=True)
class MirroringService:
    name: str
    service: str  # the main service, whose answer the client gets
    mirrors: tuple[MirrorSpec, ...]
    mirror_body: bool = True
    max_body_size: int = -1  # -1: unlimited; a larger body → that request is not mirrored


Service = LoadBalancerService | MirroringService | WeightedService | FailoverService


@dataclass(frozen=True)
class StripPrefix:
    name: str
    prefixes: tuple[str, ...]


@dataclass(frozen=True)
class AddPrefix:
    name: str
    prefix: str


@dataclass(frozen=True)
class HeadersMiddleware:
    name: str
    # (name, value) in file order; an empty value removes the header
    request_headers: tuple[tuple[str, str], ...] = ()
    response_headers: tuple[tuple[str, str], ...] = ()
    cors: Cors | None = None  # the accessControl* options (shadow/gateway/middlewares/headers.py)
    security: Security | None = None  # allowedHosts, sts*, frameDeny, CSP… (unrolled/secure's)
    # Gateway API header modifiers' `add`: appended as one more line after the sets and removals
    request_add: tuple[tuple[str, str], ...] = ()
    response_add: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class CircuitBreakerMiddleware:
    name: str
    settings: BreakerSettings


Middleware = (StripPrefix | AddPrefix | HeadersMiddleware | CircuitBreakerMiddleware | JwtSettings | OidcSettings
              | TraefikMiddleware | AiMiddleware | HTTPRouteMiddleware | McpSettings)


STREAM_LARGER_THAN = 8 * 1024 * 1024


@dataclass(frozen=True)
class ShadowSection:
    capture: CaptureSettings = field(default_factory=CaptureSettings)
    mirroring: MirroringSettings = field(default_factory=MirroringSettings)
    gateway_id: str | None = None
    workers: int | None = None  # shadow.gateway.workers: processes `shadow gateway` runs (None: one per core)
    endpoints: tuple[str, ...] = ()
    analysis: Mapping[str, Any] = field(default_factory=dict)
    telemetry: TelemetrySettings = field(default_factory=TelemetrySettings)
    split: SplitSettings = field(default_factory=SplitSettings)
    identity_client_key_claim: str | None = None  # shadow.identity.clientKeyClaim: the capture's client_key
    identity_hash_client_key: bool = True  # shadow.identity.hashClientKey: keyed hash (redaction.mode hash)
    # shadow.gateway.streamLargerThan: an upstream answer longer than this (or of unknown length)
    # goes to the client as it arrives instead of being held whole; the capture keeps its prefix.
    stream_larger_than: int = STREAM_LARGER_THAN


@dataclass(frozen=True)
class GatewayConfig:
    routers: tuple[Router, ...]  # priority descending, ties by router name (see _router_order)
    services: Mapping[str, Service]
    middlewares: Mapping[str, Middleware]
    shadow: ShadowSection
    source: str
    # Traefik's static `entryPoints` (here in the same file): who may send forwarded headers.
    entry_points: Mapping[str, EntryPoint] = field(default_factory=lambda: MappingProxyType({}))
    tls: TlsSettings = field(default_factory=TlsSettings)  # the `tls:` section: certificates served
    hub: HubSettings = field(default_factory=HubSettings)  # the `hub:` section: multi-cluster bridge

    def mirror_count(self) -> int:
        return sum(len(s.mirrors) for s in self.services.values() if isinstance(s, MirroringService))

    def summary(self) -> str:
        return (f"{len(self.routers)} routers, {len(self.services)} services, "
                f"{len(self.middlewares)} middlewares, {self.mirror_count()} mirrors")


def _router_order(router: Router) -> tuple[int, str]:
    # Traefik sorts by priority only (Go's unstable sort over a map, so equal priorities come in no
    # defined order). We break ties by router name so routing never depends on the file's order.
    return (-router.priority, router.name)


# --------------------------------------------------------------------------------------------------
# http: section
# --------------------------------------------------------------------------------------------------

_ROUTER_KEYS = ("rule", "service", "priority", "middlewares", "entryPoints", "ruleSyntax", "observability", "tls",
                "parentRefs")
_ROUTER_UNSUPPORTED: tuple[str, ...] = ()
_TRAEFIK_MIDDLEWARES = (
    "addPrefix", "basicAuth", "buffering", "chain", "circuitBreaker", "compress", "contentType",
    "digestAuth", "encodedCharacters", "errors", "forwardAuth", "grpcWeb", "headers", "inFlightReq",
    "ipAllowList", "ipWhiteList", "passTLSClientCert", "plugin", "rateLimit", "redirectRegex",
    "redirectScheme", "replacePath", "replacePathRegex", "retry", "stripPrefix", "stripPrefixRegex",
)
_SUPPORTED_MIDDLEWARES = ("stripPrefix", "addPrefix", "headers", "circuitBreaker")
# Kept in Traefik v3's struct but deprecated there (use redirectScheme; featurePolicy became
# permissionsPolicy): refused rather than silently ignored.
_HEADERS_UNSUPPORTED = ("featurePolicy", "sslRedirect", "sslTemporaryRedirect", "sslHost", "sslForceHost")


MULTICLUSTER_SUFFIX = "@multicluster"


def _multicluster_refs(node: Any) -> set[str]:
    """Every string of the tree (keys included) naming a multi-cluster service."""
    if isinstance(node, dict):
        return {str(k) for k in node if str(k).endswith(MULTICLUSTER_SUFFIX)}.union(
            *(_multicluster_refs(v) for v in node.values()))
    if isinstance(node, list):
        return set().union(*(_multicluster_refs(v) for v in node))
    return {node} if isinstance(node, str) and node.endswith(MULTICLUSTER_SUFFIX) else set()


def _uplink_routes(reader: YamlReader, root: dict[Any, Any], hub: HubSettings, routers: list[Router],
                   services: Mapping[str, Service], middlewares: dict[str, Middleware],
                   entry_points: dict[str, EntryPoint], tls: TlsSettings) -> list[Router]:
    """A child's side of the bridge: its uplink entry points become TLS entry points that only routers
    naming them serve, each with its mutual-TLS options; each uplink a router on them for the paths
    the parent sends it under (`/.hub/uplink/NAME/...`, prefix stripped) to the service it exposes."""
    if not hub.uplink_entry_points and not hub.uplinks:
        return []
    options = {o.name: o for o in tls.options}
    for ep in hub.uplink_entry_points:
        where = f"hub.uplinkEntryPoints.{ep.name}"
        line = _ref_line(reader, root, ["hub", "uplinkEntryPoints", ep.name])
        if ep.name in entry_points:
            reader.fail(f"entry point {ep.name!r} is also defined in entryPoints", where, line)
        opt = options.get(ep.tls_options)
        if opt is None or opt.client_auth_type != "RequireAndVerifyClientCert":
            reader.fail(f"tls options {ep.tls_options!r} must be defined in tls.options with clientAuth "
                        "(caFiles; RequireAndVerifyClientCert): only the parent may call an uplink entry point",
                        f"{where}.tls.options", _ref_line(reader, root, ["hub", "uplinkEntryPoints", ep.name, "tls"]))
        if not tls.enabled:
            reader.fail("an uplink entry point needs a certificate to serve (tls.certificates or the default "
                        "store's)", where, line)
        text = ep.address.split("/", 1)[0]
        port = text.rpartition(":")[2]
        if not port.isdigit() or not 0 < int(port) < 65536:
            reader.fail(f"address {ep.address!r} is not [host]:port", f"{where}.address",
                        _ref_line(reader, root, ["hub", "uplinkEntryPoints", ep.name, "address"]))
        entry_points[ep.name] = EntryPoint(ep.name, ep.address, int(port), tls=True, tls_options=ep.tls_options,
                                           uplink=True)
    out: list[Router] = []
    by_name = {r.name: r for r in routers}
    all_eps = tuple(ep.name for ep in hub.uplink_entry_points)
    for up in hub.uplinks:
        where = f"hub.uplinks.{up.name}"
        mws: tuple[str, ...] = ()
        service = up.service
        if up.router:
            exposed = by_name.get(up.router)
            if exposed is None or not exposed.service:
                reader.fail(f"no router with a service named {up.router!r}{did_you_mean(up.router, by_name)}",
                            f"{where}.router", _ref_line(reader, root, ["hub", "uplinks", up.name, "router"]))
            service, mws = exposed.service, exposed.middlewares
        elif service not in services:
            reader.fail(f"no service named {service!r}{did_you_mean(service, services)}", f"{where}.service",
                        _ref_line(reader, root, ["hub", "uplinks", up.name, "service"]))
        prefix = UPLINK_PREFIX + up.name
        strip = f"hub-uplink-{up.name}-prefix"
        middlewares[strip] = StripPrefix(strip, (prefix,))
        rule = f"Path(`{prefix}`) || PathPrefix(`{prefix}/`)"
        out.append(Router(f"hub-uplink-{up.name}", compile_rule(rule), _MAX_USER_PRIORITY + 1, service,
                          (strip, *mws), entry_points=up.entry_points or all_eps, tls=True))
    return out


def _local_name(reader: YamlReader, ref: str, field: str, line: int | None) -> str:
    """`name@file` → `name` (this file is the one provider); `name@multicluster` stays as it is (the
    multi-cluster provider's uplink services, hub.multiCluster); another provider is an error."""
    if ref.endswith(MULTICLUSTER_SUFFIX):
        return ref
    if "@" in ref:
        name, _, provider = ref.partition("@")
        if provider != "file":
            reader.fail(f"{ref!r} names provider {provider!r}; only this file (@file) is available",
                        field, line)
        return name
    return ref


_URL_HOST = re.compile(r"^(?:[a-z0-9_-]+(?:\.[a-z0-9_-]+)*\.?|[0-9a-f:.]+)$")


def _parse_url(reader: YamlReader, text: str, field: str, line: int | None) -> tuple[str, str, str, int, str]:
    try:
        parts = urlsplit(text.strip())
        port = parts.port
    except ValueError as exc:
        reader.fail(f"bad URL {text!r}: {exc}", field, line)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        reader.fail(f"bad URL {text!r}: scheme must be http or https", field, line)
    host = (parts.hostname or "").lower()
    if not host:
        reader.fail(f"bad URL {text!r}: no host", field, line)
    if not _URL_HOST.match(host):
        reader.fail(f"bad URL {text!r}: {host!r} is not a host name or IP address", field, line)
    if parts.username is not None or parts.password is not None:
        reader.fail(f"bad URL {text!r}: credentials in server URLs are not supported", field, line)
    if parts.query or parts.fragment or text.rstrip().endswith(("?", "#")):
        reader.fail(f"bad URL {text!r}: a server URL has no query or fragment", field, line)
    if port is None:
        port = 443 if scheme == "https" else 80
    if port == 0:
        reader.fail(f"bad URL {text!r}: port 0", field, line)
    path = parts.path.rstrip("/")
    netloc_host = f"[{host}]" if ":" in host else host
    default_port = 443 if scheme == "https" else 80
    netloc = netloc_host if port == default_port else f"{netloc_host}:{port}"
    return f"{scheme}://{netloc}{path}", scheme, host, port, path


def server_from_url(url: str) -> Server:
    """A server from a URL checked like `loadBalancer.servers[].url` (ValueError says what is wrong)."""
    try:
        normalised, scheme, host, port, path = _parse_url(YamlReader("<url>"), url, "url", None)
    except ConfigError as exc:
        raise ValueError(exc.reason) from None
    return Server(normalised, scheme, host, port, path)


def _parse_load_balancer(reader: YamlReader, name: str, node: Any, field: str,
                         line: int | None) -> LoadBalancerService:
    lb = reader.mapping(node, field, line, allow_null=False)
    reader.check_keys(lb, field, ("servers", "passHostHeader", "strategy", "sticky", "healthCheck",
                                  "passiveHealthCheck"),
                      unsupported=("serversTransport", "responseForwarding"))
    servers_node = reader.sequence(lb, "servers", field)
    if not servers_node:
        reader.fail("a loadBalancer needs at least one server", f"{field}.servers",
                    reader.value_line(lb, "servers") if "servers" in lb else line)
    servers: list[Server] = []
    for i, item in enumerate(servers_node):
        where = f"{field}.servers[{i}]"
        item_line = reader.item_line(servers_node, i)
        srv = reader.mapping(item, where, item_line, allow_null=False)
        reader.check_keys(srv, where, ("url", "weight", "preservePath"))
        url = reader.required_string(srv, "url", where)
        normalised, scheme, host, port, path = _parse_url(reader, url, f"{where}.url",
                                                          reader.value_line(srv, "url"))
        weight = reader.integer(srv, "weight", where, 1, minimum=0)
        preserve = reader.boolean(srv, "preservePath", where, False)
        servers.append(Server(normalised, scheme, host, port, path, weight, preserve))
    if not any(s.weight > 0 for s in servers):
        reader.fail("every server has weight 0: nothing could serve", f"{field}.servers",
                    reader.value_line(lb, "servers"))
    strategy = (reader.string(lb, "strategy", field, default="wrr") or "wrr").lower()
    if strategy not in LOAD_BALANCER_STRATEGIES:
        reader.fail(f"strategy {strategy!r}: must be one of {', '.join(LOAD_BALANCER_STRATEGIES)}",
                    f"{field}.strategy", reader.value_line(lb, "strategy"))
    return LoadBalancerService(
        name, tuple(servers), reader.boolean(lb, "passHostHeader", field, True), strategy=strategy,
        sticky=_parse_sticky(reader, name, lb, field),
        health_check=_parse_health_check(reader, lb, field),
        passive_health_check=_parse_passive_health_check(reader, lb, field))


def _parse_sticky(reader: YamlReader, service: str, node: dict[Any, Any], field: str) -> StickyCookie | None:
    if "sticky" not in node:
        return None
    where = f"{field}.sticky"
    sticky = reader.mapping(node["sticky"], where, reader.value_line(node, "sticky"))
    reader.check_keys(sticky, where, ("cookie",))
    if "cookie" not in sticky:
        return None
    where = f"{where}.cookie"
    c = reader.mapping(sticky["cookie"], where, reader.value_line(sticky, "cookie"))
    reader.check_keys(c, where, ("name", "secure", "httpOnly", "sameSite", "maxAge", "expires", "path",
                                       "domain"))
    same_site = (reader.string(c, "sameSite", where, default="", allow_empty=True) or "").lower()
    if same_site not in ("", "none", "lax", "strict"):
        same_site = ""  # Traefik omits SameSite for any other value
    return StickyCookie(
        name=reader.string(c, "name", where) or default_cookie_name(service),
        secure=reader.boolean(c, "secure", where, False),
        http_only=reader.boolean(c, "httpOnly", where, False),
        same_site=same_site,
        max_age=reader.integer(c, "maxAge", where, 0),
        path=reader.string(c, "path", where, default="/") or "/",
        domain=reader.string(c, "domain", where, default="", allow_empty=True) or "",
        expires_s=max(0, reader.integer(c, "expires", where, 0)),  # Traefik ignores a non-positive one
    )


def _parse_health_check(reader: YamlReader, node: dict[Any, Any], field: str) -> HealthCheck | None:
    if "healthCheck" not in node:
        return None
    where = f"{field}.healthCheck"
    line = reader.value_line(node, "healthCheck")
    hc = reader.mapping(node["healthCheck"], where, line)
    reader.check_keys(hc, where, ("path", "scheme", "port", "hostname", "headers", "method", "status",
                                  "interval", "unhealthyInterval", "timeout", "followRedirects", "mode"))
    path = reader.required_string(hc, "path", where)
    if not path.startswith("/"):
        reader.fail(f"path {path!r} must be relative to the server and start with '/'", f"{where}.path",
                    reader.value_line(hc, "path"))
    mode = reader.string(hc, "mode", where, default="http")
    if mode != "http":
        reader.fail(f"mode {mode!r} is not supported yet (http)", f"{where}.mode", reader.value_line(hc, "mode"))
    scheme = reader.string(hc, "scheme", where)
    if scheme is not None and scheme.lower() not in ("http", "https"):
        reader.fail(f"scheme must be http or https, got {scheme!r}", f"{where}.scheme",
                    reader.value_line(hc, "scheme"))
    port = reader.integer(hc, "port", where, 0, minimum=0, maximum=65535)
    interval = reader.duration(hc, "interval", where, 30.0)
    timeout = reader.duration(hc, "timeout", where, 5.0)
    for key, value in (("interval", interval), ("timeout", timeout)):
        if value <= 0:
            reader.fail("must be positive", f"{where}.{key}", reader.value_line(hc, key))
    unhealthy = reader.duration(hc, "unhealthyInterval", where, interval)
    if unhealthy <= 0:
        unhealthy = interval
    method = (reader.string(hc, "method", where, default="GET") or "GET").upper()
    return HealthCheck(
        path=path, scheme=scheme.lower() if scheme else None, port=port or None,
        hostname=reader.string(hc, "hostname", where), headers=_header_pairs(reader, hc, "headers", where),
        method=method, status=reader.integer(hc, "status", where, 0, minimum=0, maximum=599),
        interval_s=interval, unhealthy_interval_s=unhealthy, timeout_s=timeout,
        follow_redirects=reader.boolean(hc, "followRedirects", where, True))


def _parse_passive_health_check(reader: YamlReader, node: dict[Any, Any], field: str) -> PassiveHealthCheck | None:
    if "passiveHealthCheck" not in node:
        return None
    where = f"{field}.passiveHealthCheck"
    p = reader.mapping(node["passiveHealthCheck"], where, reader.value_line(node, "passiveHealthCheck"))
    reader.check_keys(p, where, ("failureWindow", "maxFailedAttempts"))
    window = reader.duration(p, "failureWindow", where, 10.0)
    if window <= 0:
        reader.fail("must be positive", f"{where}.failureWindow", reader.value_line(p, "failureWindow"))
    return PassiveHealthCheck(window, reader.integer(p, "maxFailedAttempts", where, 1, minimum=1))


def _empty_health_check(reader: YamlReader, node: dict[Any, Any], field: str) -> bool:
    """A parent service's `healthCheck: {}` (its only form): react to the children's health."""
    if "healthCheck" not in node:
        return False
    where = f"{field}.healthCheck"
    hc = reader.mapping(node["healthCheck"], where, reader.value_line(node, "healthCheck"))
    reader.check_keys(hc, where, ())
    return True


def _named_entries(reader: YamlReader, parent: Any, key: str, field: str, value_key: str,
                   what: str) -> list[tuple[str, Any, str]]:
    """The `key:` list of `{name, <value_key>}` entries under `parent` (weighted children, mirrors):
    each entry's service name (a local name, listed once), its mapping and its field path, in order."""
    items = reader.sequence(parent, key, field)
    entries: list[tuple[str, Any, str]] = []
    seen: set[str] = set()
    for i, item in enumerate(items):
        where = f"{field}.{key}[{i}]"
        spec = reader.mapping(item, where, reader.item_line(items, i), allow_null=False)
        reader.check_keys(spec, where, ("name", value_key))
        name_line = reader.value_line(spec, "name")
        entry = _local_name(reader, reader.required_string(spec, "name", where), f"{where}.name", name_line)
        if entry in seen:
            reader.fail(f"{what} {entry!r} is listed twice", f"{where}.name", name_line)
        seen.add(entry)
        entries.append((entry, spec, where))
    return entries


def _parse_weighted(reader: YamlReader, name: str, node: Any, field: str, line: int | None, *,
                    hrw: bool) -> WeightedService:
    w = reader.mapping(node, field, line, allow_null=False)
    reader.check_keys(w, field, ("services", "healthCheck") if hrw else ("services", "sticky", "healthCheck"))
    entries = _named_entries(reader, w, "services", field, "weight", "service")
    if not entries:
        reader.fail("needs at least one service", f"{field}.services",
                    reader.value_line(w, "services") if "services" in w else line)
    # Traefik: weight ≤ 0 removes the child (kept here for the file's record, skipped by the pick).
    children = tuple(WeightedChild(child, reader.integer(spec, "weight", where, 1)) for child, spec, where in entries)
    return WeightedService(name, children, sticky=None if hrw else _parse_sticky(reader, name, w, field),
                           health_check=_empty_health_check(reader, w, field), hrw=hrw)


_STATUS_RANGE = re.compile(r"^\s*(\d{3})\s*(?:-\s*(\d{3})\s*)?$")


def _parse_failover(reader: YamlReader, name: str, node: Any, field: str, line: int | None) -> FailoverService:
    f = reader.mapping(node, field, line, allow_null=False)
    reader.check_keys(f, field, ("service", "fallback", "healthCheck", "errors"))
    service = _local_name(reader, reader.required_string(f, "service", field), f"{field}.service",
                          reader.value_line(f, "service"))
    fallback = _local_name(reader, reader.required_string(f, "fallback", field), f"{field}.fallback",
                           reader.value_line(f, "fallback"))
    ranges: list[tuple[int, int]] = []
    max_body = -1
    if "errors" in f:
        where = f"{field}.errors"
        e = reader.mapping(f["errors"], where, reader.value_line(f, "errors"))
        reader.check_keys(e, where, ("status", "maxRequestBodyBytes"))
        items = reader.sequence(e, "status", where)
        for i, text in enumerate(reader.string_list(e, "status", where)):
            m = _STATUS_RANGE.match(text)
            lo, hi = (int(m.group(1)), int(m.group(2) or m.group(1))) if m else (0, -1)
            if not m or not 100 <= lo <= hi <= 599:
                reader.fail(f"bad status range {text!r} (expected like 500 or 500-504)", f"{where}.status[{i}]",
                            reader.item_line(items, i))
            ranges.append((lo, hi))
        max_body = reader.integer(e, "maxRequestBodyBytes", where, -1, minimum=-1)
    return FailoverService(name, service, fallback, health_check=_empty_health_check(reader, f, field),
                           error_status=tuple(ranges), max_request_body_bytes=max_body)


def _parse_mirroring(reader: YamlReader, name: str, node: Any, field: str, line: int | None) -> MirroringService:
    m = reader.mapping(node, field, line, allow_null=False)
    reader.check_keys(m, field, ("service", "mirrors", "mirrorBody", "maxBodySize"),
                      unsupported=("healthCheck",))
    service = reader.required_string(m, "service", field)
    service = _local_name(reader, service, f"{field}.service", reader.value_line(m, "service"))
    mirrors = [MirrorSpec(mirror, reader.integer(spec, "percent", where, 0, minimum=0, maximum=100))
               for mirror, spec, where in _named_entries(reader, m, "mirrors", field, "percent", "mirror")]
    return MirroringService(
        name, service, tuple(mirrors),
        mirror_body=reader.boolean(m, "mirrorBody", field, True),
        max_body_size=reader.integer(m, "maxBodySize", field, -1, minimum=-1),
    )


def _parse_service(reader: YamlReader, name: str, node: Any, field: str, line: int | None) -> Service:
    svc = reader.mapping(node, field, line, allow_null=False)
    all_kinds = ("loadBalancer", "mirroring", "weighted", "failover", "highestRandomWeight")
    reader.check_keys(svc, field, all_kinds)
    kinds = [k for k in all_kinds if k in svc]
    if not kinds:
        reader.fail(f"a service needs one of {', '.join(all_kinds)}", field, line)
    if len(kinds) > 1:
        reader.fail(f"a service has exactly one kind, found {' and '.join(kinds)}", field, line)
    kind = kinds[0]
    sub_field, sub_line = f"{field}.{kind}", reader.value_line(svc, kind)
    if kind == "loadBalancer":
        return _parse_load_balancer(reader, name, svc[kind], sub_field, sub_line)
    if kind in ("weighted", "highestRandomWeight"):
        return _parse_weighted(reader, name, svc[kind], sub_field, sub_line, hrw=kind != "weighted")
    if kind == "failover":
        return _parse_failover(reader, name, svc[kind], sub_field, sub_line)
    return _parse_mirroring(reader, name, svc[kind], sub_field, sub_line)





def _header_pairs(reader: YamlReader, node: dict[Any, Any], key: str, field: str) -> tuple[tuple[str, str], ...]:
    where = f"{field}.{key}"
    headers = reader.mapping(node.get(key), where, reader.value_line(node, key))
    pairs: list[tuple[str, str]] = []
    for name in headers:
        if not isinstance(name, str) or not HEADER_NAME.match(name):
            reader.fail(f"bad header name {name!r}", f"{where}.{name}", reader.key_line(headers, name))
        value = reader.string(headers, name, where, default="", allow_empty=True)
        pairs.append((name, value or ""))
    return tuple(pairs)


def _parse_middleware(reader: YamlReader, name: str, node: Any, field: str, line: int | None,
                      base_dir: Path) -> Middleware:
    mw = reader.mapping(node, field, line, allow_null=False)
    if len(mw) != 1:
        reader.fail(f"a middleware has exactly one type, found {len(mw)}", field, line)
    reader.canonicalize_keys(mw, field, (*_TRAEFIK_MIDDLEWARES, "jwt", "oidc", "mcp", *AI_MIDDLEWARES))
    kind = next(iter(mw))
    where, kind_line = f"{field}.{kind}", reader.key_line(mw, kind)
    if kind == "jwt":  # Traefik Hub's JWT middleware: options parsed in shadow/auth/config.py
        return parse_jwt_middleware(reader, name, reader.mapping(mw[kind], where, reader.value_line(mw, kind)), where)
    if kind == "oidc":  # browser sessions (authorization code + PKCE): shadow/auth/config.py
        return parse_oidc_middleware(reader, name, reader.mapping(mw[kind], where, reader.value_line(mw, kind)), where)
    if kind == "passTLSClientCert":
        reader.fail("not supported by the shadow gateway: it terminates no TLS client certificates to pass on",
                    where, kind_line)
    if kind == "grpcWeb":
        reader.fail("not supported by the shadow gateway: gRPC-Web needs HTTP/2 trailers translated into the "
                    "response body, which its buffered upstream path does not carry", where, kind_line)
    if kind == "plugin":
        reader.fail("not supported by the shadow gateway (Traefik plugins are Go or Wasm code run by Traefik)",
                    where, kind_line)
    if kind in MIDDLEWARE_PARSERS:  # shadow/gateway/middlewares/config.py
        return MIDDLEWARE_PARSERS[kind](reader, name, reader.mapping(mw[kind], where, reader.value_line(mw, kind)),
                                        where, base_dir)
    if kind == "mcp":  # the MCP gateway's middleware: shadow/mcp/config.py
        return parse_mcp_middleware(reader, name, reader.mapping(mw[kind], where, reader.value_line(mw, kind)), where)
    if kind in AI_MIDDLEWARES:  # the AI gateway's middlewares: shadow/ai/config.py
        return parse_ai_middleware(reader, kind, name, reader.mapping(mw[kind], where, reader.value_line(mw, kind)),
                                   where, base_dir)
    if kind not in _SUPPORTED_MIDDLEWARES:
        if kind in _TRAEFIK_MIDDLEWARES:
            reader.fail("middleware type not supported yet by the shadow gateway", where, kind_line)
        reader.fail(f"unknown middleware type{did_you_mean(str(kind), _TRAEFIK_MIDDLEWARES)}",
                    where, kind_line)
    body = reader.mapping(mw[kind], where, reader.value_line(mw, kind))
    if kind == "stripPrefix":
        reader.check_keys(body, where, ("prefixes", "forceSlash"))
        prefixes = reader.string_list(body, "prefixes", where)
        if not prefixes:
            reader.fail("needs at least one prefix", f"{where}.prefixes", kind_line)
        reader.boolean(body, "forceSlash", where, True)  # deprecated in Traefik; "" always becomes "/"
        return StripPrefix(name, prefixes)
    if kind == "circuitBreaker":
        return _parse_circuit_breaker(reader, name, body, where)
    if kind == "addPrefix":
        reader.check_keys(body, where, ("prefix",))
        prefix = reader.required_string(body, "prefix", where)
        if not prefix.startswith("/"):
            reader.fail(f"prefix {prefix!r} must start with '/'", f"{where}.prefix",
                        reader.value_line(body, "prefix"))
        return AddPrefix(name, prefix)
    reader.check_keys(body, where, ("customRequestHeaders", "customResponseHeaders", *HEADERS_OPTIONS),
                      unsupported=_HEADERS_UNSUPPORTED)
    cors, security = parse_headers_options(reader, body, where)
    return HeadersMiddleware(name, _header_pairs(reader, body, "customRequestHeaders", where),
                             _header_pairs(reader, body, "customResponseHeaders", where), cors, security)


def _parse_circuit_breaker(reader: YamlReader, name: str, body: dict[Any, Any], where: str) -> CircuitBreakerMiddleware:
    reader.check_keys(body, where, ("expression", "checkPeriod", "fallbackDuration", "recoveryDuration",
                                    "responseCode"))
    text = reader.required_string(body, "expression", where)
    try:
        expression = parse_expression(text)
    except ExpressionError as exc:
        reader.fail(f"{exc.message} at column {exc.column} of {text!r}", f"{where}.expression",
                    reader.value_line(body, "expression"))
    durations = {}
    for key, default in (("checkPeriod", 0.1), ("fallbackDuration", 10.0), ("recoveryDuration", 10.0)):
        durations[key] = reader.duration(body, key, where, default)
    if durations["checkPeriod"] <= 0:
        reader.fail("must be positive", f"{where}.checkPeriod", reader.value_line(body, "checkPeriod"))
    code = reader.integer(body, "responseCode", where, 503, minimum=100, maximum=599)
    return CircuitBreakerMiddleware(name, BreakerSettings(
        expression, check_period_s=durations["checkPeriod"], fallback_duration_s=durations["fallbackDuration"],
        recovery_duration_s=durations["recoveryDuration"], response_code=code))


_MAX_USER_PRIORITY = 2**63 - 1 - 1000  # Traefik keeps the priorities above this for its own routers


def _parse_router(reader: YamlReader, name: str, node: Any, field: str, line: int | None) -> Router:
    r = reader.mapping(node, field, line, allow_null=False)
    reader.check_keys(r, field, _ROUTER_KEYS, unsupported=_ROUTER_UNSUPPORTED)
    text = reader.required_string(r, "rule", field)
    rule_line = reader.value_line(r, "rule")
    try:
        rule = compile_rule(text)
    except RuleSyntaxError as exc:
        reader.fail(str(exc), f"{field}.rule", rule_line)
    syntax = reader.string(r, "ruleSyntax", field, default="v3")
    if syntax != "v3":
        reader.fail(f"only ruleSyntax v3 is supported, got {syntax!r}", f"{field}.ruleSyntax",
                    reader.value_line(r, "ruleSyntax"))
    entry_points = reader.string_list(r, "entryPoints", field)  # checked against entryPoints: with the references
    # A parent router (one that children name in parentRefs) has no service: checked with the references.
    service = reader.string(r, "service", field) or ""
    if service:
        service = _local_name(reader, service, f"{field}.service", reader.value_line(r, "service"))
    parent_items = reader.sequence(r, "parentRefs", field)
    parents = tuple(_local_name(reader, p, f"{field}.parentRefs[{i}]", reader.item_line(parent_items, i))
                    for i, p in enumerate(reader.string_list(r, "parentRefs", field)))
    middlewares = reader.string_list(r, "middlewares", field)
    mw_items = reader.sequence(r, "middlewares", field)
    middlewares = tuple(_local_name(reader, m, f"{field}.middlewares[{i}]", reader.item_line(mw_items, i))
                        for i, m in enumerate(middlewares))
    priority = reader.integer(r, "priority", field, 0, maximum=_MAX_USER_PRIORITY)
    if priority == 0:
        priority = len(text)
    tls, tls_options = parse_tls_section(reader, r, field)
    return Router(name, rule, priority, service, middlewares, parents, entry_points, tls, tls_options)


def _named_section(reader: YamlReader, parent: dict[Any, Any], key: str, field: str) -> list[tuple[str, Any, str, int | None]]:
    """Entries of `parent[key]` (a mapping name → definition) as (name, node, field, line)."""
    section = reader.mapping(parent.get(key), field, reader.value_line(parent, key))
    out = []
    for name in section:
        if not isinstance(name, str) or not name:
            reader.fail("names must be non-empty strings", field, reader.key_line(section, name))
        if "@" in name:
            reader.fail("'@' is not allowed in a name", f"{field}.{name}", reader.key_line(section, name))
        out.append((name, section[name], f"{field}.{name}", reader.key_line(section, name)))
    return out


# --------------------------------------------------------------------------------------------------
# Cross-references
# --------------------------------------------------------------------------------------------------

def _ref_line(reader: YamlReader, root: dict[Any, Any], path: list[Any]) -> int | None:
    node: Any = root
    line = None
    for step in path:
        try:
            line = reader.item_line(node, step) if isinstance(step, int) else reader.value_line(node, step)
            node = node[step]
        except (KeyError, IndexError, TypeError):
            break
    return line


def _check_references(reader: YamlReader, root: dict[Any, Any], routers: list[Router],
                      services: dict[str, Service], middlewares: dict[str, Middleware]) -> None:
    http_routers = ["http", "routers"]
    _check_parent_refs(reader, root, routers)
    for router in routers:
        field = f"http.routers.{router.name}"
        if not router.service:
            pass  # a parent router: _check_parent_refs made sure it has children
        elif router.service not in services:
            reader.fail(f"no service named {router.service!r}{did_you_mean(router.service, services)}",
                        f"{field}.service", _ref_line(reader, root, [*http_routers, router.name, "service"]))
        for i, mw in enumerate(router.middlewares):
            if mw not in middlewares:
                reader.fail(f"no middleware named {mw!r}{did_you_mean(mw, middlewares)}",
                            f"{field}.middlewares[{i}]",
                            _ref_line(reader, root, [*http_routers, router.name, "middlewares", i]))
    for svc in services.values():
        if not isinstance(svc, MirroringService):
            continue
        path = ["http", "services", svc.name, "mirroring"]
        field = f"http.services.{svc.name}.mirroring"
        if svc.service not in services:
            reader.fail(f"no service named {svc.service!r}{did_you_mean(svc.service, services)}",
                        f"{field}.service", _ref_line(reader, root, [*path, "service"]))
        for i, mirror in enumerate(svc.mirrors):
            if mirror.name not in services:
                reader.fail(f"no service named {mirror.name!r}{did_you_mean(mirror.name, services)}",
                            f"{field}.mirrors[{i}].name", _ref_line(reader, root, [*path, "mirrors", i, "name"]))
    for svc in services.values():
        if isinstance(svc, WeightedService | FailoverService):
            for ref, path, ref_field in _service_refs(svc):
                if ref not in services:
                    reader.fail(f"no service named {ref!r}{did_you_mean(ref, services)}", ref_field,
                                _ref_line(reader, root, path))
                if isinstance(services[ref], MirroringService):
                    reader.fail(f"{ref!r} is a mirroring service; mirroring inside weighted, "
                                "highestRandomWeight or failover is not supported yet", ref_field,
                                _ref_line(reader, root, path))
    _check_cycles(reader, root, services)
    for svc in services.values():
        if not isinstance(svc, MirroringService):
            continue
        path = ["http", "services", svc.name, "mirroring"]
        field = f"http.services.{svc.name}.mirroring"
        if not isinstance(services[svc.service], LoadBalancerService):
            reader.fail(f"main service {svc.service!r} is itself a mirroring service; "
                        "nested mirroring is not supported yet", f"{field}.service",
                        _ref_line(reader, root, [*path, "service"]))
        for i, mirror in enumerate(svc.mirrors):
            if not isinstance(services[mirror.name], LoadBalancerService):
                reader.fail(f"mirror {mirror.name!r} must be a loadBalancer service",
                            f"{field}.mirrors[{i}].name",
                            _ref_line(reader, root, [*path, "mirrors", i, "name"]))


def _expand_chains(reader: YamlReader, root: dict[Any, Any], routers: list[Router],
                   middlewares: Mapping[str, Middleware]) -> list[Router]:
    """Routers' middleware lists with every `chain` replaced by its members, in order (Traefik's chain
    is exactly that); a chain naming a missing middleware, or itself through others, is an error.
    Bounded like the YAML (issue #17): chains nest at most MAX_NESTING deep and expand to at most
    MAX_CHAIN_MIDDLEWARES (nine chains of nine of nine... would otherwise expand exponentially)."""
    expanded: dict[str, tuple[str, ...]] = {}  # each chain expanded once

    def expand(name: str, trail: tuple[str, ...]) -> tuple[str, ...]:
        mw = middlewares[name]
        if not isinstance(mw, Chain):
            return (name,)
        if name in expanded:
            return expanded[name]
        out: list[str] = []
        for i, member in enumerate(mw.middlewares):
            where = f"http.middlewares.{name}.chain.middlewares[{i}]"
            line = _ref_line(reader, root, ["http", "middlewares", name, "chain", "middlewares", i])
            if member not in middlewares:
                reader.fail(f"no middleware named {member!r}{did_you_mean(member, middlewares)}", where, line)
            if member in trail:
                reader.fail(f"chain cycle: {' -> '.join((*trail, member))}", where, line)
            if len(trail) >= MAX_NESTING:
                reader.fail(f"chains nested deeper than {MAX_NESTING}", where, line)
            out.extend(expand(member, (*trail, member)))
            if len(out) > MAX_CHAIN_MIDDLEWARES:
                reader.fail(f"chain expands to more than {MAX_CHAIN_MIDDLEWARES} middlewares", where, line)
        expanded[name] = tuple(out)
        return expanded[name]

    for name, mw in middlewares.items():
        if isinstance(mw, Chain):
            expand(name, (name,))  # every chain checked, used or not
    if not any(isinstance(m, Chain) for m in middlewares.values()):
        return routers
    return [replace(r, middlewares=tuple(m for name in r.middlewares for m in expand(name, (name,))))
            for r in routers]


def _check_error_page_services(reader: YamlReader, root: dict[Any, Any], middlewares: Mapping[str, Middleware],
                               services: Mapping[str, Service]) -> None:
    """An `errors` middleware's service must exist and be a loadBalancer (its page is fetched from one)."""
    for name, mw in middlewares.items():
        if not isinstance(mw, ErrorPage):
            continue
        where = f"http.middlewares.{name}.errors.service"
        line = _ref_line(reader, root, ["http", "middlewares", name, "errors", "service"])
        if mw.service not in services:
            reader.fail(f"no service named {mw.service!r}{did_you_mean(mw.service, services)}", where, line)
        if not isinstance(services[mw.service], LoadBalancerService):
            reader.fail("the error pages' service must be a loadBalancer service", where, line)


def _check_entry_point_refs(reader: YamlReader, root: dict[Any, Any], routers: list[Router],
                            entry_points: Mapping[str, EntryPoint]) -> None:
    """With an entryPoints section, a router's entryPoints must name its entries (Traefik logs and
    skips such a router; here the file is refused so the mistake is seen)."""
    if not entry_points:
        return
    for router in routers:
        for i, name in enumerate(router.entry_points):
            if name not in entry_points:
                reader.fail(f"no entry point named {name!r}{did_you_mean(name, entry_points)}",
                            f"http.routers.{router.name}.entryPoints[{i}]",
                            _ref_line(reader, root, ["http", "routers", router.name, "entryPoints", i]))


def _check_tls_options(reader: YamlReader, root: dict[Any, Any], routers: list[Router],
                       entry_points: Mapping[str, EntryPoint], tls: TlsSettings) -> None:
    """Every `tls.options` a router or an entry point names is defined (`default` always is)."""
    known = {opt.name for opt in tls.options} | {"default"}
    named = [(r.tls_options, ["http", "routers", r.name, "tls", "options"], f"http.routers.{r.name}.tls.options")
             for r in routers]
    named += [(ep.tls_options, ["entryPoints", ep.name, "http", "tls", "options"],
               f"entryPoints.{ep.name}.http.tls.options") for ep in entry_points.values()]
    for name, path, where in named:
        if name and name not in known:
            reader.fail(f"unknown TLS options: {name}{did_you_mean(name, sorted(known))}", where,
                        _ref_line(reader, root, path))


def _check_parent_refs(reader: YamlReader, root: dict[Any, Any], routers: list[Router]) -> None:
    """Multi-layer routing: parents exist and have no service, children do, no cycles."""
    by_name = {r.name: r for r in routers}
    parents = {p for r in routers for p in r.parent_refs}
    for router in routers:
        path: list[Any] = ["http", "routers", router.name]
        field = f"http.routers.{router.name}"
        for i, ref in enumerate(router.parent_refs):
            if ref not in by_name:
                reader.fail(f"no router named {ref!r}{did_you_mean(ref, by_name)}", f"{field}.parentRefs[{i}]",
                            _ref_line(reader, root, [*path, "parentRefs", i]))
        if router.name in parents and router.service:
            reader.fail("a parent router (named in parentRefs) has middlewares and no service", f"{field}.service",
                        _ref_line(reader, root, [*path, "service"]))
        if router.name not in parents and not router.service:
            reader.fail("required (or make this a parent: name it in a child router's parentRefs)",
                        f"{field}.service", _ref_line(reader, root, path))
    for router in routers:  # walk up: a router must not be its own ancestor
        seen, frontier = {router.name}, list(router.parent_refs)
        while frontier:
            ref = frontier.pop()
            if ref == router.name:
                reader.fail("parentRefs cycle: the router is its own ancestor",
                            f"http.routers.{router.name}.parentRefs",
                            _ref_line(reader, root, ["http", "routers", router.name, "parentRefs"]))
            if ref not in seen:
                seen.add(ref)
                frontier.extend(by_name[ref].parent_refs)


def _service_refs(svc: Service) -> list[tuple[str, list[Any], str]]:
    """(referenced service, YAML path of the reference, dotted field) for each reference of `svc`."""
    if isinstance(svc, WeightedService):
        kind = "highestRandomWeight" if svc.hrw else "weighted"
        wbase: list[Any] = ["http", "services", svc.name, kind, "services"]
        return [(c.name, [*wbase, i, "name"], f"http.services.{svc.name}.{kind}.services[{i}].name")
                for i, c in enumerate(svc.services)]
    if isinstance(svc, FailoverService):
        fbase: list[Any] = ["http", "services", svc.name, "failover"]
        return [(ref, [*fbase, key], f"http.services.{svc.name}.failover.{key}")
                for ref, key in ((svc.service, "service"), (svc.fallback, "fallback"))]
    if not isinstance(svc, MirroringService):
        return []
    base: list[Any] = ["http", "services", svc.name, "mirroring"]
    where = f"http.services.{svc.name}.mirroring"
    refs = [(svc.service, [*base, "service"], f"{where}.service")]
    refs += [(m.name, [*base, "mirrors", i, "name"], f"{where}.mirrors[{i}].name")
             for i, m in enumerate(svc.mirrors)]
    return refs


def _check_cycles(reader: YamlReader, root: dict[Any, Any], services: dict[str, Service]) -> None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(name: str, trail: list[str]) -> None:
        state[name] = 1
        for ref, path, ref_field in _service_refs(services[name]):
            if state.get(ref) == 1:  # this reference closes a cycle: report it where it is written
                cycle = [*trail[trail.index(ref):], name, ref] if ref in trail else [name, ref]
                reader.fail(f"service reference cycle: {' -> '.join(cycle)}", ref_field,
                            _ref_line(reader, root, path))
            if state.get(ref) is None:
                visit(ref, [*trail, name])
        state[name] = 2

    for name in services:
        if state.get(name) is None:
            visit(name, [])


# --------------------------------------------------------------------------------------------------
# shadow: section
# --------------------------------------------------------------------------------------------------

def _parse_shadow(reader: YamlReader, node: Any, line: int | None, base_dir: Path,
                  services: Mapping[str, Service], middlewares: Mapping[str, Middleware]) -> ShadowSection:
    sh = reader.mapping(node, "shadow", line)
    reader.check_keys(sh, "shadow", ("gateway", "capture", "redaction", "mirroring", "endpoints", "analysis", "telemetry", "split",
                                       "identity"))

    gw = reader.mapping(sh.get("gateway"), "shadow.gateway", reader.value_line(sh, "gateway"))
    reader.check_keys(gw, "shadow.gateway", ("id", "workers", "streamLargerThan"))
    gateway_id = reader.string(gw, "id", "shadow.gateway")
    workers = reader.integer(gw, "workers", "shadow.gateway", 0, minimum=1, maximum=256) or None
    stream_larger_than = reader.integer(gw, "streamLargerThan", "shadow.gateway", STREAM_LARGER_THAN, minimum=-1)

    red_field = "shadow.redaction"
    red = reader.mapping(sh.get("redaction"), red_field, reader.value_line(sh, "redaction"))
    reader.check_keys(red, red_field, ("mode", "keyEnv", "keyFile", "headers", "jsonFields", "queryParams",
                                       "names", "allow", "defaults"))
    mode = reader.string(red, "mode", red_field, default="hash")
    if mode not in ("hash", "remove"):
        reader.fail(f"must be hash or remove, got {mode!r}", f"{red_field}.mode", reader.value_line(red, "mode"))
    key: bytes | None = None
    key_env = reader.string(red, "keyEnv", red_field)
    if key_env is not None:
        env_value = os.environ.get(key_env)
        if not env_value:
            reader.fail(f"environment variable {key_env} is not set", f"{red_field}.keyEnv",
                        reader.value_line(red, "keyEnv"))
        key = env_value.encode()
    extra_headers = tuple(h.lower() for h in reader.string_list(red, "headers", red_field))
    identity = _parse_identity(reader, sh)
    if identity[1]:  # claim values forwarded in headers are redacted like the configured headers
        extra_headers += tuple(h.lower() for m in middlewares.values() if isinstance(m, JwtSettings | OidcSettings)
                               for h, _ in m.forward_headers)
    headers = tuple(dict.fromkeys((*DEFAULT_REDACTED_HEADERS, *extra_headers)))
    json_fields = reader.string_list(red, "jsonFields", red_field)
    query_params = reader.string_list(red, "queryParams", red_field)
    key_file = reader.string(red, "keyFile", red_field)
    redaction = RedactionSettings(headers=headers, json_fields=json_fields,
                                  mode="hash" if mode == "hash" else "remove", key=key,
                                  key_file=base_dir / Path(key_file).expanduser() if key_file else None,
                                  query_params=query_params,
                                  names=reader.string_list(red, "names", red_field),
                                  allow=reader.string_list(red, "allow", red_field),
                                  defaults=reader.boolean(red, "defaults", red_field, True))

    cap_field = "shadow.capture"
    cap = reader.mapping(sh.get("capture"), cap_field, reader.value_line(sh, "capture"))
    reader.check_keys(cap, cap_field, ("dir", "enabled", "maxBodyBytes", "segmentRows", "segmentSeconds",
                                       "maxQueue", "mode", "upload"))
    defaults = CaptureSettings()
    upload = reader.string(cap, "upload", cap_field)
    if upload is not None:
        from shadow.capture.remote import is_remote, open_location

        if not is_remote(upload):
            reader.fail(f"expected an object store URI like s3://bucket/prefix, got {upload!r}", f"{cap_field}.upload",
                        reader.value_line(cap, "upload"))
        try:
            open_location(upload)
        except CaptureError as exc:
            reader.fail(str(exc), f"{cap_field}.upload", reader.value_line(cap, "upload"))
    cap_dir = reader.string(cap, "dir", cap_field)
    cap_mode = reader.string(cap, "mode", cap_field, default=defaults.mode)
    if cap_mode not in ("process", "thread"):
        reader.fail(f"must be process or thread, got {cap_mode!r}", f"{cap_field}.mode", reader.value_line(cap, "mode"))
    capture = CaptureSettings(
        dir=base_dir / (Path(cap_dir).expanduser() if cap_dir is not None else defaults.dir),
        enabled=reader.boolean(cap, "enabled", cap_field, defaults.enabled),
        max_body_bytes=reader.integer(cap, "maxBodyBytes", cap_field, defaults.max_body_bytes, minimum=0),
        segment_rows=reader.integer(cap, "segmentRows", cap_field, defaults.segment_rows, minimum=1),
        segment_seconds=reader.duration(cap, "segmentSeconds", cap_field, defaults.segment_seconds),
        max_queue=reader.integer(cap, "maxQueue", cap_field, defaults.max_queue, minimum=1),
        mode="thread" if cap_mode == "thread" else "process",
        redaction=redaction,
        upload=upload,
    )
    if capture.segment_seconds <= 0:
        reader.fail("must be positive", f"{cap_field}.segmentSeconds", reader.value_line(cap, "segmentSeconds"))

    mir_field = "shadow.mirroring"
    mir = reader.mapping(sh.get("mirroring"), mir_field, reader.value_line(sh, "mirroring"))
    reader.check_keys(mir, mir_field, ("timeout", "maxInFlight", "maxBytesInFlight", "targets", "resend"))
    mdefaults = MirroringSettings()
    timeout = reader.duration(mir, "timeout", mir_field, mdefaults.timeout_s)
    if timeout <= 0:
        reader.fail("must be positive", f"{mir_field}.timeout", reader.value_line(mir, "timeout"))
    targets: dict[str, MirrorTargetSettings] = {}
    tgt_field = f"{mir_field}.targets"
    tgt = reader.mapping(mir.get("targets"), tgt_field, reader.value_line(mir, "targets"))
    mirror_names = sorted({m.name for s in services.values() if isinstance(s, MirroringService)
                           for m in s.mirrors})
    for name in tgt:
        where = f"{tgt_field}.{name}"
        if name not in services:
            reader.fail(f"no service named {name!r}{did_you_mean(str(name), mirror_names or services)}",
                        where, reader.key_line(tgt, name))
        t = reader.mapping(tgt[name], where, reader.value_line(tgt, name))
        reader.check_keys(t, where, ("role", "allowUnsafe"))
        role = reader.string(t, "role", where, default="candidate")
        if role not in ("candidate", "secondary"):
            reader.fail(f"must be candidate or secondary, got {role!r}", f"{where}.role",
                        reader.value_line(t, "role"))
        targets[name] = MirrorTargetSettings(role="candidate" if role == "candidate" else "secondary",
                                             allow_unsafe=reader.boolean(t, "allowUnsafe", where, False))
    mirroring = MirroringSettings(
        timeout_s=timeout,
        max_in_flight=reader.integer(mir, "maxInFlight", mir_field, mdefaults.max_in_flight, minimum=1),
        max_bytes_in_flight=reader.integer(mir, "maxBytesInFlight", mir_field, mdefaults.max_bytes_in_flight,
                                           minimum=1),
        targets=targets,
        resend=_parse_resend(reader, mir, mir_field),
    )

    endpoints = reader.string_list(sh, "endpoints", "shadow")
    ep_items = reader.sequence(sh, "endpoints", "shadow")
    for i, ep in enumerate(endpoints):
        if not ep.startswith("/"):
            reader.fail(f"endpoint template {ep!r} must start with '/'", f"shadow.endpoints[{i}]",
                        reader.item_line(ep_items, i))

    analysis_node = reader.mapping(sh.get("analysis"), "shadow.analysis", reader.value_line(sh, "analysis"))
    return ShadowSection(capture=capture, mirroring=mirroring, gateway_id=gateway_id, workers=workers,
                         telemetry=parse_telemetry(reader, sh.get("telemetry"), reader.value_line(sh, "telemetry")),
                         endpoints=endpoints, analysis=MappingProxyType(plain(analysis_node)),
                         split=_parse_split(reader, sh, services), identity_client_key_claim=identity[0],
                         identity_hash_client_key=identity[2], stream_larger_than=stream_larger_than)


def _parse_resend(reader: YamlReader, mir: dict[Any, Any], mir_field: str) -> ResendSettings:
    """shadow.mirroring.resend: {enabled: true, percent: 5, perEndpoint: 50, window: 1m}."""
    where = f"{mir_field}.resend"
    node = reader.mapping(mir.get("resend"), where, reader.value_line(mir, "resend"))
    reader.check_keys(node, where, ("enabled", "percent", "perEndpoint", "window"))
    defaults = ResendSettings()
    window = reader.duration(node, "window", where, defaults.window_s)
    if window <= 0:
        reader.fail("must be positive", f"{where}.window", reader.value_line(node, "window"))
    return ResendSettings(
        enabled=reader.boolean(node, "enabled", where, defaults.enabled),
        percent=reader.integer(node, "percent", where, defaults.percent, minimum=0, maximum=100),
        per_endpoint=reader.integer(node, "perEndpoint", where, defaults.per_endpoint, minimum=1),
        window_s=window,
    )


def _parse_identity(reader: YamlReader, sh: dict[Any, Any]) -> tuple[str | None, bool, bool]:
    """shadow.identity: {clientKeyClaim: sub, redactClaimHeaders: true, hashClientKey: true}."""
    where = "shadow.identity"
    node = reader.mapping(sh.get("identity"), where, reader.value_line(sh, "identity"))
    reader.check_keys(node, where, ("clientKeyClaim", "redactClaimHeaders", "hashClientKey"))
    return (reader.string(node, "clientKeyClaim", where), reader.boolean(node, "redactClaimHeaders", where, True),
            reader.boolean(node, "hashClientKey", where, True))


def _parse_split(reader: YamlReader, sh: dict[Any, Any], services: Mapping[str, Service]) -> SplitSettings:
    where = "shadow.split"
    sp = reader.mapping(sh.get("split"), where, reader.value_line(sh, "split"))
    reader.check_keys(sp, where, ("candidates", "clientKey"))
    candidates = reader.string_list(sp, "candidates", where)
    items = reader.sequence(sp, "candidates", where)
    for i, name in enumerate(candidates):
        if name not in services:
            reader.fail(f"no service named {name!r}{did_you_mean(name, services)}", f"{where}.candidates[{i}]",
                        reader.item_line(items, i))
    ck_field = f"{where}.clientKey"
    ck = reader.mapping(sp.get("clientKey"), ck_field, reader.value_line(sp, "clientKey"))
    reader.check_keys(ck, ck_field, ("header", "cookie"))
    header, cookie = reader.string(ck, "header", ck_field), reader.string(ck, "cookie", ck_field)
    if header is not None and cookie is not None:
        reader.fail("name a header or a cookie, not both", ck_field, reader.value_line(sp, "clientKey"))
    return SplitSettings(candidates=candidates, client_key_header=header, client_key_cookie=cookie)


# --------------------------------------------------------------------------------------------------
# Entry points
# --------------------------------------------------------------------------------------------------

def parse_config(text: str, source: str = "<string>", *, base_dir: Path | None = None,
                 generated: Mapping[str, Service] | None = None) -> GatewayConfig:
    """Parse and validate a configuration. `source` names the file in errors; relative paths in the
    file (capture.dir) are resolved against `base_dir`, by default the source file's folder (or the
    current directory for "<string>")."""
    if base_dir is None:
        base_dir = Path(source).parent if not source.startswith("<") else Path.cwd()
    root = load_yaml(text, source)
    if root is None:
        YamlReader(source).fail("empty configuration file (expected an http: section)", None, None)
    return build_config(root, source, base_dir=base_dir, generated=generated)


# Another provider's routers, services and middlewares (Gateway API manifests), built once the
# file's middlewares are known (the provider's routes may name them).
ConfigExtension = Callable[[Mapping[str, "Middleware"]], tuple[list[Router], dict[str, "Service"],
                                                               dict[str, "Middleware"]]]


def build_config(root: Any, source: str, *, base_dir: Path, extend: ConfigExtension | None = None,
                 generated: Mapping[str, Service] | None = None) -> GatewayConfig:
    """The configuration from a loaded YAML tree (`http:` and `shadow:`), plus `extend`'s routers,
    services and middlewares (names must not clash with the file's), plus `generated`: the
    multi-cluster provider's services (shadow.multicluster.services), when the file has one.
    Errors name `source`."""
    base_dir = base_dir.absolute()
    reader = YamlReader(source)
    if not isinstance(root, dict):
        reader.fail(f"expected a mapping with http: and shadow: sections, got {value_kind(root)}", None, 1)
    reader.check_keys(root, "", ("http", "shadow", "entryPoints", "tls", "hub"), unsupported=("tcp", "udp"))
    tls = parse_tls(reader, root.get("tls"), reader.value_line(root, "tls"), base_dir)
    entry_points = parse_entry_points(reader, root.get("entryPoints"), reader.value_line(root, "entryPoints"))
    hub = parse_hub(reader, root.get("hub"), reader.value_line(root, "hub"), base_dir)

    http = reader.mapping(root.get("http"), "http", reader.value_line(root, "http"))
    reader.check_keys(http, "http", ("routers", "services", "middlewares"),
                      unsupported=("serversTransports", "serversTransport"))

    services: dict[str, Service] = {}
    for name, node, field_name, line in _named_section(reader, http, "services", "http.services"):
        services[name] = _parse_service(reader, name, node, field_name, line)
    middlewares: dict[str, Middleware] = {}
    for name, node, field_name, line in _named_section(reader, http, "middlewares", "http.middlewares"):
        middlewares[name] = _parse_middleware(reader, name, node, field_name, line, base_dir)
    routers = [_parse_router(reader, name, node, field_name, line)
               for name, node, field_name, line in _named_section(reader, http, "routers", "http.routers")]
    routers += _uplink_routes(reader, root, hub, routers, services, middlewares, entry_points, tls)
    refs = _multicluster_refs(plain(http)) | _multicluster_refs(plain(root.get("shadow")))
    if refs and hub.multi_cluster is None:
        reader.fail(f"{sorted(refs)[0]!r} names the multi-cluster provider, which needs hub.multiCluster", "http",
                    reader.value_line(root, "http"))
    if hub.multi_cluster is not None:  # the provider's (shadow.multicluster.services.uplink_services)
        services.update(generated or {})
        for name in refs - set(services):  # named by the file, advertised by no child (yet): 503
            services[name] = LoadBalancerService(name, (), empty_status=503)

    _check_references(reader, root, routers, services, middlewares)
    if extend is not None:
        more_routers, more_services, more_middlewares = extend(MappingProxyType(middlewares))
        for kind, mine, theirs in (("router", {r.name for r in routers}, [r.name for r in more_routers]),
                                   ("service", services, more_services), ("middleware", middlewares, more_middlewares)):
            clash = sorted(set(mine) & set(theirs))
            if clash:
                reader.fail(f"{kind} name {clash[0]!r} is also generated from the manifests", "http", None)
        routers += more_routers
        services.update(more_services)
        middlewares.update(more_middlewares)
    routers = _expand_chains(reader, root, routers, middlewares)
    _check_entry_point_refs(reader, root, routers, entry_points)
    _check_tls_options(reader, root, routers, entry_points, tls)
    _check_error_page_services(reader, root, middlewares, services)
    shadow = _parse_shadow(reader, root.get("shadow"), reader.value_line(root, "shadow"), base_dir, services,
                           middlewares)
    return GatewayConfig(
        routers=tuple(sorted(routers, key=_router_order)),
        services=MappingProxyType(services),
        middlewares=MappingProxyType(middlewares),
        shadow=shadow,
        source=source,
        entry_points=MappingProxyType(entry_points),
        tls=tls,
        hub=hub,
    )


def load_config(path: str | Path, *, generated: Mapping[str, Service] | None = None) -> GatewayConfig:
    """Read and validate the configuration file at `path` (`generated`: see build_config)."""
    path = Path(path)
    return parse_config(read_yaml_file(path), str(path), base_dir=path.parent, generated=generated)
