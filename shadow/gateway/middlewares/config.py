"""Parsing Traefik's options for the middlewares of this package (hooked into
shadow.gateway.config's middleware parser). Traefik's names and defaults; an unknown option is an
error naming its line, as is a value Traefik itself refuses (a bad regexp, a bad CIDR, no users)."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from shadow.gateway.goregex import GoRegexp, GoRegexpError, compile_go
from shadow.gateway.middlewares.basicauth import DEFAULT_REALM, BasicAuth, parse_users, users_file_lines
from shadow.gateway.middlewares.buffering import Buffering
from shadow.gateway.middlewares.chain import Chain
from shadow.gateway.middlewares.compress import SUPPORTED_ENCODINGS, Compress, parse_media_type
from shadow.gateway.middlewares.contenttype import ContentType
from shadow.gateway.middlewares.digestauth import DigestAuth
from shadow.gateway.middlewares.encodedcharacters import EncodedCharacters
from shadow.gateway.middlewares.errorpage import ErrorPage
from shadow.gateway.middlewares.forwardauth import ForwardAuth
from shadow.gateway.middlewares.headers import Cors, Security
from shadow.gateway.middlewares.inflightreq import InFlightReq
from shadow.gateway.middlewares.ipallowlist import IPAllowList
from shadow.gateway.middlewares.ipstrategy import IPChecker, IPStrategy, SourceCriterion
from shadow.gateway.middlewares.paths import ReplacePath, ReplacePathRegex, StripPrefixRegex
from shadow.gateway.middlewares.ratelimit import RateLimit
from shadow.gateway.middlewares.redirect import Redirect, redirect_scheme
from shadow.gateway.middlewares.retry import Retry
from shadow.yamlconfig import HEADER_NAME, YamlReader

__all__ = ["HEADERS_OPTIONS", "PARSERS", "TraefikMiddleware", "parse_headers_options", "parse_status_ranges"]

TraefikMiddleware = (Chain | Compress | ForwardAuth | ErrorPage | DigestAuth | Buffering | ContentType | EncodedCharacters | RateLimit | Retry | Redirect | ReplacePath | ReplacePathRegex | StripPrefixRegex
                     | BasicAuth | IPAllowList | InFlightReq)

_STATUS_RANGE = re.compile(r"^\s*(\d{3})\s*(?:-\s*(\d{3})\s*)?$")


def _regexp(reader: YamlReader, body: dict[Any, Any], key: str, where: str, text: str | None = None,
            line: int | None = None) -> GoRegexp:
    pattern = (text if text is not None else reader.required_string(body, key, where)).strip()
    try:
        return compile_go(pattern)
    except GoRegexpError as exc:
        reader.fail(f"invalid regular expression `{pattern}` (Go's RE2 syntax): {exc}", f"{where}.{key}",
                    line if line is not None else reader.value_line(body, key))


def parse_status_ranges(reader: YamlReader, body: dict[Any, Any], key: str, where: str) -> tuple[tuple[int, int], ...]:
    """Traefik's HTTPCodeRanges: "500", "500-504" (inclusive)."""
    items = reader.sequence(body, key, where)
    ranges: list[tuple[int, int]] = []
    for i, item in enumerate(items):
        m = _STATUS_RANGE.match(str(item))
        if isinstance(item, bool) or m is None:
            reader.fail(f"expected a status code or range like \"500-504\", got {item!r}", f"{where}.{key}[{i}]",
                        reader.item_line(items, i))
        lo = int(m.group(1))
        hi = int(m.group(2) or lo)
        if lo > hi:
            reader.fail(f"range {item!r} ends before it starts", f"{where}.{key}[{i}]", reader.item_line(items, i))
        ranges.append((lo, hi))
    return tuple(ranges)


