"""The `hub:` section of a gateway file: a child's uplink entry points and uplinks, a parent's
multi-cluster provider (Traefik Hub's names)::

    hub:
      uplinkEntryPoints:                 # child: listeners for the parent only
        bridge:
          address: "127.0.0.1:9443"
          tls: {options: bridge}         # a tls.options entry; it must require and verify client certs
      uplinks:                           # child: what it advertises
        orders:
          service: monolith              # a service of this file (or router: NAME, its service)
          weight: 100                    # the share of the parent's traffic for this uplink (WRR)
          entryPoints: [bridge]          # default: every uplink entry point
          healthCheck: {path: /health, interval: 2s, timeout: 1s}
      multiCluster:                      # parent: the children it polls
        pollInterval: 5s
        pollTimeout: 5s
        gracePeriod: 30s                 # an unreachable child's uplinks are kept this long
        tls: {caFile: ca.pem, certFile: parent.crt, keyFile: parent.key, serverName: ""}
        children:
          vm: {address: "https://127.0.0.1:9443"}
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from shadow.gateway.tls import read_file_or_content
from shadow.gateway.transport import UpstreamTls
from shadow.yamlconfig import YamlReader

__all__ = ["ADVERTISEMENT_PATH", "NAME_PATTERN", "UPLINK_PREFIX", "Child", "HubSettings", "MultiCluster", "Uplink",
           "UplinkEntryPoint", "UplinkHealthCheck", "parse_hub"]

ADVERTISEMENT_PATH = "/.hub/uplinks"  # on an uplink entry point: the advertised uplinks (JSON)
UPLINK_PREFIX = "/.hub/uplink/"  # + name: the path prefix the parent sends an uplink's requests under
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")


@dataclass(frozen=True)
class UplinkHealthCheck:
    path: str
    interval_s: float = 5.0
    timeout_s: float = 2.0


@dataclass(frozen=True)
class Uplink:
    name: str
    service: str  # the service of the child's file that serves it
    weight: int = 1
    entry_points: tuple[str, ...] = ()  # () = every uplink entry point
    health_check: UplinkHealthCheck | None = None
    router: str = ""  # given as `router:` (its service and middlewares are used)


@dataclass(frozen=True)
class UplinkEntryPoint:
    name: str
    address: str
    tls_options: str  # a tls.options name


@dataclass(frozen=True)
class Child:
    name: str
    address: str  # https://host:port, no path


@dataclass(frozen=True)
class MultiCluster:
    children: tuple[Child, ...]
    transport: UpstreamTls
    poll_interval_s: float = 5.0
    poll_timeout_s: float = 5.0
    grace_period_s: float = 30.0


@dataclass(frozen=True)
class HubSettings:
    uplink_entry_points: tuple[UplinkEntryPoint, ...] = ()
    uplinks: tuple[Uplink, ...] = ()
    multi_cluster: MultiCluster | None = None


def _name(reader: YamlReader, name: Any, where: str, line: int | None) -> str:
    text = str(name)
    if not NAME_PATTERN.match(text):
        reader.fail(f"{text!r}: a name is letters, digits, '.', '_', '-' (at most 63)", where, line)
    return text


def _positive(reader: YamlReader, node: dict[Any, Any], key: str, where: str, default: float) -> float:
    value = reader.duration(node, key, where, default)
    if value <= 0:
        reader.fail("must be positive", f"{where}.{key}", reader.value_line(node, key))
    return value


def parse_hub(reader: YamlReader, node: Any, line: int | None, base_dir: Path) -> HubSettings:
    hub = reader.mapping(node, "hub", line)
    reader.check_keys(hub, "hub", ("uplinkEntryPoints", "uplinks", "multiCluster"))
    eps: list[UplinkEntryPoint] = []
    section = reader.mapping(hub.get("uplinkEntryPoints"), "hub.uplinkEntryPoints",
                             reader.value_line(hub, "uplinkEntryPoints"))
    for key in section:
        where = f"hub.uplinkEntryPoints.{key}"
        name = _name(reader, key, where, reader.key_line(section, key))
        body = reader.mapping(section[key], where, reader.value_line(section, key), allow_null=False)
        reader.check_keys(body, where, ("address", "tls", "asDefault"))
        tls_where = f"{where}.tls"
        tls = reader.mapping(body.get("tls"), tls_where, reader.value_line(body, "tls"), allow_null=False) \
            if "tls" in body else reader.fail("an uplink entry point requires tls: {options: NAME} with clientAuth",
                                              where, reader.value_line(section, key))
        reader.check_keys(tls, tls_where, ("options",))
        eps.append(UplinkEntryPoint(name, reader.required_string(body, "address", where),
                                    reader.required_string(tls, "options", tls_where)))
    uplinks: list[Uplink] = []
    section = reader.mapping(hub.get("uplinks"), "hub.uplinks", reader.value_line(hub, "uplinks"))
    ep_names = {ep.name for ep in eps}
    for key in section:
        where = f"hub.uplinks.{key}"
        name = _name(reader, key, where, reader.key_line(section, key))
        body = reader.mapping(section[key], where, reader.value_line(section, key), allow_null=False)
        reader.check_keys(body, where, ("service", "router", "weight", "entryPoints", "healthCheck"))
        service, router = reader.string(body, "service", where) or "", reader.string(body, "router", where) or ""
        if bool(service) == bool(router):
            reader.fail("name the service or the router it exposes (one of them)", where,
                        reader.value_line(section, key))
        entry_points = reader.string_list(body, "entryPoints", where)
        items = reader.sequence(body, "entryPoints", where)
        for i, ep in enumerate(entry_points):
            if ep not in ep_names:
                reader.fail(f"no uplink entry point named {ep!r}", f"{where}.entryPoints[{i}]", reader.item_line(items, i))
        if not eps:
            reader.fail("uplinks need an uplink entry point (hub.uplinkEntryPoints)", where,
                        reader.value_line(section, key))
        hc = None
        if "healthCheck" in body:
            hc_where = f"{where}.healthCheck"
            h = reader.mapping(body["healthCheck"], hc_where, reader.value_line(body, "healthCheck"), allow_null=False)
            reader.check_keys(h, hc_where, ("path", "interval", "timeout"))
            path = reader.required_string(h, "path", hc_where)
            if not path.startswith("/"):
                reader.fail(f"path {path!r} must start with '/'", f"{hc_where}.path", reader.value_line(h, "path"))
            hc = UplinkHealthCheck(path, _positive(reader, h, "interval", hc_where, 5.0),
                                   _positive(reader, h, "timeout", hc_where, 2.0))
        uplinks.append(Uplink(name, service, reader.integer(body, "weight", where, 1, minimum=0, maximum=1_000_000),
                              entry_points, hc, router))
    return HubSettings(tuple(eps), tuple(uplinks), _parse_multi_cluster(reader, hub, base_dir))


def _parse_multi_cluster(reader: YamlReader, hub: dict[Any, Any], base_dir: Path) -> MultiCluster | None:
    if "multiCluster" not in hub:
        return None
    where = "hub.multiCluster"
    mc = reader.mapping(hub["multiCluster"], where, reader.value_line(hub, "multiCluster"), allow_null=False)
    reader.check_keys(mc, where, ("children", "pollInterval", "pollTimeout", "gracePeriod", "tls"))
    tls_where = f"{where}.tls"
    if "tls" not in mc:
        reader.fail("the parent needs tls: {caFile, certFile, keyFile} (mutual TLS with its children)", where,
                    reader.value_line(hub, "multiCluster"))
    tls = reader.mapping(mc["tls"], tls_where, reader.value_line(mc, "tls"), allow_null=False)
    reader.check_keys(tls, tls_where, ("caFile", "certFile", "keyFile", "serverName"))
    material = []
    for key, marker in (("caFile", b"CERTIFICATE-----"), ("certFile", b"CERTIFICATE-----"),
                        ("keyFile", b"PRIVATE KEY-----")):
        material.append(read_file_or_content(reader, reader.required_string(tls, key, tls_where), f"{tls_where}.{key}",
                                             reader.value_line(tls, key), base_dir, marker))
    transport = UpstreamTls(material[0], material[1], material[2], reader.string(tls, "serverName", tls_where) or "")
    children: list[Child] = []
    section = reader.mapping(mc.get("children"), f"{where}.children", reader.value_line(mc, "children"))
    if not section:
        reader.fail("a multi-cluster provider needs at least one child", f"{where}.children",
                    reader.value_line(mc, "children") or reader.value_line(hub, "multiCluster"))
    for key in section:
        c_where = f"{where}.children.{key}"
        name = _name(reader, key, c_where, reader.key_line(section, key))
        body = reader.mapping(section[key], c_where, reader.value_line(section, key), allow_null=False)
        reader.check_keys(body, c_where, ("address",))
        address = reader.required_string(body, "address", c_where).rstrip("/")
        try:
            parts = urlsplit(address)
            parts.port  # noqa: B018 - raises ValueError on a bad port
        except ValueError as exc:
            reader.fail(f"bad address {address!r}: {exc}", f"{c_where}.address", reader.value_line(body, "address"))
        if parts.scheme != "https" or not parts.hostname or parts.path or parts.query:
            reader.fail(f"bad address {address!r}: expected https://HOST:PORT (the child's uplink entry point)",
                        f"{c_where}.address", reader.value_line(body, "address"))
        children.append(Child(name, address))
    return MultiCluster(tuple(children), transport, _positive(reader, mc, "pollInterval", where, 5.0),
                        _positive(reader, mc, "pollTimeout", where, 5.0),
                        _positive(reader, mc, "gracePeriod", where, 30.0))
