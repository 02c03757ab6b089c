"""Entry points as Traefik's static configuration names them (`entryPoints.<name>`), and who is
trusted to send forwarded headers.

    entryPoints:
      web:
        address: ":8080"
        forwardedHeaders:
          trustedIPs: ["10.0.0.0/8", "127.0.0.1"]   # their X-Forwarded-* and X-Real-Ip are kept
          insecure: false                           # true: everyone's are kept
        transport:
          respondingTimeouts:                       # Traefik's names and defaults (0: no limit)
            readTimeout: 60s                        # a request (head and body) read whole within this
            writeTimeout: 0s                        # end of request -> end of its answer
            idleTimeout: 180s                       # a keep-alive connection with nothing to do

Traefik's default, and the gateway's: nobody is trusted. An untrusted client's `X-Forwarded-*`,
`X-Real-Ip`, `X-Scheme` headers (also spelt with `_`) are removed before routing, so a client cannot
claim another address to a backend's allowlist or audit log; the gateway then sets its own.
The gateway listens on one address (`shadow gateway --listen`); a request belongs to the entry point
whose port is the one it came in on, or the only one defined.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from shadow.gateway.middlewares.ipstrategy import IPChecker
from shadow.gateway.timeouts import RespondingTimeouts
from shadow.yamlconfig import YamlReader

__all__ = ["EntryPoint", "is_managed_forwarded_header", "parse_entry_points", "select_entry_point",
           "strip_untrusted_forwarded",
           "trusts_forwarded"]

# Traefik's XHeadersSet (pkg/middlewares/forwardedheaders), lower-cased.
MANAGED_X_HEADERS = frozenset({
    "x-forwarded-proto", "x-forwarded-scheme", "x-forwarded-for", "x-forwarded-host", "x-forwarded-port",
    "x-forwarded-server", "x-forwarded-uri", "x-forwarded-method", "x-forwarded-prefix",
    "x-forwarded-tls-client-cert", "x-forwarded-tls-client-cert-info", "x-scheme", "x-real-ip",
})


@dataclass(frozen=True)
class EntryPoint:
    name: str
    address: str = ""  # "[host]:port" as Traefik writes it (":8080")
    port: int | None = None
    trusted_ips: IPChecker | None = None
    insecure: bool = False
    tls: bool = False  # http.tls: every router on this entry point serves TLS
    tls_options: str = ""  # http.tls.options: the TLS options of its routers without their own
    redirect_to: str = ""  # http.redirections.entryPoint.to: every request redirected there
    redirect_scheme: str = "https"
    redirect_permanent: bool = True
    # transport.respondingTimeouts (Traefik's names and defaults: readTimeout 60s, writeTimeout 0,
    # idleTimeout 180s), enforced by addons/timeouts.py
    timeouts: RespondingTimeouts = field(default_factory=RespondingTimeouts)
    uplink: bool = False  # a multi-cluster uplink entry point (hub.uplinkEntryPoints): only routers naming it

    @property
    def host(self) -> str:
        return self.address.split("/", 1)[0].rpartition(":")[0].strip("[]")


def is_managed_forwarded_header(name: str) -> bool:
    """Traefik's isManagedXHeader: one of the managed names, also with `_` for `-`."""
    lower = name.lower()
    return lower in MANAGED_X_HEADERS or ("_" in lower and lower.replace("_", "-") in MANAGED_X_HEADERS)


def trusts_forwarded(entry_point: EntryPoint | None, client_ip: str) -> bool:
    if entry_point is None:
        return False
    if entry_point.insecure:
        return True
    return entry_point.trusted_ips is not None and entry_point.trusted_ips.is_authorized(client_ip)


def strip_untrusted_forwarded(headers: Iterable[tuple[str, str]], entry_point: EntryPoint | None,
                              client_ip: str) -> list[tuple[str, str]]:
    """The headers without the managed X-Forwarded-* ones unless the client is trusted."""
    if trusts_forwarded(entry_point, client_ip):
        return list(headers)
    return [(k, v) for k, v in headers if not is_managed_forwarded_header(k)]


def select_entry_point(entry_points: Mapping[str, EntryPoint], local_port: int | None) -> EntryPoint | None:
    """The entry point a request that arrived on `local_port` belongs to (the only one if just one)."""
    if not entry_points:
        return None
    for ep in entry_points.values():
        if ep.port is not None and ep.port == local_port:
            return ep
    if len(entry_points) == 1:
        return next(iter(entry_points.values()))
    return None


def _port(reader: YamlReader, address: str, where: str, line: int | None) -> int | None:
    text = address.split("/", 1)[0]  # Traefik allows ":8080/udp"
    _host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        reader.fail(f"address {address!r} is not [host]:port (e.g. \":8080\")", where, line)
    return int(port)


