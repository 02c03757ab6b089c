"""Traefik v3 router rules: parse once into a tree of closures, match fast.

Grammar (Traefik's, a subset of Go expressions)::

    expr    := and ( '||' and )*
    and     := unary ( '&&' unary )*
    unary   := '!' unary | '(' expr ')' | MATCHER '(' [ STRING ( ',' STRING )* ] ')'
    STRING  := `raw` | "Go string with \\ escapes"      (single quotes are not allowed)

Matchers and their semantics follow Traefik v3 (pkg/muxer/http/matcher.go):

- ``Host(`h`)``: the Host header without its port, ASCII case-insensitive; a trailing dot on either
  side is ignored.  ``HostRegexp(`re`)``: unanchored regexp on that same host (lower-cased).
- ``Path(`/p`)`` exact, ``PathPrefix(`/p`)`` plain string prefix, ``PathRegexp(`re`)`` unanchored; all
  three see the *routing path*: the raw path with percent-escapes of non-reserved characters decoded
  (``/foo%20bar`` is routed as ``/foo bar``) while reserved ones (``%2F``, ``%3F``, ``%25``...) stay
  encoded, upper-cased.
- ``Method(`get`)``: the method, upper-cased.
- ``Header(`name`, `value`)``: exact match on any one value (header line) of that header; names are
  case-insensitive.  ``HeaderRegexp(`name`, `re`)``: unanchored regexp on any value.
- ``Query(`k`, `v`)``: some value of query parameter k equals v.  ``Query(`k`)`` with one argument
  matches, as in Traefik, when k is present with an *empty* value (``?k`` or ``?k=``) — not mere
  presence; use ``QueryRegexp(`k`, `.*`)`` for "k present with any value".
- ``QueryRegexp(`k`, `re`)``: unanchored regexp on any value of k.
- ``ClientIP(`10.0.0.0/8`)``: the socket peer address (never X-Forwarded-For) is in the CIDR / equals
  the IP; IPv4-mapped IPv6 peers count as IPv4.
- ``Model(`gpt-4o*`)`` (Traefik Hub's AI gateway): the `model` field of the JSON request body equals
  the pattern, or matches it as a glob when it holds ``*``, ``?`` or ``[``. The body is parsed only
  when a Model matcher is tried.

Matcher names are accepted as Traefik spells them: ``PathPrefix``, ``pathprefix``, ``PATHPREFIX`` or
``Pathprefix``. Empty arguments are errors for every matcher (Traefik's CheckRule). Regular
expressions are Go's (RE2 syntax and linear-time matching, shadow.gateway.goregex), as Traefik's.
"""

from __future__ import annotations

import difflib
import fnmatch
import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from urllib.parse import unquote_plus

from shadow.ai.protocol import request_model
from shadow.gateway.goregex import GoRegexp, GoRegexpError, compile_go
from shadow.yamlconfig import MAX_EXPRESSION_NESTING

__all__ = [
    "MATCHERS",
    "RESERVED_ESCAPES",
    "RequestView",
    "Rule",
    "RuleSyntaxError",
    "canonical_host",
    "compile_rule",
    "request_host",
    "routing_path",
]


# --------------------------------------------------------------------------------------------------
# What a rule sees of a request
# --------------------------------------------------------------------------------------------------

# RFC 3986 reserved characters (plus '%'), which Traefik keeps percent-encoded in the routing path
# because decoding them would change the meaning of the path.
RESERVED_ESCAPES = frozenset(
    ["%3A", "%2F", "%3F", "%23", "%5B", "%5D", "%40", "%21", "%24", "%26", "%27", "%28", "%29",
     "%2A", "%2B", "%2C", "%3B", "%3D", "%25"]
)
_HEX = frozenset("0123456789abcdefABCDEF")


def routing_path(raw_path: str) -> str:
    """The path Traefik routes on: non-reserved percent-escapes decoded, reserved ones kept
    (normalised to upper-case hex). Malformed escapes are kept as sent."""
    if "%" not in raw_path:
        return raw_path
    out = bytearray()
    i, n = 0, len(raw_path)
    while i < n:
        j = raw_path.find("%", i)
        if j < 0:
            out += raw_path[i:].encode("utf-8", "surrogateescape")
            break
        out += raw_path[i:j].encode("utf-8", "surrogateescape")
        esc = raw_path[j:j + 3]
        if len(esc) == 3 and esc[1] in _HEX and esc[2] in _HEX:
            upper = esc.upper()
            if upper in RESERVED_ESCAPES:
                out += upper.encode()
            else:
                out.append(int(esc[1:], 16))
            i = j + 3
        else:
            out += b"%"
            i = j + 1
    return out.decode("utf-8", "surrogateescape")


