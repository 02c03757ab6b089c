"""shadow.gateway.middlewares.httproute: the Gateway API's RequestRedirect and ReplacePrefixMatch."""

from __future__ import annotations

import pytest

from shadow.gateway.middlewares.httproute import ReplacePrefixMatch, RequestRedirect, replace_prefix
from shadow.gateway.middlewares.pipeline import MiddlewareRuntime
from shadow.gateway.middlewares.request import LocalAnswer, MiddlewareRequest


@pytest.mark.parametrize(("path", "prefix", "replacement", "expected"), [
    ("/prefix/one/two", "/prefix/one", "/one", "/one/two"),
    ("/prefix/one", "/prefix/one", "/one", "/one"),
    ("/strip-prefix/three", "/strip-prefix", "/", "/three"),
    ("/strip-prefix", "/strip-prefix", "/", "/"),
    ("/a/", "/a/", "/b", "/b"),
    ("/api/x", "/", "/v1", "/v1/api/x"),
    ("/other", "/a", "/b", "/other"),
    ("/ab", "/a", "/b", "/ab"),  # element-wise: /a is not a prefix of /ab
])
def test_replace_prefix(path: str, prefix: str, replacement: str, expected: str) -> None:
    assert replace_prefix(path, prefix, replacement) == expected
    req = MiddlewareRequest(method="GET", scheme="http", host="h", path=path, query="q=1")
    done = ReplacePrefixMatch("p", prefix, replacement).check(req)
    assert (done.path, done.query) == (expected, "q=1")


@pytest.mark.parametrize(("kwargs", "host", "expected"), [
    ({}, "shop.test:8080", "http://shop.test/old/x?q=1"),
    ({"hostname": "example.org", "status": 301}, "shop.test", "http://example.org/old/x?q=1"),
    ({"scheme": "https"}, "shop.test:8080", "https://shop.test/old/x?q=1"),
    ({"scheme": "https", "port": 8443}, "shop.test", "https://shop.test:8443/old/x?q=1"),
    ({"port": 80}, "shop.test", "http://shop.test/old/x?q=1"),
    ({"listener_port": 8080}, "shop.test", "http://shop.test:8080/old/x?q=1"),
    ({"full_path": "/new"}, "[::1]:81", "http://[::1]/new?q=1"),
    ({"prefix": "/old", "prefix_replacement": "/new"}, "shop.test", "http://shop.test/new/x?q=1"),
])
def test_redirect_location(kwargs: dict[str, object], host: str, expected: str) -> None:
    mw = RequestRedirect("r", **kwargs)  # type: ignore[arg-type]
    answer = mw.check(MiddlewareRequest(method="GET", scheme="http", host=host, path="/old/x", query="q=1"))
    assert answer == LocalAnswer(mw.status, (("Location", expected),))


def test_they_run_in_the_routers_pipeline() -> None:
    runtime = MiddlewareRuntime({})
    req = MiddlewareRequest(method="GET", scheme="http", host="h", path="/api/v", query="")
    rewrite = ReplacePrefixMatch("p", "/api", "/v1")
    assert MiddlewareRuntime.applies([rewrite])
    outcome = runtime.run([rewrite], req, 0)
    assert outcome.answer is None and outcome.request.path == "/v1/v"
    outcome = runtime.run([rewrite, RequestRedirect("r", scheme="https")], req, 0)
    assert outcome.answer is not None and outcome.answer.headers == (("Location", "https://h/v1/v"),)