def _ip_checker(reader: YamlReader, body: dict[Any, Any], key: str, where: str) -> IPChecker:
    entries = reader.string_list(body, key, where)
    try:
        return IPChecker.parse(entries)
    except ValueError as exc:
        reader.fail(str(exc), f"{where}.{key}", reader.value_line(body, key) or reader.node_line(body))


def _ip_strategy(reader: YamlReader, body: dict[Any, Any], key: str, where: str) -> IPStrategy | None:
    if key not in body:
        return None
    here = f"{where}.{key}"
    node = reader.mapping(body[key], here, reader.value_line(body, key))
    reader.check_keys(node, here, ("depth", "excludedIPs", "ipv6Subnet"))
    depth = reader.integer(node, "depth", here, 0, minimum=0)
    excluded = _ip_checker(reader, node, "excludedIPs", here) if reader.string_list(node, "excludedIPs", here) else None
    subnet = None
    if node.get("ipv6Subnet") is not None:
        subnet = reader.integer(node, "ipv6Subnet", here, 0, minimum=1, maximum=128)
    return IPStrategy(depth, excluded, subnet)


def _source_criterion(reader: YamlReader, body: dict[Any, Any], where: str, default: SourceCriterion) -> SourceCriterion:
    if body.get("sourceCriterion") is None:
        return default
    here = f"{where}.sourceCriterion"
    node = reader.mapping(body["sourceCriterion"], here, reader.value_line(body, "sourceCriterion"))
    reader.check_keys(node, here, ("ipStrategy", "requestHeaderName", "requestHost"))
    strategy = _ip_strategy(reader, node, "ipStrategy", here)
    header = reader.string(node, "requestHeaderName", here) or ""
    host = reader.boolean(node, "requestHost", here, False)
    chosen = [n for n, on in (("ipStrategy", strategy is not None), ("requestHeaderName", bool(header)),
                              ("requestHost", host)) if on]
    if len(chosen) > 1:
        reader.fail(f"{chosen[0]} and {chosen[1]} are mutually exclusive", here, reader.value_line(body, "sourceCriterion"))
    if not chosen:
        return default
    return SourceCriterion(strategy, header, host)


def _chain(reader: YamlReader, name: str, body: dict[Any, Any], where: str, base_dir: Path) -> Chain:
    reader.check_keys(body, where, ("middlewares",))
    names = reader.string_list(body, "middlewares", where)
    return Chain(name, tuple(n.split("@", 1)[0] if n.endswith(("@file", "@internal")) else n for n in names))


def _rate_limit(reader: YamlReader, name: str, body: dict[Any, Any], where: str, base_dir: Path) -> RateLimit:
    reader.check_keys(body, where, ("average", "period", "burst", "sourceCriterion"), unsupported=("redis",))
    average = reader.integer(body, "average", where, 0, minimum=0)
    period = reader.duration(body, "period", where, 1.0)
    if period < 0:
        reader.fail("negative value not valid for period", f"{where}.period", reader.value_line(body, "period"))
    burst = reader.integer(body, "burst", where, 1, minimum=0)
    source = _source_criterion(reader, body, where, SourceCriterion(IPStrategy()))
    return RateLimit(name, average, period or 1.0, burst, source)


def _retry(reader: YamlReader, name: str, body: dict[Any, Any], where: str, base_dir: Path) -> Retry:
    reader.check_keys(body, where, ("attempts", "initialInterval", "timeout", "status", "maxRequestBodyBytes",
                                    "disableRetryOnNetworkError", "retryNonIdempotentMethod"))
    if body.get("attempts") is None:
        reader.fail("incorrect (or empty) value for attempt (0)", f"{where}.attempts", reader.node_line(body))
    attempts = reader.integer(body, "attempts", where, 0, minimum=1)
    status = parse_status_ranges(reader, body, "status", where)
    disable = reader.boolean(body, "disableRetryOnNetworkError", where, False)
    if disable and not status:
        reader.fail("retry middleware requires at least HTTP status codes or retry on TCP", where, reader.node_line(body))
    return Retry(name, attempts, reader.duration(body, "initialInterval", where, 0.0),
                 reader.duration(body, "timeout", where, 0.0), status,
                 reader.integer(body, "maxRequestBodyBytes", where, -1, minimum=-1), disable,
                 reader.boolean(body, "retryNonIdempotentMethod", where, False))