def canonical_host(host: str) -> str:
    """Host header value without port, lower-cased (``[::1]:8080`` → ``::1``)."""
    if host.startswith("["):
        end = host.find("]")
        return (host[1:end] if end > 0 else host[1:]).lower()
    if host.count(":") == 1:
        host = host.split(":", 1)[0]
    return host.lower()


def request_host(target_authority: str, host_header: str) -> str:
    """The host a request is routed on, as Go's http.ReadRequest sets req.Host: the authority of an
    absolute-form target (`GET http://example.com/ HTTP/1.1`, userinfo dropped) when it names one,
    else the Host header (an empty authority, `http://@/`, is not an error)."""
    authority = target_authority.rpartition("@")[2]
    return authority or host_header


def _parse_query(query: str) -> dict[str, list[str]]:
    # Go's url.ParseQuery: '&' separates; a pair holding ';' is rejected (skipped); '+' is a space.
    params: dict[str, list[str]] = {}
    if not query:
        return params
    for part in query.split("&"):
        if not part or ";" in part:
            continue
        key, _, value = part.partition("=")
        params.setdefault(unquote_plus(key), []).append(unquote_plus(value))
    return params


@dataclass(frozen=True)
class RequestView:
    """What a rule sees of a request. Derived views (routing path, host, header and query maps)
    are computed on first use and cached, so many rules tried on one request pay for them once."""

    method: str
    host: str  # the client's Host header value, may include :port
    path: str  # raw path without query, percent-escapes as sent
    query: str = ""  # raw query string without '?'
    headers: tuple[tuple[str, str], ...] = ()  # as received, names in original case
    client_ip: str = ""  # socket peer address
    body: bytes = b""  # the request body as received (read only by body matchers: Model)

    @cached_property
    def model(self) -> str | None:
        return request_model(self.body)

    @cached_property
    def routing_path(self) -> str:
        return routing_path(self.path)

    @cached_property
    def canonical_host(self) -> str:
        return canonical_host(self.host)

    @cached_property
    def header_values(self) -> dict[str, tuple[str, ...]]:
        """Lower-cased header name → its values, one per header line, in order."""
        grouped: dict[str, tuple[str, ...]] = {}
        for name, value in self.headers:
            key = name.lower()
            seen = grouped.get(key)
            grouped[key] = (value,) if seen is None else (*seen, value)
        return grouped

    @cached_property
    def query_params(self) -> dict[str, list[str]]:
        return _parse_query(self.query)

    @cached_property
    def client_address(self) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
        text = self.client_ip
        if text.startswith("[") and text.endswith("]"):
            text = text[1:-1]
        try:
            addr = ipaddress.ip_address(text.split("%", 1)[0])
        except ValueError:
            return None
        if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
            return addr.ipv4_mapped
        return addr


# --------------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------------

class RuleSyntaxError(ValueError):
    """A rule that cannot be compiled. `position` is the 0-based column in the rule text;
    str() says ``<message> at column <position + 1>`` (columns counted from 1 for people)."""

    def __init__(self, message: str, position: int) -> None:
        self.message = message
        self.position = position
        super().__init__(f"{message} at column {position + 1}")


# --------------------------------------------------------------------------------------------------
# Tokenizer
# --------------------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class _Token:
    kind: str  # ident | string | ( | ) | , | && | || | ! | eof
    value: str
    pos: int
    raw: bool = False  # a backtick string: value[k] sits at column pos + 1 + k

    def describe(self) -> str:
        if self.kind == "eof":
            return "end of rule"
        if self.kind == "string":
            return f"string `{self.value}`"
        return repr(self.value)


_GO_SIMPLE_ESCAPES = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v",
                      "\\": "\\", '"': '"'}


