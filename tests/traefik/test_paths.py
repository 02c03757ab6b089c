"""Traefik's path middlewares' tables, ported.

Sources (Traefik TRAEFIK_VERSION, see tests/traefik/__init__.py):
- pkg/middlewares/replacepath/replace_path_test.go            TestReplacePath
- pkg/middlewares/replacepathregex/replace_path_regex_test.go TestReplacePathRegex
- pkg/middlewares/stripprefixregex/strip_prefix_regex_test.go TestStripPrefixRegex

shadow forwards one raw path (what Go sends as RequestURI): each case checks that raw path against
Go's RequestURI, its decoding against Go's URL.Path, and the header Traefik adds. Go's RawPath
(a cache of the raw form) has no separate equivalent: where Go sets it, RequestURI equals it.
"""

from __future__ import annotations

import pytest

from shadow.gateway.goregex import GoRegexpError, compile_go
from shadow.gateway.middlewares.paths import (
    ReplacePath,
    ReplacePathRegex,
    StripPrefixRegex,
    go_path_unescape,
)
from shadow.gateway.middlewares.request import LocalAnswer, MiddlewareRequest

# (desc, path, config path, expected path, expected raw path, expected header)
REPLACE_PATH = [
    ("simple path", "/example", "/replacement-path", "/replacement-path", "", "/example"),
    ("long path", "/some/really/long/path", "/replacement-path", "/replacement-path", "", "/some/really/long/path"),
    ("path with escaped value", "/foo%2Fbar", "/replacement-path", "/replacement-path", "", "/foo%2Fbar"),
    ("replacement with escaped value", "/path", "/foo%2Fbar", "/foo/bar", "/foo%2Fbar", "/path"),
    ("replacement with percent encoded backspace char", "/path/%08bar", "/path/%08bar", "/path/\bbar", "/path/%08bar",
     "/path/%08bar"),
]


def request(path: str) -> MiddlewareRequest:
    return MiddlewareRequest(method="GET", scheme="http", host="127.0.0.1", path=path)


def header(req: MiddlewareRequest, name: str) -> str:
    return req.header(name)


@pytest.mark.parametrize(("desc", "path", "config", "expected_path", "expected_raw", "expected_header"),
                         REPLACE_PATH, ids=[c[0] for c in REPLACE_PATH])
def test_replace_path(desc: str, path: str, config: str, expected_path: str, expected_raw: str,
                      expected_header: str) -> None:
    out = ReplacePath("foo-replace-path", config).check(request(path))
    assert isinstance(out, MiddlewareRequest)
    assert go_path_unescape(out.path) == expected_path
    assert out.path == (expected_raw or expected_path)  # Go's RequestURI
    assert header(out, "X-Replaced-Path") == expected_header


# (desc, path, replacement, regex, expected path, raw path, header, request URI, status)
REPLACE_PATH_REGEX = [
    ("simple regex", "/whoami/and/whoami", "/who-am-i/$1", r"^/whoami/(.*)", "/who-am-i/and/whoami", "",
     "/whoami/and/whoami", "/who-am-i/and/whoami", 200),
    ("simple replace (no regex)", "/whoami/and/whoami", "/who-am-i", r"/whoami", "/who-am-i/and/who-am-i", "",
     "/whoami/and/whoami", "/who-am-i/and/who-am-i", 200),
    ("empty replacement", "/whoami/and/whoami", "", r"/whoami", "/and", "", "/whoami/and/whoami", "/and", 200),
    ("empty trimmed replacement", "/whoami/and/whoami", " ", r"/whoami", "/and", "", "/whoami/and/whoami", "/and", 200),
    ("no match", "/whoami/and/whoami", "/whoami", r"/no-match", "/whoami/and/whoami", "", "", "/whoami/and/whoami", 200),
    ("multiple replacement", "/downloads/src/source.go", "/downloads/$1-$2", r"^(?i)/downloads/([^/]+)/([^/]+)$",
     "/downloads/src-source.go", "", "/downloads/src/source.go", "/downloads/src-source.go", 200),
    ("replacement with escaped char", "/aaa/bbb", "/foo%2Fbar", r"/aaa/bbb", "/foo/bar", "/foo%2Fbar", "/aaa/bbb",
     "/foo%2Fbar", 200),
    ("path and regex with escaped char", "/aaa%2Fbbb", "/foo/bar", r"/aaa%2Fbbb", "/foo/bar", "", "/aaa%2Fbbb",
     "/foo/bar", 200),
    ("path with escaped char (no match)", "/aaa%2Fbbb", "/foo/bar", r"/aaa/bbb", "/aaa/bbb", "/aaa%2Fbbb", "",
     "/aaa%2Fbbb", 200),
    ("path with percent encoded backspace char", "/foo/%08bar", "/$1", r"^/foo/(.*)", "/\bbar", "", "", "/%08bar", 200),
    ("path with ..", "/foo../bar", "/$1", r"^/foo(.*)", "", "", "", "", 400),
]


def test_replace_path_regex_invalid_regular_expression() -> None:
    with pytest.raises(GoRegexpError):
        compile_go(r"^(?err)/invalid/regexp/([^/]+)$")


