"""Traefik's headers middleware tests (CORS and security headers), ported.

Sources (Traefik TRAEFIK_VERSION, see tests/traefik/__init__.py):
- pkg/middlewares/headers/header_test.go   TestNewHeader_CORSPreflights, TestNewHeader_CORSResponses
- pkg/middlewares/headers/secure_test.go   Test_newSecure_modifyResponse
Each case's `dynamic.Headers` is written as the YAML options a Traefik file would hold and loaded by
the gateway's loader; the expected headers are the whole set Go's recorder holds (the upstream
answer's plus the middleware's). Go's `http.Header` values that are lists are joined by commas in
one header here only where Go does it (Access-Control-Request-Method: the first value counts).
Not ported: TestNewHeader_customRequestHeader(_Host) and _customResponseHeaders (custom headers,
covered by tests/test_routing.py and tests/test_addons_router.py against Traefik's semantics).
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from shadow.errors import ConfigError
from shadow.gateway.config import HeadersMiddleware, parse_config
from shadow.gateway.middlewares.headers import cors_preflight, cors_response, security_response


def load(options: dict[str, Any]) -> HeadersMiddleware:
    text = ("http:\n  routers: {r: {rule: \"PathPrefix(`/`)\", service: s, middlewares: [h]}}\n"
            "  services: {s: {loadBalancer: {servers: [{url: \"http://127.0.0.1:9\"}]}}}\n"
            f"  middlewares: {{h: {{headers: {json.dumps(options)}}}}}\n")
    mw = parse_config(text, "gw.yaml").middlewares["h"]
    assert isinstance(mw, HeadersMiddleware)
    return mw


def go_headers(values: dict[str, list[str]]) -> list[tuple[str, str]]:
    return [(k, v) for k, vs in values.items() for v in vs]


PREFLIGHTS = [
    ("Test Simple Preflight",
     {"accessControlAllowMethods": ["GET", "OPTIONS", "PUT"], "accessControlAllowOriginList": ["https://foo.bar.org"],
      "accessControlMaxAge": 600},
     {"Access-Control-Request-Headers": ["origin"], "Access-Control-Request-Method": ["GET", "OPTIONS"],
      "Origin": ["https://foo.bar.org"]},
     {"Content-Length": "0", "Access-Control-Allow-Origin": "https://foo.bar.org", "Access-Control-Max-Age": "600",
      "Access-Control-Allow-Methods": "GET,OPTIONS,PUT"}),
    ("Wildcard origin Preflight",
     {"accessControlAllowMethods": ["GET", "OPTIONS", "PUT"], "accessControlAllowOriginList": ["*"],
      "accessControlMaxAge": 600},
     {"Access-Control-Request-Headers": ["origin"], "Access-Control-Request-Method": ["GET", "OPTIONS"],
      "Origin": ["https://foo.bar.org"]},
     {"Content-Length": "0", "Access-Control-Allow-Origin": "*", "Access-Control-Max-Age": "600",
      "Access-Control-Allow-Methods": "GET,OPTIONS,PUT"}),
    ("Allow Credentials Preflight",
     {"accessControlAllowMethods": ["GET", "OPTIONS", "PUT"], "accessControlAllowOriginList": ["*"],
      "accessControlAllowCredentials": True, "accessControlMaxAge": 600},
     {"Access-Control-Request-Headers": ["origin"], "Access-Control-Request-Method": ["GET", "OPTIONS"],
      "Origin": ["https://foo.bar.org"]},
     {"Content-Length": "0", "Access-Control-Allow-Origin": "https://foo.bar.org", "Access-Control-Max-Age": "600",
      "Access-Control-Allow-Methods": "GET,OPTIONS,PUT", "Access-Control-Allow-Credentials": "true"}),
    ("Allow Headers Preflight",
     {"accessControlAllowMethods": ["GET", "OPTIONS", "PUT"], "accessControlAllowOriginList": ["*"],
      "accessControlAllowHeaders": ["origin", "X-Forwarded-For"], "accessControlMaxAge": 600},
     {"Access-Control-Request-Headers": ["origin"], "Access-Control-Request-Method": ["GET", "OPTIONS"],
      "Origin": ["https://foo.bar.org"]},
     {"Content-Length": "0", "Access-Control-Allow-Origin": "*", "Access-Control-Max-Age": "600",
      "Access-Control-Allow-Methods": "GET,OPTIONS,PUT", "Access-Control-Allow-Headers": "origin,X-Forwarded-For"}),
    ("No Request Headers Preflight",
     {"accessControlAllowMethods": ["GET", "OPTIONS", "PUT"], "accessControlAllowOriginList": ["*"],
      "accessControlAllowHeaders": ["origin", "X-Forwarded-For"], "accessControlMaxAge": 600},
     {"Access-Control-Request-Method": ["GET", "OPTIONS"], "Origin": ["https://foo.bar.org"]},
     {"Content-Length": "0", "Access-Control-Allow-Origin": "*", "Access-Control-Max-Age": "600",
      "Access-Control-Allow-Methods": "GET,OPTIONS,PUT", "Access-Control-Allow-Headers": "origin,X-Forwarded-For"}),
    ("Nil MaxAge Preflight",
     {"accessControlAllowMethods": ["GET", "OPTIONS", "PUT"], "accessControlAllowOriginList": ["*"]},
     {"Access-Control-Request-Method": ["GET", "OPTIONS"], "Origin": ["https://foo.bar.org"]},
     {"Content-Length": "0", "Access-Control-Allow-Origin": "*", "Access-Control-Allow-Methods": "GET,OPTIONS,PUT"}),
]


@pytest.mark.parametrize(("desc", "options", "request_headers", "expected"), PREFLIGHTS, ids=[c[0] for c in PREFLIGHTS])
def test_cors_preflights(desc: str, options: dict[str, Any], request_headers: dict[str, list[str]],
                         expected: dict[str, str]) -> None:
    mw = load(options)
    assert mw.cors is not None
    answer = cors_preflight(mw.cors, "OPTIONS", go_headers(request_headers))
    assert answer is not None and answer.status == 200
    assert dict(answer.headers) == expected


# (desc, options, request headers, upstream answer's headers, expected headers; None options: no headers
# middleware options at all)
RESPONSES: list[tuple[str, dict[str, Any] | None, dict[str, list[str]], list[tuple[str, str]], dict[str, str]]] = [
    ("Test Simple Request", {"accessControlAllowOriginList": ["https://foo.bar.org"]},
     {"Origin": ["https://foo.bar.org"]}, [], {"Access-Control-Allow-Origin": "https://foo.bar.org"}),
    ("Wildcard origin Request", {"accessControlAllowOriginList": ["*"]}, {"Origin": ["https://foo.bar.org"]}, [],
     {"Access-Control-Allow-Origin": "*"}),
    ("Regexp Origin Request", {"accessControlAllowOriginListRegex": ["^https?://([a-z]+)\\.bar\\.org$"]},
     {"Origin": ["https://foo.bar.org"]}, [], {"Access-Control-Allow-Origin": "https://foo.bar.org"}),
    ("Partial Regexp Origin Request", {"accessControlAllowOriginListRegex": ["([a-z]+)\\.bar"]},
     {"Origin": ["https://foo.bar.org"]}, [], {"Access-Control-Allow-Origin": "https://foo.bar.org"}),
    ("Regexp Origin Request without matching", {"accessControlAllowOriginListRegex": ["([a-z]+)\\.bar\\.org"]},
     {"Origin": ["https://bar.org"]}, [], {}),
    ("Empty origin Request", {"accessControlAllowOriginList": ["https://foo.bar.org"]}, {}, [], {}),
    ("Not Defined origin Request", None, {}, [], {}),
    ("Allow Credentials Request", {"accessControlAllowOriginList": ["*"], "accessControlAllowCredentials": True},
     {"Origin": ["https://foo.bar.org"]}, [],
     {"Access-Control-Allow-Origin": "https://foo.bar.org", "Access-Control-Allow-Credentials": "true"}),
    ("Expose Headers Request", {"accessControlAllowOriginList": ["*"],
                                "accessControlExposeHeaders": ["origin", "X-Forwarded-For"]},
     {"Origin": ["https://foo.bar.org"]}, [],
     {"Access-Control-Allow-Origin": "*", "Access-Control-Expose-Headers": "origin,X-Forwarded-For"}),
    ("Test Simple Request with Vary Headers", {"accessControlAllowOriginList": ["https://foo.bar.org"],
                                               "addVaryHeader": True},
     {"Origin": ["https://foo.bar.org"]}, [], {"Access-Control-Allow-Origin": "https://foo.bar.org", "Vary": "Origin"}),
    ("Test Simple Request with Vary Headers and non-empty response",
     {"accessControlAllowOriginList": ["https://foo.bar.org"], "addVaryHeader": True},
     {"Origin": ["https://foo.bar.org"]}, [("Vary", "Testing")],
     {"Access-Control-Allow-Origin": "https://foo.bar.org", "Vary": "Testing,Origin"}),
    ("Test Simple Request with Vary Headers and existing vary:origin response",
     {"accessControlAllowOriginList": ["https://foo.bar.org"], "addVaryHeader": True},
     {"Origin": ["https://foo.bar.org"]}, [("Vary", "Origin")],
     {"Access-Control-Allow-Origin": "https://foo.bar.org", "Vary": "Origin"}),
    ("Test Simple Request with non-empty response: set ACAO", {"accessControlAllowOriginList": ["*"]},
     {"Origin": ["https://foo.bar.org"]}, [("Access-Control-Allow-Origin", "http://foo.bar.org")],
     {"Access-Control-Allow-Origin": "*"}),
    ("Test Simple Request with non-empty response: add ACAO", {"accessControlAllowOriginList": ["*"]},
     {"Origin": ["https://foo.bar.org"]}, [("Access-Control-Allow-Origin", "http://foo.bar.org")],
     {"Access-Control-Allow-Origin": "*"}),
    ("Test Simple CustomRequestHeaders Not Hijacked by CORS", {"customRequestHeaders": {"foo": "bar"}},
     {"Access-Control-Request-Headers": ["origin"], "Access-Control-Request-Method": ["GET", "OPTIONS"],
      "Origin": ["https://foo.bar.org"]}, [], {}),
]


@pytest.mark.parametrize(("desc", "options", "request_headers", "upstream", "expected"), RESPONSES,
                         ids=[c[0] for c in RESPONSES])
def test_cors_responses(desc: str, options: dict[str, Any] | None, request_headers: dict[str, list[str]],
                        upstream: list[tuple[str, str]], expected: dict[str, str]) -> None:
    response = list(upstream)
    if options is not None:
        mw = load(options)
        if mw.cors is not None:
            assert cors_preflight(mw.cors, "GET", go_headers(request_headers)) is None  # a GET is no preflight
            response = cors_response(mw.cors, go_headers(request_headers), response)
    assert dict(response) == expected
    assert len(response) == len(expected)


def test_cors_regexp_malformed_origin_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="accessControlAllowOriginListRegex: invalid regular expression `a\\(b`"):
        load({"accessControlAllowOriginListRegex": ["a(b"]})


SECURE = [
    ("PermissionsPolicy", {"permissionsPolicy": "microphone=(),"}, {"Permissions-Policy": "microphone=(),"}),
    ("STSSeconds", {"stsSeconds": 1, "forceSTSHeader": True}, {"Strict-Transport-Security": "max-age=1"}),
    ("STSSeconds and STSPreload", {"stsSeconds": 1, "forceSTSHeader": True, "stsPreload": True},
     {"Strict-Transport-Security": "max-age=1; preload"}),
    ("CustomFrameOptionsValue", {"customFrameOptionsValue": "foo"}, {"X-Frame-Options": "foo"}),
    ("FrameDeny", {"frameDeny": True}, {"X-Frame-Options": "DENY"}),
    ("ContentTypeNosniff", {"contentTypeNosniff": True}, {"X-Content-Type-Options": "nosniff"}),
]


@pytest.mark.parametrize(("desc", "options", "expected"), SECURE, ids=[c[0] for c in SECURE])
def test_new_secure_modify_response(desc: str, options: dict[str, Any], expected: dict[str, str]) -> None:
    mw = load(options)
    assert mw.security is not None
    assert dict(security_response(mw.security, False, [], [])) == expected
