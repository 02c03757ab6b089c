"""What a Gateway API controller decides: which routes attach to which listeners, which references
resolve, the routes' status conditions, and the order in which matches are tried.

Pure functions over shadow.gatewayapi.manifests' objects; no I/O.

- **Attachment** (per parentRef): the Gateway must exist (and, when the manifests declare
  GatewayClasses, name one of them); `sectionName` / `port` select its listeners; only `HTTP`
  listeners are served (shadow has one plain-HTTP entry point); a listener's `allowedRoutes`
  (namespaces Same / All / Selector, kinds) must admit the route; route and listener hostnames must
  intersect. Status: `Accepted` True, or False with NoMatchingParent, NotAllowedByListeners,
  NoMatchingListenerHostname.
- **References** (backendRefs, mirror backendRefs): a core Service (else InvalidKind), in the
  route's namespace or one whose ReferenceGrant admits it (else RefNotPermitted), for which shadow's
  `backends` mapping gives a URL and whose declared ports (when the Service is in the manifests)
  include the port (else BackendNotFound). Status: `ResolvedRefs` True, or False with the first reason.
- **Precedence** (the HTTPRoute spec): the most specific hostname (characters of a non-wildcard
  hostname, then of any hostname), then Exact path, then the longest PathPrefix (a
  RegularExpression path ranks after prefixes, by length), a method match, more header matches, more
  query matches; then the oldest route (metadata.creationTimestamp), then namespace/name
  alphabetically, then the rule's and match's position in the route.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from shadow.gatewayapi.manifests import (
    GROUP,
    BackendRef,
    Gateway,
    HTTPRoute,
    Listener,
    Manifests,
    Match,
    ParentRef,
    RouteRule,
)

__all__ = [
    "Attachment",
    "BackendKey",
    "Condition",
    "ParentStatus",
    "Resolution",
    "RouteStatus",
    "RoutedMatch",
    "attach",
    "intersect_hostnames",
    "match_order",
    "resolve_backend",
]

BackendKey = tuple[str, str, int | None]  # (namespace, name, port)


@dataclass(frozen=True)
class Condition:
    type: str  # Accepted | ResolvedRefs
    status: bool
    reason: str
    message: str = ""

    def describe(self) -> str:
        text = f"{self.type}={'True' if self.status else 'False'} ({self.reason})"
        return f"{text}: {self.message}" if self.message else text


@dataclass(frozen=True)
class Attachment:
    """A route attached to one listener, with the hostnames it serves there (None: any host)."""

    gateway: Gateway
    listener: Listener
    hostnames: tuple[str | None, ...]


@dataclass(frozen=True)
class ParentStatus:
    parent: str  # namespace/name[/sectionName][:port]
    conditions: tuple[Condition, ...]
    attachments: tuple[Attachment, ...]


@dataclass(frozen=True)
class RouteStatus:
    route: HTTPRoute
    parents: tuple[ParentStatus, ...]

    @property
    def accepted(self) -> bool:
        return any(p.attachments for p in self.parents)


@dataclass(frozen=True)
class Resolution:
    ref: BackendRef
    key: BackendKey | None  # None: the reference does not resolve
    reason: str = "ResolvedRefs"
    message: str = ""


@dataclass(frozen=True)
class RoutedMatch:
    """One (hostname, listener port, rule, match) of an accepted route: one router."""

    route: HTTPRoute
    rule_index: int
    match_index: int
    rule: RouteRule
    match: Match
    hostname: str | None
    listener_port: int


# --------------------------------------------------------------------------------------------------
# Hostnames
# --------------------------------------------------------------------------------------------------

def _covers(wildcard: str, host: str) -> bool:
    """`*.example.com` covers `a.example.com`, `a.b.example.com` and `*.a.example.com`, not `example.com`."""
    suffix = wildcard[1:]  # ".example.com"
    return host.endswith(suffix) and len(host) > len(suffix)


def intersect_hostnames(listener: str | None, route: tuple[str, ...]) -> tuple[str | None, ...]:
    """The hostnames a route serves on a listener; () means they do not intersect."""
    if not route:
        return (listener,)
    if listener is None:
        return tuple(route)
    out: list[str | None] = []
    for host in route:
        if host == listener or (listener.startswith("*.") and _covers(listener, host)):
            out.append(host)
        elif host.startswith("*.") and _covers(host, listener):
            out.append(listener)
    return tuple(dict.fromkeys(out))


# --------------------------------------------------------------------------------------------------
# Attachment
# --------------------------------------------------------------------------------------------------

def _namespace_labels(manifests: Manifests, namespace: str) -> dict[str, str]:
    labels = {"kubernetes.io/metadata.name": namespace}
    for ns in manifests.namespaces:
        if ns.doc.name == namespace:
            labels.update(dict(ns.labels))
    return labels


def _selector_admits(listener: Listener, labels: Mapping[str, str]) -> bool:
    if any(labels.get(k) != v for k, v in listener.selector):
        return False
    for key, op, values in listener.selector_expressions:
        present = key in labels
        if op == "In" and not (present and labels[key] in values):
            return False
        if op == "NotIn" and present and labels[key] in values:
            return False
        if op == "Exists" and not present:
            return False
        if op == "DoesNotExist" and present:
            return False
    return True


def _admits(manifests: Manifests, gateway: Gateway, listener: Listener, route: HTTPRoute) -> bool:
    if listener.kinds and not any(g == GROUP and k == "HTTPRoute" for g, k in listener.kinds):
        return False
    if listener.namespaces_from == "All":
        return True
    if listener.namespaces_from == "Same":
        return route.doc.namespace == gateway.doc.namespace
    return _selector_admits(listener, _namespace_labels(manifests, route.doc.namespace))


def _parent_label(route: HTTPRoute, ref: ParentRef) -> str:
    text = f"{ref.namespace or route.doc.namespace}/{ref.name}"
    if ref.section_name:
        text += f"/{ref.section_name}"
    return text + (f":{ref.port}" if ref.port else "")


def _attach_one(manifests: Manifests, route: HTTPRoute, ref: ParentRef) -> ParentStatus:
    label = _parent_label(route, ref)

    def refused(reason: str, message: str) -> ParentStatus:
        return ParentStatus(label, (Condition("Accepted", False, reason, message),), ())

    if ref.group != GROUP or ref.kind != "Gateway":
        return refused("NoMatchingParent", f"parent kind {ref.group}/{ref.kind} is not served (only Gateway)")
    namespace = ref.namespace or route.doc.namespace
    gateway = next((g for g in manifests.gateways if g.doc.namespace == namespace and g.doc.name == ref.name), None)
    if gateway is None:
        return refused("NoMatchingParent", f"no Gateway {namespace}/{ref.name} in the manifests")
    classes = {c.doc.name for c in manifests.classes}
    if classes and gateway.class_name not in classes:
        return refused("NoMatchingParent", f"Gateway {gateway.doc.key} names GatewayClass "
                       f"{gateway.class_name!r}, which the manifests do not declare")
    listeners = [lis for lis in gateway.listeners
                 if (ref.section_name is None or lis.name == ref.section_name)
                 and (ref.port is None or lis.port == ref.port)]
    if not listeners:
        return refused("NoMatchingParent", "no listener with this sectionName/port")
    served = [lis for lis in listeners if lis.protocol == "HTTP"]
    if not served:
        return refused("NoMatchingParent", "only HTTP listeners are served by the shadow gateway")
    allowed = [lis for lis in served if _admits(manifests, gateway, lis, route)]
    if not allowed:
        return refused("NotAllowedByListeners", "the listeners' allowedRoutes do not admit this route")
    attachments = []
    for lis in allowed:
        hosts = intersect_hostnames(lis.hostname, route.hostnames)
        if hosts:
            attachments.append(Attachment(gateway, lis, hosts))
    if not attachments:
        return refused("NoMatchingListenerHostname", "no route hostname intersects a listener hostname")
    return ParentStatus(label, (Condition("Accepted", True, "Accepted"),), tuple(attachments))


def attach(manifests: Manifests, route: HTTPRoute) -> tuple[ParentStatus, ...]:
    """The route's status per parentRef, with the listeners it is attached to."""
    return tuple(_attach_one(manifests, route, ref) for ref in route.parents)


