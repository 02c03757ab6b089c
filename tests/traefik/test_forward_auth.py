"""Traefik's forwardAuth tests, ported.

Source (Traefik TRAEFIK_VERSION, see tests/traefik/__init__.py): pkg/middlewares/auth/forward_test.go.
Ported: TestForwardAuth_writeHeader and TestForwardAuth_oldWriteHeader (tables in
forward_auth_cases.py: the request to GET http://foo.bar/path?q=1, no remote address, becomes the auth
request's headers), and below TestForwardAuthFail, TestForwardAuthSuccess, TestForwardAuthRedirect,
TestForwardAuthFailResponseHeaders, TestForwardAuthPreserveLocationHeader, TestForwardAuthPreserveRequestMethod,
TestForwardAuthForwardBodySizeLimit, TestForwardAuthMaxResponseBodySize, TestForwardAuthAuthSigninURL as
decisions on the auth server's answer (the HTTP call itself is tested end to end in
tests/test_traefik_middlewares_e2e.py). Skipped, Go plumbing: TestForwardAuthClientClosedRequest (Go's
context cancellation), TestForwardAuthTracing (OpenTelemetry spans), TestForwardAuthDoesNotForwardCONNECTBody
(CONNECT never reaches a reverse proxy's routes here).
"""

from __future__ import annotations

from typing import Any

import pytest

from shadow.gateway.goregex import compile_go
from shadow.gateway.middlewares.forwardauth import (
    AuthCall,
    ForwardAuth,
    auth_call,
    auth_decision,
    merge_auth_cookies,
)
from shadow.gateway.middlewares.request import LocalAnswer, first_header
from tests.traefik.forward_auth_cases import CASES


def write_header(case: dict[str, Any], trust: bool | None) -> AuthCall:
    fa = ForwardAuth("auth", "http://auth.example/", trust_forward_header=trust,
                     auth_request_headers=tuple(case.get("authRequestHeaders", ())))
    call = auth_call(fa, method="GET", host="" if case.get("emptyHost") else "foo.bar", uri="/path?q=1",
                     headers=case.get("headers", []), client_ip="", tls=False, body=None)
    assert isinstance(call, AuthCall)
    return call


def check(call: AuthCall, case: dict[str, Any]) -> None:
    remaining = list(call.headers)
    for name, value in case.get("expectedHeaders", []):
        assert any(k.lower() == name.lower() for k, _v in remaining), f"expected header {name} not found"
        assert first_header(remaining, name) == value, name
        remaining = [(k, v) for k, v in remaining if k.lower() != name.lower()]
    if case.get("checkForUnexpectedHeaders"):
        assert remaining == []


@pytest.mark.parametrize("case", CASES["TestForwardAuth_writeHeader"],
                         ids=[c["desc"] for c in CASES["TestForwardAuth_writeHeader"]])
def test_write_header(case: dict[str, Any]) -> None:
    check(write_header(case, bool(case.get("trustForwardHeader"))), case)


@pytest.mark.parametrize("case", CASES["TestForwardAuth_oldWriteHeader"],
                         ids=[c["desc"] for c in CASES["TestForwardAuth_oldWriteHeader"]])
def test_old_write_header(case: dict[str, Any]) -> None:
    check(write_header(case, None), case)


FA = ForwardAuth("auth", "http://auth.example/verify")


def test_forward_auth_fail() -> None:
    out = auth_decision(FA, [], 403, [("Proxy-Authenticate", "test")], b"Forbidden\n")
    assert out.answer is not None and out.answer.status == 403 and out.answer.body == b"Forbidden\n"
    assert dict(out.answer.headers)["Proxy-Authenticate"] == "test"