def _redirect_scheme(reader: YamlReader, name: str, body: dict[Any, Any], where: str, base_dir: Path) -> Redirect:
    reader.check_keys(body, where, ("scheme", "port", "permanent", "forcePermanentRedirect"))
    scheme = reader.string(body, "scheme", where) or ""
    if not scheme:
        reader.fail("you must provide a target scheme", f"{where}.scheme", reader.node_line(body))
    port = reader.string(body, "port", where) or ""
    if port and not port.isdigit():
        reader.fail(f"port {port!r} is not a number", f"{where}.port", reader.value_line(body, "port"))
    return redirect_scheme(name, scheme, port, reader.boolean(body, "permanent", where, False),
                           reader.boolean(body, "forcePermanentRedirect", where, False))


def _redirect_regex(reader: YamlReader, name: str, body: dict[Any, Any], where: str, base_dir: Path) -> Redirect:
    reader.check_keys(body, where, ("regex", "replacement", "permanent"))
    regex = _regexp(reader, body, "regex", where)
    replacement = reader.string(body, "replacement", where, default="", allow_empty=True) or ""
    return Redirect(name, regex, replacement, reader.boolean(body, "permanent", where, False))


def _replace_path(reader: YamlReader, name: str, body: dict[Any, Any], where: str, base_dir: Path) -> ReplacePath:
    reader.check_keys(body, where, ("path",))
    return ReplacePath(name, reader.string(body, "path", where, default="", allow_empty=True) or "")


def _replace_path_regex(reader: YamlReader, name: str, body: dict[Any, Any], where: str,
                        base_dir: Path) -> ReplacePathRegex:
    reader.check_keys(body, where, ("regex", "replacement"))
    regex = _regexp(reader, body, "regex", where)
    replacement = (reader.string(body, "replacement", where, default="", allow_empty=True) or "").strip()
    return ReplacePathRegex(name, regex, replacement)


def _strip_prefix_regex(reader: YamlReader, name: str, body: dict[Any, Any], where: str,
                        base_dir: Path) -> StripPrefixRegex:
    reader.check_keys(body, where, ("regex",))
    items = reader.sequence(body, "regex", where)
    texts = reader.string_list(body, "regex", where)
    return StripPrefixRegex(name, tuple(_regexp(reader, body, "regex", where, text, reader.item_line(items, i))
                                        for i, text in enumerate(texts)))


def _user_lines(reader: YamlReader, body: dict[Any, Any], where: str, base_dir: Path, *, colons: int,
                form: str) -> list[str]:
    """basicAuth's / digestAuth's users: the lines of `usersFile` (relative to the config), then `users`,
    each inline entry checked to have `colons` colons."""
    lines: list[str] = []
    users_file = reader.string(body, "usersFile", where)
    if users_file:
        path = Path(users_file) if Path(users_file).is_absolute() else base_dir / users_file
        try:
            lines = users_file_lines(path.read_text("utf-8"))
        except (OSError, UnicodeDecodeError) as exc:
            reader.fail(f"cannot read {str(path)!r}: {getattr(exc, 'strerror', None) or exc}", f"{where}.usersFile",
                        reader.value_line(body, "usersFile"))
    items = reader.sequence(body, "users", where)
    for i, entry in enumerate(reader.string_list(body, "users", where)):
        if entry.count(":") != colons:
            reader.fail(f"expected {form}", f"{where}.users[{i}]", reader.item_line(items, i))
        lines.append(entry)
    return lines