def _read_go_string(text: str, start: int) -> tuple[str, int]:
    """Decode a double-quoted Go string starting at text[start] == '"'; return (value, end)."""
    out: list[str] = []
    i = start + 1
    n = len(text)
    while i < n:
        c = text[i]
        if c == '"':
            return "".join(out), i + 1
        if c == "\n":
            break
        if c != "\\":
            out.append(c)
            i += 1
            continue
        if i + 1 >= n:
            break
        e = text[i + 1]
        if e in _GO_SIMPLE_ESCAPES:
            out.append(_GO_SIMPLE_ESCAPES[e])
            i += 2
            continue
        width = {"x": 2, "u": 4, "U": 8}.get(e)
        if width is not None:
            digits = text[i + 2:i + 2 + width]
            if len(digits) == width and all(d in _HEX for d in digits):
                out.append(chr(int(digits, 16)))
                i += 2 + width
                continue
            raise RuleSyntaxError(f"invalid escape \\{e} in string", i)
        if e in "01234567":
            digits = text[i + 1:i + 4]
            if len(digits) == 3 and all(d in "01234567" for d in digits):
                out.append(chr(int(digits, 8)))
                i += 4
                continue
        raise RuleSyntaxError(
            f"invalid escape \\{e} in double-quoted string (write \\\\{e}, or use backticks)", i)
    raise RuleSyntaxError("unterminated string", start)