def test_forward_auth_success() -> None:
    fa = ForwardAuth("authTest", FA.address, auth_response_headers=("X-Auth-User", "X-Auth-Group"),
                     auth_response_headers_regex=compile_go("^Foo-"), add_auth_cookies_to_response=("authCookie",))
    auth_headers = [("X-Auth-User", "user@example.com"), ("X-Auth-Secret", "secret"), ("X-Auth-Group", "group1"),
                    ("X-Auth-Group", "group2"), ("Foo-Bar", "auth-value"), ("Set-Cookie", "authCookie=Auth"),
                    ("Set-Cookie", "authCookieNotAdded=Auth")]
    client = [("X-Auth-Group", "admin_group"), ("Foo-Bar", "client-value"), ("Foo-Baz", "client-value")]
    out = auth_decision(fa, client, 200, auth_headers, b"Success\n")
    assert out.answer is None
    assert first_header(out.headers, "X-Auth-User") == "user@example.com"
    assert first_header(out.headers, "X-Auth-Secret") == ""
    assert [v for k, v in out.headers if k.lower() == "x-auth-group"] == ["group1", "group2"]
    assert first_header(out.headers, "Foo-Bar") == "auth-value"
    assert first_header(out.headers, "Foo-Baz") == ""  # matched the regex, absent from the auth answer
    backend = [("Set-Cookie", "authCookie=Backend"), ("Set-Cookie", "backendCookie=Backend"),
               ("Other-Header", "BackendHeaderValue")]
    merged = merge_auth_cookies(fa, out.auth_cookies, backend)
    assert [v for k, v in merged if k == "Set-Cookie"] == ["backendCookie=Backend", "authCookie=Auth"]
    assert [v for k, v in merged if k == "Other-Header"] == ["BackendHeaderValue"]


def test_forward_auth_redirect() -> None:
    out = auth_decision(FA, [], 302, [("Location", "http://example.com/redirect-test")], b"")
    assert out.answer is not None and out.answer.status == 302
    assert dict(out.answer.headers)["Location"] == "http://example.com/redirect-test"


def test_forward_auth_fail_response_headers() -> None:
    # the auth server: http.SetCookie(example=testing; Path=/), X-Foo: bar, http.Error("Forbidden", 403)
    auth_headers = [("Set-Cookie", "example=testing; Path=/"), ("X-Foo", "bar"),
                    ("Content-Type", "text/plain; charset=utf-8"), ("X-Content-Type-Options", "nosniff"),
                    ("Content-Length", "10")]
    out = auth_decision(FA, [], 403, auth_headers, b"Forbidden\n")
    assert out.answer is not None and out.answer.status == 403 and out.answer.body == b"Forbidden\n"
    assert dict(out.answer.headers) == {"Set-Cookie": "example=testing; Path=/", "X-Foo": "bar",
                                        "Content-Type": "text/plain; charset=utf-8",
                                        "X-Content-Type-Options": "nosniff"}  # + Content-Length, set on sending


@pytest.mark.parametrize(("preserve", "expected"), [(True, "/some/path"), (False, "http://auth.example/some/path")])
def test_forward_auth_preserve_location_header(preserve: bool, expected: str) -> None:
    fa = ForwardAuth("auth", FA.address, preserve_location_header=preserve)
    out = auth_decision(fa, [], 302, [("Location", "/some/path")], b"")
    assert out.answer is not None and dict(out.answer.headers)["Location"] == expected


@pytest.mark.parametrize(("preserve", "method"), [(True, "CONNECT"), (False, "GET")])
def test_forward_auth_preserve_request_method(preserve: bool, method: str) -> None:
    fa = ForwardAuth("auth", FA.address, preserve_request_method=preserve)
    call = auth_call(fa, method="CONNECT", host="foo.bar", uri="/", headers=[], client_ip="1.2.3.4", tls=False, body=None)
    assert isinstance(call, AuthCall) and call.method == method


def test_forward_auth_forward_body_size_limit() -> None:
    fa = ForwardAuth("auth", FA.address, forward_body=True, max_body_size=2)
    out = auth_call(fa, method="POST", host="foo.bar", uri="/", headers=[], client_ip="1.2.3.4", tls=False,
                    body=b"123456789")
    assert isinstance(out, LocalAnswer) and out.status == 401
    fits = auth_call(ForwardAuth("auth", FA.address, forward_body=True), method="POST", host="foo.bar", uri="/",
                     headers=[], client_ip="1.2.3.4", tls=False, body=b"123456789")
    assert isinstance(fits, AuthCall) and fits.body == b"123456789"


def test_forward_auth_max_response_body_size() -> None:
    fa = ForwardAuth("auth", FA.address, max_response_body_size=5)
    out = auth_decision(fa, [], 200, [], b"123456789")
    assert out.answer is not None and out.answer.status == 401
    assert auth_decision(fa, [], 200, [], b"12345").answer is None


def test_forward_auth_auth_signin_url() -> None:
    fa = ForwardAuth("auth", FA.address, auth_signin_url="https://example.com/signin")
    out = auth_decision(fa, [], 401, [], b"")
    assert out.answer is not None and out.answer.status == 302
    assert dict(out.answer.headers)["Location"] == "https://example.com/signin"
    assert auth_decision(fa, [], 403, [], b"").answer.status == 403  # type: ignore[union-attr]
