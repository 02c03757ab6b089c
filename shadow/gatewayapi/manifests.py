"""Kubernetes Gateway API manifests: read YAML documents, check them as the API server would, type them.

A source is a file or a directory of `*.yaml` / `*.yml` files (not recursive, sorted by name), each
holding one or more YAML documents separated by `---`, as `kubectl apply -f` takes them. Documents are
sorted by kind:

- `gateway.networking.k8s.io/*` GatewayClass, Gateway, HTTPRoute, ReferenceGrant (v1 and v1beta1),
- core `v1` Service and Namespace (a Service tells which ports exist; a Namespace its labels, for a
  listener's `allowedRoutes.namespaces.selector`),
- documents of other kinds (Deployment, ConfigMap, GRPCRoute...) are listed as ignored,
- at most one document without `apiVersion`: shadow's own settings (see shadow.gatewayapi.provider).

What the API server's schema validation would refuse (a wrong type, a value outside an enum, a
missing required field, a path that does not start with '/', a weight outside 0..1000000...) is a
`ConfigError` naming file, line, document number, object and field::

    routes.yaml:23: document 2, HTTPRoute infra/web, spec.rules[0].matches[0].path.type: must be one of
    Exact, PathPrefix, RegularExpression, got 'Prefix'

What a controller reports in `status` instead (a reference to nothing, a route its listener does not
allow) is decided later, in shadow.gatewayapi.resolve.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

from shadow.errors import ConfigError
from shadow.gateway.goregex import GoRegexpError, compile_go
from shadow.yamlconfig import load_yaml_all, read_yaml_file

__all__ = [
    "GROUP",
    "BackendRef",
    "CorsPolicy",
    "Document",
    "Filter",
    "Gateway",
    "GatewayClass",
    "HTTPRoute",
    "HeaderEdits",
    "Listener",
    "Manifests",
    "Match",
    "Mirror",
    "Namespace",
    "ParentRef",
    "Redirect",
    "ReferenceGrant",
    "Rewrite",
    "RouteRule",
    "RuleRetry",
    "RuleTimeouts",
    "ServiceManifest",
    "is_gateway_api_text",
    "read_manifests",
]

GROUP = "gateway.networking.k8s.io"
_GATEWAY_VERSIONS = ("v1", "v1beta1")
_MAX_WEIGHT = 1_000_000
_HEADER_NAME = re.compile(r"^[A-Za-z0-9!#$%&'*+\-.^_`|~]+$")
_HOSTNAME = re.compile(r"^(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
# Gateway API's Duration (GEP-2257): 1 to 4 groups of up to 5 digits and a unit; "0s" disables.
_DURATION = re.compile(r"^([0-9]{1,5}(h|m|s|ms)){1,4}$")
_DURATION_PART = re.compile(r"([0-9]{1,5})(h|ms|m|s)")
_UNIT_S = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
_CORS_ORIGIN = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://[^/?#\s]+$")
_METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH")


# --------------------------------------------------------------------------------------------------
# Typed objects
# --------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Document:
    """Where an object came from, for error messages and status."""

    file: str
    index: int  # 1-based position of the document in its file
    line: int  # 1-based line where the document starts
    kind: str
    namespace: str
    name: str

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    def where(self) -> str:
        return f"document {self.index}, {self.kind} {self.key}"


@dataclass(frozen=True)
class GatewayClass:
    doc: Document
    controller_name: str


@dataclass(frozen=True)
class Listener:
    name: str
    port: int
    protocol: str  # HTTP | HTTPS | TLS | TCP | UDP (only HTTP is served)
    hostname: str | None
    namespaces_from: str  # Same | All | Selector
    selector: tuple[tuple[str, str], ...]  # matchLabels
    selector_expressions: tuple[tuple[str, str, tuple[str, ...]], ...]  # (key, operator, values)
    kinds: tuple[tuple[str, str], ...]  # allowedRoutes.kinds (group, kind); () = the protocol's default


@dataclass(frozen=True)
class Gateway:
    doc: Document
    class_name: str
    listeners: tuple[Listener, ...]


@dataclass(frozen=True)
class ParentRef:
    group: str
    kind: str
    namespace: str | None  # None: the route's
    name: str
    section_name: str | None
    port: int | None


@dataclass(frozen=True)
class Match:
    path_type: str  # Exact | PathPrefix | RegularExpression
    path: str
    headers: tuple[tuple[str, str, str], ...]  # (type, name, value), type Exact | RegularExpression
    query: tuple[tuple[str, str, str], ...]
    method: str | None


@dataclass(frozen=True)
class HeaderEdits:
    set: tuple[tuple[str, str], ...] = ()
    add: tuple[tuple[str, str], ...] = ()
    remove: tuple[str, ...] = ()


@dataclass(frozen=True)
class Redirect:
    scheme: str | None
    hostname: str | None
    port: int | None
    path_type: str | None  # ReplaceFullPath | ReplacePrefixMatch | None
    path: str | None
    status_code: int


@dataclass(frozen=True)
class Rewrite:
    hostname: str | None
    path_type: str | None
    path: str | None


@dataclass(frozen=True)
class BackendRef:
    group: str
    kind: str
    namespace: str | None
    name: str
    port: int | None
    weight: int
    field: str  # dotted field, for status messages
    request_headers: tuple[HeaderEdits, ...] = ()  # the backendRef's own RequestHeaderModifier filters


@dataclass(frozen=True)
class Mirror:
    backend: BackendRef
    numerator: int  # copies = numerator / denominator of the requests
    denominator: int


@dataclass(frozen=True)
class CorsPolicy:
    """A CORS filter: origins ("*", or scheme://host[:port] where `*` in the host matches anything,
    periods included), methods, headers ("*": any), credentials, and how long a preflight holds."""

    allow_origins: tuple[str, ...] = ()
    allow_methods: tuple[str, ...] = ()
    allow_headers: tuple[str, ...] = ()
    expose_headers: tuple[str, ...] = ()
    allow_credentials: bool = False
    max_age_s: int = 5  # the API's default


@dataclass(frozen=True)
class Filter:
    type: str
    request_headers: HeaderEdits | None = None
    response_headers: HeaderEdits | None = None
    redirect: Redirect | None = None
    rewrite: Rewrite | None = None
    mirror: Mirror | None = None
    extension: tuple[str, str, str] | None = None  # (group, kind, name)
    cors: CorsPolicy | None = None


@dataclass(frozen=True)
class RuleTimeouts:
    """`timeouts`: seconds; 0 disables, None leaves the gateway's default."""

    request_s: float | None = None
    backend_request_s: float | None = None