def parse_entry_points(reader: YamlReader, node: Any, line: int | None) -> dict[str, EntryPoint]:
    section = reader.mapping(node, "entryPoints", line)
    out: dict[str, EntryPoint] = {}
    for name in section:
        where = f"entryPoints.{name}"
        body = reader.mapping(section[name], where, reader.value_line(section, name))
        reader.check_keys(body, where, ("address", "forwardedHeaders", "http", "transport"),
                          unsupported=("http2", "http3", "proxyProtocol", "udp",
                                       "observability", "allowACMEByPass", "reusePort", "asDefault"))
        tls, tls_options, redirect = _parse_entry_point_http(reader, body, where)
        address = reader.string(body, "address", where) or ""
        port = _port(reader, address, f"{where}.address", reader.value_line(body, "address")) if address else None
        fh_where = f"{where}.forwardedHeaders"
        fh = reader.mapping(body.get("forwardedHeaders"), fh_where, reader.value_line(body, "forwardedHeaders"))
        reader.check_keys(fh, fh_where, ("trustedIPs", "insecure"), unsupported=("connection",))
        trusted = reader.string_list(fh, "trustedIPs", fh_where)
        checker = None
        if trusted:
            try:
                checker = IPChecker.parse(trusted)
            except ValueError as exc:
                reader.fail(str(exc), f"{fh_where}.trustedIPs", reader.value_line(fh, "trustedIPs"))
        out[str(name)] = EntryPoint(str(name), address, port, checker,
                                    reader.boolean(fh, "insecure", fh_where, False), tls, tls_options, *redirect,
                                    timeouts=_parse_transport(reader, body, where))
    for ep in out.values():
        if ep.redirect_to and ep.redirect_to not in out:
            where = f"entryPoints.{ep.name}.http.redirections.entryPoint.to"
            reader.fail(f"no entry point named {ep.redirect_to!r}", where, None)
    return out


def parse_tls_section(reader: YamlReader, parent: dict[Any, Any], where: str) -> tuple[bool, str]:
    """`tls:` of a router or of an entry point's `http:`: (present, its `options` name or "").
    The name (`name@file` accepted) is checked against `tls.options` once the whole file is read."""
    if "tls" not in parent:
        return False, ""
    t_where = f"{where}.tls"
    node = reader.mapping(parent.get("tls"), t_where, reader.value_line(parent, "tls"))
    reader.check_keys(node, t_where, ("options", "domains"), unsupported=("certResolver",))
    option = reader.string(node, "options", t_where) or ""
    name, _, provider = option.partition("@")
    if provider not in ("", "file"):
        reader.fail(f"{option!r} names provider {provider!r}; only this file (@file) is available",
                    f"{t_where}.options", reader.value_line(node, "options"))
    return True, name


def _parse_transport(reader: YamlReader, body: dict[Any, Any], where: str) -> RespondingTimeouts:
    """`transport.respondingTimeouts` of an entry point (durations: "60s", "3m", or seconds; 0 = no limit)."""
    t_where = f"{where}.transport"
    node = reader.mapping(body.get("transport"), t_where, reader.value_line(body, "transport"))
    reader.check_keys(node, t_where, ("respondingTimeouts",), unsupported=("lifeCycle", "keepAliveMaxRequests",
                                                                        "keepAliveMaxTime"))
    r_where = f"{t_where}.respondingTimeouts"
    r_node = reader.mapping(node.get("respondingTimeouts"), r_where, reader.value_line(node, "respondingTimeouts"))
    reader.check_keys(r_node, r_where, ("readTimeout", "writeTimeout", "idleTimeout"))
    defaults = RespondingTimeouts()
    values = {}
    for key, default in (("readTimeout", defaults.read_s), ("writeTimeout", defaults.write_s),
                         ("idleTimeout", defaults.idle_s)):
        values[key] = reader.duration(r_node, key, r_where, default)
        if values[key] < 0:
            reader.fail(f"must be 0 (no limit) or positive, got {r_node[key]!r}", f"{r_where}.{key}",
                        reader.value_line(r_node, key))
    return RespondingTimeouts(read_s=values["readTimeout"], write_s=values["writeTimeout"],
                              idle_s=values["idleTimeout"])


def _parse_entry_point_http(reader: YamlReader, body: dict[Any, Any],
                            where: str) -> tuple[bool, str, tuple[str, str, bool]]:
    """`http:` of an entry point: `tls` (its routers serve TLS) and `redirections.entryPoint`."""
    h_where = f"{where}.http"
    node = reader.mapping(body.get("http"), h_where, reader.value_line(body, "http"))
    reader.check_keys(node, h_where, ("tls", "redirections"), unsupported=("middlewares", "encodeQuerySemicolons",
                                                                           "sanitizePath", "maxHeaderBytes"))
    tls, tls_options = parse_tls_section(reader, node, h_where)
    redirect: tuple[str, str, bool] = ("", "https", True)
    if "redirections" in node:
        r_where = f"{h_where}.redirections"
        r_node = reader.mapping(node.get("redirections"), r_where, reader.value_line(node, "redirections"))
        reader.check_keys(r_node, r_where, ("entryPoint",))
        e_where = f"{r_where}.entryPoint"
        e_node = reader.mapping(r_node.get("entryPoint"), e_where, reader.value_line(r_node, "entryPoint"))
        reader.check_keys(e_node, e_where, ("to", "scheme", "permanent", "priority"))
        redirect = (reader.required_string(e_node, "to", e_where), reader.string(e_node, "scheme", e_where) or "https",
                    reader.boolean(e_node, "permanent", e_where, True))
        reader.integer(e_node, "priority", e_where, 0)
    return tls, tls_options, redirect