def _basic_auth(reader: YamlReader, name: str, body: dict[Any, Any], where: str, base_dir: Path) -> BasicAuth:
    reader.check_keys(body, where, ("users", "usersFile", "realm", "removeHeader", "headerField"))
    lines = _user_lines(reader, body, where, base_dir, colons=1, form="user:hash (an htpasswd line)")
    try:
        users = parse_users(lines)
    except ValueError as exc:
        reader.fail(str(exc), f"{where}.usersFile", reader.value_line(body, "usersFile"))
    if not users:
        reader.fail(f"no users found in {reader.string(body, 'usersFile', where) or 'users'}", where,
                    reader.node_line(body))
    header_field = reader.string(body, "headerField", where) or ""
    if header_field and not HEADER_NAME.match(header_field):
        reader.fail(f"bad header name {header_field!r}", f"{where}.headerField", reader.value_line(body, "headerField"))
    return BasicAuth(name, tuple(users.items()), reader.string(body, "realm", where) or DEFAULT_REALM,
                     reader.boolean(body, "removeHeader", where, False), header_field)


def _ip_allow_list(reader: YamlReader, name: str, body: dict[Any, Any], where: str, base_dir: Path) -> IPAllowList:
    reader.check_keys(body, where, ("sourceRange", "ipStrategy", "rejectStatusCode"))
    if not reader.string_list(body, "sourceRange", where):
        reader.fail("sourceRange is empty, IPAllowLister not created", f"{where}.sourceRange", reader.node_line(body))
    checker = _ip_checker(reader, body, "sourceRange", where)
    code = reader.integer(body, "rejectStatusCode", where, 0)
    if code == 0:
        code = 403
    elif not 100 <= code <= 599:
        reader.fail(f"invalid HTTP status code {code}", f"{where}.rejectStatusCode",
                    reader.value_line(body, "rejectStatusCode"))
    return IPAllowList(name, checker, _ip_strategy(reader, body, "ipStrategy", where) or IPStrategy(), code)


def _ip_white_list(reader: YamlReader, name: str, body: dict[Any, Any], where: str, base_dir: Path) -> IPAllowList:
    # Traefik's deprecated name: same options without rejectStatusCode.
    reader.check_keys(body, where, ("sourceRange", "ipStrategy"))
    return _ip_allow_list(reader, name, body, where, base_dir)


def _in_flight_req(reader: YamlReader, name: str, body: dict[Any, Any], where: str, base_dir: Path) -> InFlightReq:
    reader.check_keys(body, where, ("amount", "sourceCriterion"))
    amount = reader.integer(body, "amount", where, 0)
    if amount <= 0:
        reader.fail(f"amount must be positive, got {amount}", f"{where}.amount",
                    reader.value_line(body, "amount") or reader.node_line(body))
    return InFlightReq(name, amount, _source_criterion(reader, body, where, SourceCriterion(request_host=True)))


_CORS_OPTIONS = ("accessControlAllowCredentials", "accessControlAllowHeaders", "accessControlAllowMethods",
                 "accessControlAllowOriginList", "accessControlAllowOriginListRegex", "accessControlExposeHeaders",
                 "accessControlMaxAge", "addVaryHeader")
_SECURITY_OPTIONS = ("allowedHosts", "hostsProxyHeaders", "sslProxyHeaders", "stsSeconds", "stsIncludeSubdomains",
                     "stsPreload", "forceSTSHeader", "frameDeny", "customFrameOptionsValue", "contentTypeNosniff",
                     "browserXssFilter", "customBrowserXSSValue", "contentSecurityPolicy",
                     "contentSecurityPolicyReportOnly", "publicKey", "referrerPolicy", "permissionsPolicy",
                     "isDevelopment")
HEADERS_OPTIONS = (*_CORS_OPTIONS, *_SECURITY_OPTIONS)