@dataclass(frozen=True)
class RuleRetry:
    """`retry`: the answer codes retried (connection errors and backend timeouts always are), how
    many times a request is retried (None: the implementation's choice), the wait between tries."""

    codes: tuple[int, ...] = ()
    attempts: int | None = None
    backoff_s: float | None = None


@dataclass(frozen=True)
class RouteRule:
    name: str | None
    matches: tuple[Match, ...]
    filters: tuple[Filter, ...]
    backends: tuple[BackendRef, ...]
    timeouts: RuleTimeouts | None = None
    retry: RuleRetry | None = None


@dataclass(frozen=True)
class HTTPRoute:
    doc: Document
    parents: tuple[ParentRef, ...]
    hostnames: tuple[str, ...]
    rules: tuple[RouteRule, ...]
    created: str | None  # metadata.creationTimestamp (precedence between equal matches)


@dataclass(frozen=True)
class ServiceManifest:
    doc: Document
    ports: tuple[int, ...]


@dataclass(frozen=True)
class ReferenceGrant:
    doc: Document
    from_: tuple[tuple[str, str, str], ...]  # (group, kind, namespace)
    to: tuple[tuple[str, str, str | None], ...]  # (group, kind, name or None: all)


@dataclass(frozen=True)
class Namespace:
    doc: Document
    labels: tuple[tuple[str, str], ...]


@dataclass
class Manifests:
    sources: tuple[str, ...] = ()
    classes: list[GatewayClass] = field(default_factory=list)
    gateways: list[Gateway] = field(default_factory=list)
    routes: list[HTTPRoute] = field(default_factory=list)
    services: list[ServiceManifest] = field(default_factory=list)
    grants: list[ReferenceGrant] = field(default_factory=list)
    namespaces: list[Namespace] = field(default_factory=list)
    ignored: list[Document] = field(default_factory=list)
    # The one document without apiVersion (shadow's settings), with its file, or None.
    settings: tuple[Any, str] | None = None


# --------------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------------

def is_gateway_api_text(text: str) -> bool:
    """True when some document of `text` declares a gateway.networking.k8s.io apiVersion."""
    return re.search(r"(?m)^\s*apiVersion\s*:\s*[\"']?gateway\.networking\.k8s\.io/", text) is not None


def _files(path: Path) -> list[Path]:
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file()
                       and not p.name.startswith("."))
        if not files:
            raise ConfigError("no .yaml or .yml file in this directory", file=str(path))
        return files
    if not path.exists():
        raise ConfigError("no such file or directory", file=str(path))
    return [path]


def read_manifests(path: str | Path) -> Manifests:
    """Every document of the file or directory at `path`, checked and typed."""
    path = Path(path)
    out = Manifests(sources=tuple(str(p) for p in _files(path)))
    for file in _files(path):
        source = str(file)
        # The shared reader's bounds (size, nesting, alias expansion) hold for each manifest file.
        for index, node in enumerate(load_yaml_all(read_yaml_file(file), source), start=1):
            if node is None:
                continue
            _Doc(source, index, node, out).read()
    return out


# --------------------------------------------------------------------------------------------------
# One document
# --------------------------------------------------------------------------------------------------

def _kind_of(value: object) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return "null" if value is None else type(value).__name__