# --------------------------------------------------------------------------------------------------
# References
# --------------------------------------------------------------------------------------------------

def _granted(manifests: Manifests, route: HTTPRoute, namespace: str, name: str) -> bool:
    for grant in manifests.grants:
        if grant.doc.namespace != namespace:
            continue
        if not any(g == GROUP and k == "HTTPRoute" and ns == route.doc.namespace for g, k, ns in grant.from_):
            continue
        if any(g == "" and k == "Service" and (n is None or n == name) for g, k, n in grant.to):
            return True
    return False


def resolve_backend(manifests: Manifests, backends: Mapping[BackendKey, str], route: HTTPRoute,
                    ref: BackendRef) -> Resolution:
    """Where a backendRef goes (a key of `backends`), or why it does not resolve."""
    if ref.group != "" or ref.kind != "Service":
        return Resolution(ref, None, "InvalidKind", f"{ref.field}: kind {ref.group or 'core'}/{ref.kind} "
                          "is not supported (only core Service)")
    namespace = ref.namespace or route.doc.namespace
    if namespace != route.doc.namespace and not _granted(manifests, route, namespace, ref.name):
        return Resolution(ref, None, "RefNotPermitted", f"{ref.field}: no ReferenceGrant in {namespace} "
                          f"admits HTTPRoutes from {route.doc.namespace}")
    service = next((s for s in manifests.services if s.doc.namespace == namespace and s.doc.name == ref.name), None)
    if service is not None and ref.port is not None and ref.port not in service.ports:
        return Resolution(ref, None, "BackendNotFound", f"{ref.field}: Service {namespace}/{ref.name} "
                          f"has no port {ref.port}")
    for key in ((namespace, ref.name, ref.port), (namespace, ref.name, None)):
        if key in backends:
            return Resolution(ref, key)
    where = "in the manifests nor" if service is None else "with"
    return Resolution(ref, None, "BackendNotFound", f"{ref.field}: no Service {namespace}/{ref.name}"
                      f"{':' + str(ref.port) if ref.port else ''} {where} a URL in shadow's backends")


# --------------------------------------------------------------------------------------------------
# Precedence
# --------------------------------------------------------------------------------------------------

_PATH_RANK = {"Exact": 2, "PathPrefix": 1, "RegularExpression": 0}


def match_order(item: RoutedMatch) -> tuple[object, ...]:
    """Sort key: the match that must be tried first sorts first."""
    host = item.hostname or ""
    route = item.route
    match = item.match
    path_len = len(match.path.rstrip("/")) if match.path_type == "PathPrefix" else len(match.path)
    return (
        -(0 if host.startswith("*") else len(host)), -len(host),
        -_PATH_RANK[match.path_type], -path_len,
        -(match.method is not None), -len(match.headers), -len(match.query),
        route.created is None, route.created or "", route.doc.namespace, route.doc.name,
        item.rule_index, item.match_index, item.listener_port,
    )