def parse_headers_options(reader: YamlReader, body: dict[Any, Any], where: str) -> tuple[Cors | None, Security | None]:
    """The `headers` middleware's CORS and security options (custom headers: shadow.gateway.config)."""
    cors = None
    if any(k in body for k in _CORS_OPTIONS):
        items = reader.sequence(body, "accessControlAllowOriginListRegex", where)
        regexes = tuple(_regexp(reader, body, "accessControlAllowOriginListRegex", where, text, reader.item_line(items, i))
                        for i, text in enumerate(reader.string_list(body, "accessControlAllowOriginListRegex", where)))
        max_age = None
        if body.get("accessControlMaxAge") is not None:
            max_age = reader.integer(body, "accessControlMaxAge", where, 0)
        cors = Cors(reader.boolean(body, "accessControlAllowCredentials", where, False),
                    reader.string_list(body, "accessControlAllowHeaders", where),
                    reader.string_list(body, "accessControlAllowMethods", where),
                    reader.string_list(body, "accessControlAllowOriginList", where), regexes,
                    reader.string_list(body, "accessControlExposeHeaders", where), max_age,
                    reader.boolean(body, "addVaryHeader", where, False))
    security = None
    if any(k in body for k in _SECURITY_OPTIONS):
        ssl_where = f"{where}.sslProxyHeaders"
        ssl_node = reader.mapping(body.get("sslProxyHeaders"), ssl_where, reader.value_line(body, "sslProxyHeaders"))
        ssl_headers = tuple((str(k), reader.string(ssl_node, str(k), ssl_where, default="", allow_empty=True) or "")
                            for k in ssl_node)

        def text(key: str) -> str:
            return reader.string(body, key, where, default="", allow_empty=True) or ""

        security = Security(
            reader.string_list(body, "allowedHosts", where), reader.string_list(body, "hostsProxyHeaders", where),
            ssl_headers, reader.integer(body, "stsSeconds", where, 0),
            reader.boolean(body, "stsIncludeSubdomains", where, False), reader.boolean(body, "stsPreload", where, False),
            reader.boolean(body, "forceSTSHeader", where, False), reader.boolean(body, "frameDeny", where, False),
            text("customFrameOptionsValue"), reader.boolean(body, "contentTypeNosniff", where, False),
            reader.boolean(body, "browserXssFilter", where, False), text("customBrowserXSSValue"),
            text("contentSecurityPolicy"), text("contentSecurityPolicyReportOnly"), text("publicKey"),
            text("referrerPolicy"), text("permissionsPolicy"), reader.boolean(body, "isDevelopment", where, False))
    return cors, security


def _media_types(reader: YamlReader, body: dict[Any, Any], key: str, where: str
                 ) -> tuple[tuple[str, tuple[tuple[str, str], ...]], ...]:
    items = reader.sequence(body, key, where)
    out = []
    for i, text in enumerate(reader.string_list(body, key, where)):
        try:
            media, params = parse_media_type(text)
        except ValueError:
            reader.fail(f"parsing media type {text!r}: not type/subtype", f"{where}.{key}[{i}]", reader.item_line(items, i))
        out.append((media, tuple(sorted(params.items()))))
    return tuple(out)


def _compress(reader: YamlReader, name: str, body: dict[Any, Any], where: str, base_dir: Path) -> Compress:
    reader.check_keys(body, where, ("excludedContentTypes", "includedContentTypes", "minResponseBodyBytes",
                                    "encodings", "defaultEncoding"))
    excluded = _media_types(reader, body, "excludedContentTypes", where)
    included = _media_types(reader, body, "includedContentTypes", where)
    if excluded and included:
        reader.fail("excludedContentTypes and includedContentTypes options are mutually exclusive", where,
                    reader.node_line(body))
    encodings = reader.string_list(body, "encodings", where) if "encodings" in body else SUPPORTED_ENCODINGS
    items = reader.sequence(body, "encodings", where)
    if not encodings:
        reader.fail("at least one encoding must be specified", f"{where}.encodings", reader.value_line(body, "encodings"))
    for i, encoding in enumerate(encodings):
        if encoding not in SUPPORTED_ENCODINGS:
            reader.fail(f"unsupported encoding: {encoding} (gzip, br, zstd)", f"{where}.encodings[{i}]",
                        reader.item_line(items, i))
    default = reader.string(body, "defaultEncoding", where) or ""
    if default and default not in encodings:
        reader.fail(f"unsupported default encoding: {default}", f"{where}.defaultEncoding",
                    reader.value_line(body, "defaultEncoding"))
    min_size = reader.integer(body, "minResponseBodyBytes", where, 0)
    return Compress(name, tuple(encodings), excluded, included, min_size if min_size > 0 else 1024, default)


