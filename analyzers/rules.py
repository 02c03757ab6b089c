"""Per-path diff rules: what to ignore, how to compare numbers, arrays and volatile headers.

Rules come from the config list `shadow.analysis.rules` (plus the defaults here). One rule is one
mapping; its *selector* says where it applies and its *action* what it does:

    - ignore: "**/requestId"                  # shorthand: glob on the pointer template
    - ignore: true                            # or the long form with a selector:
      path: "/items/*/updatedAt"
    - ignore: true
      regex: "^/meta/(etag|rev)$"            # a regex (re.search) on the pointer template
    - path: "/items/*/price"
      tolerance: {abs: 0.01}                  # or {rel: 0.001}, or both (either suffices), or a number = abs
    - path: "/session"
      presence: true                          # both present = equal, whatever the values
    - path: "/items"
      array: unordered                        # ordered (default) | unordered | {key: id}
    - header: "ETag"                          # header rules: name or glob, case-insensitive
      ignore: false                           # false = compare it (the last matching header rule wins,
                                              # over the default ignore list and earlier rules)
    - header: "X-Build-*"                     # ignore: true is implied for a header rule
    - endpoint: "/api/orders/*"               # any rule may be scoped to an endpoint glob
      ignore: "/total"

Pointer templates are RFC 6901 pointers with every array index replaced by `*` (keys keep their
~0/~1 escapes). In a path glob `*` matches exactly one segment (a key, or the `*` of an index),
`**` matches any number of segments (zero included), and `*`/`?` inside a segment match within it;
a glob without a leading "/" is taken as starting with "/". An ignore rule also covers everything
under the matched node. Endpoint globs use the same syntax on the endpoint template.

Every key, with examples and what the report suggests for each kind of difference: docs/policy.md,
"Diff rules".

Ignored differences, tolerated numbers and presence-only values are not dropped: the diff engine
still emits them, marked `noise=True` with the rule as the reason. Ignored *headers* from the
default list below are volatile or hop-by-hop by nature and are not compared at all.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Literal

from shadow.errors import ConfigError

# Response headers not compared by default. Why each: they are set per response (dates, ids,
# tracing), per hop (connection management, proxies) or per deployment (server software, caches)
# and differ between two correct services by design. Cut any with `{header: NAME, ignore: false}`.
DEFAULT_IGNORED_HEADERS: tuple[str, ...] = (
    # per response
    "date", "expires", "age", "last-modified", "etag", "x-request-id", "x-correlation-id", "request-id",
    "x-amzn-requestid", "x-amzn-trace-id", "traceparent", "tracestate", "b3", "x-b3-*", "x-cloud-trace-context",
    "x-runtime", "x-response-time", "server-timing", "set-cookie",
    "mcp-session-id",  # MCP: each server issues its own session ids (a candidate gets its own session)
    # per hop
    "connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-connection",
    "proxy-authenticate", "content-length", "content-encoding", "via", "forwarded", "x-forwarded-*",
    "x-real-ip",
    # per deployment
    "server", "x-powered-by", "alt-svc", "nel", "report-to", "x-cache", "x-cache-hits", "x-served-by",
    "x-timer", "cf-ray", "cf-cache-status", "x-envoy-*",
    # our own marks (mirrored traffic, gateway bookkeeping)
    "x-shadow-*",
)

ArrayMode = Literal["ordered", "unordered", "keyed"]
_ACTIONS = ("ignore", "tolerance", "presence", "array")
_KNOWN_FIELDS = frozenset({"path", "regex", "header", "endpoint", "ignore", "tolerance", "presence", "array",
                           "key", "name", "reason"})


def glob_to_regex(glob: str) -> re.Pattern[str]:
    """Compile a pointer/endpoint glob (see module doc) to an anchored regex."""
    if not glob.startswith("/"):
        glob = "/" + glob
    parts = glob.split("/")[1:]
    out = ""
    for part in parts:
        if part == "**":
            # zero or more whole segments; a trailing ** also matches the node itself
            out += "(?:/[^/]*)*"
            continue
        seg = "".join("[^/]*" if ch == "*" else "[^/]" if ch == "?" else re.escape(ch) for ch in part)
        out += "/" + seg
    return re.compile("^" + out + "$")


@dataclass(frozen=True)
class Tolerance:
    abs: float | None = None
    rel: float | None = None

    def accepts(self, a: float, b: float) -> bool:
        delta = abs(a - b)
        if self.abs is not None and delta <= self.abs:
            return True
        return self.rel is not None and delta <= self.rel * max(abs(a), abs(b))

    def describe(self) -> str:
        bits = [f"abs {self.abs:g}"] if self.abs is not None else []
        bits += [f"rel {self.rel:g}"] if self.rel is not None else []
        return " or ".join(bits)


@dataclass(frozen=True)
class Rule:
    """One compiled rule. `label` is how the rule appears in noise reasons."""

    index: int  # position in the config list (-1 for defaults)
    action: Literal["ignore", "tolerance", "presence", "array", "header"]
    label: str
    pattern: re.Pattern[str] | None = None  # on the pointer template (or header name)
    endpoint: re.Pattern[str] | None = None
    tolerance: Tolerance | None = None
    array_mode: ArrayMode = "ordered"
    array_key: str | None = None
    header_ignore: bool = True
    search: bool = False  # regex rules search anywhere; globs match the whole template

    def applies_to_endpoint(self, endpoint: str | None) -> bool:
        return self.endpoint is None or (endpoint is not None and bool(self.endpoint.match(endpoint)))


@dataclass(frozen=True)
class NodeRules:
    """What the rules say about one pointer template (resolved once, then cached)."""

    ignore: str | None = None  # the reason text when ignored (covers descendants)
    tolerance: Tolerance | None = None
    tolerance_label: str | None = None
    presence: str | None = None  # reason text when presence-only
    array_mode: ArrayMode = "ordered"
    array_key: str | None = None


_NO_RULES = NodeRules()


class EndpointRules:
    """The rules that apply to one endpoint, with a per-pointer-template cache.

    The diff engine consults it only on nodes whose values differ, so the cache stays small (one
    entry per differing template) and a lookup is one dict access.
    """

    def __init__(self, rules: Sequence[Rule], header_ignore: tuple[tuple[re.Pattern[str], bool], ...]) -> None:
        self.rules = tuple(r for r in rules if r.action != "header")
        self._header_ignore = header_ignore
        self._cache: dict[str, NodeRules] = {}
        self._header_cache: dict[str, bool] = {}
        self.empty = not self.rules

    def node(self, template: str) -> NodeRules:
        hit = self._cache.get(template)
        if hit is not None:
            return hit
        if self.empty:
            return _NO_RULES
        ignore = presence = tol_label = key = None
        tol: Tolerance | None = None
        mode: ArrayMode = "ordered"
        for r in self.rules:
            assert r.pattern is not None
            if not (r.pattern.search(template) if r.search else r.pattern.match(template)):
                continue
            if r.action == "ignore" and ignore is None:
                ignore = f"rule: ignore {r.label}"
            elif r.action == "tolerance" and tol is None:
                tol, tol_label = r.tolerance, f"rule: tolerance {r.tolerance.describe() if r.tolerance else ''} {r.label}"
            elif r.action == "presence" and presence is None:
                presence = f"rule: presence-only {r.label}"
            elif r.action == "array" and mode == "ordered":
                mode, key = r.array_mode, r.array_key
        result = NodeRules(ignore, tol, tol_label, presence, mode, key)
        self._cache[template] = result
        return result

    def header_ignored(self, lower_name: str) -> bool:
        hit = self._header_cache.get(lower_name)
        if hit is None:
            hit = next((ignore for p, ignore in reversed(self._header_ignore) if p.match(lower_name)), False)
            self._header_cache[lower_name] = hit
        return hit


@dataclass
class RuleSet:
    """All rules of a run. `for_endpoint` resolves and caches the subset for one endpoint."""

    rules: tuple[Rule, ...] = ()
    _by_endpoint: dict[str | None, EndpointRules] = field(default_factory=dict, repr=False)

    def for_endpoint(self, endpoint: str | None) -> EndpointRules:
        hit = self._by_endpoint.get(endpoint)
        if hit is None:
            scoped = [r for r in self.rules if r.applies_to_endpoint(endpoint)]
            hit = EndpointRules(scoped, _header_patterns(scoped))
            self._by_endpoint[endpoint] = hit
        return hit

    def compared_header_superset_ignores(self) -> tuple[str, ...]:
        """Header globs ignored under *every* endpoint scope: safe for a pre-filter shared by all
        (conservative: a glob that any `ignore: false` rule touches is left to the exact check)."""
        everywhere = [r for r in self.rules if r.action == "header" and r.endpoint is None]
        ignored = list(DEFAULT_IGNORED_HEADERS)
        for r in everywhere:
            assert r.pattern is not None
            name = r.label
            if r.header_ignore:
                ignored.append(name)
            else:
                ignored = [g for g in ignored if not glob_matches_name(g, name)]
        unignored_somewhere = [r.label for r in self.rules if r.action == "header" and not r.header_ignore]
        return tuple(g for g in ignored if not any(glob_matches_name(g, n) for n in unignored_somewhere))

    def __getstate__(self) -> dict[str, Any]:  # caches are rebuilt in worker processes
        return {"rules": self.rules}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.rules = state["rules"]
        self._by_endpoint = {}


def glob_matches_name(glob: str, name: str) -> bool:
    return bool(_header_glob(glob.lower()).match(name.lower()))


@lru_cache(maxsize=1024)
def _header_glob(glob: str) -> re.Pattern[str]:
    return re.compile("^" + "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in glob) + "$")


def _header_patterns(rules: Sequence[Rule]) -> tuple[tuple[re.Pattern[str], bool], ...]:
    """(glob, ignore?) in precedence order, lowest first: the defaults, then the header rules as
    written. The last one matching a name decides, so `{header: X-Forwarded-For, ignore: false}`
    compares that one header while the rest of the default `x-forwarded-*` stays ignored."""
    out = [(_header_glob(g), True) for g in DEFAULT_IGNORED_HEADERS]
    out += [(_header_glob(r.label.lower()), r.header_ignore) for r in rules if r.action == "header"]
    return tuple(out)


DEFAULT_RULES = RuleSet()


def load_rules(raw: Iterable[Mapping[str, Any]] | None, *, file: str | None = None,
               base: str = "shadow.analysis.rules") -> RuleSet:
    """Compile the config list of rules; a bad rule raises ConfigError naming its index and field."""
    if raw is None:
        return RuleSet()
    if isinstance(raw, (str, bytes)) or not isinstance(raw, Iterable):
        raise ConfigError("must be a list of rules", file=file, field=base)
    rules = [_compile(i, item, file=file, base=base, line=_line_of(raw, i)) for i, item in enumerate(raw)]
    return RuleSet(tuple(rules))


def _line_of(seq: object, i: int) -> int | None:
    lc = getattr(seq, "lc", None)  # ruamel.yaml round-trip lists remember where each item was
    try:
        return int(lc.item(i)[0]) + 1 if lc is not None else None
    except Exception:
        return None


def _compile(i: int, item: object, *, file: str | None, base: str, line: int | None) -> Rule:
    def fail(field_name: str, message: str) -> ConfigError:
        where = f"{base}[{i}]" + (f".{field_name}" if field_name else "")
        return ConfigError(f"rule {i}: {message}", file=file, line=line, field=where)

    if not isinstance(item, Mapping):
        raise fail("", f"must be a mapping such as {{ignore: '**/requestId'}}, got {type(item).__name__}")
    unknown = sorted(set(map(str, item)) - _KNOWN_FIELDS)
    if unknown:
        raise fail(unknown[0], f"unknown field {unknown[0]!r} (known: {', '.join(sorted(_KNOWN_FIELDS))})")
    endpoint = None
    if "endpoint" in item:
        ep = item["endpoint"]
        if not isinstance(ep, str) or not ep:
            raise fail("endpoint", "must be a non-empty glob string like '/api/orders/*'")
        endpoint = glob_to_regex(ep)

    if "header" in item:
        name = item["header"]
        if not isinstance(name, str) or not name or any(c in name for c in " :\t"):
            raise fail("header", "must be a header name or glob such as 'ETag' or 'X-Build-*'")
        flag = item.get("ignore", True)
        if not isinstance(flag, bool):
            raise fail("ignore", "for a header rule must be true (ignore it) or false (compare it)")
        extra = set(map(str, item)) - {"header", "ignore", "endpoint", "reason"}
        if extra:
            raise fail(sorted(extra)[0], "does not apply to a header rule")
        return Rule(i, "header", name.lower(), _header_glob(name.lower()), endpoint, header_ignore=flag)

    actions = [a for a in _ACTIONS if a in item]
    if len(actions) != 1:
        raise fail("", "needs exactly one action of ignore, tolerance, presence, array"
                   + (f" (got {', '.join(actions)})" if actions else ""))
    action = actions[0]
    value = item[action]

    if action == "ignore" and value is not True and not isinstance(value, str):
        raise fail("ignore", "must be true or a path glob string")
    pattern: re.Pattern[str] | None = None
    label, search = "", False
    if action == "ignore" and isinstance(value, str):
        if "path" in item or "regex" in item:
            raise fail("ignore", "give the glob either as `ignore: GLOB` or as `path:`, not both")
        pattern, label = _path_glob(value, fail, "ignore"), value
    if pattern is None:
        if ("path" in item) == ("regex" in item):
            raise fail("path", "needs exactly one selector: `path: GLOB` or `regex: REGEX`")
        if "path" in item:
            pattern, label = _path_glob(item["path"], fail, "path"), str(item["path"])
        else:
            rx = item["regex"]
            if not isinstance(rx, str):
                raise fail("regex", "must be a string")
            try:
                pattern = re.compile(rx)  # searched anywhere in the template; globs are anchored
            except re.error as e:
                raise fail("regex", f"is not a valid regular expression: {e}") from None
            label, search = f"regex {rx}", True

    if action == "ignore":
        if value is not True and not isinstance(value, str):
            raise fail("ignore", "must be true or a path glob string")
        return Rule(i, "ignore", label, pattern, endpoint, search=search)
    if action == "presence":
        if value is not True:
            raise fail("presence", "must be true")
        return Rule(i, "presence", label, pattern, endpoint, search=search)
    if action == "tolerance":
        return Rule(i, "tolerance", label, pattern, endpoint, tolerance=_tolerance(value, fail), search=search)
    mode, key = _array(value, item.get("key"), fail)
    return Rule(i, "array", label, pattern, endpoint, array_mode=mode, array_key=key, search=search)


def _path_glob(value: object, fail: Any, field_name: str) -> re.Pattern[str]:
    if not isinstance(value, str) or not value:
        raise fail(field_name, "must be a non-empty pointer glob such as '/items/*/updatedAt' or '**/requestId'")
    return glob_to_regex(value)


def _number(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0


def _tolerance(value: object, fail: Any) -> Tolerance:
    if _number(value):
        return Tolerance(abs=float(value))  # type: ignore[arg-type]
    if isinstance(value, Mapping):
        extra = set(map(str, value)) - {"abs", "rel"}
        if extra or not value:
            raise fail("tolerance", "takes {abs: NUMBER} and/or {rel: NUMBER}"
                       + (f" (unknown {sorted(extra)[0]!r})" if extra else ""))
        for k in ("abs", "rel"):
            if k in value and not _number(value[k]):
                raise fail(f"tolerance.{k}", "must be a non-negative number")
        a, r = value.get("abs"), value.get("rel")
        return Tolerance(abs=None if a is None else float(a), rel=None if r is None else float(r))
    raise fail("tolerance", "must be a non-negative number (absolute) or {abs: X} / {rel: X}")


def _array(value: object, key: object, fail: Any) -> tuple[ArrayMode, str | None]:
    if isinstance(value, Mapping):
        if set(map(str, value)) != {"key"} or not isinstance(value["key"], str) or not value["key"]:
            raise fail("array", "as a mapping must be {key: FIELD}")
        return "keyed", value["key"]
    if value in ("ordered", "unordered"):
        if key is not None:
            raise fail("key", "only applies with array: keyed")
        return value, None
    if value == "keyed":
        if not isinstance(key, str) or not key:
            raise fail("key", "array: keyed needs `key: FIELD`")
        return "keyed", key
    raise fail("array", "must be ordered, unordered, keyed (with key:) or {key: FIELD}")
