"""Traefik's sticky-cookie tests, ported.

Source (Traefik TRAEFIK_VERSION, see tests/traefik/__init__.py):
pkg/server/service/loadbalancer/sticky_test.go — TestSticky_StickyHandler, TestSticky_WriteStickyCookie,
TestConvertSameSite_CaseInsensitive. `Sticky.StickyHandler` is `sticky_lookup` here; `WriteStickyCookie`
is `set_cookie_header` with the configuration's cookie (parsed from a file as a user writes it).
"""

from __future__ import annotations

import time
from email.utils import parsedate_to_datetime
from http.cookies import SimpleCookie

import pytest

from shadow.gateway.config import LoadBalancerService, parse_config
from shadow.gateway.shifting import RequestFacts, TrafficControl
from shadow.gateway.traffic import fnv1_64_hex, sticky_lookup, sticky_value

STICKY_HANDLER = [
    # desc, handlers, cookie value (None: no cookie), wanted handler, wanted rewrite
    ("No previous cookie", ["first"], None, None, False),
    ("Wrong previous cookie", ["first"], sticky_value("foo"), None, False),
    ("Sha256 previous cookie", ["first", "second"], sticky_value("first"), "first", False),
    ("Raw previous cookie", ["first", "second"], "first", "first", True),
    ("Fnv previous cookie", ["first", "second"], fnv1_64_hex("first"), "first", True),
    # Traefik's table repeats the single-FNV value under this name; the double hash is what the
    # compatibility map holds for it, so it is tested too.
    ("Double fnv previous cookie", ["first", "second"], fnv1_64_hex("first"), "first", True),
    ("Double fnv previous cookie (double hash)", ["first", "second"], fnv1_64_hex(fnv1_64_hex("first")),
     "first", True),
]


@pytest.mark.parametrize(("handlers", "value", "want", "rewrite"), [c[1:] for c in STICKY_HANDLER],
                         ids=[c[0] for c in STICKY_HANDLER])
def test_sticky_handler(handlers: list[str], value: str | None, want: str | None, rewrite: bool) -> None:
    if value is None:  # no cookie: the balancer picks, and writes a cookie naming its pick
        text = COOKIE_CONFIG.replace('[{url: "http://first.example"}]',
                                     "[" + ", ".join(f'{{url: "http://{h}.example"}}' for h in handlers) + "]")
        d = TrafficControl(parse_config(text)).decide("s", (), RequestFacts.from_headers("1.2.3.4", []))
        assert d.server is not None and d.set_cookies[0].startswith(f"test={sticky_value(d.server.url)};")
        return
    assert sticky_lookup(value, handlers) == (want, rewrite)


def test_fnv_is_go_fnv_new64() -> None:
    # Go: fnv.New64() of "first", strconv.FormatUint(.., 16); FNV-1 (multiply, then xor).
    assert fnv1_64_hex("") == "cbf29ce484222325"
    assert fnv1_64_hex("a") == "af63bd4c8601b7be"  # the FNV-1 64 reference value of "a"


COOKIE_CONFIG = """http:
  routers: {r: {rule: "PathPrefix(`/`)", service: s}}
  services:
    s:
      loadBalancer:
        servers: [{url: "http://first.example"}]
        sticky:
          cookie: {name: test, secure: true, httpOnly: true, sameSite: none, maxAge: 42, expires: 10,
                   path: /foo, domain: foo.com}
"""


def test_write_sticky_cookie() -> None:
    before = time.time()
    control = TrafficControl(parse_config(COOKIE_CONFIG))
    d = control.decide("s", (), RequestFacts.from_headers("1.2.3.4", []))
    (line,) = d.set_cookies
    jar = SimpleCookie()
    jar.load(line)
    cookie = jar["test"]
    assert cookie.value == sticky_value("http://first.example")  # the sha256 hash
    assert cookie["secure"] is True and cookie["httponly"] is True
    assert cookie["samesite"] == "None"
    assert cookie["max-age"] == "42"
    expires = parsedate_to_datetime(cookie["expires"]).timestamp()
    assert before - 1 <= expires <= time.time() + 10  # WithinDuration(now, Expires, 10 s)
    assert cookie["path"] == "/foo" and cookie["domain"] == "foo.com"
    assert line.index("Domain=") < line.index("Expires=") < line.index("Max-Age=")  # Go's order


def test_no_expires_attribute_without_the_option() -> None:
    control = TrafficControl(parse_config(COOKIE_CONFIG.replace(" expires: 10,", "")))
    (line,) = control.decide("s", (), RequestFacts.from_headers("1.2.3.4", [])).set_cookies
    assert "Expires=" not in line


SAME_SITE = [("none", "None"), ("None", "None"), ("NONE", "None"), ("lax", "Lax"), ("Lax", "Lax"),
             ("LAX", "Lax"), ("strict", "Strict"), ("Strict", "Strict"), ("STRICT", "Strict"),
             ("", None), ("invalid", None)]


@pytest.mark.parametrize(("given", "written"), SAME_SITE, ids=[g or "empty" for g, _ in SAME_SITE])
def test_convert_same_site_case_insensitive(given: str, written: str | None) -> None:
    config = parse_config(COOKIE_CONFIG.replace("sameSite: none", f"sameSite: {given!r}"))
    svc = config.services["s"]
    assert isinstance(svc, LoadBalancerService)
    (line,) = TrafficControl(config).decide("s", (), RequestFacts.from_headers("1.2.3.4", [])).set_cookies
    attributes = [part.strip() for part in line.split(";")]
    assert [a for a in attributes if a.startswith("SameSite")] == ([f"SameSite={written}"] if written else [])


@pytest.mark.parametrize("legacy", ["raw", "fnv", "double fnv"])
def test_a_legacy_cookie_sticks_and_is_rewritten_in_todays_format(legacy: str) -> None:
    text = """http:
  routers: {r: {rule: "PathPrefix(`/`)", service: s}}
  services:
    s:
      loadBalancer:
        servers: [{url: "http://a.example"}, {url: "http://b.example"}]
        sticky: {cookie: {name: srv}}
"""
    url = "http://b.example"
    value = {"raw": url, "fnv": fnv1_64_hex(url), "double fnv": fnv1_64_hex(fnv1_64_hex(url))}[legacy]
    control = TrafficControl(parse_config(text))
    for _ in range(3):
        d = control.decide("s", (), RequestFacts.from_headers("1.2.3.4", [("Cookie", f"srv={value}")]))
        assert d.server is not None and d.server.url == url
        assert d.set_cookies == [f"srv={sticky_value(url)}; Path=/"]
    current = RequestFacts.from_headers("1.2.3.4", [("Cookie", f"srv={sticky_value(url)}")])
    assert control.decide("s", (), current).set_cookies == []  # today's format: not rewritten