def _buffering(reader: YamlReader, name: str, body: dict[Any, Any], where: str, base_dir: Path) -> Buffering:
    reader.check_keys(body, where, ("maxRequestBodyBytes", "memRequestBodyBytes", "maxResponseBodyBytes",
                                    "memResponseBodyBytes", "disableRequestBuffer", "disableResponseBuffer"),
                      unsupported=("retryExpression",))
    for key in ("memRequestBodyBytes", "memResponseBodyBytes"):  # accepted: mitmproxy holds whole bodies anyway
        reader.integer(body, key, where, 0, minimum=0)
    return Buffering(name, reader.integer(body, "maxRequestBodyBytes", where, 0, minimum=0),
                     reader.integer(body, "maxResponseBodyBytes", where, 0, minimum=0),
                     reader.boolean(body, "disableRequestBuffer", where, False),
                     reader.boolean(body, "disableResponseBuffer", where, False))


def _content_type(reader: YamlReader, name: str, body: dict[Any, Any], where: str, base_dir: Path) -> ContentType:
    reader.check_keys(body, where, ("autoDetect",))
    return ContentType(name, reader.boolean(body, "autoDetect", where, True))


_ENCODED_OPTIONS = ("allowEncodedSlash", "allowEncodedBackSlash", "allowEncodedNullCharacter", "allowEncodedSemicolon",
                    "allowEncodedPercent", "allowEncodedQuestionMark", "allowEncodedHash")


def _encoded_characters(reader: YamlReader, name: str, body: dict[Any, Any], where: str,
                        base_dir: Path) -> EncodedCharacters:
    reader.check_keys(body, where, _ENCODED_OPTIONS)
    return EncodedCharacters(name, *(reader.boolean(body, key, where, False) for key in _ENCODED_OPTIONS))


def _forward_auth(reader: YamlReader, name: str, body: dict[Any, Any], where: str, base_dir: Path) -> ForwardAuth:
    reader.check_keys(body, where, ("address", "trustForwardHeader", "authResponseHeaders", "authResponseHeadersRegex",
                                    "authRequestHeaders", "addAuthCookiesToResponse", "headerField", "forwardBody",
                                    "maxBodySize", "maxResponseBodySize", "preserveLocationHeader",
                                    "preserveRequestMethod", "authSigninURL"),
                      unsupported=("tls",))
    address = reader.required_string(body, "address", where)
    if not address.startswith(("http://", "https://")):
        reader.fail(f"must be an http:// or https:// URL, got {address!r}", f"{where}.address",
                    reader.value_line(body, "address"))
    regex = _regexp(reader, body, "authResponseHeadersRegex", where) if body.get("authResponseHeadersRegex") else None
    trust = reader.boolean(body, "trustForwardHeader", where, False) if body.get("trustForwardHeader") is not None \
        else None
    return ForwardAuth(
        name, address, trust, reader.string_list(body, "authResponseHeaders", where), regex,
        reader.string_list(body, "authRequestHeaders", where), reader.string_list(body, "addAuthCookiesToResponse", where),
        reader.string(body, "headerField", where) or "", reader.boolean(body, "forwardBody", where, False),
        reader.integer(body, "maxBodySize", where, -1, minimum=-1),
        reader.integer(body, "maxResponseBodySize", where, -1, minimum=-1),
        reader.boolean(body, "preserveLocationHeader", where, False),
        reader.boolean(body, "preserveRequestMethod", where, False), reader.string(body, "authSigninURL", where) or "")