@pytest.mark.parametrize(("desc", "path", "replacement", "regex", "expected_path", "expected_raw", "expected_header",
                          "expected_uri", "status"), REPLACE_PATH_REGEX, ids=[c[0] for c in REPLACE_PATH_REGEX])
def test_replace_path_regex(desc: str, path: str, replacement: str, regex: str, expected_path: str,
                            expected_raw: str, expected_header: str, expected_uri: str, status: int) -> None:
    # Traefik trims the regex and the replacement (strings.TrimSpace); the loader does the same.
    mw = ReplacePathRegex("foo-replace-path-regexp", compile_go(regex.strip()), replacement.strip())
    out = mw.check(request(path))
    if status != 200:
        assert isinstance(out, LocalAnswer) and out.status == status
        return
    assert isinstance(out, MiddlewareRequest)
    assert out.path == expected_uri
    assert go_path_unescape(out.path) == expected_path
    if expected_raw:
        assert out.path == expected_raw
    if expected_header:
        assert header(out, "X-Replaced-Path") == expected_header


# (desc, regexes, path, status, expected path, raw path, request URI ("" = not recomputed), header)
STRIP_PREFIX_REGEX = [
    ("/a/test", ["/a/api/"], "/a/test", 200, "/a/test", "", "", ""),
    ("/a/test/", ["/a/api/"], "/a/test/", 200, "/a/test/", "", "", ""),
    ("/a/api/", ["/a/api/"], "/a/api/", 200, "", "", "/", "/a/api/"),
    ("/a/api/test", ["/a/api/"], "/a/api/test", 200, "/test", "", "/test", "/a/api/"),
    ("/a/api/test/", ["/a/api/"], "/a/api/test/", 200, "/test/", "", "/test/", "/a/api/"),
    ("/b/api/", ["/b/([a-z0-9]+)/"], "/b/api/", 200, "", "", "/", "/b/api/"),
    ("/b/api", ["/b/([a-z0-9]+)/"], "/b/api", 200, "/b/api", "", "", ""),
    ("/b/api/test1", ["/b/([a-z0-9]+)/"], "/b/api/test1", 200, "/test1", "", "/test1", "/b/api/"),
    ("/b/api2/test2", ["/b/([a-z0-9]+)/"], "/b/api2/test2", 200, "/test2", "", "/test2", "/b/api2/"),
    ("/c/api/123/", ["/c/[a-z0-9]+/[0-9]+/"], "/c/api/123/", 200, "", "", "/", "/c/api/123/"),
    ("/c/api/123", ["/c/[a-z0-9]+/[0-9]+/"], "/c/api/123", 200, "/c/api/123", "", "", ""),
    ("/c/api/123/test3", ["/c/[a-z0-9]+/[0-9]+/"], "/c/api/123/test3", 200, "/test3", "", "/test3", "/c/api/123/"),
    ("/c/api/abc/test4", ["/c/[a-z0-9]+/[0-9]+/"], "/c/api/abc/test4", 200, "/c/api/abc/test4", "", "", ""),
    ("/a/api/a2Fb", ["/a/api/"], "/a/api/a%2Fb", 200, "/a/b", "/a%2Fb", "/a%2Fb", "/a/api/"),
    ("/b/ap69/test", ["/b/([a-z0-9]+)/"], "/b/ap%69/test", 200, "/test", "", "/test", "/b/api/"),
    ("/b/ap69/a2Fb", ["/b/([a-z0-9]+)/"], "/b/ap%69/a%2Fb", 200, "/a/b", "/a%2Fb", "/a%2Fb", "/b/api/"),
    ("/t2F/test/foo", ["/t /test"], "/t%2F/test/foo", 200, "/t//test/foo", "/t%2F/test/foo", "", ""),
    ("/t /test/a2Fb", ["/t /test"], "/t /test/a%2Fb", 200, "/a/b", "/a%2Fb", "/a%2Fb", "/t /test"),
    ("/t20/test/a2Fb", ["/t /test"], "/t%20/test/a%2Fb", 200, "/a/b", "/a%2Fb", "/a%2Fb", "/t /test"),
    ("/api./foo", ["/api"], "/api./foo", 400, "", "", "", ""),
    ("/api../foo", ["/api"], "/api../foo", 400, "", "", "", ""),
]


@pytest.mark.parametrize(("desc", "regexes", "path", "status", "expected_path", "expected_raw", "expected_uri",
                          "expected_header"), STRIP_PREFIX_REGEX, ids=[c[0] for c in STRIP_PREFIX_REGEX])
def test_strip_prefix_regex(desc: str, regexes: list[str], path: str, status: int, expected_path: str,
                            expected_raw: str, expected_uri: str, expected_header: str) -> None:
    mw = StripPrefixRegex("foo-strip-prefix-regex", tuple(compile_go(r.strip()) for r in regexes))
    out = mw.check(request(path))
    if status != 200:
        assert isinstance(out, LocalAnswer) and out.status == status
        return
    assert isinstance(out, MiddlewareRequest)
    # Go recomputes RequestURI only when a prefix was stripped; otherwise the request goes as it came.
    sent = expected_uri or expected_raw or expected_path
    assert out.path == sent
    assert go_path_unescape(out.path) == (expected_path or "/")  # Go's empty URL.Path is sent as "/"
    assert header(out, "X-Forwarded-Prefix") == expected_header
