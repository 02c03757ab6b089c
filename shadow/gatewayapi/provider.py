"""The Gateway API provider: a manifest file or directory → the gateway's `GatewayConfig`.

`load_gateway_config(path)` is what the gateway, `shadow gateway` and `shadow config check` call for
any configuration path: a directory, or a file with a `gateway.networking.k8s.io/` apiVersion, is read
as Kubernetes manifests; anything else is a Traefik-style file (shadow.gateway.config.load_config).

Shadow's settings are the one document of the manifests without `apiVersion` (a document of a
manifest file, or a file of the directory, e.g. `shadow.yaml`)::

    backends:                                  # where each Service lives: there is no cluster here
      default/orders:8080: http://127.0.0.1:9001   # namespace/name:port → URL
      default/orders-next: http://127.0.0.1:9002   # namespace/name → URL, for every port
    http:                                      # optional, Traefik-style: middlewares that an
      middlewares:                             # ExtensionRef {group: traefik.io, kind: Middleware,
        auth: {jwt: {...}}                     # name: auth} puts on a rule; routers and services
    shadow:                                    # too, served beside the manifests' routes
      capture: {dir: ./capture}                # as in a Traefik-style file
      mirroring:
        targets:
          default/orders-next:8080: {role: candidate}   # backend services are named namespace/name:port

Without a settings document nothing is reachable (every backend is BackendNotFound: 500).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shadow.errors import ConfigError
from shadow.gateway.config import (
    GatewayConfig,
    Middleware,
    Router,
    Service,
    build_config,
    load_config,
    server_from_url,
)
from shadow.gatewayapi.manifests import Document, Gateway, Manifests, is_gateway_api_text, read_manifests
from shadow.gatewayapi.resolve import BackendKey, Condition, RouteStatus
from shadow.gatewayapi.translate import translate

__all__ = ["GatewayApiConfig", "gateway_status_lines", "is_gateway_api_source", "load_gateway_api",
           "load_gateway_config", "status_lines"]


@dataclass(frozen=True)
class GatewayApiConfig:
    config: GatewayConfig
    statuses: tuple[RouteStatus, ...]
    resolved_refs: Mapping[str, tuple[Condition, ...]]  # route key → ResolvedRefs problems
    ignored: tuple[Document, ...] = ()
    sources: tuple[str, ...] = field(default=())
    gateways: tuple[Gateway, ...] = ()


def is_gateway_api_source(path: str | Path) -> bool:
    """A directory, or a file with some `apiVersion: gateway.networking.k8s.io/...` document."""
    path = Path(path)
    if path.is_dir():
        return True
    try:
        return is_gateway_api_text(path.read_text(encoding="utf-8-sig", errors="replace"))
    except OSError:
        return False


def _backends(settings: Any, source: str) -> dict[BackendKey, str]:
    node = settings.get("backends")
    if node is None:
        return {}

    def line_of(key: object) -> int | None:
        try:
            return int(settings.lc.key("backends")[0]) + 1 if key is None else int(node.lc.key(key)[0]) + 1
        except (AttributeError, KeyError, TypeError):
            return None

    if not isinstance(node, dict):
        raise ConfigError("expected a mapping namespace/name:port → URL", file=source, line=line_of(None),
                          field="backends")
    out: dict[BackendKey, str] = {}
    for key, url in node.items():
        where = f"backends.{key}"
        text = str(key)
        ref, _, port_text = text.partition(":")
        namespace, slash, name = ref.rpartition("/")
        if not slash:
            namespace = "default"
        if not name or (port_text and not port_text.isdigit()) or (port_text and not 0 < int(port_text) < 65536):
            raise ConfigError("expected namespace/name:port or namespace/name (a Service)", file=source,
                              line=line_of(key), field=where)
        if not isinstance(url, str):
            raise ConfigError("expected a URL like http://127.0.0.1:9001", file=source, line=line_of(key), field=where)
        try:
            server_from_url(url)
        except ValueError as exc:
            raise ConfigError(str(exc), file=source, line=line_of(key), field=where) from None
        out[(namespace or "default", name, int(port_text) if port_text else None)] = url
    return out


def load_gateway_api(path: str | Path) -> GatewayApiConfig:
    """Read, check and translate the manifests at `path` (file or directory)."""
    path = Path(path)
    manifests: Manifests = read_manifests(path)
    if not manifests.routes and not manifests.gateways:
        raise ConfigError("no Gateway nor HTTPRoute in the manifests", file=str(path))
    settings, source = manifests.settings if manifests.settings is not None else ({}, str(path))
    backends = _backends(settings, source)
    root = settings
    if "backends" in root:
        del root["backends"]  # ours: the rest is a Traefik-style document (http:, shadow:)
    base_dir = Path(source).parent if manifests.settings is not None else (path if path.is_dir() else path.parent)
    holder: dict[str, Any] = {}

    def extend(middlewares: Mapping[str, Middleware]) -> tuple[list[Router], dict[str, Service],
                                                                dict[str, Middleware]]:
        try:
            translation = translate(manifests, backends, middlewares)
        except ValueError as exc:
            raise ConfigError(str(exc), file=str(path)) from None
        holder["translation"] = translation
        return list(translation.routers), dict(translation.services), dict(translation.middlewares)

    config = build_config(root, source, base_dir=base_dir, extend=extend)
    translation = holder["translation"]
    return GatewayApiConfig(config, translation.statuses, translation.extra_conditions, tuple(manifests.ignored),
                            manifests.sources, tuple(manifests.gateways))


def load_gateway_config(path: str | Path, *, generated: Mapping[str, Service] | None = None) -> GatewayConfig:
    """The gateway's configuration from a Traefik-style file or from Gateway API manifests.
    `generated`: the multi-cluster provider's services (a Traefik-style file's hub.multiCluster)."""
    if is_gateway_api_source(path):
        return load_gateway_api(path).config
    return load_config(path, generated=generated)


def status_lines(loaded: GatewayApiConfig) -> list[str]:
    """Each route's status as a controller would write it, one line per parentRef, plus ignored documents."""
    lines = []
    for status in loaded.statuses:
        route = status.route
        problems = loaded.resolved_refs.get(route.doc.key, ())
        resolved = problems[0] if problems else Condition("ResolvedRefs", True, "ResolvedRefs")
        if not status.parents:
            lines.append(f"HTTPRoute {route.doc.key}: no parentRefs (attached to nothing); {resolved.describe()}")
        for parent in status.parents:
            accepted = parent.conditions[0]
            lines.append(f"HTTPRoute {route.doc.key} → {parent.parent}: {accepted.describe()}; {resolved.describe()}")
        lines.extend(f"    also {p.describe()}" for p in problems[1:])
    for doc in loaded.ignored:
        lines.append(f"ignored: {doc.kind} {doc.key} ({doc.file}, document {doc.index})")
    return lines


def gateway_status_lines(loaded: GatewayApiConfig) -> list[str]:
    """Each Gateway listener's status as a controller would write it: served or not, attached routes."""
    attached: dict[tuple[str, str], set[str]] = {}
    for status in loaded.statuses:
        for parent in status.parents:
            for attachment in parent.attachments:
                key = (attachment.gateway.doc.key, attachment.listener.name)
                attached.setdefault(key, set()).add(status.route.doc.key)
    lines = []
    for gateway in loaded.gateways:
        for listener in gateway.listeners:
            where = f"Gateway {gateway.doc.key} listener {listener.name} ({listener.protocol} :{listener.port}" + (
                f", {listener.hostname})" if listener.hostname else ")")
            if listener.protocol != "HTTP":
                lines.append(f"{where}: Accepted=False (UnsupportedProtocol): the shadow gateway serves HTTP "
                             "listeners only; attachedRoutes=0")
                continue
            count = len(attached.get((gateway.doc.key, listener.name), ()))
            lines.append(f"{where}: Accepted=True, Programmed=True; attachedRoutes={count}")
    return lines