def _errors(reader: YamlReader, name: str, body: dict[Any, Any], where: str, base_dir: Path) -> ErrorPage:
    reader.check_keys(body, where, ("status", "service", "query", "statusRewrites", "errorRequestHeaders"))
    status = parse_status_ranges(reader, body, "status", where)
    if not status:
        reader.fail("needs at least one status or range", f"{where}.status", reader.node_line(body))
    service = reader.required_string(body, "service", where)
    if service.endswith("@file"):
        service = service[:-len("@file")]
    rewrites_where = f"{where}.statusRewrites"
    node = reader.mapping(body.get("statusRewrites"), rewrites_where, reader.value_line(body, "statusRewrites"))
    rewrites = []
    for key in node:
        m = _STATUS_RANGE.match(str(key))
        if m is None:
            reader.fail(f"expected a status code or range like \"500-504\", got {key!r}", f"{rewrites_where}.{key}",
                        reader.key_line(node, key))
        code = reader.integer(node, str(key), rewrites_where, 0, minimum=100, maximum=599)
        rewrites.append(((int(m.group(1)), int(m.group(2) or m.group(1))), code))
    headers = reader.string_list(body, "errorRequestHeaders", where) if "errorRequestHeaders" in body else None
    return ErrorPage(name, status, service, reader.string(body, "query", where, default="", allow_empty=True) or "",
                     tuple(rewrites), headers)


def _digest_auth(reader: YamlReader, name: str, body: dict[Any, Any], where: str, base_dir: Path) -> DigestAuth:
    reader.check_keys(body, where, ("users", "usersFile", "realm", "removeHeader", "headerField"))
    lines = _user_lines(reader, body, where, base_dir, colons=2, form="user:realm:hash (an htdigest line)")
    users: dict[str, str] = {}
    for line in lines:
        parts = line.split(":")
        if len(parts) != 3:
            reader.fail(f"error parsing DigestUser: {line}", f"{where}.usersFile", reader.value_line(body, "usersFile"))
        users[f"{parts[0]}:{parts[1]}"] = parts[2]
    if not users:
        reader.fail(f"no users found in {reader.string(body, 'usersFile', where) or 'users'}", where,
                    reader.node_line(body))
    header_field = reader.string(body, "headerField", where) or ""
    if header_field and not HEADER_NAME.match(header_field):
        reader.fail(f"bad header name {header_field!r}", f"{where}.headerField", reader.value_line(body, "headerField"))
    return DigestAuth(name, tuple(users.items()), reader.string(body, "realm", where) or "traefik",
                      reader.boolean(body, "removeHeader", where, False), header_field)


Parser = Callable[[YamlReader, str, dict[Any, Any], str, Path], TraefikMiddleware]
PARSERS: dict[str, Parser] = {
    "chain": _chain,
    "compress": _compress,
    "digestAuth": _digest_auth,
    "errors": _errors,
    "forwardAuth": _forward_auth,
    "buffering": _buffering,
    "contentType": _content_type,
    "encodedCharacters": _encoded_characters,
    "rateLimit": _rate_limit,
    "retry": _retry,
    "redirectScheme": _redirect_scheme,
    "redirectRegex": _redirect_regex,
    "replacePath": _replace_path,
    "replacePathRegex": _replace_path_regex,
    "stripPrefixRegex": _strip_prefix_regex,
    "basicAuth": _basic_auth,
    "ipAllowList": _ip_allow_list,
    "ipWhiteList": _ip_white_list,
    "inFlightReq": _in_flight_req,
}