class _Doc:
    """Typed, located access to one document; every failure names file, line, document and field."""

    def __init__(self, source: str, index: int, node: Any, out: Manifests) -> None:
        self.source, self.index, self.root, self.out = source, index, node, out
        self.start = self._line(node) or 1
        self.label = f"document {index}"

    # ---- errors and lines

    @staticmethod
    def _line(node: Any) -> int | None:
        lc = getattr(node, "lc", None)
        return int(lc.line) + 1 if lc is not None and lc.line is not None else None

    @staticmethod
    def _key_line(node: Any, key: Any) -> int | None:
        try:
            return int(node.lc.key(key)[0]) + 1
        except (AttributeError, KeyError, TypeError):
            return None

    @staticmethod
    def _item_line(node: Any, index: int) -> int | None:
        try:
            return int(node.lc.item(index)[0]) + 1
        except (AttributeError, KeyError, TypeError, IndexError):
            return None

    def fail(self, message: str, field: str, line: int | None = None) -> NoReturn:
        raise ConfigError(message, file=self.source, line=line or self.start,
                          field=f"{self.label}, {field}" if field else self.label)

    # ---- typed getters: (parent mapping, key) → value

    def mapping(self, parent: Any, key: str, where: str, *, required: bool = False) -> dict[Any, Any]:
        value = parent.get(key) if isinstance(parent, dict) else None
        line = self._key_line(parent, key)
        if value is None:
            if required:
                self.fail("required", f"{where}.{key}".lstrip("."), self._line(parent))
            return {}
        if not isinstance(value, dict):
            self.fail(f"expected a mapping, got {_kind_of(value)}", f"{where}.{key}".lstrip("."), line)
        return value

    def seq(self, parent: Any, key: str, where: str, *, required: bool = False, max_items: int = 0) -> list[Any]:
        value = parent.get(key)
        field = f"{where}.{key}".lstrip(".")
        if value is None:
            if required:
                self.fail("required", field, self._line(parent))
            return []
        if not isinstance(value, list):
            self.fail(f"expected a list, got {_kind_of(value)}", field, self._key_line(parent, key))
        if max_items and len(value) > max_items:
            self.fail(f"at most {max_items} items, got {len(value)}", field, self._key_line(parent, key))
        return value

    def string(self, parent: Any, key: str, where: str, *, required: bool = False,
               choices: tuple[str, ...] = (), default: str | None = None) -> str | None:
        value = parent.get(key)
        field = f"{where}.{key}".lstrip(".")
        line = self._key_line(parent, key) or self._line(parent)
        if value is None:
            if required:
                self.fail("required", field, line)
            return default
        if not isinstance(value, str):
            self.fail(f"expected a string, got {_kind_of(value)}", field, line)
        if choices and value not in choices:
            self.fail(f"must be one of {', '.join(choices)}, got {value!r}", field, line)
        return str(value)

    def req_string(self, parent: Any, key: str, where: str, **kw: Any) -> str:
        value = self.string(parent, key, where, required=True, **kw)
        assert value is not None
        if not value:
            self.fail("must not be empty", f"{where}.{key}".lstrip("."), self._key_line(parent, key))
        return value

    def integer(self, parent: Any, key: str, where: str, *, minimum: int, maximum: int,
                required: bool = False, default: int | None = None) -> int | None:
        value = parent.get(key)
        field = f"{where}.{key}".lstrip(".")
        line = self._key_line(parent, key) or self._line(parent)
        if value is None:
            if required:
                self.fail("required", field, line)
            return default
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(f"expected an integer, got {_kind_of(value)}", field, line)
        if not minimum <= value <= maximum:
            self.fail(f"must be between {minimum} and {maximum}, got {value}", field, line)
        return int(value)

    def check_keys(self, node: dict[Any, Any], where: str, allowed: tuple[str, ...]) -> None:
        for key in node:
            if key not in allowed:
                self.fail(f"unknown field (expected one of {', '.join(allowed)})", f"{where}.{key}".lstrip("."),
                          self._key_line(node, key))

    def regexp(self, pattern: str, field: str, line: int | None) -> None:
        """Matched as Traefik's *Regexp matchers are: Go's RE2 syntax (shadow.gateway.goregex)."""
        try:
            compile_go(pattern)
        except GoRegexpError as exc:
            self.fail(f"invalid regular expression (Go's RE2 syntax): {exc}", field, line)

    def path_value(self, parent: Any, key: str, where: str) -> str:
        value = self.req_string(parent, key, where)
        if not value.startswith("/"):
            self.fail(f"must start with '/', got {value!r}", f"{where}.{key}", self._key_line(parent, key))
        if "//" in value or "/./" in value or "/../" in value or value.endswith(("/..", "/.")):
            self.fail(f"must not contain '//', '/./' or '/../', got {value!r}", f"{where}.{key}",
                      self._key_line(parent, key))
        return value

    def hostname(self, value: Any, field: str, line: int | None, *, wildcard: bool = True) -> str:
        if not isinstance(value, str):
            self.fail(f"expected a string, got {_kind_of(value)}", field, line)
        if not _HOSTNAME.match(value) or len(value) > 253 or (not wildcard and value.startswith("*")):
            self.fail(f"not a valid hostname{' (a leading *. is the only wildcard)' if wildcard else ''}: "
                      f"{value!r}", field, line)
        if re.match(r"^[0-9.]+$", value):
            self.fail(f"an IP address is not a hostname here: {value!r}", field, line)
        return value

    # ---- the document

    def read(self) -> None:
        node = self.root
        if not isinstance(node, dict):
            self.fail(f"expected a mapping (a Kubernetes object), got {_kind_of(node)}", "")
        api = node.get("apiVersion")
        if api is None:
            if "kind" in node:
                self.fail("required", "apiVersion")
            if self.out.settings is not None:
                other = self.out.settings[1]
                self.fail(f"a second document without apiVersion (shadow's settings are already in {other})", "")
            self.out.settings = (node, self.source)
            return
        if not isinstance(api, str):
            self.fail(f"expected a string, got {_kind_of(api)}", "apiVersion", self._key_line(node, "apiVersion"))
        kind = self.req_string(node, "kind", "")
        meta = self.mapping(node, "metadata", "", required=True)
        name = self.req_string(meta, "name", "metadata")
        namespace = self.string(meta, "namespace", "metadata", default="default") or "default"
        for key, value in (("metadata.name", name), ("metadata.namespace", namespace)):
            if len(value) > 253 or not re.match(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$", value):
                self.fail(f"not a valid Kubernetes name: {value!r}", key, self._key_line(meta, key.split(".")[1]))
        doc = Document(self.source, self.index, self.start, kind, namespace, name)
        self.label = doc.where()
        group, _, version = api.rpartition("/")
        if group == GROUP and kind in ("GatewayClass", "Gateway", "HTTPRoute", "ReferenceGrant"):
            if version not in _GATEWAY_VERSIONS:
                self.fail(f"unsupported version {version!r} (expected {' or '.join(_GATEWAY_VERSIONS)})",
                          "apiVersion", self._key_line(node, "apiVersion"))
            spec = self.mapping(node, "spec", "", required=True)
            if kind == "GatewayClass":
                self.out.classes.append(GatewayClass(doc, self.req_string(spec, "controllerName", "spec")))
            elif kind == "Gateway":
                self.out.gateways.append(self._gateway(doc, spec))
            elif kind == "HTTPRoute":
                created = meta.get("creationTimestamp")
                self.out.routes.append(self._route(doc, spec, None if created is None else str(created)))
            else:
                self.out.grants.append(self._grant(doc, spec))
        elif api == "v1" and kind == "Service":
            spec = self.mapping(node, "spec", "")
            ports = []
            for i, item in enumerate(self.seq(spec, "ports", "spec")):
                where = f"spec.ports[{i}]"
                if not isinstance(item, dict):
                    self.fail(f"expected a mapping, got {_kind_of(item)}", where, self._item_line(spec.get("ports"), i))
                port = self.integer(item, "port", where, minimum=1, maximum=65535, required=True)
                assert port is not None
                ports.append(port)
            self.out.services.append(ServiceManifest(doc, tuple(ports)))
        elif api == "v1" and kind == "Namespace":
            labels = self.mapping(meta, "labels", "metadata")
            self.out.namespaces.append(Namespace(doc, tuple((str(k), str(v)) for k, v in labels.items())))
        else:
            self.out.ignored.append(doc)

    # ---- Gateway

    def _gateway(self, doc: Document, spec: dict[Any, Any]) -> Gateway:
        class_name = self.req_string(spec, "gatewayClassName", "spec")
        listeners = []
        names: set[str] = set()
        items = self.seq(spec, "listeners", "spec", required=True, max_items=64)
        if not items:
            self.fail("at least one listener is required", "spec.listeners", self._key_line(spec, "listeners"))
        for i, item in enumerate(items):
            where = f"spec.listeners[{i}]"
            if not isinstance(item, dict):
                self.fail(f"expected a mapping, got {_kind_of(item)}", where, self._item_line(items, i))
            name = self.req_string(item, "name", where)
            if name in names:
                self.fail(f"listener name {name!r} is used twice", f"{where}.name", self._key_line(item, "name"))
            names.add(name)
            port = self.integer(item, "port", where, minimum=1, maximum=65535, required=True)
            protocol = self.req_string(item, "protocol", where)
            hostname = item.get("hostname")
            if hostname is not None:
                hostname = self.hostname(hostname, f"{where}.hostname", self._key_line(item, "hostname"))
            allowed = self.mapping(item, "allowedRoutes", where)
            ns = self.mapping(allowed, "namespaces", f"{where}.allowedRoutes")
            ns_where = f"{where}.allowedRoutes.namespaces"
            origin = self.string(ns, "from", ns_where, choices=("All", "Same", "Selector"), default="Same") or "Same"
            selector = self.mapping(ns, "selector", ns_where)
            if origin == "Selector" and not selector:
                self.fail("from: Selector needs a selector", f"{ns_where}.selector", self._key_line(ns, "from"))
            labels = self.mapping(selector, "matchLabels", f"{ns_where}.selector")
            expressions = []
            for j, expr in enumerate(self.seq(selector, "matchExpressions", f"{ns_where}.selector")):
                e_where = f"{ns_where}.selector.matchExpressions[{j}]"
                if not isinstance(expr, dict):
                    self.fail(f"expected a mapping, got {_kind_of(expr)}", e_where)
                op = self.req_string(expr, "operator", e_where, choices=("In", "NotIn", "Exists", "DoesNotExist"))
                values = tuple(str(v) for v in self.seq(expr, "values", e_where))
                expressions.append((self.req_string(expr, "key", e_where), op, values))
            kinds = []
            for j, k in enumerate(self.seq(allowed, "kinds", f"{where}.allowedRoutes")):
                k_where = f"{where}.allowedRoutes.kinds[{j}]"
                if not isinstance(k, dict):
                    self.fail(f"expected a mapping, got {_kind_of(k)}", k_where)
                kinds.append((self.string(k, "group", k_where, default=GROUP) or "", self.req_string(k, "kind", k_where)))
            assert port is not None
            listeners.append(Listener(name, port, protocol, hostname, origin,
                                      tuple((str(k), str(v)) for k, v in labels.items()), tuple(expressions),
                                      tuple(kinds)))
        return Gateway(doc, class_name, tuple(listeners))

    # ---- ReferenceGrant

    def _grant(self, doc: Document, spec: dict[Any, Any]) -> ReferenceGrant:
        froms, tos = [], []
        for i, item in enumerate(self.seq(spec, "from", "spec", required=True)):
            where = f"spec.from[{i}]"
            if not isinstance(item, dict):
                self.fail(f"expected a mapping, got {_kind_of(item)}", where)
            froms.append((self.string(item, "group", where, required=True) or "", self.req_string(item, "kind", where),
                          self.req_string(item, "namespace", where)))
        for i, item in enumerate(self.seq(spec, "to", "spec", required=True)):
            where = f"spec.to[{i}]"
            if not isinstance(item, dict):
                self.fail(f"expected a mapping, got {_kind_of(item)}", where)
            tos.append((self.string(item, "group", where, required=True) or "", self.req_string(item, "kind", where),
                        self.string(item, "name", where)))
        return ReferenceGrant(doc, tuple(froms), tuple(tos))

    # ---- HTTPRoute

    def _route(self, doc: Document, spec: dict[Any, Any], created: str | None) -> HTTPRoute:
        self.check_keys(spec, "spec", ("parentRefs", "hostnames", "rules"))
        parents = []
        items = self.seq(spec, "parentRefs", "spec", max_items=32)
        for i, item in enumerate(items):
            where = f"spec.parentRefs[{i}]"
            if not isinstance(item, dict):
                self.fail(f"expected a mapping, got {_kind_of(item)}", where, self._item_line(items, i))
            self.check_keys(item, where, ("group", "kind", "namespace", "name", "sectionName", "port"))
            parents.append(ParentRef(
                self.string(item, "group", where, default=GROUP) or "", self.string(item, "kind", where, default="Gateway")
                or "Gateway", self.string(item, "namespace", where), self.req_string(item, "name", where),
                self.string(item, "sectionName", where),
                self.integer(item, "port", where, minimum=1, maximum=65535)))
        hostnames = []
        h_items = self.seq(spec, "hostnames", "spec", max_items=16)
        for i, h in enumerate(h_items):
            hostnames.append(self.hostname(h, f"spec.hostnames[{i}]", self._item_line(h_items, i)))
        rules = []
        r_items = self.seq(spec, "rules", "spec", max_items=16)
        if not r_items:  # the API server's default: one rule, matching PathPrefix /, without backends
            rules.append(RouteRule(None, (Match("PathPrefix", "/", (), (), None),), (), ()))
        for i, item in enumerate(r_items):
            rules.append(self._rule(item, f"spec.rules[{i}]", self._item_line(r_items, i)))
        names = [r.name for r in rules if r.name]
        if len(names) != len(set(names)):
            self.fail("rule names must be unique", "spec.rules")
        return HTTPRoute(doc, tuple(parents), tuple(hostnames), tuple(rules), created)

    def _rule(self, item: Any, where: str, line: int | None) -> RouteRule:
        if not isinstance(item, dict):
            self.fail(f"expected a mapping, got {_kind_of(item)}", where, line)
        self.check_keys(item, where, ("name", "matches", "filters", "backendRefs", "timeouts", "retry",
                                      "sessionPersistence"))
        for unsupported in ("sessionPersistence",):
            if unsupported in item:
                self.fail("not supported yet by the shadow gateway", f"{where}.{unsupported}",
                          self._key_line(item, unsupported))
        name = self.string(item, "name", where)
        matches = []
        m_items = self.seq(item, "matches", where, max_items=64)
        for j, m in enumerate(m_items):
            matches.append(self._match(m, f"{where}.matches[{j}]", self._item_line(m_items, j)))
        if not matches:
            matches.append(Match("PathPrefix", "/", (), (), None))
        filters = tuple(self._filter(f, f"{where}.filters[{j}]", self._item_line(item.get("filters"), j))
                        for j, f in enumerate(self.seq(item, "filters", where, max_items=16)))
        self._check_filter_combination(filters, where, matches)
        backends = []
        b_items = self.seq(item, "backendRefs", where, max_items=16)
        for j, b in enumerate(b_items):
            b_where = f"{where}.backendRefs[{j}]"
            if not isinstance(b, dict):
                self.fail(f"expected a mapping, got {_kind_of(b)}", b_where, self._item_line(b_items, j))
            backends.append(self._backend(b, b_where, weighted=True))
        return RouteRule(name, tuple(matches), filters, tuple(backends), self._timeouts(item, where),
                         self._retry(item, where))

    def duration(self, parent: Any, key: str, where: str) -> float | None:
        """A Gateway API Duration in seconds ("1h30m", "500ms"); None when absent."""
        value = self.string(parent, key, where)
        if value is None:
            return None
        if not _DURATION.match(value):
            self.fail(f"invalid duration {value!r} (Gateway API durations: 1 to 4 groups of up to 5 digits "
                      "and a unit h, m, s or ms, e.g. 1s, 500ms, 1m30s)", f"{where}.{key}",
                      self._key_line(parent, key))
        return sum(int(n) * _UNIT_S[unit] for n, unit in _DURATION_PART.findall(value))

    def _timeouts(self, item: dict[Any, Any], where: str) -> RuleTimeouts | None:
        if "timeouts" not in item:
            return None
        node = self.mapping(item, "timeouts", where)
        t_where = f"{where}.timeouts"
        self.check_keys(node, t_where, ("request", "backendRequest"))
        request, backend = self.duration(node, "request", t_where), self.duration(node, "backendRequest", t_where)
        if request and backend and backend > request:  # the CRD's validation rule
            self.fail("backendRequest timeout cannot be longer than request timeout", t_where,
                      self._key_line(item, "timeouts"))
        return RuleTimeouts(request, backend)

    def _retry(self, item: dict[Any, Any], where: str) -> RuleRetry | None:
        if "retry" not in item:
            return None
        node = self.mapping(item, "retry", where)
        r_where = f"{where}.retry"
        self.check_keys(node, r_where, ("codes", "attempts", "backoff"))
        codes = []
        c_items = self.seq(node, "codes", r_where, max_items=200)
        for j, code in enumerate(c_items):
            if isinstance(code, bool) or not isinstance(code, int) or not 400 <= code <= 599:
                self.fail(f"must be an HTTP status code between 400 and 599, got {code!r}", f"{r_where}.codes[{j}]",
                          self._item_line(c_items, j))
            codes.append(int(code))
        attempts = self.integer(node, "attempts", r_where, minimum=0, maximum=1000)
        return RuleRetry(tuple(dict.fromkeys(codes)), attempts, self.duration(node, "backoff", r_where))

    def _check_filter_combination(self, filters: tuple[Filter, ...], where: str, matches: list[Match]) -> None:
        types = [f.type for f in filters]
        for t in ("RequestHeaderModifier", "ResponseHeaderModifier", "RequestRedirect", "URLRewrite"):
            if types.count(t) > 1:
                self.fail(f"{t} may appear at most once per rule", f"{where}.filters")
        if "RequestRedirect" in types and "URLRewrite" in types:
            self.fail("RequestRedirect and URLRewrite cannot be used together", f"{where}.filters")
        for f in filters:
            prefix_path = (f.redirect.path_type if f.redirect else f.rewrite.path_type if f.rewrite else None)
            if prefix_path == "ReplacePrefixMatch" and any(m.path_type != "PathPrefix" for m in matches):
                self.fail("ReplacePrefixMatch needs every match of the rule to be a PathPrefix path match",
                          f"{where}.filters")

    def _match(self, m: Any, where: str, line: int | None) -> Match:
        if not isinstance(m, dict):
            self.fail(f"expected a mapping, got {_kind_of(m)}", where, line)
        self.check_keys(m, where, ("path", "headers", "queryParams", "method"))
        path_node = self.mapping(m, "path", where)
        p_where = f"{where}.path"
        path_type = self.string(path_node, "type", p_where, choices=("Exact", "PathPrefix", "RegularExpression"),
                                default="PathPrefix") or "PathPrefix"
        if path_type == "RegularExpression":
            path = self.req_string(path_node, "value", p_where) if "value" in path_node else "/"
            self.regexp(path, f"{p_where}.value", self._key_line(path_node, "value"))
        else:
            path = self.path_value(path_node, "value", p_where) if "value" in path_node else "/"
        headers = self._name_values(m, "headers", where, case_insensitive=True)
        query = self._name_values(m, "queryParams", where, case_insensitive=False)
        method = self.string(m, "method", where, choices=_METHODS)
        return Match(path_type, path, headers, query, method)

    def _name_values(self, m: dict[Any, Any], key: str, where: str, *,
                     case_insensitive: bool) -> tuple[tuple[str, str, str], ...]:
        out = []
        seen: set[str] = set()
        for k, h in enumerate(self.seq(m, key, where, max_items=16)):
            h_where = f"{where}.{key}[{k}]"
            if not isinstance(h, dict):
                self.fail(f"expected a mapping, got {_kind_of(h)}", h_where)
            kind = self.string(h, "type", h_where, choices=("Exact", "RegularExpression"), default="Exact") or "Exact"
            name = self.req_string(h, "name", h_where)
            if not _HEADER_NAME.match(name):
                self.fail(f"not a valid name: {name!r}", f"{h_where}.name", self._key_line(h, "name"))
            value = self.string(h, "value", h_where, required=True) or ""
            if kind == "RegularExpression":
                self.regexp(value, f"{h_where}.value", self._key_line(h, "value"))
            folded = name.lower() if case_insensitive else name
            if folded in seen:  # the spec: only the first entry with a name counts; the API server refuses
                self.fail(f"{name!r} is matched twice", f"{h_where}.name", self._key_line(h, "name"))
            seen.add(folded)
            out.append((kind, name, value))
        return tuple(out)

    def _backend(self, b: dict[Any, Any], where: str, *, weighted: bool) -> BackendRef:
        allowed = ("group", "kind", "namespace", "name", "port", "weight", "filters")
        self.check_keys(b, where, allowed if weighted else allowed[:5])
        group = self.string(b, "group", where, default="") or ""
        kind = self.string(b, "kind", where, default="Service") or "Service"
        port = self.integer(b, "port", where, minimum=1, maximum=65535)
        if port is None and group == "" and kind == "Service":
            self.fail("port is required when the reference is to a Service", where, self._line(b))
        weight = self.integer(b, "weight", where, minimum=0, maximum=_MAX_WEIGHT, default=1) if weighted else 1
        assert weight is not None
        edits = []
        items = self.seq(b, "filters", where, max_items=16) if weighted else []
        for i, item in enumerate(items):
            f = self._filter(item, f"{where}.filters[{i}]", self._item_line(items, i))
            if f.request_headers is None:
                self.fail(f"{f.type} on a backendRef is not supported yet by the shadow gateway (only "
                          "RequestHeaderModifier; put the others on the rule)", f"{where}.filters[{i}].type")
            edits.append(f.request_headers)
        return BackendRef(group, kind, self.string(b, "namespace", where), self.req_string(b, "name", where), port,
                          weight, where, tuple(edits))

    def _header_edits(self, node: dict[Any, Any], where: str) -> HeaderEdits:
        self.check_keys(node, where, ("set", "add", "remove"))
        out: dict[str, list[Any]] = {"set": [], "add": []}
        for key in ("set", "add"):
            for i, item in enumerate(self.seq(node, key, where, max_items=16)):
                i_where = f"{where}.{key}[{i}]"
                if not isinstance(item, dict):
                    self.fail(f"expected a mapping, got {_kind_of(item)}", i_where)
                name = self.req_string(item, "name", i_where)
                if not _HEADER_NAME.match(name):
                    self.fail(f"not a valid header name: {name!r}", f"{i_where}.name", self._key_line(item, "name"))
                out[key].append((name, self.string(item, "value", i_where, required=True) or ""))
        removes = []
        r_items = self.seq(node, "remove", where, max_items=16)
        for i, name in enumerate(r_items):
            if not isinstance(name, str) or not _HEADER_NAME.match(name):
                self.fail(f"not a valid header name: {name!r}", f"{where}.remove[{i}]", self._item_line(r_items, i))
            removes.append(name)
        return HeaderEdits(tuple(out["set"]), tuple(out["add"]), tuple(removes))

    def _path_modifier(self, node: dict[Any, Any], where: str) -> tuple[str | None, str | None]:
        path = self.mapping(node, "path", where)
        if not path:
            return None, None
        p_where = f"{where}.path"
        kind = self.req_string(path, "type", p_where, choices=("ReplaceFullPath", "ReplacePrefixMatch"))
        key = "replaceFullPath" if kind == "ReplaceFullPath" else "replacePrefixMatch"
        if key not in path:
            self.fail(f"required when type is {kind}", f"{p_where}.{key}", self._key_line(path, "type"))
        return kind, self.path_value(path, key, p_where)

    def _cors(self, body: dict[Any, Any], where: str) -> CorsPolicy:
        self.check_keys(body, where, ("allowOrigins", "allowMethods", "allowHeaders", "exposeHeaders",
                                      "allowCredentials", "maxAge"))

        def strings(key: str, valid: Callable[[str], bool], what: str) -> tuple[str, ...]:
            items = self.seq(body, key, where, max_items=64)
            for j, item in enumerate(items):
                if not isinstance(item, str) or not valid(item):
                    self.fail(f"{what}, got {item!r}", f"{where}.{key}[{j}]", self._item_line(items, j))
            if "*" in items and len(items) > 1:
                self.fail("'*' must be the only item", f"{where}.{key}", self._key_line(body, key))
            return tuple(dict.fromkeys(items))

        origins = strings("allowOrigins", lambda o: o == "*" or bool(_CORS_ORIGIN.match(o)),
                          "must be '*' or scheme://host[:port] (a '*' may stand for part of the host)")
        methods = strings("allowMethods", lambda m: m == "*" or m in _METHODS, f"must be '*' or one of {', '.join(_METHODS)}")
        allow_headers = strings("allowHeaders", lambda h: h == "*" or bool(_HEADER_NAME.match(h)), "not a header name")
        expose = strings("exposeHeaders", lambda h: h == "*" or bool(_HEADER_NAME.match(h)), "not a header name")
        credentials = body.get("allowCredentials", False)
        if not isinstance(credentials, bool):
            self.fail(f"expected true or false, got {credentials!r}", f"{where}.allowCredentials",
                      self._key_line(body, "allowCredentials"))
        max_age = self.integer(body, "maxAge", where, minimum=1, maximum=2**31 - 1, default=5)
        assert max_age is not None
        return CorsPolicy(origins, methods, allow_headers, expose, credentials, max_age)

    def _filter(self, f: Any, where: str, line: int | None) -> Filter:
        if not isinstance(f, dict):
            self.fail(f"expected a mapping, got {_kind_of(f)}", where, line)
        kinds = ("RequestHeaderModifier", "ResponseHeaderModifier", "RequestRedirect", "URLRewrite",
                 "RequestMirror", "ExtensionRef", "CORS", "ExternalAuth")
        kind = self.req_string(f, "type", where, choices=kinds)
        if kind == "ExternalAuth":
            self.fail(f"filter {kind} is not supported yet by the shadow gateway", f"{where}.type",
                      self._key_line(f, "type"))
        key = {"URLRewrite": "urlRewrite", "CORS": "cors"}.get(kind, kind[0].lower() + kind[1:])
        for other in f:
            if other not in ("type", key):
                self.fail(f"only {key} may be set with type {kind}", f"{where}.{other}", self._key_line(f, other))
        body = self.mapping(f, key, where, required=True)
        b_where = f"{where}.{key}"
        if kind == "RequestHeaderModifier":
            return Filter(kind, request_headers=self._header_edits(body, b_where))
        if kind == "ResponseHeaderModifier":
            return Filter(kind, response_headers=self._header_edits(body, b_where))
        if kind == "RequestRedirect":
            self.check_keys(body, b_where, ("scheme", "hostname", "port", "path", "statusCode"))
            path_type, path = self._path_modifier(body, b_where)
            hostname = body.get("hostname")
            if hostname is not None:
                hostname = self.hostname(hostname, f"{b_where}.hostname", self._key_line(body, "hostname"), wildcard=False)
            status = self.integer(body, "statusCode", b_where, minimum=301, maximum=308, default=302)
            if status not in (301, 302, 303, 307, 308):
                self.fail(f"must be one of 301, 302, 303, 307, 308, got {status}", f"{b_where}.statusCode",
                          self._key_line(body, "statusCode"))
            assert status is not None
            return Filter(kind, redirect=Redirect(
                self.string(body, "scheme", b_where, choices=("http", "https")), hostname,
                self.integer(body, "port", b_where, minimum=1, maximum=65535), path_type, path, status))
        if kind == "URLRewrite":
            self.check_keys(body, b_where, ("hostname", "path"))
            path_type, path = self._path_modifier(body, b_where)
            hostname = body.get("hostname")
            if hostname is not None:
                hostname = self.hostname(hostname, f"{b_where}.hostname", self._key_line(body, "hostname"), wildcard=False)
            return Filter(kind, rewrite=Rewrite(hostname, path_type, path))
        if kind == "CORS":
            return Filter(kind, cors=self._cors(body, b_where))
        if kind == "RequestMirror":
            self.check_keys(body, b_where, ("backendRef", "percent", "fraction"))
            ref = self.mapping(body, "backendRef", b_where, required=True)
            backend = self._backend(ref, f"{b_where}.backendRef", weighted=False)
            if "percent" in body and "fraction" in body:
                self.fail("set percent or fraction, not both", b_where, self._key_line(body, "fraction"))
            numerator, denominator = 100, 100
            if "percent" in body:
                numerator = self.integer(body, "percent", b_where, minimum=0, maximum=100) or 0
            elif "fraction" in body:
                frac = self.mapping(body, "fraction", b_where)
                f_where = f"{b_where}.fraction"
                self.check_keys(frac, f_where, ("numerator", "denominator"))
                numerator = self.integer(frac, "numerator", f_where, minimum=0, maximum=2**31 - 1, required=True) or 0
                denominator = self.integer(frac, "denominator", f_where, minimum=1, maximum=2**31 - 1,
                                           default=100) or 100
                if numerator > denominator:
                    self.fail("numerator must not exceed denominator", f_where, self._key_line(body, "fraction"))
            return Filter(kind, mirror=Mirror(backend, numerator, denominator))
        self.check_keys(body, b_where, ("group", "kind", "name"))
        return Filter(kind, extension=(self.string(body, "group", b_where, required=True) or "",
                                       self.req_string(body, "kind", b_where), self.req_string(body, "name", b_where)))