def _tokenize(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c in " \t\r\n":
            i += 1
        elif c.isalpha() or c == "_":
            j = i + 1
            while j < n and (text[j].isalnum() or text[j] == "_"):
                j += 1
            tokens.append(_Token("ident", text[i:j], i))
            i = j
        elif c == "`":
            j = text.find("`", i + 1)
            if j < 0:
                raise RuleSyntaxError("unterminated string", i)
            tokens.append(_Token("string", text[i + 1:j], i, raw=True))
            i = j + 1
        elif c == '"':
            value, j = _read_go_string(text, i)
            tokens.append(_Token("string", value, i))
            i = j
        elif c == "'":
            raise RuleSyntaxError("single quotes are not allowed; quote values with backticks or \"", i)
        elif c in "(),!":
            tokens.append(_Token(c, c, i))
            i += 1
        elif c in "&|":
            if text[i:i + 2] == c * 2:
                tokens.append(_Token(c * 2, c * 2, i))
                i += 2
            else:
                raise RuleSyntaxError(f"unexpected '{c}' (did you mean '{c * 2}'?)", i)
        else:
            raise RuleSyntaxError(f"unexpected character {c!r}", i)
    tokens.append(_Token("eof", "", n))
    return tokens


# --------------------------------------------------------------------------------------------------
# Matchers
# --------------------------------------------------------------------------------------------------

Match = Callable[[RequestView], bool]


def _compile_regexp(arg: _Token) -> GoRegexp:
    # Go's regexp (RE2), as Traefik: linear-time matching, no backreferences or look-around.
    try:
        return compile_go(arg.value)
    except GoRegexpError as exc:
        raise RuleSyntaxError(f"invalid regular expression `{arg.value}` (Go's RE2 syntax): {exc}",
                              arg.pos) from None


def _require_ascii(value: str, matcher: str, pos: int) -> None:
    if not value.isascii():
        raise RuleSyntaxError(f"{matcher}: non-ASCII characters are not allowed", pos)


# A DNS name (letters, digits, '-', '_', dots; a leading "*." is Traefik v3.7's wildcard: one label
# in front of the rest) or an IP address; IPv6 without brackets, as the Host is compared
# without its port.
_HOST_NAME = re.compile(r"^(?:[A-Za-z0-9_*-]+(?:\.[A-Za-z0-9_-]+)*\.?|[0-9A-Fa-f:.]+)$")


def _wildcard_form(host: str) -> str:
    """Traefik's DomainMatchHostExpression for `*.` expressions: the first label replaced by `*`."""
    _first, dot, rest = host.partition(".")
    return "*" + dot + rest


def _host(args: list[_Token]) -> Match:
    host = args[0].value
    if host == "*":  # Traefik v3.7: matches every request, as on the TCP side
        return lambda req: True
    _require_ascii(host, "Host", args[0].pos)
    if not _HOST_NAME.match(host):
        raise RuleSyntaxError(f"Host: `{host}` is not a host name (no port, path or spaces)", args[0].pos)
    want = host.lower()
    # A trailing dot (fully-qualified name) on either side does not matter.
    want_bare = want[:-1] if want.endswith(".") else want
    if want.startswith("*"):  # `*.example.com`: any one label in front (v3.7)
        def wildcard(req: RequestView) -> bool:
            got = req.canonical_host
            if not got:
                return False
            forms = {_wildcard_form(got)}
            if got.endswith("."):
                forms.add(_wildcard_form(got[:-1]))
            return want in forms or want_bare in forms

        return wildcard

    def match(req: RequestView) -> bool:
        got = req.canonical_host
        return got in (want, want_bare) or (got.endswith(".") and got[:-1] == want_bare)

    return match


def _host_regexp(args: list[_Token]) -> Match:
    _require_ascii(args[0].value, "HostRegexp", args[0].pos)
    search = _compile_regexp(args[0]).search
    return lambda req: search(req.canonical_host)


def _check_path(args: list[_Token], matcher: str) -> str:
    path = args[0].value
    if not path.startswith("/"):
        raise RuleSyntaxError(f"{matcher}: path `{path}` does not start with '/'", args[0].pos)
    return path


def _path(args: list[_Token]) -> Match:
    path = _check_path(args, "Path")
    return lambda req: req.routing_path == path


def _path_prefix(args: list[_Token]) -> Match:
    prefix = _check_path(args, "PathPrefix")
    return lambda req: req.routing_path.startswith(prefix)


def _path_regexp(args: list[_Token]) -> Match:
    search = _compile_regexp(args[0]).search
    return lambda req: search(req.routing_path)


def _method(args: list[_Token]) -> Match:
    method = args[0].value.upper()
    return lambda req: req.method == method


def _header(args: list[_Token]) -> Match:
    name, value = args[0].value.lower(), args[1].value
    return lambda req: value in req.header_values.get(name, ())


def _header_regexp(args: list[_Token]) -> Match:
    name = args[0].value.lower()
    search = _compile_regexp(args[1]).search

    def match(req: RequestView) -> bool:
        return any(search(v) for v in req.header_values.get(name, ()))

    return match


def _query(args: list[_Token]) -> Match:
    key = args[0].value
    value = args[1].value if len(args) == 2 else ""

    def match(req: RequestView) -> bool:
        values = req.query_params.get(key)
        return values is not None and value in values

    return match


def _query_regexp(args: list[_Token]) -> Match:
    if len(args) == 1:
        return _query(args)
    key = args[0].value
    search = _compile_regexp(args[1]).search

    def match(req: RequestView) -> bool:
        return any(search(v) for v in req.query_params.get(key, ()))

    return match


def _client_ip(args: list[_Token]) -> Match:
    text = args[0].value.strip()
    try:
        network = ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise RuleSyntaxError(f"ClientIP: `{args[0].value}` is not an IP address or CIDR range",
                              args[0].pos) from None
    if isinstance(network, ipaddress.IPv6Network) and network.prefixlen >= 96:
        mapped = network.network_address.ipv4_mapped
        if mapped is not None:  # ::ffff:10.0.0.0/104 is the IPv4 range 10.0.0.0/8
            network = ipaddress.ip_network(f"{mapped}/{network.prefixlen - 96}", strict=False)

    def match(req: RequestView) -> bool:
        addr = req.client_address
        return addr is not None and addr.version == network.version and addr in network

    return match


def _model(args: list[_Token]) -> Match:
    pattern = args[0].value
    if any(c in pattern for c in "*?["):
        return lambda req: req.model is not None and fnmatch.fnmatchcase(req.model, pattern)
    return lambda req: req.model == pattern


# name → (allowed argument counts, builder)
MATCHERS: dict[str, tuple[tuple[int, ...], Callable[[list[_Token]], Match]]] = {
    "Host": ((1,), _host),
    "HostRegexp": ((1,), _host_regexp),
    "Path": ((1,), _path),
    "PathPrefix": ((1,), _path_prefix),
    "PathRegexp": ((1,), _path_regexp),
    "Method": ((1,), _method),
    "Header": ((2,), _header),
    "HeaderRegexp": ((2,), _header_regexp),
    "Query": ((1, 2), _query),
    "QueryRegexp": ((1, 2), _query_regexp),
    "ClientIP": ((1,), _client_ip),
    "Model": ((1,), _model),
}


# Traefik registers each matcher under four spellings: as written, lower, UPPER and Title
# ("PathPrefix", "pathprefix", "PATHPREFIX", "Pathprefix"); any other casing is unknown.
_MATCHER_SPELLINGS: dict[str, str] = {
    spelling: name
    for name in MATCHERS
    for spelling in (name, name.lower(), name.upper(), name[0].upper() + name[1:].lower())
}


# --------------------------------------------------------------------------------------------------
# Parser: tokens → closures
# --------------------------------------------------------------------------------------------------

class _Parser:
    def __init__(self, text: str) -> None:
        self.tokens = _tokenize(text)
        self.i = 0
        self.depth = 0  # '(' and '!' open around the current token: bounded, the parser recurses

    def peek(self) -> _Token:
        return self.tokens[self.i]

    def take(self) -> _Token:
        tok = self.tokens[self.i]
        self.i += 1
        return tok

    def expect(self, kind: str, what: str) -> _Token:
        tok = self.take()
        if tok.kind != kind:
            raise RuleSyntaxError(f"expected {what}, found {tok.describe()}", tok.pos)
        return tok

    def parse(self) -> Match:
        if self.peek().kind == "eof":
            raise RuleSyntaxError("empty rule", 0)
        match = self.expr()
        tok = self.peek()
        if tok.kind != "eof":
            raise RuleSyntaxError(f"unexpected {tok.describe()}", tok.pos)
        return match

    def expr(self) -> Match:
        parts = [self.conjunction()]
        while self.peek().kind == "||":
            self.take()
            parts.append(self.conjunction())
        if len(parts) == 1:
            return parts[0]
        if len(parts) == 2:
            a, b = parts
            return lambda req: a(req) or b(req)
        alternatives = tuple(parts)
        return lambda req: any(p(req) for p in alternatives)

    def conjunction(self) -> Match:
        parts = [self.unary()]
        while self.peek().kind == "&&":
            self.take()
            parts.append(self.unary())
        if len(parts) == 1:
            return parts[0]
        if len(parts) == 2:
            a, b = parts
            return lambda req: a(req) and b(req)
        required = tuple(parts)
        return lambda req: all(p(req) for p in required)

    def unary(self) -> Match:
        tok = self.take()
        if tok.kind in ("!", "("):
            self.depth += 1
            if self.depth > MAX_EXPRESSION_NESTING:
                raise RuleSyntaxError(f"nested deeper than {MAX_EXPRESSION_NESTING} levels of parentheses and '!'", tok.pos)
            if tok.kind == "!":
                negated = self.unary()
                self.depth -= 1
                return lambda req: not negated(req)
            inner = self.expr()
            self.expect(")", "')'")
            self.depth -= 1
            return inner
        if tok.kind == "ident":
            return self.matcher(tok)
        if tok.kind == "eof":
            raise RuleSyntaxError("unexpected end of rule, expected a matcher", tok.pos)
        raise RuleSyntaxError(f"unexpected {tok.describe()}, expected a matcher", tok.pos)

    def matcher(self, name: _Token) -> Match:
        canonical = _MATCHER_SPELLINGS.get(name.value)
        spec = MATCHERS.get(canonical) if canonical else None
        if canonical is None or spec is None:
            hint = difflib.get_close_matches(name.value, MATCHERS, n=1, cutoff=0.6)
            if not hint:
                lowered = {m.lower(): m for m in MATCHERS}
                hint = [lowered[name.value.lower()]] if name.value.lower() in lowered else []
            extra = f" (did you mean {hint[0]}?)" if hint else ""
            raise RuleSyntaxError(f"unknown matcher {name.value!r}{extra}", name.pos)
        self.expect("(", f"'(' after {name.value}")
        args: list[_Token] = []
        if self.peek().kind != ")":
            while True:
                tok = self.take()
                if tok.kind != "string":
                    raise RuleSyntaxError(
                        f"expected a quoted value (`...` or \"...\"), found {tok.describe()}", tok.pos)
                args.append(tok)
                if self.peek().kind != ",":
                    break
                self.take()
        self.expect(")", "',' or ')'")
        counts, build = spec
        if len(args) not in counts:
            want = " or ".join(str(c) for c in counts)
            plural = "" if counts == (1,) else "s"
            raise RuleSyntaxError(
                f"{canonical} takes {want} argument{plural}, got {len(args)}", name.pos)
        for arg in args:  # Traefik's CheckRule: no empty arguments, for any matcher
            if not arg.value:
                raise RuleSyntaxError(f"{canonical}: empty argument", arg.pos)
        return build(args)


# --------------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------------

class Rule:
    """A compiled rule. Equal (and hashed) by its text."""

    __slots__ = ("_match", "text")

    def __init__(self, text: str, match: Match) -> None:
        self.text = text
        self._match = match

    def matches(self, req: RequestView) -> bool:
        return self._match(req)

    def __repr__(self) -> str:
        return f"Rule({self.text!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Rule) and other.text == self.text

    def __hash__(self) -> int:
        return hash(self.text)


def compile_rule(text: str) -> Rule:
    """Parse and compile a Traefik v3 rule; raise RuleSyntaxError with the column of the problem."""
    return Rule(text, _Parser(text).parse())
